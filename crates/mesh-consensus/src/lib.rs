//! Agent Mesh consensus: the replicated mesh state machine.
//!
//! The committee agrees on one ordered log of [`Command`]s; every node applies
//! the committed entries, in order, to its own [`MeshState`]. [`MeshState::apply`]
//! is deterministic and does no I/O: no clocks, no randomness, no hash-map
//! iteration order (every map is a `BTreeMap`). Two nodes that apply the same
//! entries therefore hold byte-identical state and the same [`StateHash`],
//! which is what commit certificates sign and what Byzantine cross-checks
//! compare.
//!
//! ```text
//!   raft log (committed entries: index, Command)
//!        |
//!        v
//!   MeshState::apply(index, &Command) -- Err(ApplyError): rejected, state unchanged
//!        |  Ok(Response)
//!        v
//!   +-----------------------------------------------------------+
//!   | members     node -> roles, zone; certificate revocations  |
//!   | jobs        job -> spec, rounds; model hashes             |
//!   | reputation  evidence -> score -> quarantine               |
//!   | privacy     per-job epsilon budget ledger                 |
//!   | kv          plain key-value (benchmarks)                  |
//!   +-----------------------------------------------------------+
//!        |  state_hash = blake3(prev || index || command bytes)
//!        v
//!   snapshot::encode / snapshot::decode  (postcard, size-bounded, checksummed)
//! ```
//!
//! The Raft committee is layered on top (openraft 0.10 with pre-vote):
//!
//! ```text
//!            ConsensusNode (node)  propose / status / read_state / handle_rpc
//!      ┌──────────┬──────┴───────┬──────────────┬────────────────┐
//!   openraft   store (redb)   network        committee       certificate
//!   Raft core  log, vote,     wire codec,    voter choice,   signed statements,
//!   (engine)   snapshots,     RaftTransport  self-healing    collector, verify,
//!              group commit   trait ◄─ memnet (tests, sim)    evidence
//! ```
//!
//! The crate knows nothing of libp2p: the node runtime implements
//! [`network::RaftTransport`] over the P2P layer and feeds inbound bytes to
//! [`node::ConsensusNode::handle_rpc`].

pub mod append_stream;
pub mod backoff;
pub mod bench;
pub mod certificate;
pub mod command;
pub mod committee;
pub mod error;
pub mod follow;
pub mod memnet;
pub mod metrics;
pub mod network;
pub mod node;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod types;

pub use command::{
    Command, DpBudget, EvidenceKind, JobId, JobSpec, JobSpecError, ModelHash, NodeId,
    RevocationReason, Role, RoundMetrics,
};
pub use error::{
    ApplyError, CommandDecodeError, ConsensusError, SnapshotError, StoreError, TransportError,
};
pub use network::RaftTransport;
pub use node::{ConsensusConfig, ConsensusNode, ConsensusStatus};
pub use state::{MeshState, Response, StateHash};
pub use types::{CommitReceipt, MemberId, MemberInfo};
