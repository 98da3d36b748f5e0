//! Coordinate-wise trimmed mean (Yin et al. 2018).

use super::sortnet::{self, Statistic};
use super::{check_shape, finite_or_error, kernels, mean_of, require_n, AggregateError};

/// Coordinate-wise trimmed mean: for each coordinate, drops the `trim` smallest and
/// the `trim` largest values and averages the remaining `n - 2 trim`.
///
/// Preconditions: `n >= 2 trim + 1` updates of equal non-zero dimension. With
/// `trim >= f` Byzantine updates, each output coordinate lies within the range of the
/// honest values of that coordinate. `trim = 0` is the plain mean. NaNs and
/// infinities are extreme outliers; one that is not trimmed fails the call with
/// [`AggregateError::NonFiniteUpdate`].
///
/// Up to 256 updates are sorted by a network across SIMD lanes, a tile of columns
/// at a time; more are reduced by selection one coordinate at a time.
pub fn trimmed_mean<U: AsRef<[f32]>>(
    updates: &[U],
    trim: usize,
) -> Result<Vec<f32>, AggregateError> {
    let (n, d) = check_shape(updates)?;
    require_n("trimmed-mean", n, trim, 2 * trim + 1)?;
    let out = if trim == 0 {
        mean_of(updates, &(0..n).collect::<Vec<_>>(), d)
    } else if n <= sortnet::NETWORK_N_MAX {
        let rows: Vec<&[f32]> = updates.iter().map(AsRef::as_ref).collect();
        let mut out = vec![0.0_f32; d];
        sortnet::per_coordinate(&rows, Statistic::TrimmedMean { trim }, &mut out);
        out
    } else {
        let mut out = vec![0.0_f32; d];
        kernels::reduce_columns(updates, &mut out, |column| {
            column_trimmed_mean(column, trim)
        });
        out
    };
    finite_or_error(updates, out)
}

/// Largest trim handled by [`extremes_sum`]; larger trims use two selections.
const SMALL_TRIM_MAX: usize = 4;

/// Trimmed mean of one column of order keys (reorders the column); `column.len() > 2 trim`.
pub(crate) fn column_trimmed_mean(column: &mut [i32], trim: usize) -> f32 {
    let n = column.len();
    let kept = n - 2 * trim;
    if trim == 0 {
        return (kernels::key_sum(column) / kept as f64) as f32;
    }
    if trim <= SMALL_TRIM_MAX {
        return (middle_sum(column, trim) / kept as f64) as f32;
    }
    let (_, _, rest) = column.select_nth_unstable(trim - 1);
    // `rest` holds the n - trim largest values; keep its `kept` smallest.
    if kept < rest.len() {
        rest.select_nth_unstable(kept - 1);
    }
    (kernels::key_sum(&rest[..kept]) / kept as f64) as f32
}

/// Sum of the values of `column` left after dropping the `trim` smallest and the
/// `trim` largest (`1 <= trim <= SMALL_TRIM_MAX`, `column.len() > 2 trim`).
///
/// One filtering pass finds the trimmed extremes (kept in fixed arrays; after the
/// first few values almost every comparison fails, so this beats two selections for
/// small trims), a second pass sums what lies between them, ties included. No value
/// is subtracted, so huge outliers cannot cancel the honest values' precision.
fn middle_sum(column: &[i32], trim: usize) -> f64 {
    let (low_max, high_min) = trimmed_bounds(column, trim);
    if low_max == high_min {
        return (column.len() - 2 * trim) as f64 * f64::from(kernels::from_key(low_max));
    }
    let (mut sum, mut at_most_low, mut at_least_high) = (0.0_f64, 0_usize, 0_usize);
    for &x in column {
        at_most_low += usize::from(x <= low_max);
        at_least_high += usize::from(x >= high_min);
        if x > low_max && x < high_min {
            sum += f64::from(kernels::from_key(x));
        }
    }
    // Copies of a bound beyond the `trim` dropped ones belong to the middle (skipped
    // when there are none: the bound may be an infinite or NaN outlier).
    for (count, bound) in [(at_most_low, low_max), (at_least_high, high_min)] {
        if count > trim {
            sum += (count - trim) as f64 * f64::from(kernels::from_key(bound));
        }
    }
    sum
}

/// `(largest of the trim smallest, smallest of the trim largest)` of `column`.
fn trimmed_bounds(column: &[i32], trim: usize) -> (i32, i32) {
    let mut low = [0_i32; SMALL_TRIM_MAX];
    let mut high = [0_i32; SMALL_TRIM_MAX];
    let (low, high) = (&mut low[..trim], &mut high[..trim]);
    low.copy_from_slice(&column[..trim]);
    high.copy_from_slice(&column[..trim]);
    let arg_max = |v: &[i32]| (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best });
    let arg_min = |v: &[i32]| (0..v.len()).fold(0, |best, i| if v[i] < v[best] { i } else { best });
    let (mut low_top, mut high_bottom) = (arg_max(low), arg_min(high));
    for &x in &column[trim..] {
        if x < low[low_top] {
            low[low_top] = x;
            low_top = arg_max(low);
        }
        if x > high[high_bottom] {
            high[high_bottom] = x;
            high_bottom = arg_min(high);
        }
    }
    (low[low_top], high[high_bottom])
}
