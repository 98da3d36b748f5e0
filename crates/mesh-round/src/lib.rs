//! The Agent Mesh round engine: everything a node decides in a federated round,
//! with no I/O (no sockets, no clocks, no files, no async runtime).
//!
//! ```text
//!   mesh-node runtime (sockets, Raft, timers)      sim (in-process network, seeded faults)
//!                 \                                   /
//!                  └──── events ──►  NodeEngine  ◄──┘
//!                                       │ actions (send, propose, train, combine)
//!             job::CheckedJob ── the typed job spec every role works from
//!             protocol::{coordinator, trainer, group, finals}   the round roles
//!             protocol::worker   local training and combining (robust rule, server step)
//!             cache              content-addressed blobs bounded in bytes (LRU, LFU or W-TinyLFU)
//! ```
//!
//! The node process and the simulator drive the same [`protocol::NodeEngine`],
//! so what the simulator and the benchmarks measure is what a deployed node runs.

pub mod cache;
pub mod detect;
pub mod job;
pub mod parallel;
pub mod protocol;
pub mod sim;
