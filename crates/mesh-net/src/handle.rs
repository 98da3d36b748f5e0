//! The public face of the network layer: [`spawn`] starts the driver task and
//! returns a [`NetHandle`] (commands in) and a receiver of [`NetEvent`]s
//! (events out). Both channels are bounded.

use std::collections::BTreeSet;

use libp2p::{Multiaddr, PeerId, Stream};
use mesh_security::ca::SignedRevocation;
use mesh_security::rbac::{Role, RoleSet};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};

use crate::config::NetConfig;
use crate::direct::DirectLinks;
use crate::driver::Driver;
use crate::metrics::NetMetrics;
use crate::streams::{IncomingStreams, Streams};
use crate::version::{PeerVersion, VersionRange};
use crate::NetError;

/// Something the network layer tells the application.
#[derive(Debug)]
pub enum NetEvent {
    /// An admitted peer sent a direct request; answer through `respond`
    /// (`Err(text)` reaches the requester as [`NetError::Remote`]). Dropping
    /// `respond` answers with an error.
    Request {
        /// The requester.
        peer: PeerId,
        /// The application protocol name the requester gave.
        protocol: String,
        /// The request payload.
        payload: Vec<u8>,
        /// Where the answer goes.
        respond: oneshot::Sender<Result<Vec<u8>, String>>,
    },
    /// A gossip message whose envelope verified (signature, mesh, replay),
    /// relayed by an admitted peer.
    Gossip {
        /// The peer that published it (gossipsub author), or the relaying peer
        /// if the message carries no author.
        source: PeerId,
        /// The topic.
        topic: String,
        /// The encoded envelope, as published.
        payload: Vec<u8>,
    },
    /// A peer's certificate verified.
    PeerAdmitted {
        /// The peer.
        peer: PeerId,
        /// Its most privileged role (order of [`Role::ALL`]); all of them are in `roles`.
        role: Role,
        /// Every role its certificate grants.
        roles: RoleSet,
    },
    /// An admitted peer's last connection closed.
    PeerDown {
        /// The peer.
        peer: PeerId,
        /// True when neither end closed it as unused (see [`crate::trim`]):
        /// the peer crashed, left, was refused, or the network failed. False
        /// when it is most likely up and is dialled again on demand.
        gone: bool,
    },
    /// A peer was refused (and banned for the configured time).
    PeerRejected {
        /// The peer.
        peer: PeerId,
        /// The reason label ([`crate::RejectReason::as_str`], or `banned`).
        reason: String,
    },
}

/// A peer's state as the application sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerStatus {
    /// Known (discovery or bootstrap), not connected.
    Known,
    /// A dial is under way.
    Dialing,
    /// Connected, certificate not verified yet.
    Connected,
    /// Connected and admitted.
    Admitted,
    /// Was connected; connection lost or dial failed.
    Down,
    /// Refused by admission; kept out until the ban expires.
    Banned,
}

/// What the network layer knows about one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer.
    pub peer: PeerId,
    /// Known addresses, newest first.
    pub addresses: Vec<Multiaddr>,
    /// Its state.
    pub state: PeerStatus,
    /// Latest ping round-trip time.
    pub rtt_ms: Option<u64>,
    /// When it was last heard from, Unix milliseconds.
    pub last_seen_ms: Option<u64>,
    /// How its preferred open connection runs (direct, relayed,
    /// hole-punched); `None` while not connected.
    pub connection: Option<crate::nat::ConnectionKind>,
}

type Reply<T> = oneshot::Sender<T>;

/// A command from a handle to the driver.
#[derive(Debug)]
pub(crate) enum Command {
    ListenAddrs(Reply<Vec<Multiaddr>>),
    Dial(Multiaddr, Reply<Result<(), NetError>>),
    Request {
        peer: PeerId,
        protocol: String,
        payload: Vec<u8>,
        reply: Reply<Result<Vec<u8>, NetError>>,
    },
    Publish {
        topic: String,
        payload: Vec<u8>,
        reply: Reply<Result<(), NetError>>,
    },
    Subscribe(String, Reply<Result<(), NetError>>),
    Peers(Reply<Vec<PeerInfo>>),
    Revoke(Box<SignedRevocation>, Reply<Result<(), NetError>>),
    RenewCertificate(Vec<u8>, Reply<Result<usize, NetError>>),
    FindPeer(PeerId),
    Protect(BTreeSet<PeerId>),
    Shutdown(Reply<()>),
}

/// A cheap, cloneable handle to a running network layer.
#[derive(Clone, Debug)]
pub struct NetHandle {
    local_peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    metrics: NetMetrics,
    streams: Streams,
    direct: DirectLinks,
}

/// Starts the network layer described by `config`: builds the transport,
/// listens on `config.listen`, registers metrics into `registry`, and runs
/// the swarm in its own tokio task. Must be called inside a tokio runtime.
pub async fn spawn(
    config: NetConfig,
    registry: &mut Registry,
) -> Result<(NetHandle, mpsc::Receiver<NetEvent>), NetError> {
    let metrics = NetMetrics::register(registry);
    let (commands_tx, commands_rx) = mpsc::channel(config.queues.commands_max.max(1));
    let (events_tx, events_rx) = mpsc::channel(config.queues.events_max.max(1));
    let keypair = crate::ids::keypair(&config.identity)?;
    let driver = Driver::new(config, metrics.clone(), commands_rx, events_tx)?;
    let local_peer_id = driver.local_peer_id();
    let streams = driver.streams();
    let direct = DirectLinks::new(&keypair, streams.admitted.clone())?;
    tokio::spawn(driver.run());
    let handle = NetHandle {
        local_peer_id,
        commands: commands_tx,
        metrics,
        streams,
        direct,
    };
    Ok((handle, events_rx))
}

impl NetHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, NetError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| NetError::Stopped)?;
        answer.await.map_err(|_| NetError::Stopped)
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// The metric handles of this node (also registered in the registry).
    pub fn metrics(&self) -> &NetMetrics {
        &self.metrics
    }

    /// The addresses the node listens on (empty once stopped).
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.call(Command::ListenAddrs).await.unwrap_or_default()
    }

    /// Dials `addr` (the connection is then admitted or refused like any other).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.call(|reply| Command::Dial(addr, reply)).await?
    }

    /// Sends `payload` to `peer` under the application protocol name
    /// `protocol` and waits for its answer. A peer that is not admitted is
    /// dialled (or looked up) on demand and the request waits for its
    /// admission, at most two admission deadlines, bounded per peer and in
    /// all (see [`crate::awaiting`]); past that it fails with
    /// [`NetError::NotAdmitted`].
    pub async fn request(
        &self,
        peer: PeerId,
        protocol: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, NetError> {
        let protocol = protocol.to_string();
        self.call(|reply| Command::Request {
            peer,
            protocol,
            payload,
            reply,
        })
        .await?
    }

    /// Opens a long-lived stream to the admitted `peer` under the protocol
    /// `/agent-mesh/<name>` (see [`crate::streams`] for when to prefer it
    /// over [`Self::request`]).
    pub async fn open_stream(&self, peer: PeerId, name: &str) -> Result<Stream, NetError> {
        let opened = self.streams.open(peer, name).await;
        if let Err(NetError::NotAdmitted(_)) = opened {
            self.find_peer(peer);
        }
        opened
    }

    /// Asks the network to look for `peer` through the connected peers (a
    /// Kademlia lookup that dials the addresses they know) unless it is
    /// connected: a peer that restarted at a new address is found again this
    /// way (see [`crate::lookup`]). At most one lookup per peer every
    /// [`crate::lookup::LOOKUP_INTERVAL_MS`]; never waits, and is dropped
    /// when the command queue is full. Streams and requests to a peer that
    /// is not admitted ask for it themselves.
    pub fn find_peer(&self, peer: PeerId) {
        let _ = self.commands.try_send(Command::FindPeer(peer));
    }

    /// Replaces the set of peers whose connections are never closed for
    /// being unused (see [`crate::trim`]), for example the peers a Raft
    /// committee member holds long-lived streams with.
    pub async fn protect(&self, peers: BTreeSet<PeerId>) -> Result<(), NetError> {
        self.commands
            .send(Command::Protect(peers))
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Accepts the streams admitted peers open under `/agent-mesh/<name>`;
    /// one acceptor per protocol and process.
    pub fn accept_streams(&self, name: &str) -> Result<IncomingStreams, NetError> {
        self.streams.accept(name)
    }

    /// Direct links to admitted peers, outside the swarm (see [`crate::direct`]).
    pub fn direct_links(&self) -> &DirectLinks {
        &self.direct
    }

    /// Whether `peer` is admitted now.
    pub fn is_admitted(&self, peer: &PeerId) -> bool {
        self.streams.admitted.contains(peer)
    }

    /// The mesh protocol versions this node speaks (see [`crate::version`]).
    pub fn protocol_versions(&self) -> VersionRange {
        self.streams.versions.ours()
    }

    /// The mesh protocol version this node uses with `peer`, as negotiated
    /// from the range the peer announced (unknown before its identify).
    pub fn peer_version(&self, peer: &PeerId) -> PeerVersion {
        self.streams.versions.get(peer)
    }

    /// Whether this node is publicly reachable, as AutoNAT found it (or as
    /// configured external addresses declare).
    pub fn reachability(&self) -> crate::nat::Reachability {
        self.metrics.nat.reachability()
    }

    /// Publishes an encoded signed envelope on `topic`.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), NetError> {
        let topic = topic.to_string();
        self.call(|reply| Command::Publish {
            topic,
            payload,
            reply,
        })
        .await?
    }

    /// Subscribes to `topic`; its verified messages arrive as [`NetEvent::Gossip`].
    pub async fn subscribe(&self, topic: &str) -> Result<(), NetError> {
        let topic = topic.to_string();
        self.call(|reply| Command::Subscribe(topic, reply)).await?
    }

    /// Every peer the node knows, with state, addresses, RTT and last-seen time.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        self.call(Command::Peers).await.unwrap_or_default()
    }

    /// Learns a CA-signed revocation: the revoked peer is disconnected and
    /// banned, refused from now on, and its gossip is no longer accepted.
    pub async fn revoke(&self, revocation: SignedRevocation) -> Result<(), NetError> {
        self.call(|reply| Command::Revoke(Box::new(revocation), reply))
            .await?
    }

    /// Presents `cert_der` (this node's renewed certificate) from now on and
    /// sends it to every admitted peer at once, whose admission then follows
    /// the new validity; connections stay open. Returns how many peers it
    /// went to. A certificate this node's own admission would refuse (not
    /// for its key, not from the mesh CA, expired) is refused here.
    pub async fn renew_certificate(&self, cert_der: Vec<u8>) -> Result<usize, NetError> {
        self.call(|reply| Command::RenewCertificate(cert_der, reply))
            .await?
    }

    /// Stops the network layer: closes every connection and ends the task.
    /// Other clones of the handle get [`NetError::Stopped`] afterwards.
    pub async fn shutdown(self) {
        let _ = self.call(Command::Shutdown).await;
    }
}
