//! The committee's Raft RPCs over long-lived streams of the P2P layer.
//!
//! `mesh-consensus` knows nothing of libp2p; it calls [`RaftTransport::call`]
//! with a member's record. The record's `node_id` is the member's libp2p peer
//! id, so routing is a parse; the link under it is the Noise-encrypted,
//! certificate-admitted connection of `mesh-net`.
//!
//! ```text
//!   caller ── take an idle stream to the peer (or open one) ──► write frame
//!          ◄── read the answer frame ── put the stream back (at most
//!              STREAMS_IDLE_PER_PEER kept per peer)
//!   peer:  serve_raft_streams: one task per inbound stream (at most
//!          INBOUND_STREAMS_MAX), frame ─► ConsensusNode::handle_rpc ─► frame
//! ```
//!
//! Streams, not one request-response exchange per RPC: an exchange opens and
//! negotiates a substream and crosses the swarm task and the node's event
//! loop on both ends, which cost about 0.75 ms per append between processes
//! on loopback, four times the disk's fsync. A stream is negotiated once and
//! read and written by the Raft tasks themselves.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use mesh_consensus::network::RPC_BYTES_MAX;
use mesh_consensus::{ConsensusNode, MemberId, MemberInfo, RaftTransport, TransportError};
use mesh_net::{read_frame, write_frame, IncomingStreams, NetHandle, PeerId, Stream};
use tokio::sync::{watch, Semaphore};

/// The stream protocol name of Raft RPCs (`/agent-mesh/raft/2`).
pub const RAFT_STREAM: &str = "raft/2";
/// Most idle streams kept per peer for later calls.
pub const STREAMS_IDLE_PER_PEER: usize = 16;
/// Most peers with idle streams kept (a membership is at most a few dozen).
pub const STREAM_POOL_PEERS_MAX: usize = 256;
/// Most inbound Raft streams served at once; more are closed.
pub const INBOUND_STREAMS_MAX: usize = 512;

/// [`RaftTransport`] over streams of a [`NetHandle`].
pub struct NetRaftTransport {
    net: NetHandle,
    idle: Mutex<HashMap<PeerId, Vec<Stream>>>,
}

impl NetRaftTransport {
    /// Sends through `net`.
    pub fn new(net: NetHandle) -> Self {
        Self {
            net,
            idle: Mutex::new(HashMap::new()),
        }
    }

    fn take_idle(&self, peer: &PeerId) -> Option<Stream> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if !self.net.is_admitted(peer) {
            idle.remove(peer);
            return None;
        }
        idle.get_mut(peer)?.pop()
    }

    fn put_idle(&self, peer: PeerId, stream: Stream) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() >= STREAM_POOL_PEERS_MAX && !idle.contains_key(&peer) {
            idle.clear();
        }
        let streams = idle.entry(peer).or_default();
        if streams.len() < STREAMS_IDLE_PER_PEER {
            streams.push(stream);
        }
    }
}

/// The Raft id of a peer, from its peer id (the same key).
pub fn member_of_peer(peer: &PeerId) -> Option<MemberId> {
    mesh_net::ids::node_id(peer).map(|node| MemberId::from_node_id(&node))
}

/// Where an exchange failed: before the request was fully sent, or after.
enum Failure {
    Send(std::io::Error),
    Answer(std::io::Error),
}

async fn exchange(stream: &mut Stream, payload: &[u8]) -> Result<Vec<u8>, Failure> {
    write_frame(stream, payload).await.map_err(Failure::Send)?;
    match read_frame(stream, RPC_BYTES_MAX).await {
        Ok(Some(answer)) => Ok(answer),
        Ok(None) => Err(Failure::Answer(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the peer closed the stream",
        ))),
        Err(e) => Err(Failure::Answer(e)),
    }
}

#[async_trait::async_trait]
impl RaftTransport for NetRaftTransport {
    async fn call(
        &self,
        target: MemberId,
        route: &MemberInfo,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, TransportError> {
        let unreachable = |reason: String| TransportError::Unreachable {
            target: target.to_string(),
            reason,
        };
        if payload.len() > RPC_BYTES_MAX {
            return Err(TransportError::TooLarge {
                len_bytes: payload.len(),
                max_bytes: RPC_BYTES_MAX,
            });
        }
        let peer = PeerId::from_str(&route.node_id)
            .map_err(|e| unreachable(format!("bad peer id {:?}: {e}", route.node_id)))?;
        // An idle stream may have died with its connection; a request that
        // could not even be sent on it is sent once more on a fresh stream.
        if let Some(mut stream) = self.take_idle(&peer) {
            match exchange(&mut stream, &payload).await {
                Ok(answer) => {
                    self.put_idle(peer, stream);
                    return Ok(answer);
                }
                Err(Failure::Answer(e)) => return Err(unreachable(e.to_string())),
                Err(Failure::Send(e)) => tracing::debug!(%peer, %e, "stale raft stream"),
            }
        }
        let mut stream = self
            .net
            .open_stream(peer, RAFT_STREAM)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        match exchange(&mut stream, &payload).await {
            Ok(answer) => {
                self.put_idle(peer, stream);
                Ok(answer)
            }
            Err(Failure::Send(e) | Failure::Answer(e)) => Err(unreachable(e.to_string())),
        }
    }
}

/// Starts accepting Raft streams for `consensus`; every stream is served in
/// its own task until it closes, the peer is dropped, or `stop` fires.
pub fn serve_raft_streams(
    net: &NetHandle,
    consensus: ConsensusNode,
    stop: watch::Receiver<bool>,
) -> Result<(), mesh_net::NetError> {
    let incoming = net.accept_streams(RAFT_STREAM)?;
    tokio::spawn(accept_loop(incoming, consensus, stop));
    Ok(())
}

async fn accept_loop(
    mut incoming: IncomingStreams,
    consensus: ConsensusNode,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(INBOUND_STREAMS_MAX));
    loop {
        let next = tokio::select! {
            _ = stop.changed() => return,
            next = incoming.next() => next,
        };
        let Some((peer, stream)) = next else { return };
        let Some(from) = member_of_peer(&peer) else {
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many inbound raft streams; closing a new one");
            continue;
        };
        let (consensus, stop) = (consensus.clone(), stop.clone());
        tokio::spawn(async move {
            serve_stream(stream, from, consensus, stop).await;
            drop(slot);
        });
    }
}

async fn serve_stream(
    mut stream: Stream,
    from: MemberId,
    consensus: ConsensusNode,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let request = tokio::select! {
            _ = stop.changed() => return,
            request = read_frame(&mut stream, RPC_BYTES_MAX) => request,
        };
        let request = match request {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(member = %from, %e, "raft stream closed on a bad frame");
                return;
            }
        };
        let answer = consensus.handle_rpc(from, &request).await;
        if let Err(e) = write_frame(&mut stream, &answer).await {
            tracing::debug!(member = %from, %e, "raft stream: cannot answer");
            return;
        }
    }
}
