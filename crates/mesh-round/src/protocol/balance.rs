//! Load-balanced choice of a round's aggregators.
//!
//! A node's *load* is the aggregation work the committed state shows it
//! doing in the most recent [`LOAD_WINDOW_ROUNDS`] rounds of all jobs: a
//! group aggregation weighs its group's size (updates unmasked and summed),
//! a final aggregation weighs the round's number of groups (group results
//! combined). Older rounds drop out of the window; among equally loaded
//! nodes the one that aggregated longest ago (all history) goes first. A
//! running round counts with its plan (reassignments included), so
//! concurrent jobs see each other's choices.
//!
//! Round records hold no durations nor per-group timings (only log indexes,
//! a deadline and counts), so the load is work planned, not time measured.
//! A completed round's inputs say how many updates each group result held,
//! but an aggregator whose members dropped out did more work (recovering
//! their masks), not less, so the planned group size stands.
//!
//! The load is a pure function of [`MeshState`], with integer arithmetic and
//! seeded tie-breaks, so every leader computes the same plan. The strategy
//! is [`STRATEGY_DEFAULT`], a constant of the build (not part of any job
//! spec or command); [`crate::protocol::plan::select_with`] takes any
//! [`Strategy`] for tests and measurements.

use std::collections::{BTreeMap, BTreeSet};

use mesh_consensus::command::{GroupPlan, JobId, NodeId, RoundPlan};
use mesh_consensus::state::jobs::RoundRecord;
use mesh_consensus::MeshState;

use super::plan::tie_break;

/// Rounds (most recent, all jobs together) whose aggregation work counts.
/// (A window, not a weighted decay: in the measurement a linear decay
/// over the window spread work less evenly, since it lets a heavy final
/// aggregation fade while lighter recent work still counts in full.)
pub const LOAD_WINDOW_ROUNDS: usize = 128;

/// How a round's aggregators are chosen among the eligible ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Least recently *participating* first, group aggregators rotating
    /// through that order after the final ones (the planner's first rule).
    RoundRobin,
    /// Each slot to the least loaded candidate, seeded tie-break.
    LeastLoaded,
    /// Each slot to the less loaded of two seeded candidates.
    PowerOfTwo,
}

impl Strategy {
    /// Every strategy, for tests and measurements.
    pub const ALL: [Strategy; 3] = [Self::RoundRobin, Self::LeastLoaded, Self::PowerOfTwo];

    /// Short name, for tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::RoundRobin => "round-robin",
            Self::LeastLoaded => "least-loaded",
            Self::PowerOfTwo => "power-of-two",
        }
    }
}

/// The strategy every leader uses (see docs/architecture.md for why).
pub const STRATEGY_DEFAULT: Strategy = Strategy::LeastLoaded;

/// The aggregation work `plan` gives each of its aggregators, in load units.
pub fn plan_work(plan: &RoundPlan) -> impl Iterator<Item = (&NodeId, u64)> {
    let groups = plan.groups.len() as u64;
    let group = plan
        .groups
        .iter()
        .map(|g| (&g.aggregator, g.members.len() as u64));
    group.chain(plan.aggregators.iter().map(move |f| (f, groups)))
}

/// Each node's aggregation load over the last [`LOAD_WINDOW_ROUNDS`]
/// rounds (all jobs, by start index); nodes with none are absent.
pub fn committed_load(state: &MeshState) -> BTreeMap<NodeId, u64> {
    let mut rounds: Vec<&RoundRecord> = state
        .jobs()
        .iter()
        .flat_map(|(_, job)| job.rounds.iter())
        .collect();
    // Newest first; start indexes are distinct log entries, and a stable
    // sort over the jobs' id order would settle any tie alike everywhere.
    rounds.sort_by_key(|r| std::cmp::Reverse(r.started_index));
    let mut load = BTreeMap::new();
    for round in rounds.iter().take(LOAD_WINDOW_ROUNDS) {
        for (node, work) in plan_work(&round.plan) {
            *load.entry(node.clone()).or_insert(0) += work;
        }
    }
    load
}

/// The log index at which each node last started a round as an aggregator
/// (any job, any slot, all history): among equally loaded nodes the one idle
/// longest goes first, so nodes whose work has left the load window do not
/// all look new again.
pub fn last_aggregated(state: &MeshState) -> BTreeMap<NodeId, u64> {
    let mut out = BTreeMap::new();
    for (_, job) in state.jobs().iter() {
        for round in &job.rounds {
            for (node, _) in plan_work(&round.plan) {
                let at = out.entry(node.clone()).or_insert(0);
                *at = (*at).max(round.started_index);
            }
        }
    }
    out
}

/// Fills a round's aggregator slots one at a time by `strategy`
/// ([`Strategy::LeastLoaded`] or [`Strategy::PowerOfTwo`]), adding each
/// slot's work to its node's load before the next slot is filled.
pub(crate) struct Balancer<'a> {
    strategy: Strategy,
    load: BTreeMap<NodeId, u64>,
    last: BTreeMap<NodeId, u64>,
    seed: u64,
    job: &'a JobId,
    round: u32,
    slot: u64,
}

impl<'a> Balancer<'a> {
    /// A balancer starting from the committed load.
    pub(crate) fn new(
        state: &MeshState,
        strategy: Strategy,
        seed: u64,
        job: &'a JobId,
        round: u32,
    ) -> Self {
        Self {
            strategy,
            load: committed_load(state),
            last: last_aggregated(state),
            seed,
            job,
            round,
            slot: 0,
        }
    }

    /// Less loaded first, then idle longest, then by seeded hash.
    fn key(&self, node: &NodeId) -> (u64, u64, [u8; 32]) {
        let load = self.load.get(node).copied().unwrap_or(0);
        let last = self.last.get(node).copied().unwrap_or(0);
        (load, last, tie_break(self.seed, self.job, self.round, node))
    }

    /// Picks one of `candidates` for a slot of `work` units and charges it.
    fn pick(&mut self, candidates: &[&NodeId], work: u64) -> Option<NodeId> {
        let slot = self.slot;
        self.slot += 1;
        let chosen = match self.strategy {
            Strategy::PowerOfTwo => {
                // Two uniformly drawn candidates: the two smallest hashes of
                // a per-slot seed (a seeded sample without replacement).
                let salt = self.seed ^ (slot + 2).rotate_left(32);
                let mut drawn: Vec<(&NodeId, [u8; 32])> = candidates
                    .iter()
                    .map(|n| (*n, tie_break(salt, self.job, self.round, n)))
                    .collect();
                drawn.sort_unstable_by_key(|d| d.1);
                drawn
                    .iter()
                    .take(2)
                    .map(|(n, _)| *n)
                    .min_by_key(|n| self.key(n))
            }
            Strategy::LeastLoaded | Strategy::RoundRobin => {
                candidates.iter().copied().min_by_key(|n| self.key(n))
            }
        }?
        .clone();
        *self.load.entry(chosen.clone()).or_insert(0) += work;
        self.last.insert(chosen.clone(), u64::MAX);
        Some(chosen)
    }

    /// The final aggregators (`count`, fewer if fewer candidates): each from
    /// a zone no earlier one is in while such a candidate remains (a node
    /// with no zone counts as its own zone), so one zone's outage cannot
    /// take every one of them.
    pub(crate) fn finals(
        &mut self,
        state: &MeshState,
        candidates: &[NodeId],
        count: usize,
        work: u64,
    ) -> Vec<NodeId> {
        let zone_of = |n: &NodeId| state.members().get(n).and_then(|m| m.zone.clone());
        let mut zones = BTreeSet::new();
        let mut out: Vec<NodeId> = Vec::new();
        for _ in 0..count.min(candidates.len()) {
            let free: Vec<&NodeId> = candidates.iter().filter(|n| !out.contains(n)).collect();
            let new_zone: Vec<&NodeId> = free
                .iter()
                .copied()
                .filter(|n| zone_of(n).is_none_or(|z| !zones.contains(&z)))
                .collect();
            let tier = if new_zone.is_empty() { free } else { new_zone };
            let Some(node) = self.pick(&tier, work) else {
                break;
            };
            debug_assert!(!out.contains(&node), "final aggregators are distinct");
            if let Some(zone) = zone_of(&node) {
                zones.insert(zone);
            }
            out.push(node);
        }
        out
    }

    /// An aggregator for each group, in order: from the candidates outside
    /// the group that hold no other aggregation slot of the round, else
    /// outside the group, else any (a group of everyone); `None` with no
    /// candidates.
    pub(crate) fn groups(
        &mut self,
        groups: Vec<Vec<NodeId>>,
        candidates: &[NodeId],
        finals: &[NodeId],
    ) -> Option<Vec<GroupPlan>> {
        let mut taken: BTreeSet<NodeId> = finals.iter().cloned().collect();
        let mut out = Vec::with_capacity(groups.len());
        for members in groups {
            let outside: Vec<&NodeId> =
                candidates.iter().filter(|n| !members.contains(n)).collect();
            let fresh: Vec<&NodeId> = outside
                .iter()
                .copied()
                .filter(|n| !taken.contains(*n))
                .collect();
            let tier = if !fresh.is_empty() {
                fresh
            } else if !outside.is_empty() {
                outside
            } else {
                candidates.iter().collect()
            };
            let work = members.len() as u64;
            let aggregator = self.pick(&tier, work)?;
            taken.insert(aggregator.clone());
            out.push(GroupPlan {
                aggregator,
                members,
            });
        }
        Some(out)
    }
}

/// The least loaded of `candidates` by the committed load, then the one idle
/// longest, then the lowest node id: a failed aggregator's stand-in.
pub fn least_loaded<'n>(
    state: &MeshState,
    candidates: impl IntoIterator<Item = &'n NodeId>,
) -> Option<&'n NodeId> {
    let (load, last) = (committed_load(state), last_aggregated(state));
    let get = |m: &BTreeMap<NodeId, u64>, n: &NodeId| m.get(n).copied().unwrap_or(0);
    candidates
        .into_iter()
        .min_by_key(|n| (get(&load, n), get(&last, n), *n))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::protocol::plan::tests::complete_round;
    use crate::protocol::plan::{replacement, select_with, RoundAt, Selection};
    use mesh_consensus::command::{Command, JobSpec};
    use mesh_security::rbac::Role;

    fn node(i: usize) -> NodeId {
        NodeId(format!("n{i:03}"))
    }

    fn spec(participants: u32) -> JobSpec {
        crate::protocol::plan::tests::job_spec(participants, 10_000)
    }

    /// A mesh of `nodes` trainers and aggregators (in `zones` zones, none
    /// when 0) running `jobs` jobs of half the mesh each, round after round.
    struct Mesh {
        state: MeshState,
        alive: BTreeMap<NodeId, BTreeSet<Role>>,
        index: u64,
        jobs: Vec<(JobId, JobSpec)>,
    }

    impl Mesh {
        fn new(nodes: usize, zones: usize, jobs: usize) -> Self {
            let roles: BTreeSet<Role> = [Role::Trainer, Role::Aggregator].into();
            let mut mesh = Self {
                state: MeshState::new(),
                alive: BTreeMap::new(),
                index: 0,
                jobs: Vec::new(),
            };
            for i in 0..nodes {
                let zone = (zones > 0).then(|| format!("z{}", i % zones));
                mesh.apply(&Command::AddMember {
                    node: node(i),
                    roles: roles.clone(),
                    zone,
                });
                mesh.alive.insert(node(i), roles.clone());
            }
            for j in 0..jobs {
                let (job, spec) = (
                    JobId::from(format!("j{j}").as_str()),
                    spec(nodes as u32 / 2),
                );
                mesh.apply(&Command::CreateJob {
                    job: job.clone(),
                    spec: spec.clone(),
                });
                mesh.jobs.push((job, spec));
            }
            mesh
        }

        fn apply(&mut self, command: &Command) {
            self.index += 1;
            self.state.apply(self.index, command).unwrap();
        }

        /// Starts round `round` of every job (all running at once), then
        /// completes them; returns the plans.
        fn round(&mut self, round: u32, strategy: Strategy) -> Vec<Selection> {
            let mut out = Vec::new();
            for (job, spec) in self.jobs.clone() {
                let at = RoundAt { round, now_ms: 0 };
                let s = select_with(&self.state, &self.alive, &job, &spec, at, strategy).unwrap();
                self.apply(&Command::StartRound {
                    job: job.clone(),
                    round,
                    model_hash: [round as u8; 32],
                    participants: s.participants.clone(),
                    deadline_unix_ms: 1,
                    plan: s.plan.clone(),
                });
                out.push(s);
            }
            for (job, _) in self.jobs.clone() {
                self.apply(&complete_round(job, round, [round as u8 ^ 0xff; 32]));
            }
            out
        }
    }

    /// Aggregation work and slots per node over a run.
    #[derive(Debug)]
    struct Spread {
        work: Vec<u64>,
        slots: Vec<u64>,
        slot_work_max: u64,
    }

    impl Spread {
        fn mean(v: &[u64]) -> f64 {
            v.iter().sum::<u64>() as f64 / v.len() as f64
        }

        fn cv(v: &[u64]) -> f64 {
            let mean = Self::mean(v);
            let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
            var.sqrt() / mean
        }
    }

    fn run(nodes: usize, zones: usize, jobs: usize, rounds: u32, strategy: Strategy) -> Spread {
        let mut mesh = Mesh::new(nodes, zones, jobs);
        let mut work: BTreeMap<NodeId, u64> = (0..nodes).map(|i| (node(i), 0)).collect();
        let mut slots = work.clone();
        let mut slot_work_max = 0;
        for round in 0..rounds {
            for s in mesh.round(round, strategy) {
                for (n, w) in plan_work(&s.plan) {
                    *work.get_mut(n).unwrap() += w;
                    *slots.get_mut(n).unwrap() += 1;
                    slot_work_max = slot_work_max.max(w);
                }
            }
        }
        Spread {
            work: work.into_values().collect(),
            slots: slots.into_values().collect(),
            slot_work_max,
        }
    }

    /// Over 50 rounds of two concurrent jobs on 30 nodes, least-loaded
    /// keeps every node within one slot's work of the mean, power-of-two
    /// within two; every node aggregates.
    #[test]
    fn balance_least_loaded_and_power_of_two_spread_work_over_thirty_nodes() {
        for (strategy, slots_over) in [(Strategy::LeastLoaded, 1), (Strategy::PowerOfTwo, 2)] {
            let spread = run(30, 0, 2, 50, strategy);
            let mean = Spread::mean(&spread.work).ceil() as u64;
            let max = *spread.work.iter().max().unwrap();
            let slack = slots_over * spread.slot_work_max;
            assert!(
                max <= mean + slack,
                "{strategy:?}: max {max}, mean {mean}: {spread:?}"
            );
            assert!(
                spread.slots.iter().all(|s| *s > 0),
                "{strategy:?}: {spread:?}"
            );
        }
    }

    #[test]
    fn balance_default_spreads_better_than_round_robin() {
        let rr = run(30, 0, 2, 50, Strategy::RoundRobin);
        let balanced = run(30, 0, 2, 50, STRATEGY_DEFAULT);
        assert!(
            Spread::cv(&balanced.work) < Spread::cv(&rr.work),
            "{rr:?} {balanced:?}"
        );
    }

    #[test]
    fn balance_final_aggregators_stay_in_different_zones() {
        for strategy in Strategy::ALL {
            let mut mesh = Mesh::new(30, 3, 2);
            for round in 0..20 {
                for s in mesh.round(round, strategy) {
                    let zones: BTreeSet<_> = s
                        .plan
                        .aggregators
                        .iter()
                        .map(|n| mesh.state.members().get(n).unwrap().zone.clone())
                        .collect();
                    assert_eq!(zones.len(), s.plan.aggregators.len(), "{strategy:?}");
                    for g in &s.plan.groups {
                        assert!(!g.members.contains(&g.aggregator), "{strategy:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn balance_selection_is_deterministic() {
        for strategy in Strategy::ALL {
            let (mut a, mut b) = (Mesh::new(30, 3, 2), Mesh::new(30, 3, 2));
            for round in 0..10 {
                assert_eq!(a.round(round, strategy), b.round(round, strategy));
            }
            assert_eq!(committed_load(&a.state), committed_load(&b.state));
        }
    }

    /// The load counts each plan's group sizes and group counts, over the
    /// last [`LOAD_WINDOW_ROUNDS`] rounds only.
    #[test]
    fn balance_load_weighs_group_size_and_group_count_within_the_window() {
        let mut mesh = Mesh::new(30, 0, 1);
        let mut plans = Vec::new();
        for round in 0..=LOAD_WINDOW_ROUNDS as u32 {
            plans.push(mesh.round(round, STRATEGY_DEFAULT).remove(0).plan);
            let mut expected: BTreeMap<NodeId, u64> = BTreeMap::new();
            for plan in plans.iter().rev().take(LOAD_WINDOW_ROUNDS) {
                for g in &plan.groups {
                    *expected.entry(g.aggregator.clone()).or_default() += g.members.len() as u64;
                }
                for f in &plan.aggregators {
                    *expected.entry(f.clone()).or_default() += plan.groups.len() as u64;
                }
            }
            assert_eq!(committed_load(&mesh.state), expected, "round {round}");
        }
    }

    #[test]
    fn balance_replacement_is_the_least_loaded_not_excluded() {
        let mut mesh = Mesh::new(30, 0, 1);
        for round in 0..5 {
            mesh.round(round, Strategy::RoundRobin);
        }
        let load = committed_load(&mesh.state);
        let busiest = load.iter().max_by_key(|(_, l)| **l).unwrap().0.clone();
        let idle: Vec<NodeId> = mesh
            .alive
            .keys()
            .filter(|n| !load.contains_key(*n))
            .cloned()
            .collect();
        let exclude: BTreeSet<&NodeId> = idle.iter().take(1).collect();
        let chosen = replacement(&mesh.state, &mesh.alive, &exclude).unwrap();
        // Ties (no load) go to the lowest id.
        let expected = idle.get(1).cloned().unwrap_or_else(|| {
            load.iter()
                .filter(|(n, _)| !exclude.contains(n))
                .min_by_key(|(n, l)| (**l, (*n).clone()))
                .unwrap()
                .0
                .clone()
        });
        assert_eq!(chosen, expected);
        assert_ne!(chosen, busiest);
    }

    /// Prints the spread table in docs/results.md: aggregation work per node
    /// over 200 rounds of two concurrent jobs, half the mesh training in each,
    /// three zones (400 job rounds: the load window moves).
    #[test]
    #[ignore = "measurement: prints a table"]
    fn balance_spread_table() {
        const ROUNDS: u32 = 200;
        println!("| nodes | strategy | work max | work min | work CV | slots max | slots min |");
        println!("|---|---|---|---|---|---|---|");
        for nodes in [30, 100, 300] {
            for strategy in Strategy::ALL {
                let s = run(nodes, 3, 2, ROUNDS, strategy);
                println!(
                    "| {nodes} | {} | {} | {} | {:.3} | {} | {} |",
                    strategy.name(),
                    s.work.iter().max().unwrap(),
                    s.work.iter().min().unwrap(),
                    Spread::cv(&s.work),
                    s.slots.iter().max().unwrap(),
                    s.slots.iter().min().unwrap(),
                );
            }
        }
    }
}
