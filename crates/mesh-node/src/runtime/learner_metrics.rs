//! Prometheus metrics of the node's learner process (`[learner]`), under
//! `mesh_learner`: restarts, failed calls by reason, calls in flight by kind,
//! and whether a learner runs. The learner's own counters are atomics
//! ([`mesh_learner::stats`]); each tick exports what moved since the last.

use std::sync::Arc;

use mesh_learner::stats::{LearnerStats, StatsSnapshot, CALLS, FAILURE_REASONS};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Label = [(&'static str, String); 1];

/// The handles, and what was exported last (counters only move forward).
#[derive(Debug)]
pub struct LearnerMetrics {
    stats: Arc<LearnerStats>,
    restarts: Counter,
    failures: Family<Label, Counter>,
    in_flight: Family<Label, Gauge>,
    up: Gauge,
    gave_up: Gauge,
    last: StatsSnapshot,
}

impl LearnerMetrics {
    /// Registers the metrics under `mesh_learner` for the learner counting into `stats`.
    pub fn new(registry: &mut Registry, stats: Arc<LearnerStats>) -> Self {
        let m = Self {
            stats,
            restarts: Counter::default(),
            failures: Family::default(),
            in_flight: Family::default(),
            up: Gauge::default(),
            gave_up: Gauge::default(),
            last: StatsSnapshot::default(),
        };
        let r = registry.sub_registry_with_prefix("mesh_learner");
        r.register(
            "restarts",
            "Learner processes started again after a failure",
            m.restarts.clone(),
        );
        r.register(
            "failures",
            "Failed learner calls (each a dropout when it was a fit), by reason",
            m.failures.clone(),
        );
        r.register(
            "calls_in_flight",
            "Learner calls waiting for their reply, by call",
            m.in_flight.clone(),
        );
        r.register("up", "1 while a learner process runs", m.up.clone());
        r.register(
            "gave_up",
            "1 once restarts were given up (fix the learner, restart the node)",
            m.gave_up.clone(),
        );
        for reason in FAILURE_REASONS {
            let _ = m.failures.get_or_create(&[("reason", reason.to_owned())]);
        }
        m
    }

    /// Exports what changed since the last call.
    pub fn update(&mut self) {
        let now = self.stats.snapshot();
        self.restarts
            .inc_by(now.restarts.saturating_sub(self.last.restarts));
        for (i, reason) in FAILURE_REASONS.iter().enumerate() {
            let delta = now.failures[i].saturating_sub(self.last.failures[i]);
            self.failures
                .get_or_create(&[("reason", (*reason).to_owned())])
                .inc_by(delta);
        }
        for call in CALLS {
            let value = i64::try_from(now.in_flight_of(call)).unwrap_or(i64::MAX);
            self.in_flight
                .get_or_create(&[("call", call.to_owned())])
                .set(value);
        }
        self.up.set(i64::from(now.up > 0));
        self.gave_up.set(i64::from(now.gave_up > 0));
        self.last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn counters_and_gauges_follow_the_learners_stats() {
        let stats = Arc::new(LearnerStats::default());
        let mut registry = Registry::default();
        let mut metrics = LearnerMetrics::new(&mut registry, stats.clone());
        stats.started(false);
        stats.call_started("fit");
        stats.failed("exited");
        stats.started(true);
        metrics.update();
        metrics.update();
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        for line in [
            "mesh_learner_restarts_total 1",
            "mesh_learner_failures_total{reason=\"exited\"} 1",
            "mesh_learner_failures_total{reason=\"timeout\"} 0",
            "mesh_learner_calls_in_flight{call=\"fit\"} 1",
            "mesh_learner_up 1",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
