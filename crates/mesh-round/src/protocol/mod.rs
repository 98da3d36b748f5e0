//! The round protocol (design section 3) as sans-I/O state machines, one
//! [`NodeEngine`] per node, with the roles a node takes in a round:
//!
//! ```text
//!  committee leader      participants          group aggregator       final aggregators (2+)
//!  ----------------      ------------          ----------------       ----------------------
//!  StartRound{plan} ───► fetch model by hash
//!                        train, clip, DP noise
//!                        SecAgg+ (or signed) ──► unmask group sum ──► GroupResult blob
//!  ◄──────────────────────────────── GroupReport{hash} (or GroupFailed)
//!  AggregateRequest{inputs} ─────────────────────────────────────────► robust rule + step
//!  ◄────────────────────────────────────────────────────────────────── AggregateReport{hash}
//!  CompleteRound (when the final aggregators agree)
//! ```
//!
//! The node process ((`mesh-node`'s runtime)) and the simulator ([`crate::sim`])
//! drive the same engine: they show it the committed state, the clock and the
//! messages, and carry out its [`Action`]s (send, propose, train, combine).

pub mod balance;
pub mod blob;
pub mod coordinator;
pub mod engine;
pub mod fetch;
pub mod finals;
pub mod group;
pub mod messages;
pub mod plan;
pub mod scale;
pub mod shared;
pub mod spread;
pub mod stats;
pub mod trainer;
pub mod transfer;
pub mod worker;

pub use engine::NodeEngine;
pub use messages::{
    round_protocol, round_version, RoundKey, RoundMessage, TraceContext, ROUND_PROTOCOL,
    ROUND_PROTOCOL_V2, ROUND_VERSION_MAX,
};
pub use shared::{
    node_key, node_name, Action, EngineConfig, View, CACHE_CAPACITY_BYTES_DEFAULT, PINNED_MAX,
};
pub use stats::ProtocolStats;
pub use worker::{
    CombineTask, CombinedModel, Conduct, LearnerFactory, LoadValidation, LocalWorker, TrainTask,
    TrainedUpdate, Validation,
};
