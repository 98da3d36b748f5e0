//! The node process's driver of the round protocol: it shows the
//! [`NodeEngine`] this node's copy of the committed state, the committee
//! leader and the admitted peers, carries its messages over the
//! `/agent-mesh/round/{1,2}` request-response protocol, proposes its commands to
//! the committee, and runs training and combining on blocking threads (the
//! results come back through a bounded channel).
//!
//! A job's initial model that cannot be built (a model this build does not
//! know, a dataset this node does not hold) is reported back to the engine
//! only after [`INITIAL_RETRY_MS`]: the engine asks again as soon as it
//! hears of a failure, and a leader used to rebuild and log the failure
//! about 19,000 times a second until the job was cancelled.
//!
//! Each step it carries out also opens or closes this node's span of the
//! round ([`crate::telemetry::RoundSpans`]: `round` and `propose` on the
//! leader, `train`, `mask` and `send_update` on participants,
//! `group_aggregate` and `aggregate` on aggregators), and each round message
//! it sends carries the sending span's trace context. Without a configured
//! OTLP endpoint none of this is built.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use mesh_consensus::command::{Command, JobId, NodeId};
use mesh_consensus::MeshState;
use mesh_federated::data::partition::{Partition, Shard};
use mesh_federated::data::table::{MissingValues, TableOptions};
use mesh_federated::data::{DataSource, LoadOptions};
use mesh_net::{NetHandle, PeerId};
use mesh_security::rbac::Role;
use mesh_security::NodeIdentity;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, Semaphore};

use super::round_gate::RoundGate;
use super::state_source::StateSource;
use crate::config::{AdversaryConfig, DataConfig};
use crate::telemetry::RoundSpans;
use mesh_round::job::JobSpecCheck;
use mesh_round::protocol::{
    round_protocol, Action, CombinedModel, Conduct, EngineConfig, LocalWorker, NodeEngine,
    RoundKey, RoundMessage, TrainedUpdate, Validation, View, ROUND_VERSION_MAX,
};
use opentelemetry::trace::{Span, Status};

/// Results of computations waiting for the loop.
pub const DONE_QUEUE_CAPACITY: usize = 64;
/// Round messages in flight at once; more are dropped (the protocol retries).
pub const SENDS_IN_FLIGHT_MAX: usize = 512;
/// How long a failed build of a job's initial model waits before the engine
/// hears of it (and so before it is tried again), in ms.
pub const INITIAL_RETRY_MS: u64 = 10_000;
// A failed job logs no more often than the log limiter's interval.
const _: () = assert!(INITIAL_RETRY_MS >= mesh_net::log_limit::LOG_INTERVAL_MS);

/// How long `done` waits before the engine hears of it: a failed initial
/// model waits [`INITIAL_RETRY_MS`], everything else goes at once.
pub fn report_pause_ms(done: &Done) -> u64 {
    match done {
        Done::Initial(_, Err(_)) => INITIAL_RETRY_MS,
        _ => 0,
    }
}

/// A finished computation.
#[derive(Debug)]
pub enum Done {
    /// Local training.
    Trained(RoundKey, Result<TrainedUpdate, String>),
    /// Combining group results.
    Combined(RoundKey, [u8; 32], Result<CombinedModel, String>),
    /// The initial model of a job.
    Initial(JobId, Result<Vec<f32>, String>),
}

/// Why the node's data could not be loaded. Fix `[data]` and start again.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The data source could not be read or parsed (the cause is the
    /// error's `source()`).
    #[error("data: loading {from}")]
    Load {
        /// The source, as written in `[data] dir`.
        from: DataSource,
        /// What went wrong.
        source: mesh_federated::data::DataError,
    },
    /// The split asked for in `[data]` cannot be made.
    #[error("data: {0}")]
    Split(String),
}

/// How the node behaves in rounds: honest, or (only in robustness tests,
/// with `--allow-adversary`) shaping its updates with the configured attack.
pub fn conduct(config: &AdversaryConfig) -> Conduct {
    match config.attack() {
        Some(attack) => Conduct::Byzantine(attack),
        None => Conduct::Honest,
    }
}

/// Loads the node's private data as its config says.
pub fn load_worker(config: &DataConfig, conduct: Conduct) -> Result<LocalWorker, DataError> {
    let Some(from) = &config.dir else {
        return Ok(LocalWorker::new(&config.dataset, None, None, conduct));
    };
    let load_error = |source| DataError::Load {
        from: from.clone(),
        source,
    };
    let missing: MissingValues = config.missing.parse().map_err(load_error)?;
    if !["classification", "regression"].contains(&config.task.as_str()) {
        return Err(DataError::Split(format!(
            "[data] task must be classification or regression, got {:?}",
            config.task
        )));
    }
    let shard = if config.shards > 1 {
        let partition =
            Partition::from_str(&config.partition).map_err(|e| DataError::Split(e.to_string()))?;
        Some(Shard {
            partition,
            shards: config.shards,
            shard: config.shard,
            seed: config.seed,
        })
    } else {
        None
    };
    let options = LoadOptions {
        table: TableOptions {
            label: config.label.clone(),
            regression: config.task == "regression",
            missing,
            ..TableOptions::default()
        },
        images: Default::default(),
        shard,
        test_rows_max: Some(config.validation_rows),
    };
    let loaded = from.load(&options).map_err(load_error)?;
    let (train, validation_rows) = (loaded.train, loaded.test.len());
    let loaded_sha256 = loaded.sha256_hex;
    tracing::info!(
        source = %from,
        sha256 = %loaded_sha256,
        schema = %train.schema(),
        train_rows = train.len(),
        validation_rows,
        "private data loaded"
    );
    let validation = validation_on_demand(from.clone(), options, loaded_sha256);
    Ok(LocalWorker::with_validation(
        &config.dataset,
        Some(train),
        validation,
        conduct,
    ))
}

/// The validation rows, read again from `from` when this node first scores
/// a model (only final aggregators do): the other nodes never hold them
/// (2,000 MNIST rows are 6 MiB). Refused if the files changed since start.
fn validation_on_demand(
    from: DataSource,
    options: LoadOptions,
    sha256_at_start: String,
) -> Validation {
    Validation::OnDemand(Arc::new(move || {
        let loaded = from
            .load(&options)
            .map_err(|e| format!("reading {from} again: {e}"))?;
        if loaded.sha256_hex != sha256_at_start {
            return Err(format!(
                "the data under {from} changed since the node started (sha256 {} now, {sha256_at_start} then); restart the node to use it",
                loaded.sha256_hex
            ));
        }
        tracing::info!(source = %from, rows = loaded.test.len(), "validation rows read");
        Ok(loaded.test)
    }))
}

/// Milliseconds since the Unix epoch (the envelopes' timestamps).
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The round protocol inside a node process.
pub struct RoundDriver {
    engine: NodeEngine,
    worker: Arc<Mutex<LocalWorker>>,
    done: mpsc::Sender<Done>,
    sends: Arc<Semaphore>,
    roles: BTreeSet<Role>,
    gate: RoundGate,
    spans: RoundSpans,
    /// The zones nodes declared (this one's included), for the coordinator.
    zones: BTreeMap<NodeId, Option<String>>,
    /// Nodes heard from lately, alive without a connection.
    presence: super::presence::Presence,
}

impl RoundDriver {
    /// A driver for the node with `identity` and `roles`, its engine set up
    /// by `round`; results arrive on the returned receiver.
    pub fn new(
        identity: &NodeIdentity,
        roles: BTreeSet<Role>,
        mesh_id: &str,
        round: &crate::config::RoundConfig,
        worker: LocalWorker,
        registry: &mut Registry,
    ) -> (Self, mpsc::Receiver<Done>) {
        let gate = RoundGate::starting_now(identity.clone(), mesh_net::envelope_mesh_id(mesh_id));
        gate.register(registry);
        let me = mesh_round::protocol::node_name(&identity.node_id());
        let seed = rand::random::<u64>();
        let mut engine_config = EngineConfig::new(mesh_id, seed);
        engine_config.cache_capacity_bytes = round.cache_capacity_bytes;
        engine_config.cache_policy = round.cache_policy;
        let engine = NodeEngine::new(me, identity.clone(), engine_config);
        let (done, rx) = mpsc::channel(DONE_QUEUE_CAPACITY);
        let driver = Self {
            engine,
            worker: Arc::new(Mutex::new(worker)),
            done,
            sends: Arc::new(Semaphore::new(SENDS_IN_FLIGHT_MAX)),
            roles,
            gate,
            spans: RoundSpans::new(mesh_id),
            zones: BTreeMap::new(),
            presence: super::presence::Presence::default(),
        };
        (driver, rx)
    }

    /// What `node` declared as its zone, if it has spoken.
    pub fn declared_zone(&self, node: &NodeId) -> Option<Option<String>> {
        self.zones.get(node).cloned()
    }

    /// `node` declared `zone` (or none); at most
    /// [`super::announce::DECLARED_MAX`] nodes are remembered.
    pub fn zone_declared(&mut self, node: NodeId, zone: Option<String>) {
        if self.zones.len() < super::announce::DECLARED_MAX || self.zones.contains_key(&node) {
            self.zones.insert(node, zone);
        }
    }

    /// `node` announced itself at `now_ms` (see [`super::presence`]).
    pub fn heard_from(&mut self, node: NodeId, now_ms: u64) {
        self.presence.heard(node, now_ms);
    }

    /// `node` is known to be gone.
    pub fn forget(&mut self, node: &NodeId) {
        self.presence.forget(node);
    }

    /// The engine (for the API: blobs, counters).
    pub fn engine_mut(&mut self) -> &mut NodeEngine {
        &mut self.engine
    }

    /// The engine's view of live nodes: this node, the admitted peers with
    /// their certificate roles, and the members heard from lately with
    /// their roles in `state` (see [`super::presence`]). Peers without the
    /// committee role take part too: they follow the committed state
    /// without the log (`state_follow`). (The round gate still checks the
    /// roles of every peer whose message it opens.)
    fn alive(
        me: (&NodeId, &BTreeSet<Role>),
        mut admitted: BTreeMap<NodeId, BTreeSet<Role>>,
        heard: Vec<NodeId>,
        state: &MeshState,
    ) -> BTreeMap<NodeId, BTreeSet<Role>> {
        admitted.insert(me.0.clone(), me.1.clone());
        for node in heard {
            if let (false, Some(member)) =
                (admitted.contains_key(&node), state.members().get(&node))
            {
                admitted.insert(node, member.roles.clone());
            }
        }
        admitted
    }

    async fn with_view<R>(
        &mut self,
        source: &StateSource,
        admitted: BTreeMap<NodeId, BTreeSet<Role>>,
        now_ms: u64,
        f: impl FnOnce(&mut NodeEngine, &View<'_>) -> R,
    ) -> (R, Vec<Action>) {
        let leader = source.leader();
        let heard: Vec<NodeId> = self.presence.recent(now_ms).cloned().collect();
        let roles = self.roles.clone();
        let engine = &mut self.engine;
        let zones = &self.zones;
        source
            .read(|state: &MeshState| {
                let alive = Self::alive((engine.me(), &roles), admitted, heard, state);
                let view = View {
                    state,
                    leader: leader.as_ref(),
                    alive: &alive,
                    zones: Some(zones),
                    now_ms,
                };
                let out = f(engine, &view);
                let actions = engine.take_actions(&view);
                (out, actions)
            })
            .await
    }

    /// One step on the committed state and the clock.
    pub async fn tick(
        &mut self,
        source: &StateSource,
        net: &NetHandle,
        admitted: BTreeMap<NodeId, BTreeSet<Role>>,
        now_ms: u64,
    ) {
        let ((), actions) = self
            .with_view(source, admitted, now_ms, |e, v| e.observe(v))
            .await;
        self.carry_out(actions, source, net);
    }

    /// A round message from an admitted peer, sent under round message
    /// `version`: its envelope, sender and role are checked
    /// ([`RoundGate::open_for`]) before the engine sees it.
    #[allow(clippy::too_many_arguments)]
    pub async fn on_message(
        &mut self,
        from: &PeerId,
        version: u8,
        payload: &[u8],
        source: &StateSource,
        net: &NetHandle,
        admitted: BTreeMap<NodeId, BTreeSet<Role>>,
        now_ms: u64,
    ) -> Result<(), String> {
        let node = mesh_net::ids::node_id(from).ok_or("peer id is not a mesh key")?;
        let from = mesh_round::protocol::node_name(&node);
        let roles = admitted.get(&from).cloned().unwrap_or_default();
        let message = self
            .gate
            .open_for(&from, &roles, payload, version, now_ms)
            .map_err(|refusal| {
                tracing::debug!(peer = %from, %refusal, "round message refused");
                refusal.to_string()
            })?;
        self.spans.on_received(&from, &message);
        let ((), actions) = self
            .with_view(source, admitted, now_ms, |e, v| {
                e.on_message(&from, message, v)
            })
            .await;
        self.carry_out(actions, source, net);
        Ok(())
    }

    /// A computation finished.
    pub async fn on_done(
        &mut self,
        done: Done,
        source: &StateSource,
        net: &NetHandle,
        admitted: BTreeMap<NodeId, BTreeSet<Role>>,
        now_ms: u64,
    ) {
        match &done {
            Done::Trained(key, r) => self
                .spans
                .train_done(key, r.as_ref().err().map(String::as_str)),
            Done::Combined(key, _, r) => self
                .spans
                .combine_done(key, r.as_ref().err().map(String::as_str)),
            Done::Initial(..) => {}
        }
        let ((), actions) = self
            .with_view(source, admitted, now_ms, |e, v| {
                match done {
                    Done::Trained(key, r) => e.on_trained(&key, r),
                    Done::Combined(key, digest, r) => e.on_combined(&key, digest, r),
                    Done::Initial(job, r) => e.on_initial(&job, r),
                }
                e.observe(v);
            })
            .await;
        self.carry_out(actions, source, net);
    }

    fn carry_out(&mut self, actions: Vec<Action>, source: &StateSource, net: &NetHandle) {
        for action in actions {
            match action {
                Action::Send { to, message } => self.send(net, &to, message),
                Action::Propose(command) => {
                    let source = source.clone();
                    let mut span = self.propose_span(&command);
                    tokio::spawn(async move {
                        let name = command.to_string();
                        let refused = source.propose(*command).await;
                        if let Some(reason) = &refused {
                            tracing::debug!(%name, %reason, "round command not committed");
                        }
                        if let Some(span) = span.as_mut() {
                            if let Some(reason) = refused {
                                span.set_status(Status::error(reason));
                            }
                            span.end();
                        }
                    });
                }
                Action::BuildInitial { job, spec, weights } => self.compute(move |w| {
                    let built = w.initial(&spec, weights.as_deref());
                    Done::Initial(job, built.map_err(|e| e.to_string()))
                }),
                Action::Train(task) => {
                    self.spans.train_started(&task.key);
                    self.compute(move |w| {
                        Done::Trained(task.key.clone(), w.train(&task).map_err(|e| e.to_string()))
                    })
                }
                Action::Combine(task) => {
                    self.spans.combine_started(&task.key, task.inputs.len());
                    self.compute(move |w| {
                        Done::Combined(
                            task.key.clone(),
                            task.inputs_digest,
                            w.combine(&task).map_err(|e| e.to_string()),
                        )
                    })
                }
            }
        }
    }

    /// Opens or closes the leader's `round` span for a round command, and
    /// returns the span of the proposal itself.
    fn propose_span(&mut self, command: &Command) -> Option<opentelemetry::global::BoxedSpan> {
        let (job, round, name) = match command {
            Command::StartRound {
                job,
                round,
                participants,
                ..
            } => {
                self.spans.round_started(job, *round, participants.len());
                (job, *round, "StartRound")
            }
            Command::CompleteRound { job, round, .. } => {
                self.spans.round_ended(job, *round, true);
                (job, *round, "CompleteRound")
            }
            Command::AbortRound { job, round } => {
                self.spans.round_ended(job, *round, false);
                (job, *round, "AbortRound")
            }
            Command::ReassignAggregator { job, round, .. } => (job, *round, "ReassignAggregator"),
            _ => return None,
        };
        self.spans.propose(name, job, round)
    }

    fn send(&mut self, net: &NetHandle, to: &NodeId, mut message: RoundMessage) {
        let Ok(peer) = PeerId::from_str(&to.0) else {
            tracing::debug!(%to, "round message to a name that is not a peer id");
            return;
        };
        let Some((version, protocol)) = round_version_for(net, &peer, &message) else {
            tracing::debug!(%peer, "no protocol version in common; round message not sent");
            return;
        };
        if !message.goes_to(version) {
            return;
        }
        let Ok(permit) = self.sends.clone().try_acquire_owned() else {
            tracing::debug!("too many round messages in flight; dropping one (it is retried)");
            return;
        };
        let mut span = self.spans.on_send(to, &mut message);
        let bytes = match self.gate.seal_for(&message, version, wall_clock_ms()) {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::warn!(%err, "round message could not be sealed");
                return;
            }
        };
        let net = net.clone();
        tokio::spawn(async move {
            let sent = net.request(peer, protocol, bytes).await;
            if let Err(err) = &sent {
                tracing::debug!(%peer, %err, "round message not delivered");
            }
            if let Some(span) = span.as_mut() {
                if let Err(err) = sent {
                    span.set_status(Status::error(err.to_string()));
                }
                span.end();
            }
            drop(permit);
        });
    }

    fn compute(&self, job: impl FnOnce(&mut LocalWorker) -> Done + Send + 'static) {
        let (worker, done) = (self.worker.clone(), self.done.clone());
        tokio::spawn(async move {
            let computed = tokio::task::spawn_blocking(move || match worker.lock() {
                Ok(mut w) => job(&mut w),
                Err(poisoned) => job(&mut poisoned.into_inner()),
            })
            .await;
            let Ok(result) = computed else {
                tracing::debug!("a computation panicked or was cancelled; result dropped");
                return;
            };
            let pause_ms = report_pause_ms(&result);
            if pause_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
            }
            if done.send(result).await.is_err() {
                tracing::debug!("node stopping; computation result dropped");
            }
        });
    }
}

/// The round message version and protocol name to use with `peer` for
/// `message`: the mesh protocol version the two negotiated (the oldest this
/// node speaks while the peer's is unknown), raised to the message's own
/// floor where this node speaks it; `None` when they share none.
fn round_version_for(
    net: &NetHandle,
    peer: &PeerId,
    message: &RoundMessage,
) -> Option<(u8, &'static str)> {
    let ours = net.protocol_versions();
    let version = net
        .peer_version(peer)
        .usable(ours)?
        .max(message.version_floor())
        .min(ours.max())
        .min(ROUND_VERSION_MAX);
    Some((version, round_protocol(version)?))
}

/// The reputation of the committed state as the API shows it.
pub fn reputation_views(state: &MeshState) -> Vec<crate::api::ReputationView> {
    let reputation = state.reputation();
    reputation
        .scores()
        .map(|(node, score)| crate::api::ReputationView {
            node: node.0.clone(),
            score,
            quarantined: reputation.is_quarantined(node),
        })
        .collect()
}

/// The jobs of the committed state as the API shows them.
pub fn job_views(state: &MeshState) -> Vec<crate::api::JobView> {
    state
        .jobs()
        .iter()
        .map(|(id, job)| {
            let completed: Vec<_> = job.completions().collect();
            let spent = job.epsilon_spent_micros();
            let last = completed.last();
            crate::api::JobView {
                job: id.0.clone(),
                status: format!("{:?}", job.status),
                rounds: job.spec.rounds,
                rounds_completed: completed.len() as u32,
                rounds_aborted: job.aborted_rounds,
                epsilon_spent: spent as f64 / 1e6,
                privacy: job
                    .spec
                    .check()
                    .map_or_else(|e| format!("invalid spec: {e}"), |j| j.privacy.to_string()),
                model_hash: last.map(|c| hex::encode(c.model_hash)),
                accuracy: last
                    .filter(|_| !is_regression(&job.spec))
                    .map(|c| c.metrics.accuracy),
                loss: last.map(|c| c.metrics.loss),
                declined: job.declined.values().cloned().collect(),
                detail: serde_json::to_value(job).unwrap_or_default(),
            }
        })
        .collect()
}

/// True for a job whose schema asks for regression (it has no accuracy).
fn is_regression(spec: &mesh_consensus::JobSpec) -> bool {
    spec.training
        .schema
        .as_ref()
        .is_some_and(|s| s.task.is_regression())
}

/// The model hash of `round` (latest completed when `None`) and who holds it.
pub fn model_location(
    state: &MeshState,
    job: &JobId,
    round: Option<u32>,
) -> Result<(mesh_consensus::ModelHash, Vec<NodeId>), (u16, String)> {
    let record = state
        .jobs()
        .get(job)
        .ok_or((404, format!("no job {job}")))?;
    let index = match round {
        Some(r) => r as usize,
        None => record
            .rounds
            .iter()
            .rposition(|r| r.completion.is_some())
            .ok_or((404, format!("job {job} has no completed round yet")))?,
    };
    let r = record
        .rounds
        .get(index)
        .ok_or((404, format!("job {job} has no round {index}")))?;
    let completion = r
        .completion
        .as_ref()
        .ok_or((409, format!("round {index} of job {job} has not completed")))?;
    let mut holders: Vec<NodeId> = r.plan.aggregators.clone();
    if let Some(next) = record.rounds.get(index + 1) {
        holders.extend(next.participants.iter().cloned());
    }
    Ok((completion.model_hash, holders))
}

impl RoundDriver {
    /// A round's model for the API: the blob if held, else a fetch is started.
    pub async fn model(
        &mut self,
        source: &StateSource,
        job: &JobId,
        round: Option<u32>,
    ) -> Result<Vec<u8>, (u16, String)> {
        let (hash, holders) = source.read(|s| model_location(s, job, round)).await?;
        if let Some(bytes) = self.engine.blob(&hash) {
            return Ok(bytes.to_vec());
        }
        self.engine.want(hash, holders);
        Err((
            503,
            "fetching the model from the nodes that hold it; retry in a moment".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a job whose initial model cannot be built was
    /// rebuilt (and its failure logged) as fast as the loop could go.
    #[test]
    fn a_failed_initial_model_is_reported_only_after_a_pause() {
        let failed = Done::Initial(JobId("j".into()), Err("unknown model".into()));
        assert_eq!(report_pause_ms(&failed), INITIAL_RETRY_MS);
        let built = Done::Initial(JobId("j".into()), Ok(vec![0.0]));
        assert_eq!(report_pause_ms(&built), 0);
    }

    #[test]
    fn members_heard_lately_are_alive_with_their_committed_roles() {
        let name = |n: &str| NodeId(n.into());
        let trainer: BTreeSet<Role> = [Role::Trainer].into();
        let mut state = MeshState::new();
        for (index, node) in [(1, "member"), (2, "admitted")] {
            let add = mesh_consensus::command::Command::AddMember {
                node: name(node),
                roles: trainer.clone(),
                zone: None,
            };
            state.apply(index, &add).expect("member added");
        }
        let observer: BTreeSet<Role> = [Role::Observer].into();
        let admitted = BTreeMap::from([(name("admitted"), observer.clone())]);
        let heard = vec![name("member"), name("stranger"), name("admitted")];
        let alive = RoundDriver::alive((&name("me"), &trainer), admitted, heard, &state);
        assert_eq!(alive.get(&name("me")), Some(&trainer));
        assert_eq!(
            alive.get(&name("member")),
            Some(&trainer),
            "roles from the state"
        );
        assert_eq!(
            alive.get(&name("admitted")),
            Some(&observer),
            "an admitted peer keeps its certificate roles"
        );
        assert!(
            !alive.contains_key(&name("stranger")),
            "a node that is not a member needs a connection"
        );
    }

    #[test]
    fn a_node_trains_on_its_shard_of_the_built_in_set() {
        let config = DataConfig {
            dir: Some(DataSource::default()),
            shards: 4,
            shard: 1,
            ..DataConfig::default()
        };
        let worker = load_worker(&config, Conduct::Honest).expect("built-in data");
        assert_eq!(worker.train_rows(), 8_000 / 4);
    }

    #[test]
    fn a_missing_folder_keeps_its_cause_as_the_source() {
        let dir = tempfile::tempdir().expect("tmp");
        let config = DataConfig {
            dir: Some(DataSource::Dir(dir.path().join("absent"))),
            ..DataConfig::default()
        };
        let err = load_worker(&config, Conduct::Honest).expect_err("no files");
        assert!(err.to_string().contains("absent"), "{err}");
        let cause = std::error::Error::source(&err).expect("loader error");
        assert!(cause.source().is_some(), "the io::Error is kept: {cause}");
    }
}
