//! The Agent Mesh node runtime: what turns the round engine (`mesh-round`)
//! and the committee (`mesh-consensus`) into a process on a real network.
//!
//! ```text
//!   config ──► runtime::run ──┬── mesh-net swarm (links, admission, gossip, blobs)
//!                             ├── mesh-consensus committee (Raft over direct links)
//!                             ├── mesh-round NodeEngine (events in, actions out)
//!                             └── api (HTTP: jobs, status, metrics, health)
//! ```
//!
//! The engine decides; the runtime only carries out its actions (send, propose,
//! train on a blocking thread, combine) and feeds it the committed state, the
//! clock and the messages that arrive.

pub mod api;
pub mod config;
pub mod runtime;
pub mod telemetry;
