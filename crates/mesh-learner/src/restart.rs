//! When to restart a failed learner: capped exponential backoff, and a bound
//! on consecutive restarts. A successful call resets both, so a learner that
//! fails now and then is restarted as often as it needs, while one that
//! cannot start (a missing module, a syntax error) is given up after
//! `max_restarts` tries instead of being respawned forever.

/// The restart rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Most restarts in a row without a successful call.
    pub max_restarts: u32,
    /// Wait before the first restart, in ms.
    pub backoff_initial_ms: u64,
    /// Longest wait between restarts, in ms.
    pub backoff_max_ms: u64,
}

/// What to do after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartDecision {
    /// Start the learner again after `delay_ms`; this is restart number `attempt` in a row.
    Restart {
        /// Wait before starting, in ms.
        delay_ms: u64,
        /// Consecutive restarts including this one (from 1).
        attempt: u32,
    },
    /// Too many restarts in a row: stop trying.
    GiveUp {
        /// Restarts tried in a row.
        attempts: u32,
    },
}

impl RestartPolicy {
    /// The wait before restart `attempt` (from 1): `initial * 2^(attempt-1)`, at most `backoff_max_ms`.
    pub fn delay_ms(&self, attempt: u32) -> u64 {
        let doublings = attempt.saturating_sub(1).min(62);
        self.backoff_initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.backoff_max_ms)
    }
}

/// Consecutive failures of one learner, and the decisions they lead to.
#[derive(Clone, Debug)]
pub struct RestartTracker {
    policy: RestartPolicy,
    consecutive: u32,
}

impl RestartTracker {
    /// A tracker with no failures yet.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            consecutive: 0,
        }
    }

    /// A call failed and the learner is down: restart it, or give up.
    pub fn on_failure(&mut self) -> RestartDecision {
        if self.consecutive >= self.policy.max_restarts {
            return RestartDecision::GiveUp {
                attempts: self.consecutive,
            };
        }
        self.consecutive += 1;
        RestartDecision::Restart {
            delay_ms: self.policy.delay_ms(self.consecutive),
            attempt: self.consecutive,
        }
    }

    /// A call succeeded: the next failure starts from the first delay again.
    pub fn on_success(&mut self) {
        self.consecutive = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RestartPolicy = RestartPolicy {
        max_restarts: 4,
        backoff_initial_ms: 100,
        backoff_max_ms: 350,
    };

    #[test]
    fn delays_double_up_to_the_cap_then_it_gives_up() {
        let mut tracker = RestartTracker::new(POLICY);
        let decisions: Vec<_> = (0..5).map(|_| tracker.on_failure()).collect();
        let delays: Vec<u64> = decisions
            .iter()
            .filter_map(|d| match d {
                RestartDecision::Restart { delay_ms, .. } => Some(*delay_ms),
                RestartDecision::GiveUp { .. } => None,
            })
            .collect();
        assert_eq!(delays, vec![100, 200, 350, 350]);
        assert_eq!(decisions[4], RestartDecision::GiveUp { attempts: 4 });
    }

    #[test]
    fn a_success_resets_the_count_and_the_delay() {
        let mut tracker = RestartTracker::new(POLICY);
        tracker.on_failure();
        tracker.on_failure();
        tracker.on_success();
        assert_eq!(
            tracker.on_failure(),
            RestartDecision::Restart {
                delay_ms: 100,
                attempt: 1
            }
        );
    }

    #[test]
    fn huge_attempt_numbers_saturate_instead_of_overflowing() {
        let policy = RestartPolicy {
            backoff_max_ms: u64::MAX,
            ..POLICY
        };
        assert_eq!(policy.delay_ms(u32::MAX), u64::MAX);
        let none = RestartPolicy {
            max_restarts: 0,
            ..POLICY
        };
        assert_eq!(
            RestartTracker::new(none).on_failure(),
            RestartDecision::GiveUp { attempts: 0 }
        );
    }
}
