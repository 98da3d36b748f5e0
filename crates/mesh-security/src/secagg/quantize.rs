//! Clipping, fixed-point quantization with stochastic rounding, and the
//! mapping between signed integers and the ring Z_(2^m).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use sha2::{Digest, Sha256};

use super::params::SecAggParams;

/// Clips `update` to L2 norm `clip_norm` (a copy, in f64).
pub fn clip(update: &[f32], clip_norm: f64) -> Vec<f64> {
    let norm = update
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    let factor = if norm > clip_norm {
        clip_norm / norm
    } else {
        1.0
    };
    update
        .iter()
        .map(|&x| {
            let v = f64::from(x);
            if v.is_finite() {
                v * factor
            } else {
                0.0
            }
        })
        .collect()
}

/// 2^32, the range of the random word that decides a rounding.
const TWO_POW_32: f64 = 4_294_967_296.0;

/// Quantizes a clipped update: `x * scale` rounded up with probability equal
/// to its fractional part (unbiased), clamped to `[-q_max, q_max]`, as ring
/// elements (two's complement modulo 2^m).
pub fn quantize(clipped: &[f64], params: &SecAggParams, rng: &mut impl Rng) -> Vec<u64> {
    let scale = params.scale();
    let q_max = params.q_max();
    let mask = params.modulus.mask();
    clipped
        .iter()
        .map(|&x| {
            let scaled = x * scale;
            let floor = scaled.floor();
            // 32 random bits per value decide the rounding (2^-32 resolution).
            let up = f64::from(rng.random::<u32>()) < (scaled - floor) * TWO_POW_32;
            let q = (floor as i64 + i64::from(up)).clamp(-q_max, q_max);
            (q as u64) & mask
        })
        .collect()
}

/// Reads a ring element as a signed m-bit integer.
pub fn to_signed(value: u64, params: &SecAggParams) -> i64 {
    match params.modulus.bits() {
        32 => value as u32 as i32 as i64,
        _ => value as i64,
    }
}

/// Clips and quantizes in one step (what a client does to its update).
pub fn encode_update(update: &[f32], params: &SecAggParams, rng: &mut impl Rng) -> Vec<u64> {
    quantize(&clip(update, params.clip_norm), params, rng)
}

/// The RNG a client uses for stochastic rounding, derived from its seed
/// (separate from the key and share randomness, so a test can recompute
/// exactly what a client quantized). ChaCha12: rounding draws one word per
/// parameter, and its bits protect nothing secret beyond the update itself.
pub fn rounding_rng(client_seed: &[u8; 32]) -> ChaCha12Rng {
    let mut h = Sha256::new();
    h.update(b"agent-mesh/secagg/v1/rounding");
    h.update(client_seed);
    ChaCha12Rng::from_seed(h.finalize().into())
}
