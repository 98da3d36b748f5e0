//! The HTTP API's accept loop: every connection bounded in number and time.
//!
//! `axum::serve` sets no header timeout, so a client that sent half a request
//! header, or nothing, kept its connection for minutes (500 such connections
//! were closed only after about 298 s). This loop serves each connection with
//! hyper's HTTP/1 server directly, with a header read timeout, and caps the
//! connections in total and per client IP:
//!
//! ```text
//!   accept ──► total cap (semaphore) ──► per-IP cap ──► [TLS] ──► hyper http/1 connection
//!     │          full: closed at once, counted and       header_read_timeout: whole header by then,
//!     │          logged once per IP and interval         also while idle between keep-alive requests
//!     └─ accept error: logged (paced), 50 ms pause       router: body read timeout, request timeout,
//!                                                         concurrency limit
//! ```
//!
//! Connection tasks live in a [`JoinSet`] owned by the loop, so stopping
//! the loop (aborting its task) closes every connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use mesh_net::LogLimiter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::tls::ApiTls;

/// Pause after a failed accept (out of file descriptors, say), so the loop never spins.
const ACCEPT_ERROR_PAUSE_MS: u64 = 50;

/// Connection limits of the HTTP server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time a connection has to send a whole request header, from when it
    /// opens or from its previous response.
    pub header_read_timeout_ms: u64,
    /// Most open connections.
    pub max_connections: usize,
    /// Most open connections from one client IP address.
    pub max_connections_per_ip: usize,
}

/// The HTTP server's metrics (`mesh_http_*`).
#[derive(Clone, Debug, Default)]
pub struct HttpMetrics {
    /// Connections open now.
    pub connections_open: Gauge,
    refused: Family<[(&'static str, &'static str); 1], Counter>,
}

impl HttpMetrics {
    /// Creates the metrics and registers them under `mesh_http` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let sub = registry.sub_registry_with_prefix("mesh_http");
        sub.register(
            "connections_open",
            "HTTP API connections open now",
            metrics.connections_open.clone(),
        );
        sub.register(
            "connections_refused",
            "HTTP API connections closed on accept, by cap (total, per_ip)",
            metrics.refused.clone(),
        );
        for cap in ["total", "per_ip"] {
            let _ = metrics.refused.get_or_create(&[("cap", cap)]);
        }
        metrics
    }

    /// Connections refused so far under `cap` (`total` or `per_ip`).
    pub fn refused(&self, cap: &'static str) -> u64 {
        self.refused.get_or_create(&[("cap", cap)]).get()
    }
}

/// Open connections per client IP, at most `max` each.
#[derive(Clone, Debug)]
struct IpCounts {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place in [`IpCounts`]; given back when dropped.
struct IpSlot {
    counts: IpCounts,
    ip: IpAddr,
}

impl IpCounts {
    fn take(&self, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What a served connection holds until it closes.
struct Held {
    _permit: OwnedSemaphorePermit,
    _slot: IpSlot,
    open: Gauge,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.open.dec();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The accept loop's state.
struct Server {
    app: Router,
    tls: Option<ApiTls>,
    limits: ServerLimits,
    metrics: HttpMetrics,
    permits: Arc<Semaphore>,
    per_ip: IpCounts,
    log_limit: LogLimiter,
}

impl Server {
    /// Takes the caps for a new connection from `peer`, or says which is full.
    fn admit(&mut self, peer: SocketAddr) -> Result<Held, &'static str> {
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| "total")?;
        let slot = self.per_ip.take(peer.ip()).ok_or("per_ip")?;
        self.metrics.connections_open.inc();
        Ok(Held {
            _permit: permit,
            _slot: slot,
            open: self.metrics.connections_open.clone(),
        })
    }

    fn refuse(&mut self, peer: SocketAddr, cap: &'static str) {
        self.metrics.refused.get_or_create(&[("cap", cap)]).inc();
        let ip = peer.ip().to_string();
        if let Some(suppressed) = self.log_limit.admit("http-cap", &ip, now_ms()) {
            let (total, per_ip) = (
                self.limits.max_connections,
                self.limits.max_connections_per_ip,
            );
            tracing::warn!(
                client = %ip, cap,
                "HTTP connection closed: {total} in total or {per_ip} from one address are open{suppressed}"
            );
        }
    }

    fn serve_connection(&self, stream: TcpStream, held: Held, connections: &mut JoinSet<()>) {
        let service = TowerToHyperService::new(self.app.clone());
        let header_timeout = Duration::from_millis(self.limits.header_read_timeout_ms);
        let tls = self.tls.clone();
        connections.spawn(async move {
            let _held = held;
            let Some(tls) = tls else {
                return serve_http1(stream, service, header_timeout).await;
            };
            // The handshake counts against the header timeout: a client that
            // opens a connection and says nothing holds it no longer over TLS.
            match tokio::time::timeout(header_timeout, tls.acceptor().accept(stream)).await {
                Ok(Ok(stream)) => serve_http1(stream, service, header_timeout).await,
                Ok(Err(err)) => tracing::debug!(%err, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        });
    }
}

/// One HTTP/1 connection over `io` (plain TCP or TLS) until it closes.
async fn serve_http1<I>(io: I, service: TowerToHyperService<Router>, header_timeout: Duration)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    if let Err(err) = connection.await {
        tracing::debug!(%err, "HTTP connection ended with an error");
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until the
/// task running it is aborted.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<ApiTls>,
    limits: ServerLimits,
    metrics: HttpMetrics,
) {
    let mut server = Server {
        app,
        tls,
        limits,
        metrics,
        permits: Arc::new(Semaphore::new(limits.max_connections)),
        per_ip: IpCounts {
            max: limits.max_connections_per_ip,
            open: Arc::new(Mutex::new(HashMap::new())),
        },
        log_limit: LogLimiter::default(),
    };
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match server.admit(peer) {
                    Ok(held) => server.serve_connection(stream, held, &mut connections),
                    Err(cap) => server.refuse(peer, cap),
                },
                Err(err) => {
                    if let Some(suppressed) = server.log_limit.admit("http-accept", "", now_ms()) {
                        tracing::warn!(%err, "HTTP accept failed{suppressed}");
                    }
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
