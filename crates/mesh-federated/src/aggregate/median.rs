//! Coordinate-wise median (Yin et al. 2018).

use super::sortnet::{self, Statistic};
use super::{check_shape, finite_or_error, kernels, require_n, AggregateError};

/// Coordinate-wise median; for even `n` the mean of the two middle values.
///
/// Preconditions: `n >= 2f + 1` updates of equal non-zero dimension, where `f` is the
/// number of Byzantine updates to tolerate (`byzantine`). Each output coordinate then
/// lies within the range of the honest values of that coordinate. NaNs and
/// infinities are extreme outliers; if they are so many in a coordinate that one
/// becomes the median, the call fails with [`AggregateError::NonFiniteUpdate`].
///
/// Up to 256 updates are sorted by a network across SIMD lanes, a tile of columns
/// at a time; more are reduced by selection one coordinate at a time.
pub fn median<U: AsRef<[f32]>>(
    updates: &[U],
    byzantine: usize,
) -> Result<Vec<f32>, AggregateError> {
    let (n, d) = check_shape(updates)?;
    require_n("median", n, byzantine, 2 * byzantine + 1)?;
    let mut out = vec![0.0_f32; d];
    if n <= sortnet::NETWORK_N_MAX {
        let rows: Vec<&[f32]> = updates.iter().map(AsRef::as_ref).collect();
        sortnet::per_coordinate(&rows, Statistic::Median, &mut out);
    } else {
        kernels::reduce_columns(updates, &mut out, column_median);
    }
    finite_or_error(updates, out)
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
