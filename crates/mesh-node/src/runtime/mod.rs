//! The node process: the async driver that wires the network layer, the
//! committee and the HTTP API together.
//!
//! ```text
//!   mesh-net (NetHandle, NetEvent) ──► Runtime::run select loop ◄── API commands (bounded)
//!        ▲   raft/2 streams ─► ConsensusNode::handle_rpc (one task per stream)
//!        │   certificates   ◄─► gossip topic (signed envelopes)
//!        │   revocations    ◄─► gossip topic (CA-signed, see [`revocations`])
//!        └── NetRaftTransport (pooled streams) ◄── ConsensusNode (openraft + redb)
//!   every tick: publish NodeSnapshot (API reads it), bootstrap check, add learners
//! ```
//!
//! Decisions live in small pure pieces ([`bootstrap`], the API's
//! validation); this module only moves messages between them.

pub mod announce;
pub mod bootstrap;
pub mod credentials;
pub mod forward;
pub mod idle_pool;
pub mod learner_metrics;
pub mod node_metrics;
pub mod presence;
pub mod raft_links;
pub mod raft_transport;
mod renewal;
pub mod revocations;
pub mod round_gate;
pub mod round_metrics;
pub mod rounds;
pub mod scale_metrics;
pub mod state_follow;
pub mod state_source;
mod view;
pub mod weights;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mesh_consensus::{ConsensusConfig, ConsensusNode, ConsensusStatus, MemberInfo};
use mesh_net::keep_alive::ranked_peers;
use mesh_net::{NetConfig, NetEvent, NetHandle, PeerId, TransportKind};
use mesh_security::envelope::{Envelope, MessageKind};
use mesh_security::rbac::{Role, RoleSet};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::api::{
    self, AdminAuth, ApiCommand, ApiLimits, ApiState, CommitView, NodeSnapshot, Proposer,
};
use crate::config::NodeConfig;
pub use bootstrap::BootstrapPlanner;
pub use credentials::Credentials;
use raft_transport::{member_of_peer, serve_raft_links, serve_raft_streams, NetRaftTransport};

/// Gossip topic of commit certificates.
pub const CERTIFICATE_TOPIC: &str = "agent-mesh/consensus/certificates/1";
/// Envelope kind of a gossiped commit certificate.
pub const CERTIFICATE_KIND: MessageKind = MessageKind(0x0111);
/// Largest gossiped certificate envelope decoded (a certificate is a few hundred bytes per voter).
pub const CERTIFICATE_ENVELOPE_BYTES_MAX: usize = 64 * 1024;
/// How often the runtime refreshes its snapshot and runs its checks.
pub const TICK_MS: u64 = 250;
/// Ticks between two looks at the revocation sources (file, committed state).
pub const REVOCATION_TICKS: u64 = 8;
/// How long the committee-capable view must be stable before bootstrapping.
pub const BOOTSTRAP_SETTLE_MS: u64 = 2_000;
/// Most proposals from the API in flight at once.
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 4_096;
/// The file, under the data directory, where a running node says where it is.
pub const NODE_INFO_FILE: &str = "node.json";

/// Why the node could not start or stopped. Starting again after fixing the cause is safe.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Key, certificate or CA files are missing or invalid.
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
    /// A listen or bootstrap address is not a multiaddress.
    #[error("config field {field}: {value:?} is not a multiaddress: {message}")]
    Address {
        /// Which list.
        field: &'static str,
        /// The value.
        value: String,
        /// The parser's message.
        message: String,
    },
    /// The network layer failed to start.
    #[error("network: {0}")]
    Net(#[from] mesh_net::NetError),
    /// The committee store or node failed.
    #[error("consensus: {0}")]
    Consensus(#[from] mesh_consensus::ConsensusError),
    /// The node's private data could not be loaded.
    #[error(transparent)]
    Data(#[from] rounds::DataError),
    /// The HTTPS certificate, key or client CA could not be loaded.
    #[error("HTTPS API: {0}")]
    Tls(#[from] api::tls::TlsError),
    /// The HTTP listener or a data file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Io { what, source }
}

/// What a running node writes to `data_dir/node.json` for scripts and tests.
#[derive(Debug, Serialize)]
pub struct NodeInfo {
    /// The node id (peer id).
    pub peer_id: String,
    /// The process id.
    pub pid: u32,
    /// Base URL of the HTTP API.
    pub http_url: String,
    /// The P2P addresses it listens on.
    pub listen_addrs: Vec<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn parse_addrs(
    field: &'static str,
    values: &[String],
) -> Result<Vec<mesh_net::Multiaddr>, RuntimeError> {
    values
        .iter()
        .map(|value| {
            value
                .parse()
                .map_err(|e: mesh_net::multiaddr::Error| RuntimeError::Address {
                    field,
                    value: value.clone(),
                    message: e.to_string(),
                })
        })
        .collect()
}

/// Builds the network layer's configuration from the node's.
fn net_config(config: &NodeConfig, creds: &Credentials) -> Result<NetConfig, RuntimeError> {
    let mut net = NetConfig::new(
        config.mesh_id.clone(),
        creds.identity.clone(),
        creds.cert_der.clone(),
        creds.verifier.clone(),
    );
    net.listen = parse_addrs("network.listen", &config.network.listen)?;
    net.bootstrap = parse_addrs("network.bootstrap", &config.network.bootstrap)?;
    net.mdns = config.network.mdns;
    net.transport = TransportKind::Network;
    net.target_peers = config.network.target_peers;
    net.kept_peers_max = config.network.target_peers;
    net.limits.established_max = config.network.max_connections;
    net.timing.admission_deadline = Duration::from_millis(config.network.admission_deadline_ms);
    net.timing.admission_attempts = config.network.admission_attempts;
    net.timing.ban_duration = Duration::from_millis(config.network.ban_ms);
    net.seed = config.network.seed;
    net.timing.unused_connection_close = (config.network.unused_connection_close_ms > 0)
        .then(|| Duration::from_millis(config.network.unused_connection_close_ms));
    let external = parse_addrs("nat.external_addresses", &config.nat.external_addresses)?;
    net.nat = config.nat.net_config(external);
    net.versions = config
        .network
        .protocol_versions()
        .map_err(|e| mesh_net::NetError::Config(format!("network.max_protocol_version: {e}")))?;
    Ok(net)
}

/// The node's raft folder (`<data_dir>/raft`); its seal is `<data_dir>/raft.seal`.
pub fn raft_dir(config: &NodeConfig) -> std::path::PathBuf {
    config.data_dir.join("raft")
}

fn consensus_config(config: &NodeConfig, address: String) -> ConsensusConfig {
    let c = &config.consensus;
    let mut out = ConsensusConfig::new(raft_dir(config), config.mesh_id.clone());
    out.address = address;
    out.zone = config.zone.clone();
    out.heartbeat_ms = c.heartbeat_ms;
    out.election_timeout_min_ms = c.election_timeout_min_ms;
    out.election_timeout_max_ms = c.election_timeout_max_ms;
    out.snapshot_every_entries = c.snapshot_every_entries;
    out.voter_down_limit_ms = c.voter_down_limit_ms;
    out
}

/// Listens for direct Raft links and tells peers where; without a TCP
/// listen address, or if the port is taken, Raft stays on swarm streams.
async fn start_raft_link(
    config: &NodeConfig,
    net: &NetHandle,
    consensus: &ConsensusNode,
    stop: watch::Receiver<bool>,
) {
    let port = config.consensus.direct_link_port;
    let Some(bind) = raft_links::link_bind_addr(&config.network.listen, port) else {
        tracing::info!("no TCP listen address; raft goes over swarm streams only");
        return;
    };
    let listener = match net.direct_links().listen(bind).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::warn!(%err, "no direct raft link; raft goes over swarm streams only");
            return;
        }
    };
    let bound = serve_raft_links(net, listener, consensus.clone(), stop.clone());
    tracing::info!(%bound, "direct raft link listening");
    if let Err(err) = raft_links::serve_link_addrs(net, bound, stop) {
        tracing::warn!(%err, "cannot advertise the direct raft link");
    }
}

/// Writes `node.json` atomically (temporary file, then rename).
fn write_node_info(data_dir: &Path, info: &NodeInfo) -> Result<(), RuntimeError> {
    let path = data_dir.join(NODE_INFO_FILE);
    let tmp = data_dir.join(format!("{NODE_INFO_FILE}.tmp"));
    let text = serde_json::to_string_pretty(info).unwrap_or_default();
    std::fs::write(&tmp, text).map_err(io_err(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(io_err(format!("writing {}", path.display())))
}

/// A started node: the pieces the loop drives.
struct Runtime {
    config: NodeConfig,
    creds: Credentials,
    net: NetHandle,
    consensus: Option<ConsensusNode>,
    planner: Option<BootstrapPlanner>,
    admitted: HashMap<PeerId, RoleSet>,
    /// When each admitted peer was admitted (ms since the epoch).
    admitted_ms: HashMap<PeerId, u64>,
    listen_addrs: Vec<String>,
    publish: watch::Sender<Arc<NodeSnapshot>>,
    started: Instant,
    envelope_seq: u64,
    /// Proposes writes forwarded by other nodes (committee nodes only).
    proposer: Option<Proposer>,
    /// Bounds forwarded writes on a node without the committee.
    forwards: Arc<Semaphore>,
    auth: Arc<AdminAuth>,
    revocations: revocations::Revocations,
    ticks: u64,
    rounds: Option<rounds::RoundDriver>,
    round_metrics: round_metrics::RoundMetrics,
    learner_metrics: Option<learner_metrics::LearnerMetrics>,
    node_metrics: node_metrics::NodeMetrics,
    /// When this node announces its zone again.
    announcements: announce::Announcements,
    /// The HTTPS API's certificate (reloaded with the node's).
    api_tls: Option<api::tls::ApiTls>,
    /// When the certificate file was last seen modified.
    cert_modified: renewal::CertModified,
    /// The committee members whose connections the network layer may not
    /// close as unused (Raft streams ride on them).
    protected: BTreeSet<PeerId>,
    /// The committed state followed without the log (nodes without the
    /// committee protocol).
    following: Option<state_follow::StateFollowing>,
}

/// The node's learner from `[learner]`, started on a blocking thread so a
/// learner that cannot start shows in the log at once (it is started again,
/// with backoff, when a round needs it).
fn start_learner(config: mesh_learner::LearnerConfig) -> mesh_learner::SharedLearner {
    let learner = mesh_learner::SupervisedLearner::new(config).shared();
    let starting = learner.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(err) = mesh_learner::supervisor::lock(&starting).start() {
            tracing::warn!(error = %err, "the learner did not start");
        }
    });
    learner
}

/// Builds the models of learner jobs over the node's one learner process.
fn learner_factory(learner: mesh_learner::SharedLearner) -> mesh_round::protocol::LearnerFactory {
    mesh_round::protocol::LearnerFactory(Box::new(move |spec| {
        let model = mesh_learner::LearnerModel::new(learner.clone(), spec.parameters.clone())?;
        Ok(Box::new(model) as Box<dyn mesh_federated::model::Model>)
    }))
}

/// Runs a node until `shutdown` completes, then stops it cleanly.
pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(io_err(format!("creating {}", config.data_dir.display())))?;
    let creds = Credentials::load(&config)?;
    let mut registry = Registry::default();
    let (net, mut events) = mesh_net::spawn(net_config(&config, &creds)?, &mut registry).await?;
    let listen_addrs = wait_for_listen_addrs(&net).await;
    let consensus = if config.consensus.enabled && creds.roles.contains(Role::Committee) {
        let address = listen_addrs.first().cloned().unwrap_or_default();
        let transport = Arc::new(NetRaftTransport::new(
            net.clone(),
            config.consensus.direct_link,
            &mut registry,
        ));
        let cc = consensus_config(&config, address);
        Some(ConsensusNode::open(cc, creds.identity.clone(), transport, &mut registry).await?)
    } else {
        None
    };
    let (stop_streams, streams_stopped) = watch::channel(false);
    if let Some(consensus) = &consensus {
        serve_raft_streams(&net, consensus.clone(), streams_stopped.clone())?;
        if config.consensus.direct_link {
            start_raft_link(&config, &net, consensus, streams_stopped).await;
        }
    }
    for topic in [
        CERTIFICATE_TOPIC,
        revocations::REVOCATION_TOPIC,
        announce::ANNOUNCE_TOPIC,
    ] {
        if let Err(err) = net.subscribe(topic).await {
            tracing::warn!(%err, topic, "cannot subscribe to a gossip topic");
        }
    }
    let planner = consensus.as_ref().map(|c| {
        BootstrapPlanner::new(
            c.info().clone(),
            config.consensus.bootstrap_expect,
            BOOTSTRAP_SETTLE_MS,
            now_ms(),
        )
    });
    let round_metrics = round_metrics::RoundMetrics::new(&mut registry);
    round_metrics::register_adversary(&mut registry, &config.adversary);
    round_metrics::register_cache_policy(&mut registry, config.round.cache_policy);
    let node_metrics = node_metrics::NodeMetrics::new(&mut registry);
    let learner = config.learner.clone().map(start_learner);
    let learner_metrics = learner.as_ref().map(|l| {
        let stats = mesh_learner::supervisor::lock(l).stats();
        learner_metrics::LearnerMetrics::new(&mut registry, stats)
    });
    let mut worker = rounds::load_worker(&config.data, rounds::conduct(&config.adversary))?;
    if let Some(learner) = &learner {
        worker.set_learner(learner_factory(learner.clone()));
    }
    let (mut round_driver, mut round_results) = rounds::RoundDriver::new(
        &creds.identity,
        creds.roles.iter().collect(),
        &config.mesh_id,
        &config.round,
        worker,
        &mut registry,
    );
    let me = mesh_round::protocol::node_name(&creds.identity.node_id());
    round_driver.zone_declared(me, config.zone.clone());
    weights::load_pinned(
        round_driver.engine_mut(),
        &weights::weights_dir(&config.data_dir),
    );
    let (following, mut fetched) = match &consensus {
        Some(_) => (None, None),
        None => {
            let rotation = usize::from(net.local_peer_id().to_bytes().last().copied().unwrap_or(0));
            let (following, rx) =
                state_follow::StateFollowing::new(&config.mesh_id, rotation, &mut registry);
            (Some(following), Some(rx))
        }
    };
    let http_metrics = api::server::HttpMetrics::register(&mut registry);
    let (publish, snapshot) = watch::channel(Arc::new(NodeSnapshot::default()));
    let (commands_tx, mut commands) = mpsc::channel(api::COMMAND_QUEUE_CAPACITY);
    let auth = Arc::new(AdminAuth::new(
        creds.verifier.clone(),
        config.mesh_id.clone(),
    ));
    let proposer = consensus
        .clone()
        .map(|c| Proposer::new(c, PROPOSALS_IN_FLIGHT_MAX));
    let state = ApiState {
        snapshot,
        registry: Arc::new(registry),
        auth: auth.clone(),
        commands: commands_tx,
        proposer: proposer.clone(),
    };
    let api_tls = (!config.http.plain)
        .then(|| api::tls::ApiTls::new(api::tls::TlsFiles::of(&config), config.http.client_certs))
        .transpose()?;
    let (http_url, server) = serve_http(&config, state, api_tls.clone(), http_metrics).await?;
    write_node_info(
        &config.data_dir,
        &NodeInfo {
            peer_id: net.local_peer_id().to_string(),
            pid: std::process::id(),
            http_url: http_url.clone(),
            listen_addrs: listen_addrs.clone(),
        },
    )?;
    tracing::info!(peer_id = %net.local_peer_id(), %http_url, ?listen_addrs, "node started");
    let mut certificates = consensus.as_ref().map(|c| c.certificates());
    let mut runtime = Runtime {
        config,
        creds,
        net,
        consensus,
        planner,
        admitted: HashMap::new(),
        admitted_ms: HashMap::new(),
        listen_addrs,
        publish,
        started: Instant::now(),
        envelope_seq: now_ms().saturating_mul(1_000),
        proposer: proposer.clone(),
        forwards: Arc::new(Semaphore::new(PROPOSALS_IN_FLIGHT_MAX)),
        auth,
        revocations: revocations::Revocations::default(),
        ticks: 0,
        rounds: Some(round_driver),
        round_metrics,
        learner_metrics,
        node_metrics,
        announcements: announce::Announcements::default(),
        api_tls,
        cert_modified: None,
        protected: BTreeSet::new(),
        following,
    };
    runtime.reload_revocations().await;
    runtime.reload_certificate_if_changed().await;
    let mut hangup = hangup_signals();
    let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
    tokio::pin!(shutdown);
    let committee_failure = committee_failure(runtime.consensus.clone());
    tokio::pin!(committee_failure);
    let mut outcome = Ok(());
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            err = &mut committee_failure => {
                tracing::error!(%err, "the committee store failed; the node stops so that it is \
                    restarted on a sound store (free disk space first if the disk is full)");
                outcome = Err(RuntimeError::Consensus(err));
                break;
            }
            event = events.recv() => match event {
                Some(event) => runtime.on_net_event(event).await,
                None => {
                    tracing::error!("network layer stopped");
                    break;
                }
            },
            Some(command) = commands.recv() => runtime.on_api_command(command).await,
            Some(done) = round_results.recv() => runtime.on_round_result(done).await,
            Some(cert) = next_certificate(&mut certificates) => runtime.gossip_certificate(cert).await,
            Some(fetched) = next_fetched(&mut fetched) => runtime.on_state_fetched(fetched),
            _ = tick.tick() => runtime.on_tick().await,
            _ = next_hangup(&mut hangup) => runtime.reload_certificate("SIGHUP").await,
        }
    }
    tracing::info!("shutting down");
    server.abort();
    let _ = stop_streams.send(true);
    if let Some(consensus) = runtime.consensus.take() {
        if let Err(err) = consensus.shutdown().await {
            tracing::warn!(%err, "consensus shutdown");
        }
    }
    runtime.net.shutdown().await;
    outcome
}

/// `SIGHUP`s to this process (none where they cannot be caught).
fn hangup_signals() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|err| tracing::warn!(%err, "SIGHUP cannot be caught; certificate renewal by file change only"))
        .ok()
}

/// Resolves at the next `SIGHUP` (never without a handler).
async fn next_hangup(signals: &mut Option<tokio::signal::unix::Signal>) {
    match signals {
        Some(signals) => {
            if signals.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Resolves when this node's Raft core stops on its own (never without one).
async fn committee_failure(consensus: Option<ConsensusNode>) -> mesh_consensus::ConsensusError {
    match consensus {
        Some(consensus) => consensus.failure().await,
        None => std::future::pending().await,
    }
}

async fn next_certificate(
    receiver: &mut Option<
        tokio::sync::broadcast::Receiver<mesh_consensus::certificate::CommitCertificate>,
    >,
) -> Option<mesh_consensus::certificate::CommitCertificate> {
    let receiver = receiver.as_mut()?;
    loop {
        match receiver.recv().await {
            Ok(cert) => return Some(cert),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The next finished state fetch (never on a node that does not follow).
async fn next_fetched(
    receiver: &mut Option<mpsc::Receiver<state_follow::Fetched>>,
) -> Option<state_follow::Fetched> {
    match receiver.as_mut() {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// Waits (bounded) until the network layer reports its listen addresses.
async fn wait_for_listen_addrs(net: &NetHandle) -> Vec<String> {
    for _ in 0..50 {
        let addrs = net.listen_addrs().await;
        if !addrs.is_empty() {
            return addrs.iter().map(ToString::to_string).collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Vec::new()
}

/// Binds the HTTP API and serves it on a task; returns its URL.
async fn serve_http(
    config: &NodeConfig,
    state: ApiState,
    tls: Option<api::tls::ApiTls>,
    metrics: api::server::HttpMetrics,
) -> Result<(String, tokio::task::JoinHandle<()>), RuntimeError> {
    let listener = tokio::net::TcpListener::bind(&config.http.addr)
        .await
        .map_err(io_err(format!("binding HTTP API on {}", config.http.addr)))?;
    let addr = listener
        .local_addr()
        .map_err(io_err("reading the HTTP API address"))?;
    let h = &config.http;
    let limits = ApiLimits {
        max_body_bytes: h.max_body_bytes,
        timeout_ms: h.timeout_ms,
        body_read_timeout_ms: h.body_read_timeout_ms,
        max_concurrent_requests: h.max_concurrent_requests,
    };
    let server_limits = api::server::ServerLimits {
        header_read_timeout_ms: h.header_read_timeout_ms,
        max_connections: h.max_connections,
        max_connections_per_ip: h.max_connections_per_ip,
    };
    let app = api::router(state, limits);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = tokio::spawn(api::server::serve(
        listener,
        app,
        tls,
        server_limits,
        metrics,
    ));
    Ok((format!("{scheme}://{addr}"), server))
}

/// The payload of a gossiped envelope (already verified by the network
/// layer) of at most `max_bytes`, if it is of the `kind` its topic carries.
fn gossip_payload(data: &[u8], max_bytes: usize, kind: MessageKind) -> Result<Vec<u8>, String> {
    let envelope = Envelope::decode(data, max_bytes).map_err(|e| e.to_string())?;
    if envelope.header.kind != kind {
        let got = envelope.header.kind;
        return Err(format!(
            "envelope kind {got:?} on a topic that carries {kind:?}"
        ));
    }
    Ok(envelope.payload)
}

impl Runtime {
    async fn on_net_event(&mut self, event: NetEvent) {
        match event {
            NetEvent::Request {
                peer,
                protocol,
                payload,
                respond,
            } if mesh_round::protocol::round_version(&protocol).is_some() => {
                let outcome = self.on_round_message(&peer, &protocol, &payload).await;
                let _ = respond.send(outcome.map(|()| Vec::new()));
            }
            NetEvent::Request {
                peer,
                protocol,
                payload,
                respond,
            } => self.on_request(peer, protocol, payload, respond),
            NetEvent::Gossip { topic, payload, .. } => self.on_gossip(&topic, &payload).await,
            NetEvent::PeerAdmitted { peer, roles, .. } => {
                self.admitted.insert(peer, roles);
                self.admitted_ms.insert(peer, now_ms());
                self.revocations.peer_joined();
                self.announcements.peer_joined();
                if roles.contains(Role::Committee) {
                    if let (Some(planner), Some(info)) =
                        (&mut self.planner, member_info(&peer, None))
                    {
                        planner.peer_up(info, now_ms());
                    }
                }
            }
            NetEvent::PeerDown { peer, gone } => self.on_peer_down(peer, gone),
            NetEvent::PeerRejected { peer, .. } => self.on_peer_down(peer, true),
        }
    }

    /// `peer`'s last connection closed or it was refused; `gone` unless it
    /// was closed as unused (see [`mesh_net::NetEvent::PeerDown`]).
    fn on_peer_down(&mut self, peer: PeerId, gone: bool) {
        tracing::info!(%peer, gone, "peer down or refused");
        self.admitted.remove(&peer);
        self.admitted_ms.remove(&peer);
        if !gone {
            return;
        }
        self.forget(&peer);
        if let (Some(planner), Some(c), Some(id)) =
            (&mut self.planner, &self.consensus, member_of_peer(&peer))
        {
            planner.peer_down(id, now_ms(), c.id());
        }
    }

    /// `peer` is gone: it stops counting as alive at once instead of when
    /// its announcements age out ([`presence`]).
    fn forget(&mut self, peer: &PeerId) {
        if let (Some(node), Some(driver)) = (mesh_net::ids::node_id(peer), self.rounds.as_mut()) {
            driver.forget(&mesh_round::protocol::node_name(&node));
        }
    }

    fn on_request(
        &self,
        peer: PeerId,
        protocol: String,
        payload: Vec<u8>,
        respond: tokio::sync::oneshot::Sender<Result<Vec<u8>, String>>,
    ) {
        if protocol == state_follow::STATE_PROTOCOL {
            return self.answer_state(&payload, respond);
        }
        if protocol == forward::DECLINE_PROTOCOL {
            return self.propose_decline(&peer, &payload, respond);
        }
        if protocol != forward::WRITE_PROTOCOL {
            tracing::debug!(%peer, %protocol, "request under a protocol this node does not serve");
            let _ = respond.send(Err(format!("unknown protocol {protocol:?}")));
            return;
        }
        let ca_key = self.creds.verifier.ca_key();
        let checked = forward::decode_request(&payload).and_then(|(write, action)| {
            self.auth
                .check_token(&write.token, action)
                .map_err(|e| format!("forwarded write refused: {e}"))?;
            revocations::check_command(&write.command, ca_key)
                .map_err(|e| format!("forwarded write refused: {e}"))?;
            Ok(write.command)
        });
        self.propose_forwarded(checked, respond);
    }

    /// Answers a follower's state request with the newest certified state
    /// this node holds: as the commands since the asker's index where this
    /// node's Raft log holds them, whole otherwise.
    fn answer_state(
        &self,
        payload: &[u8],
        respond: tokio::sync::oneshot::Sender<Result<Vec<u8>, String>>,
    ) {
        let held = match (&self.consensus, &self.following) {
            (Some(consensus), _) => consensus.certified_state(),
            (None, Some(following)) => following.held().map(|f| f.certified.clone()),
            (None, None) => None,
        };
        let leader = self.state_source().and_then(|s| s.leader()).map(|n| n.0);
        let consensus = self.consensus.as_ref();
        let delta = |after: u64, held: &mesh_consensus::follow::CertifiedState| {
            let max = state_follow::DELTA_COMMANDS_MAX;
            Some(mesh_consensus::follow::StateDelta {
                commands: consensus?.commands_between(after, held.index(), max)?,
                voters: mesh_consensus::follow::bundle_voters(&held.bundle)?,
                certificate: held.certificate.clone(),
            })
        };
        let _ = respond.send(state_follow::answer(payload, held, leader, delta));
    }

    /// Proposes a follower's decline of a job, when it declines for itself
    /// and may train.
    fn propose_decline(
        &self,
        peer: &PeerId,
        payload: &[u8],
        respond: tokio::sync::oneshot::Sender<Result<Vec<u8>, String>>,
    ) {
        let trains = self
            .admitted
            .get(peer)
            .is_some_and(|roles| roles.contains(Role::Trainer));
        let checked = mesh_net::ids::node_id(peer)
            .ok_or_else(|| "peer id is not a mesh key".to_string())
            .and_then(|node| {
                let sender = mesh_round::protocol::node_name(&node);
                forward::decode_decline(payload, &sender, trains)
            });
        self.propose_forwarded(checked, respond);
    }

    /// Proposes a forwarded command that passed its checks (`checked`) and
    /// answers with the outcome; answers why not otherwise.
    fn propose_forwarded(
        &self,
        checked: Result<mesh_consensus::Command, String>,
        respond: tokio::sync::oneshot::Sender<Result<Vec<u8>, String>>,
    ) {
        let (Ok(command), Some(proposer)) = (checked.clone(), self.proposer.clone()) else {
            let why = checked
                .err()
                .unwrap_or_else(|| "this node does not run the committee protocol".into());
            let _ = respond.send(Err(why));
            return;
        };
        tokio::spawn(async move {
            let outcome = proposer.propose(command).await;
            let _ = respond.send(Ok(forward::encode_answer(&outcome)));
        });
    }

    async fn on_gossip(&mut self, topic: &str, payload: &[u8]) {
        if topic == revocations::REVOCATION_TOPIC {
            return self.on_revocation_gossip(payload).await;
        }
        if topic == announce::ANNOUNCE_TOPIC {
            return self.on_announcement(payload).await;
        }
        if topic != CERTIFICATE_TOPIC {
            return;
        }
        let cert = gossip_payload(payload, CERTIFICATE_ENVELOPE_BYTES_MAX, CERTIFICATE_KIND)
            .and_then(|body| {
                mesh_consensus::certificate::CommitCertificate::decode(&body)
                    .map_err(|e| e.to_string())
            });
        let Some(consensus) = &self.consensus else {
            if let (Ok(cert), Some(following)) = (&cert, &mut self.following) {
                following.heard(cert.statement.index);
            }
            return;
        };
        match cert {
            Ok(cert) => {
                if let Err(err) = consensus.accept_certificate(&cert).await {
                    tracing::debug!(%err, "gossiped certificate refused");
                }
            }
            Err(err) => tracing::debug!(%err, "undecodable certificate gossip"),
        }
    }

    /// Gossips this node's zone when [`announce::Announcements`] says it is time.
    async fn announce_if_due(&mut self) {
        if !self.announcements.announce_due(now_ms()) {
            return;
        }
        let body = announce::Announcement {
            zone: self.config.zone.clone(),
        };
        let topic = announce::ANNOUNCE_TOPIC;
        if !self
            .publish_envelope(topic, announce::ANNOUNCE_KIND, body.encode())
            .await
        {
            self.announcements.announce_failed();
        }
    }

    /// A peer's announcement: its zone goes to the coordinator, and it
    /// counts as alive for a while ([`presence`]).
    async fn on_announcement(&mut self, payload: &[u8]) {
        let max = announce::ANNOUNCE_ENVELOPE_BYTES_MAX;
        let heard = Envelope::decode(payload, max)
            .map_err(|e| e.to_string())
            .and_then(|envelope| {
                if envelope.header.kind != announce::ANNOUNCE_KIND {
                    return Err(format!("envelope kind {:?}", envelope.header.kind));
                }
                let info = announce::Announcement::decode(&envelope.payload)?;
                Ok((envelope.header.sender, info))
            });
        let (sender, info) = match heard {
            Ok(heard) => heard,
            Err(err) => return tracing::debug!(%err, "undecodable announcement"),
        };
        // The first committee forms with the zones heard by then.
        let peer = mesh_net::ids::peer_id(&sender).ok();
        let committee_peer = peer.filter(|p| {
            self.admitted
                .get(p)
                .is_some_and(|roles| roles.contains(Role::Committee))
        });
        if let (Some(planner), Some(peer)) = (&mut self.planner, committee_peer) {
            if let Some(member) = member_info(&peer, info.zone.clone()) {
                planner.peer_up(member, now_ms());
            }
        }
        let name = mesh_round::protocol::node_name(&sender);
        if let Some(peer) = peer.filter(|p| !self.admitted.contains_key(p)) {
            self.connect_if_joining(peer, &name).await;
        }
        if let Some(driver) = self.rounds.as_mut() {
            driver.heard_from(name.clone(), now_ms());
            driver.zone_declared(name, info.zone);
        }
    }

    /// On a committee node: connects to `peer`, which announced itself but
    /// is not connected, when it is not a member yet. Only a connection
    /// shows its certificate, and the leader admits members by their
    /// certificate roles; with bounded connections a new node may not be
    /// connected to the leader at all.
    async fn connect_if_joining(&self, peer: PeerId, name: &mesh_consensus::NodeId) {
        let Some(consensus) = &self.consensus else {
            return;
        };
        if !consensus
            .read_state(|state| state.members().get(name).is_some())
            .await
        {
            self.net.find_peer(peer);
        }
    }

    async fn gossip_certificate(&mut self, cert: mesh_consensus::certificate::CommitCertificate) {
        self.publish_envelope(CERTIFICATE_TOPIC, CERTIFICATE_KIND, cert.encode())
            .await;
    }

    /// Seals `payload` in a signed envelope of `kind` and gossips it on
    /// `topic`; false when it could not go out (no gossip peers yet, say).
    async fn publish_envelope(&mut self, topic: &str, kind: MessageKind, payload: Vec<u8>) -> bool {
        self.envelope_seq = self.envelope_seq.max(now_ms().saturating_mul(1_000)) + 1;
        let envelope = Envelope::seal(
            &self.creds.identity,
            mesh_net::config::envelope_mesh_id(&self.config.mesh_id),
            kind,
            self.envelope_seq,
            now_ms(),
            payload,
        )
        .and_then(|e| e.encode());
        match envelope {
            Ok(bytes) => match self.net.publish(topic, bytes).await {
                Ok(()) => true,
                Err(err) => {
                    tracing::debug!(%err, topic, "not gossiped");
                    false
                }
            },
            Err(err) => {
                tracing::warn!(%err, topic, "cannot seal a gossip message");
                false
            }
        }
    }

    async fn on_api_command(&mut self, command: ApiCommand) {
        match command {
            ApiCommand::Propose {
                command,
                token,
                reply,
            } => self.forward_for_api(*command, token, reply),
            ApiCommand::GetModel { job, round, reply } => {
                let source = self.state_source();
                let outcome = match (self.rounds.as_mut(), source.as_ref()) {
                    (Some(driver), Some(source)) => driver.model(source, &job, round).await,
                    _ => Err((503, "this node holds no committed state yet".into())),
                };
                let _ = reply.send(outcome);
            }
            ApiCommand::PinWeights { bytes, reply } => {
                let dir = weights::weights_dir(&self.config.data_dir);
                let outcome = match self.rounds.as_mut() {
                    Some(driver) => {
                        let me = driver.engine_mut().me().0.clone();
                        weights::pin(driver.engine_mut(), &dir, bytes)
                            .map(|hash| (hex::encode(hash), me))
                            .map_err(|e| (400, e))
                    }
                    None => Err((503, "this node runs no round engine".into())),
                };
                let _ = reply.send(outcome);
            }
            ApiCommand::CheckStartingWeights { spec, reply } => {
                let outcome = match self.rounds.as_mut() {
                    Some(driver) => weights::check_job(driver.engine_mut(), &spec),
                    None => Err("this node runs no round engine".into()),
                };
                let _ = reply.send(outcome);
            }
        }
    }

    /// The admitted peers with the committee role, sorted.
    fn committee_peers(&self) -> Vec<PeerId> {
        let mut members: Vec<PeerId> = self
            .admitted
            .iter()
            .filter(|(_, roles)| roles.contains(Role::Committee))
            .map(|(peer, _)| *peer)
            .collect();
        members.sort();
        members
    }

    /// Forwards an API write, with the caller's token, to a committee member.
    /// Only nodes without the committee send writes here: committee nodes
    /// propose from the HTTP handler.
    fn forward_for_api(
        &self,
        command: mesh_consensus::Command,
        token: String,
        reply: tokio::sync::oneshot::Sender<Result<CommitView, String>>,
    ) {
        let Ok(permit) = self.forwards.clone().try_acquire_owned() else {
            let _ = reply.send(Err("too many writes in flight; retry later".into()));
            return;
        };
        let members = self.committee_peers();
        let net = self.net.clone();
        tokio::spawn(async move {
            let write = forward::ForwardedWrite { token, command };
            let outcome = forward::forward(&net, &members, &write).await;
            drop(permit);
            let _ = reply.send(outcome);
        });
    }

    async fn on_tick(&mut self) {
        self.ticks += 1;
        if self.ticks.is_multiple_of(REVOCATION_TICKS) {
            self.reload_revocations().await;
        }
        if self.ticks.is_multiple_of(renewal::CERT_CHECK_TICKS) {
            self.reload_certificate_if_changed().await;
        }
        self.announce_if_due().await;
        self.give_up_silent_zones();
        let status = self.consensus.as_ref().map(ConsensusNode::status);
        if let Some(status) = &status {
            self.maybe_bootstrap(status).await;
            self.add_missing_learners(status);
            self.protect_committee(status).await;
        }
        self.tick_rounds().await;
        self.follow_state();
        if let Some(metrics) = &mut self.learner_metrics {
            metrics.update();
        }
        let source = self.state_source();
        let (jobs, reputation) = match (source, self.rounds.as_mut()) {
            (Some(source), Some(driver)) => {
                let engine = driver.engine_mut();
                let stats = engine.stats().clone();
                let metrics = &mut self.round_metrics;
                metrics.update_cache(
                    engine.cache_counters(),
                    engine.cache_bytes(),
                    engine.cache_capacity_bytes(),
                );
                source
                    .read(|state| {
                        metrics.update(&stats, state);
                        (rounds::job_views(state), rounds::reputation_views(state))
                    })
                    .await
            }
            _ => (Vec::new(), Vec::new()),
        };
        let peers = self.net.peers().await;
        let mut snapshot = view::snapshot(self, &peers, status);
        snapshot.jobs = jobs;
        snapshot.reputation = reputation;
        self.node_metrics.observe(&snapshot);
        self.publish.send_replace(Arc::new(snapshot));
    }

    /// Asks a peer for a newer certified state when one is due (nodes that
    /// follow the state without the log).
    fn follow_state(&mut self) {
        let now = now_ms();
        // Most ticks have no fetch due: rank and decode nothing then.
        if !self.following.as_ref().is_some_and(|f| f.due(now)) {
            return;
        }
        let (me, seed) = (self.net.local_peer_id(), self.config.network.seed);
        // One voter of the held state (dialled on demand; the next in rank
        // once it fails to answer) serves this node's delta fetches:
        // rotating over the admitted committee members connected every
        // follower to every member, and the bootstrap member, the one every
        // follower is admitted with, would otherwise serve all of them.
        let voters = self.held_voters();
        let candidates = if voters.is_empty() {
            self.committee_peers()
        } else {
            voters
        };
        // The network layer holds the first `target_peers` admitted peers of
        // this order: state fetches go only to those, since rotating over
        // every admitted peer kept every connection in use.
        let committee = ranked_peers(seed, &me, candidates.iter());
        let mut peers = ranked_peers(seed, &me, self.admitted.keys());
        peers.truncate(self.config.network.target_peers);
        peers.sort();
        if let Some(following) = &mut self.following {
            following.fetch_if_due(&self.net, &peers, &committee, now);
        }
    }

    /// The voters of the followed state held, as peers.
    fn held_voters(&self) -> Vec<PeerId> {
        let Some(held) = self.following.as_ref().and_then(|f| f.held()) else {
            return Vec::new();
        };
        held.voters
            .values()
            .filter_map(|key| {
                let key = ed25519_dalek::VerifyingKey::from_bytes(key).ok()?;
                mesh_net::ids::peer_id(&mesh_security::NodeId::from_verifying_key(&key)).ok()
            })
            .collect()
    }

    /// A state fetch finished: verified against the keys of the admitted
    /// committee members and held when newer.
    fn on_state_fetched(&mut self, fetched: state_follow::Fetched) {
        let committee_keys = self
            .committee_peers()
            .iter()
            .filter_map(mesh_net::ids::node_id)
            .map(|node| *node.as_bytes())
            .collect();
        let Some(following) = &mut self.following else {
            return;
        };
        match following.on_fetched(fetched, &committee_keys, now_ms()) {
            Ok(index) => tracing::debug!(index, "followed the committed state"),
            Err(err) => tracing::debug!(%err, "no newer committed state"),
        }
    }

    /// Keeps the connections to every committee member (voters and
    /// learners) from being closed as unused, when that is on: Raft
    /// replicates over streams the network layer does not see as requests.
    async fn protect_committee(&mut self, status: &mesh_consensus::ConsensusStatus) {
        let (Some(consensus), true) = (
            &self.consensus,
            self.config.network.unused_connection_close_ms > 0,
        ) else {
            return;
        };
        let members: BTreeSet<PeerId> = status
            .voters
            .iter()
            .chain(&status.learners)
            .filter_map(|id| consensus.member_info(*id))
            .filter_map(|info| PeerId::from_str(&info.node_id).ok())
            .collect();
        if members != self.protected && self.net.protect(members.clone()).await.is_ok() {
            self.protected = members;
        }
    }

    /// Admitted peers by mesh name, with their certificate roles.
    fn admitted_names(
        &self,
    ) -> std::collections::BTreeMap<mesh_consensus::NodeId, std::collections::BTreeSet<Role>> {
        self.admitted
            .iter()
            .filter_map(|(peer, roles)| {
                let node = mesh_net::ids::node_id(peer)?;
                Some((
                    mesh_round::protocol::node_name(&node),
                    roles.iter().collect(),
                ))
            })
            .collect()
    }

    /// The committed state rounds run on: the committee's own copy, or the
    /// followed one; `None` on a follower that holds none yet.
    fn state_source(&self) -> Option<state_source::StateSource> {
        if let Some(consensus) = &self.consensus {
            return Some(state_source::StateSource::Committee(consensus.clone()));
        }
        let following = self.following.as_ref()?;
        let followed = state_source::Followed {
            state: following.held()?.state.clone(),
            leader: following.leader(),
            committee: self.committee_peers(),
            net: self.net.clone(),
        };
        Some(state_source::StateSource::Followed(Box::new(followed)))
    }

    async fn tick_rounds(&mut self) {
        let admitted = self.admitted_names();
        let source = self.state_source();
        if let (Some(driver), Some(source)) = (self.rounds.as_mut(), source.as_ref()) {
            driver.tick(source, &self.net, admitted, now_ms()).await;
        }
    }

    /// A round message under `protocol`, one of the round protocol names;
    /// refused when its version is above this node's cap.
    async fn on_round_message(
        &mut self,
        peer: &PeerId,
        protocol: &str,
        payload: &[u8],
    ) -> Result<(), String> {
        let ours = self.net.protocol_versions();
        let version = mesh_round::protocol::round_version(protocol)
            .filter(|v| ours.contains(*v))
            .ok_or_else(|| format!("{protocol} is not spoken here (protocol versions {ours})"))?;
        let admitted = self.admitted_names();
        let source = self.state_source();
        match (self.rounds.as_mut(), source.as_ref()) {
            (Some(driver), Some(source)) => {
                driver
                    .on_message(
                        peer,
                        version,
                        payload,
                        source,
                        &self.net,
                        admitted,
                        now_ms(),
                    )
                    .await
            }
            _ => Err("this node holds no committed state yet (retry)".into()),
        }
    }

    async fn on_round_result(&mut self, done: rounds::Done) {
        let admitted = self.admitted_names();
        let source = self.state_source();
        if let (Some(driver), Some(source)) = (self.rounds.as_mut(), source.as_ref()) {
            driver
                .on_done(done, source, &self.net, admitted, now_ms())
                .await;
        }
    }

    /// Gathers revocations from the CA's file and the committed state, acts
    /// on the new ones, and gossips what the leader should send.
    async fn reload_revocations(&mut self) {
        self.read_revocations_file();
        self.read_committed_revocations().await;
        self.apply_revocations().await;
        let is_leader = self
            .consensus
            .as_ref()
            .is_some_and(|c| c.status().role == "leader");
        let outgoing = self.revocations.to_gossip(is_leader, now_ms());
        for batch in revocations::encode_batches(&outgoing) {
            self.publish_envelope(
                revocations::REVOCATION_TOPIC,
                revocations::REVOCATION_KIND,
                batch,
            )
            .await;
        }
    }

    /// Re-reads the revocations file when it changed.
    fn read_revocations_file(&mut self) {
        let Some(path) = self.config.identity.revocations.clone() else {
            return;
        };
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if modified.is_none() || modified == self.revocations.file_modified {
            return;
        }
        match credentials::read_revocations(&path, &self.creds.verifier) {
            Ok(signed) => self.revocations.set_file(signed, modified),
            Err(err) => {
                tracing::warn!(%err, "revocations file not applied; keeping the previous list");
            }
        }
    }

    /// Learns the revocations committed since the last look (from the
    /// committee's own copy of the state, or the followed one).
    async fn read_committed_revocations(&mut self) {
        let Some(source) = self.state_source() else {
            return;
        };
        let seen = &self.revocations;
        let committed = source
            .read(|state| {
                let members = state.members();
                let count = members.revoked_count();
                let changed = seen.committed_changed(count);
                let unknown = changed.then(|| {
                    members
                        .revocations()
                        .filter(|r| !seen.is_learned(&r.signed.entry.serial))
                        .map(|r| r.signed.clone())
                        .collect::<Vec<_>>()
                });
                (count, unknown)
            })
            .await;
        let (count, Some(unknown)) = committed else {
            return;
        };
        let ca_key = *self.creds.verifier.ca_key();
        let (valid, forged): (Vec<_>, Vec<_>) =
            unknown.into_iter().partition(|r| r.verify(&ca_key).is_ok());
        if !forged.is_empty() {
            tracing::warn!(
                count = forged.len(),
                "committed revocations not signed by the CA are ignored"
            );
        }
        self.revocations.learn(valid);
        self.revocations.set_committed_seen(count);
    }

    /// Disconnects and refuses newly revoked peers, and refuses their tokens.
    async fn apply_revocations(&mut self) {
        let fresh = self.revocations.take_unapplied();
        if fresh.is_empty() {
            return;
        }
        for revocation in fresh {
            tracing::info!(node = %revocation.entry.node_id, "certificate revoked");
            if let Err(err) = self.net.revoke(revocation).await {
                tracing::warn!(%err, "network layer refused a revocation");
            }
        }
        let list = self.revocations.list(self.creds.verifier.ca_key());
        self.auth.set_revocations(Arc::new(list));
    }

    /// Takes a gossiped batch of revocations; only CA-signed entries count.
    async fn on_revocation_gossip(&mut self, payload: &[u8]) {
        let max_bytes = revocations::REVOCATION_ENVELOPE_BYTES_MAX;
        let batch =
            gossip_payload(payload, max_bytes, revocations::REVOCATION_KIND).and_then(|body| {
                revocations::decode_batch(&body, self.creds.verifier.ca_key())
                    .map_err(|e| e.to_string())
            });
        match batch {
            Ok((taken, refused)) => {
                if refused > 0 {
                    tracing::warn!(refused, "gossiped revocations not signed by the CA");
                }
                if self.revocations.learn(taken) > 0 {
                    self.apply_revocations().await;
                }
            }
            Err(err) => tracing::debug!(%err, "undecodable revocation gossip"),
        }
    }

    async fn maybe_bootstrap(&mut self, status: &ConsensusStatus) {
        let (Some(consensus), Some(planner)) = (&self.consensus, &self.planner) else {
            return;
        };
        if !status.voters.is_empty() {
            self.planner = None;
            return;
        }
        // The first voters go into the membership with their zones: wait
        // (bounded, as for learners) until every one has said its zone.
        let me = self.net.local_peer_id();
        let silent = planner.view().values().any(|info| {
            PeerId::from_str(&info.node_id)
                .is_ok_and(|peer| peer != me && self.learner_zone(&peer).is_none())
        });
        if silent {
            return;
        }
        if let Some(voters) = planner.decide(consensus.id(), now_ms()) {
            tracing::info!(voters = voters.len(), "bootstrapping the committee");
            if let Err(err) = consensus.bootstrap(voters).await {
                tracing::warn!(%err, "committee bootstrap failed; retrying");
            }
        }
    }

    /// The zone to add `peer` to the committee with (see
    /// [`Self::give_up_silent_zones`]); `None` while it may still announce one.
    fn learner_zone(&self, peer: &PeerId) -> Option<Option<String>> {
        let node = mesh_round::protocol::node_name(&mesh_net::ids::node_id(peer)?);
        self.rounds.as_ref()?.declared_zone(&node)
    }

    /// Counts a peer admitted [`announce::ZONE_WAIT_MS`] ago that has not
    /// announced a zone as zoneless, so it joins the membership (as a member,
    /// a learner or a first voter) without one.
    fn give_up_silent_zones(&mut self) {
        let Some(driver) = self.rounds.as_mut() else {
            return;
        };
        let now = now_ms();
        for (peer, admitted_ms) in &self.admitted_ms {
            if now.saturating_sub(*admitted_ms) < announce::ZONE_WAIT_MS {
                continue;
            }
            let Some(node) = mesh_net::ids::node_id(peer) else {
                continue;
            };
            let node = mesh_round::protocol::node_name(&node);
            if driver.declared_zone(&node).is_none() {
                driver.zone_declared(node, None);
            }
        }
    }

    /// On the leader: every admitted committee-capable peer outside the membership becomes a learner.
    fn add_missing_learners(&self, status: &ConsensusStatus) {
        let Some(consensus) = &self.consensus else {
            return;
        };
        if status.leader != Some(consensus.id()) {
            return;
        }
        for (peer, roles) in &self.admitted {
            if !roles.contains(Role::Committee) {
                continue;
            }
            let Some(zone) = self.learner_zone(peer) else {
                continue;
            };
            let Some(info) = member_info(peer, zone) else {
                continue;
            };
            let id = info.member_id();
            if status.voters.contains(&id) || status.learners.contains(&id) {
                continue;
            }
            let consensus = consensus.clone();
            tokio::spawn(async move {
                if let Err(err) = consensus.add_learner(info, false).await {
                    tracing::debug!(%err, "adding a learner failed; will retry");
                }
            });
        }
    }
}

fn member_info(peer: &PeerId, zone: Option<String>) -> Option<MemberInfo> {
    let node = mesh_net::ids::node_id(peer)?;
    Some(MemberInfo::new(&node, String::new(), zone))
}
