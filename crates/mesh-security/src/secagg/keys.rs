//! Key agreement and share encryption: X25519 between ephemeral keys, keys
//! derived with HKDF-SHA256 bound to the round and the pair, and
//! ChaCha20-Poly1305 for the shares.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::SecAggError;

const PAIRWISE_MASK_INFO: &[u8] = b"agent-mesh/secagg/v1/pairwise-mask";
const SHARE_KEY_INFO: &[u8] = b"agent-mesh/secagg/v1/share-key";
const SEED_COMMITMENT_DOMAIN: &[u8] = b"agent-mesh/secagg/v1/self-seed-commitment";

/// X25519 agreement, refusing a non-contributory (low-order) peer key.
pub fn agree(
    secret: &StaticSecret,
    peer_public: &[u8; 32],
    peer: u32,
) -> Result<Zeroizing<[u8; 32]>, SecAggError> {
    let shared = secret.diffie_hellman(&PublicKey::from(*peer_public));
    if !shared.was_contributory() {
        return Err(SecAggError::BadKey { client: peer });
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// HKDF-SHA256 with the session as salt and `info || lo || hi` as info, so
/// both ends of a pair derive the same key.
fn derive(
    session: &[u8; 32],
    shared: &[u8; 32],
    info: &[u8],
    a: u32,
    b: u32,
) -> Zeroizing<[u8; 32]> {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let mut full_info = info.to_vec();
    full_info.extend_from_slice(&lo.to_le_bytes());
    full_info.extend_from_slice(&hi.to_le_bytes());
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
    if Hkdf::<Sha256>::new(Some(session), shared)
        .expand(&full_info, out.as_mut())
        .is_err()
    {
        unreachable!("32-byte HKDF output is always valid");
    }
    out
}

/// Seed of the pairwise mask between clients `a` and `b`.
pub fn pairwise_seed(session: &[u8; 32], shared: &[u8; 32], a: u32, b: u32) -> Zeroizing<[u8; 32]> {
    derive(session, shared, PAIRWISE_MASK_INFO, a, b)
}

/// Commitment to a self-mask seed, bound to the session and the owner.
pub fn seed_commitment(session: &[u8; 32], owner: u32, seed: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(SEED_COMMITMENT_DOMAIN);
    h.update(session);
    h.update(owner.to_le_bytes());
    h.update(seed);
    h.finalize().into()
}

fn nonce_and_aad(session: &[u8; 32], from: u32, to: u32) -> ([u8; 12], Vec<u8>) {
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&from.to_le_bytes());
    nonce[4..8].copy_from_slice(&to.to_le_bytes());
    let mut aad = session.to_vec();
    aad.extend_from_slice(&from.to_le_bytes());
    aad.extend_from_slice(&to.to_le_bytes());
    (nonce, aad)
}

/// Encrypts a share plaintext from `from` to `to`. The key is used once per
/// direction per round; the nonce holds the direction.
pub fn seal_share(
    session: &[u8; 32],
    shared: &[u8; 32],
    from: u32,
    to: u32,
    plain: &[u8],
) -> Result<Vec<u8>, SecAggError> {
    let key = derive(session, shared, SHARE_KEY_INFO, from, to);
    let (nonce, aad) = nonce_and_aad(session, from, to);
    ChaCha20Poly1305::new(key.as_ref().into())
        .encrypt(
            &nonce.into(),
            Payload {
                msg: plain,
                aad: &aad,
            },
        )
        .map_err(|_| SecAggError::Malformed("share encryption failed".into()))
}

/// Decrypts and authenticates a share from `from` to `to`.
pub fn open_share(
    session: &[u8; 32],
    shared: &[u8; 32],
    from: u32,
    to: u32,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SecAggError> {
    let key = derive(session, shared, SHARE_KEY_INFO, from, to);
    let (nonce, aad) = nonce_and_aad(session, from, to);
    ChaCha20Poly1305::new(key.as_ref().into())
        .decrypt(
            &nonce.into(),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SecAggError::ShareRejected {
            from,
            reason: "authentication failed",
        })
}
