//! Coordinate-wise median (Yin et al. 2018).

use super::{check_shape, kernels, require_n, AggregateError};

/// Coordinate-wise median; for even `n` the mean of the two middle values.
///
/// Preconditions: `n >= 2f + 1` updates of equal non-zero dimension, where `f` is the
/// number of Byzantine updates to tolerate (`byzantine`). Each output coordinate then
/// lies within the range of the honest values of that coordinate.
pub fn median<U: AsRef<[f32]>>(
    updates: &[U],
    byzantine: usize,
) -> Result<Vec<f32>, AggregateError> {
    let (n, d) = check_shape(updates)?;
    require_n("median", n, byzantine, 2 * byzantine + 1)?;
    let mut out = vec![0.0_f32; d];
    kernels::reduce_columns(updates, &mut out, column_median);
    Ok(out)
}

/// Median of one column of order keys (reorders the column).
pub(crate) fn column_median(column: &mut [i32]) -> f32 {
    let n = column.len();
    let mid = n / 2;
    let (lower, &mut upper, _) = column.select_nth_unstable(mid);
    let upper = kernels::from_key(upper);
    if n % 2 == 1 {
        return upper;
    }
    let below = lower.iter().copied().max().map_or(upper, kernels::from_key);
    ((f64::from(below) + f64::from(upper)) / 2.0) as f32
}
