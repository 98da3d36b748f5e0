//! Bulyan (El Mhamdi et al. 2018): iterated Krum selection followed by a
//! coordinate-wise average of the values closest to the median.

use super::krum::{pairwise_sq_distances, rank_by_score, scores};
use super::{
    check_shape, finite_or_error, kernels, median::column_median, require_n, AggregateError,
};

/// Bulyan with `f = byzantine`.
///
/// 1. Selection: `theta = n - 2f` times, run Krum on the remaining updates (with
///    `max(k - f - 2, 1)` neighbours when `k` remain) and move its choice to the
///    selection set.
/// 2. Aggregation: for each coordinate, average the `beta = theta - 2f` selected
///    values closest to the coordinate's median among the selected.
///
/// Preconditions: `n >= 4f + 3` updates of equal non-zero dimension. An update
/// holding a NaN or an infinity is infinitely far in the selection and an extreme
/// outlier in the aggregation; if one still reaches the aggregate the call fails
/// with [`AggregateError::NonFiniteUpdate`].
pub fn bulyan<U: AsRef<[f32]>>(
    updates: &[U],
    byzantine: usize,
) -> Result<Vec<f32>, AggregateError> {
    let (n, d) = check_shape(updates)?;
    let f = byzantine;
    require_n("bulyan", n, f, 4 * f + 3)?;
    let theta = n - 2 * f;
    let beta = theta - 2 * f;
    let dist = pairwise_sq_distances(updates)?;
    let mut remaining: Vec<usize> = (0..n).collect();
    let mut selected: Vec<&[f32]> = Vec::with_capacity(theta);
    while selected.len() < theta {
        let k = remaining.len();
        let chosen = if k == 1 {
            remaining[0]
        } else {
            let neighbours = k.saturating_sub(f + 2).clamp(1, k - 1);
            let s = scores(&dist, n, &remaining, neighbours);
            rank_by_score(updates, &remaining, &s)[0]
        };
        remaining.retain(|&i| i != chosen);
        selected.push(updates[chosen].as_ref());
    }
    let mut out = vec![0.0_f32; d];
    let mut gaps = vec![(0_u32, 0_i32); theta];
    kernels::reduce_columns(&selected, &mut out, |column| {
        closest_to_median_mean(column, beta, &mut gaps)
    });
    finite_or_error(updates, out)
}

/// Mean of the `beta` values of `column` (order keys) closest to its median;
/// `scratch.len() == column.len()`.
fn closest_to_median_mean(column: &mut [i32], beta: usize, scratch: &mut [(u32, i32)]) -> f32 {
    let med = column_median(column);
    for (slot, &key) in scratch.iter_mut().zip(column.iter()) {
        let gap = (kernels::from_key(key) - med).abs();
        // Non-negative floats (and NaN, which sorts last) order like their bit patterns.
        *slot = (gap.to_bits(), key);
    }
    let kept = if beta < scratch.len() {
        scratch.select_nth_unstable(beta - 1);
        &scratch[..beta]
    } else {
        &scratch[..]
    };
    let sum: f64 = kept
        .iter()
        .map(|&(_, key)| f64::from(kernels::from_key(key)))
        .sum();
    (sum / beta as f64) as f32
}
