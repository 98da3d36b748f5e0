//! Robust aggregation of model updates.
//!
//! Every rule is a pure function over `n` updates of dimension `d` (model deltas,
//! local minus global) with documented preconditions; a violated precondition is an
//! [`AggregateError`], never a panic. The simulator and the node use one entry
//! point, [`Aggregator`], configured by [`AggregatorConfig`]:
//!
//! ```text
//!   updates (n x d) ──► PreAggregation (none | nnm | bucketing, seeded)
//!                              │
//!                              ▼
//!                      Rule (fedavg | median | trimmed-mean | krum | multi-krum |
//!                            bulyan | geomed | cclip)  ──► aggregated update (d)
//!                              │
//!                              ▼
//!                      ServerOptimizer (sgd | fedadam | fedyogi) ──► new global model
//! ```
//!
//! A NaN or an infinity in an update is either neutralised or rejected, never
//! passed on: order-based rules (median, trimmed mean, Bulyan) use the IEEE-754 total
//! order, so it is an extreme outlier; distance-based rules (Krum, Multi-Krum, NNM,
//! the geometric median, centered clipping) treat such an update as infinitely far,
//! which gives it no weight. Whenever a non-finite value would still reach the
//! aggregate (FedAvg, or more outliers than the rule tolerates), the rule fails with
//! [`AggregateError::NonFiniteUpdate`] naming the first such update.
//!
//! The hot loops run at the CPU's SIMD width, chosen at run time (`simd`, `gram`,
//! `sortnet`): pairwise distances are one blocked matrix product, per-coordinate
//! median and trimmed mean a sorting network across SIMD lanes, and weighted sums and
//! distances to a point single streaming passes.

pub mod bench;
pub mod bucketing;
pub mod bulyan;
pub mod cclip;
pub mod fedavg;
pub mod geomed;
mod gram;
mod kernels;
pub mod krum;
pub mod median;
pub mod nnm;
mod pipeline;
pub mod server;
mod simd;
mod sortnet;
pub(crate) mod spec;
pub mod trimmed_mean;

pub use bucketing::bucketing;
pub use bulyan::bulyan;
pub use cclip::{centered_clip, CenteredClipParams};
pub use fedavg::weighted_mean;
pub use geomed::{geometric_median, WeiszfeldParams};
pub use krum::{krum, krum_index, multi_krum};
pub use median::median;
pub use nnm::nearest_neighbour_mixing;
pub use pipeline::{Aggregator, AggregatorConfig, PreAggregation, Rule};
pub use server::ServerOptimizer;
pub use spec::ParseSpecError;
pub use trimmed_mean::trimmed_mean;

/// Why an aggregation (or a server-optimizer step) could not be computed.
///
/// All variants are caller errors: retrying with the same input fails the same way.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AggregateError {
    /// No updates were given.
    #[error("no updates to aggregate")]
    Empty,
    /// The updates have dimension zero.
    #[error("updates have dimension 0")]
    ZeroDimension,
    /// An update's length differs from the first update's length.
    #[error(
        "update {index} has dimension {found}, expected {expected} (the dimension of update 0)"
    )]
    DimensionMismatch {
        /// Index of the offending update.
        index: usize,
        /// Dimension of update 0.
        expected: usize,
        /// Dimension of the offending update.
        found: usize,
    },
    /// The rule needs more updates to tolerate the configured number of Byzantine ones.
    #[error(
        "{rule} needs n >= {required} updates to tolerate f = {byzantine} Byzantine, got n = {n}"
    )]
    TooFewUpdates {
        /// Name of the rule.
        rule: &'static str,
        /// Number of updates given (after pre-aggregation).
        n: usize,
        /// Number of Byzantine updates to tolerate.
        byzantine: usize,
        /// Minimum n for this f.
        required: usize,
    },
    /// The number of weights differs from the number of updates.
    #[error("got {weights} weights for {n} updates")]
    WeightCount {
        /// Number of updates.
        n: usize,
        /// Number of weights.
        weights: usize,
    },
    /// A weight is negative, NaN or infinite.
    #[error("weight {index} is {value}; weights must be finite and non-negative")]
    InvalidWeight {
        /// Index of the offending weight.
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// All weights are zero.
    #[error("weights sum to zero")]
    ZeroTotalWeight,
    /// A rule or optimizer parameter is out of range.
    #[error("invalid parameter {name} = {value}: {reason}")]
    InvalidParameter {
        /// Parameter name.
        name: &'static str,
        /// The offending value, formatted.
        value: String,
        /// The valid range.
        reason: &'static str,
    },
    /// An update holds a NaN or an infinity that would reach the aggregate (FedAvg,
    /// or more such updates than the rule tolerates).
    #[error("update {index} holds a NaN or an infinity, which would reach the aggregate")]
    NonFiniteUpdate {
        /// Index of the first update holding a non-finite value.
        index: usize,
    },
    /// Every update is finite but the aggregate overflowed to an infinity.
    #[error("the aggregate overflowed although every update is finite")]
    NonFiniteResult,
}

/// Checks that there is at least one update, that all have the same non-zero
/// dimension, and returns `(n, d)`.
pub fn check_shape<U: AsRef<[f32]>>(updates: &[U]) -> Result<(usize, usize), AggregateError> {
    let first = updates.first().ok_or(AggregateError::Empty)?;
    let d = first.as_ref().len();
    if d == 0 {
        return Err(AggregateError::ZeroDimension);
    }
    for (index, u) in updates.iter().enumerate() {
        let found = u.as_ref().len();
        if found != d {
            return Err(AggregateError::DimensionMismatch {
                index,
                expected: d,
                found,
            });
        }
    }
    Ok((updates.len(), d))
}

/// Fails with [`AggregateError::TooFewUpdates`] unless `n >= required`.
fn require_n(
    rule: &'static str,
    n: usize,
    byzantine: usize,
    required: usize,
) -> Result<(), AggregateError> {
    if n < required {
        return Err(AggregateError::TooFewUpdates {
            rule,
            n,
            byzantine,
            required,
        });
    }
    Ok(())
}

/// Validates `weights` against `n` updates and returns them normalized to sum 1, in `f64`.
fn normalized_weights(weights: &[f32], n: usize) -> Result<Vec<f64>, AggregateError> {
    if weights.len() != n {
        return Err(AggregateError::WeightCount {
            n,
            weights: weights.len(),
        });
    }
    let mut total = 0.0_f64;
    for (index, &value) in weights.iter().enumerate() {
        if !value.is_finite() || value < 0.0 {
            return Err(AggregateError::InvalidWeight { index, value });
        }
        total += f64::from(value);
    }
    if total <= 0.0 {
        return Err(AggregateError::ZeroTotalWeight);
    }
    Ok(weights.iter().map(|&w| f64::from(w) / total).collect())
}

/// Unweighted mean of the updates selected by `indices` (non-empty, all of dimension `d`).
fn mean_of<U: AsRef<[f32]>>(updates: &[U], indices: &[usize], d: usize) -> Vec<f32> {
    let rows: Vec<&[f32]> = indices.iter().map(|&i| updates[i].as_ref()).collect();
    let coefficient = 1.0 / rows.len() as f64;
    let coefficients = vec![coefficient; rows.len()];
    let mut out = vec![0.0_f32; d];
    simd::weighted_sum_into(&rows, &coefficients, &mut out);
    out
}

/// Index of the first update holding a NaN or an infinity.
pub(crate) fn first_non_finite<U: AsRef<[f32]>>(updates: &[U]) -> Option<usize> {
    updates.iter().position(|u| !simd::all_finite(u.as_ref()))
}

/// Returns `aggregate` if it is finite; otherwise the error that names the first
/// non-finite update (or says that finite updates overflowed).
fn finite_or_error<U: AsRef<[f32]>>(
    updates: &[U],
    aggregate: Vec<f32>,
) -> Result<Vec<f32>, AggregateError> {
    finite_or_error_among(updates, aggregate, |_| true)
}

/// Like [`finite_or_error`], naming only an update for which `counts(index)` holds
/// (e.g. one with a non-zero weight).
fn finite_or_error_among<U: AsRef<[f32]>>(
    updates: &[U],
    aggregate: Vec<f32>,
    counts: impl Fn(usize) -> bool,
) -> Result<Vec<f32>, AggregateError> {
    if simd::all_finite(&aggregate) {
        return Ok(aggregate);
    }
    let culprit = (0..updates.len()).find(|&i| counts(i) && !simd::all_finite(updates[i].as_ref()));
    Err(match culprit {
        Some(index) => AggregateError::NonFiniteUpdate { index },
        None => AggregateError::NonFiniteResult,
    })
}

#[cfg(test)]
mod tests;
