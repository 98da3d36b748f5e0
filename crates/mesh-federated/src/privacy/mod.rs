//! Differential privacy for client updates: per-update L2 clipping, Gaussian noise
//! placed centrally or distributed over the clients, and an RDP accountant with a
//! budget ledger that stops a job before the round that would exceed its budget.
//!
//! ```text
//!  client i: clip_l2(update, C) ──► + N(0, (zC)^2 / m)   (Distributed)
//!                                          │
//!                                          ▼
//!  server:   sum of m clipped updates ──► + N(0, (zC)^2)  (Central)
//!                                          │
//!  ledger:   RDP(q, z) x rounds ──► (epsilon, delta); refuse a round that would exceed
//! ```
//!
//! Either placement puts noise of standard deviation `zC` on the **sum** of the
//! clipped updates, which is what the accountant assumes: client-level DP with
//! sensitivity `C` for an unweighted sum (or a mean over a fixed `m`). Dividing the
//! sum by `m` afterwards is post-processing. Weighting clients by sample counts
//! changes the sensitivity and is not covered.

mod budget;
mod rdp;

pub use budget::{PrivacyBudget, PrivacyLedger};
pub use rdp::{
    default_orders, epsilon_for, epsilon_from_rdp, noise_multiplier_for_epsilon,
    rdp_poisson_gaussian, GaussianEvent, RdpAccountant,
};

use rand::Rng;
use rand_distr::{Distribution, Normal};

/// Why a privacy computation failed. All variants are caller errors except
/// [`PrivacyError::BudgetExceeded`], which is the ledger refusing a round.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PrivacyError {
    /// The sampling rate is outside `(0, 1]`.
    #[error("sampling rate must be in (0, 1], got {0}")]
    SamplingRate(f64),
    /// The noise multiplier is not finite and positive.
    #[error("noise multiplier must be finite and > 0, got {0}")]
    NoiseMultiplier(f64),
    /// Delta is outside `(0, 1)`.
    #[error("delta must be in (0, 1), got {0}")]
    Delta(f64),
    /// Epsilon is not finite and positive.
    #[error("epsilon must be finite and > 0, got {0}")]
    Epsilon(f64),
    /// The clipping norm is not finite and positive.
    #[error("clipping norm must be finite and > 0, got {0}")]
    ClipNorm(f64),
    /// A noise standard deviation is negative or not finite.
    #[error("noise standard deviation must be finite and >= 0, got {0}")]
    NoiseStd(f64),
    /// The number of clients sharing distributed noise is zero.
    #[error("distributed noise needs at least one client")]
    NoClients,
    /// An update has a NaN or infinite norm, so it cannot be clipped.
    #[error("update has non-finite L2 norm {0}; cannot clip")]
    NonFiniteUpdate(f64),
    /// The RDP orders are empty or contain an order `<= 1` or a non-finite order.
    #[error("RDP orders must be non-empty, finite and > 1 (got {0})")]
    Orders(String),
    /// The round would take the spent epsilon past the budget.
    #[error("privacy budget exceeded: spent epsilon {spent:.4}, the next round would reach {next:.4} > budget {budget}")]
    BudgetExceeded {
        /// Epsilon spent so far.
        spent: f64,
        /// Epsilon after the refused round.
        next: f64,
        /// The budget's epsilon.
        budget: f64,
    },
    /// No noise multiplier up to the search bound reaches the target epsilon.
    #[error("no noise multiplier <= {bound} reaches epsilon {target} (q = {q}, steps = {steps}, delta = {delta})")]
    TargetUnreachable {
        /// Target epsilon.
        target: f64,
        /// Largest noise multiplier tried.
        bound: f64,
        /// Sampling rate.
        q: f64,
        /// Number of steps.
        steps: u64,
        /// Delta.
        delta: f64,
    },
}

/// Clips `update` in place to L2 norm at most `clip_norm` (scaling it by
/// `min(1, clip_norm / norm)`) and returns its norm before clipping.
///
/// Fails if `clip_norm` is not finite and positive, or the update's norm is NaN or
/// infinite.
pub fn clip_l2(update: &mut [f32], clip_norm: f32) -> Result<f32, PrivacyError> {
    if !(clip_norm.is_finite() && clip_norm > 0.0) {
        return Err(PrivacyError::ClipNorm(f64::from(clip_norm)));
    }
    let norm = update
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if !norm.is_finite() {
        return Err(PrivacyError::NonFiniteUpdate(norm));
    }
    let clip = f64::from(clip_norm);
    if norm > clip {
        let scale = clip / norm;
        update
            .iter_mut()
            .for_each(|x| *x = (f64::from(*x) * scale) as f32);
    }
    Ok(norm as f32)
}

/// Adds independent `N(0, std^2)` noise to every coordinate of `values`, drawn from
/// `rng` (seed it for reproducible runs). `std = 0` leaves `values` unchanged.
pub fn add_gaussian_noise<R: Rng + ?Sized>(
    values: &mut [f32],
    std: f64,
    rng: &mut R,
) -> Result<(), PrivacyError> {
    if !(std.is_finite() && std >= 0.0) {
        return Err(PrivacyError::NoiseStd(std));
    }
    if std == 0.0 {
        return Ok(());
    }
    let normal = Normal::new(0.0_f64, std).map_err(|_| PrivacyError::NoiseStd(std))?;
    values
        .iter_mut()
        .for_each(|x| *x = (f64::from(*x) + normal.sample(rng)) as f32);
    Ok(())
}

/// Where the Gaussian noise is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoisePlacement {
    /// The server (a trusted aggregator) adds all the noise to the sum.
    #[default]
    Central,
    /// Each of the `m` participating clients adds `1/m` of the variance to its own
    /// clipped update, so the sum carries the full variance and no single party
    /// sees an un-noised sum (use with secure aggregation).
    Distributed,
}

/// The client-level Gaussian mechanism: clip each update to `clip_norm`, then noise
/// of standard deviation `noise_multiplier * clip_norm` on the sum, split according
/// to `placement`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaussianMechanism {
    clip_norm: f32,
    noise_multiplier: f64,
    placement: NoisePlacement,
}

impl GaussianMechanism {
    /// Validates and builds the mechanism.
    pub fn new(
        clip_norm: f32,
        noise_multiplier: f64,
        placement: NoisePlacement,
    ) -> Result<Self, PrivacyError> {
        if !(clip_norm.is_finite() && clip_norm > 0.0) {
            return Err(PrivacyError::ClipNorm(f64::from(clip_norm)));
        }
        if !(noise_multiplier.is_finite() && noise_multiplier > 0.0) {
            return Err(PrivacyError::NoiseMultiplier(noise_multiplier));
        }
        Ok(Self {
            clip_norm,
            noise_multiplier,
            placement,
        })
    }

    /// The clipping norm `C`.
    pub fn clip_norm(&self) -> f32 {
        self.clip_norm
    }

    /// The noise multiplier `z`.
    pub fn noise_multiplier(&self) -> f64 {
        self.noise_multiplier
    }

    /// The placement.
    pub fn placement(&self) -> NoisePlacement {
        self.placement
    }

    /// Standard deviation `zC` of the total noise on the sum.
    pub fn sum_noise_std(&self) -> f64 {
        self.noise_multiplier * f64::from(self.clip_norm)
    }

    /// Standard deviation each of `clients` clients adds: `zC / sqrt(m)` when
    /// distributed, 0 when central.
    pub fn client_noise_std(&self, clients: usize) -> Result<f64, PrivacyError> {
        match self.placement {
            NoisePlacement::Central => Ok(0.0),
            NoisePlacement::Distributed if clients == 0 => Err(PrivacyError::NoClients),
            NoisePlacement::Distributed => Ok(self.sum_noise_std() / (clients as f64).sqrt()),
        }
    }

    /// Standard deviation the server adds to the sum: `zC` when central, 0 when distributed.
    pub fn server_noise_std(&self) -> f64 {
        match self.placement {
            NoisePlacement::Central => self.sum_noise_std(),
            NoisePlacement::Distributed => 0.0,
        }
    }

    /// Client side: clips `update` and adds this client's share of the noise, with
    /// `clients` participants in the round. Returns the pre-clip norm.
    pub fn privatize_client<R: Rng + ?Sized>(
        &self,
        update: &mut [f32],
        clients: usize,
        rng: &mut R,
    ) -> Result<f32, PrivacyError> {
        let norm = clip_l2(update, self.clip_norm)?;
        add_gaussian_noise(update, self.client_noise_std(clients)?, rng)?;
        Ok(norm)
    }

    /// Server side: adds the central share of the noise to the sum of clipped updates.
    pub fn privatize_sum<R: Rng + ?Sized>(
        &self,
        sum: &mut [f32],
        rng: &mut R,
    ) -> Result<(), PrivacyError> {
        add_gaussian_noise(sum, self.server_noise_std(), rng)
    }
}

#[cfg(test)]
mod tests;
