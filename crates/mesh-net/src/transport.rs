//! The transports: how bytes move between two nodes and how each link is
//! encrypted and authenticated.
//!
//! ```text
//!   Network: TCP ─ multistream ─ Noise XX (X25519, ChaCha20-Poly1305, Ed25519 identity) ─ Yamux
//!            QUIC v1 (TLS 1.3 with the same Ed25519 identity, native streams)
//!   Memory:  MemoryTransport ─ multistream ─ Noise XX ─ Yamux     (one process, many nodes)
//!            [─ link_delay::Delayed under multistream, when a delay range is set]
//! ```
//!
//! Both produce `(PeerId, StreamMuxerBox)`, so the swarm above does not know
//! which one it runs on. The in-memory variant runs the very same Noise and
//! Yamux upgrades as TCP, so tests over it exercise the real handshake.
//!
//! [`build_with_relay_client`] adds circuit relay v2 beside them: a
//! `/p2p-circuit` address is dialled (or listened on) through a relay peer,
//! and the circuit gets its own Noise XX and Yamux end to end, so the relay
//! sees only ciphertext. Every byte of a relayed connection is counted
//! (`mesh_net_relayed_bytes_total`).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::Either;
use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, MemoryTransport};
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::{noise, quic, relay, tcp, yamux, PeerId, Transport};
use prometheus_client::metrics::counter::Counter;

use crate::config::TransportKind;
use crate::link_delay::DelayDrawer;
use crate::NetError;

/// Longest time a connection may spend in its security and multiplexer handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// Most concurrent Yamux streams per connection.
pub const STREAMS_PER_CONNECTION_MAX: usize = 256;
/// A QUIC connection silent this long is closed, in milliseconds.
pub const QUIC_IDLE_TIMEOUT_MS: u32 = 4_000;

/// The boxed transport the swarm runs on.
pub type MeshTransport = Boxed<(PeerId, StreamMuxerBox)>;

fn yamux_config() -> yamux::Config {
    let mut config = yamux::Config::default();
    config.set_max_num_streams(STREAMS_PER_CONNECTION_MAX);
    config
}

/// Builds the transport of `kind` for `keypair`; memory links are delayed
/// as `delay` draws, when given.
pub fn build(
    kind: TransportKind,
    keypair: &Keypair,
    delay: Option<DelayDrawer>,
) -> Result<MeshTransport, NetError> {
    let noise = noise::Config::new(keypair)
        .map_err(|e| NetError::Transport(format!("noise setup failed: {e}")))?;
    match kind {
        TransportKind::Memory => Ok(MemoryTransport::default()
            .map(move |channel, _| match &delay {
                Some(delay) => Either::Left(delay.wrap(channel)),
                None => Either::Right(channel),
            })
            .upgrade(Version::V1)
            .authenticate(noise)
            .multiplex(yamux_config())
            .timeout(HANDSHAKE_TIMEOUT)
            .boxed()),
        TransportKind::Network => {
            let tcp = tcp::tokio::Transport::new(tcp::Config::new().nodelay(true))
                .upgrade(Version::V1)
                .authenticate(noise)
                .multiplex(yamux_config())
                .timeout(HANDSHAKE_TIMEOUT);
            let quic = quic::tokio::Transport::new(quic_config(keypair));
            let direct = tcp.or_transport(quic).map(|either, _| match either {
                Either::Left((peer, muxer)) => (peer, StreamMuxerBox::new(muxer)),
                Either::Right((peer, muxer)) => (peer, StreamMuxerBox::new(muxer)),
            });
            resolving(direct)
        }
    }
}

/// The transport of `kind` with the circuit relay client beside it, and the
/// relay client behaviour that must run in the same swarm. Bytes on relayed
/// connections are counted into `relayed_bytes` (sent, received).
pub fn build_with_relay_client(
    kind: TransportKind,
    keypair: &Keypair,
    delay: Option<DelayDrawer>,
    relayed_bytes: (Counter, Counter),
) -> Result<(MeshTransport, relay::client::Behaviour), NetError> {
    let base = build(kind, keypair, delay)?;
    let (relay_transport, behaviour) = relay::client::new(keypair.public().to_peer_id());
    let noise = noise::Config::new(keypair)
        .map_err(|e| NetError::Transport(format!("noise setup failed: {e}")))?;
    let (sent, received) = relayed_bytes;
    let relayed = relay_transport
        .map(move |connection, _| Counted {
            inner: connection,
            sent: sent.clone(),
            received: received.clone(),
        })
        .upgrade(Version::V1)
        .authenticate(noise)
        .multiplex(yamux_config())
        .timeout(HANDSHAKE_TIMEOUT);
    let transport = relayed
        .or_transport(base)
        .map(|either, _| match either {
            Either::Left((peer, muxer)) => (peer, StreamMuxerBox::new(muxer)),
            Either::Right((peer, muxer)) => (peer, muxer),
        })
        .boxed();
    Ok((transport, behaviour))
}

/// A relayed connection's byte stream, counting what passes.
struct Counted<C> {
    inner: C,
    sent: Counter,
    received: Counter,
}

fn count(counter: &Counter, bytes: usize) {
    counter.inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
}

impl<C: AsyncRead + Unpin> AsyncRead for Counted<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &result {
            count(&this.received, *n);
        }
        result
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Counted<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &result {
            count(&this.sent, *n);
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// Wraps `direct` so `/dns4`, `/dns6` and `/dns` addresses (a Compose service,
/// a Kubernetes headless-service name) resolve with the system's resolver
/// (`/etc/resolv.conf`). Without a readable resolver configuration the node
/// still runs on IP addresses alone, and says so; it never falls back to a
/// public resolver. A configuration that exists but cannot be parsed is an error.
fn resolving<T>(direct: T) -> Result<MeshTransport, NetError>
where
    T: Transport<Output = (PeerId, StreamMuxerBox)> + Send + Unpin + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
    T::Error: Send + Sync + 'static,
{
    const RESOLV_CONF: &str = "/etc/resolv.conf";
    if let Err(err) = std::fs::metadata(RESOLV_CONF) {
        tracing::warn!("no DNS names in addresses: {RESOLV_CONF} is not readable ({err})");
        return Ok(direct.boxed());
    }
    match libp2p::dns::tokio::Transport::system(direct) {
        Ok(dns) => Ok(dns.boxed()),
        Err(err) => Err(NetError::Transport(format!(
            "reading the system DNS configuration (/etc/resolv.conf) failed: {err}"
        ))),
    }
}

/// QUIC with a shorter silence limit than libp2p's 10 s: a QUIC connection
/// has no close to see when its peer is killed, so the idle timeout is how
/// long a dead peer still looks connected (and how long its round roles wait
/// to be reassigned). Keep-alives every second keep a live but idle link open.
fn quic_config(keypair: &Keypair) -> quic::Config {
    let mut config = quic::Config::new(keypair);
    config.max_idle_timeout = QUIC_IDLE_TIMEOUT_MS;
    config.keep_alive_interval = Duration::from_secs(1);
    config
}
