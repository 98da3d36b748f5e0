//! The SecAgg+ messages, and [`Signed`], the client signature they travel under.
//!
//! Every client message is signed with the client's long-term Ed25519 key over
//! a domain tag, the round's session bytes and the postcard encoding of the
//! body, so the aggregator cannot forge or replay them into another round and
//! clients can check that forwarded key advertisements are genuine.

use ed25519_dalek::{Signature, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::shamir::ShareValue;
use super::SecAggError;
use crate::envelope::MessageKind;
use crate::identity::{verify_signature, NodeIdentity};

/// Envelope kinds of the SecAgg+ messages (0x0100 block), for the round
/// protocol that carries them inside [`crate::envelope::Envelope`]s.
pub mod kinds {
    use super::MessageKind;

    /// [`super::AdvertiseKeys`], client to aggregator.
    pub const ADVERTISE_KEYS: MessageKind = MessageKind(0x0100);
    /// [`super::NeighbourKeys`], aggregator to client.
    pub const NEIGHBOUR_KEYS: MessageKind = MessageKind(0x0101);
    /// [`super::ShareKeys`], client to aggregator.
    pub const SHARE_KEYS: MessageKind = MessageKind(0x0102);
    /// [`super::SharesForClient`], aggregator to client.
    pub const SHARES_FOR_CLIENT: MessageKind = MessageKind(0x0103);
    /// [`super::MaskedInput`], client to aggregator.
    pub const MASKED_INPUT: MessageKind = MessageKind(0x0104);
    /// [`super::UnmaskRequest`], aggregator to clients.
    pub const UNMASK_REQUEST: MessageKind = MessageKind(0x0105);
    /// [`super::UnmaskShares`], client to aggregator.
    pub const UNMASK_SHARES: MessageKind = MessageKind(0x0106);
}

const DOMAIN: &[u8] = b"agent-mesh/secagg/v2/signed-digest\0";

/// Round 0, client to aggregator: the client's two ephemeral X25519 public keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertiseKeys {
    /// Client index.
    pub client: u32,
    /// Key for encrypting shares (c_u).
    pub enc_public: [u8; 32],
    /// Key for pairwise masks (s_u).
    pub mask_public: [u8; 32],
}

/// Round 0 result, aggregator to one client: its neighbours' advertisements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighbourKeys {
    /// Signed advertisements of the neighbours that advertised.
    pub adverts: Vec<Signed<AdvertiseKeys>>,
}

/// One encrypted share pair, from one client to one neighbour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedShare {
    /// Sender index.
    pub from: u32,
    /// Recipient index.
    pub to: u32,
    /// ChaCha20-Poly1305 ciphertext of a [`SharePair`].
    pub ciphertext: Vec<u8>,
}

/// The plaintext inside an [`EncryptedShare`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharePair {
    /// Share of the sender's self-mask seed b_u.
    pub self_seed: ShareValue,
    /// Share of the sender's mask secret key s_u.
    pub mask_key: ShareValue,
}

/// Round 1, client to aggregator: shares for every neighbour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareKeys {
    /// Client index.
    pub client: u32,
    /// SHA-256 commitment to the self-mask seed, checked after reconstruction.
    pub self_seed_commitment: [u8; 32],
    /// One encrypted share pair per neighbour that advertised keys.
    pub shares: Vec<EncryptedShare>,
}

/// Round 1 result, aggregator to one client: shares addressed to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharesForClient {
    /// Encrypted shares from neighbours that completed round 1.
    pub shares: Vec<EncryptedShare>,
}

/// Round 2, client to aggregator: the masked, quantized update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedInput {
    /// Client index.
    pub client: u32,
    /// Little-endian words (4 or 8 bytes each), `dimension` of them.
    pub values: WireBytes,
}

/// Round 2 result, aggregator to every survivor: who sent a masked input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmaskRequest {
    /// Clients whose masked inputs are in the sum (their self masks must go).
    pub survivors: Vec<u32>,
    /// Clients that shared keys but sent no input (their pairwise masks must go).
    pub dropped: Vec<u32>,
}

/// Round 3, client to aggregator: the shares the aggregator may have.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmaskShares {
    /// Client index.
    pub client: u32,
    /// (owner, share of owner's self-mask seed) for surviving neighbours.
    pub self_seed_shares: Vec<(u32, ShareValue)>,
    /// (owner, share of owner's mask key) for dropped neighbours.
    pub mask_key_shares: Vec<(u32, ShareValue)>,
}

/// A byte string that postcard writes as length + raw bytes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct WireBytes(pub Vec<u8>);

impl Serialize for WireBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for WireBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = WireBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<WireBytes, E> {
                Ok(WireBytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<WireBytes, E> {
                Ok(WireBytes(v))
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

/// A message body with its sender's Ed25519 signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed<T> {
    /// The message.
    pub body: T,
    /// Signature over domain, session and the BLAKE3 hash of the encoded body.
    pub signature: Signature,
}

/// What is signed: the domain, the session and the BLAKE3 hash of the body.
/// Ed25519 hashes its message twice with SHA-512 to sign and once to verify;
/// signing a 32-byte digest instead of a masked update of hundreds of
/// kilobytes makes that cost independent of the model size.
fn signing_bytes<T: Serialize>(session: &[u8; 32], body: &T) -> Result<Vec<u8>, SecAggError> {
    let encoded = postcard::to_allocvec(body).map_err(|e| SecAggError::Malformed(e.to_string()))?;
    let mut out = Vec::with_capacity(DOMAIN.len() + 64);
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(session);
    out.extend_from_slice(blake3::hash(&encoded).as_bytes());
    Ok(out)
}

impl<T: Serialize> Signed<T> {
    /// Signs `body` for the round `session`.
    pub fn sign(identity: &NodeIdentity, session: &[u8; 32], body: T) -> Result<Self, SecAggError> {
        let signature = identity.sign(&signing_bytes(session, &body)?);
        Ok(Self { body, signature })
    }

    /// Checks the signature under `key` for `session`; `sender` names the
    /// client in the error.
    pub fn verify(
        &self,
        key: &VerifyingKey,
        session: &[u8; 32],
        sender: u32,
    ) -> Result<&T, SecAggError> {
        verify_signature(key, &signing_bytes(session, &self.body)?, &self.signature)
            .map_err(|_| SecAggError::BadSignature { client: sender })?;
        Ok(&self.body)
    }
}

/// Encodes a message for the wire (postcard).
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, SecAggError> {
    postcard::to_allocvec(message).map_err(|e| SecAggError::Malformed(e.to_string()))
}

/// Decodes a message, refusing inputs over `size_bytes_max` before parsing.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], size_bytes_max: usize) -> Result<T, SecAggError> {
    if bytes.len() > size_bytes_max {
        return Err(SecAggError::Malformed(format!(
            "{} bytes exceed the limit of {size_bytes_max}",
            bytes.len()
        )));
    }
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| SecAggError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(SecAggError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}
