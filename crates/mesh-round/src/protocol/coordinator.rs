//! The coordinator role, taken by whichever node leads the committee: it
//! admits reachable nodes as members, starts each job's next round with a
//! selection and a plan, replaces failed aggregators, tells the final
//! aggregators which group results to combine, commits the round when they
//! agree, gives up rounds that miss their deadline, and stops a job whose
//! next round would overspend its privacy budget. Everything it knows is
//! rebuilt from the committed state and from reports that are sent again
//! until the round ends, so a new leader continues where the old one stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mesh_consensus::command::{
    AggregatorSlot, Command, EvidenceKind, GroupInput, JobId, JobSpec, ModelHash, NodeId,
    RoundMetrics, StopReason, PARTICIPANTS_MAX,
};
use mesh_consensus::state::jobs::{Job, JobStatus, RoundRecord};
use mesh_federated::privacy::epsilon_for;

use super::messages::{inputs_digest, RoundKey, RoundMessage};
use super::plan::{self, FINAL_AGGREGATORS};
use super::shared::{Action, Shared, View};
use super::worker::is_scored;

/// How long before the same proposal is made again, in ms.
pub const PROPOSE_RETRY_MS: u64 = 5_000;
/// Most remembered proposals.
const PROPOSED_MAX: usize = 4_096;

/// What the coordinator has heard about one running round.
#[derive(Debug, Default)]
struct RoundState {
    groups: BTreeMap<u32, GroupInput>,
    /// Groups whose aggregator reported that they have no result.
    failed: BTreeSet<u32>,
    /// Per group, the members its aggregator reported as missing a step.
    missed: BTreeMap<u32, Vec<u32>>,
    request: Option<Vec<GroupInput>>,
    last_request_ms: Option<u64>,
    reports: BTreeMap<NodeId, FinalReport>,
}

/// A final aggregator's report: inputs digest, model hash, metrics, outliers.
type FinalReport = ([u8; 32], ModelHash, RoundMetrics, Vec<u32>);

/// The coordinator's memory (all of it can be lost on a leader change).
#[derive(Debug, Default)]
pub struct Coordinator {
    rounds: BTreeMap<RoundKey, RoundState>,
    proposed: BTreeMap<String, u64>,
}

/// The running round of a job, if any (borrowed: the record holds every
/// participant, and the engine looks at it at every step).
pub fn running_round<'a>(id: &JobId, job: &'a Job) -> Option<(RoundKey, &'a RoundRecord)> {
    if job.status != JobStatus::RoundRunning {
        return None;
    }
    let record = job.rounds.last()?;
    let key = RoundKey {
        job: id.clone(),
        round: u32::try_from(job.rounds.len() - 1).ok()?,
        attempt: record.aborted_attempts,
    };
    Some((key, record))
}

/// Total epsilon, in millionths rounded up, after `rounds` rounds of `spec`.
pub fn epsilon_micros_after(spec: &JobSpec, rounds: u32) -> Option<u64> {
    let budget = spec.dp_budget?;
    let t = &spec.training;
    let eps = epsilon_for(
        t.sampling_rate,
        t.noise_multiplier,
        u64::from(rounds),
        budget.delta,
    )
    .ok()?;
    (eps.is_finite() && eps >= 0.0).then(|| (eps * 1e6).ceil() as u64)
}

impl Coordinator {
    fn propose(&mut self, sh: &mut Shared, tag: String, command: Command, now_ms: u64) {
        if self
            .proposed
            .get(&tag)
            .is_some_and(|t| now_ms < t + PROPOSE_RETRY_MS)
        {
            return;
        }
        if self.proposed.len() >= PROPOSED_MAX {
            self.proposed.retain(|_, t| now_ms < *t + PROPOSE_RETRY_MS);
        }
        self.proposed.insert(tag, now_ms);
        sh.stats.proposals += 1;
        sh.push(Action::Propose(Box::new(command)));
    }

    /// One step as the leader.
    pub fn poll(
        &mut self,
        sh: &mut Shared,
        view: &View<'_>,
        initial: &BTreeMap<JobId, ModelHash>,
    ) -> Vec<JobId> {
        self.admit_members(sh, view);
        let mut need_initial = Vec::new();
        let mut running = BTreeSet::new();
        for (id, job) in view.state.jobs().iter() {
            match job.status {
                JobStatus::WaitingForRound if !self.start_round(sh, view, id, job, initial) => {
                    need_initial.push(id.clone());
                }
                JobStatus::RoundRunning => {
                    if let Some((key, record)) = running_round(id, job) {
                        self.drive_round(sh, view, &key, record, job);
                        running.insert(key);
                    }
                }
                _ => {}
            }
        }
        self.rounds.retain(|k, _| running.contains(k));
        need_initial
    }

    /// Proposes every reachable node that is not a member yet, with the
    /// zone it declared; where the driver gathers zones, a node waits until
    /// the driver has its zone (or has given up on hearing one).
    fn admit_members(&mut self, sh: &mut Shared, view: &View<'_>) {
        let members = view.state.members();
        for (node, roles) in view.alive {
            if members.get(node).is_some() || roles.is_empty() {
                continue;
            }
            let zone = match view.zones.map(|z| z.get(node)) {
                None => None,
                Some(Some(declared)) => declared.clone(),
                Some(None) => continue,
            };
            let command = Command::AddMember {
                node: node.clone(),
                roles: roles.clone(),
                zone,
            };
            self.propose(sh, format!("member:{node}"), command, view.now_ms);
        }
    }

    /// Returns false when the job's initial model is not built yet.
    fn start_round(
        &mut self,
        sh: &mut Shared,
        view: &View<'_>,
        id: &JobId,
        job: &Job,
        initial: &BTreeMap<JobId, ModelHash>,
    ) -> bool {
        let round = job.rounds.len() as u32;
        if job.spec.dp_budget.is_some() {
            let budget = view
                .state
                .privacy()
                .account(id)
                .map(|a| a.remaining_epsilon_micros());
            let spent: u64 = job.epsilon_spent_micros();
            let next = epsilon_micros_after(&job.spec, round + 1);
            let fits =
                matches!((next, budget), (Some(n), Some(left)) if n.saturating_sub(spent) <= left);
            if !fits {
                let command = Command::StopJob {
                    job: id.clone(),
                    reason: StopReason::BudgetExhausted,
                };
                self.propose(sh, format!("stop:{id}"), command, view.now_ms);
                return true;
            }
        }
        let start = if round == 0 {
            match initial.get(id) {
                Some(hash) => *hash,
                None => return false,
            }
        } else {
            match job.rounds.last().and_then(|r| r.completion.as_ref()) {
                Some(c) => c.model_hash,
                None => return true,
            }
        };
        let at = plan::RoundAt {
            round,
            now_ms: view.now_ms,
        };
        let Some(selection) = plan::select(view.state, view.alive, id, &job.spec, at) else {
            return true;
        };
        let command = Command::StartRound {
            job: id.clone(),
            round,
            model_hash: start,
            participants: selection.participants,
            deadline_unix_ms: view
                .now_ms
                .saturating_add(job.spec.training.round_deadline_ms),
            plan: selection.plan,
        };
        let tag = format!("start:{id}:{round}:{}", job.aborted_rounds);
        self.propose(sh, tag, command, view.now_ms);
        true
    }

    fn drive_round(
        &mut self,
        sh: &mut Shared,
        view: &View<'_>,
        key: &RoundKey,
        record: &RoundRecord,
        job: &Job,
    ) {
        self.reassign_failed(sh, view, key, record);
        let now = view.now_ms;
        let state = self.rounds.entry(key.clone()).or_default();
        let groups_total = record.plan.groups.len();
        let all_heard = state.groups.len() + state.failed.len() >= groups_total;
        let past_deadline = now >= record.deadline_unix_ms;
        if state.request.is_none() && state.groups.is_empty() && all_heard {
            // Every group failed: nothing to combine, start the round again now.
            let command = Command::AbortRound {
                job: key.job.clone(),
                round: key.round,
            };
            self.propose(sh, format!("abort:{key}"), command, now);
            return;
        }
        if state.request.is_none() && !state.groups.is_empty() && (all_heard || past_deadline) {
            state.request = Some(state.groups.values().copied().collect());
        }
        if let Some(inputs) = state.request.clone() {
            if state
                .last_request_ms
                .is_none_or(|t| now >= t + sh.config.retry_ms)
            {
                state.last_request_ms = Some(now);
                for f in &record.plan.aggregators {
                    let message = RoundMessage::AggregateRequest {
                        key: key.clone(),
                        inputs: inputs.clone(),
                        trace: None,
                    };
                    sh.send(f, message);
                }
            }
            if let Some(command) = agreed(state, &inputs, record, key, job) {
                let tag = format!("complete:{key}");
                self.propose(sh, tag, command, now);
                return;
            }
        }
        if now
            >= record
                .deadline_unix_ms
                .saturating_add(sh.config.abort_grace_ms)
        {
            let command = Command::AbortRound {
                job: key.job.clone(),
                round: key.round,
            };
            self.propose(sh, format!("abort:{key}"), command, now);
        }
    }

    fn reassign_failed(
        &mut self,
        sh: &mut Shared,
        view: &View<'_>,
        key: &RoundKey,
        record: &RoundRecord,
    ) {
        let reported: BTreeSet<u32> = self
            .rounds
            .get(key)
            .map(|s| s.groups.keys().chain(&s.failed).copied().collect())
            .unwrap_or_default();
        let mut slots = Vec::new();
        for (g, group) in record.plan.groups.iter().enumerate() {
            if !reported.contains(&(g as u32)) && !view.alive.contains_key(&group.aggregator) {
                slots.push(AggregatorSlot::Group(g as u32));
            }
        }
        for (i, f) in record.plan.aggregators.iter().enumerate() {
            if !view.alive.contains_key(f) {
                slots.push(AggregatorSlot::Final(i as u32));
            }
        }
        for slot in slots {
            let exclude: BTreeSet<&NodeId> = record.plan.aggregators.iter().collect();
            let Some(node) = plan::replacement(view.state, view.alive, &exclude) else {
                continue;
            };
            let command = Command::ReassignAggregator {
                job: key.job.clone(),
                round: key.round,
                slot,
                node,
            };
            self.propose(sh, format!("reassign:{key}:{slot:?}"), command, view.now_ms);
        }
    }

    /// A report from a group or final aggregator (only while leading).
    pub fn on_message(&mut self, from: &NodeId, message: RoundMessage, view: &View<'_>) {
        let key = match &message {
            RoundMessage::GroupReport { key, .. }
            | RoundMessage::GroupFailed { key, .. }
            | RoundMessage::AggregateReport { key, .. } => key.clone(),
            _ => return,
        };
        let Some((running, record)) = view
            .state
            .jobs()
            .get(&key.job)
            .and_then(|j| running_round(&key.job, j))
        else {
            return;
        };
        if running != key {
            return;
        }
        let state = self.rounds.entry(key).or_default();
        let assigned = |group: u32| {
            record
                .plan
                .groups
                .get(group as usize)
                .is_some_and(|g| &g.aggregator == from)
        };
        match message {
            RoundMessage::GroupReport { input, missed, .. } if assigned(input.group) => {
                // A group that closed at the deadline reports after the inputs
                // were fixed: its result is too late, but whom it missed is not.
                state.missed.insert(input.group, missed);
                if state.request.is_none() {
                    state.failed.remove(&input.group);
                    state.groups.insert(input.group, input);
                }
            }
            RoundMessage::GroupFailed { group, missed, .. }
                if assigned(group) && !state.groups.contains_key(&group) =>
            {
                state.failed.insert(group);
                state.missed.insert(group, missed);
            }
            RoundMessage::AggregateReport {
                inputs_digest,
                model_hash,
                metrics,
                outliers,
                ..
            } if record.plan.aggregators.contains(from) => {
                state
                    .reports
                    .insert(from.clone(), (inputs_digest, model_hash, metrics, outliers));
            }
            _ => {}
        }
    }
}

/// The completing command, when enough final aggregators agree on the model
/// (and on the outliers) for exactly the requested inputs. It carries the
/// evidence the agreement shows: outliers whose group is one participant
/// (with secure aggregation a group's sum cannot be pinned on one member),
/// final aggregators that reported another model for the same inputs, and
/// participants their group aggregator did not hear from in time.
fn agreed(
    state: &RoundState,
    inputs: &[GroupInput],
    record: &RoundRecord,
    key: &RoundKey,
    job: &Job,
) -> Option<Command> {
    let digest = inputs_digest(inputs);
    let needed = FINAL_AGGREGATORS.min(record.plan.aggregators.len());
    let mut votes: BTreeMap<(ModelHash, &[u32]), (usize, RoundMetrics)> = BTreeMap::new();
    for (node, (d, hash, metrics, outliers)) in &state.reports {
        if *d == digest && record.plan.aggregators.contains(node) {
            let entry = votes
                .entry((*hash, outliers.as_slice()))
                .or_insert((0, *metrics));
            entry.0 += 1;
            // An aggregator without validation data (or whose data does not
            // fit the job) scores nothing; the round keeps a real score.
            if !is_scored(&entry.1) {
                entry.1 = *metrics;
            }
        }
    }
    let ((hash, outliers), (_, metrics)) = votes.into_iter().find(|(_, (n, _))| *n >= needed)?;
    let mut evidence = attributable_outliers(outliers, inputs, record);
    evidence.extend(
        state
            .reports
            .iter()
            .filter(|(_, (d, h, _, _))| *d == digest && *h != hash)
            .map(|(node, _)| (node.clone(), EvidenceKind::AggregatorDisagreement)),
    );
    evidence.extend(missed_deadlines(state, record));
    // The command's bound; only a round near the participant limit could
    // reach it, and the most severe evidence (outliers) comes first.
    evidence.truncate(PARTICIPANTS_MAX as usize);
    let spent_before: u64 = job.epsilon_spent_micros();
    let spent = epsilon_micros_after(&job.spec, key.round + 1)
        .map_or(0, |total| total.saturating_sub(spent_before));
    Some(Command::CompleteRound {
        job: key.job.clone(),
        round: key.round,
        model_hash: hash,
        metrics,
        privacy_spent_epsilon_micros: spent,
        inputs: inputs.to_vec(),
        evidence,
    })
}

/// `AnomalousUpdate` evidence for outlier inputs that are one participant's update.
fn attributable_outliers(
    outliers: &[u32],
    inputs: &[GroupInput],
    record: &RoundRecord,
) -> Vec<(NodeId, EvidenceKind)> {
    outliers
        .iter()
        .filter_map(|&i| inputs.get(i as usize))
        .filter_map(|input| record.plan.groups.get(input.group as usize))
        .filter(|group| group.members.len() == 1)
        .map(|group| (group.members[0].clone(), EvidenceKind::AnomalousUpdate))
        .collect()
}

/// `MissedDeadline` evidence for each member that a group aggregator
/// reported as not answering a step in time, once per member and round.
/// It rests on that aggregator's word, which is why one miss costs little
/// (`mesh_consensus::state::reputation::penalty`).
fn missed_deadlines(state: &RoundState, record: &RoundRecord) -> Vec<(NodeId, EvidenceKind)> {
    let missed: BTreeSet<&NodeId> = state
        .missed
        .iter()
        .filter_map(|(g, members)| Some((record.plan.groups.get(*g as usize)?, members)))
        .flat_map(|(group, members)| {
            members
                .iter()
                .filter_map(move |&m| group.members.get(m as usize))
        })
        .collect();
    missed
        .into_iter()
        .map(|node| (node.clone(), EvidenceKind::MissedDeadline))
        .collect()
}

/// Keeps `Arc<JobSpec>`s per job so roles share one copy.
pub fn spec_of(
    cache: &mut BTreeMap<JobId, Arc<JobSpec>>,
    id: &JobId,
    spec: &JobSpec,
) -> Arc<JobSpec> {
    cache
        .entry(id.clone())
        .or_insert_with(|| Arc::new(spec.clone()))
        .clone()
}
