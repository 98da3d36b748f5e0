//! Agent Mesh networking: a libp2p swarm (transports, certificate admission,
//! discovery, gossip, direct requests) around state machines that make every
//! decision without sockets, clocks or threads.
//!
//! The sans-I/O core takes the current time (`now_ms`, milliseconds since the
//! Unix epoch) with every input and draws every random choice from a seeded
//! generator, so the same inputs always give the same outputs; the driver is
//! the only place with I/O.
//!
//! ```text
//!   application (mesh-node)
//!     │ NetHandle: dial, request, publish, subscribe, peers, revoke   ▲ NetEvent (bounded)
//!     v                                                                │
//!   +-- driver (one tokio task) ---------------------------------------+-----+
//!   |  swarm: transport (TCP+Noise+Yamux, QUIC | Memory+Noise+Yamux)         |
//!   |         limits · keep-alive · identify · ping · kad · mdns · gossipsub  |
//!   |         cert exchange (/agent-mesh/cert/1) · rpc (/agent-mesh/rpc/1)    |
//!   |         NAT: autonat · relay client (+ server on relays) · dcutr        |
//!   |      events │                                   ▲ actions               |
//!   |             v                                   │                       |
//!   |  admission  per connection: awaiting certificate -> admitted | rejected |
//!   |  ban        bounded list of rejected peers with expiry                  |
//!   |  peers      bounded table: state, RTT, last seen; backoff with jitter   |
//!   |  discovery  bounded address book                                        |
//!   |  lookup     paced Kademlia lookups of wanted peers that are unreachable |
//!   |  awaiting   requests held while their peer is dialled on demand         |
//!   |  gossip     envelope verification before forwarding (accept/reject)     |
//!   |  nat        connection kinds, reachability, relays to reserve on        |
//!   +-------------------------------------------------------------------------+
//! ```
//!
//! On a new connection the driver first asks [`ban::BanList::is_banned`], then
//! [`admission::Admission::on_connected`]; the dialer sends its certificate
//! ([`cert_exchange`]) and the listener answers with its own. An exchange that
//! misses its deadline is tried again with a doubled deadline; every rejection
//! means "disconnect", and one for a certificate that failed verification
//! also means "ban" (a peer that was only slow is not banned). A request
//! to a peer that is not admitted is held while the driver dials the peer
//! on demand ([`awaiting`]). Until a peer is admitted its requests are
//! answered with an error and the gossip it relays is held (bounded) until
//! its admission settles, then validated or ignored; nothing it sends reaches
//! the application unadmitted. On a
//! timer the driver applies admission deadlines and dials peers from
//! [`peers::PeerTable::peers_to_dial`] and the bootstrap list to keep
//! [`NetConfig::target_peers`] admitted peers.
//!
//! Identify also carries the mesh protocol versions a node speaks; the
//! driver records, per peer, the newest version both speak
//! ([`version::PeerVersions`], read through [`NetHandle::peer_version`]), so
//! the application encodes what it sends for that version and nodes of two
//! releases work together (see [`version`]).

pub mod admission;
pub mod awaiting;
pub mod ban;
pub mod behaviour;
pub mod bench;
pub mod cert_exchange;
pub mod codec;
pub mod config;
pub mod direct;
pub mod discovery;
mod driver;
pub mod error;
pub mod gossip;
pub mod handle;
pub mod ids;
pub mod keep_alive;
pub mod link_delay;
pub mod log_limit;
pub mod lookup;
pub mod metrics;
pub mod nat;
pub mod peers;
pub mod streams;
pub mod transport;
pub mod trim;
pub mod version;

pub use admission::{
    Admission, AdmissionConfig, AdmissionError, AdmissionState, Due, RejectReason, Rejection,
    Retry, Verdict,
};
pub use ban::{BanEntry, BanError, BanList};
pub use config::{
    envelope_mesh_id, ConnectionLimits, NatConfig, NetConfig, QueueLimits, RelayLimits, SizeLimits,
    Timing, TransportKind,
};
pub use direct::{DirectLink, DirectLinks, DirectListener};
pub use error::NetError;
pub use handle::{spawn, NetEvent, NetHandle, PeerInfo, PeerStatus};
pub use libp2p::{multiaddr, Multiaddr, PeerId, Stream};
pub use log_limit::{LogLimiter, Suppressed};
pub use metrics::NetMetrics;
pub use nat::{ConnectionKind, Reachability};
pub use peers::{Backoff, PeerError, PeerState, PeerTable, PeerTableConfig};
pub use streams::{read_frame, write_frame, IncomingStreams};
pub use version::{PeerVersion, PeerVersions, VersionRange};
