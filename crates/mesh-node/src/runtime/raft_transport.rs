//! The committee's Raft RPCs over direct links, with long-lived streams of
//! the P2P layer as the path that always works.
//!
//! `mesh-consensus` knows nothing of libp2p; it calls [`RaftTransport::call`]
//! with a member's record. The record's `node_id` is the member's libp2p peer
//! id, so routing is a parse; both paths under it are Noise-encrypted and
//! proved to belong to that peer, and are used only while the peer is
//! admitted (certificate verified, not revoked).
//!
//! ```text
//!   caller ── idle direct link to the peer? ──► write frame, read answer, pool it
//!          └─ none: RaftLinks::want(peer) opens one in the background, and
//!             this call takes an idle swarm stream (or opens one)
//!   peer:  serve_raft_streams / serve_raft_links: one task per inbound stream
//!          or link (at most INBOUND_STREAMS_MAX each), frame ─►
//!          ConsensusNode::handle_rpc ─► frame, while the sender is admitted
//! ```
//!
//! Streams, not one request-response exchange per RPC: an exchange opens and
//! negotiates a substream and crosses the swarm task and the node's event
//! loop on both ends, which cost about 0.75 ms per append between processes
//! on loopback, four times the disk's fsync. Direct links, not only streams:
//! a stream still crosses each end's connection task, which polls every
//! protocol handler of the connection on each wake-up (see
//! [`mesh_net::direct`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use futures::io::{AsyncRead, AsyncWrite};
use futures::StreamExt;
use mesh_consensus::network::RPC_BYTES_MAX;
use mesh_consensus::{ConsensusNode, MemberId, MemberInfo, RaftTransport, TransportError};
use mesh_net::{
    read_frame, write_frame, DirectListener, IncomingStreams, NetHandle, PeerId, Stream,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::{watch, Semaphore};

use super::idle_pool::IdlePool;
use super::raft_links::RaftLinks;

/// The stream protocol name of Raft RPCs (`/agent-mesh/raft/2`).
pub const RAFT_STREAM: &str = "raft/2";
/// Most idle streams kept per peer for later calls.
pub const STREAMS_IDLE_PER_PEER: usize = 16;
/// Most inbound Raft streams (and, apart, direct links) served at once; more are closed.
pub const INBOUND_STREAMS_MAX: usize = 512;

/// Most parsed peer ids remembered (members are far fewer; the map is
/// emptied when full).
const PEER_IDS_CACHED_MAX: usize = 1024;

/// [`RaftTransport`] over direct links and streams of a [`NetHandle`].
pub struct NetRaftTransport {
    net: NetHandle,
    streams: IdlePool<Stream>,
    links: Option<Arc<RaftLinks>>,
    /// RPCs sent over direct links and over swarm streams.
    direct_calls: Counter,
    stream_calls: Counter,
    /// A member record's `node_id` text to its parsed peer id: base58
    /// decoding it on every RPC was about 1% of a busy leader's time.
    peer_ids: std::sync::Mutex<HashMap<String, PeerId>>,
}

impl NetRaftTransport {
    /// Sends through `net`; over direct links too when `direct_links`.
    /// Registers `mesh_raft_calls_total{path="direct"|"stream"}`, the RPCs
    /// sent by each path, in `registry`.
    pub fn new(net: NetHandle, direct_links: bool, registry: &mut Registry) -> Self {
        let links = direct_links.then(|| RaftLinks::new(net.clone()));
        let calls = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.sub_registry_with_prefix("mesh_raft").register(
            "calls",
            "Raft RPCs this node sent, by path (direct link or swarm stream)",
            calls.clone(),
        );
        let direct_calls = calls.get_or_create(&[("path", "direct")]).clone();
        let stream_calls = calls.get_or_create(&[("path", "stream")]).clone();
        Self {
            net,
            streams: IdlePool::new(STREAMS_IDLE_PER_PEER),
            links,
            direct_calls,
            stream_calls,
            peer_ids: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The peer id of `route`, parsed once per distinct text.
    fn peer_id(&self, route: &MemberInfo) -> Result<PeerId, String> {
        let mut cache = self.peer_ids.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(peer) = cache.get(&route.node_id) {
            return Ok(*peer);
        }
        let peer = PeerId::from_str(&route.node_id)
            .map_err(|e| format!("bad peer id {:?}: {e}", route.node_id))?;
        if cache.len() >= PEER_IDS_CACHED_MAX {
            cache.clear();
        }
        cache.insert(route.node_id.clone(), peer);
        Ok(peer)
    }

    /// The exchange over a pooled direct link; `None` when there was none
    /// to use (then one is being opened for later calls).
    async fn call_direct(
        &self,
        peer: PeerId,
        payload: &[u8],
    ) -> Option<Result<Vec<u8>, std::io::Error>> {
        let links = self.links.as_ref()?;
        while let Some(mut pooled) = links.take_idle(&peer) {
            match exchange(&mut pooled.link, payload).await {
                Ok(answer) => {
                    links.put_idle(peer, pooled);
                    return Some(Ok(answer));
                }
                Err(Failure::Answer(e)) => return Some(Err(e)),
                Err(Failure::Send(e)) => tracing::debug!(%peer, %e, "stale raft link"),
            }
        }
        links.want(peer);
        None
    }

    async fn call_stream(&self, peer: PeerId, payload: &[u8]) -> Result<Vec<u8>, String> {
        // An idle stream may have died with its connection; a request that
        // could not even be sent on it is sent once more on a fresh stream.
        if let Some(mut stream) = self
            .streams
            .take_admitted(&peer, self.net.is_admitted(&peer))
        {
            match exchange(&mut stream, payload).await {
                Ok(answer) => {
                    self.streams.put(peer, stream);
                    return Ok(answer);
                }
                Err(Failure::Answer(e)) => return Err(e.to_string()),
                Err(Failure::Send(e)) => tracing::debug!(%peer, %e, "stale raft stream"),
            }
        }
        let mut stream = self
            .net
            .open_stream(peer, RAFT_STREAM)
            .await
            .map_err(|e| e.to_string())?;
        match exchange(&mut stream, payload).await {
            Ok(answer) => {
                self.streams.put(peer, stream);
                Ok(answer)
            }
            Err(Failure::Send(e) | Failure::Answer(e)) => Err(e.to_string()),
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

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    connection: &mut S,
    payload: &[u8],
) -> Result<Vec<u8>, Failure> {
    write_frame(connection, payload)
        .await
        .map_err(Failure::Send)?;
    match read_frame(connection, RPC_BYTES_MAX).await {
        Ok(Some(answer)) => Ok(answer),
        Ok(None) => Err(Failure::Answer(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the peer closed the connection",
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
        let peer = self.peer_id(route).map_err(unreachable)?;
        if let Some(answer) = self.call_direct(peer, &payload).await {
            self.direct_calls.inc();
            return answer.map_err(|e| unreachable(e.to_string()));
        }
        self.stream_calls.inc();
        self.call_stream(peer, &payload).await.map_err(unreachable)
    }
}

/// Calls `handle` with every item of `items` in a task of its own, until
/// the items end or `stop` fires.
pub fn spawn_serve_loop<T: Send + 'static>(
    items: impl futures::Stream<Item = T> + Send + 'static,
    mut stop: watch::Receiver<bool>,
    mut handle: impl FnMut(T) + Send + 'static,
) {
    tokio::spawn(async move {
        let mut items = std::pin::pin!(items);
        loop {
            let next = tokio::select! {
                _ = stop.changed() => return,
                next = items.next() => next,
            };
            let Some(item) = next else { return };
            handle(item);
        }
    });
}

/// The streams of `incoming` as a [`futures::Stream`].
pub fn incoming_streams(
    incoming: IncomingStreams,
) -> impl futures::Stream<Item = (PeerId, Stream)> {
    futures::stream::unfold(incoming, |mut incoming| async move {
        incoming.next().await.map(|next| (next, incoming))
    })
}

/// Starts accepting Raft streams for `consensus`; every stream is served in
/// its own task until it closes, the peer is dropped, or `stop` fires.
pub fn serve_raft_streams(
    net: &NetHandle,
    consensus: ConsensusNode,
    stop: watch::Receiver<bool>,
) -> Result<(), mesh_net::NetError> {
    let incoming = incoming_streams(net.accept_streams(RAFT_STREAM)?);
    let server = RpcServer::new(net.clone(), consensus, stop.clone());
    spawn_serve_loop(incoming, stop, move |(peer, stream)| {
        server.serve(peer, stream)
    });
    Ok(())
}

/// Serves the direct links admitted peers open to `listener`, like
/// [`serve_raft_streams`] serves streams; returns the address it listens on.
pub fn serve_raft_links(
    net: &NetHandle,
    listener: DirectListener,
    consensus: ConsensusNode,
    stop: watch::Receiver<bool>,
) -> SocketAddr {
    let bound = listener.local_addr();
    let links = futures::stream::unfold(listener, |mut listener| async move {
        listener.next().await.map(|next| (next, listener))
    });
    let server = RpcServer::new(net.clone(), consensus, stop.clone());
    spawn_serve_loop(links, stop, move |(peer, link)| server.serve(peer, link));
    bound
}

/// Serves Raft RPCs on inbound connections (streams or links), one task each.
struct RpcServer {
    net: NetHandle,
    consensus: ConsensusNode,
    stop: watch::Receiver<bool>,
    slots: Arc<Semaphore>,
}

impl RpcServer {
    fn new(net: NetHandle, consensus: ConsensusNode, stop: watch::Receiver<bool>) -> Self {
        Self {
            net,
            consensus,
            stop,
            slots: Arc::new(Semaphore::new(INBOUND_STREAMS_MAX)),
        }
    }

    fn serve<S>(&self, peer: PeerId, connection: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(from) = member_of_peer(&peer) else {
            return;
        };
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many inbound raft connections; closing a new one");
            return;
        };
        let (net, consensus, stop) = (self.net.clone(), self.consensus.clone(), self.stop.clone());
        tokio::spawn(async move {
            serve_connection(connection, peer, from, &net, consensus, stop).await;
            drop(slot);
        });
    }
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut connection: S,
    peer: PeerId,
    from: MemberId,
    net: &NetHandle,
    consensus: ConsensusNode,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let request = tokio::select! {
            _ = stop.changed() => return,
            request = read_frame(&mut connection, RPC_BYTES_MAX) => request,
        };
        let request = match request {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(member = %from, %e, "raft connection closed on a bad frame");
                return;
            }
        };
        if !net.is_admitted(&peer) {
            tracing::debug!(member = %from, "raft connection of a peer no longer admitted closed");
            return;
        }
        let answer = consensus.handle_rpc(from, &request).await;
        if let Err(e) = write_frame(&mut connection, &answer).await {
            tracing::debug!(member = %from, %e, "raft connection: cannot answer");
            return;
        }
    }
}
