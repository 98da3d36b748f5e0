//! Centered clipping (Karimireddy, He and Jaggi 2021, "Learning from History for
//! Byzantine Robust Optimization").

use super::{check_shape, finite_or_error, require_n, simd, AggregateError};

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
/// Each iteration reads the input twice: once for the distances to `v`, once for
/// the clipped sum, which is computed as the weighted sum
/// `(1 - sum_i c_i) v + sum_i c_i x_i` with `c_i = min(1, tau / ||x_i - v||) / n`.
/// An update holding a NaN or an infinity is infinitely far from `v`: its `c_i` is
/// zero and it moves nothing.
///
/// Preconditions: `n >= 2f + 1` updates of equal non-zero dimension,
/// `center.len() == d` and finite, valid `params`.
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
    if !simd::all_finite(center) {
        return Err(AggregateError::InvalidParameter {
            name: "center",
            value: "a vector holding a NaN or an infinity".to_owned(),
            reason: "the clipping centre must be finite",
        });
    }
    let tau = f64::from(params.radius);
    let mut v = center.to_vec();
    let mut next = vec![0.0_f32; d];
    let mut coefficients = vec![0.0_f64; n + 1];
    for _ in 0..params.iterations {
        let sq_distances = simd::sq_dists_to(updates, &v);
        for (c, &sq) in coefficients.iter_mut().zip(&sq_distances) {
            let distance = sq.sqrt();
            *c = if !distance.is_finite() {
                0.0
            } else if distance > tau {
                tau / distance / n as f64
            } else {
                1.0 / n as f64
            };
        }
        coefficients[n] = 1.0 - coefficients[..n].iter().sum::<f64>();
        let rows: Vec<&[f32]> = updates
            .iter()
            .map(AsRef::as_ref)
            .chain(std::iter::once(&v[..]))
            .collect();
        simd::weighted_sum_into(&rows, &coefficients, &mut next);
        std::mem::swap(&mut v, &mut next);
    }
    finite_or_error(updates, v)
}
