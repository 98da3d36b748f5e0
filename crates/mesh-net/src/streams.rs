//! Long-lived application streams to admitted peers, for traffic where the
//! per-message cost of request-response matters (the Raft links).
//!
//! A request-response exchange opens a new substream, negotiates its
//! protocol, and passes through the swarm task and the application's event
//! queue on both ends. A stream opened here is negotiated once and then read
//! and written by the application's own task, over the same Noise-encrypted,
//! multiplexed connection, so one exchange costs the bytes and little else.
//!
//! ```text
//!   NetHandle::open_stream(peer, protocol) ── admitted? ──► Stream
//!   NetHandle::accept_streams(protocol) ──► IncomingStreams::next()
//!        (streams of peers that are not admitted are dropped at once)
//!   write_frame / read_frame: u32 LE length | bytes, length checked first
//! ```
//!
//! Admission is the driver's: it keeps [`AdmittedPeers`] in step with the
//! `PeerAdmitted`, `PeerDown` and `PeerRejected` events it emits, and a
//! revoked peer's connection, with its streams, is closed by the driver.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures::StreamExt;
use libp2p::{PeerId, Stream, StreamProtocol};

use crate::version::PeerVersions;
use crate::NetError;

/// The peers admitted now, shared between the driver and the handles.
#[derive(Clone, Default)]
pub struct AdmittedPeers(Arc<RwLock<HashSet<PeerId>>>);

impl AdmittedPeers {
    /// Whether `peer` is admitted now.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(peer)
    }

    pub(crate) fn set(&self, peer: PeerId, admitted: bool) {
        let mut set = self.0.write().unwrap_or_else(|p| p.into_inner());
        if admitted {
            set.insert(peer);
        } else {
            set.remove(&peer);
        }
    }
}

/// The stream side of the network layer, held by every [`crate::NetHandle`].
#[derive(Clone)]
pub(crate) struct Streams {
    pub control: libp2p_stream::Control,
    pub admitted: AdmittedPeers,
    /// Each peer's mesh protocol version (see [`crate::version`]).
    pub versions: PeerVersions,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams").finish_non_exhaustive()
    }
}

fn protocol_of(name: &str) -> Result<StreamProtocol, NetError> {
    StreamProtocol::try_from_owned(format!("/agent-mesh/{name}"))
        .map_err(|e| NetError::Config(format!("stream protocol {name:?}: {e}")))
}

impl Streams {
    /// Opens a new stream to the admitted `peer` under `/agent-mesh/<name>`.
    pub async fn open(&self, peer: PeerId, name: &str) -> Result<Stream, NetError> {
        if !self.admitted.contains(&peer) {
            return Err(NetError::NotAdmitted(peer));
        }
        let protocol = protocol_of(name)?;
        self.control
            .clone()
            .open_stream(peer, protocol)
            .await
            .map_err(|e| NetError::Remote {
                peer,
                reason: format!("cannot open a {name} stream: {e}"),
            })
    }

    /// Starts accepting streams under `/agent-mesh/<name>`; fails if
    /// something in this process already accepts them.
    pub fn accept(&self, name: &str) -> Result<IncomingStreams, NetError> {
        let protocol = protocol_of(name)?;
        let incoming = self
            .control
            .clone()
            .accept(protocol)
            .map_err(|e| NetError::Config(format!("stream protocol {name:?}: {e}")))?;
        Ok(IncomingStreams {
            incoming,
            admitted: self.admitted.clone(),
        })
    }
}

/// Streams opened by peers under one protocol.
pub struct IncomingStreams {
    incoming: libp2p_stream::IncomingStreams,
    admitted: AdmittedPeers,
}

impl IncomingStreams {
    /// The next stream from an admitted peer; `None` once the network stops.
    pub async fn next(&mut self) -> Option<(PeerId, Stream)> {
        loop {
            let (peer, stream) = self.incoming.next().await?;
            if self.admitted.contains(&peer) {
                return Some((peer, stream));
            }
            tracing::debug!(%peer, "stream from a peer that is not admitted; dropped");
        }
    }
}

/// Writes one frame: the length (u32 LE), then `bytes`, and flushes; on a
/// [`Stream`] or a [`crate::direct::DirectLink`].
pub async fn write_frame<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
) -> std::io::Result<()> {
    let len =
        u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("frame larger than 4 GiB"))?;
    let mut frame = Vec::with_capacity(4 + bytes.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(bytes);
    stream.write_all(&frame).await?;
    stream.flush().await
}

/// Reads one frame of at most `limit_bytes`; a longer length is refused
/// before anything is allocated. `Ok(None)` when the peer closed the stream
/// between frames.
pub async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit_bytes: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > limit_bytes {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {limit_bytes} bytes"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(Some(body))
}
