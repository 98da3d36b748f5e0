//! Shamir t-of-k secret sharing of 32-byte secrets over GF(2^61 - 1).
//!
//! Why our own: the maintained Rust crates we looked at either share over
//! GF(256) (at most 255 parties; SecAgg+ groups can be larger) or are built
//! for elliptic-curve scalar fields with a much larger generic API. A prime
//! field with a Mersenne modulus is a few lines, easy to check, and fast.
//!
//! A 32-byte secret is cut into [`CHUNKS`] chunks of at most 7 bytes (56 bits,
//! below the field size), and each chunk is shared with its own independent
//! random polynomial of degree `t - 1`, so any `t - 1` shares reveal nothing
//! about any chunk. A party's x-coordinate is its client index plus one.
//! Reconstruction checks that every chunk comes back below 2^56; shares that
//! were altered produce an error there with high probability, and the callers
//! also check the result against a commitment.

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// The field modulus, the Mersenne prime 2^61 - 1.
pub const P: u64 = (1 << 61) - 1;
/// Field elements per 32-byte secret.
pub const CHUNKS: usize = 5;
const CHUNK_BYTES: usize = 7;

/// One party's share of a 32-byte secret: one field element per chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareValue(pub [u64; CHUNKS]);

/// Errors from sharing or reconstructing; none go away on retry with the same shares.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShamirError {
    /// Threshold of zero, or more shares needed than parties exist.
    #[error("threshold {threshold} is invalid for {parties} parties")]
    BadThreshold {
        /// Requested threshold.
        threshold: usize,
        /// Number of parties.
        parties: usize,
    },
    /// Fewer distinct shares than the threshold.
    #[error("{have} distinct shares, {need} needed")]
    NotEnoughShares {
        /// Distinct shares available.
        have: usize,
        /// Threshold.
        need: usize,
    },
    /// A share value or x-coordinate is outside the field, or the shares do
    /// not agree on a secret.
    #[error("inconsistent shares: {0}")]
    Inconsistent(&'static str),
}

fn add(a: u64, b: u64) -> u64 {
    let s = a + b; // both < 2^61: no overflow
    if s >= P {
        s - P
    } else {
        s
    }
}

fn sub(a: u64, b: u64) -> u64 {
    add(a, P - b)
}

fn mul(a: u64, b: u64) -> u64 {
    let wide = u128::from(a) * u128::from(b);
    let low = (wide as u64) & P;
    let high = (wide >> 61) as u64;
    add(low, high % P)
}

fn pow(mut base: u64, mut exp: u64) -> u64 {
    let mut acc = 1;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = mul(acc, base);
        }
        base = mul(base, base);
        exp >>= 1;
    }
    acc
}

fn inv(a: u64) -> u64 {
    debug_assert!(a != 0 && a < P);
    pow(a, P - 2)
}

fn random_element(rng: &mut impl RngCore) -> u64 {
    loop {
        let candidate = rng.next_u64() & P;
        if candidate < P {
            return candidate;
        }
    }
}

fn chunks_of(secret: &[u8; 32]) -> [u64; CHUNKS] {
    let mut out = [0u64; CHUNKS];
    for (i, chunk) in secret.chunks(CHUNK_BYTES).enumerate() {
        let mut bytes = [0u8; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        out[i] = u64::from_le_bytes(bytes);
    }
    out
}

/// Splits `secret` into one share per x-coordinate in `xs` (client index + 1,
/// distinct and nonzero), any `threshold` of which reconstruct it.
pub fn split(
    secret: &[u8; 32],
    threshold: usize,
    xs: &[u64],
    rng: &mut impl RngCore,
) -> Result<Vec<ShareValue>, ShamirError> {
    if threshold == 0 || threshold > xs.len() {
        return Err(ShamirError::BadThreshold {
            threshold,
            parties: xs.len(),
        });
    }
    if xs.iter().any(|&x| x == 0 || x >= P) {
        return Err(ShamirError::Inconsistent("x-coordinate outside 1..p"));
    }
    let secret_chunks = chunks_of(secret);
    let mut shares = vec![ShareValue([0; CHUNKS]); xs.len()];
    for (c, &chunk) in secret_chunks.iter().enumerate() {
        let mut coefficients = Vec::with_capacity(threshold);
        coefficients.push(chunk);
        coefficients.extend((1..threshold).map(|_| random_element(rng)));
        for (share, &x) in shares.iter_mut().zip(xs) {
            // Horner evaluation of the polynomial at x.
            share.0[c] = coefficients
                .iter()
                .rev()
                .fold(0, |acc, &a| add(mul(acc, x), a));
        }
    }
    Ok(shares)
}

/// Reconstructs the secret from `(x, share)` pairs using the first
/// `threshold` distinct x-coordinates.
pub fn reconstruct(
    points: &[(u64, ShareValue)],
    threshold: usize,
) -> Result<[u8; 32], ShamirError> {
    let mut chosen: Vec<(u64, ShareValue)> = Vec::with_capacity(threshold);
    for &(x, share) in points {
        if x == 0 || x >= P || share.0.iter().any(|&v| v >= P) {
            return Err(ShamirError::Inconsistent("value outside the field"));
        }
        if chosen.len() < threshold && chosen.iter().all(|(cx, _)| *cx != x) {
            chosen.push((x, share));
        }
    }
    if threshold == 0 || chosen.len() < threshold {
        return Err(ShamirError::NotEnoughShares {
            have: chosen.len(),
            need: threshold,
        });
    }
    let weights = lagrange_at_zero(&chosen);
    let mut secret = [0u8; 32];
    for c in 0..CHUNKS {
        let value = chosen
            .iter()
            .zip(&weights)
            .fold(0, |acc, ((_, s), &w)| add(acc, mul(s.0[c], w)));
        if value >> (8 * CHUNK_BYTES) != 0 {
            return Err(ShamirError::Inconsistent(
                "reconstructed chunk out of range",
            ));
        }
        let start = c * CHUNK_BYTES;
        let end = (start + CHUNK_BYTES).min(32);
        let bytes = value.to_le_bytes();
        if bytes[end - start..].iter().any(|&b| b != 0) {
            return Err(ShamirError::Inconsistent(
                "reconstructed chunk out of range",
            ));
        }
        secret[start..end].copy_from_slice(&bytes[..end - start]);
    }
    Ok(secret)
}

/// Lagrange basis weights l_i(0) = prod_{j != i} x_j / (x_j - x_i).
fn lagrange_at_zero(points: &[(u64, ShareValue)]) -> Vec<u64> {
    points
        .iter()
        .map(|&(xi, _)| {
            let (num, den) = points
                .iter()
                .filter(|(xj, _)| *xj != xi)
                .fold((1, 1), |(n, d), &(xj, _)| (mul(n, xj), mul(d, sub(xj, xi))));
            mul(num, inv(den))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    #[test]
    fn field_arithmetic_matches_u128_reference() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for _ in 0..1000 {
            let (a, b) = (random_element(&mut rng), random_element(&mut rng));
            assert_eq!(
                u128::from(mul(a, b)),
                u128::from(a) * u128::from(b) % u128::from(P)
            );
            assert_eq!(
                add(a, b),
                ((u128::from(a) + u128::from(b)) % u128::from(P)) as u64
            );
            if a != 0 {
                assert_eq!(mul(a, inv(a)), 1);
            }
        }
        assert_eq!(mul(P - 1, P - 1), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn any_threshold_subset_reconstructs(secret in any::<[u8; 32]>(), seed in any::<u64>(), parties in 1usize..20, t_frac in 0.0f64..1.0) {
            let threshold = 1 + ((parties - 1) as f64 * t_frac) as usize;
            let xs: Vec<u64> = (1..=parties as u64).map(|x| x * 7).collect();
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let shares = split(&secret, threshold, &xs, &mut rng).unwrap();
            let points: Vec<(u64, ShareValue)> = xs.iter().copied().zip(shares).collect();
            // The last `threshold` shares.
            prop_assert_eq!(reconstruct(&points[parties - threshold..], threshold).unwrap(), secret);
            if threshold > 1 {
                let too_few = reconstruct(&points[..threshold - 1], threshold);
                let is_not_enough = matches!(too_few, Err(ShamirError::NotEnoughShares { .. }));
                prop_assert!(is_not_enough);
            }
        }
    }

    /// A share altered by a random-looking amount almost always (all but
    /// ~2^-5 per chunk, here all five chunks) reconstructs out of range; the
    /// rest is caught by the callers' commitments.
    #[test]
    fn an_altered_share_is_detected() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let secret = [0xabu8; 32];
        let xs = [1, 2, 3];
        let shares = split(&secret, 3, &xs, &mut rng).unwrap();
        let mut points: Vec<(u64, ShareValue)> = xs.iter().copied().zip(shares).collect();
        for chunk in &mut points[1].1 .0 {
            *chunk = add(*chunk, 0x0123_4567_89ab_cdef);
        }
        assert!(reconstruct(&points, 3).is_err());
    }

    #[test]
    fn duplicate_x_coordinates_do_not_count_twice() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let shares = split(&[1; 32], 2, &[1, 2], &mut rng).unwrap();
        let points = [(1, shares[0]), (1, shares[0])];
        assert_eq!(
            reconstruct(&points, 2),
            Err(ShamirError::NotEnoughShares { have: 1, need: 2 })
        );
    }
}
