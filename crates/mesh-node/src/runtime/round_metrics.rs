//! Prometheus metrics of the round protocol, under `mesh_round`: updates by
//! result, messages and bytes sent, dropouts, rounds completed, round
//! duration (as this node saw it: first seen running to first seen
//! committed), epsilon spent and jobs by status.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use mesh_consensus::MeshState;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use mesh_round::protocol::ProtocolStats;

use crate::config::AdversaryConfig;

type Label = [(&'static str, String); 1];

/// Most rounds whose start time is remembered.
const STARTS_MAX: usize = 10_000;

/// The handles, and what was exported last (counters only move forward).
#[derive(Debug)]
pub struct RoundMetrics {
    updates: Family<Label, Counter>,
    messages: Family<Label, Counter>,
    bytes: Counter,
    dropouts: Counter,
    schema_mismatches: Counter,
    rounds_completed: Counter,
    round_duration: Histogram,
    epsilon: Family<Label, Gauge<f64, std::sync::atomic::AtomicU64>>,
    jobs: Family<Label, Gauge>,
    last: ProtocolStats,
    starts: BTreeMap<(String, usize), Instant>,
    completed: BTreeSet<(String, usize)>,
}

/// Exports `mesh_node_adversarial` (1 with the configured attack as its label
/// when the node runs an `[adversary]` attack, 0 otherwise) and warns in the log,
/// so an adversarial node is never mistaken for an honest one.
pub fn register_adversary(registry: &mut Registry, config: &AdversaryConfig) {
    let gauge = Family::<Vec<(String, String)>, Gauge>::default();
    let attack = config.attack.clone();
    gauge
        .get_or_create(&vec![("attack".into(), attack.clone())])
        .set(i64::from(!attack.is_empty()));
    registry.sub_registry_with_prefix("mesh_node").register(
        "adversarial",
        "1 when this node runs an [adversary] attack (robustness tests only)",
        gauge,
    );
    if !attack.is_empty() {
        tracing::warn!(%attack, "this node is ADVERSARIAL: it shapes every update it sends with an attack");
    }
}

impl RoundMetrics {
    /// Registers the metrics under `mesh_round`.
    pub fn new(registry: &mut Registry) -> Self {
        let buckets = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];
        let m = Self {
            updates: Family::default(),
            messages: Family::default(),
            bytes: Counter::default(),
            dropouts: Counter::default(),
            schema_mismatches: Counter::default(),
            rounds_completed: Counter::default(),
            round_duration: Histogram::new(buckets),
            epsilon: Family::default(),
            jobs: Family::default(),
            last: ProtocolStats::default(),
            starts: BTreeMap::new(),
            completed: BTreeSet::new(),
        };
        let r = registry.sub_registry_with_prefix("mesh_round");
        r.register(
            "updates",
            "Updates this node handled as a group aggregator, by result",
            m.updates.clone(),
        );
        r.register(
            "messages_sent",
            "Round protocol messages sent, by kind",
            m.messages.clone(),
        );
        r.register("bytes_sent", "Round protocol bytes sent", m.bytes.clone());
        r.register(
            "dropouts",
            "Participants that dropped out of groups this node aggregated",
            m.dropouts.clone(),
        );
        r.register(
            "schema_mismatches",
            "Jobs this node declined because its data does not match the job's schema",
            m.schema_mismatches.clone(),
        );
        r.register(
            "completed",
            "Rounds committed (seen by this node)",
            m.rounds_completed.clone(),
        );
        r.register(
            "duration_seconds",
            "Round duration from first seen running to committed",
            m.round_duration.clone(),
        );
        r.register(
            "epsilon_spent",
            "Differential-privacy epsilon a job has spent",
            m.epsilon.clone(),
        );
        r.register("jobs", "Jobs by status", m.jobs.clone());
        m
    }

    /// Exports what changed since the last call.
    pub fn update(&mut self, stats: &ProtocolStats, state: &MeshState) {
        let delta = |now: u64, before: u64| now.saturating_sub(before);
        for (result, now, before) in [
            (
                "accepted",
                stats.updates_accepted,
                self.last.updates_accepted,
            ),
            ("late", stats.updates_late, self.last.updates_late),
            ("invalid", stats.updates_invalid, self.last.updates_invalid),
            (
                "rejected_by_rule",
                stats.updates_rejected_by_rule,
                self.last.updates_rejected_by_rule,
            ),
        ] {
            self.updates
                .get_or_create(&[("result", result.to_string())])
                .inc_by(delta(now, before));
        }
        for (kind, now) in &stats.sent_messages {
            let before = self.last.sent_messages.get(kind).copied().unwrap_or(0);
            self.messages
                .get_or_create(&[("kind", (*kind).to_string())])
                .inc_by(delta(*now, before));
        }
        self.bytes
            .inc_by(delta(stats.sent_bytes, self.last.sent_bytes));
        self.dropouts
            .inc_by(delta(stats.dropouts, self.last.dropouts));
        self.schema_mismatches
            .inc_by(delta(stats.schema_mismatches, self.last.schema_mismatches));
        self.last = stats.clone();
        self.observe_state(state);
    }

    fn observe_state(&mut self, state: &MeshState) {
        let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
        for (id, job) in state.jobs().iter() {
            *by_status.entry(format!("{:?}", job.status)).or_default() += 1;
            let spent: u64 = job.epsilon_spent_micros();
            self.epsilon
                .get_or_create(&[("job", id.0.clone())])
                .set(spent as f64 / 1e6);
            for (i, round) in job.rounds.iter().enumerate() {
                let key = (id.0.clone(), i);
                if round.completion.is_none() {
                    if self.starts.len() < STARTS_MAX {
                        self.starts.entry(key).or_insert_with(Instant::now);
                    }
                } else if !self.completed.contains(&key) && self.completed.len() < STARTS_MAX {
                    self.rounds_completed.inc();
                    if let Some(start) = self.starts.remove(&key) {
                        self.round_duration.observe(start.elapsed().as_secs_f64());
                    }
                    self.completed.insert(key);
                }
            }
        }
        for status in [
            "WaitingForRound",
            "RoundRunning",
            "Completed",
            "BudgetExhausted",
            "Cancelled",
        ] {
            let count = by_status.get(status).copied().unwrap_or(0);
            self.jobs
                .get_or_create(&[("status", status.to_string())])
                .set(count);
        }
    }
}
