//! Configuration of a node's network layer: who it is, which mesh it joins,
//! where it listens and whom it dials first, and every limit it enforces.
//!
//! [`NetConfig::new`] fills in defaults that suit a production node; tests and
//! the simulator change [`NetConfig::transport`] to [`TransportKind::Memory`]
//! and shorten the timers.

use std::time::Duration;

use libp2p::Multiaddr;
use mesh_security::ca::CertVerifier;
use mesh_security::envelope::MeshId;
use mesh_security::NodeIdentity;

use crate::link_delay::LinkDelay;
use crate::version::VersionRange;

/// Which transports the swarm speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// TCP + Noise + Yamux, and QUIC (TLS 1.3) beside it: `/ip4/../tcp/..` and
    /// `/ip4/../udp/../quic-v1` addresses.
    Network,
    /// libp2p's in-process `MemoryTransport` + Noise + Yamux: `/memory/N`
    /// addresses, for tests and the simulator (many nodes in one process).
    Memory,
}

/// Connection limits enforced by the swarm before any protocol runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConnectionLimits {
    /// Established connections in total.
    pub established_max: u32,
    /// Established connections to one peer.
    pub established_per_peer_max: u32,
    /// Incoming connections still in their handshake.
    pub pending_incoming_max: u32,
    /// Outgoing dials still in their handshake.
    pub pending_outgoing_max: u32,
    /// A connection with no stream in use for this long is closed.
    pub idle_timeout: Duration,
    /// Refuse new connections while the process uses more than this fraction
    /// of physical memory (`None`: no memory limit).
    pub memory_fraction_max: Option<f64>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            established_max: 256,
            // A relayed connection, its hole-punched successor and a
            // simultaneous dial from the other side may coexist for a moment.
            established_per_peer_max: 3,
            pending_incoming_max: 64,
            pending_outgoing_max: 64,
            idle_timeout: Duration::from_secs(30),
            memory_fraction_max: Some(0.9),
        }
    }
}

/// Message size limits, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeLimits {
    /// Largest request payload sent or accepted (direct transfers, model blobs).
    pub request_bytes_max: usize,
    /// Largest response payload sent or accepted.
    pub response_bytes_max: usize,
    /// Largest gossip message (an encoded envelope).
    pub gossip_bytes_max: usize,
}

impl Default for SizeLimits {
    fn default() -> Self {
        Self {
            request_bytes_max: 256 * 1024 * 1024,
            response_bytes_max: 256 * 1024 * 1024,
            gossip_bytes_max: 4 * 1024 * 1024,
        }
    }
}

/// Queue bounds of the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    /// Events buffered for the application; when full, new gossip is dropped
    /// and new requests are answered "busy" (counted in metrics).
    pub events_max: usize,
    /// Commands from [`crate::NetHandle`]s buffered for the driver.
    pub commands_max: usize,
    /// Outbound requests awaiting a response.
    pub outbound_requests_max: usize,
    /// Inbound requests handed to the application and awaiting its answer.
    pub inbound_requests_max: usize,
    /// Concurrent request-response streams per protocol (libp2p bound).
    pub streams_max: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            events_max: 1024,
            commands_max: 256,
            outbound_requests_max: 256,
            inbound_requests_max: 64,
            streams_max: 32,
        }
    }
}

/// Timers of the network layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long the first attempt of the certificate exchange may take (each
    /// further attempt may take twice as long as the one before).
    pub admission_deadline: Duration,
    /// Attempts of the certificate exchange before a silent peer is
    /// disconnected (not banned: only a bad certificate bans).
    pub admission_attempts: u32,
    /// How long a refused peer is kept out.
    pub ban_duration: Duration,
    /// Timeout of one request (sending the request and receiving the response).
    pub request_timeout: Duration,
    /// Interval between pings on each connection (RTT and liveness).
    pub ping_interval: Duration,
    /// Gossipsub heartbeat (mesh maintenance).
    pub gossip_heartbeat: Duration,
    /// How often the driver runs its timers (admission deadlines, bans, dialing).
    pub tick: Duration,
    /// First redial delay after a failure (doubles per failure, seeded jitter).
    pub redial_base: Duration,
    /// Largest redial delay.
    pub redial_max: Duration,
    /// How often a Kademlia bootstrap (random walk) runs while connected.
    pub kad_bootstrap_interval: Duration,
    /// Close a connection unused this long (no request either way) unless
    /// it is kept or protected (see [`crate::trim`]);
    /// `None` leaves connections open while any protocol holds a stream.
    pub unused_connection_close: Option<Duration>,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            admission_deadline: Duration::from_secs(10),
            admission_attempts: 3,
            ban_duration: Duration::from_secs(600),
            request_timeout: Duration::from_secs(120),
            ping_interval: Duration::from_secs(15),
            gossip_heartbeat: Duration::from_secs(1),
            tick: Duration::from_millis(200),
            redial_base: Duration::from_millis(500),
            redial_max: Duration::from_secs(60),
            kad_bootstrap_interval: Duration::from_secs(300),
            unused_connection_close: None,
        }
    }
}

/// Limits of the circuit relay v2 server (a node with the relay role): what
/// it spends on peers that cannot be reached directly.
///
/// libp2p's own defaults (16 circuits, 2 minutes and 128 KiB per circuit) are
/// sized for hole-punching rendezvous only and would cut a federated round's
/// model transfer (a few hundred KB to a few MB per blob) in the middle; these
/// let a relayed peer train and aggregate for an hour per circuit while still
/// bounding what one relay serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayLimits {
    /// Reservations (peers listening through this relay) in total.
    pub reservations_max: usize,
    /// Reservations of one peer.
    pub reservations_per_peer_max: usize,
    /// How long a reservation lasts before the peer must renew it.
    pub reservation_duration: Duration,
    /// Circuits (relayed connections) open at once.
    pub circuits_max: usize,
    /// Circuits open at once per source peer.
    pub circuits_per_peer_max: usize,
    /// Longest life of one circuit; the peers reconnect after it.
    pub circuit_duration: Duration,
    /// Most bytes relayed on one circuit, both directions together.
    pub circuit_bytes_max: u64,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            reservations_max: 128,
            reservations_per_peer_max: 4,
            reservation_duration: Duration::from_secs(3_600),
            circuits_max: 64,
            circuits_per_peer_max: 8,
            circuit_duration: Duration::from_secs(3_600),
            circuit_bytes_max: 256 * 1024 * 1024,
        }
    }
}

/// NAT traversal: reachability probes (AutoNAT), circuit relay v2 (server
/// and client) and hole punching (DCUtR). See `docs/operations.md`.
#[derive(Clone, Debug, PartialEq)]
pub struct NatConfig {
    /// Ask bootstrap and relay peers to dial this node back, to learn whether
    /// it is publicly reachable.
    pub autonat: bool,
    /// First reachability probe after start, then again every this long
    /// until the answer is certain.
    pub autonat_probe_interval: Duration,
    /// Reserve a slot on relay peers (and advertise the `/p2p-circuit`
    /// address) while AutoNAT finds this node private.
    pub relay_client: bool,
    /// Relays to reserve on at once.
    pub relays_max: usize,
    /// Upgrade relayed connections to direct ones by hole punching.
    pub hole_punching: bool,
    /// Serve as a circuit relay for other peers (the relay role).
    pub relay_server: bool,
    /// The relay server's limits.
    pub relay_limits: RelayLimits,
    /// Addresses at which this node is reachable from outside although it
    /// listens elsewhere (port forwarding, a public IP on a NAT gateway):
    /// advertised to peers as confirmed external addresses.
    pub external_addresses: Vec<Multiaddr>,
}

impl Default for NatConfig {
    fn default() -> Self {
        Self {
            autonat: true,
            autonat_probe_interval: Duration::from_secs(30),
            relay_client: true,
            relays_max: 2,
            hole_punching: true,
            relay_server: false,
            relay_limits: RelayLimits::default(),
            external_addresses: Vec::new(),
        }
    }
}

/// Everything [`crate::spawn`] needs.
#[derive(Debug)]
pub struct NetConfig {
    /// The mesh's name; peers presenting another name are refused
    /// ([`crate::RejectReason::WrongMesh`]) and envelopes carry
    /// [`envelope_mesh_id`] of it.
    pub mesh_id: String,
    /// This node's key: its libp2p identity (Noise) and envelope signer.
    pub identity: NodeIdentity,
    /// This node's mesh certificate (DER), issued by the mesh CA for `identity`.
    pub certificate_der: Vec<u8>,
    /// The pinned mesh CA that peers' certificates must chain to.
    pub verifier: CertVerifier,
    /// Addresses to listen on (port 0 picks a free port).
    pub listen: Vec<Multiaddr>,
    /// Addresses dialled at start and redialled with backoff while the node
    /// has fewer than `target_peers` admitted peers.
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the local network with mDNS (Network transport only).
    pub mdns: bool,
    /// Which transports to use.
    pub transport: TransportKind,
    /// With [`TransportKind::Memory`]: each connection's one-way delay is
    /// drawn from this range (seeded by `seed`), so many in-process nodes
    /// see wide-area latency. Ignored on the network transport.
    pub memory_link_delay: Option<LinkDelay>,
    /// Admitted peers the node tries to keep, dialling known peers when below.
    pub target_peers: usize,
    /// Most admitted peers whose connections are held open; connections to
    /// further admitted peers (inbound surplus, Kademlia queries) close when
    /// idle. At least `target_peers`.
    pub kept_peers_max: usize,
    /// Connection limits.
    pub limits: ConnectionLimits,
    /// Message sizes.
    pub sizes: SizeLimits,
    /// Queue bounds.
    pub queues: QueueLimits,
    /// Timers.
    pub timing: Timing,
    /// Most peers held in the peer table and ban list.
    pub peers_max: usize,
    /// Seed of every random choice the layer makes (redial jitter).
    pub seed: u64,
    /// NAT traversal (AutoNAT, relays, hole punching, external addresses).
    pub nat: NatConfig,
    /// The mesh protocol versions this node speaks and announces
    /// (see [`crate::version`]); capped below this build's newest, the node
    /// talks as a node of the previous release would.
    pub versions: VersionRange,
}

impl NetConfig {
    /// A configuration with production defaults, listening nowhere and
    /// dialling no one yet (fill in `listen` and `bootstrap`).
    pub fn new(
        mesh_id: impl Into<String>,
        identity: NodeIdentity,
        certificate_der: Vec<u8>,
        verifier: CertVerifier,
    ) -> Self {
        Self {
            mesh_id: mesh_id.into(),
            identity,
            certificate_der,
            verifier,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            mdns: false,
            transport: TransportKind::Network,
            memory_link_delay: None,
            target_peers: 8,
            kept_peers_max: 16,
            limits: ConnectionLimits::default(),
            sizes: SizeLimits::default(),
            queues: QueueLimits::default(),
            timing: Timing::default(),
            peers_max: 1024,
            seed: 0,
            nat: NatConfig::default(),
            versions: VersionRange::default(),
        }
    }

    /// The envelope mesh id of this configuration's mesh.
    pub fn envelope_mesh_id(&self) -> MeshId {
        envelope_mesh_id(&self.mesh_id)
    }
}

/// The 16-byte envelope [`MeshId`] of a mesh name: the first 16 bytes of
/// BLAKE3 over a domain tag and the name. Every node of a mesh seals its
/// envelopes with it, and gossip from other meshes is rejected.
pub fn envelope_mesh_id(mesh_id: &str) -> MeshId {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"agent-mesh/mesh-id/v1\0");
    hasher.update(mesh_id.as_bytes());
    let digest = hasher.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest.as_bytes()[..16]);
    MeshId(id)
}
