//! The privacy-budget ledger: per job, the epsilon budget and what rounds have
//! spent of it, in exact integer millionths. A spend that would exceed the
//! budget is refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{DpBudget, JobId};
use crate::error::ApplyError;

/// One job's account.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrivacyAccount {
    /// The job's budget.
    pub budget: DpBudget,
    /// Epsilon spent so far, in millionths; never above the budget.
    pub spent_epsilon_micros: u64,
}

impl PrivacyAccount {
    /// Epsilon left, in millionths.
    pub fn remaining_epsilon_micros(&self) -> u64 {
        self.budget
            .epsilon_micros
            .saturating_sub(self.spent_epsilon_micros)
    }
}

/// Accounts of jobs that run with differential privacy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PrivacyLedger {
    accounts: BTreeMap<JobId, PrivacyAccount>,
}

impl PrivacyLedger {
    /// The job's account; `None` for jobs without DP.
    pub fn account(&self, job: &JobId) -> Option<&PrivacyAccount> {
        self.accounts.get(job)
    }

    pub(crate) fn open(&mut self, job: &JobId, budget: DpBudget) {
        self.accounts.insert(
            job.clone(),
            PrivacyAccount {
                budget,
                spent_epsilon_micros: 0,
            },
        );
    }

    /// Checks a spend without making it; returns what would remain
    /// (`None` for a job without DP, which may only spend zero).
    pub(crate) fn check_spend(
        &self,
        job: &JobId,
        epsilon_micros: u64,
    ) -> Result<Option<u64>, ApplyError> {
        let Some(account) = self.accounts.get(job) else {
            if epsilon_micros == 0 {
                return Ok(None);
            }
            return Err(ApplyError::Invalid(format!(
                "job {job} runs without differential privacy but reports a privacy spend"
            )));
        };
        let remaining = account.remaining_epsilon_micros();
        if epsilon_micros > remaining {
            return Err(ApplyError::PrivacyBudgetExceeded {
                job: job.clone(),
                requested_epsilon_micros: epsilon_micros,
                remaining_epsilon_micros: remaining,
            });
        }
        Ok(Some(remaining - epsilon_micros))
    }

    /// Records a spend that [`Self::check_spend`] accepted.
    pub(crate) fn spend(&mut self, job: &JobId, epsilon_micros: u64) {
        if let Some(account) = self.accounts.get_mut(job) {
            account.spent_epsilon_micros += epsilon_micros;
            debug_assert!(account.spent_epsilon_micros <= account.budget.epsilon_micros);
        }
    }

    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let over = self
            .accounts
            .iter()
            .find(|(_, a)| a.spent_epsilon_micros > a.budget.epsilon_micros);
        match over {
            Some((job, _)) => Err(format!("job {job} spent more than its privacy budget")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn spend_beyond_budget_is_refused() {
        let mut l = PrivacyLedger::default();
        let job = JobId::from("j");
        l.open(
            &job,
            DpBudget {
                epsilon_micros: 100,
                delta: 1e-5,
            },
        );
        assert_eq!(l.check_spend(&job, 60).unwrap(), Some(40));
        l.spend(&job, 60);
        let err = l.check_spend(&job, 41).unwrap_err();
        assert!(matches!(
            err,
            ApplyError::PrivacyBudgetExceeded {
                remaining_epsilon_micros: 40,
                ..
            }
        ));
        assert_eq!(l.account(&job).unwrap().remaining_epsilon_micros(), 40);
    }

    #[test]
    fn jobs_without_dp_spend_nothing() {
        let l = PrivacyLedger::default();
        let job = JobId::from("j");
        assert_eq!(l.check_spend(&job, 0).unwrap(), None);
        assert!(l.check_spend(&job, 1).is_err());
    }
}
