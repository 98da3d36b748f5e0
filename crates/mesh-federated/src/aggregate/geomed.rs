//! Geometric median by the smoothed Weiszfeld algorithm, as in RFA (Pillutla, Kakade
//! and Harchaoui 2022, "Robust Aggregation for Federated Learning").

use super::{check_shape, kernels, normalized_weights, require_n, AggregateError};

/// Parameters of the smoothed Weiszfeld iteration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeiszfeldParams {
    /// Upper bound on iterations (each costs two passes over the n x d input).
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
/// most `tolerance` or `iterations_max` is reached.
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
    let alpha = normalized_weights(weights, n)?;
    let mut z = vec![0.0_f32; d];
    kernels::weighted_sum_into(updates, &alpha, &mut z);
    let mut objective_prev = objective(updates, &alpha, &z, params.smoothing).0;
    let mut beta = vec![0.0_f64; n];
    for _ in 0..params.iterations_max {
        let (_, distances) = objective(updates, &alpha, &z, params.smoothing);
        let mut total = 0.0;
        for ((b, &a), &dist) in beta.iter_mut().zip(&alpha).zip(&distances) {
            *b = a / dist.max(params.smoothing);
            total += *b;
        }
        if !(total.is_finite() && total > 0.0) {
            break;
        }
        beta.iter_mut().for_each(|b| *b /= total);
        kernels::weighted_sum_into(updates, &beta, &mut z);
        let objective_now = objective(updates, &alpha, &z, params.smoothing).0;
        let converged = (objective_prev - objective_now).abs() <= params.tolerance * objective_now;
        objective_prev = objective_now;
        if converged {
            break;
        }
    }
    Ok(z)
}

/// Returns `(sum_i alpha_i max(nu, ||z - x_i||), distances)`.
fn objective<U: AsRef<[f32]>>(updates: &[U], alpha: &[f64], z: &[f32], nu: f64) -> (f64, Vec<f64>) {
    let distances: Vec<f64> = updates
        .iter()
        .map(|u| kernels::sq_dist(u.as_ref(), z).sqrt())
        .collect();
    let total = distances
        .iter()
        .zip(alpha)
        .map(|(&dist, &a)| a * dist.max(nu))
        .sum();
    (total, distances)
}
