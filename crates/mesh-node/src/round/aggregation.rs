//! The aggregator role: turns one round's updates into the next global model.
//!
//! Order of operations: (central DP only) clip every received update; robust rule
//! (with pre-aggregation) over the updates; (central DP only) add noise calibrated
//! to the mean's sensitivity `C / m`; server optimizer step. The privacy ledger
//! refuses a round that would exceed the budget *before* it runs.

use super::participant::LocalUpdate;
use mesh_federated::aggregate::{
    AggregateError, Aggregator, AggregatorConfig, Rule, ServerOptimizer,
};
use mesh_federated::privacy::{
    clip_l2, GaussianEvent, GaussianMechanism, NoisePlacement, PrivacyError, PrivacyLedger,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Errors of the aggregator role.
#[derive(Debug, thiserror::Error)]
pub enum AggregationError {
    /// The rule or the server optimizer refused the updates.
    #[error("aggregation failed: {0}")]
    Aggregate(#[from] AggregateError),
    /// Differential privacy failed or is misconfigured.
    #[error("differential privacy: {0}")]
    Privacy(#[from] PrivacyError),
    /// Central noise is only calibrated for the mean.
    #[error("central DP noise is calibrated to the mean's sensitivity and needs --rule fedavg; use distributed noise with robust rules")]
    CentralNoiseNeedsMean,
}

/// Differential privacy of a job: the mechanism, the per-round accounting event
/// and the ledger that enforces the budget.
#[derive(Debug, Clone)]
pub struct DpState {
    /// Clipping and noise.
    pub mechanism: GaussianMechanism,
    /// What one round costs (sampling rate, noise multiplier, one step).
    pub round_event: GaussianEvent,
    /// Spent and remaining budget.
    pub ledger: PrivacyLedger,
}

/// The aggregator of a job.
#[derive(Debug)]
pub struct RoundAggregator {
    aggregator: Aggregator,
    server: ServerOptimizer,
    dp: Option<DpState>,
    seed: u64,
}

impl RoundAggregator {
    /// A new aggregator. Central DP requires the FedAvg rule.
    pub fn new(
        config: AggregatorConfig,
        server: ServerOptimizer,
        dp: Option<DpState>,
    ) -> Result<Self, AggregationError> {
        if let Some(state) = &dp {
            if state.mechanism.placement() == NoisePlacement::Central && config.rule != Rule::FedAvg
            {
                return Err(AggregationError::CentralNoiseNeedsMean);
            }
        }
        Ok(Self {
            aggregator: Aggregator::new(config),
            server,
            dp,
            seed: config.seed,
        })
    }

    /// The DP state, when DP is on.
    pub fn dp(&self) -> Option<&DpState> {
        self.dp.as_ref()
    }

    /// True when running one more round would exceed the privacy budget.
    pub fn budget_exhausted(&self) -> Result<bool, AggregationError> {
        match &self.dp {
            Some(state) => Ok(state.ledger.would_exceed(&state.round_event)?),
            None => Ok(false),
        }
    }

    /// Aggregates `updates` into `global` (in place) for `round`; returns epsilon spent.
    pub fn aggregate(
        &mut self,
        global: &mut [f32],
        updates: Vec<LocalUpdate>,
        round: u64,
    ) -> Result<f64, AggregationError> {
        let m = updates.len();
        let mut deltas: Vec<Vec<f32>> = Vec::with_capacity(m);
        let mut weights: Vec<f32> = Vec::with_capacity(m);
        for u in updates {
            weights.push(u.samples as f32);
            deltas.push(u.delta);
        }
        let central = self
            .dp
            .as_ref()
            .filter(|s| s.mechanism.placement() == NoisePlacement::Central);
        if let Some(state) = central {
            // DP-FedAvg: every update clipped and weighted equally, so one client moves
            // the mean by at most C / m.
            for d in &mut deltas {
                clip_l2(d, state.mechanism.clip_norm())?;
            }
            weights.iter_mut().for_each(|w| *w = 1.0);
        }
        let mut aggregated = self.aggregator.aggregate(&deltas, &weights)?;
        if let Some(state) = central {
            let mut rng = ChaCha8Rng::seed_from_u64(super::derive_seed(self.seed, round, u64::MAX));
            aggregated.iter_mut().for_each(|v| *v *= m as f32);
            state.mechanism.privatize_sum(&mut aggregated, &mut rng)?;
            aggregated.iter_mut().for_each(|v| *v /= m as f32);
        }
        self.server.apply(global, &aggregated)?;
        match &mut self.dp {
            Some(state) => Ok(state.ledger.spend(&state.round_event)?),
            None => Ok(0.0),
        }
    }
}
