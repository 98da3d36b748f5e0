//! The round protocol's messages and their bounded wire encoding.
//!
//! Every message names its round by [`RoundKey`] (job, round number and
//! attempt, so a restarted round never mixes with the aborted one). SecAgg
//! client messages and plain updates carry the sender's Ed25519 signature
//! bound to the group's session; the link they travel on is authenticated too.

use mesh_consensus::command::{GroupInput, JobId, ModelHash, RoundMetrics};
use mesh_security::secagg::messages::{
    AdvertiseKeys, MaskedInput, NeighbourKeys, ShareKeys, SharesForClient, Signed, UnmaskRequest,
    UnmaskShares,
};
use serde::{Deserialize, Serialize};

/// Request-response protocol name the round messages travel on.
pub const ROUND_PROTOCOL: &str = "/agent-mesh/round/1";
/// Largest encoded message accepted, in bytes (a model blob and its framing).
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Which attempt of which round of which job a message belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RoundKey {
    /// The job.
    pub job: JobId,
    /// Round number, from 0.
    pub round: u32,
    /// How many earlier attempts of this round were aborted.
    pub attempt: u32,
}

impl std::fmt::Display for RoundKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}#{}", self.job, self.round, self.attempt)
    }
}

/// A plain (not securely aggregated) update: the clipped, noised delta.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlainUpdate {
    /// The delta, one value per parameter.
    pub values: Vec<f32>,
    /// Rows of local data it was trained on.
    pub samples: u64,
}

/// One SecAgg+ step, in either direction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SecAggStep {
    /// Client to aggregator: ephemeral public keys.
    Advertise(Signed<AdvertiseKeys>),
    /// Aggregator to client: its neighbours' keys.
    NeighbourKeys(NeighbourKeys),
    /// Client to aggregator: encrypted shares for its neighbours.
    ShareKeys(Signed<ShareKeys>),
    /// Aggregator to client: the shares addressed to it.
    Shares(SharesForClient),
    /// Client to aggregator: the masked, quantized update.
    Masked(Signed<MaskedInput>),
    /// Aggregator to client: who survived and who dropped.
    UnmaskRequest(UnmaskRequest),
    /// Client to aggregator: the shares that unmask the sum.
    Unmask(Signed<UnmaskShares>),
}

/// A round protocol message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RoundMessage {
    /// Secure aggregation within a group.
    SecAgg {
        /// The round.
        key: RoundKey,
        /// The group.
        group: u32,
        /// The step.
        step: SecAggStep,
    },
    /// A participant's update when secure aggregation is off.
    Plain {
        /// The round.
        key: RoundKey,
        /// The group.
        group: u32,
        /// The signed update.
        update: Signed<PlainUpdate>,
    },
    /// Group aggregator to final aggregators: the group's mean update.
    GroupResult {
        /// The round.
        key: RoundKey,
        /// The group.
        group: u32,
        /// Participants in the mean.
        contributors: u32,
        /// The mean update, encoded as a parameter blob.
        blob: Vec<u8>,
    },
    /// Group aggregator to the coordinator: the hash of its result.
    GroupReport {
        /// The round.
        key: RoundKey,
        /// The group result.
        input: GroupInput,
        /// Members (positions in the planned group) that did not answer a
        /// step before it closed (the secure exchange, or their update).
        missed: Vec<u32>,
    },
    /// Group aggregator to the coordinator: the group has no result this
    /// round (too few members answered), so the round need not wait for it.
    GroupFailed {
        /// The round.
        key: RoundKey,
        /// The group.
        group: u32,
        /// Members (positions in the planned group) that did not answer a
        /// step before it closed.
        missed: Vec<u32>,
    },
    /// Coordinator to final aggregators: combine exactly these group results.
    AggregateRequest {
        /// The round.
        key: RoundKey,
        /// The inputs, sorted by group.
        inputs: Vec<GroupInput>,
    },
    /// Final aggregator to the coordinator: the model it computed.
    AggregateReport {
        /// The round.
        key: RoundKey,
        /// Digest of the inputs it combined.
        inputs_digest: [u8; 32],
        /// Hash of the new global model.
        model_hash: ModelHash,
        /// Its evaluation of the new model.
        metrics: RoundMetrics,
        /// Positions (in the requested inputs) of the outliers it found.
        outliers: Vec<u32>,
    },
    /// Asks for a blob by hash.
    BlobRequest {
        /// BLAKE3 hash.
        hash: ModelHash,
    },
    /// A blob; the receiver checks its hash.
    BlobReply {
        /// The hash asked for.
        hash: ModelHash,
        /// The bytes (empty: the sender does not hold it).
        bytes: Vec<u8>,
    },
}

/// Why a message could not be decoded (drop it; the sender may retry).
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Over [`MESSAGE_BYTES_MAX`].
    #[error("round message of {len_bytes} bytes exceeds the limit of {MESSAGE_BYTES_MAX}")]
    TooLarge {
        /// Its length.
        len_bytes: usize,
    },
    /// Not a round message.
    #[error("malformed round message: {0}")]
    Malformed(String),
}

impl RoundMessage {
    /// Encodes for the wire (postcard).
    pub fn encode(&self) -> Vec<u8> {
        // Plain data postcard supports: cannot fail.
        #[allow(clippy::expect_used)]
        postcard::to_allocvec(self).expect("a round message always serializes")
    }

    /// Length of the encoding, without encoding.
    pub fn encoded_len(&self) -> usize {
        postcard::serialize_with_flavor(self, postcard::ser_flavors::Size::default()).unwrap_or(0)
    }

    /// Decodes, refusing more than [`MESSAGE_BYTES_MAX`] before parsing.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(MessageError::TooLarge {
                len_bytes: bytes.len(),
            });
        }
        let (message, rest) =
            postcard::take_from_bytes(bytes).map_err(|e| MessageError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(MessageError::Malformed(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        Ok(message)
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SecAgg { .. } => "secagg",
            Self::Plain { .. } => "plain_update",
            Self::GroupResult { .. } => "group_result",
            Self::GroupReport { .. } => "group_report",
            Self::GroupFailed { .. } => "group_failed",
            Self::AggregateRequest { .. } => "aggregate_request",
            Self::AggregateReport { .. } => "aggregate_report",
            Self::BlobRequest { .. } => "blob_request",
            Self::BlobReply { .. } => "blob_reply",
        }
    }
}

/// Digest of a list of group inputs (what final aggregators must agree on).
pub fn inputs_digest(inputs: &[GroupInput]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    for input in inputs {
        hasher.update(&input.group.to_le_bytes());
        hasher.update(&input.hash);
        hasher.update(&input.contributors.to_le_bytes());
    }
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let msg = RoundMessage::BlobReply {
            hash: [3; 32],
            bytes: vec![1, 2, 3],
        };
        assert_eq!(RoundMessage::decode(&msg.encode()).unwrap(), msg);
        assert_eq!(msg.encoded_len(), msg.encode().len());
        assert!(RoundMessage::decode(&[0xff, 0xff, 0xff]).is_err());
        let mut long = msg.encode();
        long.push(0);
        assert!(RoundMessage::decode(&long).is_err());
        let huge = vec![0u8; MESSAGE_BYTES_MAX + 1];
        assert!(matches!(
            RoundMessage::decode(&huge),
            Err(MessageError::TooLarge { .. })
        ));
    }

    #[test]
    fn digest_depends_on_every_input() {
        let a = GroupInput {
            group: 0,
            hash: [1; 32],
            contributors: 3,
        };
        let b = GroupInput {
            contributors: 2,
            ..a
        };
        assert_ne!(inputs_digest(&[a]), inputs_digest(&[b]));
        assert_ne!(inputs_digest(&[a]), inputs_digest(&[a, b]));
    }
}
