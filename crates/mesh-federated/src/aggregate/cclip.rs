//! Centered clipping (Karimireddy, He and Jaggi 2021, "Learning from History for
//! Byzantine Robust Optimization").

use super::{check_shape, kernels, require_n, AggregateError};

/// Parameters of centered clipping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CenteredClipParams {
    /// Clipping radius `tau` (L2) around the current center.
    pub radius: f32,
    /// Number of clipping iterations `L` per aggregation.
    pub iterations: usize,
}

impl Default for CenteredClipParams {
    /// `tau = 1`, `L = 3`: model deltas of a round are small, and a Byzantine node can
    /// move the result by at most `f tau / n` per iteration.
    fn default() -> Self {
        Self {
            radius: 1.0,
            iterations: 3,
        }
    }
}

impl CenteredClipParams {
    /// Checks that the parameters are usable.
    pub fn validate(&self) -> Result<(), AggregateError> {
        if !(self.radius.is_finite() && self.radius > 0.0) {
            return Err(AggregateError::InvalidParameter {
                name: "tau",
                value: self.radius.to_string(),
                reason: "clipping radius must be finite and > 0",
            });
        }
        if self.iterations == 0 || self.iterations > 1000 {
            return Err(AggregateError::InvalidParameter {
                name: "iters",
                value: self.iterations.to_string(),
                reason: "iterations must be in 1..=1000",
            });
        }
        Ok(())
    }
}

/// Centered clipping: starting from `center` (the previous aggregate), repeat
/// `L` times `v = v + (1/n) sum_i (x_i - v) min(1, tau / ||x_i - v||)`.
///
/// Preconditions: `n >= 2f + 1` updates of equal non-zero dimension,
/// `center.len() == d`, valid `params`.
pub fn centered_clip<U: AsRef<[f32]>>(
    updates: &[U],
    center: &[f32],
    byzantine: usize,
    params: &CenteredClipParams,
) -> Result<Vec<f32>, AggregateError> {
    let (n, d) = check_shape(updates)?;
    require_n("cclip", n, byzantine, 2 * byzantine + 1)?;
    params.validate()?;
    if center.len() != d {
        return Err(AggregateError::DimensionMismatch {
            index: n,
            expected: d,
            found: center.len(),
        });
    }
    let tau = f64::from(params.radius);
    let mut v = center.to_vec();
    let mut coefficients = vec![0.0_f64; n];
    let mut step = vec![0.0_f32; d];
    for _ in 0..params.iterations {
        // v + (1/n) sum_i c_i (x_i - v) = (1 - sum c_i / n) v + sum_i (c_i / n) x_i
        for (c, u) in coefficients.iter_mut().zip(updates) {
            let distance = kernels::sq_dist(u.as_ref(), &v).sqrt();
            let scale = if distance > tau { tau / distance } else { 1.0 };
            *c = if scale.is_finite() {
                scale / n as f64
            } else {
                0.0
            };
        }
        kernels::weighted_sum_into(updates, &coefficients, &mut step);
        let keep = 1.0 - coefficients.iter().sum::<f64>();
        for (x, &s) in v.iter_mut().zip(&step) {
            *x = (keep * f64::from(*x) + f64::from(s)) as f32;
        }
    }
    Ok(v)
}
