//! Prometheus metrics of the round protocol, under `mesh_round`: updates by
//! result, messages and bytes sent, dropouts, failed groups, rejected blobs,
//! rounds completed and aborted, round duration (as this node saw it: first
//! seen running to first seen committed), the last round's accuracy and loss,
//! epsilon spent and budgeted, rounds each job has left, jobs by status, the blob cache (hits,
//! misses, evictions, bytes, and its eviction policy as an info metric), and the planner's
//! scaling decisions ([`super::scale_metrics`]). Under `mesh_reputation`: quarantined nodes,
//! quarantines seen, and the scores of nodes with evidence against them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use mesh_consensus::MeshState;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use mesh_round::cache::{CacheCounters, CachePolicy};
use mesh_round::protocol::ProtocolStats;

use super::scale_metrics::ScaleMetrics;
use crate::config::AdversaryConfig;

type Label = [(&'static str, String); 1];
type GaugeF64 = Gauge<f64, std::sync::atomic::AtomicU64>;

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
    groups_failed: Counter,
    blobs_rejected: Counter,
    rounds_aborted: Counter,
    accuracy: Family<Label, GaugeF64>,
    loss: Family<Label, GaugeF64>,
    epsilon: Family<Label, GaugeF64>,
    epsilon_budget: Family<Label, GaugeF64>,
    rounds_remaining: Family<Label, Gauge>,
    jobs: Family<Label, Gauge>,
    cache: CacheMetrics,
    reputation: ReputationMetrics,
    scale: ScaleMetrics,
    last: ProtocolStats,
    /// Sum of the jobs' aborted rounds at the last update.
    aborted_last: u64,
    starts: BTreeMap<(String, usize), Instant>,
    completed: BTreeSet<(String, usize)>,
}

/// The blob cache's counters and size, and what was exported last.
#[derive(Debug, Default)]
struct CacheMetrics {
    hits: Counter,
    misses: Counter,
    evictions: Counter,
    bytes: Gauge,
    capacity_bytes: Gauge,
    last: CacheCounters,
}

/// Quarantines and scores from the committed reputation.
#[derive(Debug, Default)]
struct ReputationMetrics {
    quarantined: Gauge,
    quarantines: Counter,
    scores: Family<Label, Gauge>,
    /// Nodes quarantined at the last update.
    quarantined_last: BTreeSet<String>,
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

/// Exports `mesh_round_cache_policy_info{policy="lru"} 1` (or `lfu`,
/// `adaptive`): the blob cache's eviction policy, fixed at start, so a
/// dashboard can set the cache's hit rate beside the policy that produced it.
pub fn register_cache_policy(registry: &mut Registry, policy: CachePolicy) {
    let info = Info::new(vec![("policy".to_string(), policy.as_str().to_string())]);
    registry.sub_registry_with_prefix("mesh_round").register(
        "cache_policy",
        "The blob cache's eviction policy (round.cache_policy)",
        info,
    );
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
            groups_failed: Counter::default(),
            blobs_rejected: Counter::default(),
            rounds_aborted: Counter::default(),
            accuracy: Family::default(),
            loss: Family::default(),
            epsilon: Family::default(),
            epsilon_budget: Family::default(),
            rounds_remaining: Family::default(),
            jobs: Family::default(),
            cache: CacheMetrics::default(),
            reputation: ReputationMetrics::default(),
            scale: ScaleMetrics::new(registry),
            last: ProtocolStats::default(),
            aborted_last: 0,
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
        m.register_more(registry);
        m
    }

    /// Registers what [`new`](Self::new) leaves out, so that stays readable.
    fn register_more(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("mesh_round");
        r.register(
            "groups_failed",
            "Groups this node aggregated that failed (too few clients left)",
            self.groups_failed.clone(),
        );
        r.register(
            "blobs_rejected",
            "Blobs refused because their bytes did not match their hash",
            self.blobs_rejected.clone(),
        );
        r.register(
            "aborted",
            "Rounds aborted at their deadline and started again (committed state)",
            self.rounds_aborted.clone(),
        );
        r.register(
            "accuracy",
            "Validation accuracy of a job's last completed round, in [0, 1]",
            self.accuracy.clone(),
        );
        r.register(
            "loss",
            "Validation loss of a job's last completed round",
            self.loss.clone(),
        );
        r.register(
            "epsilon_budget",
            "Differential-privacy epsilon a job may spend in total (DP jobs only)",
            self.epsilon_budget.clone(),
        );
        r.register(
            "job_rounds_remaining",
            "Rounds a job has still to run (0 once it is finished, however it ended)",
            self.rounds_remaining.clone(),
        );
        let c = &self.cache;
        r.register(
            "cache_hits",
            "Blob cache lookups that found the blob",
            c.hits.clone(),
        );
        r.register(
            "cache_misses",
            "Blob cache lookups that did not find the blob",
            c.misses.clone(),
        );
        r.register(
            "cache_evictions",
            "Blobs evicted from the cache to make room",
            c.evictions.clone(),
        );
        r.register(
            "cache_bytes",
            "Bytes held in the blob cache",
            c.bytes.clone(),
        );
        r.register(
            "cache_capacity_bytes",
            "Most bytes the blob cache holds",
            c.capacity_bytes.clone(),
        );
        let p = &self.reputation;
        let r = registry.sub_registry_with_prefix("mesh_reputation");
        r.register(
            "quarantined_nodes",
            "Nodes quarantined (score below 500: never selected for rounds)",
            p.quarantined.clone(),
        );
        r.register(
            "quarantines",
            "Times this node saw a node enter quarantine",
            p.quarantines.clone(),
        );
        r.register(
            "score",
            "Reputation score of each node with evidence against it (initial 1000)",
            p.scores.clone(),
        );
    }

    /// Exports the blob cache's counters (what moved since the last call)
    /// and its size.
    pub fn update_cache(&mut self, counters: CacheCounters, bytes: usize, capacity_bytes: usize) {
        let c = &mut self.cache;
        c.hits.inc_by(counters.hits.saturating_sub(c.last.hits));
        c.misses
            .inc_by(counters.misses.saturating_sub(c.last.misses));
        c.evictions
            .inc_by(counters.evictions.saturating_sub(c.last.evictions));
        c.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        c.capacity_bytes
            .set(i64::try_from(capacity_bytes).unwrap_or(i64::MAX));
        c.last = counters;
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
        self.groups_failed
            .inc_by(delta(stats.groups_failed, self.last.groups_failed));
        self.blobs_rejected
            .inc_by(delta(stats.blobs_rejected, self.last.blobs_rejected));
        self.last = stats.clone();
        self.observe_state(state);
        self.observe_reputation(state);
        self.scale.observe(state);
    }

    fn observe_reputation(&mut self, state: &MeshState) {
        let reputation = state.reputation();
        let p = &mut self.reputation;
        let now: BTreeSet<String> = reputation.quarantined().map(|n| n.0.clone()).collect();
        let entered = now.difference(&p.quarantined_last).count() as u64;
        p.quarantines.inc_by(entered);
        p.quarantined
            .set(i64::try_from(now.len()).unwrap_or(i64::MAX));
        p.quarantined_last = now;
        p.scores.clear();
        for (node, score) in reputation.scores() {
            p.scores
                .get_or_create(&[("node", node.0.clone())])
                .set(i64::from(score));
        }
    }

    fn observe_state(&mut self, state: &MeshState) {
        let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
        let mut aborted: u64 = 0;
        for (id, job) in state.jobs().iter() {
            *by_status.entry(format!("{:?}", job.status)).or_default() += 1;
            aborted = aborted.saturating_add(u64::from(job.aborted_rounds));
            let label = [("job", id.0.clone())];
            let spent: u64 = job.epsilon_spent_micros();
            self.epsilon.get_or_create(&label).set(spent as f64 / 1e6);
            if let Some(budget) = &job.spec.dp_budget {
                self.epsilon_budget
                    .get_or_create(&label)
                    .set(budget.epsilon_micros as f64 / 1e6);
            }
            let remaining = if job.status.is_finished() {
                0
            } else {
                let completed = job.completions().count() as u64;
                u64::from(job.spec.rounds).saturating_sub(completed)
            };
            self.rounds_remaining
                .get_or_create(&label)
                .set(i64::try_from(remaining).unwrap_or(i64::MAX));
            if let Some(last) = job.completions().last() {
                // A regression job has no accuracy (the API shows none either).
                let schema = job.spec.training.schema.as_ref();
                if !schema.is_some_and(|s| s.task.is_regression()) {
                    self.accuracy
                        .get_or_create(&label)
                        .set(last.metrics.accuracy);
                }
                self.loss.get_or_create(&label).set(last.metrics.loss);
            }
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
        self.rounds_aborted
            .inc_by(aborted.saturating_sub(self.aborted_last));
        self.aborted_last = aborted;
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

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use mesh_consensus::command::{GroupPlan, RoundPlan, TrainingSpec};
    use mesh_consensus::{Command, DpBudget, EvidenceKind, JobSpec, NodeId, Role};
    use prometheus_client::encoding::text::encode;

    /// The value of the sample `name` (with its labels, as encoded).
    pub(in crate::runtime) fn value(registry: &Registry, name: &str) -> Option<f64> {
        let mut text = String::new();
        encode(&mut text, registry).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }

    fn spec() -> JobSpec {
        JobSpec {
            model: mesh_spec::ModelSpec::Preset(mesh_spec::Preset::Logistic),
            rounds: 2,
            participants_per_round: 1,
            rule_name: "fedavg".into(),
            pre_aggregation: "none".into(),
            server_optimizer: "sgd".into(),
            byzantine_count: 0,
            secagg: false,
            dp_budget: Some(DpBudget {
                epsilon_micros: 2_000_000,
                delta: 1e-5,
            }),
            training: TrainingSpec::default(),
            initial_model: None,
        }
    }

    fn start() -> Command {
        let a = NodeId::from("a");
        Command::StartRound {
            job: "j".into(),
            round: 0,
            model_hash: [1; 32],
            participants: [a.clone()].into(),
            deadline_unix_ms: 1_000,
            plan: RoundPlan {
                groups: vec![GroupPlan {
                    aggregator: a.clone(),
                    members: [a.clone()].into(),
                }],
                aggregators: vec![a],
            },
        }
    }

    fn apply(state: &mut MeshState, index: &mut u64, command: Command) {
        *index += 1;
        state.apply(*index, &command).unwrap();
    }

    #[test]
    fn aborted_rounds_accuracy_budget_and_quarantines_follow_the_committed_state() {
        let mut registry = Registry::default();
        let mut metrics = RoundMetrics::new(&mut registry);
        let mut state = MeshState::new();
        let mut i = 0;
        for command in [
            Command::AddMember {
                node: "a".into(),
                roles: [Role::Trainer, Role::Aggregator].into(),
                zone: None,
            },
            Command::CreateJob {
                job: "j".into(),
                spec: spec(),
            },
            start(),
            Command::AbortRound {
                job: "j".into(),
                round: 0,
            },
            start(),
            Command::CompleteRound {
                job: "j".into(),
                round: 0,
                model_hash: [2; 32],
                metrics: mesh_consensus::RoundMetrics {
                    accuracy: 0.75,
                    loss: 0.5,
                    updates_count: 1,
                },
                privacy_spent_epsilon_micros: 500_000,
                inputs: Vec::new(),
                evidence: Vec::new(),
            },
            Command::RecordEvidence {
                node: "a".into(),
                kind: EvidenceKind::Equivocation,
            },
        ] {
            apply(&mut state, &mut i, command);
        }
        let stats = ProtocolStats {
            groups_failed: 2,
            blobs_rejected: 1,
            ..ProtocolStats::default()
        };
        metrics.update(&stats, &state);
        metrics.update(&stats, &state);
        for (name, want) in [
            ("mesh_round_aborted_total", 1.0),
            ("mesh_round_completed_total", 1.0),
            ("mesh_round_groups_failed_total", 2.0),
            ("mesh_round_blobs_rejected_total", 1.0),
            ("mesh_round_accuracy{job=\"j\"}", 0.75),
            ("mesh_round_loss{job=\"j\"}", 0.5),
            ("mesh_round_epsilon_spent{job=\"j\"}", 0.5),
            ("mesh_round_epsilon_budget{job=\"j\"}", 2.0),
            ("mesh_round_job_rounds_remaining{job=\"j\"}", 1.0),
            ("mesh_reputation_quarantined_nodes", 1.0),
            ("mesh_reputation_quarantines_total", 1.0),
            ("mesh_reputation_score{node=\"a\"}", 400.0),
        ] {
            assert_eq!(value(&registry, name), Some(want), "{name}");
        }

        // A reset lifts the quarantine; new evidence counts a second one.
        apply(
            &mut state,
            &mut i,
            Command::ResetReputation { node: "a".into() },
        );
        metrics.update(&stats, &state);
        assert_eq!(
            value(&registry, "mesh_reputation_quarantined_nodes"),
            Some(0.0)
        );
        assert_eq!(value(&registry, "mesh_reputation_score{node=\"a\"}"), None);
        let evidence = Command::RecordEvidence {
            node: "a".into(),
            kind: EvidenceKind::Equivocation,
        };
        apply(&mut state, &mut i, evidence);
        metrics.update(&stats, &state);
        assert_eq!(
            value(&registry, "mesh_reputation_quarantines_total"),
            Some(2.0)
        );
    }

    #[test]
    fn cache_policy_is_exported_as_an_info_metric() {
        for policy in CachePolicy::ALL {
            let mut registry = Registry::default();
            register_cache_policy(&mut registry, policy);
            let name = format!("mesh_round_cache_policy_info{{policy=\"{policy}\"}}");
            assert_eq!(value(&registry, &name), Some(1.0), "{name}");
        }
    }

    #[test]
    fn cache_counters_are_exported_as_they_move() {
        let mut registry = Registry::default();
        let mut metrics = RoundMetrics::new(&mut registry);
        let counters = CacheCounters {
            hits: 3,
            misses: 2,
            evictions: 1,
        };
        metrics.update_cache(counters, 100, 1000);
        metrics.update_cache(counters, 100, 1000);
        let later = CacheCounters {
            hits: 5,
            ..counters
        };
        metrics.update_cache(later, 40, 1000);
        for (name, want) in [
            ("mesh_round_cache_hits_total", 5.0),
            ("mesh_round_cache_misses_total", 2.0),
            ("mesh_round_cache_evictions_total", 1.0),
            ("mesh_round_cache_bytes", 40.0),
            ("mesh_round_cache_capacity_bytes", 1000.0),
        ] {
            assert_eq!(value(&registry, name), Some(want), "{name}");
        }
    }
}
