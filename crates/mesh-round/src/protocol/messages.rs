//! The round protocol's messages and their bounded wire encoding.
//!
//! Every message names its round by [`RoundKey`] (job, round number and
//! attempt, so a restarted round never mixes with the aborted one). SecAgg
//! client messages and plain updates carry the sender's Ed25519 signature
//! bound to the group's session; the link they travel on is authenticated too.
//!
//! The messages that carry a round's work from node to node (SecAgg steps,
//! plain updates, group results and reports, aggregate requests and reports)
//! may also carry the sender's [`TraceContext`], so a node continues the
//! round's distributed trace. It is the last field of its variant and is
//! left out of the encoding when absent: a message without one is byte for
//! byte what builds before the field sent, and a message from such a build
//! decodes here with no context. A build before the field refuses a message
//! that carries one (it sees trailing bytes), which is why nodes attach it
//! only when tracing is configured (`docs/operations.md`, "Tracing").
//!
//! The encoding is versioned by the protocol name it travels under
//! ([`round_protocol`]): version 1 (`/agent-mesh/round/1`) never carries a
//! trace context, version 2 (`/agent-mesh/round/2`) may. A sender encodes
//! for the version it negotiated with the receiver ([`RoundMessage::encode_for`]),
//! so a node talking version 1 never sends the field, and a receiver decodes
//! by the name the message came under ([`RoundMessage::decode_for`]).
//! Version 3 (`/agent-mesh/round/3`) adds blobs in verified parts
//! ([`RoundMessage::BlobPartRequest`], [`RoundMessage::BlobPart`],
//! `protocol/transfer.rs`); for an older peer a part request is sent as a
//! request for the whole blob, which it answers whole.

use mesh_consensus::command::{GroupInput, JobId, ModelHash, RoundMetrics};
use mesh_security::secagg::messages::{
    AdvertiseKeys, MaskedInput, NeighbourKeys, ShareKeys, SharesForClient, Signed, UnmaskRequest,
    UnmaskShares,
};
use serde::{Deserialize, Serialize};

/// Request-response protocol name of version 1 of the round messages (no
/// trace context), which every build speaks.
pub const ROUND_PROTOCOL: &str = "/agent-mesh/round/1";
/// Request-response protocol name of version 2 (with the optional trace context).
pub const ROUND_PROTOCOL_V2: &str = "/agent-mesh/round/2";
/// Request-response protocol name of version 3 (blobs in verified parts).
pub const ROUND_PROTOCOL_V3: &str = "/agent-mesh/round/3";
/// The newest round message version this build encodes.
pub const ROUND_VERSION_MAX: u8 = 3;

/// The protocol name round messages of `version` travel under (`None` for a
/// version this build does not speak).
pub fn round_protocol(version: u8) -> Option<&'static str> {
    match version {
        1 => Some(ROUND_PROTOCOL),
        2 => Some(ROUND_PROTOCOL_V2),
        3 => Some(ROUND_PROTOCOL_V3),
        _ => None,
    }
}

/// The round message version of a protocol name (`None`: not a round
/// protocol this build speaks).
pub fn round_version(protocol: &str) -> Option<u8> {
    match protocol {
        ROUND_PROTOCOL => Some(1),
        ROUND_PROTOCOL_V2 => Some(2),
        ROUND_PROTOCOL_V3 => Some(3),
        _ => None,
    }
}
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

/// A W3C trace context (the fields of a version-00 `traceparent` header):
/// which trace a round message belongs to and which span sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TraceContext {
    /// The trace (all zeros is invalid).
    pub trace_id: [u8; 16],
    /// The sending span (all zeros is invalid).
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

/// Why a `traceparent` string was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a W3C traceparent ({reason}): {value:?}")]
pub struct TraceparentError {
    /// What is wrong.
    pub reason: &'static str,
    /// The text, cut to 64 characters.
    pub value: String,
}

impl TraceContext {
    /// The "sampled" trace flag.
    pub const SAMPLED: u8 = 0x01;

    /// True when neither id is all zeros (W3C: such a context is invalid).
    pub fn is_valid(&self) -> bool {
        self.trace_id != [0; 16] && self.span_id != [0; 8]
    }

    /// True when the sender recorded its span.
    pub fn is_sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }

    /// The `traceparent` header form: `00-<trace id>-<span id>-<flags>`.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex_lower(&self.trace_id),
            hex_lower(&self.span_id),
            self.flags
        )
    }

    /// Parses a `traceparent` header. Versions after 00 are read as 00
    /// (their first four fields), as the W3C recommendation asks; version
    /// `ff` and all-zero ids are refused.
    pub fn from_traceparent(text: &str) -> Result<Self, TraceparentError> {
        let refuse = |reason| TraceparentError {
            reason,
            value: text.chars().take(64).collect(),
        };
        let mut fields = text.trim().split('-');
        let (Some(version), Some(trace), Some(span), Some(flags)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(refuse("fewer than four fields"));
        };
        if version.len() != 2 || version == "ff" || u8::from_str_radix(version, 16).is_err() {
            return Err(refuse("bad version"));
        }
        if version == "00" && fields.next().is_some() {
            return Err(refuse("version 00 has exactly four fields"));
        }
        let mut context = TraceContext {
            trace_id: [0; 16],
            span_id: [0; 8],
            flags: 0,
        };
        parse_hex(trace, &mut context.trace_id).ok_or_else(|| refuse("bad trace id"))?;
        parse_hex(span, &mut context.span_id).ok_or_else(|| refuse("bad span id"))?;
        let mut flag = [0u8; 1];
        parse_hex(flags, &mut flag).ok_or_else(|| refuse("bad flags"))?;
        context.flags = flag[0];
        if !context.is_valid() {
            return Err(refuse("all-zero id"));
        }
        Ok(context)
    }
}

impl std::fmt::Display for TraceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.traceparent())
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fills `out` from exactly `2 * out.len()` lowercase hex digits.
fn parse_hex(text: &str, out: &mut [u8]) -> Option<()> {
    let digits = text.as_bytes();
    if digits.len() != out.len() * 2 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let digit = |d: u8| match d {
            b'0'..=b'9' => Some(d - b'0'),
            b'a'..=b'f' => Some(d - b'a' + 10),
            _ => None,
        };
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(())
}

/// Reads the optional trace context at the end of a message. A message from
/// a build before the field ends where the context would start; the encoding
/// has nothing after its last field, so a context that cannot be read (absent
/// or cut short) is no context, and `decode` still refuses trailing bytes.
fn trailing_trace<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<TraceContext>, D::Error> {
    Ok(Option::<TraceContext>::deserialize(deserializer)
        .ok()
        .flatten()
        .filter(TraceContext::is_valid))
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
        /// The sender's span context (W3C trace context), when the round is
        /// traced; absent on the wire otherwise (see [`TraceContext`]).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "trailing_trace"
        )]
        trace: Option<TraceContext>,
    },
    /// A participant's update when secure aggregation is off.
    Plain {
        /// The round.
        key: RoundKey,
        /// The group.
        group: u32,
        /// The signed update.
        update: Signed<PlainUpdate>,
        /// The sender's span context (W3C trace context), when the round is
        /// traced; absent on the wire otherwise (see [`TraceContext`]).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "trailing_trace"
        )]
        trace: Option<TraceContext>,
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
        /// The sender's span context (W3C trace context), when the round is
        /// traced; absent on the wire otherwise (see [`TraceContext`]).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "trailing_trace"
        )]
        trace: Option<TraceContext>,
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
        /// The sender's span context (W3C trace context), when the round is
        /// traced; absent on the wire otherwise (see [`TraceContext`]).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "trailing_trace"
        )]
        trace: Option<TraceContext>,
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
        /// The sender's span context (W3C trace context), when the round is
        /// traced; absent on the wire otherwise (see [`TraceContext`]).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "trailing_trace"
        )]
        trace: Option<TraceContext>,
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
        /// The sender's span context (W3C trace context), when the round is
        /// traced; absent on the wire otherwise (see [`TraceContext`]).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "trailing_trace"
        )]
        trace: Option<TraceContext>,
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
    /// Asks for one part of a blob (version 3 on; see `protocol/transfer.rs`).
    BlobPartRequest {
        /// BLAKE3 hash of the whole blob.
        hash: ModelHash,
        /// Which part, from 0.
        part: u32,
    },
    /// One part of a blob, with the tree hashes that verify it against the
    /// blob's hash (version 3 on).
    BlobPart {
        /// The blob's hash.
        hash: ModelHash,
        /// Which part.
        part: u32,
        /// The whole blob's size (part 0 proves it).
        size_bytes: u64,
        /// The part's bytes and hashes (empty: the sender does not hold it).
        encoded: Vec<u8>,
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
    /// A round message version this build does not speak.
    #[error(
        "round message version {version} is not one this build speaks (1 to {ROUND_VERSION_MAX})"
    )]
    UnsupportedVersion {
        /// The version it came under.
        version: u8,
    },
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

    /// The oldest round message version this message goes under, whatever
    /// the sender knows of the peer: a part answers a part request, which
    /// only a peer of version 3 or later sends, so it goes as version 3 even
    /// while the peer's version is unknown (as version 1 it would say "not here").
    pub fn version_floor(&self) -> u8 {
        match self {
            Self::BlobPart { .. } => 3,
            _ => 1,
        }
    }

    /// Whether this message is sent at all to a peer of round message
    /// `version`: before version 3, requests for parts after the first are
    /// not (the one for part 0 asks for the whole blob, see [`Self::encode_for`]).
    pub fn goes_to(&self, version: u8) -> bool {
        version >= 3 || !matches!(self, Self::BlobPartRequest { part, .. } if *part > 0)
    }

    /// Encodes for round message `version`: version 1 leaves the trace
    /// context out whatever the message holds; later versions keep it.
    /// Before version 3 a part request asks for the whole blob, and a part
    /// (never sent to such a peer) says "not here".
    pub fn encode_for(&self, version: u8) -> Vec<u8> {
        if version < 3 {
            match self {
                Self::BlobPartRequest { hash, .. } => {
                    return Self::BlobRequest { hash: *hash }.encode();
                }
                Self::BlobPart { hash, .. } => {
                    let hash = *hash;
                    return Self::BlobReply {
                        hash,
                        bytes: Vec::new(),
                    }
                    .encode();
                }
                _ => {}
            }
        }
        if version < 2 && self.trace().is_some() {
            let mut bare = self.clone();
            bare.set_trace(None);
            return bare.encode();
        }
        self.encode()
    }

    /// Decodes a message that came under round message `version`. Version 1
    /// carries no trace context, so one sent by a build from before versions
    /// is dropped; a version this build does not speak is refused.
    pub fn decode_for(bytes: &[u8], version: u8) -> Result<Self, MessageError> {
        if version == 0 || version > ROUND_VERSION_MAX {
            return Err(MessageError::UnsupportedVersion { version });
        }
        let mut message = Self::decode(bytes)?;
        if version < 2 {
            message.set_trace(None);
        }
        if version < 3 && message.is_part() {
            return Err(MessageError::Malformed(format!(
                "{} is not a round message of version {version}",
                message.kind()
            )));
        }
        Ok(message)
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

    /// The round the message belongs to (blob messages belong to none).
    pub fn key(&self) -> Option<&RoundKey> {
        match self {
            Self::SecAgg { key, .. }
            | Self::Plain { key, .. }
            | Self::GroupResult { key, .. }
            | Self::GroupReport { key, .. }
            | Self::GroupFailed { key, .. }
            | Self::AggregateRequest { key, .. }
            | Self::AggregateReport { key, .. } => Some(key),
            Self::BlobRequest { .. }
            | Self::BlobReply { .. }
            | Self::BlobPartRequest { .. }
            | Self::BlobPart { .. } => None,
        }
    }

    /// Whether it is a blob part or a request for one (version 3 on).
    fn is_part(&self) -> bool {
        matches!(self, Self::BlobPartRequest { .. } | Self::BlobPart { .. })
    }

    /// Whether it carries a copy of a blob: `(starts, ends)` are whether it
    /// is the first and the last piece of that copy (a whole blob is both).
    pub fn blob_copy(&self) -> (bool, bool) {
        match self {
            Self::BlobReply { bytes, .. } => (!bytes.is_empty(), !bytes.is_empty()),
            Self::BlobPart {
                part,
                size_bytes,
                encoded,
                ..
            } if !encoded.is_empty() => (
                *part == 0,
                part.saturating_add(1) == super::transfer::part_count(*size_bytes),
            ),
            _ => (false, false),
        }
    }

    /// The sender's trace context, if the message carries one.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace_slot().and_then(|slot| slot.as_ref())
    }

    /// Sets (or clears) the trace context; returns false for the kinds that
    /// carry none (blob messages and `GroupFailed`), which are left as they are.
    pub fn set_trace(&mut self, context: Option<TraceContext>) -> bool {
        match self.trace_slot_mut() {
            Some(slot) => {
                *slot = context.filter(TraceContext::is_valid);
                true
            }
            None => false,
        }
    }

    fn trace_slot(&self) -> Option<&Option<TraceContext>> {
        match self {
            Self::SecAgg { trace, .. }
            | Self::Plain { trace, .. }
            | Self::GroupResult { trace, .. }
            | Self::GroupReport { trace, .. }
            | Self::AggregateRequest { trace, .. }
            | Self::AggregateReport { trace, .. } => Some(trace),
            Self::GroupFailed { .. }
            | Self::BlobRequest { .. }
            | Self::BlobReply { .. }
            | Self::BlobPartRequest { .. }
            | Self::BlobPart { .. } => None,
        }
    }

    fn trace_slot_mut(&mut self) -> Option<&mut Option<TraceContext>> {
        match self {
            Self::SecAgg { trace, .. }
            | Self::Plain { trace, .. }
            | Self::GroupResult { trace, .. }
            | Self::GroupReport { trace, .. }
            | Self::AggregateRequest { trace, .. }
            | Self::AggregateReport { trace, .. } => Some(trace),
            Self::GroupFailed { .. }
            | Self::BlobRequest { .. }
            | Self::BlobReply { .. }
            | Self::BlobPartRequest { .. }
            | Self::BlobPart { .. } => None,
        }
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
            Self::BlobPartRequest { .. } => "blob_part_request",
            Self::BlobPart { .. } => "blob_part",
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

    fn request(trace: Option<TraceContext>) -> RoundMessage {
        RoundMessage::AggregateRequest {
            key: RoundKey {
                job: JobId("job-1".into()),
                round: 4,
                attempt: 1,
            },
            inputs: vec![GroupInput {
                group: 0,
                hash: [9; 32],
                contributors: 3,
            }],
            trace,
        }
    }

    fn context() -> TraceContext {
        TraceContext::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .unwrap()
    }

    /// The messages as builds before the trace field encoded them: postcard
    /// names a variant by its position, so five placeholders stand for the
    /// variants before `AggregateRequest`.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Legacy {
        V0,
        V1,
        V2,
        V3,
        V4,
        AggregateRequest {
            key: RoundKey,
            inputs: Vec<GroupInput>,
        },
    }

    #[test]
    fn the_trace_context_survives_encode_and_decode() {
        let traced = request(Some(context()));
        let decoded = RoundMessage::decode(&traced.encode()).unwrap();
        assert_eq!(decoded, traced);
        assert_eq!(decoded.trace(), Some(&context()));
        assert_eq!(
            decoded.trace().unwrap().traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(traced.encoded_len(), traced.encode().len());
    }

    #[test]
    fn without_a_context_the_encoding_is_the_one_older_builds_use() {
        let RoundMessage::AggregateRequest { key, inputs, .. } = request(None) else {
            unreachable!()
        };
        let legacy = postcard::to_allocvec(&Legacy::AggregateRequest { key, inputs }).unwrap();
        assert_eq!(
            request(None).encode(),
            legacy,
            "no bytes for an absent context"
        );
        let decoded = RoundMessage::decode(&legacy).unwrap();
        assert_eq!(decoded, request(None));
        assert_eq!(decoded.trace(), None);
        // A context is 26 bytes at the end; an older build refuses them as
        // trailing bytes, which is why nodes attach one only when tracing.
        let traced = request(Some(context())).encode();
        assert_eq!(traced.len(), legacy.len() + 1 + 16 + 8 + 1);
        let (_, rest) = postcard::take_from_bytes::<Legacy>(&traced).unwrap();
        assert_eq!(rest.len(), 26);
    }

    #[test]
    fn a_cut_or_invalid_context_is_no_context_and_trailing_bytes_are_refused() {
        let mut cut = request(Some(context())).encode();
        cut.truncate(cut.len() - 3);
        assert_eq!(RoundMessage::decode(&cut).unwrap().trace(), None);
        let zero = TraceContext {
            trace_id: [0; 16],
            span_id: [1; 8],
            flags: 1,
        };
        let mut message = request(None);
        assert!(message.set_trace(Some(zero)));
        assert_eq!(message.trace(), None, "an invalid context is not attached");
        let mut long = request(Some(context())).encode();
        long.push(7);
        assert!(RoundMessage::decode(&long).is_err());
    }

    #[test]
    fn version_1_never_carries_the_context_and_version_2_decodes_both() {
        let traced = request(Some(context()));
        let RoundMessage::AggregateRequest { key, inputs, .. } = request(None) else {
            unreachable!()
        };
        let legacy = postcard::to_allocvec(&Legacy::AggregateRequest { key, inputs }).unwrap();
        // Talking version 1, a traced message is sent as builds before the field sent it.
        assert_eq!(traced.encode_for(1), legacy);
        assert_eq!(request(None).encode_for(1), legacy);
        // Version 2 keeps the field; a version 2 node decodes either encoding.
        let v2 = traced.encode_for(2);
        assert_eq!(v2.len(), legacy.len() + 26);
        assert_eq!(RoundMessage::decode_for(&v2, 2).unwrap(), traced);
        assert_eq!(RoundMessage::decode_for(&legacy, 2).unwrap(), request(None));
        // A context that arrives under version 1 (a build from before
        // versions, with tracing on) is not taken.
        assert_eq!(RoundMessage::decode_for(&v2, 1).unwrap().trace(), None);
        for version in [0, 4] {
            assert!(matches!(
                RoundMessage::decode_for(&v2, version),
                Err(MessageError::UnsupportedVersion { .. })
            ));
        }
    }

    #[test]
    fn protocol_names_and_versions_map_both_ways() {
        for version in 1..=ROUND_VERSION_MAX {
            let name = round_protocol(version).unwrap();
            assert_eq!(round_version(name), Some(version));
        }
        assert_eq!(round_protocol(1), Some("/agent-mesh/round/1"));
        assert_eq!(round_protocol(2), Some("/agent-mesh/round/2"));
        assert_eq!(round_protocol(3), Some("/agent-mesh/round/3"));
        assert_eq!(round_protocol(4), None);
        assert_eq!(round_version("/agent-mesh/round/4"), None);
        assert_eq!(round_version("model/fetch"), None);
    }

    #[test]
    fn an_older_peer_is_asked_for_the_whole_blob_and_never_gets_a_part() {
        let ask = RoundMessage::BlobPartRequest {
            hash: [4; 32],
            part: 2,
        };
        let whole = RoundMessage::BlobRequest { hash: [4; 32] };
        for version in [1, 2] {
            assert_eq!(ask.encode_for(version), whole.encode());
            assert!(matches!(
                RoundMessage::decode_for(&ask.encode(), version),
                Err(MessageError::Malformed(_))
            ));
        }
        assert_eq!(
            RoundMessage::decode_for(&ask.encode_for(3), 3).unwrap(),
            ask
        );
        assert!(
            !ask.goes_to(2),
            "only the request for part 0 asks for the whole"
        );
        assert!(ask.goes_to(3));
        let first = RoundMessage::BlobPartRequest {
            hash: [4; 32],
            part: 0,
        };
        assert!(first.goes_to(1));
        let part = RoundMessage::BlobPart {
            hash: [4; 32],
            part: 0,
            size_bytes: 10,
            encoded: vec![1; 10],
        };
        let not_here = RoundMessage::BlobReply {
            hash: [4; 32],
            bytes: Vec::new(),
        };
        assert_eq!(part.encode_for(2), not_here.encode());
        assert_eq!(part.blob_copy(), (true, true));
        assert_eq!(not_here.blob_copy(), (false, false));
    }

    #[test]
    fn only_round_work_messages_carry_a_context() {
        let mut blob = RoundMessage::BlobRequest { hash: [1; 32] };
        assert!(!blob.set_trace(Some(context())));
        assert_eq!(blob.trace(), None);
        assert_eq!(blob.key(), None);
        let mut request = request(None);
        assert!(request.set_trace(Some(context())));
        assert_eq!(request.trace(), Some(&context()));
        assert_eq!(request.key().map(|k| k.round), Some(4));
    }

    #[test]
    fn traceparent_parsing_follows_the_w3c_rules() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceContext::from_traceparent(text).unwrap();
        assert!(parsed.is_sampled());
        assert_eq!(parsed.to_string(), text);
        // A later version is read by its first four fields.
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra";
        assert!(!TraceContext::from_traceparent(future).unwrap().is_sampled());
        for bad in [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736",
        ] {
            assert!(TraceContext::from_traceparent(bad).is_err(), "{bad}");
        }
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
