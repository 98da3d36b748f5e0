//! What the runtime publishes for the API: a read-only view of the node.

use serde::{Deserialize, Serialize};

/// The node as the API shows it; replaced whole on every change.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeSnapshot {
    /// True when the node is admitted to the mesh and, if it runs the
    /// committee protocol, a member in step with the leader (`runtime/view.rs`).
    pub ready: bool,
    /// Why the node is not ready (empty when it is).
    pub not_ready_reason: String,
    /// `GET /v1/status`.
    pub status: StatusView,
    /// `GET /v1/peers`.
    pub peers: Vec<PeerView>,
    /// `GET /v1/consensus`, when the node runs the committee protocol.
    pub consensus: Option<serde_json::Value>,
    /// `GET /v1/jobs`: jobs in this node's committed state.
    pub jobs: Vec<super::JobView>,
    /// `GET /v1/reputation`: members with evidence against them.
    pub reputation: Vec<ReputationView>,
}

/// One row of `GET /v1/reputation`: a node with evidence against it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReputationView {
    /// The node's id.
    pub node: String,
    /// Its score (starts at 1000; evidence lowers it).
    pub score: u32,
    /// Whether it is quarantined (score below 500): never selected for rounds.
    pub quarantined: bool,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// This node's id (libp2p peer id of its key).
    pub node_id: String,
    /// The mesh it belongs to.
    pub mesh_id: String,
    /// The binary's version.
    pub version: String,
    /// Roles in its certificate.
    pub roles: Vec<String>,
    /// The zone it declared (`[zone]` in its config), if any.
    pub zone: Option<String>,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Addresses it listens on.
    pub listen_addrs: Vec<String>,
    /// Open connections to peers.
    pub peers_connected: usize,
    /// Peers whose certificate was accepted.
    pub peers_admitted: usize,
    /// Whether peers can dial this node: `public`, `private` (behind a NAT:
    /// reached through a relay or by hole punching) or `unknown` (AutoNAT).
    #[serde(default)]
    pub reachability: String,
    /// The mesh protocol versions this node speaks, `oldest-newest`.
    #[serde(default)]
    pub protocol_versions: String,
    /// On a node without the committee: the log index of the committed
    /// state it follows without the log (fetched from peers, checked against
    /// a commit certificate); absent on committee nodes and before the first.
    #[serde(default)]
    pub followed_index: Option<u64>,
}

/// One row of `GET /v1/peers`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    /// The peer's id.
    pub peer_id: String,
    /// Known addresses.
    pub addresses: Vec<String>,
    /// connected, admitted, down or banned.
    pub state: String,
    /// Last ping round trip, if measured.
    pub rtt_ms: Option<f64>,
    /// Milliseconds since anything was heard from it.
    pub last_seen_ms_ago: Option<u64>,
    /// How the connection to it runs: `direct`, `relayed` (through a circuit
    /// relay) or `hole_punched`; absent while not connected.
    #[serde(default)]
    pub connection: Option<String>,
    /// The mesh protocol version this node uses with it: `2`, `1`,
    /// `unknown` (it has not identified itself yet) or `incompatible
    /// (speaks A-B)` when the two share none.
    #[serde(default)]
    pub protocol_version: String,
}
