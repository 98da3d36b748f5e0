//! Direct Raft links: where a committee node's link listens, how a peer
//! learns it, and the pool of open links per peer.
//!
//! ```text
//!   committee node: DirectListener on <first TCP listen IP>:<direct_link_port>
//!                   answers /agent-mesh/raft-link/1 streams with its link addresses
//!   caller: RaftLinks::take_idle(peer) ── none ──► RaftLinks::want(peer): one
//!           background task per peer asks the addresses (once), connects
//!           (TCP + Noise, peer id checked, admission checked) and pools the link;
//!           the call meanwhile goes over a swarm stream
//! ```
//!
//! A peer whose link cannot be reached (no TCP listen address, a firewall, an
//! older node) is retried after [`LINK_RETRY_MS`]; its traffic stays on the
//! swarm's streams, so a direct link is a faster path, never a requirement.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_net::multiaddr::Protocol;
use mesh_net::{read_frame, write_frame, DirectLink, Multiaddr, NetHandle, PeerId};
use tokio::sync::watch;

use super::idle_pool::IdlePool;
use super::raft_transport::{incoming_streams, spawn_serve_loop};

/// The stream protocol that tells where a node's direct Raft link listens.
pub const RAFT_LINK_ADDRS_STREAM: &str = "raft-link/1";
/// Most direct links kept open to one peer.
pub const LINKS_PER_PEER_MAX: usize = 8;
/// After a failed attempt, the next one to that peer waits this long.
pub const LINK_RETRY_MS: u64 = 10_000;
/// Most addresses a node advertises (and a caller reads) for its link.
pub const ADVERTISED_ADDRS_MAX: usize = 16;
/// Largest address answer read, in bytes.
const ADDRS_ANSWER_BYTES_MAX: usize = 4_096;
/// Longest wait for a peer's address answer.
const ADDRS_TIMEOUT_MS: u64 = 5_000;

/// One open link, counted against [`LINKS_PER_PEER_MAX`] until dropped.
pub struct PooledLink {
    /// The link.
    pub link: DirectLink,
    open: Arc<AtomicUsize>,
}

impl Drop for PooledLink {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What is known of one peer's link.
#[derive(Default)]
struct PeerLinks {
    addrs: Vec<SocketAddr>,
    open: Arc<AtomicUsize>,
    connecting: bool,
    retry_at: Option<Instant>,
}

/// Direct links to the other committee members.
pub struct RaftLinks {
    net: NetHandle,
    idle: IdlePool<PooledLink>,
    peers: Mutex<HashMap<PeerId, PeerLinks>>,
}

impl RaftLinks {
    /// Links opened through `net`.
    pub fn new(net: NetHandle) -> Arc<Self> {
        Arc::new(Self {
            net,
            idle: IdlePool::new(LINKS_PER_PEER_MAX),
            peers: Mutex::new(HashMap::new()),
        })
    }

    /// An idle link to the admitted `peer`, if one is open.
    pub fn take_idle(&self, peer: &PeerId) -> Option<PooledLink> {
        self.idle.take_admitted(peer, self.net.is_admitted(peer))
    }

    /// Returns a link after a successful exchange.
    pub fn put_idle(&self, peer: PeerId, link: PooledLink) {
        self.idle.put(peer, link);
    }

    /// Starts opening one more link to `peer` in the background, unless one
    /// is being opened, [`LINKS_PER_PEER_MAX`] are open, or the last attempt
    /// failed less than [`LINK_RETRY_MS`] ago.
    pub fn want(self: &Arc<Self>, peer: PeerId) {
        {
            let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            if peers.len() >= super::idle_pool::POOL_PEERS_MAX && !peers.contains_key(&peer) {
                peers.retain(|_, p| p.open.load(Ordering::Relaxed) > 0 || p.connecting);
                if peers.len() >= super::idle_pool::POOL_PEERS_MAX {
                    return;
                }
            }
            let state = peers.entry(peer).or_default();
            let now = Instant::now();
            if state.connecting
                || state.open.load(Ordering::Relaxed) >= LINKS_PER_PEER_MAX
                || state.retry_at.is_some_and(|at| now < at)
            {
                return;
            }
            state.connecting = true;
        }
        let links = self.clone();
        tokio::spawn(async move { links.open_one(peer).await });
    }

    async fn open_one(&self, peer: PeerId) {
        let known = self.with_peer(&peer, |p| p.addrs.clone());
        let mut opened = self.connect_any(peer, &known).await;
        let mut addrs = known;
        if opened.is_none() {
            // Unknown, or stale (the peer restarted on another port): ask.
            addrs = ask_addrs(&self.net, peer).await;
            opened = self.connect_any(peer, &addrs).await;
        }
        let open = self.with_peer(&peer, |p| {
            p.connecting = false;
            if opened.is_some() {
                p.addrs = addrs;
                p.retry_at = None;
                p.open.fetch_add(1, Ordering::Relaxed);
            } else {
                p.addrs.clear();
                p.retry_at = Some(Instant::now() + Duration::from_millis(LINK_RETRY_MS));
            }
            p.open.clone()
        });
        if let Some(link) = opened {
            tracing::debug!(%peer, "direct raft link open");
            self.put_idle(peer, PooledLink { link, open });
        }
    }

    async fn connect_any(&self, peer: PeerId, addrs: &[SocketAddr]) -> Option<DirectLink> {
        for addr in addrs {
            match self.net.direct_links().connect(peer, *addr).await {
                Ok(link) => return Some(link),
                Err(e) => tracing::debug!(%peer, %addr, %e, "direct raft link failed"),
            }
        }
        None
    }

    fn with_peer<T>(&self, peer: &PeerId, f: impl FnOnce(&mut PeerLinks) -> T) -> T {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        f(peers.entry(*peer).or_default())
    }
}

/// Asks `peer` where its link listens; empty when it does not say.
async fn ask_addrs(net: &NetHandle, peer: PeerId) -> Vec<SocketAddr> {
    let ask = async {
        let mut stream = net.open_stream(peer, RAFT_LINK_ADDRS_STREAM).await.ok()?;
        read_frame(&mut stream, ADDRS_ANSWER_BYTES_MAX).await.ok()?
    };
    match tokio::time::timeout(Duration::from_millis(ADDRS_TIMEOUT_MS), ask).await {
        Ok(Some(answer)) => parse_addrs(&answer),
        _ => Vec::new(),
    }
}

/// The addresses in an answer: one `ip:port` a line; bad lines are skipped.
pub fn parse_addrs(answer: &[u8]) -> Vec<SocketAddr> {
    String::from_utf8_lossy(answer)
        .lines()
        .filter_map(|line| SocketAddr::from_str(line.trim()).ok())
        .take(ADVERTISED_ADDRS_MAX)
        .collect()
}

/// The answer that advertises `addrs`.
pub fn format_addrs(addrs: &[SocketAddr]) -> Vec<u8> {
    let lines: Vec<String> = addrs
        .iter()
        .take(ADVERTISED_ADDRS_MAX)
        .map(ToString::to_string)
        .collect();
    lines.join("\n").into_bytes()
}

/// The IP and TCP port of a multiaddr such as `/ip4/127.0.0.1/tcp/4001`.
fn tcp_socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = addr.iter();
    let ip = match parts.next()? {
        Protocol::Ip4(ip) => IpAddr::V4(ip),
        Protocol::Ip6(ip) => IpAddr::V6(ip),
        _ => return None,
    };
    match parts.next()? {
        Protocol::Tcp(port) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

/// Where the link listens: the IP of the first TCP address in `listen`
/// (the configured ones), on `port`; `None` without a TCP address.
pub fn link_bind_addr(listen: &[String], port: u16) -> Option<SocketAddr> {
    listen
        .iter()
        .filter_map(|a| Multiaddr::from_str(a).ok())
        .find_map(|a| tcp_socket_addr(&a))
        .map(|a| SocketAddr::new(a.ip(), port))
}

/// The addresses peers should dial: the bound address itself, or, when it
/// binds every interface, each IP the swarm listens on (`resolved`) with the
/// link's port.
pub fn advertised_addrs(bound: SocketAddr, resolved: &[Multiaddr]) -> Vec<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let mut out: Vec<SocketAddr> = Vec::new();
    let candidates = resolved
        .iter()
        .filter_map(tcp_socket_addr)
        .filter(|a| a.is_ipv4() == bound.is_ipv4())
        .map(|a| SocketAddr::new(a.ip(), bound.port()));
    for addr in candidates {
        if out.len() < ADVERTISED_ADDRS_MAX && !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

/// Answers every address question with the addresses of the link bound at
/// `bound` (from the swarm's listen addresses of the moment, which grow as
/// interfaces are found) until `stop` fires.
pub fn serve_link_addrs(
    net: &NetHandle,
    bound: SocketAddr,
    stop: watch::Receiver<bool>,
) -> Result<(), mesh_net::NetError> {
    let incoming = incoming_streams(net.accept_streams(RAFT_LINK_ADDRS_STREAM)?);
    let net = net.clone();
    spawn_serve_loop(incoming, stop, move |(peer, mut stream)| {
        let net = net.clone();
        tokio::spawn(async move {
            let resolved = net.listen_addrs().await;
            let answer = format_addrs(&advertised_addrs(bound, &resolved));
            if let Err(e) = write_frame(&mut stream, &answer).await {
                tracing::debug!(%peer, %e, "cannot tell a peer the raft link address");
            }
        });
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn addresses_round_trip_and_garbage_is_skipped() {
        let addrs: Vec<SocketAddr> = vec![
            "127.0.0.1:4001".parse().unwrap(),
            "[::1]:9".parse().unwrap(),
        ];
        assert_eq!(parse_addrs(&format_addrs(&addrs)), addrs);
        assert_eq!(
            parse_addrs(b"nonsense\n10.0.0.1:80\n\xff\xfe"),
            vec!["10.0.0.1:80".parse().unwrap()]
        );
        let many = "1.2.3.4:5\n".repeat(100);
        assert_eq!(parse_addrs(many.as_bytes()).len(), ADVERTISED_ADDRS_MAX);
    }

    #[test]
    fn the_link_binds_the_first_tcp_listen_ip() {
        let listen = vec![
            "/ip4/10.1.2.3/udp/9/quic-v1".to_string(),
            "/ip4/0.0.0.0/tcp/4001".into(),
        ];
        assert_eq!(
            link_bind_addr(&listen, 0),
            Some("0.0.0.0:0".parse().unwrap())
        );
        assert_eq!(link_bind_addr(&["/memory/1".into()], 7), None);
    }

    #[test]
    fn an_unspecified_bind_advertises_every_resolved_ip() {
        let resolved: Vec<Multiaddr> = [
            "/ip4/127.0.0.1/tcp/4001",
            "/ip4/172.17.0.2/tcp/4001",
            "/ip4/172.17.0.2/udp/4001/quic-v1",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let bound: SocketAddr = "0.0.0.0:5000".parse().unwrap();
        let want: Vec<SocketAddr> = vec![
            "127.0.0.1:5000".parse().unwrap(),
            "172.17.0.2:5000".parse().unwrap(),
        ];
        assert_eq!(advertised_addrs(bound, &resolved), want);
        let specific: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(advertised_addrs(specific, &resolved), vec![specific]);
    }
}
