//! The transports: how bytes move between two nodes and how each link is
//! encrypted and authenticated.
//!
//! ```text
//!   Network: TCP ─ multistream ─ Noise XX (X25519, ChaCha20-Poly1305, Ed25519 identity) ─ Yamux
//!            QUIC v1 (TLS 1.3 with the same Ed25519 identity, native streams)
//!   Memory:  MemoryTransport ─ multistream ─ Noise XX ─ Yamux     (one process, many nodes)
//! ```
//!
//! Both produce `(PeerId, StreamMuxerBox)`, so the swarm above does not know
//! which one it runs on. The in-memory variant runs the very same Noise and
//! Yamux upgrades as TCP, so tests over it exercise the real handshake.

use std::time::Duration;

use futures::future::Either;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, MemoryTransport};
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::{noise, quic, tcp, yamux, PeerId, Transport};

use crate::config::TransportKind;
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

/// Builds the transport of `kind` for `keypair`.
pub fn build(kind: TransportKind, keypair: &Keypair) -> Result<MeshTransport, NetError> {
    let noise = noise::Config::new(keypair)
        .map_err(|e| NetError::Transport(format!("noise setup failed: {e}")))?;
    match kind {
        TransportKind::Memory => Ok(MemoryTransport::default()
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
