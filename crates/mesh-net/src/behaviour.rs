//! The composed libp2p behaviour of a mesh node: one field per protocol.
//!
//! Connection limits come first so that they refuse a connection before any
//! other protocol allocates state for it.

// The derive generates `MeshBehaviourEvent` (one variant per field, named
// after it) without documentation.
#![allow(missing_docs)]

use std::num::NonZeroUsize;

use libp2p::identity::Keypair;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    autonat, connection_limits, dcutr, gossipsub, identify, kad, mdns, memory_connection_limits,
    ping, relay, request_response, StreamProtocol,
};

use crate::codec::FrameCodec;
use crate::config::{NetConfig, TransportKind};
use crate::keep_alive::KeepAlive;
use crate::{cert_exchange, NetError};

/// The protocol id of direct requests.
pub const RPC_PROTOCOL: StreamProtocol = StreamProtocol::new("/agent-mesh/rpc/1");
/// The protocol id of the mesh's Kademlia DHT (separate from the public IPFS DHT).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/agent-mesh/kad/1");
/// The identify protocol version string; the mesh protocol versions a node
/// speaks ride in its agent version (see [`crate::version`]).
pub const IDENTIFY_VERSION: &str = "/agent-mesh/id/1";

/// Every protocol a mesh node speaks.
#[derive(NetworkBehaviour)]
pub struct MeshBehaviour {
    /// Connection count limits.
    pub limits: connection_limits::Behaviour,
    /// Refuses connections when the process is short of memory.
    pub memory: Toggle<memory_connection_limits::Behaviour>,
    /// Holds connections to admitted peers open.
    pub keep_alive: KeepAlive,
    /// Exchanges listen addresses and protocols.
    pub identify: identify::Behaviour,
    /// Liveness and RTT.
    pub ping: ping::Behaviour,
    /// Peer routing.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// LAN discovery.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Broadcast.
    pub gossipsub: gossipsub::Behaviour,
    /// Certificate exchange (admission).
    pub cert: request_response::Behaviour<FrameCodec>,
    /// Direct requests and blob transfers.
    pub rpc: request_response::Behaviour<FrameCodec>,
    /// Long-lived application streams (see [`crate::streams`]).
    pub streams: libp2p_stream::Behaviour,
    /// Reachability probes: asks chosen peers to dial back (see [`crate::nat`]).
    pub autonat: Toggle<autonat::Behaviour>,
    /// Circuit relay v2 client: reservations on relays, relayed dials.
    pub relay_client: relay::client::Behaviour,
    /// Circuit relay v2 server (nodes with the relay role).
    pub relay: Toggle<relay::Behaviour>,
    /// Hole punching of relayed connections (DCUtR).
    pub dcutr: Toggle<dcutr::Behaviour>,
}

/// Entries per Kademlia bucket: the peer table's bound, at least K.
fn kbucket_size(peers_max: usize) -> NonZeroUsize {
    NonZeroUsize::new(peers_max.max(kad::K_VALUE.get())).unwrap_or(kad::K_VALUE)
}

fn gossipsub_config(config: &NetConfig) -> Result<gossipsub::Config, NetError> {
    gossipsub::ConfigBuilder::default()
        .heartbeat_interval(config.timing.gossip_heartbeat)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(config.sizes.gossip_bytes_max)
        .connection_handler_queue_len(config.queues.events_max.max(64))
        .build()
        .map_err(|e| NetError::Config(format!("gossipsub: {e}")))
}

impl MeshBehaviour {
    /// The behaviour of a node with `keypair` under `config`; `relay_client`
    /// comes with the transport ([`crate::transport::build_with_relay_client`]).
    pub fn new(
        keypair: &Keypair,
        config: &NetConfig,
        relay_client: relay::client::Behaviour,
    ) -> Result<Self, NetError> {
        let peer_id = keypair.public().to_peer_id();
        let l = &config.limits;
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(l.established_max))
            .with_max_established_per_peer(Some(l.established_per_peer_max))
            .with_max_pending_incoming(Some(l.pending_incoming_max))
            .with_max_pending_outgoing(Some(l.pending_outgoing_max));
        let memory = l
            .memory_fraction_max
            .map(memory_connection_limits::Behaviour::with_max_percentage);
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_VERSION.to_string(), keypair.public())
                .with_agent_version(config.versions.agent_version())
                // A new relay circuit address must reach peers at once, not
                // at the next periodic identify.
                .with_push_listen_addr_updates(true),
        );
        let ping =
            ping::Behaviour::new(ping::Config::new().with_interval(config.timing.ping_interval));
        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        kad_config.set_periodic_bootstrap_interval(Some(config.timing.kad_bootstrap_interval));
        // A full bucket makes Kademlia dial its oldest disconnected entry
        // whenever another peer is seen (to evict it if dead). With unused
        // connections closed that is a reconnection for every new
        // connection, so buckets hold as many peers as the peer table.
        kad_config.set_kbucket_size(kbucket_size(config.peers_max));
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        kad.set_mode(Some(kad::Mode::Server));
        let mdns = if config.mdns && config.transport == TransportKind::Network {
            let behaviour = mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                .map_err(|e| NetError::Transport(format!("mdns: {e}")))?;
            Some(behaviour)
        } else {
            None
        };
        let gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(keypair.clone()),
            gossipsub_config(config)?,
        )
        .map_err(|e| NetError::Config(format!("gossipsub: {e}")))?;
        let streams = NonZeroUsize::new(config.queues.streams_max)
            .ok_or_else(|| NetError::Config("queues.streams_max must be at least 1".into()))?;
        let cert = request_response::Behaviour::with_codec(
            cert_exchange::CODEC,
            [(
                cert_exchange::PROTOCOL,
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(config.timing.admission_deadline)
                .with_max_concurrent_streams(streams.get()),
        );
        let rpc = request_response::Behaviour::with_codec(
            FrameCodec {
                request_bytes_max: config.sizes.request_bytes_max,
                response_bytes_max: config.sizes.response_bytes_max,
            },
            [(RPC_PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(config.timing.request_timeout)
                .with_max_concurrent_streams(streams.get()),
        );
        Ok(Self {
            limits: connection_limits::Behaviour::new(limits),
            memory: memory.into(),
            keep_alive: KeepAlive::default(),
            identify,
            ping,
            kad,
            mdns: mdns.into(),
            gossipsub,
            cert,
            rpc,
            streams: libp2p_stream::Behaviour::new(),
            autonat: crate::nat::autonat_behaviour(peer_id, &config.nat).into(),
            relay_client,
            relay: crate::nat::relay_server(peer_id, &config.nat).into(),
            dcutr: config
                .nat
                .hole_punching
                .then(|| dcutr::Behaviour::new(peer_id))
                .into(),
        })
    }
}
