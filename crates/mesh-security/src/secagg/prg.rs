//! Mask expansion: a 32-byte seed becomes a vector of ring elements through
//! the ChaCha12 keystream (zero nonce; every seed is used for one vector
//! only, since seeds are derived per round and per pair).
//!
//! Twelve rounds, not twenty: expanding masks is the largest cryptographic
//! cost of a round (one keystream per neighbour the size of the model), the
//! best known attacks reach seven rounds, and twelve is what the `rand`
//! crate's standard generator uses for the same margin; it is 40% cheaper.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha12;

use super::params::ModulusBits;

/// Add or subtract the mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sign {
    /// acc += mask
    Add,
    /// acc -= mask
    Sub,
}

const CHUNK_WORDS: usize = 2048;

/// `acc[i] (+|-)= PRG(seed)[i]` modulo 2^64 (callers reduce modulo 2^m).
/// Words are 4 or 8 little-endian keystream bytes, by `modulus`.
pub fn apply_mask(acc: &mut [u64], seed: &[u8; 32], modulus: ModulusBits, sign: Sign) {
    let mut cipher = ChaCha12::new(seed.into(), &[0u8; 12].into());
    let word_bytes = modulus.word_bytes();
    let mut buf = vec![0u8; CHUNK_WORDS * word_bytes];
    for block in acc.chunks_mut(CHUNK_WORDS) {
        let bytes = &mut buf[..block.len() * word_bytes];
        bytes.fill(0);
        cipher.apply_keystream(bytes);
        match modulus {
            ModulusBits::B32 => combine(
                block,
                bytes
                    .chunks_exact(4)
                    .map(|w| u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]))),
                sign,
            ),
            ModulusBits::B64 => combine(
                block,
                bytes
                    .chunks_exact(8)
                    .map(|w| u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]])),
                sign,
            ),
        }
    }
}

fn combine(block: &mut [u64], words: impl Iterator<Item = u64>, sign: Sign) {
    match sign {
        Sign::Add => block
            .iter_mut()
            .zip(words)
            .for_each(|(a, w)| *a = a.wrapping_add(w)),
        Sign::Sub => block
            .iter_mut()
            .zip(words)
            .for_each(|(a, w)| *a = a.wrapping_sub(w)),
    }
}

/// Packs ring elements as little-endian words of the modulus' width.
pub fn pack(values: &[u64], modulus: ModulusBits) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * modulus.word_bytes());
    match modulus {
        ModulusBits::B32 => values
            .iter()
            .for_each(|&v| out.extend_from_slice(&(v as u32).to_le_bytes())),
        ModulusBits::B64 => values
            .iter()
            .for_each(|&v| out.extend_from_slice(&v.to_le_bytes())),
    }
    out
}

/// Adds packed words into `acc` (modulo 2^64); `bytes` must hold exactly
/// `acc.len()` words.
pub fn add_packed(acc: &mut [u64], bytes: &[u8], modulus: ModulusBits) {
    debug_assert_eq!(bytes.len(), acc.len() * modulus.word_bytes());
    match modulus {
        ModulusBits::B32 => combine(
            acc,
            bytes
                .chunks_exact(4)
                .map(|w| u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]))),
            Sign::Add,
        ),
        ModulusBits::B64 => combine(
            acc,
            bytes
                .chunks_exact(8)
                .map(|w| u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]])),
            Sign::Add,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_then_subtracting_a_mask_is_the_identity() {
        let original: Vec<u64> = (0..5000).map(|i| i * 31).collect();
        let mut acc = original.clone();
        apply_mask(&mut acc, &[9; 32], ModulusBits::B64, Sign::Add);
        assert_ne!(acc, original);
        apply_mask(&mut acc, &[9; 32], ModulusBits::B64, Sign::Sub);
        assert_eq!(acc, original);
    }

    #[test]
    fn the_mask_is_the_chacha12_keystream() {
        // The mask's first word is the first four bytes of the ChaCha12
        // keystream for the seed as key and a zero nonce.
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        let mut expected = [0u8; 8];
        ChaCha12::new(&key.into(), &[0u8; 12].into()).apply_keystream(&mut expected);
        let mut acc = vec![0u64; 2];
        apply_mask(&mut acc, &key, ModulusBits::B32, Sign::Add);
        assert_eq!(
            acc[0],
            u64::from(u32::from_le_bytes([
                expected[0],
                expected[1],
                expected[2],
                expected[3]
            ]))
        );
        assert_eq!(
            acc[1],
            u64::from(u32::from_le_bytes([
                expected[4],
                expected[5],
                expected[6],
                expected[7]
            ]))
        );
    }

    #[test]
    fn pack_and_add_round_trip() {
        let values = vec![1u64, u64::from(u32::MAX), 7];
        let mut acc = vec![0u64; 3];
        add_packed(&mut acc, &pack(&values, ModulusBits::B32), ModulusBits::B32);
        assert_eq!(acc, values);
    }
}
