//! Coordinate-wise trimmed mean (Yin et al. 2018).

use super::{check_shape, kernels, require_n, AggregateError};

/// Coordinate-wise trimmed mean: for each coordinate, drops the `trim` smallest and
/// the `trim` largest values and averages the remaining `n - 2 trim`.
///
/// Preconditions: `n >= 2 trim + 1` updates of equal non-zero dimension. With
/// `trim >= f` Byzantine updates, each output coordinate lies within the range of the
/// honest values of that coordinate. `trim = 0` is the plain mean.
pub fn trimmed_mean<U: AsRef<[f32]>>(
    updates: &[U],
    trim: usize,
) -> Result<Vec<f32>, AggregateError> {
    let (n, d) = check_shape(updates)?;
    require_n("trimmed-mean", n, trim, 2 * trim + 1)?;
    let mut out = vec![0.0_f32; d];
    kernels::reduce_columns(updates, &mut out, |column| {
        column_trimmed_mean(column, trim)
    });
    Ok(out)
}

/// Trimmed mean of one column of order keys (reorders the column); `column.len() > 2 trim`.
pub(crate) fn column_trimmed_mean(column: &mut [i32], trim: usize) -> f32 {
    let n = column.len();
    let kept = n - 2 * trim;
    let middle = if trim == 0 {
        &column[..]
    } else {
        let (_, _, rest) = column.select_nth_unstable(trim - 1);
        // `rest` holds the n - trim largest values; keep its `kept` smallest.
        if kept < rest.len() {
            rest.select_nth_unstable(kept - 1);
        }
        &rest[..kept]
    };
    (kernels::key_sum(middle) / kept as f64) as f32
}
