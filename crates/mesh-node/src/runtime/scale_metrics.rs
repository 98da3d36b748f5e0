//! The round planner's scaling decisions as metrics and events, read from the
//! committed state (every node tells the same story): under `mesh_round`,
//! each job's groups and group size in its latest round, the time the
//! attempt before took against its deadline, the participants a round
//! wanted but could not get, and the decisions by direction. Each newly
//! started round is logged once with the decision and its reason.
//!
//! The time ratio and the shortfall are the signals an autoscaler outside
//! the mesh reads (`docs/operations.md`, "Scaling"): a ratio near 1 with
//! groups already at their smallest means aggregators are short; a shortfall
//! means trainers are.

use std::collections::BTreeMap;

use mesh_consensus::MeshState;
use mesh_round::protocol::scale::{self, ScaleDecision, ScaleDirection};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Label = [(&'static str, String); 1];
type GaugeF64 = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The handles, and the round attempt each job was last exported at.
#[derive(Debug, Default)]
pub struct ScaleMetrics {
    groups: Family<Label, Gauge>,
    group_size: Family<Label, Gauge>,
    time_ratio: Family<Label, GaugeF64>,
    shortfall: Family<Label, Gauge>,
    decisions: Family<Label, Counter>,
    /// Per job, (latest round, the job's aborted attempts when it started):
    /// a started round's decision never changes, so it is worked out once.
    exported: BTreeMap<String, (usize, u32)>,
}

impl ScaleMetrics {
    /// Registers the metrics under `mesh_round`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("mesh_round");
        r.register(
            "groups",
            "Secure-aggregation groups (and group aggregators) in a job's latest round",
            m.groups.clone(),
        );
        r.register(
            "group_size",
            "Members per group the planner chose for a job's latest round",
            m.group_size.clone(),
        );
        r.register(
            "time_ratio",
            "Time the attempt before a job's latest round took over its deadline (1 = aborted at it)",
            m.time_ratio.clone(),
        );
        r.register(
            "participants_shortfall",
            "Participants a job's running round wanted but the mesh could not give it",
            m.shortfall.clone(),
        );
        r.register(
            "scale_decisions",
            "Rounds planned, by how their group size moved (out: smaller groups, in: larger, hold)",
            m.decisions.clone(),
        );
        m
    }

    /// Exports each job's latest round and logs a newly started one.
    pub fn observe(&mut self, state: &MeshState) {
        for (id, job) in state.jobs().iter() {
            let Some((last, record)) = job.rounds.iter().enumerate().next_back() else {
                continue;
            };
            let label = [("job", id.0.clone())];
            let wanted = job.spec.participants_per_round as usize;
            let short = if job.status.is_finished() {
                0
            } else {
                wanted.saturating_sub(record.participants.len())
            };
            self.shortfall
                .get_or_create(&label)
                .set(i64::try_from(short).unwrap_or(i64::MAX));
            let attempt = (last, record.aborted_attempts);
            if self.exported.get(&id.0) == Some(&attempt) {
                continue;
            }
            self.exported.insert(id.0.clone(), attempt);
            let Some(decision) = scale::decided(job, last) else {
                continue;
            };
            let groups = record.plan.groups.len();
            self.groups
                .get_or_create(&label)
                .set(i64::try_from(groups).unwrap_or(i64::MAX));
            self.group_size
                .get_or_create(&label)
                .set(i64::try_from(decision.group_size).unwrap_or(i64::MAX));
            if let Some(permille) = decision.round_time_ratio_permille {
                self.time_ratio
                    .get_or_create(&label)
                    .set(permille as f64 / 1000.0);
            }
            self.decisions
                .get_or_create(&[("direction", decision.direction.as_str().to_string())])
                .inc();
            log_decision(&id.0, last, groups, &decision);
        }
    }
}

/// One line per planned round: at info when the size moved, else debug.
fn log_decision(job_id: &str, round: usize, groups: usize, decision: &ScaleDecision) {
    let ratio = decision
        .round_time_ratio_permille
        .map(|p| format!("{:.0}%", p as f64 / 10.0))
        .unwrap_or_else(|| "unknown".into());
    let group_size = decision.group_size;
    let previous_size = decision.previous_size.unwrap_or(group_size);
    let direction = decision.direction.as_str();
    let why = decision.reason.describe();
    if decision.direction == ScaleDirection::Hold {
        tracing::debug!(job = job_id, round, groups, group_size, direction, time_ratio = %ratio, "round planned: {why}");
    } else {
        tracing::info!(
            job = job_id,
            round,
            groups,
            group_size,
            previous_size,
            direction,
            time_ratio = %ratio,
            "round scaled {direction} to {groups} groups of about {group_size} (was {previous_size}): {why}; the attempt before took {ratio} of its deadline"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::runtime::round_metrics::tests::value;
    use mesh_consensus::command::{Command, GroupPlan, JobSpec, RoundPlan, TrainingSpec};
    use mesh_consensus::{NodeId, Role};

    fn node(i: usize) -> NodeId {
        NodeId(format!("n{i:02}"))
    }

    fn start(round: u32, participants: usize, size: usize, start_ms: u64) -> Command {
        let members: Vec<NodeId> = (0..participants).map(node).collect();
        let groups = members
            .chunks(size)
            .map(|c| GroupPlan {
                aggregator: node(99),
                members: c.to_vec(),
            })
            .collect();
        Command::StartRound {
            job: "j".into(),
            round,
            model_hash: [round as u8; 32],
            participants: members.into_iter().collect(),
            deadline_unix_ms: start_ms + 10_000,
            plan: RoundPlan {
                groups,
                aggregators: vec![node(99)],
            },
        }
    }

    fn complete(round: u32) -> Command {
        Command::CompleteRound {
            job: "j".into(),
            round,
            model_hash: [100 + round as u8; 32],
            metrics: mesh_consensus::RoundMetrics {
                accuracy: 0.5,
                loss: 1.0,
                updates_count: 1,
            },
            privacy_spent_epsilon_micros: 0,
            inputs: Vec::new(),
            evidence: Vec::new(),
        }
    }

    #[test]
    fn a_slow_round_is_exported_as_a_scale_out_with_its_time_ratio() {
        let mut registry = Registry::default();
        let mut metrics = ScaleMetrics::new(&mut registry);
        let spec = JobSpec {
            model: mesh_spec::ModelSpec::Preset(mesh_spec::Preset::Logistic),
            rounds: 3,
            participants_per_round: 24,
            rule_name: "fedavg".into(),
            pre_aggregation: "none".into(),
            server_optimizer: "sgd".into(),
            byzantine_count: 0,
            secagg: true,
            dp_budget: None,
            training: TrainingSpec {
                group_size: 8,
                round_deadline_ms: 10_000,
                ..TrainingSpec::default()
            },
            initial_model: None,
        };
        let mut state = MeshState::new();
        let mut commands = vec![Command::CreateJob {
            job: "j".into(),
            spec,
        }];
        for (i, role) in (0..21)
            .map(|i| (i, Role::Trainer))
            .chain([(99, Role::Aggregator)])
        {
            commands.insert(
                0,
                Command::AddMember {
                    node: node(i),
                    roles: [role].into(),
                    zone: None,
                },
            );
        }
        // 21 of the 24 wanted take part; round 0 takes 7 of its 10 s.
        commands.extend([start(0, 21, 8, 0), complete(0), start(1, 21, 5, 7_000)]);
        for (i, command) in commands.iter().enumerate() {
            state.apply(i as u64 + 1, command).unwrap();
        }
        metrics.observe(&state);
        metrics.observe(&state);
        for (name, want) in [
            ("mesh_round_groups{job=\"j\"}", 5.0),
            ("mesh_round_group_size{job=\"j\"}", 5.0),
            ("mesh_round_time_ratio{job=\"j\"}", 0.7),
            ("mesh_round_participants_shortfall{job=\"j\"}", 3.0),
            ("mesh_round_scale_decisions_total{direction=\"out\"}", 1.0),
        ] {
            assert_eq!(value(&registry, name), Some(want), "{name}");
        }
        assert_eq!(
            value(
                &registry,
                "mesh_round_scale_decisions_total{direction=\"hold\"}"
            ),
            None
        );
    }
}
