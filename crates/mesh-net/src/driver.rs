//! The driver: the one tokio task that owns the swarm and the sans-I/O state
//! machines, and moves events between them. It decides nothing itself beyond
//! plumbing; admission, bans, peer table, address book and gossip validation
//! make the decisions.
//!
//! ```text
//!   NetHandle ──commands (bounded)──┐
//!                                   v
//!   swarm events ──> Driver::run (select: command | swarm event | tick)
//!                      │  admission · ban list · peer table · address book · gossip gate
//!                      v
//!   swarm actions (dial, disconnect, send, report validation)   NetEvent (bounded) ──> application
//! ```

mod closing;
mod commands;
mod lookup;
mod nat;
mod swarm_events;
mod versions;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use libp2p::gossipsub;
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};

use crate::admission::{Admission, AdmissionConfig, RejectReason, Retry};
use crate::ban::BanList;
use crate::behaviour::MeshBehaviour;
use crate::cert_exchange::CertMessage;
use crate::codec::{WireRequest, WireResponse};
use crate::config::{NetConfig, TransportKind};
use crate::discovery::AddressBook;
use crate::gossip::GossipGate;
use crate::handle::{Command, NetEvent};
use crate::link_delay::DelayDrawer;
use crate::log_limit::LogLimiter;
use crate::metrics::{Direction, Kind, NetMetrics};
use crate::peers::{Backoff, PeerState, PeerTable, PeerTableConfig};
use crate::streams::{AdmittedPeers, Streams};
use crate::trim::ConnectionUse;
use crate::version::PeerVersions;
use crate::{ids, transport, NetError};

/// The current time, Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Most gossip messages held while their relays await admission (all peers together).
pub(crate) const GOSSIP_HELD_MAX: usize = 1024;

/// Where the answer to an outbound request goes.
type RequestReply = oneshot::Sender<Result<Vec<u8>, NetError>>;

/// A request held until its peer is admitted (see [`crate::awaiting`]).
struct HeldRequest {
    protocol: String,
    payload: Vec<u8>,
    reply: RequestReply,
}

/// How many admission deadlines a request waits for its peer: a dial (or a
/// lookup and a dial), then the certificate exchange.
const ADMISSION_WAITS: u32 = 2;

/// The application's answer to an inbound request (`Err` when it dropped the
/// request or did not answer within the request timeout), and where it goes.
type InboundAnswer = (Result<Vec<u8>, String>, ResponseChannel<WireResponse>);

/// Settings the driver keeps from the configuration.
struct Settings {
    mesh_id: String,
    cert_message: Vec<u8>,
    target_peers: usize,
    kept_peers_max: usize,
    ban_ms: u64,
    request_bytes_max: usize,
    gossip_bytes_max: usize,
    outbound_requests_max: usize,
    inbound_requests_max: usize,
    request_timeout: Duration,
    /// How long a request to a peer that is not admitted waits for it.
    admission_wait_ms: u64,
    tick: Duration,
    unused_connection_close_ms: Option<u64>,
    /// Seed of the choice of held peers.
    seed: u64,
}

/// The swarm task's state.
pub(crate) struct Driver {
    swarm: Swarm<MeshBehaviour>,
    settings: Settings,
    admission: Admission,
    bans: BanList<PeerId>,
    peers: PeerTable<PeerId>,
    bootstrap: PeerTable<Multiaddr>,
    bootstrap_dials: HashMap<ConnectionId, Multiaddr>,
    book: AddressBook,
    gate: GossipGate,
    metrics: NetMetrics,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    outbound: HashMap<OutboundRequestId, RequestReply>,
    inbound: FuturesUnordered<BoxFuture<'static, InboundAnswer>>,
    /// Gossip relayed by peers whose admission is pending, decided once it settles.
    held_gossip: HashMap<PeerId, Vec<(gossipsub::MessageId, gossipsub::Message)>>,
    /// Messages in `held_gossip`, at most [`GOSSIP_HELD_MAX`].
    gossip_held: usize,
    /// Admitted peers, shared with the stream side of the handles.
    admitted: AdmittedPeers,
    /// Paces log lines about hostile or broken input (one per source per interval).
    log_limit: LogLimiter,
    /// NAT traversal: connection kinds, relays, reservations, reachability.
    nat: crate::nat::NatState,
    /// Each peer's mesh protocol version, shared with the handles.
    versions: PeerVersions,
    /// When each wanted but unreachable peer was last looked up.
    lookups: crate::lookup::Lookups<PeerId>,
    /// When each connected peer was last used (closing unused connections).
    uses: ConnectionUse,
    /// Peers the application protects from being closed as unused.
    protected: BTreeSet<PeerId>,
    /// Requests to peers that are being connected on demand.
    awaiting: crate::awaiting::Awaiting<PeerId, HeldRequest>,
    /// Unused connections waiting for their closing notice to be answered.
    closes: closing::PendingCloses,
}

fn validate(config: &NetConfig) -> Result<(), NetError> {
    let checks = [
        (config.peers_max == 0, "peers_max must be at least 1"),
        (
            config.queues.events_max == 0,
            "queues.events_max must be at least 1",
        ),
        (
            config.queues.outbound_requests_max == 0,
            "queues.outbound_requests_max must be at least 1",
        ),
        (
            config.queues.inbound_requests_max == 0,
            "queues.inbound_requests_max must be at least 1",
        ),
        (config.timing.tick.is_zero(), "timing.tick must be positive"),
        (
            config.timing.admission_attempts == 0,
            "timing.admission_attempts must be at least 1",
        ),
    ];
    match checks.iter().find(|(bad, _)| *bad) {
        Some((_, message)) => Err(NetError::Config((*message).to_string())),
        None => Ok(()),
    }
}

/// The swarm of `config`, listening on its addresses and announcing its
/// configured external addresses.
fn build_swarm(config: &NetConfig, metrics: &NetMetrics) -> Result<Swarm<MeshBehaviour>, NetError> {
    let keypair = ids::keypair(&config.identity)?;
    let relayed_bytes = metrics.nat.relayed_counters();
    let delay = config
        .memory_link_delay
        .map(|range| DelayDrawer::new(range, config.seed));
    let (transport, relay_client) =
        transport::build_with_relay_client(config.transport, &keypair, delay, relayed_bytes)?;
    let behaviour = MeshBehaviour::new(&keypair, config, relay_client)?;
    let swarm_config = libp2p::swarm::Config::with_tokio_executor()
        .with_idle_connection_timeout(config.limits.idle_timeout);
    let mut swarm = Swarm::new(
        transport,
        behaviour,
        keypair.public().to_peer_id(),
        swarm_config,
    );
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Transport(format!("cannot listen on {addr}: {e}")))?;
    }
    for addr in &config.nat.external_addresses {
        swarm.add_external_address(addr.clone());
    }
    Ok(swarm)
}

/// Admission's settings from the configuration.
fn admission_config(config: &NetConfig) -> AdmissionConfig {
    AdmissionConfig {
        cert_timeout_ms: ms(config.timing.admission_deadline),
        cert_attempts_max: config.timing.admission_attempts,
        peers_max: config.peers_max,
    }
}

/// The peer table (keyed by peer id) and the bootstrap table (keyed by
/// address, holding every bootstrap address).
fn peer_tables(config: &NetConfig) -> Result<(PeerTable<PeerId>, PeerTable<Multiaddr>), NetError> {
    let backoff = Backoff {
        base_ms: ms(config.timing.redial_base).max(1),
        max_ms: ms(config.timing.redial_max).max(1),
    };
    // A connecting peer is not "silent" while admission may still retry it.
    let admission_wait_ms = admission_config(config).wait_total_ms();
    let silence_timeout_ms = ms(config.timing.ping_interval)
        .saturating_mul(4)
        .max(admission_wait_ms.saturating_add(ms(config.timing.admission_deadline)));
    let table = PeerTableConfig {
        peers_max: config.peers_max,
        connections_target: config.target_peers,
        backoff,
        silence_timeout_ms,
        seed: config.seed,
    };
    let mut bootstrap = PeerTable::new(PeerTableConfig {
        connections_target: config.bootstrap.len(),
        seed: config.seed ^ 0x5eed,
        ..table
    });
    let now = now_ms();
    for addr in &config.bootstrap {
        bootstrap
            .insert(addr.clone(), now)
            .map_err(|e| NetError::Config(format!("bootstrap list: {e}")))?;
    }
    Ok((PeerTable::new(table), bootstrap))
}

impl Driver {
    /// Builds the swarm and starts listening.
    pub(crate) fn new(
        config: NetConfig,
        metrics: NetMetrics,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetEvent>,
    ) -> Result<Self, NetError> {
        validate(&config)?;
        let swarm = build_swarm(&config, &metrics)?;
        let cert_message = CertMessage {
            mesh_id: config.mesh_id.clone(),
            cert_der: config.certificate_der.clone(),
        }
        .encode()
        .map_err(|e| NetError::Config(format!("own certificate: {e}")))?;
        let admission = Admission::new(config.verifier.clone(), admission_config(&config));
        let bans = BanList::new(config.peers_max)
            .map_err(|e| NetError::Config(format!("ban list: {e}")))?;
        let (peers, bootstrap) = peer_tables(&config)?;
        if config.transport == TransportKind::Memory && config.mdns {
            tracing::warn!("mDNS is not available on the memory transport; ignored");
        }
        let settings = Settings {
            mesh_id: config.mesh_id.clone(),
            cert_message,
            target_peers: config.target_peers,
            kept_peers_max: config.kept_peers_max.max(config.target_peers),
            ban_ms: ms(config.timing.ban_duration),
            request_bytes_max: config.sizes.request_bytes_max,
            gossip_bytes_max: config.sizes.gossip_bytes_max,
            outbound_requests_max: config.queues.outbound_requests_max,
            inbound_requests_max: config.queues.inbound_requests_max,
            request_timeout: config.timing.request_timeout,
            admission_wait_ms: ms(config.timing.admission_deadline * ADMISSION_WAITS),
            tick: config.timing.tick,
            unused_connection_close_ms: config.timing.unused_connection_close.map(ms),
            seed: config.seed,
        };
        Ok(Self {
            swarm,
            gate: GossipGate::new(config.envelope_mesh_id(), config.sizes.gossip_bytes_max),
            settings,
            admission,
            bans,
            peers,
            bootstrap,
            bootstrap_dials: HashMap::new(),
            book: AddressBook::new(config.peers_max),
            metrics,
            commands,
            events,
            outbound: HashMap::new(),
            inbound: FuturesUnordered::new(),
            held_gossip: HashMap::new(),
            gossip_held: 0,
            admitted: AdmittedPeers::default(),
            log_limit: LogLimiter::default(),
            nat: crate::nat::NatState::new(&config.nat),
            versions: PeerVersions::new(config.versions, config.peers_max),
            lookups: crate::lookup::Lookups::default(),
            uses: ConnectionUse::default(),
            protected: BTreeSet::new(),
            awaiting: crate::awaiting::Awaiting::default(),
            closes: closing::PendingCloses::default(),
        })
    }

    /// This node's peer id.
    pub(crate) fn local_peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// The stream side that handles use (see [`crate::streams`]).
    pub(crate) fn streams(&self) -> Streams {
        Streams {
            control: self.swarm.behaviour().streams.new_control(),
            admitted: self.admitted.clone(),
            versions: self.versions.clone(),
        }
    }

    /// Runs until shut down or until every handle is dropped.
    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(self.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown_reply = loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown(reply)) => break Some(reply),
                    Some(command) => self.on_command(command),
                    None => break None,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(answer) = self.inbound.next(), if !self.inbound.is_empty() => {
                    self.on_inbound_answer(answer);
                }
                _ = tick.tick() => self.on_tick(),
            }
        };
        tracing::debug!(peer = %self.local_peer_id(), "network layer stopping");
        self.metrics.peers_connected.set(0);
        self.metrics.peers_admitted.set(0);
        drop(self.swarm);
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    /// Timers: admission deadlines, expired bans, silent peers, dialling.
    fn on_tick(&mut self) {
        let now = now_ms();
        let due = self.admission.poll(now);
        for retry in due.retries {
            self.retry_certificate(&retry);
        }
        for rejection in due.rejections {
            match ids::peer_id(&rejection.peer) {
                Ok(peer) => self.reject(peer, rejection.reason, "deadline or expiry".into()),
                Err(e) => tracing::warn!("rejected node has no peer id: {e}"),
            }
        }
        self.bans.prune(now);
        self.expire_awaiting(now);
        for peer in self.peers.mark_silent_down(now) {
            tracing::debug!(%peer, "silent too long; disconnecting");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        self.keep_admitted_peers();
        self.close_unused_connections(now);
        self.manage_reservations();
        let kept = self.swarm.behaviour().keep_alive.kept_len();
        if kept < self.settings.target_peers {
            self.dial_known_peers(now);
            self.dial_bootstrap(now);
        }
    }

    /// Holds open the connections of the admitted peers that rank first
    /// for this node ([`crate::keep_alive::keep_rank`]), up to the bound;
    /// a peer that ranks better than a held one takes its place.
    fn keep_admitted_peers(&mut self) {
        let admitted: Vec<PeerId> = self
            .admission
            .admitted()
            .filter_map(|(node, _)| ids::peer_id(node).ok())
            .collect();
        let me = self.local_peer_id();
        let wanted: BTreeSet<PeerId> =
            crate::keep_alive::ranked_peers(self.settings.seed, &me, admitted.iter())
                .into_iter()
                .take(self.settings.kept_peers_max)
                .collect();
        let keep_alive = &mut self.swarm.behaviour_mut().keep_alive;
        let released: Vec<PeerId> = keep_alive
            .kept()
            .filter(|peer| !wanted.contains(*peer))
            .copied()
            .collect();
        for peer in released {
            keep_alive.set(peer, false);
        }
        for peer in wanted {
            keep_alive.set(peer, true);
        }
    }

    /// Dials `peer` at `addrs` unless it is connected or being dialled.
    pub(super) fn dial_peer(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) -> Result<(), libp2p::swarm::DialError> {
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        self.swarm.dial(opts)
    }

    fn admitted_count(&self) -> usize {
        self.admission.admitted().count()
    }

    fn dial_known_peers(&mut self, now: u64) {
        for peer in self.peers.peers_to_dial(now) {
            let addrs = self.dial_addresses(&peer, self.book.get(&peer).to_vec());
            if addrs.is_empty() || self.bans.is_banned(&peer, now) {
                continue;
            }
            if self.swarm.is_connected(&peer) {
                continue;
            }
            tracing::debug!(%peer, "dialling a known peer (fewer kept peers than the target)");
            let _ = self.peers.on_dialing(&peer, now);
            if let Err(e) = self.dial_peer(peer, addrs) {
                tracing::debug!(%peer, "dial not started: {e}");
                let _ = self.peers.on_disconnected(&peer, now);
            }
        }
    }

    fn dial_bootstrap(&mut self, now: u64) {
        for addr in self.bootstrap.peers_to_dial(now) {
            let _ = self.bootstrap.on_dialing(&addr, now);
            let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    self.bootstrap_dials.insert(id, addr);
                }
                Err(e) => {
                    tracing::debug!(%addr, "bootstrap dial not started: {e}");
                    let _ = self.bootstrap.on_disconnected(&addr, now);
                }
            }
        }
    }

    /// Sends `peer` this node's certificate again: its exchange missed a
    /// deadline, which on a loaded machine says nothing bad about the peer.
    fn retry_certificate(&mut self, retry: &Retry) {
        let Ok(peer) = ids::peer_id(&retry.peer) else {
            return;
        };
        tracing::info!(%peer, attempt = retry.attempt, "certificate exchange slow; trying again");
        self.metrics.admission_retries.inc();
        self.send_certificate(peer);
    }

    /// Sends this node's certificate to `peer` as a request; the answer
    /// carries the peer's own.
    pub(super) fn send_certificate(&mut self, peer: PeerId) {
        let request = WireRequest {
            protocol: crate::cert_exchange::REQUEST_NAME.to_string(),
            payload: self.settings.cert_message.clone(),
        };
        self.metrics.message(Kind::Cert, Direction::Out, "sent");
        self.swarm.behaviour_mut().cert.send_request(&peer, request);
    }

    /// Refuses `peer`: count, tell the application, disconnect, and ban it
    /// when the reason says it showed a bad certificate ([`RejectReason::bans`]).
    fn reject(&mut self, peer: PeerId, reason: RejectReason, detail: String) {
        let now = now_ms();
        let label = reason.as_str();
        let banned = reason.bans();
        tracing::info!(%peer, reason = label, banned, %detail, "peer refused");
        if banned {
            self.bans.ban(peer, now, self.settings.ban_ms, label);
        }
        self.metrics.rejection(label);
        // Admission may already have moved an admitted peer to rejected
        // (revocation, expiry); the peer table still says whether it was up.
        let was_admitted = self
            .peers
            .get(&peer)
            .is_some_and(|info| info.state == PeerState::Admitted);
        if let Some(node) = ids::node_id(&peer) {
            // Leave the admission table: the peer is banned, and its state
            // returns only through a new connection after the ban.
            self.admission.on_disconnected(&node);
        }
        self.release_held_gossip(&peer);
        self.fail_awaiting(&peer);
        self.swarm.behaviour_mut().keep_alive.set(peer, false);
        // Kademlia would otherwise hand the peer out and dial it in queries.
        self.swarm.behaviour_mut().kad.remove_peer(&peer);
        self.refresh_gauges();
        self.emit(NetEvent::PeerRejected {
            peer,
            reason: label.to_string(),
        });
        if was_admitted {
            self.emit(NetEvent::PeerDown { peer, gone: true });
        }
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn refresh_gauges(&self) {
        let connected = i64::try_from(self.swarm.connected_peers().count()).unwrap_or(i64::MAX);
        let admitted = i64::try_from(self.admitted_count()).unwrap_or(i64::MAX);
        self.metrics.peers_connected.set(connected);
        self.metrics.peers_admitted.set(admitted);
    }

    /// Hands an event to the application; when its queue is full the event
    /// is dropped and counted (the driver never blocks on the application).
    fn emit(&mut self, event: NetEvent) -> bool {
        match &event {
            NetEvent::PeerAdmitted { peer, .. } => self.admitted.set(*peer, true),
            // A peer whose connections were closed as unused is the same
            // process when it is dialled again: its version stays known, so
            // messages to it do not fall back to version 1 until it
            // identifies itself again.
            NetEvent::PeerDown { peer, gone: false } => self.admitted.set(*peer, false),
            NetEvent::PeerDown { peer, gone: true } | NetEvent::PeerRejected { peer, .. } => {
                self.admitted.set(*peer, false);
                self.versions.forget(peer);
            }
            NetEvent::Request { .. } | NetEvent::Gossip { .. } => {}
        }
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(event)) => {
                tracing::warn!(
                    "application event queue full; dropping {}",
                    event_kind(&event)
                );
                self.metrics.dropped_event();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn peer_status(&self, peer: &PeerId, state: PeerState, now: u64) -> crate::PeerStatus {
        use crate::PeerStatus;
        if self.bans.is_banned(peer, now) {
            return PeerStatus::Banned;
        }
        match state {
            PeerState::Known => PeerStatus::Known,
            PeerState::Admitted => PeerStatus::Admitted,
            PeerState::Down => PeerStatus::Down,
            PeerState::Connecting if self.swarm.is_connected(peer) => PeerStatus::Connected,
            PeerState::Connecting => PeerStatus::Dialing,
        }
    }
}

fn event_kind(event: &NetEvent) -> &'static str {
    match event {
        NetEvent::Request { .. } => "request",
        NetEvent::Gossip { .. } => "gossip",
        NetEvent::PeerAdmitted { .. } => "peer-admitted",
        NetEvent::PeerDown { .. } => "peer-down",
        NetEvent::PeerRejected { .. } => "peer-rejected",
    }
}
