//! Bucketing (Karimireddy, He and Jaggi 2022, "Byzantine-Robust Learning on
//! Heterogeneous Datasets via Bucketing"), a seeded pre-aggregation step that
//! composes with any rule.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{check_shape, mean_of, AggregateError};

/// Shuffles the updates with a ChaCha8 permutation seeded by `seed`, splits them into
/// `ceil(n / bucket_size)` buckets of `bucket_size` (the last may be smaller) and
/// returns each bucket's mean together with its weight (the sum of its members'
/// `weights`).
///
/// Preconditions: `n >= 1` updates of equal non-zero dimension, `weights.len() == n`,
/// `bucket_size >= 1`. At most `f` buckets contain a Byzantine update, so the rule
/// that follows still faces `f` Byzantine inputs, now out of `ceil(n / bucket_size)`.
pub fn bucketing<U: AsRef<[f32]>>(
    updates: &[U],
    weights: &[f32],
    bucket_size: usize,
    seed: u64,
) -> Result<(Vec<Vec<f32>>, Vec<f32>), AggregateError> {
    let (n, d) = check_shape(updates)?;
    if weights.len() != n {
        return Err(AggregateError::WeightCount {
            n,
            weights: weights.len(),
        });
    }
    if bucket_size == 0 {
        return Err(AggregateError::InvalidParameter {
            name: "size",
            value: "0".to_owned(),
            reason: "bucket size must be at least 1",
        });
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let buckets = order.chunks(bucket_size);
    let means = buckets
        .clone()
        .map(|bucket| mean_of(updates, bucket, d))
        .collect();
    let bucket_weights = buckets
        .map(|bucket| bucket.iter().map(|&i| weights[i]).sum())
        .collect();
    Ok((means, bucket_weights))
}
