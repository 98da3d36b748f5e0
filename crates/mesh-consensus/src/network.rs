//! The committee's network: the [`RaftTransport`] trait the node runtime
//! implements over the P2P layer, the wire codec of every Raft RPC, and the
//! openraft network client built on both.
//!
//! ```text
//!   openraft replication ─► RaftClient ─encode─► RaftTransport::call(target, bytes)
//!                                                      │   (libp2p request/response,
//!                                                      ▼    or memnet in tests)
//!                         ConsensusNode::handle_rpc(from, bytes) ─decode─► Raft API
//! ```
//!
//! Wire format: one version byte, then the postcard encoding of [`RpcRequest`]
//! or [`RpcResponse`]. Decoding refuses frames over [`RPC_BYTES_MAX`]; snapshots
//! travel in chunks of at most [`SNAPSHOT_CHUNK_BYTES`], so no frame is large.
//! A build writes [`WIRE_VERSION`] and reads every version from
//! [`WIRE_VERSION_MIN`] on; the frames have had one version so far, and a
//! new one is first accepted for a release before it is written, so the
//! voters of a committee can be upgraded one at a time. A snapshot chunk
//! carries the snapshot's own bytes, whose header names their format
//! ([`crate::snapshot`], which reads the previous format too).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkV2};
use serde::{Deserialize, Serialize};

use crate::append_stream::{AppendStream, StreamItem as AppendStreamItem};
use crate::backoff::{Backoffs, Outcome};
use crate::certificate::SignedStatement;
use crate::command::Command;
use crate::error::TransportError;
use crate::node::RejoinRequests;
use crate::types::{
    CommitReceipt, MemberId, MemberInfo, RejoinGrant, Snapshot, SnapshotMeta, TypeConfig, Vote,
};

/// Version byte in front of every frame this build writes.
pub const WIRE_VERSION: u8 = 1;
/// The oldest frame version this build reads.
pub const WIRE_VERSION_MIN: u8 = 1;
/// Largest frame accepted, in bytes.
pub const RPC_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Largest snapshot chunk sent in one frame, in bytes.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// Sends Raft RPCs to other members; the node runtime implements it over the
/// P2P layer (request/response on an authenticated, encrypted link).
#[async_trait::async_trait]
pub trait RaftTransport: Send + Sync + 'static {
    /// Sends one encoded RPC to `target` (reachable as `route` says) and returns
    /// the encoded response. The receiver passes the bytes to
    /// [`crate::ConsensusNode::handle_rpc`] with the sender's authenticated id.
    async fn call(
        &self,
        target: MemberId,
        route: &MemberInfo,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, TransportError>;
}

/// One chunk of a snapshot being installed on a follower.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The leader's vote.
    pub vote: Vote,
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// Size of the whole snapshot, in bytes.
    pub total_bytes: u64,
    /// BLAKE3 of the whole snapshot.
    pub digest: [u8; 32],
    /// Where this chunk starts.
    pub offset: u64,
    /// The chunk.
    pub data: Vec<u8>,
}

/// A request on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RpcRequest {
    /// Raft append-entries (and heartbeats).
    Append(AppendEntriesRequest<TypeConfig>),
    /// Raft vote request.
    Vote(VoteRequest<TypeConfig>),
    /// Raft pre-vote request (does not disturb the current term).
    PreVote(VoteRequest<TypeConfig>),
    /// One chunk of a snapshot.
    SnapshotChunk(SnapshotChunk),
    /// A client write forwarded to the leader.
    Forward(Command),
    /// A voter's signed commit statement.
    Statement(SignedStatement),
    /// A leader's answer to a member that refused with
    /// [`RemoteFailure::Rejoining`]: the member was removed from the
    /// membership and may catch up (see `node/rejoin.rs`).
    RejoinGrant(RejoinGrant),
}

/// Why the remote side could not serve a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteFailure {
    /// The receiver is not the leader (forwarded writes); `leader` is its hint.
    NotLeader {
        /// The leader the receiver knows of.
        leader: Option<MemberId>,
    },
    /// The request could not be decoded or breaks a bound.
    Malformed(String),
    /// The receiver's Raft core is not running.
    Stopped(String),
    /// The receiver refused the request.
    Refused(String),
    /// The receiver lost Raft state it had acknowledged and neither votes
    /// nor acknowledges appends until the leader removes it from the
    /// membership and sends it a [`RpcRequest::RejoinGrant`].
    Rejoining,
}

/// A response on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RpcResponse {
    /// Answer to [`RpcRequest::Append`].
    Append(AppendEntriesResponse<TypeConfig>),
    /// Answer to [`RpcRequest::Vote`] and [`RpcRequest::PreVote`].
    Vote(VoteResponse<TypeConfig>),
    /// Answer to a chunk: `None` while more chunks are expected.
    Snapshot(Option<SnapshotResponse<TypeConfig>>),
    /// Answer to a forwarded write.
    Committed(CommitReceipt),
    /// Accepted, nothing to return.
    Ack,
    /// The request failed.
    Failed(RemoteFailure),
}

fn encode_frame<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION];
    // Every wire type is plain data that postcard supports.
    #[allow(clippy::expect_used)]
    out.extend(postcard::to_allocvec(value).expect("wire types always serialize"));
    out
}

fn decode_frame<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    if bytes.len() > RPC_BYTES_MAX {
        return Err(format!(
            "frame of {} bytes exceeds the limit of {RPC_BYTES_MAX}",
            bytes.len()
        ));
    }
    match bytes.split_first() {
        None => Err("empty frame".into()),
        Some((v, body)) if (WIRE_VERSION_MIN..=WIRE_VERSION).contains(v) => {
            postcard::from_bytes(body).map_err(|e| e.to_string())
        }
        Some((v, _)) => Err(format!(
            "wire version {v} is not supported (this build reads {WIRE_VERSION_MIN} to {WIRE_VERSION})"
        )),
    }
}

impl RpcRequest {
    /// Encodes the request as a frame.
    pub fn encode(&self) -> Vec<u8> {
        encode_frame(self)
    }

    /// Decodes a frame; never panics, refuses oversized input.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        decode_frame(bytes)
    }
}

impl RpcResponse {
    /// Encodes the response as a frame.
    pub fn encode(&self) -> Vec<u8> {
        encode_frame(self)
    }

    /// Decodes a frame; never panics, refuses oversized input.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        decode_frame(bytes)
    }
}

/// Sends one request and decodes the answer, within `timeout`.
pub(crate) async fn call(
    transport: &dyn RaftTransport,
    target: MemberId,
    route: &MemberInfo,
    request: &RpcRequest,
    timeout: Duration,
) -> Result<RpcResponse, TransportError> {
    let payload = request.encode();
    if payload.len() > RPC_BYTES_MAX {
        return Err(TransportError::TooLarge {
            len_bytes: payload.len(),
            max_bytes: RPC_BYTES_MAX,
        });
    }
    let answer = tokio::time::timeout(timeout, transport.call(target, route, payload))
        .await
        .map_err(|_| TransportError::Timeout {
            target: target.to_string(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        })??;
    RpcResponse::decode(&answer).map_err(|reason| TransportError::Unreachable {
        target: target.to_string(),
        reason: format!("undecodable answer: {reason}"),
    })
}

/// Creates [`RaftClient`]s for openraft.
pub struct NetworkFactory {
    pub(crate) transport: Arc<dyn RaftTransport>,
    pub(crate) timeout: Duration,
    /// Per-member backoff, shared by every client of this node.
    pub(crate) backoffs: Arc<Backoffs>,
    /// Members that answered [`RemoteFailure::Rejoining`], for the leader.
    pub(crate) rejoins: Arc<RejoinRequests>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = RaftClient;

    async fn new_client(&mut self, target: MemberId, node: &MemberInfo) -> Self::Network {
        RaftClient {
            target,
            route: node.clone(),
            transport: self.transport.clone(),
            timeout: self.timeout,
            backoffs: self.backoffs.clone(),
            rejoins: self.rejoins.clone(),
        }
    }
}

/// openraft's client to one member, over the [`RaftTransport`].
pub struct RaftClient {
    target: MemberId,
    route: MemberInfo,
    transport: Arc<dyn RaftTransport>,
    timeout: Duration,
    backoffs: Arc<Backoffs>,
    rejoins: Arc<RejoinRequests>,
}

/// How the answer to `request` counts for the backoff (`None`: not at all).
fn outcome_of(
    request: &RpcRequest,
    answer: &Result<RpcResponse, TransportError>,
) -> Option<Outcome> {
    if matches!(request, RpcRequest::Vote(_) | RpcRequest::PreVote(_)) {
        return None;
    }
    let (RpcRequest::Append(req), Ok(RpcResponse::Append(append))) = (request, answer) else {
        return Some(match answer {
            Err(_) | Ok(RpcResponse::Failed(_)) => Outcome::Failure,
            Ok(_) => Outcome::Success,
        });
    };
    let term = req.vote.leader_id().term;
    Some(match append {
        AppendEntriesResponse::Success => Outcome::Matched {
            term,
            index: crate::append_stream::last_log_id(req).map(|l| l.index),
        },
        AppendEntriesResponse::PartialSuccess(matched) => Outcome::Matched {
            term,
            index: matched.map(|l| l.index),
        },
        AppendEntriesResponse::Conflict => Outcome::Conflict {
            term,
            prev_index: req.prev_log_id.map(|l| l.index),
        },
        AppendEntriesResponse::HigherVote(_) => return None,
    })
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct WireError(String);

impl RaftClient {
    async fn rpc(
        &self,
        request: &RpcRequest,
        ttl: Duration,
    ) -> Result<RpcResponse, RPCError<TypeConfig>> {
        let timeout = ttl.min(self.timeout);
        if !matches!(request, RpcRequest::Vote(_) | RpcRequest::PreVote(_)) {
            let delay = self.backoffs.delay(self.target);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        let answer = call(
            self.transport.as_ref(),
            self.target,
            &self.route,
            request,
            timeout,
        )
        .await;
        let reverted = outcome_of(request, &answer)
            .is_some_and(|outcome| self.backoffs.record(self.target, outcome));
        if reverted {
            tracing::warn!(member = %self.target, "the member's log went back behind what it had matched: it lost acknowledged entries");
        }
        if reverted || matches!(answer, Ok(RpcResponse::Failed(RemoteFailure::Rejoining))) {
            self.rejoins.report(self.target, &self.route);
        }
        if reverted {
            // Not handed to openraft as a conflict: it does not expect a
            // follower's log to go back (it asserts so in debug builds, and
            // resends the same append in a loop in release builds). The
            // leader removes and re-adds the member instead (`node/rejoin.rs`).
            return Err(RPCError::Unreachable(Unreachable::new(&WireError(
                "the member lost entries it had acknowledged; it is removed and added back".into(),
            ))));
        }
        match answer {
            Ok(RpcResponse::Failed(f)) => Err(RPCError::Unreachable(Unreachable::new(&WireError(
                format!("{f:?}"),
            )))),
            Ok(r) => Ok(r),
            Err(TransportError::Timeout { .. }) => Err(RPCError::Timeout(Timeout {
                action: openraft::RPCTypes::AppendEntries,
                id: self.target,
                target: self.target,
                timeout,
            })),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }

    fn unexpected(r: &RpcResponse) -> RPCError<TypeConfig> {
        RPCError::Network(NetworkError::new(&WireError(format!(
            "unexpected answer {r:?}"
        ))))
    }

    async fn vote_rpc(
        &self,
        request: RpcRequest,
        option: &RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.rpc(&request, option.hard_ttl()).await? {
            RpcResponse::Vote(v) => Ok(v),
            other => Err(Self::unexpected(&other)),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for RaftClient {
    type SnapshotData = Vec<u8>;

    /// Sends openraft's appends one at a time, folding commit-only requests
    /// into the next one (see [`crate::append_stream`]).
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, AppendStreamItem>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let appends = AppendStream::new(self, input, option);
        let answers = futures_util::stream::unfold(appends, |mut appends| async move {
            let item = appends.step().await?;
            Some((item, appends))
        });
        let answers: BoxStream<'s, AppendStreamItem> = Box::pin(answers);
        Box::pin(async move { Ok(answers) })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .rpc(&RpcRequest::Append(rpc), option.hard_ttl())
            .await?
        {
            RpcResponse::Append(a) => Ok(a),
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_rpc(RpcRequest::Vote(rpc), &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_rpc(RpcRequest::PreVote(rpc), &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let data = snapshot.snapshot;
        let digest = *blake3::hash(&data).as_bytes();
        let total_bytes = data.len() as u64;
        let mut cancel = std::pin::pin!(cancel);
        let mut offset = 0usize;
        loop {
            let end = (offset + SNAPSHOT_CHUNK_BYTES).min(data.len());
            let chunk = SnapshotChunk {
                vote,
                meta: snapshot.meta.clone(),
                total_bytes,
                digest,
                offset: offset as u64,
                data: data[offset..end].to_vec(),
            };
            let request = RpcRequest::SnapshotChunk(chunk);
            let answer = tokio::select! {
                closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                r = self.rpc(&request, self.timeout) => r,
            };
            match answer {
                Ok(RpcResponse::Snapshot(Some(resp))) => return Ok(resp),
                Ok(RpcResponse::Snapshot(None)) if end < data.len() => offset = end,
                Ok(other) => {
                    return Err(StreamingError::Network(NetworkError::new(&WireError(
                        format!("unexpected answer to a snapshot chunk: {other:?}"),
                    ))))
                }
                Err(RPCError::Timeout(t)) => return Err(StreamingError::Timeout(t)),
                Err(RPCError::Unreachable(u)) => return Err(StreamingError::Unreachable(u)),
                Err(e) => {
                    return Err(StreamingError::Network(NetworkError::new(&WireError(
                        e.to_string(),
                    ))))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn garbage_frames_are_errors_not_panics() {
        for bytes in [
            &[][..],
            &[0],
            &[1],
            &[1, 0xff, 0xff, 0xff, 0xff],
            &[9, 1, 2],
        ] {
            assert!(RpcRequest::decode(bytes).is_err());
            assert!(RpcResponse::decode(bytes).is_err());
        }
    }

    #[test]
    fn forward_round_trips() {
        let req = RpcRequest::Forward(Command::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        });
        let back = RpcRequest::decode(&req.encode()).unwrap();
        assert!(matches!(back, RpcRequest::Forward(Command::Put { .. })));
    }

    #[test]
    fn frames_carry_their_version_and_only_known_versions_are_read() {
        let frame = RpcResponse::Ack.encode();
        assert_eq!(frame[0], WIRE_VERSION);
        for version in WIRE_VERSION_MIN..=WIRE_VERSION {
            let mut frame = frame.clone();
            frame[0] = version;
            assert!(matches!(RpcResponse::decode(&frame), Ok(RpcResponse::Ack)));
        }
        for version in [WIRE_VERSION_MIN - 1, WIRE_VERSION + 1] {
            let mut frame = frame.clone();
            frame[0] = version;
            let err = RpcResponse::decode(&frame).unwrap_err();
            assert!(err.contains(&format!("wire version {version}")), "{err}");
        }
    }
}
