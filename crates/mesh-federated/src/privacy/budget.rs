//! A job's privacy budget and the ledger that refuses the round that would exceed it.

use super::rdp::{epsilon_from_rdp, GaussianEvent, RdpAccountant};
use super::PrivacyError;

/// An (epsilon, delta) budget for a whole job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrivacyBudget {
    /// Largest epsilon the job may spend.
    pub epsilon: f64,
    /// The delta at which epsilon is measured.
    pub delta: f64,
}

impl PrivacyBudget {
    /// Validates `epsilon > 0` (finite) and `delta` in `(0, 1)`.
    pub fn new(epsilon: f64, delta: f64) -> Result<Self, PrivacyError> {
        if !(epsilon.is_finite() && epsilon > 0.0) {
            return Err(PrivacyError::Epsilon(epsilon));
        }
        if !(delta > 0.0 && delta < 1.0) {
            return Err(PrivacyError::Delta(delta));
        }
        Ok(Self { epsilon, delta })
    }
}

/// Tracks what a job has spent against its [`PrivacyBudget`]. Ask
/// [`would_exceed`](Self::would_exceed) before a round, or call
/// [`spend`](Self::spend), which records the round only if it fits: the job stops
/// *before* the round that would exceed the budget.
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacyLedger {
    budget: PrivacyBudget,
    accountant: RdpAccountant,
    rounds: u64,
}

impl PrivacyLedger {
    /// A ledger with nothing spent, over the default RDP orders.
    pub fn new(budget: PrivacyBudget) -> Self {
        Self {
            budget,
            accountant: RdpAccountant::new(),
            rounds: 0,
        }
    }

    /// The budget.
    pub fn budget(&self) -> &PrivacyBudget {
        &self.budget
    }

    /// Rounds recorded so far.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// Epsilon spent so far (at the budget's delta).
    pub fn epsilon_spent(&self) -> Result<f64, PrivacyError> {
        self.accountant.epsilon(self.budget.delta)
    }

    /// Epsilon that would be spent after additionally composing `event`.
    pub fn epsilon_after(&self, event: &GaussianEvent) -> Result<f64, PrivacyError> {
        let rdp = self.accountant.rdp_with(event)?;
        Ok(epsilon_from_rdp(self.accountant.orders(), &rdp, self.budget.delta)?.0)
    }

    /// Whether composing `event` would take the spent epsilon past the budget.
    pub fn would_exceed(&self, event: &GaussianEvent) -> Result<bool, PrivacyError> {
        Ok(self.epsilon_after(event)? > self.budget.epsilon)
    }

    /// Records `event` (one round is `steps: 1`) and returns the new epsilon spent, or
    /// refuses with [`PrivacyError::BudgetExceeded`] and records nothing.
    pub fn spend(&mut self, event: &GaussianEvent) -> Result<f64, PrivacyError> {
        let next = self.epsilon_after(event)?;
        if next > self.budget.epsilon {
            return Err(PrivacyError::BudgetExceeded {
                spent: self.epsilon_spent()?,
                next,
                budget: self.budget.epsilon,
            });
        }
        self.accountant.compose(event)?;
        self.rounds += event.steps;
        Ok(next)
    }
}
