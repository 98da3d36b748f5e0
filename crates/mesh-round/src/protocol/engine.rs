//! [`NodeEngine`]: one node's whole part in the round protocol. It routes
//! committed state, messages, time and finished computations to the roles
//! the node holds in each running round, and collects the actions they ask
//! for. It owns no sockets, threads or clocks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mesh_consensus::command::{JobId, JobSpec, ModelHash, NodeId};
use mesh_consensus::state::jobs::RoundRecord;
use mesh_consensus::state::StateHash;
use mesh_security::NodeIdentity;

use super::blob::{blob_hash, encode_params};
use super::coordinator::{running_round, spec_of, Coordinator};
use super::finals::FinalRound;
use super::group::{GroupAssignment, GroupRound};
use super::messages::{RoundKey, RoundMessage, SecAggStep};
use super::shared::{Action, EngineConfig, Shared, View, FETCHES_MAX};
use super::spread::fetch_order;
use super::stats::ProtocolStats;
use super::trainer::{Assignment, TrainerRound};
use super::worker::{CombinedModel, TrainedUpdate};

/// Most messages a node sends to itself in one step (loops are bugs; this bounds them).
const SELF_DELIVERIES_MAX: usize = 10_000;

/// One node's round protocol.
#[derive(Debug)]
pub struct NodeEngine {
    sh: Shared,
    coordinator: Coordinator,
    specs: BTreeMap<JobId, Arc<JobSpec>>,
    initial: BTreeMap<JobId, ModelHash>,
    initial_requested: BTreeSet<JobId>,
    trainers: BTreeMap<RoundKey, TrainerRound>,
    groups: BTreeMap<(RoundKey, u32), GroupRound>,
    finals: BTreeMap<RoundKey, FinalRound>,
    plans: BTreeMap<RoundKey, RoundRecord>,
    /// The committed state's hash at the last full pass over the running rounds.
    synced: Option<StateHash>,
    /// Jobs in their first round that this node takes part in.
    initial_pending: BTreeSet<JobId>,
    /// Blobs asked for through [`NodeEngine::want`] and not here yet.
    requested: BTreeSet<ModelHash>,
}

impl NodeEngine {
    /// The engine of the node `me` (its mesh name) signing with `identity`.
    pub fn new(me: NodeId, identity: NodeIdentity, config: EngineConfig) -> Self {
        Self {
            sh: Shared::new(me, identity, config),
            coordinator: Coordinator::default(),
            specs: BTreeMap::new(),
            initial: BTreeMap::new(),
            initial_requested: BTreeSet::new(),
            trainers: BTreeMap::new(),
            groups: BTreeMap::new(),
            finals: BTreeMap::new(),
            plans: BTreeMap::new(),
            synced: None,
            initial_pending: BTreeSet::new(),
            requested: BTreeSet::new(),
        }
    }

    /// This node's name.
    pub fn me(&self) -> &NodeId {
        &self.sh.me
    }

    /// Counters so far.
    pub fn stats(&self) -> &ProtocolStats {
        &self.sh.stats
    }

    /// A blob from the cache (models, group results).
    pub fn blob(&mut self, hash: &ModelHash) -> Option<Arc<[u8]>> {
        self.sh.blob(hash)
    }

    /// Bytes held in the blob cache.
    pub fn cache_bytes(&self) -> usize {
        self.sh.cache.size_bytes()
    }

    /// The most bytes the blob cache holds.
    pub fn cache_capacity_bytes(&self) -> usize {
        self.sh.cache.capacity_bytes()
    }

    /// Hits, misses and evictions of the blob cache so far.
    pub fn cache_counters(&self) -> crate::cache::CacheCounters {
        self.sh.cache.counters()
    }

    /// The blob cache's eviction policy.
    pub fn cache_policy(&self) -> crate::cache::CachePolicy {
        self.sh.cache.policy()
    }

    /// Starts recording the blob cache's accesses, up to `accesses_max`
    /// (see [`crate::cache::trace`]).
    pub fn record_cache_accesses(&mut self, accesses_max: usize) {
        self.sh.cache.record_accesses(accesses_max);
    }

    /// Stops recording the blob cache's accesses and returns the record.
    pub fn take_cache_access_log(&mut self) -> Option<crate::cache::trace::AccessLog> {
        self.sh.cache.take_access_log()
    }

    /// Fetches `hash` from `holders` in the background (for `model get`);
    /// the fetch goes on until the blob arrives, whatever rounds run.
    pub fn want(&mut self, hash: ModelHash, holders: Vec<NodeId>) {
        if self.requested.len() < FETCHES_MAX {
            self.requested.insert(hash);
        }
        self.sh.want(hash, holders);
    }

    /// Takes the actions asked for so far; messages to this node itself are
    /// handled here and never leave.
    pub fn take_actions(&mut self, view: &View<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        for _ in 0..SELF_DELIVERIES_MAX {
            let actions = self.sh.take();
            if actions.is_empty() {
                break;
            }
            for action in actions {
                match action {
                    Action::Send { to, message } if to == self.sh.me => {
                        let me = self.sh.me.clone();
                        self.dispatch(&me, message, view);
                    }
                    other => out.push(other),
                }
            }
        }
        out
    }

    /// One step on the committed state and the clock: takes up new roles,
    /// drops finished ones, and lets every role move on.
    pub fn observe(&mut self, view: &View<'_>) {
        let leading = view.leader == Some(&self.sh.me);
        if leading {
            let need = self.coordinator.poll(&mut self.sh, view, &self.initial);
            for job in need {
                self.ensure_initial(&job, view);
            }
        } else {
            self.coordinator = Coordinator::default();
        }
        self.sync_roles(view);
        self.poll_roles(view);
        self.sh.poll_fetches(view.now_ms);
    }

    /// Asks the driver to build the job's initial model, once: from the
    /// job's starting weights when it has them (fetched first, by hash, from
    /// their holders), else from the seed.
    fn ensure_initial(&mut self, job: &JobId, view: &View<'_>) {
        if self.initial.contains_key(job) || self.initial_requested.contains(job) {
            return;
        }
        let Some(j) = view.state.jobs().get(job) else {
            return;
        };
        let spec = spec_of(&mut self.specs, job, &j.spec);
        let weights = match &spec.initial_model {
            None => None,
            Some(start) => match self.sh.blob(&start.hash) {
                Some(bytes) => Some(bytes),
                None => {
                    let mut holders = start.holders.clone();
                    if let Some((_, record)) = running_round(job, j) {
                        holders.extend(record.plan.aggregators.iter().cloned());
                        holders.extend(record.participants.iter().cloned());
                    }
                    self.want(start.hash, holders);
                    return;
                }
            },
        };
        self.initial_requested.insert(job.clone());
        self.sh.push(Action::BuildInitial {
            job: job.clone(),
            spec,
            weights,
        });
    }

    /// Pins a starting-weights file (uploaded to this node) so it is served
    /// to peers until [`PINNED_MAX`](super::PINNED_MAX) newer ones push it out; returns its hash
    /// and the hash it pushed out, if any.
    pub fn pin(&mut self, bytes: Arc<[u8]>) -> (ModelHash, Option<ModelHash>) {
        self.sh.pin(bytes)
    }

    /// A blob this node holds (pinned or cached), by hash.
    pub fn held(&mut self, hash: &ModelHash) -> Option<Arc<[u8]>> {
        self.sh.blob(hash)
    }

    /// The job's initial model was built (or could not be).
    pub fn on_initial(&mut self, job: &JobId, result: Result<Vec<f32>, String>) {
        match result {
            Ok(params) => {
                let blob = encode_params(&params);
                let hash = blob_hash(&blob);
                if self.sh.store(blob).is_some() {
                    self.initial.insert(job.clone(), hash);
                }
            }
            Err(err) => {
                tracing::warn!(%err, %job, "cannot build the job's initial model");
                self.initial_requested.remove(job);
            }
        }
    }

    /// Takes up the roles of new or changed running rounds and drops those
    /// of rounds that ended. The full pass runs only when the committed state
    /// changed since the last one (a node steps far more often than the log
    /// grows); the model fetches it needs are checked at every step.
    fn sync_roles(&mut self, view: &View<'_>) {
        let revision = view.state.state_hash();
        if self.synced != Some(revision) {
            self.take_up_roles(view);
            self.synced = Some(revision);
        }
        self.build_pending_initials(view);
        self.drop_unneeded_fetches();
    }

    /// The full pass of [`Self::sync_roles`]: a round record equal to the one
    /// held is kept as it is (its roles are taken already).
    fn take_up_roles(&mut self, view: &View<'_>) {
        let me = self.sh.me.clone();
        let mut running: BTreeMap<RoundKey, RoundRecord> = BTreeMap::new();
        self.initial_pending.clear();
        for (id, job) in view.state.jobs().iter() {
            let Some((key, record)) = running_round(id, job) else {
                continue;
            };
            if key.round == 0 && involved(record, &me) {
                self.initial_pending.insert(id.clone());
            }
            let held = self.plans.remove(&key).filter(|held| held == record);
            let record = match held {
                Some(held) => held,
                None => {
                    let spec = spec_of(&mut self.specs, id, &job.spec);
                    let holders = self.holders(view, &key, record);
                    self.take_roles(&key, record, &spec, holders, view.now_ms);
                    record.clone()
                }
            };
            running.insert(key, record);
        }
        self.trainers.retain(|k, _| running.contains_key(k));
        self.groups.retain(|(k, g), _| {
            running
                .get(k)
                .and_then(|r| r.plan.groups.get(*g as usize))
                .is_some_and(|p| p.aggregator == me)
        });
        self.finals.retain(|k, _| {
            running
                .get(k)
                .is_some_and(|r| r.plan.aggregators.contains(&me))
        });
        self.plans = running;
    }

    /// Asks for the initial model of every first round this node takes part
    /// in whose start model is not here yet.
    fn build_pending_initials(&mut self, view: &View<'_>) {
        let pending: Vec<JobId> = self
            .initial_pending
            .iter()
            .filter(|job| !self.initial_requested.contains(*job))
            .cloned()
            .collect();
        for job in pending {
            let start = self
                .plans
                .iter()
                .find(|(k, _)| k.job == job)
                .map(|(_, r)| r.start_model_hash);
            let cached = start.is_some_and(|h| self.sh.cache.contains(&crate::cache::BlobId(h)));
            if !cached {
                self.ensure_initial(&job, view);
            }
        }
    }

    /// Forgets fetches that no running round, final aggregation or
    /// [`Self::want`] needs any more.
    fn drop_unneeded_fetches(&mut self) {
        let mut keep: BTreeSet<ModelHash> = BTreeSet::new();
        for r in self.plans.values() {
            keep.insert(r.start_model_hash);
        }
        for f in self.finals.values() {
            keep.extend(f.wanted());
        }
        let cache = &self.sh.cache;
        self.requested
            .retain(|h| !cache.contains(&crate::cache::BlobId(*h)));
        keep.extend(self.requested.iter().copied());
        self.sh.drop_fetches_except(&keep);
    }

    /// Whom this node asks for a round's start model, in order: its parent in
    /// the round's fetch tree rooted at the previous round's final
    /// aggregators, that parent's ancestors, then everyone else
    /// ([`super::spread`]).
    fn holders(&self, view: &View<'_>, key: &RoundKey, record: &RoundRecord) -> Vec<NodeId> {
        let roots: &[NodeId] = key
            .round
            .checked_sub(1)
            .and_then(|prev| {
                let job = view.state.jobs().get(&key.job)?;
                job.rounds.get(prev as usize)
            })
            .map_or(&[], |r| &r.plan.aggregators);
        let fetchers: Vec<NodeId> = record
            .plan
            .aggregators
            .iter()
            .chain(record.plan.groups.iter().map(|g| &g.aggregator))
            .chain(record.participants.iter())
            .cloned()
            .collect();
        fetch_order(&self.sh.me, roots, &fetchers, key)
    }

    fn take_roles(
        &mut self,
        key: &RoundKey,
        record: &RoundRecord,
        spec: &Arc<JobSpec>,
        holders: Vec<NodeId>,
        now_ms: u64,
    ) {
        let me = self.sh.me.clone();
        if let Some((g, group)) = record
            .plan
            .groups
            .iter()
            .enumerate()
            .find(|(_, g)| g.members.contains(&me))
        {
            match self.trainers.get_mut(key) {
                Some(t) if t.assignment().aggregator != group.aggregator => {
                    t.reassign(group.aggregator.clone())
                }
                Some(_) => {}
                None => {
                    let a = Assignment {
                        key: key.clone(),
                        spec: spec.clone(),
                        group: g as u32,
                        aggregator: group.aggregator.clone(),
                        members: group.members.clone(),
                        start_hash: record.start_model_hash,
                        holders: holders.clone(),
                        participants: record.participants.len(),
                    };
                    self.trainers.insert(key.clone(), TrainerRound::new(a));
                }
            }
        }
        for (g, group) in record.plan.groups.iter().enumerate() {
            let slot = (key.clone(), g as u32);
            if group.aggregator == me && !self.groups.contains_key(&slot) {
                let a = GroupAssignment {
                    key: key.clone(),
                    spec: spec.clone(),
                    group: g as u32,
                    members: group.members.clone(),
                    start_hash: record.start_model_hash,
                    holders: holders.clone(),
                    collect_until_ms: record.deadline_unix_ms,
                };
                let round = GroupRound::new(a, &self.sh, now_ms);
                self.groups.insert(slot, round);
            }
        }
        if record.plan.aggregators.contains(&me) && !self.finals.contains_key(key) {
            let f = FinalRound::new(key.clone(), spec.clone(), record.start_model_hash, holders);
            self.finals.insert(key.clone(), f);
        }
    }

    fn poll_roles(&mut self, view: &View<'_>) {
        for t in self.trainers.values_mut() {
            t.poll(&mut self.sh, view.now_ms);
        }
        // Roles exist only for running rounds, whose plans `sync_roles` just stored.
        for ((key, _), g) in &mut self.groups {
            let finals = self.plans.get(key).map_or(&[][..], |r| &r.plan.aggregators);
            g.poll(&mut self.sh, finals, view);
        }
        for (key, f) in &mut self.finals {
            let groups = self.plans.get(key).map_or(&[][..], |r| &r.plan.groups);
            f.poll(&mut self.sh, groups, view.leader, view.now_ms);
        }
    }

    /// A message from `from` (an authenticated, admitted peer).
    pub fn on_message(&mut self, from: &NodeId, message: RoundMessage, view: &View<'_>) {
        self.dispatch(from, message, view);
    }

    fn dispatch(&mut self, from: &NodeId, message: RoundMessage, view: &View<'_>) {
        self.sh.stats.count_received(&message);
        match message {
            RoundMessage::BlobRequest { hash } => self.sh.on_blob_request(from, hash),
            RoundMessage::BlobReply { hash, bytes } => {
                self.sh.on_blob(from, hash, bytes, view.now_ms)
            }
            RoundMessage::BlobPartRequest { hash, part } => {
                self.sh.on_part_request(from, hash, part)
            }
            RoundMessage::BlobPart {
                hash,
                part,
                size_bytes,
                encoded,
            } => self
                .sh
                .on_part(from, hash, part, size_bytes, encoded, view.now_ms),
            RoundMessage::SecAgg { ref key, group, .. }
            | RoundMessage::Plain { ref key, group, .. } => {
                let key = key.clone();
                self.route_group_message(from, key, group, message, view);
            }
            RoundMessage::GroupResult { key, blob, .. } => {
                if let Some(f) = self.finals.get_mut(&key) {
                    f.on_group_result(&mut self.sh, blob);
                }
            }
            RoundMessage::AggregateRequest { key, inputs, .. } => {
                let groups = self
                    .plans
                    .get(&key)
                    .map(|r| r.plan.groups.clone())
                    .unwrap_or_default();
                let leader_sent = view.leader == Some(from);
                if let (Some(f), true) = (self.finals.get_mut(&key), leader_sent) {
                    f.on_request(inputs, &groups);
                    f.poll(&mut self.sh, &groups, view.leader, view.now_ms);
                }
            }
            report @ (RoundMessage::GroupReport { .. }
            | RoundMessage::GroupFailed { .. }
            | RoundMessage::AggregateReport { .. }) => {
                if view.leader == Some(&self.sh.me) {
                    self.coordinator.on_message(from, report, view);
                }
            }
        }
    }

    /// Steps towards trainers go to the trainer; updates and client steps to the group aggregator.
    fn route_group_message(
        &mut self,
        from: &NodeId,
        key: RoundKey,
        group: u32,
        message: RoundMessage,
        view: &View<'_>,
    ) {
        let to_client = matches!(
            &message,
            RoundMessage::SecAgg {
                step: SecAggStep::NeighbourKeys(_)
                    | SecAggStep::Shares(_)
                    | SecAggStep::UnmaskRequest(_),
                ..
            }
        );
        if to_client {
            if let (Some(t), RoundMessage::SecAgg { step, .. }) =
                (self.trainers.get_mut(&key), message)
            {
                t.on_step(&mut self.sh, from, step);
            }
            return;
        }
        match self.groups.get_mut(&(key, group)) {
            Some(g) if g.is_closed() => {
                if g.is_late(from, &message) {
                    self.sh.stats.updates_late += 1;
                }
            }
            Some(g) => g.on_message(&mut self.sh, from, message, view.now_ms),
            None => self.sh.stats.updates_invalid += 1,
        }
    }

    /// Local training finished.
    pub fn on_trained(&mut self, key: &RoundKey, result: Result<TrainedUpdate, String>) {
        if let Some(t) = self.trainers.get_mut(key) {
            t.on_trained(&mut self.sh, result);
        }
    }

    /// A combination finished.
    pub fn on_combined(
        &mut self,
        key: &RoundKey,
        digest: [u8; 32],
        result: Result<CombinedModel, String>,
    ) {
        if let Some(f) = self.finals.get_mut(key) {
            f.on_combined(&mut self.sh, digest, result);
        }
    }
}

/// Whether `me` has a part in a round: trains in it or aggregates for it.
fn involved(record: &RoundRecord, me: &NodeId) -> bool {
    record.participants.contains(me)
        || record.plan.aggregators.contains(me)
        || record.plan.groups.iter().any(|g| g.aggregator == *me)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_consensus::MeshState;

    #[test]
    fn a_requested_blob_is_fetched_even_when_no_round_needs_it() {
        let identity = NodeIdentity::from_seed(&[1; 32]);
        let me = super::super::node_name(&identity.node_id());
        let mut engine = NodeEngine::new(me, identity, EngineConfig::new("m", 0));
        let holder = NodeId::from("holder");
        engine.want([9; 32], vec![holder.clone()]);
        let (state, alive) = (MeshState::new(), BTreeMap::new());
        let view = View {
            state: &state,
            leader: None,
            alive: &alive,
            zones: None,
            now_ms: 1,
        };
        engine.observe(&view);
        let asked = engine.take_actions(&view).into_iter().any(|a| {
            matches!(a, Action::Send { to, message: RoundMessage::BlobPartRequest { hash, part: 0 } }
                if to == holder && hash == [9; 32])
        });
        assert!(asked, "the fetch was dropped");
    }
}
