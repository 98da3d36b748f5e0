//! The learner bridge: a node trains through the user's own training code
//! (a Python process with PyTorch, numpy, anything) instead of a built-in model.
//!
//! The node keeps everything that makes a round safe (selection, model fetch,
//! clipping, DP noise, secure aggregation, signing, aggregation); the learner
//! only fits and evaluates on flat named `f32` arrays. It runs as a child
//! process and speaks the protocol of `docs/learner.md`: length-prefixed
//! frames over its stdin and stdout, each frame a safetensors document whose
//! `__metadata__` names the message kind and carries its JSON fields.
//!
//! ```text
//!   I/O-free core                                 thin blocking driver
//!   frame      u32 BE length + payload, bounded   process     one child: spawn, handshake,
//!   message    Request / Reply <-> safetensors                 writer / reader / stderr threads,
//!   layout     named arrays <-> flat vector,                   each call bounded by a timeout
//!              shape and finiteness checks        supervisor  restarts a failed child with
//!   restart    capped exponential backoff,                     capped backoff, counts failures
//!              bounded consecutive restarts       model       LearnerModel: mesh_federated's
//!   stats      counters the node exports                       Model trait over a supervisor
//!   config     the node's `[learner]` table
//! ```
//!
//! A crashed, hung or misbehaving learner is a typed [`LearnerError`] (the
//! round goes on without this node's update), never a panic.

pub mod config;
pub mod error;
pub mod frame;
pub mod layout;
pub mod message;
pub mod model;
pub mod process;
pub mod reply;
pub mod restart;
pub mod stats;
pub mod supervisor;

pub use config::LearnerConfig;
pub use error::LearnerError;
pub use model::LearnerModel;
pub use supervisor::{SharedLearner, SupervisedLearner};
