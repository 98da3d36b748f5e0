//! The consensus node: one committee member (voter or learner) with its
//! openraft core, redb store, transport, certificate collector, self-healing
//! controller and metrics, behind the small API the node runtime uses.
//!
//! ```text
//!   propose(cmd) ──► raft.client_write ──(not leader)──► Forward to leader ──► receipt
//!   handle_rpc(from, bytes) ──► decode (bounded) ──► append / vote / pre-vote /
//!                                 snapshot chunk / forwarded write / statement
//!   background tasks: metrics watcher (and compaction by bytes),
//!                     certificate signer, self-healing controller
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mesh_security::identity::NodeIdentity;
use openraft::errors::{ClientWriteError, InitializeError, LinearizableReadError, RaftError};
use openraft::rt::watch::WatchReceiver;
use openraft::{Config, SnapshotPolicy};
use prometheus_client::registry::Registry;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::backoff::Backoffs;
use crate::certificate::{
    check_against_local, verify_certificate, CertificateCollector, CertificateError,
    CollectOutcome, CommitCertificate, CommitStatement, Evidence, SignedStatement, VoterKeys,
};
use crate::command::{Command, NodeId};
use crate::committee::{self, Candidate};
use crate::error::ConsensusError;
use crate::follow::CertifiedState;
use crate::metrics::ConsensusMetrics;
use crate::network::{
    self, NetworkFactory, RaftTransport, RemoteFailure, RpcRequest, RpcResponse, SnapshotChunk,
    SNAPSHOT_CHUNK_BYTES,
};
use crate::snapshot;
use crate::state::MeshState;
use crate::store::{self, LogStore, StateMachineStore, SNAPSHOT_BYTES_MAX};
use crate::types::{CommitReceipt, MemberId, MemberInfo, Raft, Snapshot, TypeConfig};

/// Most senders with a snapshot transfer in progress at once.
const SNAPSHOT_ASSEMBLIES_MAX: usize = 4;
/// Most evidence keys remembered to avoid proposing the same evidence twice.
const EVIDENCE_SEEN_MAX: usize = 4096;
/// How often [`ConsensusNode::failure`] looks at the Raft core.
const FAILURE_CHECK_MS: u64 = 250;
/// State bundles a voter keeps of the statements it signed lately, waiting
/// for a certificate over one of them.
pub const SIGNED_BUNDLES_MAX: usize = 8;
/// Buffered certificates per subscriber of [`ConsensusNode::certificates`].
const CERTIFICATE_CHANNEL_LEN: usize = 64;

/// How a consensus node runs.
#[derive(Clone, Debug)]
pub struct ConsensusConfig {
    /// Where the transport reaches this node (recorded in the membership).
    pub address: String,
    /// Failure domain this node declares.
    pub zone: Option<String>,
    /// Directory of the redb store (created if missing).
    pub data_dir: PathBuf,
    /// The mesh's id; commit statements name it.
    pub mesh_id: String,
    /// Leader heartbeat interval, in milliseconds.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout, in milliseconds.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout, in milliseconds.
    pub election_timeout_max_ms: u64,
    /// Timeout of one RPC, in milliseconds.
    pub rpc_timeout_ms: u64,
    /// Most entries in one append-entries RPC (and so in one follower fsync).
    pub max_payload_entries: u64,
    /// Build a snapshot (and compact the log) after this many entries.
    pub snapshot_every_entries: u64,
    /// Build a snapshot when the entries applied since the last one exceed this many bytes.
    pub snapshot_max_log_bytes: u64,
    /// Entries kept in the log behind a snapshot (lets slow followers catch up by log).
    pub log_kept_after_snapshot: u64,
    /// A voter unreachable longer than this is replaced, in milliseconds.
    pub voter_down_limit_ms: u64,
    /// Whether the leader replaces unreachable voters by itself.
    pub self_healing: bool,
    /// Whether voters sign commit statements and assemble certificates.
    pub certificates: bool,
    /// Least time between two statements this voter signs, in milliseconds.
    pub certificate_interval_ms: u64,
    /// Longest a proposal may take, forwarding and retries included, in milliseconds.
    pub propose_timeout_ms: u64,
}

impl ConsensusConfig {
    /// Defaults for a LAN committee: 50 ms heartbeats, 300-600 ms elections,
    /// snapshots every 10,000 entries or 64 MiB, voters replaced after 5 s.
    pub fn new(data_dir: impl Into<PathBuf>, mesh_id: impl Into<String>) -> Self {
        Self {
            address: String::new(),
            zone: None,
            data_dir: data_dir.into(),
            mesh_id: mesh_id.into(),
            heartbeat_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            rpc_timeout_ms: 1_000,
            max_payload_entries: 2_048,
            snapshot_every_entries: 10_000,
            snapshot_max_log_bytes: 64 * 1024 * 1024,
            log_kept_after_snapshot: 1_000,
            voter_down_limit_ms: 5_000,
            self_healing: true,
            certificates: true,
            certificate_interval_ms: 50,
            propose_timeout_ms: 10_000,
        }
    }

    fn raft_config(&self) -> Result<Config, ConsensusError> {
        let config = Config {
            cluster_name: self.mesh_id.clone(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            max_payload_entries: self.max_payload_entries,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            max_in_snapshot_log_to_keep: self.log_kept_after_snapshot,
            install_snapshot_timeout: self.rpc_timeout_ms,
            enable_pre_vote: Some(true),
            broadcast_submitted_on_append: Some(true),
            ..Config::default()
        };
        config
            .validate()
            .map_err(|e| ConsensusError::Config(e.to_string()))
    }
}

struct Assembly {
    digest: [u8; 32],
    total_bytes: u64,
    buf: Vec<u8>,
}

struct Inner {
    id: MemberId,
    info: MemberInfo,
    config: ConsensusConfig,
    identity: NodeIdentity,
    raft: Raft,
    sm: StateMachineStore,
    log: LogStore,
    transport: Arc<dyn RaftTransport>,
    metrics: ConsensusMetrics,
    /// This node's standing: sealed, or rejoining after losing state.
    guard: rejoin::Guard,
    /// Members that refused this node's RPCs as rejoining, or whose log
    /// went back (for the leader).
    rejoins: Arc<RejoinRequests>,
    /// Per-member backoff and what each member matched (see `backoff.rs`).
    backoffs: Arc<Backoffs>,
    assemblies: Mutex<HashMap<MemberId, Assembly>>,
    collector: Mutex<CertificateCollector>,
    certificates: broadcast::Sender<CommitCertificate>,
    latest_certificate: Mutex<Option<CommitCertificate>>,
    /// The state bundles this voter signed lately: (index, digest, bytes).
    signed_bundles: Mutex<VecDeque<SignedBundle>>,
    /// The newest certificate with the state it certifies, for followers.
    certified_state: Mutex<Option<CertifiedState>>,
    evidence_seen: Mutex<BTreeSet<(MemberId, u64, u8)>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    /// This process's proposal session ([`Command::Once`]).
    session: u64,
    /// The next proposal number in the session.
    next_seq: AtomicU64,
    /// When this node last accepted an append (heartbeats included) from a
    /// leader; see [`status`].
    leader_contact: Mutex<Option<Instant>>,
}

/// The state bundle of a statement this voter signed.
struct SignedBundle {
    index: u64,
    digest: [u8; 32],
    bytes: Arc<Vec<u8>>,
}

/// A proposal session id unique to this process start: the member id, the
/// wall clock in nanoseconds and the process id, hashed.
fn proposal_session(id: MemberId) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut hasher = blake3::Hasher::new();
    hasher.update(&id.0.to_le_bytes());
    hasher.update(&nanos.to_le_bytes());
    hasher.update(&std::process::id().to_le_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One committee member. Cheap to clone; clones share the node.
#[derive(Clone)]
pub struct ConsensusNode {
    inner: Arc<Inner>,
}

impl ConsensusNode {
    /// Opens the store under `config.data_dir`, starts the Raft core and the
    /// background tasks, and registers the metrics. A node that was a member
    /// before rejoins from its stored log; a fresh one waits for
    /// [`Self::bootstrap`] or for a leader to add it.
    pub async fn open(
        config: ConsensusConfig,
        identity: NodeIdentity,
        transport: Arc<dyn RaftTransport>,
        registry: &mut Registry,
    ) -> Result<Self, ConsensusError> {
        let raft_config = Arc::new(config.raft_config()?);
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            ConsensusError::Store(crate::StoreError::Open(format!(
                "{}: {e}",
                config.data_dir.display()
            )))
        })?;
        let (log, sm) = store::open(&config.data_dir.join(store::STORE_FILE))?;
        let (guard, lost) = rejoin::Guard::open(&config.data_dir, log.incarnation())?;
        let info = MemberInfo::new(
            &identity.node_id(),
            config.address.clone(),
            config.zone.clone(),
        );
        let id = info.member_id();
        let metrics = ConsensusMetrics::register(registry);
        let rejoins = Arc::new(RejoinRequests::default());
        let backoffs = Arc::new(Backoffs::new(metrics.replication_backoffs.clone()));
        let factory = NetworkFactory {
            transport: transport.clone(),
            timeout: Duration::from_millis(config.rpc_timeout_ms),
            backoffs: backoffs.clone(),
            rejoins: rejoins.clone(),
        };
        let raft = Raft::new(id, raft_config, factory, log.clone(), sm.clone())
            .await
            .map_err(|e| ConsensusError::Stopped(e.to_string()))?;
        if let Some(why) = &lost {
            tracing::warn!(reason = %why, "raft state lost: this node neither votes nor acknowledges appends until the leader removes it and it has caught up as a learner");
        }
        if guard.is_rejoining() {
            raft.runtime_config().elect(false);
            metrics.rejoining.set(1);
        }
        let collector = CertificateCollector::new(config.mesh_id.clone(), VoterKeys::new());
        let node = Self {
            inner: Arc::new(Inner {
                id,
                info,
                config,
                identity,
                raft,
                sm,
                log,
                transport,
                metrics,
                guard,
                rejoins,
                backoffs,
                assemblies: Mutex::new(HashMap::new()),
                collector: Mutex::new(collector),
                certificates: broadcast::channel(CERTIFICATE_CHANNEL_LEN).0,
                latest_certificate: Mutex::new(None),
                signed_bundles: Mutex::new(VecDeque::new()),
                certified_state: Mutex::new(None),
                evidence_seen: Mutex::new(BTreeSet::new()),
                tasks: Mutex::new(Vec::new()),
                stop: watch::channel(false).0,
                session: proposal_session(id),
                next_seq: AtomicU64::new(0),
                leader_contact: Mutex::new(None),
            }),
        };
        node.spawn_tasks();
        Ok(node)
    }

    /// This node's Raft id.
    pub fn id(&self) -> MemberId {
        self.inner.id
    }

    /// This node's membership record.
    pub fn info(&self) -> &MemberInfo {
        &self.inner.info
    }

    /// The underlying openraft handle (for advanced use and tests).
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// Initializes a new committee with `members` as its voters. Idempotent:
    /// returns `Ok` if this node already belongs to an initialized committee,
    /// and does nothing on a node rejoining after losing its state.
    pub async fn bootstrap(
        &self,
        members: BTreeMap<MemberId, MemberInfo>,
    ) -> Result<(), ConsensusError> {
        if self.is_initialized().await? {
            return Ok(());
        }
        if self.inner.guard.is_rejoining() {
            // An empty store under an old seal is a member that lost its
            // state, not the start of a new committee: it waits for the leader.
            tracing::debug!("no bootstrap while rejoining after losing raft state");
            return Ok(());
        }
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ConsensusError::Refused(e.to_string())),
        }
    }

    async fn is_initialized(&self) -> Result<bool, ConsensusError> {
        self.inner
            .raft
            .is_initialized()
            .await
            .map_err(|e| ConsensusError::Stopped(e.to_string()))
    }

    /// Commits `command` and returns its receipt once it is applied on the
    /// leader. Any node may call it: a follower forwards the write to the
    /// leader, and retries across elections until `propose_timeout_ms`.
    pub async fn propose(&self, command: Command) -> Result<CommitReceipt, ConsensusError> {
        let started = Instant::now();
        // Every retry below sends this same numbered proposal: it takes effect once.
        let command = Command::Once {
            session: self.inner.session,
            seq: self.inner.next_seq.fetch_add(1, Ordering::Relaxed),
            command: Box::new(command),
        };
        let limit = Duration::from_millis(self.inner.config.propose_timeout_ms);
        let result = tokio::time::timeout(limit, self.propose_loop(command, started + limit))
            .await
            .unwrap_or(Err(ConsensusError::Timeout {
                timeout_ms: self.inner.config.propose_timeout_ms,
            }));
        if result.is_ok() {
            self.inner
                .metrics
                .proposal_latency_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        result
    }

    async fn propose_loop(
        &self,
        command: Command,
        deadline: Instant,
    ) -> Result<CommitReceipt, ConsensusError> {
        let pause = Duration::from_millis(self.inner.config.heartbeat_ms.max(10));
        let mut last_error = ConsensusError::NoLeader;
        while Instant::now() < deadline {
            let leader = match self.write_local(command.clone()).await {
                Ok(receipt) => return Ok(receipt),
                Err(Routed::Leader(leader)) => leader,
                Err(Routed::Fail(e)) => return Err(e),
            };
            match leader {
                Some(leader) if leader != self.inner.id => {
                    match self.forward(leader, &command).await {
                        Ok(receipt) => return Ok(receipt),
                        Err(e) => last_error = e,
                    }
                }
                _ => last_error = ConsensusError::NoLeader,
            }
            tokio::time::sleep(pause).await;
        }
        Err(last_error)
    }

    /// Writes through the local Raft core; `Routed::Leader` if another node leads.
    async fn write_local(&self, command: Command) -> Result<CommitReceipt, Routed> {
        match self.inner.raft.client_write(command).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(Routed::Leader(f.leader_id))
            }
            Err(RaftError::APIError(e)) => {
                // The entry may have been discarded by a new leader: route again.
                tracing::debug!(error = %e, "client write not accepted");
                Err(Routed::Leader(None))
            }
            Err(RaftError::Fatal(e)) => Err(Routed::Fail(ConsensusError::Stopped(e.to_string()))),
        }
    }

    async fn forward(
        &self,
        leader: MemberId,
        command: &Command,
    ) -> Result<CommitReceipt, ConsensusError> {
        let route = self.member_info(leader).ok_or(ConsensusError::NoLeader)?;
        let timeout = Duration::from_millis(self.inner.config.rpc_timeout_ms.saturating_mul(4));
        let request = RpcRequest::Forward(command.clone());
        match network::call(
            self.inner.transport.as_ref(),
            leader,
            &route,
            &request,
            timeout,
        )
        .await
        {
            Ok(RpcResponse::Committed(receipt)) => Ok(receipt),
            Ok(RpcResponse::Failed(RemoteFailure::NotLeader { .. })) => {
                Err(ConsensusError::NoLeader)
            }
            Ok(other) => Err(ConsensusError::Forward(format!(
                "unexpected answer {other:?}"
            ))),
            Err(e) => Err(ConsensusError::Forward(e.to_string())),
        }
    }

    /// The membership record of `id`, if it is a member.
    pub fn member_info(&self, id: MemberId) -> Option<MemberInfo> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        m.membership_config.get_node(&id).cloned()
    }

    /// Adds `info`'s node as a learner (a non-voter that replicates the log);
    /// waits until it has caught up if `blocking`. Call on any node; it must
    /// reach the leader.
    pub async fn add_learner(
        &self,
        info: MemberInfo,
        blocking: bool,
    ) -> Result<(), ConsensusError> {
        let id = info.member_id();
        self.inner
            .raft
            .add_learner(id, info, blocking)
            .await
            .map(|_| ())
            .map_err(membership_error)
    }

    /// Makes `voters` the voter set (joint consensus); removed voters stay learners.
    pub async fn change_voters(&self, voters: BTreeSet<MemberId>) -> Result<(), ConsensusError> {
        self.inner
            .raft
            .change_membership(voters, true)
            .await
            .map(|_| ())
            .map_err(membership_error)
    }

    /// Replaces the voter set by `voters` and drops the replaced voters from
    /// the membership (a dead member left as a learner would pin the log:
    /// openraft keeps every entry a member's replication still needs).
    pub(crate) async fn replace_voters(
        &self,
        voters: BTreeSet<MemberId>,
    ) -> Result<(), ConsensusError> {
        self.inner
            .raft
            .change_membership(voters, false)
            .await
            .map(|_| ())
            .map_err(membership_error)
    }

    /// Removes learners (non-voters) from the membership; the node runtime
    /// re-adds a returning node with [`Self::add_learner`].
    pub async fn remove_learners(&self, ids: BTreeSet<MemberId>) -> Result<(), ConsensusError> {
        self.inner
            .raft
            .change_membership(openraft::ChangeMembers::RemoveNodes(ids), false)
            .await
            .map(|_| ())
            .map_err(membership_error)
    }

    /// Runs `f` on the applied mesh state (this node's copy; it may lag the
    /// leader by the entries not yet replicated here).
    pub async fn read_state<R>(&self, f: impl FnOnce(&MeshState) -> R) -> R {
        self.inner.sm.read(f)
    }

    /// Runs `f` on the applied state once a read there is linearizable: this
    /// node leads, a quorum confirmed it still did after the read began
    /// (Raft's read index), and every entry committed before then is applied.
    /// Returns the read index with `f`'s result; on any other node
    /// [`ConsensusError::NotLeader`], naming the leader it knows.
    pub async fn read_linearizable<R>(
        &self,
        f: impl FnOnce(&MeshState) -> R,
    ) -> Result<(u64, R), ConsensusError> {
        let raft = &self.inner.raft;
        let limit = Duration::from_millis(self.inner.config.propose_timeout_ms);
        let confirmed = tokio::time::timeout(
            limit,
            raft.ensure_linearizable(openraft::ReadPolicy::ReadIndex),
        )
        .await
        .map_err(|_| ConsensusError::Timeout {
            timeout_ms: self.inner.config.propose_timeout_ms,
        })?;
        match confirmed {
            Ok(read) => {
                let index = read.log_id().index;
                Ok((index, self.inner.sm.read(f)))
            }
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(to))) => {
                Err(ConsensusError::NotLeader {
                    leader: to.leader_id,
                })
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(e))) => {
                tracing::debug!(error = %e, "read index not confirmed by a quorum");
                Err(ConsensusError::NoLeader)
            }
            Err(RaftError::Fatal(e)) => Err(ConsensusError::Stopped(e.to_string())),
        }
    }

    /// Resolves once the Raft core has stopped on its own, with why: a
    /// storage failure (a full disk, an I/O error) stops it for good, and the
    /// node must then stop too rather than stay up without a committee
    /// member inside. Never resolves while the core runs.
    pub async fn failure(&self) -> ConsensusError {
        let mut tick = tokio::time::interval(Duration::from_millis(FAILURE_CHECK_MS));
        loop {
            tick.tick().await;
            if let Err(fatal) = &self.inner.raft.metrics().borrow_watched().running_state {
                return ConsensusError::Stopped(fatal.to_string());
            }
        }
    }

    /// Subscribes to the commit certificates this node assembles (to gossip them).
    pub fn certificates(&self) -> broadcast::Receiver<CommitCertificate> {
        self.inner.certificates.subscribe()
    }

    /// The newest certificate this node assembled or verified.
    pub fn latest_certificate(&self) -> Option<CommitCertificate> {
        lock(&self.inner.latest_certificate).clone()
    }

    /// The newest commit certificate this node holds the certified state
    /// of, with that state: what it serves to nodes that follow the state
    /// without the log ([`crate::follow`]).
    pub fn certified_state(&self) -> Option<CertifiedState> {
        lock(&self.inner.certified_state).clone()
    }

    /// The commands committed after index `after` up to `upto` with their
    /// indices, for a follower that holds the state at `after`; `None` when
    /// the log no longer holds them all or there are more than `entries_max`.
    pub fn commands_between(
        &self,
        after: u64,
        upto: u64,
        entries_max: usize,
    ) -> Option<Vec<(u64, Command)>> {
        self.inner.log.commands_between(after, upto, entries_max)
    }

    /// Keeps the bundle of a statement this voter signed, the newest
    /// [`SIGNED_BUNDLES_MAX`].
    pub(crate) fn keep_signed_bundle(&self, index: u64, digest: [u8; 32], bundle: Arc<Vec<u8>>) {
        let mut kept = lock(&self.inner.signed_bundles);
        if kept.len() >= SIGNED_BUNDLES_MAX {
            kept.pop_front();
        }
        kept.push_back(SignedBundle {
            index,
            digest,
            bytes: bundle,
        });
    }

    /// Holds `cert` with its state when this node has the bundle it
    /// certifies: one it signed, or (on a node that does not sign) its own
    /// state when that is at the certified index.
    fn hold_certified_state(&self, cert: &CommitCertificate) {
        let statement = &cert.statement;
        let held = lock(&self.inner.certified_state)
            .as_ref()
            .map(CertifiedState::index);
        if held.is_some_and(|held| held >= statement.index) {
            return;
        }
        let signed = lock(&self.inner.signed_bundles)
            .iter()
            .find(|b| b.index == statement.index && b.digest == statement.state_digest)
            .map(|b| b.bytes.clone());
        let bundle = signed.or_else(|| {
            let (_, bundle) = self.inner.sm.latest_bundle_at(Some(statement.index))?;
            let digest = crate::follow::bundle_digest(&bundle);
            (digest == statement.state_digest).then(|| Arc::new(bundle))
        });
        if let Some(bundle) = bundle {
            *lock(&self.inner.certified_state) = Some(CertifiedState {
                certificate: cert.clone(),
                bundle,
            });
        }
    }

    /// The current voters with their public keys (what certificates are checked against).
    pub fn voter_keys(&self) -> VoterKeys {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        crate::certificate::voter_keys_of(m.membership_config.membership())
    }

    /// Checks a gossiped certificate against the current voters and the local
    /// state. Returns `Ok(true)` if it matches the local applied entry,
    /// `Ok(false)` if the entry is not known locally (yet, or any more). A
    /// valid certificate that disagrees with the local state produces evidence
    /// against its signers, proposed to the log.
    pub async fn accept_certificate(
        &self,
        cert: &CommitCertificate,
    ) -> Result<bool, CertificateError> {
        if cert.statement.mesh_id != self.inner.config.mesh_id {
            return Err(CertificateError::WrongMesh(cert.statement.mesh_id.clone()));
        }
        let voters = self.voter_keys();
        let verified = verify_certificate(cert, &voters)?;
        self.inner.metrics.certificates.inc();
        let Some(local) = self.inner.sm.applied_record(cert.statement.index) else {
            return Ok(false);
        };
        let mut matches = true;
        for (signer, signature) in verified.iter().filter_map(|i| cert.signatures.get(*i)) {
            let Some(public_key) = voters.get(signer) else {
                continue;
            };
            let signed = SignedStatement {
                statement: cert.statement.clone(),
                signer: *signer,
                public_key: *public_key,
                signature: signature.clone(),
            };
            if let Some(evidence) = check_against_local(&signed, &local) {
                matches = false;
                self.report_evidence(evidence);
            }
        }
        if matches {
            *lock(&self.inner.latest_certificate) = Some(cert.clone());
            self.hold_certified_state(cert);
        }
        Ok(matches)
    }

    /// Handles one signed statement (from a voter, or this node's own).
    pub fn accept_statement(&self, signed: SignedStatement) -> CollectOutcome {
        let voters = self.voter_keys();
        let outcome = {
            let mut collector = lock(&self.inner.collector);
            if collector.voters() != &voters {
                collector.set_voters(voters);
            }
            collector.add(signed.clone())
        };
        match &outcome {
            CollectOutcome::Certified(cert) => {
                self.inner.metrics.certificates.inc();
                *lock(&self.inner.latest_certificate) = Some(cert.clone());
                self.hold_certified_state(cert);
                let _ = self.inner.certificates.send(cert.clone());
            }
            CollectOutcome::Evidence(evidence) => self.report_evidence((**evidence).clone()),
            _ => {}
        }
        if !matches!(outcome, CollectOutcome::Rejected(_)) {
            if let Some(local) = self.inner.sm.applied_record(signed.statement.index) {
                if let Some(evidence) = check_against_local(&signed, &local) {
                    self.report_evidence(evidence);
                }
            }
        }
        outcome
    }

    /// Proposes evidence against a voter to the log (once per voter, index and kind).
    fn report_evidence(&self, evidence: Evidence) {
        let accused = evidence.accused();
        let index = match &evidence {
            Evidence::Equivocation { first, .. } => first.statement.index,
            Evidence::StateHashMismatch { statement, .. } => statement.statement.index,
        };
        let key = (accused, index, evidence.kind() as u8);
        {
            let mut seen = lock(&self.inner.evidence_seen);
            if !seen.insert(key) {
                return;
            }
            while seen.len() > EVIDENCE_SEEN_MAX {
                seen.pop_first();
            }
        }
        let Some(info) = self.member_info(accused) else {
            tracing::warn!(%accused, "evidence against an unknown member dropped");
            return;
        };
        tracing::warn!(%accused, kind = ?evidence.kind(), index, "committing evidence");
        self.inner.metrics.evidence.inc();
        let command = Command::RecordEvidence {
            node: NodeId(info.node_id),
            kind: evidence.kind(),
        };
        let node = self.clone();
        self.spawn(async move {
            if let Err(e) = node.propose(command).await {
                tracing::warn!(error = %e, "evidence could not be committed");
            }
        });
    }

    /// Handles one inbound RPC from `from` (the authenticated sender) and
    /// returns the encoded answer. Never panics on malformed input.
    pub async fn handle_rpc(&self, from: MemberId, payload: &[u8]) -> Vec<u8> {
        let answer = match RpcRequest::decode(payload) {
            Ok(request) => self.serve(from, request).await,
            Err(reason) => RpcResponse::Failed(RemoteFailure::Malformed(reason)),
        };
        answer.encode()
    }

    async fn serve(&self, from: MemberId, request: RpcRequest) -> RpcResponse {
        let raft = &self.inner.raft;
        let stopped =
            |e: &dyn std::fmt::Display| RpcResponse::Failed(RemoteFailure::Stopped(e.to_string()));
        if !self.inner.guard.admits(&request) {
            self.inner.metrics.rejoin_refusals.inc();
            return RpcResponse::Failed(RemoteFailure::Rejoining);
        }
        match request {
            RpcRequest::Append(req) => {
                if let Err(reason) = check_append(&req) {
                    return RpcResponse::Failed(RemoteFailure::Malformed(reason));
                }
                match raft.append_entries(req).await {
                    Ok(r) => {
                        // Anything but a higher vote means the sender leads now.
                        if !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
                            *lock(&self.inner.leader_contact) = Some(Instant::now());
                        }
                        RpcResponse::Append(r)
                    }
                    Err(e) => stopped(&e),
                }
            }
            RpcRequest::Vote(req) => match raft.vote(req).await {
                Ok(r) => RpcResponse::Vote(r),
                Err(e) => stopped(&e),
            },
            RpcRequest::PreVote(req) => match raft.pre_vote(req).await {
                Ok(r) => RpcResponse::Vote(r),
                Err(e) => stopped(&e),
            },
            RpcRequest::SnapshotChunk(chunk) => self.snapshot_chunk(from, chunk).await,
            RpcRequest::Forward(_) if self.member_info(from).is_none() => RpcResponse::Failed(
                RemoteFailure::Refused("writes are accepted from committee members only".into()),
            ),
            RpcRequest::Forward(command) => match self.write_local(command).await {
                Ok(receipt) => RpcResponse::Committed(receipt),
                Err(Routed::Leader(leader)) => {
                    RpcResponse::Failed(RemoteFailure::NotLeader { leader })
                }
                Err(Routed::Fail(e)) => stopped(&e),
            },
            RpcRequest::Statement(signed) => match self.accept_statement(signed) {
                CollectOutcome::Rejected(e) => {
                    RpcResponse::Failed(RemoteFailure::Refused(e.to_string()))
                }
                _ => RpcResponse::Ack,
            },
            RpcRequest::RejoinGrant(grant) => self.accept_grant(from, grant),
        }
    }

    async fn snapshot_chunk(&self, from: MemberId, chunk: SnapshotChunk) -> RpcResponse {
        let refuse = |r: String| RpcResponse::Failed(RemoteFailure::Malformed(r));
        let total = chunk.total_bytes;
        if total > SNAPSHOT_BYTES_MAX as u64 || chunk.data.len() > SNAPSHOT_CHUNK_BYTES {
            return refuse(format!("snapshot of {total} bytes or chunk too large"));
        }
        let complete = {
            let mut assemblies = lock(&self.inner.assemblies);
            if chunk.offset == 0 {
                if !assemblies.contains_key(&from) && assemblies.len() >= SNAPSHOT_ASSEMBLIES_MAX {
                    return refuse("too many snapshot transfers in progress".into());
                }
                assemblies.insert(
                    from,
                    Assembly {
                        digest: chunk.digest,
                        total_bytes: total,
                        buf: Vec::new(),
                    },
                );
            }
            let Some(a) = assemblies.get_mut(&from) else {
                return refuse("snapshot chunk without a start".into());
            };
            let fits = a.buf.len() as u64 + chunk.data.len() as u64 <= a.total_bytes;
            if a.digest != chunk.digest || a.buf.len() as u64 != chunk.offset || !fits {
                assemblies.remove(&from);
                return refuse("snapshot chunk out of order".into());
            }
            a.buf.extend_from_slice(&chunk.data);
            if (a.buf.len() as u64) < a.total_bytes {
                return RpcResponse::Snapshot(None);
            }
            assemblies.remove(&from).map(|a| a.buf)
        };
        let data = complete.unwrap_or_default();
        if *blake3::hash(&data).as_bytes() != chunk.digest {
            return refuse("snapshot digest mismatch".into());
        }
        if let Err(e) = snapshot::decode_bounded(&data, SNAPSHOT_BYTES_MAX) {
            return refuse(format!("snapshot does not decode: {e}"));
        }
        let beyond_vote = chunk
            .meta
            .last_log_id
            .is_some_and(|l| l.leader_id.term > chunk.vote.leader_id().term);
        if beyond_vote {
            return refuse("snapshot is newer than the leader's vote".into());
        }
        let snapshot = Snapshot {
            meta: chunk.meta,
            snapshot: data,
        };
        match self
            .inner
            .raft
            .install_full_snapshot(chunk.vote, snapshot)
            .await
        {
            Ok(r) => RpcResponse::Snapshot(Some(r)),
            Err(e) => RpcResponse::Failed(RemoteFailure::Stopped(e.to_string())),
        }
    }

    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(fut);
        let mut tasks = lock(&self.inner.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    fn spawn_tasks(&self) {
        let weak = Arc::downgrade(&self.inner);
        let stop = self.inner.stop.subscribe();
        self.spawn(tasks::watch_metrics(weak.clone(), stop.clone()));
        self.spawn(rejoin::grant_rejoins(weak.clone(), stop.clone()));
        if self.inner.config.certificates {
            self.spawn(tasks::sign_statements(weak.clone(), stop.clone()));
        }
        if self.inner.config.self_healing {
            self.spawn(tasks::heal(weak, stop));
        }
    }

    /// Stops the background tasks and the Raft core. The store is closed when
    /// the last clone of this node is dropped.
    pub async fn shutdown(self) -> Result<(), ConsensusError> {
        let _ = self.inner.stop.send(true);
        let tasks: Vec<JoinHandle<()>> = lock(&self.inner.tasks).drain(..).collect();
        for t in tasks {
            t.abort();
        }
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| ConsensusError::Stopped(e.to_string()))
    }
}

enum Routed {
    Leader(Option<MemberId>),
    Fail(ConsensusError),
}

fn membership_error<E: std::fmt::Display>(e: RaftError<TypeConfig, E>) -> ConsensusError {
    match e {
        RaftError::APIError(e) => ConsensusError::Membership(e.to_string()),
        RaftError::Fatal(e) => ConsensusError::Stopped(e.to_string()),
    }
}

/// Rejects append requests no correct leader sends (openraft asserts on some).
fn check_append(req: &openraft::raft::AppendEntriesRequest<TypeConfig>) -> Result<(), String> {
    let term = req.vote.leader_id().term;
    let first = req.prev_log_id.map_or(0, |l| l.index + 1);
    for (expected, e) in (first..).zip(req.entries.iter()) {
        if e.log_id.index != expected || e.log_id.leader_id.term > term {
            return Err("entries are not consecutive or are newer than the vote".into());
        }
    }
    Ok(())
}

mod rejoin;
mod status;
mod tasks;

pub use rejoin::RejoinRequests;
pub use status::{ConsensusStatus, SnapshotStatus};

impl ConsensusNode {
    fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    pub(crate) fn candidates(&self, down: &BTreeSet<MemberId>) -> Vec<Candidate> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<MemberId> = membership.voter_ids().collect();
        let nodes: Vec<(MemberId, MemberInfo)> =
            membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        drop(m);
        self.inner.sm.read(|state| {
            let revoked = state.members().revoked_keys();
            nodes
                .into_iter()
                .map(|(id, info)| Candidate {
                    id,
                    eligible: !revoked.contains(&info.public_key)
                        && !state
                            .reputation()
                            .is_quarantined(&NodeId(info.node_id.clone())),
                    zone: info.zone,
                    healthy: !down.contains(&id),
                    voter: voters.contains(&id),
                })
                .collect()
        })
    }

    pub(crate) fn statement_for(
        &self,
        record: &store::AppliedRecord,
        state_digest: [u8; 32],
    ) -> SignedStatement {
        SignedStatement::sign(
            CommitStatement::from_record(&self.inner.config.mesh_id, record, state_digest),
            &self.inner.identity,
        )
    }
}

/// Choice of voters for an unhealthy committee, exposed for the controller.
pub(crate) fn replacement(candidates: &[Candidate]) -> Option<BTreeSet<MemberId>> {
    committee::replace_unhealthy(candidates)
}
