//! Counters of one supervised learner, shared with whoever exports them (the
//! node turns them into `mesh_learner_*` metrics). Atomics only: reading them
//! never waits for a call in flight.

use std::sync::atomic::{AtomicU64, Ordering};

/// Failure reasons, as [`crate::LearnerError::reason`] names them; the index
/// of each is its slot in [`LearnerStats`].
pub const FAILURE_REASONS: [&str; 9] = [
    "spawn",
    "exited",
    "timeout",
    "frame",
    "message",
    "version",
    "layout",
    "reply",
    "learner_error",
];

/// Calls with their own in-flight gauge; the index of each is its slot.
pub const CALLS: [&str; 3] = ["fit", "evaluate", "layout"];

fn call_slot(call: &str) -> Option<usize> {
    CALLS.iter().position(|c| *c == call)
}

/// Counters of one learner.
#[derive(Debug, Default)]
pub struct LearnerStats {
    starts: AtomicU64,
    restarts: AtomicU64,
    calls: AtomicU64,
    in_flight: [AtomicU64; CALLS.len()],
    up: AtomicU64,
    gave_up: AtomicU64,
    failures: [AtomicU64; FAILURE_REASONS.len()],
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Processes started (first start and restarts).
    pub starts: u64,
    /// Processes started after a failure.
    pub restarts: u64,
    /// Calls (fit, evaluate, layout) made.
    pub calls: u64,
    /// Calls waiting for a reply now (0 or 1 each), in [`CALLS`] order.
    pub in_flight: [u64; CALLS.len()],
    /// 1 while a learner process is running.
    pub up: u64,
    /// 1 once restarts were given up.
    pub gave_up: u64,
    /// Failed calls by reason, in [`FAILURE_REASONS`] order.
    pub failures: [u64; FAILURE_REASONS.len()],
}

impl LearnerStats {
    /// A process started; `restart` when it replaces a failed one.
    pub fn started(&self, restart: bool) {
        self.starts.fetch_add(1, Ordering::Relaxed);
        if restart {
            self.restarts.fetch_add(1, Ordering::Relaxed);
        }
        self.up.store(1, Ordering::Relaxed);
    }

    /// The process is gone.
    pub fn down(&self) {
        self.up.store(0, Ordering::Relaxed);
    }

    /// Restarts were given up.
    pub fn gave_up(&self) {
        self.gave_up.store(1, Ordering::Relaxed);
        self.down();
    }

    /// A `call` (one of [`CALLS`]) is sent.
    pub fn call_started(&self, call: &str) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = call_slot(call) {
            self.in_flight[slot].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A `call` ended (either way).
    pub fn call_ended(&self, call: &str) {
        if let Some(slot) = call_slot(call) {
            self.in_flight[slot].fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A call failed for `reason` (one of [`FAILURE_REASONS`]).
    pub fn failed(&self, reason: &str) {
        let slot = FAILURE_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(FAILURE_REASONS.len() - 1);
        self.failures[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            starts: get(&self.starts),
            restarts: get(&self.restarts),
            calls: get(&self.calls),
            in_flight: std::array::from_fn(|i| get(&self.in_flight[i])),
            up: get(&self.up),
            gave_up: get(&self.gave_up),
            failures: std::array::from_fn(|i| get(&self.failures[i])),
        }
    }
}

impl StatsSnapshot {
    /// Calls of kind `call` in flight.
    pub fn in_flight_of(&self, call: &str) -> u64 {
        call_slot(call).map_or(0, |i| self.in_flight[i])
    }

    /// Failures of `reason`.
    pub fn failures_of(&self, reason: &str) -> u64 {
        FAILURE_REASONS
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.failures[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_move_as_calls_and_restarts_happen() {
        let stats = LearnerStats::default();
        stats.started(false);
        stats.call_started("fit");
        assert_eq!(stats.snapshot().in_flight_of("fit"), 1);
        assert_eq!(stats.snapshot().in_flight_of("evaluate"), 0);
        stats.call_ended("fit");
        stats.failed("exited");
        stats.down();
        stats.started(true);
        let s = stats.snapshot();
        assert_eq!((s.starts, s.restarts, s.calls, s.up), (2, 1, 1, 1));
        assert_eq!(s.in_flight, [0; CALLS.len()]);
        assert_eq!(s.failures_of("exited"), 1);
        assert_eq!(s.failures_of("timeout"), 0);
    }
}
