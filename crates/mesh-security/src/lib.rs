//! Agent Mesh security core: node identity, signed envelopes, the mesh
//! certificate authority, role-based access control and SecAgg+ secure
//! aggregation.
//!
//! Everything here is computation on bytes: no sockets, no clocks, no threads.
//! Callers pass the current time in (`now_ms`, `now_unix_s`) and seeds for
//! every random choice, so behaviour is deterministic under test. The one
//! exception is [`keyfile`], which reads and writes key files with the
//! permission checks every binary must apply.
//!
//! ```text
//!             round protocol / network driver (mesh-node, mesh-net)
//!                 |  bytes in, bytes out, now_ms, seeds
//!   +-------------+-------------------------------------------+
//!   | envelope    seal / open: version, mesh, signature,      |
//!   |             skew, replay window, size limit             |
//!   | ca, rbac    certificates -> VerifiedCert -> authorize() |
//!   | secagg      client + aggregator state machines:         |
//!   |             messages in -> messages out                 |
//!   | identity    Ed25519 key = libp2p PeerId = NodeId        |
//!   +---------------------------------------------------------+
//!                 |  key files only
//!              keyfile (PKCS#8 PEM, mode 0600)
//! ```

pub mod ca;
pub mod envelope;
pub mod identity;
pub mod keyfile;
pub mod rbac;
pub mod secagg;
pub mod token;

pub use identity::{NodeId, NodeIdentity};
