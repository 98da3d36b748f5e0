//! The mesh simulator: every simulated node runs the real [`NodeEngine`]
//! (the same code as the node process) over an in-memory network with seeded
//! latency, message loss, crashes with restarts and partitions, in simulated
//! time. The committee is one deterministic log applying commands to the
//! real replicated state machine ([`MeshState`]), led by the first live
//! committee node; Raft itself is tested on its own. A run is a pure
//! function of its configuration: the same seed gives the same result.
//!
//! After every committed round the [`invariants`] are checked.

pub mod faults;
pub mod invariants;
mod network;
pub mod traffic;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use mesh_consensus::command::{Command, InitialModel, JobId, JobSpec, ModelHash, NodeId};
use mesh_consensus::state::jobs::JobStatus;
use mesh_consensus::MeshState;
use mesh_federated::data::partition::Partition;
use mesh_federated::data::{bind, Dataset};
use mesh_federated::model;
use mesh_security::rbac::Role;
use mesh_security::NodeIdentity;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::cache::trace::AccessLog;
use crate::job::JobSpecCheck;
use crate::protocol::blob::{decode_params, GlobalModel};
use crate::protocol::{
    node_name, Action, CombinedModel, Conduct, EngineConfig, LocalWorker, NodeEngine,
    ProtocolStats, RoundKey, RoundMessage, TrainTask, TrainedUpdate, Validation, View,
};
pub use faults::Faults;
use invariants::Checker;
use network::Network;
use traffic::{LinkModel, TrafficLog};

/// Simulated milliseconds between two steps of every node.
pub const STEP_MS: u64 = 50;
/// Simulated duration of one local training run, in ms.
pub const TRAIN_MS: u64 = 200;
/// Simulated delay before a proposal is committed, in ms.
pub const COMMIT_MS: u64 = 10;
/// Simulated time a new leader takes to be elected, in ms.
pub const ELECTION_MS: u64 = 500;
/// Committee size (the first nodes).
pub const COMMITTEE_MAX: usize = 5;

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum MeshSimError {
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An invariant broke: a bug. The seed replays it.
    #[error("invariant broken with seed {seed}: {message}")]
    Invariant {
        /// The seed of the run.
        seed: u64,
        /// What broke.
        message: String,
    },
}

/// What a simulation runs.
#[derive(Debug, Clone)]
pub struct MeshSimConfig {
    /// Simulated nodes.
    pub nodes: usize,
    /// The job every node works on.
    pub spec: JobSpec,
    /// How the training set is split across nodes.
    pub partition: Partition,
    /// Nodes that are Byzantine (their updates are shaped by an attack).
    pub byzantine: Vec<(usize, Conduct)>,
    /// Nodes quarantined by committed evidence before the job starts.
    pub quarantined: Vec<usize>,
    /// Network and node faults.
    pub faults: Faults,
    /// Threads training nodes in parallel.
    pub threads: usize,
    /// Seed of every choice of the run.
    pub seed: u64,
    /// Simulated time after which the run stops, in ms.
    pub time_limit_ms: u64,
    /// Starting weights (a safetensors file) the job fine-tunes from; node 0
    /// holds them and the others fetch them by hash, as in a real mesh.
    pub initial_weights: Option<std::sync::Arc<[u8]>>,
}

/// One committed round.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MeshRoundReport {
    /// Round number, from 1.
    pub round: u32,
    /// Accuracy of the new global model on the test set.
    pub test_accuracy: f32,
    /// Loss of the new global model on the test set.
    pub test_loss: f32,
    /// Macro F1 on the test set (classification).
    pub test_macro_f1: f32,
    /// RMSE on the test set in the target's units (regression).
    pub test_rmse: Option<f32>,
    /// R^2 on the test set (regression).
    pub test_r2: Option<f32>,
    /// Updates combined.
    pub updates: u32,
    /// Epsilon spent so far.
    pub epsilon: f64,
    /// Simulated time at commit, in ms.
    pub committed_at_ms: u64,
    /// Wall-clock time since the previous round, in ms.
    pub wall_ms: u64,
    /// Attempts of this round that were aborted.
    pub aborted_attempts: u32,
    /// Groups (each with its aggregator) the committed plan had.
    pub groups: usize,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct MeshSimOutcome {
    /// Committed rounds.
    pub rounds: Vec<MeshRoundReport>,
    /// The job's final status.
    pub status: Option<JobStatus>,
    /// The final global model.
    pub model: Option<Vec<f32>>,
    /// Protocol counters of all nodes together.
    pub stats: ProtocolStats,
    /// Messages the network dropped (loss, partitions, dead recipients).
    pub messages_dropped: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Wall-clock time spent in local training, ms.
    pub training_wall_ms: u64,
    /// Wall-clock time the simulator spent evaluating committed models on the test set, ms.
    pub evaluation_wall_ms: u64,
    /// Wall-clock time the simulator spent checking invariants (keeping every
    /// model blob it sees and recomputing committed models), ms.
    pub checking_wall_ms: u64,
    /// Wall-clock time of the whole run, ms.
    pub total_wall_ms: u64,
    /// Largest blob-cache size of any node, bytes.
    pub cache_bytes_max: usize,
    /// Nodes with evidence against them: (node index, score, quarantined).
    pub reputation: Vec<(usize, u32, bool)>,
}

struct SimNode {
    name: NodeId,
    identity: NodeIdentity,
    engine: NodeEngine,
    worker: LocalWorker,
    up: bool,
}

/// Work a node asked for, finished at a simulated time.
enum Finished {
    Trained(RoundKey, Result<TrainedUpdate, String>),
    Combined(RoundKey, [u8; 32], Result<CombinedModel, String>),
    Initial(JobId, Result<Vec<f32>, String>),
}

/// A simulated mesh running one job.
pub struct MeshSim {
    config: MeshSimConfig,
    nodes: Vec<SimNode>,
    by_name: BTreeMap<NodeId, usize>,
    names: Vec<NodeId>,
    roles: BTreeMap<NodeId, BTreeSet<Role>>,
    state: MeshState,
    index: u64,
    proposals: Vec<(u64, Command)>,
    leader: Option<usize>,
    leader_since_ms: u64,
    network: Network,
    pending: Vec<(u64, usize, Finished)>,
    train_queue: Vec<(usize, TrainTask)>,
    now_ms: u64,
    rng: ChaCha8Rng,
    checker: Checker,
    test: Dataset,
    evaluator: Box<dyn mesh_federated::model::Model>,
    reports: Vec<MeshRoundReport>,
    training_wall_ms: u64,
    evaluation_wall_ms: u64,
    checking_wall: std::time::Duration,
    crashes: u64,
    cache_bytes_max: usize,
    /// When recording cache accesses: the most per engine, and the records
    /// of engines that restarts replaced, with their node.
    cache_accesses_max: Option<usize>,
    cache_logs_ended: Vec<(usize, AccessLog)>,
    last_round_wall: Instant,
    job: JobId,
}

impl MeshSim {
    /// Builds the mesh: identities, private data shards, the committee state
    /// with the job created.
    pub fn new(
        mut config: MeshSimConfig,
        train: &Dataset,
        test: Dataset,
    ) -> Result<Self, MeshSimError> {
        if config.nodes < 2 {
            return Err(MeshSimError::Config("--nodes must be at least 2".into()));
        }
        Command::CreateJob {
            job: "sim".into(),
            spec: config.spec.clone(),
        }
        .validate()
        .map_err(|e| MeshSimError::Config(e.to_string()))?;
        let model_spec = config
            .spec
            .check()
            .map_err(|e| MeshSimError::Config(e.to_string()))?
            .model;
        let schema = config
            .spec
            .training
            .schema
            .clone()
            .unwrap_or_else(|| train.schema());
        let evaluator = model::build(&model_spec, &schema, config.spec.training.seed)
            .map_err(|e| MeshSimError::Config(e.to_string()))?;
        if let Some(bytes) = &config.initial_weights {
            model::store::weights_for_layout(bytes, &evaluator.parameter_layout())
                .map_err(|e| MeshSimError::Config(e.to_string()))?;
        }
        // The evaluator stands for an operator holding the whole test set; it
        // standardizes with the job's statistics, else the pooled training set's.
        let raw_test = test;
        let norm = bind::normalization_for(&schema, train);
        let test = bind::bind(&raw_test, &schema, norm.as_ref())
            .map_err(|e| MeshSimError::Config(e.to_string()))?;
        let shards = config
            .partition
            .split(&train.labels, train.num_classes, config.nodes, config.seed)
            .map_err(|e| MeshSimError::Config(e.to_string()))?;
        let all_roles: BTreeSet<Role> = [
            Role::Trainer,
            Role::Aggregator,
            Role::Committee,
            Role::Observer,
        ]
        .into();
        let mut nodes = Vec::with_capacity(config.nodes);
        let mut roles = BTreeMap::new();
        let validation = std::sync::Arc::new(
            raw_test.subset(&(0..raw_test.len().min(1000)).collect::<Vec<_>>()),
        );
        for (i, rows) in shards.iter().enumerate() {
            let mut key_seed = [0u8; 32];
            key_seed[..8].copy_from_slice(&config.seed.to_le_bytes());
            key_seed[8..16].copy_from_slice(&(i as u64).to_le_bytes());
            let identity = NodeIdentity::from_seed(&key_seed);
            let name = node_name(&identity.node_id());
            let conduct = config
                .byzantine
                .iter()
                .find(|(n, _)| *n == i)
                .map_or(Conduct::Honest, |(_, c)| c.clone());
            // Every node holds the same validation rows: one shared copy.
            let worker = LocalWorker::with_validation(
                &config.spec.training.dataset,
                Some(train.subset(rows)),
                Validation::Held(validation.clone()),
                conduct,
            );
            let engine =
                NodeEngine::new(name.clone(), identity.clone(), engine_config(&config, i, 0));
            roles.insert(name.clone(), all_roles.clone());
            nodes.push(SimNode {
                name,
                identity,
                engine,
                worker,
                up: true,
            });
        }
        if let Some(bytes) = config.initial_weights.clone() {
            let (hash, _) = nodes[0].engine.pin(bytes);
            config.spec.initial_model = Some(InitialModel {
                hash,
                holders: vec![nodes[0].name.clone()],
            });
        }
        let job = JobId::from("sim");
        let by_name = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        let names: Vec<NodeId> = nodes.iter().map(|n| n.name.clone()).collect();
        let network = Network::new(config.faults.clone(), config.seed, &names);
        let mut sim = Self {
            by_name,
            names,
            network,
            rng: ChaCha8Rng::seed_from_u64(config.seed ^ 0x5EED),
            checker: Checker::new(config.spec.clone()),
            config,
            nodes,
            roles,
            state: MeshState::new(),
            index: 0,
            proposals: Vec::new(),
            leader: Some(0),
            leader_since_ms: 0,
            pending: Vec::new(),
            train_queue: Vec::new(),
            now_ms: 0,
            test,
            evaluator,
            reports: Vec::new(),
            training_wall_ms: 0,
            evaluation_wall_ms: 0,
            checking_wall: std::time::Duration::ZERO,
            crashes: 0,
            cache_bytes_max: 0,
            cache_accesses_max: None,
            cache_logs_ended: Vec::new(),
            last_round_wall: Instant::now(),
            job: job.clone(),
        };
        sim.genesis(&job)?;
        Ok(sim)
    }

    /// Members, quarantines and the job, committed before the first step.
    fn genesis(&mut self, job: &JobId) -> Result<(), MeshSimError> {
        let mut commands: Vec<Command> = self
            .roles
            .iter()
            .map(|(node, roles)| Command::AddMember {
                node: node.clone(),
                roles: roles.clone(),
                zone: None,
            })
            .collect();
        for &q in &self.config.quarantined {
            let node = self.nodes[q].name.clone();
            for _ in 0..3 {
                commands.push(Command::RecordEvidence {
                    node: node.clone(),
                    kind: mesh_consensus::command::EvidenceKind::Equivocation,
                });
            }
        }
        commands.push(Command::CreateJob {
            job: job.clone(),
            spec: self.config.spec.clone(),
        });
        for command in commands {
            self.commit(&command)?;
        }
        Ok(())
    }

    fn commit(&mut self, command: &Command) -> Result<(), MeshSimError> {
        self.index += 1;
        if self.state.apply(self.index, command).is_ok() {
            let seed = self.config.seed;
            let started = Instant::now();
            let checked = self.checker.on_commit(&self.state, command);
            self.checking_wall += started.elapsed();
            checked.map_err(|message| MeshSimError::Invariant { seed, message })?;
            if let Command::CompleteRound {
                round, model_hash, ..
            } = command
            {
                self.record_round(*round, *model_hash);
            }
        }
        Ok(())
    }

    /// Runs `f` on the invariant checker, counting its time as the simulator's own.
    fn check<T>(&mut self, f: impl FnOnce(&mut Checker) -> T) -> T {
        let started = Instant::now();
        let out = f(&mut self.checker);
        self.checking_wall += started.elapsed();
        out
    }

    fn record_round(&mut self, round: u32, hash: ModelHash) {
        let started = Instant::now();
        let params = self
            .checker
            .model(&hash)
            .and_then(|b| decode_params(&b).ok());
        let evaluation = params
            .and_then(|p| self.evaluator.set_parameters(&p).ok())
            .and_then(|()| self.evaluator.evaluate(&self.test).ok());
        self.evaluation_wall_ms += started.elapsed().as_millis() as u64;
        let job = self.state.jobs().get(&self.job);
        let record = job.and_then(|j| j.rounds.get(round as usize));
        let completion = record.and_then(|r| r.completion.as_ref());
        let spent: u64 = job.map_or(0, |j| j.epsilon_spent_micros());
        self.reports.push(MeshRoundReport {
            round: round + 1,
            test_accuracy: evaluation.map_or(0.0, |e| e.accuracy),
            test_loss: evaluation.map_or(0.0, |e| e.loss),
            test_macro_f1: evaluation.map_or(0.0, |e| e.macro_f1),
            test_rmse: evaluation.and_then(|e| e.rmse),
            test_r2: evaluation.and_then(|e| e.r2),
            updates: completion.map_or(0, |c| c.metrics.updates_count),
            epsilon: spent as f64 / 1e6,
            committed_at_ms: self.now_ms,
            wall_ms: self.last_round_wall.elapsed().as_millis() as u64,
            aborted_attempts: record.map_or(0, |r| r.aborted_attempts),
            groups: record.map_or(0, |r| r.plan.groups.len()),
        });
        self.last_round_wall = Instant::now();
    }

    /// Records every node's blob-cache accesses from now on, up to
    /// `accesses_max` per node (per engine: a restart starts a new record,
    /// as it starts an empty cache). Collect them with
    /// [`take_cache_access_logs`](Self::take_cache_access_logs).
    pub fn record_cache_accesses(&mut self, accesses_max: usize) {
        self.cache_accesses_max = Some(accesses_max);
        for node in &mut self.nodes {
            node.engine.record_cache_accesses(accesses_max);
        }
    }

    /// Stops recording and returns the records as (node index, record), by
    /// node, each node's older engines first.
    pub fn take_cache_access_logs(&mut self) -> Vec<(usize, AccessLog)> {
        self.cache_accesses_max = None;
        let mut logs = std::mem::take(&mut self.cache_logs_ended);
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if let Some(log) = node.engine.take_cache_access_log() {
                logs.push((i, log));
            }
        }
        logs.sort_by_key(|(i, _)| *i);
        logs
    }

    /// Sets how the network's links behave from now on (per-link latency,
    /// uplink bandwidth); the default is one latency draw per message and
    /// unlimited bandwidth.
    pub fn set_links(&mut self, links: LinkModel) {
        self.network.set_links(links);
    }

    /// Records every message the network accepts from now on (sender,
    /// receiver, encoded size, times), up to `max` messages.
    pub fn record_traffic(&mut self, max: usize) {
        self.network.record_traffic(max);
    }

    /// Stops recording traffic and returns the record.
    pub fn take_traffic(&mut self) -> TrafficLog {
        self.network.take_traffic()
    }

    /// Size of the committed state as a snapshot, bytes: what a node that
    /// follows the state without the log fetches (with the voters' keys).
    pub fn state_snapshot_bytes(&self) -> usize {
        mesh_consensus::snapshot::encode(&self.state).len()
    }

    /// Simulated time now, ms.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Rounds committed so far.
    pub fn reports(&self) -> &[MeshRoundReport] {
        &self.reports
    }

    /// The job's status.
    pub fn status(&self) -> Option<JobStatus> {
        self.state.jobs().get(&self.job).map(|j| j.status)
    }

    /// Whether the run is over (job finished or time limit reached).
    pub fn finished(&self) -> bool {
        self.status().is_none_or(JobStatus::is_finished) || self.now_ms >= self.config.time_limit_ms
    }

    /// Nodes with evidence against them: (node index, score, quarantined).
    pub fn reputation(&self) -> Vec<(usize, u32, bool)> {
        let reputation = self.state.reputation();
        reputation
            .scores()
            .filter_map(|(name, score)| {
                let index = self.nodes.iter().position(|n| n.name == *name)?;
                Some((index, score, reputation.is_quarantined(name)))
            })
            .collect()
    }

    /// Runs steps until the next round commits or the run ends; returns the new round, if any.
    pub fn run_until_round(&mut self) -> Result<Option<MeshRoundReport>, MeshSimError> {
        let done = self.reports.len();
        while !self.finished() && self.reports.len() == done {
            self.step()?;
        }
        Ok(self.reports.get(done).cloned())
    }

    /// Runs to the end.
    pub fn run(mut self) -> Result<MeshSimOutcome, MeshSimError> {
        let started = Instant::now();
        while !self.finished() {
            self.step()?;
        }
        Ok(self.outcome(started))
    }

    /// The outcome so far.
    pub fn outcome(&mut self, started: Instant) -> MeshSimOutcome {
        let mut stats = ProtocolStats::default();
        for n in &self.nodes {
            stats.add(n.engine.stats());
        }
        let model = self
            .state
            .jobs()
            .get(&self.job)
            .and_then(|j| j.rounds.iter().rev().find_map(|r| r.completion.as_ref()))
            .and_then(|c| self.checker.model(&c.model_hash))
            .and_then(|b| decode_params(&b).ok());
        MeshSimOutcome {
            rounds: self.reports.clone(),
            status: self.status(),
            model,
            stats,
            messages_dropped: self.network.dropped(),
            crashes: self.crashes,
            training_wall_ms: self.training_wall_ms,
            evaluation_wall_ms: self.evaluation_wall_ms,
            checking_wall_ms: self.checking_wall.as_millis() as u64,
            total_wall_ms: started.elapsed().as_millis() as u64,
            cache_bytes_max: self.cache_bytes_max,
            reputation: self.reputation(),
        }
    }

    /// One simulated step of [`STEP_MS`].
    pub fn step(&mut self) -> Result<(), MeshSimError> {
        self.now_ms += STEP_MS;
        self.apply_faults();
        self.elect();
        let due: Vec<Command> = {
            let now = self.now_ms;
            let (due, later): (Vec<_>, Vec<_>) =
                self.proposals.drain(..).partition(|(t, _)| *t <= now);
            self.proposals = later;
            due.into_iter().map(|(_, c)| c).collect()
        };
        for command in due {
            self.commit(&command)?;
        }
        self.deliver_finished();
        // Who is up and who leads changes only with faults and elections, above.
        let parts = self.view_parts();
        let mut inboxes: Vec<Inbox> = self.nodes.iter().map(|_| Vec::new()).collect();
        for (from, to, message) in self.network.due(self.now_ms) {
            if let Some(&i) = self.by_name.get(&to) {
                inboxes[i].push((from, message));
            }
        }
        for (i, actions, cache_bytes) in self.run_engines(&parts, inboxes) {
            self.cache_bytes_max = self.cache_bytes_max.max(cache_bytes);
            self.carry_out(i, actions);
        }
        self.run_compute();
        Ok(())
    }

    /// Feeds every up node its messages, lets it observe the state and
    /// collects its actions. Nodes are independent within a step (what they
    /// send arrives in a later step), so when several have messages their
    /// engines run on the configured threads; the actions come back in node
    /// order, so the outcome does not depend on the thread count.
    fn run_engines(
        &mut self,
        parts: &ViewParts,
        inboxes: Vec<Inbox>,
    ) -> Vec<(usize, Vec<Action>, usize)> {
        let busy = inboxes.iter().filter(|m| !m.is_empty()).count();
        let threads = if busy >= 2 { self.config.threads } else { 1 };
        let (state, now_ms) = (&self.state, self.now_ms);
        let mut work: Vec<(usize, &mut SimNode, Inbox)> = self
            .nodes
            .iter_mut()
            .zip(inboxes)
            .enumerate()
            .filter(|(_, (node, _))| node.up)
            .map(|(i, (node, inbox))| (i, node, inbox))
            .collect();
        crate::parallel::map_in_threads(&mut work, threads, |(i, node, inbox)| {
            let view = parts.view(state, now_ms);
            for (from, message) in inbox.drain(..) {
                node.engine.on_message(&from, message, &view);
            }
            node.engine.observe(&view);
            let actions = node.engine.take_actions(&view);
            (*i, actions, node.engine.cache_bytes())
        })
    }

    fn view_parts(&self) -> ViewParts {
        let alive = self
            .nodes
            .iter()
            .filter(|n| n.up)
            .filter_map(|n| self.roles.get(&n.name).map(|r| (n.name.clone(), r.clone())))
            .collect();
        let leader = self
            .leader
            .filter(|_| self.now_ms >= self.leader_since_ms)
            .map(|i| self.nodes[i].name.clone());
        ViewParts { alive, leader }
    }

    fn elect(&mut self) {
        let current_up = self.leader.is_some_and(|i| self.nodes[i].up);
        if current_up {
            return;
        }
        let committee = self.nodes.len().min(COMMITTEE_MAX);
        let majority_up = self.nodes[..committee].iter().filter(|n| n.up).count() * 2 > committee;
        self.leader = if majority_up {
            (0..committee).find(|i| self.nodes[*i].up)
        } else {
            None
        };
        self.leader_since_ms = self.now_ms + ELECTION_MS;
        // Proposals the old leader had not committed are lost with it.
        self.proposals.clear();
    }

    fn apply_faults(&mut self) {
        let events = self
            .network
            .faults_due(self.now_ms, &self.names, &mut self.rng);
        for (node, up) in events {
            if node >= self.nodes.len() || self.nodes[node].up == up {
                continue;
            }
            if up {
                // A restarted node keeps its data and keys but nothing it held in memory.
                let n = &mut self.nodes[node];
                let mut engine = NodeEngine::new(
                    n.name.clone(),
                    n.identity.clone(),
                    engine_config(&self.config, node, self.now_ms),
                );
                if let Some(accesses_max) = self.cache_accesses_max {
                    engine.record_cache_accesses(accesses_max);
                }
                let mut old = std::mem::replace(&mut n.engine, engine);
                if let Some(log) = old.take_cache_access_log() {
                    self.cache_logs_ended.push((node, log));
                }
                n.up = true;
            } else {
                self.crashes += 1;
                self.nodes[node].up = false;
                self.pending.retain(|(_, i, _)| *i != node);
            }
        }
    }

    fn carry_out(&mut self, i: usize, actions: Vec<Action>) {
        let from = self.nodes[i].name.clone();
        for action in actions {
            match action {
                Action::Send { to, message } => {
                    self.check(|c| c.observe_message(&message));
                    self.network.send(&from, &to, message, self.now_ms);
                }
                Action::Propose(command) => {
                    if self.leader == Some(i) && self.now_ms >= self.leader_since_ms {
                        self.proposals.push((self.now_ms + COMMIT_MS, *command));
                    } else if let Some(l) = self.leader {
                        // Forwarded to the leader: one network hop more.
                        let delay = self.network.latency(&mut self.rng);
                        if self.nodes[l].up {
                            self.proposals
                                .push((self.now_ms + COMMIT_MS + delay, *command));
                        }
                    }
                }
                Action::BuildInitial { job, spec, weights } => {
                    let result = self.nodes[i]
                        .worker
                        .initial(&spec, weights.as_deref())
                        .map_err(|e| e.to_string());
                    if let Ok(params) = &result {
                        let initial = GlobalModel {
                            params: params.clone(),
                            server: Default::default(),
                        };
                        self.check(|c| c.observe_model(&initial));
                    }
                    self.pending
                        .push((self.now_ms + STEP_MS, i, Finished::Initial(job, result)));
                }
                Action::Train(task) => self.train_queue.push((i, task)),
                Action::Combine(task) => {
                    let digest = task.inputs_digest;
                    let result = self.nodes[i]
                        .worker
                        .combine(&task)
                        .map_err(|e| e.to_string());
                    if let Ok(model) = &result {
                        self.check(|c| c.observe_model(&model.model));
                    }
                    self.pending.push((
                        self.now_ms + STEP_MS,
                        i,
                        Finished::Combined(task.key, digest, result),
                    ));
                }
            }
        }
    }

    /// Runs the training tasks queued this step on worker threads; results
    /// come back in node order, so the run does not depend on thread timing.
    fn run_compute(&mut self) {
        if self.train_queue.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut queue = std::mem::take(&mut self.train_queue);
        queue.sort_by_key(|(i, _)| *i);
        let mut by_node: BTreeMap<usize, Vec<TrainTask>> = BTreeMap::new();
        for (i, task) in queue {
            by_node.entry(i).or_default().push(task);
        }
        let mut work: Vec<(usize, &mut LocalWorker, Vec<TrainTask>)> = self
            .nodes
            .iter_mut()
            .enumerate()
            .filter_map(|(i, n)| by_node.remove(&i).map(|t| (i, &mut n.worker, t)))
            .collect();
        let results: Vec<Vec<TrainedBy>> = crate::parallel::map_in_threads(
            &mut work,
            self.config.threads,
            |(i, worker, tasks)| {
                tasks
                    .iter()
                    .map(|task| {
                        let result = worker.train(task).map_err(|e| e.to_string());
                        (*i, task.key.clone(), result)
                    })
                    .collect()
            },
        );
        for (i, key, result) in results.into_iter().flatten() {
            self.pending
                .push((self.now_ms + TRAIN_MS, i, Finished::Trained(key, result)));
        }
        self.training_wall_ms += started.elapsed().as_millis() as u64;
    }

    fn deliver_finished(&mut self) {
        let now = self.now_ms;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(t, _, _)| *t <= now);
        self.pending = later;
        for (_, i, finished) in due {
            if !self.nodes[i].up {
                continue;
            }
            let engine = &mut self.nodes[i].engine;
            match finished {
                Finished::Trained(key, result) => engine.on_trained(&key, result),
                Finished::Combined(key, digest, result) => engine.on_combined(&key, digest, result),
                Finished::Initial(job, result) => engine.on_initial(&job, result),
            }
        }
    }
}

/// Messages due at one node in one step, with their senders.
type Inbox = Vec<(NodeId, RoundMessage)>;

/// A training result with the node that trained it.
type TrainedBy = (usize, RoundKey, Result<TrainedUpdate, String>);

struct ViewParts {
    alive: BTreeMap<NodeId, BTreeSet<Role>>,
    leader: Option<NodeId>,
}

impl ViewParts {
    fn view<'a>(&'a self, state: &'a MeshState, now_ms: u64) -> View<'a> {
        View {
            state,
            leader: self.leader.as_ref(),
            alive: &self.alive,
            zones: None,
            now_ms,
        }
    }
}

fn engine_config(config: &MeshSimConfig, node: usize, restarted_at_ms: u64) -> EngineConfig {
    let mut c = EngineConfig::new(
        "sim",
        config.seed ^ (node as u64).wrapping_mul(0x9E37_79B9) ^ restarted_at_ms,
    );
    c.cache_capacity_bytes = 256 * 1024 * 1024;
    c.phase_timeout_ms = 2_000;
    c.fetch_retry_ms = 500;
    c.retry_ms = 500;
    c.abort_grace_ms = 3_000;
    c
}
