//! Choosing a round's participants, groups and aggregators: healthy (alive
//! now), not quarantined; trainers least recently used first, aggregators by
//! the load-balancing [`Strategy`] (see [`super::balance`]); ties broken by a
//! seeded hash so that every leader makes the same choice from the same state.

use std::collections::{BTreeMap, BTreeSet};

use mesh_consensus::command::{GroupPlan, JobId, JobSpec, NodeId, RoundPlan};
use mesh_consensus::MeshState;
use mesh_security::rbac::Role;

use super::balance::{self, Balancer, Strategy, STRATEGY_DEFAULT};
use super::scale::{self, ScaleDecision};
use crate::job::SECAGG_GROUP_MIN;

/// Fewest participants a round starts with (secure aggregation needs two).
pub const PARTICIPANTS_MIN: usize = 2;
/// Final aggregators per round that must agree on the model hash.
pub const FINAL_AGGREGATORS: usize = 2;

/// A round's selection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Who trains.
    pub participants: BTreeSet<NodeId>,
    /// Groups and aggregators.
    pub plan: RoundPlan,
    /// The group size the scaler chose, and why.
    pub scale: ScaleDecision,
}

/// Nodes that may take `role` now: alive with the role in their certificate,
/// members with it in the committed state, not quarantined.
pub fn eligible(
    state: &MeshState,
    alive: &BTreeMap<NodeId, BTreeSet<Role>>,
    role: Role,
) -> Vec<NodeId> {
    alive
        .iter()
        .filter(|(node, roles)| {
            roles.contains(&role)
                && state
                    .members()
                    .get(node)
                    .is_some_and(|m| m.roles.contains(&role))
                && !state.reputation().is_quarantined(node)
        })
        .map(|(node, _)| node.clone())
        .collect()
}

/// The log index at which each node last started as a participant (any job).
fn last_used(state: &MeshState) -> BTreeMap<NodeId, u64> {
    let mut out = BTreeMap::new();
    for (_, job) in state.jobs().iter() {
        for round in &job.rounds {
            for node in &round.participants {
                let at = out.entry(node.clone()).or_insert(0);
                *at = (*at).max(round.started_index);
            }
        }
    }
    out
}

/// A seeded hash of `node` for `round` of `job`: the order ties break in.
pub(crate) fn tie_break(seed: u64, job: &JobId, round: u32, node: &NodeId) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(job.0.as_bytes());
    h.update(&round.to_le_bytes());
    h.update(node.0.as_bytes());
    *h.finalize().as_bytes()
}

/// Orders `nodes` least recently used first, seeded ties.
fn lru_order(
    state: &MeshState,
    nodes: Vec<NodeId>,
    job: &JobId,
    round: u32,
    seed: u64,
) -> Vec<NodeId> {
    let used = last_used(state);
    let mut keyed: Vec<(u64, [u8; 32], NodeId)> = nodes
        .into_iter()
        .map(|n| {
            let at = used.get(&n).copied().unwrap_or(0);
            (at, tie_break(seed, job, round, &n), n)
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, _, n)| n).collect()
}

/// Splits sorted participants into groups of `size`; a last group shorter
/// than `min` (or half a group) joins the one before. Secure aggregation
/// needs `min` = 2; plain updates may travel in groups of one.
pub fn split_groups(participants: &[NodeId], size: usize, min: usize) -> Vec<Vec<NodeId>> {
    let size = size.max(min).max(1);
    let mut groups: Vec<Vec<NodeId>> = participants.chunks(size).map(<[NodeId]>::to_vec).collect();
    if groups.len() > 1 && groups.last().is_some_and(|g| g.len() < min.max(size / 2)) {
        if let Some(last) = groups.pop() {
            if let Some(prev) = groups.last_mut() {
                prev.extend(last);
            }
        }
    }
    groups
}

/// Selects round `round` of `job` starting at `now_ms`, or `None` when too
/// few nodes are eligible (for the rule to tolerate the job's `f` with secure
/// aggregation, groups are at most [`crate::job::CheckedJob::group_size_for`]);
/// group size by the scaler ([`scale::decide`]), aggregators by
/// [`STRATEGY_DEFAULT`].
pub fn select(
    state: &MeshState,
    alive: &BTreeMap<NodeId, BTreeSet<Role>>,
    job: &JobId,
    spec: &JobSpec,
    at: RoundAt,
) -> Option<Selection> {
    select_with(state, alive, job, spec, at, STRATEGY_DEFAULT)
}

/// Which round is planned, and when (the clock stands for its start time in
/// the scaler's measure of the round before).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundAt {
    /// The round number.
    pub round: u32,
    /// Now, ms since the Unix epoch.
    pub now_ms: u64,
}

/// [`select`] with aggregators chosen by `strategy` (for tests and
/// measurements; a mesh's leaders must all use the same one).
pub fn select_with(
    state: &MeshState,
    alive: &BTreeMap<NodeId, BTreeSet<Role>>,
    job: &JobId,
    spec: &JobSpec,
    at: RoundAt,
    strategy: Strategy,
) -> Option<Selection> {
    let RoundAt { round, now_ms } = at;
    let seed = spec.training.seed;
    // A node that declined the job (its data does not match) takes no part
    // in it: it cannot train, nor validate the models a final aggregator scores.
    let declined = state.jobs().get(job).map(|j| &j.declined);
    let willing = |role| -> Vec<NodeId> {
        eligible(state, alive, role)
            .into_iter()
            .filter(|n| declined.is_none_or(|d| !d.contains_key(n)))
            .collect()
    };
    let trainers = lru_order(state, willing(Role::Trainer), job, round, seed);
    let count = (spec.participants_per_round as usize).min(trainers.len());
    if count < PARTICIPANTS_MIN {
        return None;
    }
    let bounds = scale::bounds(spec, count)?;
    let decision = match state.jobs().get(job) {
        Some(record) => scale::decide(record, round as usize, bounds, now_ms),
        None => scale::decide_first(bounds),
    };
    let participants: BTreeSet<NodeId> = trainers.into_iter().take(count).collect();
    let sorted: Vec<NodeId> = participants.iter().cloned().collect();
    let min = if spec.secagg { SECAGG_GROUP_MIN } else { 1 };
    let groups = split_groups(&sorted, decision.group_size, min);
    let candidates = willing(Role::Aggregator);
    if candidates.is_empty() {
        return None;
    }
    let (groups, finals) = match strategy {
        Strategy::RoundRobin => {
            let aggregators = lru_order(state, candidates, job, round, seed ^ 1);
            let aggregators = zones_first(state, aggregators, FINAL_AGGREGATORS);
            let finals: Vec<NodeId> = aggregators
                .iter()
                .take(FINAL_AGGREGATORS)
                .cloned()
                .collect();
            (
                assign_group_aggregators(groups, &aggregators, finals.len()),
                finals,
            )
        }
        Strategy::LeastLoaded | Strategy::PowerOfTwo => {
            let mut balancer = Balancer::new(state, strategy, seed ^ 1, job, round);
            let work = groups.len() as u64;
            let finals = balancer.finals(state, &candidates, FINAL_AGGREGATORS, work);
            (balancer.groups(groups, &candidates, &finals)?, finals)
        }
    };
    Some(Selection {
        participants,
        plan: RoundPlan {
            groups,
            aggregators: finals,
        },
        scale: decision,
    })
}

/// `nodes` with its first `count` from as many zones as there are (each the
/// earliest of its zone in `nodes`), the rest after them in their order:
/// the final aggregators, who must agree, then sit in different failure
/// domains, so one zone's outage cannot take every one of them.
fn zones_first(state: &MeshState, nodes: Vec<NodeId>, count: usize) -> Vec<NodeId> {
    let zone_of = |n: &NodeId| state.members().get(n).and_then(|m| m.zone.clone());
    let mut seen = BTreeSet::new();
    let (mut first, mut rest): (Vec<NodeId>, Vec<NodeId>) = (Vec::new(), Vec::new());
    for node in nodes {
        let zone = zone_of(&node);
        let new_zone = zone.is_none() || seen.insert(zone);
        if first.len() < count && new_zone {
            first.push(node);
        } else {
            rest.push(node);
        }
    }
    while first.len() < count && !rest.is_empty() {
        first.push(rest.remove(0));
    }
    first.extend(rest);
    first
}

/// Gives each group an aggregator from `aggregators` (in order, starting
/// after the `finals` first ones and wrapping round): the first one outside
/// the group that no earlier group took, else the first outside the group,
/// else plain rotation. An aggregator outside its group means a node that
/// dies costs its group either its aggregator (reassigned, updates kept) or
/// a member, not both at once, which a small group cannot survive.
fn assign_group_aggregators(
    groups: Vec<Vec<NodeId>>,
    aggregators: &[NodeId],
    finals: usize,
) -> Vec<GroupPlan> {
    let count = aggregators.len();
    let mut taken = BTreeSet::new();
    groups
        .into_iter()
        .enumerate()
        .map(|(i, members)| {
            let rotation = (0..count).map(|k| &aggregators[(finals + k) % count]);
            let outside = |n: &&NodeId| !members.contains(n);
            let aggregator = rotation
                .clone()
                .filter(outside)
                .find(|n| !taken.contains(*n))
                .or_else(|| rotation.clone().find(outside))
                .unwrap_or(&aggregators[(finals + i) % count])
                .clone();
            taken.insert(aggregator.clone());
            GroupPlan {
                aggregator,
                members,
            }
        })
        .collect()
}

/// An alive aggregator to replace a failed one, not in `exclude`: the least
/// loaded by the committed state ([`balance::committed_load`]), ties to the
/// lowest node id, so every leader proposes the same one.
pub fn replacement(
    state: &MeshState,
    alive: &BTreeMap<NodeId, BTreeSet<Role>>,
    exclude: &BTreeSet<&NodeId>,
) -> Option<NodeId> {
    let eligible = eligible(state, alive, Role::Aggregator);
    balance::least_loaded(state, eligible.iter().filter(|n| !exclude.contains(n))).cloned()
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::protocol::scale::ScaleDirection;
    use mesh_consensus::command::{Command, JobSpec, TrainingSpec};

    fn at(round: u32) -> RoundAt {
        RoundAt { round, now_ms: 0 }
    }

    fn node(i: usize) -> NodeId {
        NodeId(format!("n{i:02}"))
    }

    fn state_with(nodes: usize) -> (MeshState, BTreeMap<NodeId, BTreeSet<Role>>) {
        let mut state = MeshState::new();
        let roles: BTreeSet<Role> = [Role::Trainer, Role::Aggregator].into();
        let mut alive = BTreeMap::new();
        for i in 0..nodes {
            let add = Command::AddMember {
                node: node(i),
                roles: roles.clone(),
                zone: None,
            };
            state.apply(i as u64 + 1, &add).unwrap();
            alive.insert(node(i), roles.clone());
        }
        (state, alive)
    }

    fn spec(participants: u32) -> JobSpec {
        job_spec(participants, 3)
    }

    /// Completes round `round` of `job` with `model_hash` (plain metrics,
    /// no inputs, no evidence).
    pub(in crate::protocol) fn complete_round(
        job: JobId,
        round: u32,
        model_hash: [u8; 32],
    ) -> Command {
        Command::CompleteRound {
            job,
            round,
            model_hash,
            metrics: mesh_consensus::command::RoundMetrics {
                accuracy: 0.5,
                loss: 1.0,
                updates_count: 1,
            },
            privacy_spent_epsilon_micros: 0,
            inputs: Vec::new(),
            evidence: Vec::new(),
        }
    }

    /// A secure FedAvg job of `rounds` rounds, groups of 4 (the planner's tests' job).
    pub(in crate::protocol) fn job_spec(participants: u32, rounds: u32) -> JobSpec {
        JobSpec {
            model: mesh_spec::ModelSpec::Preset(mesh_spec::Preset::Mlp),
            rounds,
            participants_per_round: participants,
            rule_name: "fedavg".into(),
            pre_aggregation: "none".into(),
            server_optimizer: "sgd".into(),
            byzantine_count: 0,
            secagg: true,
            dp_budget: None,
            training: TrainingSpec {
                group_size: 4,
                ..TrainingSpec::default()
            },
            initial_model: None,
        }
    }

    #[test]
    fn final_aggregators_come_from_different_zones_when_there_are_several() {
        let mut state = MeshState::new();
        let roles: BTreeSet<Role> = [Role::Trainer, Role::Aggregator].into();
        let zones = ["a", "a", "a", "b", "b"];
        for (i, zone) in zones.iter().enumerate() {
            let add = Command::AddMember {
                node: node(i),
                roles: roles.clone(),
                zone: Some((*zone).into()),
            };
            state.apply(i as u64 + 1, &add).unwrap();
        }
        let order: Vec<NodeId> = (0..5).map(node).collect();
        let spread = zones_first(&state, order.clone(), 2);
        assert_eq!(spread, vec![node(0), node(3), node(1), node(2), node(4)]);
        // One zone only: the order stays as it was.
        let (plain, _) = state_with(5);
        assert_eq!(zones_first(&plain, order.clone(), 2), order);
        assert_eq!(zones_first(&state, order[..1].to_vec(), 2), vec![node(0)]);
    }

    #[test]
    fn groups_cover_participants_and_short_tails_merge() {
        let nodes: Vec<NodeId> = (0..10).map(node).collect();
        let groups = split_groups(&nodes[..9], 4, 2);
        assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 5]);
        let groups = split_groups(&nodes, 4, 2);
        assert_eq!(
            groups.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
        assert_eq!(split_groups(&nodes[..3], 4, 2).len(), 1);
        assert_eq!(split_groups(&nodes[..3], 1, 1).len(), 3);
    }

    #[test]
    fn selection_is_valid_deterministic_and_skips_the_dead() {
        let (state, mut alive) = state_with(9);
        let job = JobId::from("j");
        let a = select(&state, &alive, &job, &spec(8), at(0)).unwrap();
        assert_eq!(a, select(&state, &alive, &job, &spec(8), at(0)).unwrap());
        assert_eq!(a.participants.len(), 8);
        assert_eq!(a.plan.aggregators.len(), FINAL_AGGREGATORS);
        let start = Command::StartRound {
            job: job.clone(),
            round: 0,
            model_hash: [0; 32],
            participants: a.participants.clone(),
            deadline_unix_ms: 1,
            plan: a.plan.clone(),
        };
        start.validate().unwrap();
        alive.remove(&node(3));
        let b = select(&state, &alive, &job, &spec(8), at(0)).unwrap();
        assert!(!b.participants.contains(&node(3)));
        alive.retain(|n, _| *n == node(0));
        assert!(select(&state, &alive, &job, &spec(8), at(0)).is_none());
    }

    #[test]
    fn group_aggregators_come_from_outside_their_groups_and_differ() {
        let (state, alive) = state_with(5);
        let job = JobId::from("j");
        // Four plain updates in groups of two (secure groups need four members).
        let mut five = spec(4);
        five.secagg = false;
        five.training.group_size = 2;
        for round in 0..20 {
            let plan = select(&state, &alive, &job, &five, at(round)).unwrap().plan;
            assert_eq!(plan.groups.len(), 2);
            for group in &plan.groups {
                assert!(!group.members.contains(&group.aggregator), "{plan:?}");
            }
            assert_ne!(plan.groups[0].aggregator, plan.groups[1].aggregator);
        }
    }

    /// Three participants form one secure group of three (it tolerates no
    /// dropout: a member lost aborts the round, which starts again); two
    /// cannot hide an update from each other and make no secure round.
    #[test]
    fn three_participants_make_one_secure_group_and_two_none() {
        let (state, alive) = state_with(3);
        let plan = select(&state, &alive, &JobId::from("j"), &spec(3), at(0))
            .unwrap()
            .plan;
        assert_eq!(plan.groups.len(), 1);
        assert_eq!(plan.groups[0].members.len(), 3);
        let (state, alive) = state_with(2);
        assert!(select(&state, &alive, &JobId::from("j"), &spec(3), at(0)).is_none());
    }

    #[test]
    fn one_group_of_everyone_still_gets_an_aggregator() {
        let (state, alive) = state_with(4);
        let job = JobId::from("j");
        let plan = select(&state, &alive, &job, &spec(4), at(0)).unwrap().plan;
        assert_eq!(plan.groups.len(), 1);
        assert!(plan.groups[0].members.contains(&plan.groups[0].aggregator));
    }

    /// A round that took most of its deadline makes the next one plan
    /// smaller groups (more of them, each with its own aggregator); a fast
    /// one keeps the job's size.
    #[test]
    fn a_slow_round_makes_the_next_plan_use_more_smaller_groups() {
        let (mut state, alive) = state_with(16);
        let job = JobId::from("j");
        let mut spec = spec(16);
        spec.training.group_size = 8;
        let deadline_ms = spec.training.round_deadline_ms;
        let mut index = 100;
        let mut apply = |state: &mut MeshState, command: Command| {
            index += 1;
            state.apply(index, &command).unwrap();
        };
        let create = Command::CreateJob {
            job: job.clone(),
            spec: spec.clone(),
        };
        apply(&mut state, create);
        let first = select(&state, &alive, &job, &spec, at(0)).unwrap();
        assert_eq!(first.plan.groups.len(), 2);
        apply(
            &mut state,
            Command::StartRound {
                job: job.clone(),
                round: 0,
                model_hash: [1; 32],
                participants: first.participants.clone(),
                deadline_unix_ms: deadline_ms,
                plan: first.plan.clone(),
            },
        );
        apply(&mut state, complete_round(job.clone(), 0, [2; 32]));
        let fast = RoundAt {
            round: 1,
            now_ms: deadline_ms / 10,
        };
        let kept = select(&state, &alive, &job, &spec, fast).unwrap();
        assert_eq!(kept.plan.groups.len(), 2);
        assert_eq!(kept.scale.direction, ScaleDirection::Hold);
        let slow = RoundAt {
            round: 1,
            now_ms: deadline_ms * 9 / 10,
        };
        let scaled = select(&state, &alive, &job, &spec, slow).unwrap();
        assert_eq!(scaled.scale.direction, ScaleDirection::Out);
        assert_eq!(scaled.scale.group_size, 5);
        assert_eq!(scaled.plan.groups.len(), 3);
        let aggregators: BTreeSet<&NodeId> =
            scaled.plan.groups.iter().map(|g| &g.aggregator).collect();
        assert_eq!(aggregators.len(), 3, "{scaled:?}");
    }
}
