//! The Agent Mesh node: what each node does in a federated round, and the
//! drivers that run nodes.
//!
//! ```text
//!   driver (sim: in-process)           round roles (no I/O)
//!   ------------------------           --------------------
//!   Simulation::run_round ──global──►  Participant::local_round ──► LocalUpdate
//!        │                                                            │
//!        └──────────── updates ──►  RoundAggregator::aggregate ◄──────┘
//!                                      (DP, robust rule, server optimizer,
//!                                       privacy ledger) ──► new global model
//! ```
//!
//! The roles take inputs and return outputs; they never touch sockets, clocks or
//! files, so the in-process [`sim`] driver and the networked node run the same code.
//! The [`cache`] holds content-addressed blobs (models by BLAKE3 hash) bounded in bytes.

pub mod api;
pub mod cache;
pub mod config;
pub mod mesh_sim;
pub mod parallel;
pub mod protocol;
pub mod round;
pub mod runtime;
pub mod sim;
