//! Weighted federated averaging (McMahan et al. 2017).

use super::{check_shape, finite_or_error_among, normalized_weights, simd, AggregateError};

/// Weighted mean `sum_i w_i x_i / sum_i w_i` of the updates (FedAvg).
///
/// `weights` are typically local sample counts.
///
/// Preconditions: `n >= 1` updates of equal non-zero dimension; `weights.len() == n`,
/// every weight finite and `>= 0`, and their sum `> 0`. Not robust: a single
/// Byzantine update moves the result arbitrarily far, and one holding a NaN or an
/// infinity with a non-zero weight is rejected
/// ([`AggregateError::NonFiniteUpdate`]).
pub fn weighted_mean<U: AsRef<[f32]>>(
    updates: &[U],
    weights: &[f32],
) -> Result<Vec<f32>, AggregateError> {
    let (n, d) = check_shape(updates)?;
    let coefficients = normalized_weights(weights, n)?;
    let mut out = vec![0.0_f32; d];
    simd::weighted_sum_into(updates, &coefficients, &mut out);
    finite_or_error_among(updates, out, |i| coefficients[i] != 0.0)
}
