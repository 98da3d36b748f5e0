//! The openraft type configuration of the committee: who the members are
//! ([`MemberId`], [`MemberInfo`]), what the log carries ([`Command`]) and what
//! applying an entry returns ([`CommitReceipt`]).
//!
//! A member's Raft id is derived from its Ed25519 node id (first 8 bytes of the
//! BLAKE3 hash of the public key), so every node computes the same id for a peer
//! without a lookup, and the network layer can map an authenticated peer back to
//! the Raft id that sent a message.

use std::fmt;

use mesh_security::identity::NodeId as SecurityNodeId;
use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::state::StateHash;

/// Raft id of a committee member (voter or learner).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct MemberId(pub u64);

impl MemberId {
    /// The Raft id of a node: the first 8 bytes (little endian) of the BLAKE3
    /// hash of its Ed25519 public key.
    pub fn from_node_id(node: &SecurityNodeId) -> Self {
        Self::from_public_key(node.as_bytes())
    }

    /// The Raft id of the node with this Ed25519 public key.
    pub fn from_public_key(public_key: &[u8; 32]) -> Self {
        let hash = blake3::hash(public_key);
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        Self(u64::from_le_bytes(first))
    }
}

impl From<u64> for MemberId {
    fn from(id: u64) -> Self {
        Self(id)
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What the committee records about a member: enough for the transport to
/// route to it and for anyone to verify its commit signatures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The node's mesh id (libp2p peer id text); the name evidence uses.
    pub node_id: String,
    /// Where the transport reaches it (a multiaddr, or anything the transport understands).
    pub address: String,
    /// The node's Ed25519 public key (verifies its commit signatures).
    pub public_key: [u8; 32],
    /// Failure domain it declared, if any.
    pub zone: Option<String>,
}

impl MemberInfo {
    /// The record of a node with this public key, address and zone.
    pub fn new(node: &SecurityNodeId, address: impl Into<String>, zone: Option<String>) -> Self {
        Self {
            node_id: node.to_string(),
            address: address.into(),
            public_key: *node.as_bytes(),
            zone,
        }
    }

    /// The Raft id this record belongs to.
    pub fn member_id(&self) -> MemberId {
        MemberId::from_public_key(&self.public_key)
    }
}

impl fmt::Display for MemberInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.node_id, self.address)
    }
}

/// What a leader sends a member that lost acknowledged Raft state, once a
/// membership without that member is committed (see `node/rejoin.rs`): the
/// member then accepts appends from this leader's term on, and votes again
/// only once its log holds the removal entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejoinGrant {
    /// Term of the leader that committed the removal.
    pub term: u64,
    /// That leader; only it may send the grant.
    pub leader: MemberId,
    /// Log index of the committed membership without the member.
    pub removed_at: u64,
}

/// What applying one committed entry produced, returned to the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitReceipt {
    /// Log index where the command took effect: the entry's own, or for a
    /// retried proposal the index of its first copy.
    pub index: u64,
    /// Term of the leader that proposed the entry.
    pub term: u64,
    /// State hash after the entry (unchanged if the command was rejected).
    pub state_hash: StateHash,
    /// `None` if the state machine accepted the command; otherwise why it
    /// rejected it (the entry is committed either way; a rejection is an outcome).
    pub rejected: Option<String>,
}

impl fmt::Display for CommitReceipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "commit {}@{} {}", self.index, self.term, self.state_hash)
    }
}

openraft::declare_raft_types!(
    /// The committee's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = CommitReceipt,
        NodeId = MemberId,
        Node = MemberInfo,
);

/// The openraft handle of a committee member.
pub type Raft = openraft::Raft<TypeConfig, crate::store::StateMachineStore>;
/// A log entry.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// A log id (leader id and index).
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// A vote.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// Membership as stored with its log id.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot whose data are the bytes of [`crate::snapshot::encode`].
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, Vec<u8>>;
