//! Direct links: Noise-secured TCP connections between two admitted peers,
//! outside the swarm, for latency-bound traffic (the committee's Raft RPCs).
//!
//! A stream of the swarm ([`crate::streams`]) crosses the connection task on
//! both ends: the writer wakes the task that owns the Yamux session, which
//! polls every protocol handler of the connection before it encrypts and
//! sends; the reader is woken by that task in turn. A direct link is read and
//! written by the application's own task, so one exchange costs one socket
//! write and one socket read on each side.
//!
//! ```text
//!   DirectLinks::connect(peer, addr): TCP (nodelay) ─ Noise XX ─ peer id == peer? admitted?
//!   DirectLinks::listen(bind) ─► DirectListener::next(): (peer, link) of admitted peers only
//!        (handshakes run in their own tasks, at most PENDING_HANDSHAKES_MAX, each
//!         within HANDSHAKE_TIMEOUT_MS; a link's reads and writes are framed by
//!         the caller, for example with read_frame / write_frame)
//! ```
//!
//! The handshake is the swarm's own Noise XX (X25519, ChaCha20-Poly1305, the
//! node's Ed25519 identity), so a link proves the same peer id a swarm
//! connection does. The certificate is not exchanged again: a link is only
//! kept with a peer the swarm has admitted ([`AdmittedPeers`]), and users
//! check admission again before each use, so a revoked peer loses its links
//! with its swarm connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade};
use libp2p::identity::Keypair;
use libp2p::{noise, tcp, PeerId};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use crate::streams::AdmittedPeers;
use crate::NetError;

/// Longest a TCP connect plus the Noise handshake may take, in milliseconds.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Most inbound handshakes in progress at once; more connections are closed.
pub const PENDING_HANDSHAKES_MAX: usize = 64;
/// Most finished inbound links waiting for [`DirectListener::next`].
pub const ACCEPTED_QUEUE_MAX: usize = 64;

/// An encrypted, authenticated byte stream to one peer (futures `AsyncRead`
/// and `AsyncWrite`; writes are sent on flush).
pub type DirectLink = noise::Output<tcp::tokio::TcpStream>;

/// Opens and accepts direct links for one node.
#[derive(Clone)]
pub struct DirectLinks {
    noise: noise::Config,
    admitted: AdmittedPeers,
}

impl std::fmt::Debug for DirectLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectLinks").finish_non_exhaustive()
    }
}

fn timeout() -> Duration {
    Duration::from_millis(HANDSHAKE_TIMEOUT_MS)
}

impl DirectLinks {
    /// Links authenticated with `keypair`, kept only with peers in `admitted`.
    pub fn new(keypair: &Keypair, admitted: AdmittedPeers) -> Result<Self, NetError> {
        let noise = noise::Config::new(keypair)
            .map_err(|e| NetError::Config(format!("noise setup failed: {e}")))?;
        Ok(Self { noise, admitted })
    }

    /// Whether `peer` is admitted now (a link to a peer that is not should be dropped).
    pub fn is_admitted(&self, peer: &PeerId) -> bool {
        self.admitted.contains(peer)
    }

    /// Connects to `peer` at `addr`; fails unless the other end proves it is
    /// `peer` and `peer` is admitted.
    pub async fn connect(&self, peer: PeerId, addr: SocketAddr) -> Result<DirectLink, NetError> {
        if !self.is_admitted(&peer) {
            return Err(NetError::NotAdmitted(peer));
        }
        let remote = |reason: String| NetError::Remote { peer, reason };
        let handshake = async {
            let socket = TcpStream::connect(addr)
                .await
                .map_err(|e| remote(format!("cannot connect to {addr}: {e}")))?;
            let _ = socket.set_nodelay(true);
            self.noise
                .clone()
                .upgrade_outbound(tcp::tokio::TcpStream(socket), "/noise")
                .await
                .map_err(|e| remote(format!("noise handshake with {addr} failed: {e}")))
        };
        let (proved, link) = tokio::time::timeout(timeout(), handshake)
            .await
            .map_err(|_| NetError::Timeout(peer))??;
        if proved != peer {
            return Err(remote(format!("{addr} is {proved}, not {peer}")));
        }
        if !self.is_admitted(&peer) {
            return Err(NetError::NotAdmitted(peer));
        }
        Ok(link)
    }

    /// Listens on `bind` (port 0 picks one) and hands out the links admitted
    /// peers open; stops when the listener is dropped.
    pub async fn listen(&self, bind: SocketAddr) -> Result<DirectListener, NetError> {
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|e| NetError::Transport(format!("cannot listen on {bind}: {e}")))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| NetError::Transport(format!("listener on {bind}: {e}")))?;
        let (accepted, incoming) = mpsc::channel(ACCEPTED_QUEUE_MAX);
        let task = tokio::spawn(accept_loop(listener, self.clone(), accepted));
        Ok(DirectListener {
            local_addr,
            incoming,
            task,
        })
    }

    async fn handshake_inbound(&self, socket: TcpStream) -> Result<(PeerId, DirectLink), String> {
        let _ = socket.set_nodelay(true);
        let handshake = self
            .noise
            .clone()
            .upgrade_inbound(tcp::tokio::TcpStream(socket), "/noise");
        let (peer, link) = tokio::time::timeout(timeout(), handshake)
            .await
            .map_err(|_| "handshake timed out".to_string())?
            .map_err(|e| format!("noise handshake failed: {e}"))?;
        if !self.is_admitted(&peer) {
            return Err(format!("{peer} is not admitted"));
        }
        Ok((peer, link))
    }
}

async fn accept_loop(
    listener: TcpListener,
    links: DirectLinks,
    accepted: mpsc::Sender<(PeerId, DirectLink)>,
) {
    let slots = Arc::new(Semaphore::new(PENDING_HANDSHAKES_MAX));
    loop {
        let (socket, from) = match listener.accept().await {
            Ok(next) => next,
            Err(e) => {
                tracing::debug!(%e, "direct link accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if accepted.is_closed() {
            return;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%from, "too many direct link handshakes; closing a new one");
            continue;
        };
        let (links, accepted) = (links.clone(), accepted.clone());
        tokio::spawn(async move {
            match links.handshake_inbound(socket).await {
                Ok(link) => {
                    if accepted.try_send(link).is_err() {
                        tracing::warn!(%from, "direct link queue full; closing a new link");
                    }
                }
                Err(reason) => tracing::debug!(%from, %reason, "direct link refused"),
            }
            drop(slot);
        });
    }
}

/// Links opened to this node by admitted peers.
pub struct DirectListener {
    local_addr: SocketAddr,
    incoming: mpsc::Receiver<(PeerId, DirectLink)>,
    task: tokio::task::JoinHandle<()>,
}

impl DirectListener {
    /// The address the listener is bound to (with the port it got).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next link of an admitted peer; `None` once the listener stopped.
    pub async fn next(&mut self) -> Option<(PeerId, DirectLink)> {
        self.incoming.recv().await
    }
}

impl Drop for DirectListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::streams::{read_frame, write_frame};

    fn links_of(key: &Keypair, admitted: &[PeerId]) -> DirectLinks {
        let set = AdmittedPeers::default();
        for peer in admitted {
            set.set(*peer, true);
        }
        DirectLinks::new(key, set).unwrap()
    }

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[tokio::test]
    async fn admitted_peers_exchange_frames_over_a_link() {
        let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (a_id, b_id) = (a.public().to_peer_id(), b.public().to_peer_id());
        let mut listener = links_of(&b, &[a_id]).listen(loopback()).await.unwrap();
        let addr = listener.local_addr();
        let client = links_of(&a, &[b_id]);
        let (mut out, accepted) = tokio::join!(
            async { client.connect(b_id, addr).await.unwrap() },
            listener.next()
        );
        let (from, mut inbound) = accepted.unwrap();
        assert_eq!(from, a_id);
        write_frame(&mut out, b"append").await.unwrap();
        let got = read_frame(&mut inbound, 1024).await.unwrap().unwrap();
        assert_eq!(got, b"append");
        write_frame(&mut inbound, b"ok").await.unwrap();
        assert_eq!(read_frame(&mut out, 1024).await.unwrap().unwrap(), b"ok");
    }

    #[tokio::test]
    async fn garbage_on_the_listener_is_dropped_and_links_still_work() {
        use tokio::io::AsyncWriteExt;
        let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (a_id, b_id) = (a.public().to_peer_id(), b.public().to_peer_id());
        let mut listener = links_of(&b, &[a_id]).listen(loopback()).await.unwrap();
        let addr = listener.local_addr();
        for garbage in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            &[0xff; 70_000][..],
            &[0, 0][..],
        ] {
            let mut socket = TcpStream::connect(addr).await.unwrap();
            let _ = socket.write_all(garbage).await;
        }
        let client = links_of(&a, &[b_id]);
        let (link, accepted) = tokio::join!(client.connect(b_id, addr), listener.next());
        assert!(link.is_ok(), "{:?}", link.err());
        assert_eq!(
            accepted.unwrap().0,
            a_id,
            "only the real link is handed out"
        );
    }

    #[tokio::test]
    async fn a_link_to_the_wrong_peer_or_an_unadmitted_one_is_refused() {
        let (a, b, c) = (
            Keypair::generate_ed25519(),
            Keypair::generate_ed25519(),
            Keypair::generate_ed25519(),
        );
        let (a_id, b_id, c_id) = (
            a.public().to_peer_id(),
            b.public().to_peer_id(),
            c.public().to_peer_id(),
        );
        let mut listener = links_of(&b, &[a_id]).listen(loopback()).await.unwrap();
        let addr = listener.local_addr();
        // b listens, but a expects c there.
        let wrong = links_of(&a, &[c_id]).connect(c_id, addr).await;
        assert!(matches!(wrong, Err(NetError::Remote { .. })), "{wrong:?}");
        // a did not admit b.
        let unadmitted = links_of(&a, &[]).connect(b_id, addr).await;
        assert!(matches!(unadmitted, Err(NetError::NotAdmitted(_))));
        // c admitted b, but b never admitted c: b drops the link, a's frame goes nowhere.
        let mut from_c = links_of(&c, &[b_id]).connect(b_id, addr).await.unwrap();
        let _ = write_frame(&mut from_c, b"hello").await;
        assert!(read_frame(&mut from_c, 1024)
            .await
            .map_or(true, |f| f.is_none()));
        // The only link b handed out was a's attempt above, which proved a.
        let first = listener.next().await.unwrap();
        assert_eq!(first.0, a_id);
    }
}
