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
//! Storage (the durable log) and the Raft network are layered on top of this
//! crate; nothing here knows about either.

pub mod command;
pub mod error;
pub mod snapshot;
pub mod state;

pub use command::{
    Command, DpBudget, EvidenceKind, JobId, JobSpec, ModelHash, NodeId, RevocationReason, Role,
    RoundMetrics,
};
pub use error::{ApplyError, CommandDecodeError, SnapshotError};
pub use state::{MeshState, Response, StateHash};
