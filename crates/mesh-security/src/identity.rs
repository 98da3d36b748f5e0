//! Node identity: one Ed25519 key pair per node, and the node id derived from it.
//!
//! The node id is the libp2p [`PeerId`] of the node's Ed25519 public key, so the
//! identity a peer shows on the network (Noise handshake) and the identity that
//! signs application messages are the same key. Ed25519 public keys are short
//! enough that libp2p inlines them into the peer id (identity multihash), which
//! means a [`NodeId`] can be turned back into the verifying key without a lookup.
//!
//! Keys are stored as PKCS#8 PEM (see [`crate::keyfile`] for the file handling).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use libp2p_identity::PeerId;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Errors from creating, encoding or decoding identities.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The PEM text is not a PKCS#8 Ed25519 private key (retrying will not help).
    #[error("not a PKCS#8 Ed25519 private key: {0}")]
    BadPrivateKey(String),
    /// The PEM text is not an SPKI Ed25519 public key (retrying will not help).
    #[error("not an Ed25519 public key: {0}")]
    BadPublicKey(String),
    /// A node id string or byte string is not an Ed25519 libp2p peer id.
    #[error("not an Ed25519 node id: {0}")]
    BadNodeId(String),
    /// A signature did not verify (the message or signature was altered, or the
    /// wrong key was used; retrying will not help).
    #[error("signature does not verify")]
    BadSignature,
}

/// A node's identifier: its Ed25519 public key, shown as a libp2p peer id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId([u8; 32]);

impl NodeId {
    /// The node id of an Ed25519 public key.
    pub fn from_verifying_key(key: &VerifyingKey) -> Self {
        Self(key.to_bytes())
    }

    /// The raw 32 bytes of the Ed25519 public key behind this id.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The Ed25519 verifying key behind this id; fails if the bytes are not a
    /// valid curve point (possible for ids decoded from untrusted input).
    pub fn verifying_key(&self) -> Result<VerifyingKey, IdentityError> {
        VerifyingKey::from_bytes(&self.0).map_err(|e| IdentityError::BadNodeId(e.to_string()))
    }

    /// The libp2p peer id of this node (what the network layer sees).
    pub fn to_peer_id(&self) -> Result<PeerId, IdentityError> {
        let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(&self.0)
            .map_err(|e| IdentityError::BadNodeId(e.to_string()))?;
        Ok(PeerId::from_public_key(&libp2p_identity::PublicKey::from(
            key,
        )))
    }

    /// The node id of a libp2p peer id, if it is an inlined Ed25519 key.
    pub fn from_peer_id(peer: &PeerId) -> Result<Self, IdentityError> {
        let multihash = peer.as_ref();
        if multihash.code() != 0 {
            return Err(IdentityError::BadNodeId(
                "peer id is hashed, not an inline key".into(),
            ));
        }
        let key = libp2p_identity::PublicKey::try_decode_protobuf(multihash.digest())
            .map_err(|e| IdentityError::BadNodeId(e.to_string()))?
            .try_into_ed25519()
            .map_err(|e| IdentityError::BadNodeId(e.to_string()))?;
        Ok(Self(key.to_bytes()))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_peer_id() {
            Ok(peer) => write!(f, "{peer}"),
            Err(_) => write!(f, "invalid-key:{}", hex::encode(self.0)),
        }
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl FromStr for NodeId {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let peer = PeerId::from_str(s).map_err(|e| IdentityError::BadNodeId(e.to_string()))?;
        Self::from_peer_id(&peer)
    }
}

/// A node's long-term signing identity (Ed25519 private key).
#[derive(Clone)]
pub struct NodeIdentity {
    key: SigningKey,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeIdentity({})", self.node_id())
    }
}

impl NodeIdentity {
    /// Creates a fresh identity from the operating system's random source.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(seed.as_mut());
        Self::from_seed(&seed)
    }

    /// Creates an identity deterministically from a 32-byte secret seed
    /// (RFC 8032 private key); tests and simulations use this.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The node id (libp2p peer id of the public key).
    pub fn node_id(&self) -> NodeId {
        NodeId::from_verifying_key(&self.key.verifying_key())
    }

    /// The Ed25519 public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Signs a message (Ed25519, RFC 8032 pure mode).
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.key.sign(message)
    }

    /// The same key as a libp2p key pair, for the network layer.
    pub fn to_libp2p_keypair(&self) -> Result<libp2p_identity::Keypair, IdentityError> {
        let secret = self.key.to_bytes();
        libp2p_identity::Keypair::ed25519_from_bytes(secret)
            .map_err(|e| IdentityError::BadPrivateKey(e.to_string()))
    }

    /// The private key as PKCS#8 PEM (secret material: zeroized on drop).
    /// It is the version-1 form (RFC 8410 without the optional public key),
    /// which OpenSSL 3.0, and so curl, reads: a node's key then also serves
    /// as a client key for mutual TLS with common tools.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, IdentityError> {
        self.v1_keypair()
            .to_pkcs8_pem(Default::default())
            .map_err(|e| IdentityError::BadPrivateKey(e.to_string()))
    }

    fn v1_keypair(&self) -> ed25519_dalek::pkcs8::KeypairBytes {
        ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        }
    }

    /// Parses a PKCS#8 PEM Ed25519 private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, IdentityError> {
        let key = SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| IdentityError::BadPrivateKey(e.to_string()))?;
        Ok(Self { key })
    }

    /// The private key as PKCS#8 DER (secret material: zeroized on drop).
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, IdentityError> {
        let doc = self
            .v1_keypair()
            .to_pkcs8_der()
            .map_err(|e| IdentityError::BadPrivateKey(e.to_string()))?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }
}

/// Encodes an Ed25519 public key as SPKI PEM ("PUBLIC KEY").
pub fn public_key_to_pem(key: &VerifyingKey) -> Result<String, IdentityError> {
    key.to_public_key_pem(Default::default())
        .map_err(|e| IdentityError::BadPublicKey(e.to_string()))
}

/// Parses an SPKI PEM Ed25519 public key.
pub fn public_key_from_pem(pem: &str) -> Result<VerifyingKey, IdentityError> {
    VerifyingKey::from_public_key_pem(pem).map_err(|e| IdentityError::BadPublicKey(e.to_string()))
}

/// Verifies an Ed25519 signature with strict checks (rejects non-canonical
/// and small-order keys and signatures).
pub fn verify_signature(
    key: &VerifyingKey,
    message: &[u8],
    signature: &Signature,
) -> Result<(), IdentityError> {
    key.verify_strict(message, signature)
        .map_err(|_| IdentityError::BadSignature)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn node_id_round_trips_through_peer_id_string() {
        let id = NodeIdentity::from_seed(&[7u8; 32]);
        let text = id.node_id().to_string();
        assert!(
            text.starts_with("12D3KooW"),
            "ed25519 peer ids start with 12D3KooW: {text}"
        );
        let parsed: NodeId = text.parse().unwrap();
        assert_eq!(parsed, id.node_id());
        let peer = id.to_libp2p_keypair().unwrap().public().to_peer_id();
        assert_eq!(peer, id.node_id().to_peer_id().unwrap());
    }

    #[test]
    fn pem_round_trip_keeps_the_key() {
        let id = NodeIdentity::from_seed(&[9u8; 32]);
        let pem = id.to_pkcs8_pem().unwrap();
        assert!(pem.contains("BEGIN PRIVATE KEY"));
        let back = NodeIdentity::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.node_id(), id.node_id());
        let pub_pem = public_key_to_pem(&id.verifying_key()).unwrap();
        assert_eq!(public_key_from_pem(&pub_pem).unwrap(), id.verifying_key());
    }

    #[test]
    fn garbage_pem_is_an_error_not_a_panic() {
        assert!(NodeIdentity::from_pkcs8_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n").is_err());
        assert!("not-a-peer-id".parse::<NodeId>().is_err());
    }

    #[test]
    fn signatures_verify_and_tampering_is_caught() {
        let id = NodeIdentity::from_seed(&[1u8; 32]);
        let sig = id.sign(b"hello");
        verify_signature(&id.verifying_key(), b"hello", &sig).unwrap();
        assert!(verify_signature(&id.verifying_key(), b"hellp", &sig).is_err());
    }
}
