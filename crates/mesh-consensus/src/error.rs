//! Error types: why a command was rejected, why log bytes are not a command,
//! and why bytes are not a snapshot.
//!
//! Every [`ApplyError`] is a deterministic rejection: all nodes reject the same
//! entry in the same state the same way, and the state is left unchanged.
//! [`ApplyError::is_permanent`] says whether resubmitting the same command could
//! ever succeed (it can when the rejection depends on state that may change).

use thiserror::Error;

use crate::command::{JobId, NodeId};

/// Why [`crate::MeshState::apply`] rejected a command. The state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApplyError {
    /// The command is malformed on its own (empty id, out-of-range field).
    #[error("invalid command: {0} (resubmitting it unchanged cannot succeed)")]
    Invalid(String),
    /// The log index does not move forward.
    #[error("log index {index} is not after the last applied index {last_applied} (entries must be applied once, in order; retrying does not help)")]
    IndexNotIncreasing {
        /// Index of the rejected entry.
        index: u64,
        /// Index of the last applied entry.
        last_applied: u64,
    },
    /// The node is not a member.
    #[error("node {0} is not a member (retry after it is admitted)")]
    UnknownMember(NodeId),
    /// The node is already a member.
    #[error("node {0} is already a member (use SetRoles to change its roles)")]
    MemberExists(NodeId),
    /// The member count limit is reached.
    #[error("the mesh already has {max} members (remove one before admitting another)")]
    TooManyMembers {
        /// Largest member count.
        max: usize,
    },
    /// The certificate serial is already revoked.
    #[error(
        "certificate {serial_hex} is already revoked (revocation is final; retrying does not help)"
    )]
    AlreadyRevoked {
        /// Serial number, hex.
        serial_hex: String,
    },
    /// No job has this id.
    #[error("job {0} does not exist (retry after it is created)")]
    UnknownJob(JobId),
    /// A job with this id exists already.
    #[error("job {0} already exists (job ids are never reused; pick another)")]
    JobExists(JobId),
    /// The job cannot take this round command now.
    #[error("job {job}: {reason}")]
    RoundOutOfOrder {
        /// The job.
        job: JobId,
        /// What was expected instead.
        reason: String,
    },
    /// A selected participant may not train.
    #[error("participant {node} cannot train: {reason} (select another participant)")]
    IneligibleParticipant {
        /// The participant.
        node: NodeId,
        /// Why not.
        reason: &'static str,
    },
    /// The round would spend more privacy budget than the job has left.
    #[error("job {job}: spending {requested_epsilon_micros} micro-epsilon exceeds the remaining {remaining_epsilon_micros} (the budget never grows; retrying does not help)")]
    PrivacyBudgetExceeded {
        /// The job.
        job: JobId,
        /// What the round asked to spend.
        requested_epsilon_micros: u64,
        /// What is left.
        remaining_epsilon_micros: u64,
    },
    /// The key-value store is full.
    #[error("key-value store holds {max_bytes} bytes already (delete keys before adding more)")]
    KvFull {
        /// Largest total key and value bytes.
        max_bytes: usize,
    },
}

impl ApplyError {
    /// Whether the same command is rejected in every state: `true` means never
    /// resubmit it; `false` means it may succeed once the state changes.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Invalid(_)
                | Self::IndexNotIncreasing { .. }
                | Self::AlreadyRevoked { .. }
                | Self::JobExists(_)
                | Self::PrivacyBudgetExceeded { .. }
        )
    }
}

/// Why log bytes could not be decoded into a [`crate::Command`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandDecodeError {
    /// The input exceeds the size bound.
    #[error("command is {len_bytes} bytes, more than the limit of {max_bytes} (the entry is corrupt or hostile; retrying does not help)")]
    TooLarge {
        /// Input size.
        len_bytes: usize,
        /// Largest accepted size.
        max_bytes: usize,
    },
    /// The bytes are not a postcard-encoded command.
    #[error("malformed command bytes: {0} (the entry is corrupt or from an incompatible version; retrying does not help)")]
    Malformed(String),
}

/// Why bytes could not be restored as a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SnapshotError {
    /// The input exceeds the size bound.
    #[error("snapshot is {len_bytes} bytes, more than the limit of {max_bytes} (raise the limit only if the state really is this large)")]
    TooLarge {
        /// Input size.
        len_bytes: usize,
        /// Largest accepted size.
        max_bytes: usize,
    },
    /// The input does not start with the snapshot magic or is too short.
    #[error("not a mesh state snapshot (bad magic or truncated header; fetch the snapshot again)")]
    NotASnapshot,
    /// The snapshot was written by an unknown format version.
    #[error("snapshot format version {found} is not supported (this build reads versions {} to {supported}; upgrade the node)", crate::snapshot::FORMAT_VERSION_MIN)]
    UnsupportedVersion {
        /// Version found.
        found: u16,
        /// Newest version this build reads.
        supported: u16,
    },
    /// The checksum does not match the body.
    #[error("snapshot checksum mismatch (the bytes are corrupt; fetch the snapshot again)")]
    ChecksumMismatch,
    /// The body is not a postcard-encoded state.
    #[error("malformed snapshot body: {0} (fetch the snapshot again)")]
    Malformed(String),
    /// The decoded state breaks an invariant that apply always keeps.
    #[error("snapshot state is inconsistent: {0} (it was not produced by apply; do not trust its source)")]
    Inconsistent(String),
}

/// The command that moves a damaged raft folder aside (it never deletes it),
/// named in [`StoreError::Damaged`].
pub const RESET_RAFT_STATE_COMMAND: &str =
    "agent-mesh node --config <node config> --reset-raft-state";

/// Why the durable Raft store could not be opened or read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open the raft store: {0} (check the data directory's path, permissions and free space, then retry)")]
    Open(String),
    /// A store file holds damaged data, or lost writes it had acknowledged.
    /// The node must not take part in the committee with what is left.
    #[error("the raft store file {} is damaged: {reason} (retrying does not help; stop the node and run `{RESET_RAFT_STATE_COMMAND}`, which moves the raft folder aside without deleting it; the node then rejoins the committee as a learner and catches up from the leader)", path.display())]
    Damaged {
        /// The damaged file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl StoreError {
    /// Whether opening the store again, unchanged, may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Open(_))
    }
}

/// Why the transport could not deliver a Raft RPC.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransportError {
    /// The target cannot be reached now (disconnected, partitioned, unknown route).
    #[error("member {target} is unreachable: {reason} (retry later)")]
    Unreachable {
        /// The target member (Raft id, hex).
        target: String,
        /// Why.
        reason: String,
    },
    /// The target did not answer in time.
    #[error("member {target} did not answer within {timeout_ms} ms (retry)")]
    Timeout {
        /// The target member (Raft id, hex).
        target: String,
        /// How long the caller waited.
        timeout_ms: u64,
    },
    /// The payload or the answer breaks the size bound.
    #[error(
        "message of {len_bytes} bytes exceeds the limit of {max_bytes} (retrying does not help)"
    )]
    TooLarge {
        /// Size.
        len_bytes: usize,
        /// Limit.
        max_bytes: usize,
    },
}

/// Errors of the consensus node's API.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConsensusError {
    /// The durable store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No leader is known now (an election is running or the majority is unreachable).
    #[error("no committee leader is known now (retry after an election; if it persists, a majority of voters is down or partitioned)")]
    NoLeader,
    /// The leader could not be reached to forward the request.
    #[error("cannot reach the leader: {0} (retry)")]
    Forward(String),
    /// The request did not complete in time; it may still commit.
    #[error("the request did not complete within {timeout_ms} ms (it may still commit; retry only if the command is idempotent)")]
    Timeout {
        /// How long the caller waited.
        timeout_ms: u64,
    },
    /// A configuration value is unusable.
    #[error("invalid consensus configuration: {0} (fix the configuration)")]
    Config(String),
    /// A membership change was refused.
    #[error("membership change refused: {0} (retry when the previous change has completed)")]
    Membership(String),
    /// The raft core stopped (storage failure or shutdown).
    #[error("the consensus node has stopped: {0} (restart the node)")]
    Stopped(String),
    /// The node was asked something it cannot answer in its current role.
    #[error("{0}")]
    Refused(String),
    /// Only the leader serves this request, and this node does not lead now.
    #[error("this node is not the committee leader{} (send the request to the leader, or retry after an election)", leader.map(|l| format!("; member {l} leads")).unwrap_or_default())]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<crate::MemberId>,
    },
}

impl ConsensusError {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::NoLeader
                | Self::NotLeader { .. }
                | Self::Forward(_)
                | Self::Timeout { .. }
                | Self::Membership(_)
        )
    }
}
