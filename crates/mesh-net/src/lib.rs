//! Agent Mesh networking core: the decisions a node's network layer makes,
//! kept free of sockets, clocks and threads so they can be tested exactly and
//! driven by either the libp2p swarm or the in-memory simulator.
//!
//! Every input carries the current time (`now_ms`, milliseconds since the Unix
//! epoch) and every random choice comes from a seeded generator, so the same
//! inputs always give the same outputs.
//!
//! ```text
//!        network driver (libp2p swarm or in-memory network)
//!          | connected / certificate / closed / ping / timer (now_ms)
//!          v
//!   +--------------------------------------------------------------+
//!   | admission  per connection: awaiting certificate -> admitted  |
//!   |            or rejected(reason); revocations and expiry later |
//!   |            reject admitted peers; may_process() gates input  |
//!   | ban        bounded list of rejected peers with expiry        |
//!   | peers      bounded table: state, RTT, last seen; backoff     |
//!   |            with seeded jitter; silence -> down; whom to dial |
//!   +--------------------------------------------------------------+
//!          | actions: disconnect, ban, dial, metrics labels
//!          v
//!        network driver
//! ```
//!
//! The driver owns one of each per node. On a new connection it first asks
//! [`ban::BanList::is_banned`], then [`admission::Admission::on_connected`];
//! every rejection it gets back means "disconnect and ban"; it calls
//! [`peers::PeerTable::peers_to_dial`] on a timer to keep the target number of
//! connections.

pub mod admission;
pub mod ban;
pub mod peers;

pub use admission::{
    Admission, AdmissionConfig, AdmissionError, AdmissionState, RejectReason, Rejection, Verdict,
};
pub use ban::{BanEntry, BanError, BanList};
pub use peers::{Backoff, PeerError, PeerInfo, PeerState, PeerTable, PeerTableConfig};
