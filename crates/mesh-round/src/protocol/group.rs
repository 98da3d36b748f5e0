//! The group aggregator role: collects its group's updates (SecAgg+ masked
//! inputs or signed plain updates), closes each step when every member has
//! answered or its deadline passes, and produces the group's mean update.
//! The result goes as a blob to the final aggregators and as a hash to the
//! coordinator.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mesh_consensus::command::{GroupInput, JobSpec, ModelHash, NodeId};
use mesh_security::rbac::Role;
use mesh_security::secagg::messages::Signed;
use mesh_security::secagg::{ModulusBits, SecAggAggregator, SecAggError, SecAggParams};

use super::blob::{blob_hash, encode_params, model_dimension};
use super::messages::{PlainUpdate, RoundKey, RoundMessage, SecAggStep};
use super::shared::{node_key, Shared, View};
use super::trainer::{noise_sharers, update_bound};

/// Most early messages held while the start model is fetched.
const PENDING_MAX_PER_MEMBER: usize = 4;

/// Where the group stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Waiting for the start model (its size sets the update length).
    WaitingModel,
    /// SecAgg: collecting key advertisements.
    Advertising,
    /// SecAgg: collecting encrypted shares.
    Sharing,
    /// Collecting (masked or plain) updates.
    Collecting,
    /// SecAgg: collecting unmasking shares.
    Unmasking,
    /// Finished, with or without a result.
    Done,
}

/// The group's fixed facts.
#[derive(Clone, Debug)]
pub struct GroupAssignment {
    /// The round.
    pub key: RoundKey,
    /// The job.
    pub spec: Arc<JobSpec>,
    /// The group.
    pub group: u32,
    /// Members, sorted (client indices).
    pub members: Vec<NodeId>,
    /// The round's start model (its length is the update length).
    pub start_hash: ModelHash,
    /// Who may hold it.
    pub holders: Vec<NodeId>,
    /// When updates stop being accepted (ms since the epoch).
    pub collect_until_ms: u64,
}

/// A group aggregator's state for one round.
#[derive(Debug)]
pub struct GroupRound {
    a: GroupAssignment,
    stage: Stage,
    stage_since_ms: u64,
    secagg: Option<SecAggAggregator>,
    session: [u8; 32],
    expected: BTreeSet<u32>,
    seen: BTreeSet<u32>,
    plain: BTreeMap<u32, Vec<f32>>,
    pending: Vec<(NodeId, RoundMessage)>,
    result: Option<(GroupInput, Arc<[u8]>)>,
    sent_to: BTreeSet<NodeId>,
    last_report_ms: Option<u64>,
    /// The last step sent to each client, sent again when the client repeats an earlier message.
    last_out: BTreeMap<u32, SecAggStep>,
    /// Clients whose updates are in the result.
    contributors: BTreeSet<u32>,
    /// Clients a step waited for that had not answered when it closed
    /// (reported to the coordinator as missed deadlines).
    missed: BTreeSet<u32>,
    failed: bool,
}

/// The order of a stage, and of the stage a client message belongs to.
fn stage_order(stage: Stage) -> u8 {
    match stage {
        Stage::WaitingModel => 0,
        Stage::Advertising => 1,
        Stage::Sharing => 2,
        Stage::Collecting => 3,
        Stage::Unmasking => 4,
        Stage::Done => 5,
    }
}

fn message_order(message: &RoundMessage) -> u8 {
    match message {
        RoundMessage::SecAgg {
            step: SecAggStep::Advertise(_),
            ..
        } => 1,
        RoundMessage::SecAgg {
            step: SecAggStep::ShareKeys(_),
            ..
        } => 2,
        RoundMessage::SecAgg {
            step: SecAggStep::Unmask(_),
            ..
        } => 4,
        _ => 3,
    }
}

impl GroupRound {
    /// A group aggregator for `a`.
    pub fn new(a: GroupAssignment, sh: &Shared, now_ms: u64) -> Self {
        let session = sh.session(&a.key, a.group, &sh.me);
        Self {
            a,
            stage: Stage::WaitingModel,
            stage_since_ms: now_ms,
            secagg: None,
            session,
            expected: BTreeSet::new(),
            seen: BTreeSet::new(),
            plain: BTreeMap::new(),
            pending: Vec::new(),
            result: None,
            sent_to: BTreeSet::new(),
            last_report_ms: None,
            last_out: BTreeMap::new(),
            contributors: BTreeSet::new(),
            missed: BTreeSet::new(),
            failed: false,
        }
    }

    /// Whether a message that came after the group closed is a late update
    /// (not a repeat from a client whose update is in).
    pub fn is_late(&self, from: &NodeId, message: &RoundMessage) -> bool {
        let contributed = self
            .index_of(from)
            .is_some_and(|i| self.contributors.contains(&i));
        message_order(message) == 3 && !contributed
    }

    /// Members (positions in the planned group) that missed a step so far.
    pub fn missed(&self) -> Vec<u32> {
        self.missed.iter().copied().collect()
    }

    /// The group's result, once it has one.
    pub fn result(&self) -> Option<GroupInput> {
        self.result.as_ref().map(|(input, _)| *input)
    }

    fn index_of(&self, node: &NodeId) -> Option<u32> {
        self.a
            .members
            .iter()
            .position(|m| m == node)
            .map(|i| i as u32)
    }

    fn enter(&mut self, stage: Stage, expected: BTreeSet<u32>, now_ms: u64) {
        self.stage = stage;
        self.stage_since_ms = now_ms;
        self.expected = expected;
        self.seen.clear();
    }

    /// Advances on time: fetches the model, closes steps whose members all
    /// answered (those of them still reachable, in `view.alive`, and not
    /// recorded as declining the job) or whose deadline passed, and
    /// (re)sends the result.
    pub fn poll(&mut self, sh: &mut Shared, finals: &[NodeId], view: &View<'_>) {
        let now_ms = view.now_ms;
        if self.stage == Stage::WaitingModel {
            self.start(sh, now_ms);
        }
        let declined = view.state.jobs().get(&self.a.key.job).map(|j| &j.declined);
        let all_in = self.answered_or_gone(view.alive, declined);
        let phase_over = now_ms >= self.stage_since_ms + sh.config.phase_timeout_ms;
        let collect_over = now_ms >= self.a.collect_until_ms;
        let close = match self.stage {
            Stage::Advertising | Stage::Sharing | Stage::Unmasking => all_in || phase_over,
            Stage::Collecting => all_in || collect_over,
            Stage::WaitingModel | Stage::Done => false,
        };
        if close {
            if let Err(err) = self.close_stage(sh, now_ms) {
                self.fail(sh, &err);
            }
        }
        self.deliver(sh, finals, view.leader, now_ms);
    }

    /// Whether every member the stage waits for answered, is unreachable,
    /// or declined the job (its data cannot take part). Such a member will
    /// not answer: waiting for it until the stage's deadline only delays the
    /// group's result (or its failure).
    fn answered_or_gone(
        &self,
        alive: &BTreeMap<NodeId, BTreeSet<Role>>,
        declined: Option<&BTreeMap<NodeId, String>>,
    ) -> bool {
        let gone =
            |m: &NodeId| !alive.contains_key(m) || declined.is_some_and(|d| d.contains_key(m));
        self.expected
            .iter()
            .all(|i| self.seen.contains(i) || self.a.members.get(*i as usize).is_none_or(gone))
    }

    fn start(&mut self, sh: &mut Shared, now_ms: u64) {
        let Some(bytes) = sh.blob(&self.a.start_hash) else {
            sh.want(self.a.start_hash, self.a.holders.clone());
            return;
        };
        let everyone: BTreeSet<u32> = (0..self.a.members.len() as u32).collect();
        if !self.a.spec.secagg {
            self.enter(Stage::Collecting, everyone, now_ms);
        } else {
            let dimension = model_dimension(&bytes);
            let keys: Option<Vec<_>> = self.a.members.iter().map(node_key).collect();
            let clip = update_bound(&self.a.spec, self.a.members.len(), dimension);
            let params = keys
                .ok_or_else(|| SecAggError::BadParams("a member id is not a key".into()))
                .and_then(|k| {
                    SecAggParams::new(
                        self.session,
                        k,
                        dimension,
                        clip,
                        ModulusBits::B32,
                        self.session,
                    )
                })
                .and_then(SecAggAggregator::new);
            match params {
                Ok(agg) => {
                    self.secagg = Some(agg);
                    self.enter(Stage::Advertising, everyone, now_ms);
                }
                Err(err) => self.fail(sh, &err),
            }
        }
        for (from, message) in std::mem::take(&mut self.pending) {
            self.on_message(sh, &from, message, now_ms);
        }
    }

    /// A message from a member.
    pub fn on_message(
        &mut self,
        sh: &mut Shared,
        from: &NodeId,
        message: RoundMessage,
        now_ms: u64,
    ) {
        let Some(index) = self.index_of(from) else {
            sh.stats.updates_invalid += 1;
            return;
        };
        if self.stage == Stage::WaitingModel {
            if self.pending.len() < PENDING_MAX_PER_MEMBER * self.a.members.len() {
                self.pending.push((from.clone(), message));
            }
            return;
        }
        let order = message_order(&message);
        if order < stage_order(self.stage) {
            // The client did not get our answer: send it again.
            if let Some(step) = self.last_out.get(&index).cloned() {
                self.send_step(sh, index, step);
            }
            return;
        }
        let accepted = match message {
            RoundMessage::SecAgg { step, .. } => self.on_step(index, step),
            RoundMessage::Plain { update, .. } => self.on_plain(index, from, &update),
            _ => Ok(false),
        };
        match accepted {
            Ok(true) => {
                self.seen.insert(index);
                self.poll_close(sh, now_ms);
            }
            Ok(false) | Err(SecAggError::Duplicate(_)) => {}
            Err(err) => {
                sh.stats.updates_invalid += 1;
                tracing::debug!(%err, round = %self.a.key, "group message refused");
            }
        }
    }

    fn poll_close(&mut self, sh: &mut Shared, now_ms: u64) {
        if self.expected.is_subset(&self.seen) && self.stage != Stage::Done {
            if let Err(err) = self.close_stage(sh, now_ms) {
                self.fail(sh, &err);
            }
        }
    }

    /// The group cannot produce a result this round; the coordinator hears
    /// of it (a report with no contributors) so it need not wait for the deadline.
    fn fail(&mut self, sh: &mut Shared, err: &SecAggError) {
        tracing::warn!(%err, round = %self.a.key, group = self.a.group, "group aggregation failed");
        sh.stats.groups_failed += 1;
        self.stage = Stage::Done;
        self.failed = true;
    }

    /// Feeds a SecAgg step; `Ok(true)` when it counts for the current stage.
    fn on_step(&mut self, index: u32, step: SecAggStep) -> Result<bool, SecAggError> {
        let Some(agg) = self.secagg.as_mut() else {
            return Ok(false);
        };
        let claimed = match &step {
            SecAggStep::Advertise(m) => m.body.client,
            SecAggStep::ShareKeys(m) => m.body.client,
            SecAggStep::Masked(m) => m.body.client,
            SecAggStep::Unmask(m) => m.body.client,
            _ => return Ok(false),
        };
        if claimed != index {
            return Err(SecAggError::UnknownClient {
                client: claimed,
                reason: "sent by another member",
            });
        }
        match (self.stage, step) {
            (Stage::Advertising, SecAggStep::Advertise(m)) => agg.receive_advert(m)?,
            (Stage::Sharing, SecAggStep::ShareKeys(m)) => agg.receive_shares(m)?,
            (Stage::Collecting, SecAggStep::Masked(m)) => agg.receive_masked_input(m)?,
            (Stage::Unmasking, SecAggStep::Unmask(m)) => agg.receive_unmask(m)?,
            _ => {
                return Err(SecAggError::UnexpectedMessage(
                    "step does not match the group's stage",
                ))
            }
        }
        Ok(true)
    }

    fn on_plain(
        &mut self,
        index: u32,
        from: &NodeId,
        update: &Signed<PlainUpdate>,
    ) -> Result<bool, SecAggError> {
        if self.stage != Stage::Collecting {
            return Err(SecAggError::UnexpectedMessage(
                "plain update outside collection",
            ));
        }
        let key = node_key(from).ok_or(SecAggError::BadKey { client: index })?;
        let body = update.verify(&key, &self.session, index)?;
        if body.values.iter().any(|v| !v.is_finite()) {
            return Err(SecAggError::Malformed("non-finite update".into()));
        }
        let mut values = body.values.clone();
        let clip = update_bound(&self.a.spec, self.a.members.len(), values.len()) as f32;
        mesh_federated::privacy::clip_l2(&mut values, clip)
            .map_err(|e| SecAggError::Malformed(e.to_string()))?;
        self.plain.insert(index, values);
        Ok(true)
    }

    /// Ends the current stage and sends what the next one needs. Members
    /// the stage waited for and did not hear from count as missed.
    fn close_stage(&mut self, sh: &mut Shared, now_ms: u64) -> Result<(), SecAggError> {
        self.missed.extend(self.expected.difference(&self.seen));
        if !self.a.spec.secagg {
            return self.finish_plain(sh);
        }
        let Some(agg) = self.secagg.as_mut() else {
            return Ok(());
        };
        match self.stage {
            Stage::Advertising => {
                let outbox = agg.finish_advertising()?;
                let expected = outbox.iter().map(|(u, _)| *u).collect();
                for (u, keys) in outbox {
                    self.send_step(sh, u, SecAggStep::NeighbourKeys(keys));
                }
                self.enter(Stage::Sharing, expected, now_ms);
            }
            Stage::Sharing => {
                let outbox = agg.finish_sharing()?;
                let expected = outbox.iter().map(|(u, _)| *u).collect();
                for (u, shares) in outbox {
                    self.send_step(sh, u, SecAggStep::Shares(shares));
                }
                self.enter(Stage::Collecting, expected, now_ms);
            }
            Stage::Collecting => {
                let request = agg.finish_masking()?;
                let expected: BTreeSet<u32> = request.survivors.iter().copied().collect();
                sh.stats.dropouts += request.dropped.len() as u64;
                // Each survivor's noise was sized for at least `need` of them:
                // with fewer, the sum would be revealed under-noised.
                let need = noise_sharers(self.a.members.len(), true);
                if self.a.spec.training.noise_multiplier > 0.0 && expected.len() < need {
                    return Err(SecAggError::TooFewClients {
                        stage: "collecting (DP noise was sized for more survivors)",
                        alive: expected.len(),
                        need,
                    });
                }
                for u in &expected {
                    self.send_step(sh, *u, SecAggStep::UnmaskRequest(request.clone()));
                }
                self.enter(Stage::Unmasking, expected, now_ms);
            }
            Stage::Unmasking => {
                let output = agg.finish()?;
                self.contributors = output.contributors.iter().copied().collect();
                let n = output.contributors.len();
                let mean: Vec<f32> = output
                    .sum
                    .iter()
                    .map(|s| (*s / n.max(1) as f64) as f32)
                    .collect();
                self.finish_with(sh, mean, n);
            }
            Stage::WaitingModel | Stage::Done => {}
        }
        Ok(())
    }

    fn finish_plain(&mut self, sh: &mut Shared) -> Result<(), SecAggError> {
        let n = self.plain.len();
        if n == 0 {
            return Err(SecAggError::TooFewClients {
                stage: "collecting",
                alive: 0,
                need: 1,
            });
        }
        self.contributors = self.plain.keys().copied().collect();
        let dimension = self.plain.values().next().map_or(0, Vec::len);
        let mut mean = vec![0f32; dimension];
        for values in self.plain.values().filter(|v| v.len() == dimension) {
            mean.iter_mut()
                .zip(values)
                .for_each(|(m, v)| *m += v / n as f32);
        }
        sh.stats.dropouts += (self.a.members.len() - n) as u64;
        self.finish_with(sh, mean, n);
        Ok(())
    }

    fn finish_with(&mut self, sh: &mut Shared, mean: Vec<f32>, contributors: usize) {
        self.stage = Stage::Done;
        let blob = encode_params(&mean);
        let hash = blob_hash(&blob);
        sh.store(blob.clone());
        sh.stats.groups_aggregated += 1;
        sh.stats.updates_accepted += contributors as u64;
        let input = GroupInput {
            group: self.a.group,
            hash,
            contributors: contributors as u32,
        };
        self.result = Some((input, Arc::from(blob)));
    }

    /// Sends the result blob to every final aggregator once, and the report
    /// (or the failure) to the leader until the round ends.
    fn deliver(
        &mut self,
        sh: &mut Shared,
        finals: &[NodeId],
        leader: Option<&NodeId>,
        now_ms: u64,
    ) {
        let due = self
            .last_report_ms
            .is_none_or(|t| now_ms >= t + sh.config.retry_ms);
        if self.failed {
            if let (Some(leader), true) = (leader, due) {
                self.last_report_ms = Some(now_ms);
                let message = RoundMessage::GroupFailed {
                    key: self.a.key.clone(),
                    group: self.a.group,
                    missed: self.missed(),
                };
                sh.send(leader, message);
            }
            return;
        }
        let Some((input, blob)) = self.result.clone() else {
            return;
        };
        for f in finals {
            if self.sent_to.insert(f.clone()) {
                let message = RoundMessage::GroupResult {
                    key: self.a.key.clone(),
                    group: self.a.group,
                    contributors: input.contributors,
                    blob: blob.to_vec(),
                    trace: None,
                };
                sh.send(f, message);
            }
        }
        if let (Some(leader), true) = (leader, due) {
            self.last_report_ms = Some(now_ms);
            let message = RoundMessage::GroupReport {
                key: self.a.key.clone(),
                input,
                missed: self.missed(),
                trace: None,
            };
            sh.send(leader, message);
        }
    }

    /// Whether the group has finished (with or without a result).
    pub fn is_closed(&self) -> bool {
        self.stage == Stage::Done
    }

    fn send_step(&mut self, sh: &mut Shared, client: u32, step: SecAggStep) {
        self.last_out.insert(client, step.clone());
        if let Some(member) = self.a.members.get(client as usize) {
            let message = RoundMessage::SecAgg {
                key: self.a.key.clone(),
                group: self.a.group,
                step,
                trace: None,
            };
            sh.send(&member.clone(), message);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::protocol::node_name;
    use crate::protocol::shared::EngineConfig;
    use mesh_consensus::command::{Command, JobId, TrainingSpec};
    use mesh_consensus::MeshState;
    use mesh_security::NodeIdentity;

    fn plain_spec() -> JobSpec {
        JobSpec {
            model: mesh_spec::ModelSpec::Preset(mesh_spec::Preset::Mlp),
            rounds: 1,
            participants_per_round: 3,
            rule_name: "fedavg".into(),
            pre_aggregation: "none".into(),
            server_optimizer: "sgd".into(),
            byzantine_count: 0,
            secagg: false,
            dp_budget: None,
            training: TrainingSpec::default(),
            initial_model: None,
        }
    }

    /// A DP update leaves its node clipped and then noised; the bound secure
    /// aggregation clips to must leave it whole, or signal and noise shrink
    /// together (logistic regression on MNIST at epsilon 8 fell to chance).
    #[test]
    fn a_noised_update_fits_the_bound_secure_aggregation_clips_to() {
        use mesh_federated::privacy::{GaussianMechanism, NoisePlacement};
        use rand::SeedableRng;
        let mut spec = plain_spec();
        spec.secagg = true;
        spec.training.clip_norm = 0.5;
        spec.training.noise_multiplier = 2.2;
        let (members, dimension) = (5, 7_850);
        let bound = update_bound(&spec, members, dimension);
        let mechanism = GaussianMechanism::new(0.5, 2.2, NoisePlacement::Distributed).unwrap();
        let sharers = noise_sharers(members, true);
        for seed in 0..20 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut update = vec![1.0_f32; dimension];
            mechanism
                .privatize_client(&mut update, sharers, &mut rng)
                .unwrap();
            let norm = update
                .iter()
                .map(|v| f64::from(*v).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(
                norm > 10.0 * 0.5 && norm < bound,
                "norm {norm}, bound {bound}"
            );
        }
        spec.training.noise_multiplier = 0.0;
        assert_eq!(update_bound(&spec, members, dimension), 0.5);
    }

    /// A group of three plain members aggregated by a fourth node, two of
    /// whose members sent their updates: the group, its aggregator's shared state,
    /// the members and the aggregator.
    fn two_of_three_answered() -> (GroupRound, Shared, Vec<NodeId>, NodeId) {
        let identities: Vec<NodeIdentity> =
            (1..=3).map(|i| NodeIdentity::from_seed(&[i; 32])).collect();
        let members: Vec<NodeId> = identities.iter().map(|i| node_name(&i.node_id())).collect();
        let me_identity = NodeIdentity::from_seed(&[9; 32]);
        let me = node_name(&me_identity.node_id());
        let mut sh = Shared::new(me.clone(), me_identity, EngineConfig::new("m", 0));
        let start_hash = sh.store(encode_params(&[0.0; 4])).unwrap();
        let key = RoundKey {
            job: JobId::from("j"),
            round: 0,
            attempt: 0,
        };
        let assignment = GroupAssignment {
            key: key.clone(),
            spec: Arc::new(plain_spec()),
            group: 0,
            members: members.clone(),
            start_hash,
            holders: Vec::new(),
            collect_until_ms: 1_000_000,
        };
        let mut group = GroupRound::new(assignment, &sh, 0);
        let alive = everyone_alive(&members, &me);
        group.poll(&mut sh, &[], &view(&MeshState::new(), &alive, 1));
        let session = sh.session(&key, 0, &me);
        for (identity, member) in identities.iter().zip(&members).take(2) {
            let body = PlainUpdate {
                values: vec![0.5; 4],
                samples: 10,
            };
            let update = Signed::sign(identity, &session, body).unwrap();
            let message = RoundMessage::Plain {
                key: key.clone(),
                group: 0,
                update,
                trace: None,
            };
            group.on_message(&mut sh, member, message, 2);
        }
        (group, sh, members, me)
    }

    fn everyone_alive(members: &[NodeId], me: &NodeId) -> BTreeMap<NodeId, BTreeSet<Role>> {
        members
            .iter()
            .chain([me])
            .map(|n| (n.clone(), BTreeSet::new()))
            .collect()
    }

    fn view<'a>(
        state: &'a MeshState,
        alive: &'a BTreeMap<NodeId, BTreeSet<Role>>,
        now_ms: u64,
    ) -> View<'a> {
        View {
            state,
            leader: None,
            alive,
            zones: None,
            now_ms,
        }
    }

    #[test]
    fn a_step_closes_once_every_member_still_reachable_answered() {
        let (mut group, mut sh, members, me) = two_of_three_answered();
        let state = MeshState::new();
        let mut alive = everyone_alive(&members, &me);
        group.poll(&mut sh, &[], &view(&state, &alive, 3));
        assert!(!group.is_closed(), "closed while a reachable member trains");
        alive.remove(&members[2]);
        group.poll(&mut sh, &[], &view(&state, &alive, 4));
        assert!(group.is_closed(), "still waiting for a member that is gone");
        assert_eq!(group.result().map(|r| r.contributors), Some(2));
        assert_eq!(group.missed(), vec![2], "the member that never answered");
    }

    #[test]
    fn a_member_that_declined_the_job_is_not_waited_for() {
        let (mut group, mut sh, members, me) = two_of_three_answered();
        let alive = everyone_alive(&members, &me);
        let mut state = MeshState::new();
        let commands = [
            Command::AddMember {
                node: members[2].clone(),
                roles: [Role::Trainer].into(),
                zone: None,
            },
            Command::CreateJob {
                job: JobId::from("j"),
                spec: plain_spec(),
            },
        ];
        for (index, command) in commands.iter().enumerate() {
            state.apply(index as u64 + 1, command).unwrap();
        }
        group.poll(&mut sh, &[], &view(&state, &alive, 3));
        assert!(!group.is_closed(), "closed while a member trains");
        let decline = Command::DeclineJob {
            job: JobId::from("j"),
            node: members[2].clone(),
            reason: "schema mismatch".into(),
        };
        state.apply(3, &decline).unwrap();
        group.poll(&mut sh, &[], &view(&state, &alive, 4));
        assert!(
            group.is_closed(),
            "still waiting for a member that declined"
        );
        assert_eq!(group.result().map(|r| r.contributors), Some(2));
    }
}
