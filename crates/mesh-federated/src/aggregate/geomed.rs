//! Geometric median by the smoothed Weiszfeld algorithm, as in RFA (Pillutla, Kakade
//! and Harchaoui 2022, "Robust Aggregation for Federated Learning").

use super::{
    check_shape, finite_or_error, first_non_finite, normalized_weights, require_n, simd,
    AggregateError,
};

/// Parameters of the smoothed Weiszfeld iteration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeiszfeldParams {
    /// Upper bound on iterations (each costs two passes over the n x d input: the
    /// weighted sum and the distances to it).
    pub iterations_max: usize,
    /// Stop when the objective changes by at most `tolerance * objective`.
    pub tolerance: f64,
    /// Smoothing `nu`: distances below it are treated as `nu`, so an iterate that
    /// lands on an input point does not divide by zero.
    pub smoothing: f64,
}

impl Default for WeiszfeldParams {
    /// RFA's smoothing `nu = 1e-6`, a relative tolerance of `1e-6` and at most 100 iterations.
    fn default() -> Self {
        Self {
            iterations_max: 100,
            tolerance: 1e-6,
            smoothing: 1e-6,
        }
    }
}

impl WeiszfeldParams {
    /// Checks that the parameters are usable.
    pub fn validate(&self) -> Result<(), AggregateError> {
        if self.iterations_max == 0 {
            return Err(invalid(
                "iterations",
                self.iterations_max.to_string(),
                "must be at least 1",
            ));
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return Err(invalid(
                "tolerance",
                self.tolerance.to_string(),
                "must be finite and >= 0",
            ));
        }
        if !(self.smoothing.is_finite() && self.smoothing > 0.0) {
            return Err(invalid(
                "smoothing",
                self.smoothing.to_string(),
                "must be finite and > 0",
            ));
        }
        Ok(())
    }
}

fn invalid(name: &'static str, value: String, reason: &'static str) -> AggregateError {
    AggregateError::InvalidParameter {
        name,
        value,
        reason,
    }
}

/// Weighted geometric median `argmin_z sum_i w_i ||z - x_i||` by smoothed Weiszfeld:
/// starting from the weighted mean, repeat `beta_i = w_i / max(nu, ||z - x_i||)`,
/// `z = sum_i beta_i x_i / sum_i beta_i` until the objective's relative change is at
/// most `tolerance` or `iterations_max` is reached. Each iteration reads the input
/// twice: once for the new `z`, once for the distances that serve both its objective
/// and the next weights.
///
/// An update holding a NaN or an infinity is infinitely far from every `z`, so its
/// weight `beta_i` is zero from the start: it is left out. If every update with a
/// non-zero weight is such, the call fails with [`AggregateError::NonFiniteUpdate`].
///
/// Preconditions: `n >= 2f + 1` updates of equal non-zero dimension (the geometric
/// median's breakdown point is 1/2); weights as for
/// [`weighted_mean`](super::weighted_mean); valid `params`.
pub fn geometric_median<U: AsRef<[f32]>>(
    updates: &[U],
    weights: &[f32],
    byzantine: usize,
    params: &WeiszfeldParams,
) -> Result<Vec<f32>, AggregateError> {
    let (n, d) = check_shape(updates)?;
    require_n("geomed", n, byzantine, 2 * byzantine + 1)?;
    params.validate()?;
    let mut alpha = normalized_weights(weights, n)?;
    let mut z = vec![0.0_f32; d];
    simd::weighted_sum_into(updates, &alpha, &mut z);
    if !simd::all_finite(&z) {
        alpha = without_non_finite(updates, &alpha)?;
        simd::weighted_sum_into(updates, &alpha, &mut z);
    }
    let nu = params.smoothing;
    let mut distances = distances_to(updates, &z);
    let mut objective_prev = objective(&alpha, &distances, nu);
    let mut beta = vec![0.0_f64; n];
    for _ in 0..params.iterations_max {
        let mut total = 0.0;
        for ((b, &a), &dist) in beta.iter_mut().zip(&alpha).zip(&distances) {
            *b = if a == 0.0 { 0.0 } else { a / dist.max(nu) };
            total += *b;
        }
        if !(total.is_finite() && total > 0.0) {
            break;
        }
        beta.iter_mut().for_each(|b| *b /= total);
        simd::weighted_sum_into(updates, &beta, &mut z);
        distances = distances_to(updates, &z);
        let objective_now = objective(&alpha, &distances, nu);
        let converged = (objective_prev - objective_now).abs() <= params.tolerance * objective_now;
        objective_prev = objective_now;
        if converged {
            break;
        }
    }
    finite_or_error(updates, z)
}

/// `alpha` with the weights of updates holding a NaN or an infinity set to zero,
/// renormalized; fails if no weight is left.
fn without_non_finite<U: AsRef<[f32]>>(
    updates: &[U],
    alpha: &[f64],
) -> Result<Vec<f64>, AggregateError> {
    let mut kept: Vec<f64> = updates
        .iter()
        .zip(alpha)
        .map(|(u, &a)| if simd::all_finite(u.as_ref()) { a } else { 0.0 })
        .collect();
    let total: f64 = kept.iter().sum();
    if total <= 0.0 {
        let index = first_non_finite(updates).unwrap_or(0);
        return Err(AggregateError::NonFiniteUpdate { index });
    }
    kept.iter_mut().for_each(|a| *a /= total);
    Ok(kept)
}

/// Euclidean distance of each update to `z`.
fn distances_to<U: AsRef<[f32]>>(updates: &[U], z: &[f32]) -> Vec<f64> {
    let mut distances = simd::sq_dists_to(updates, z);
    distances.iter_mut().for_each(|x| *x = x.sqrt());
    distances
}

/// `sum_i alpha_i max(nu, distance_i)`; updates of weight zero add nothing.
fn objective(alpha: &[f64], distances: &[f64], nu: f64) -> f64 {
    distances
        .iter()
        .zip(alpha)
        .filter(|(_, &a)| a != 0.0)
        .map(|(&dist, &a)| a * dist.max(nu))
        .sum()
}
