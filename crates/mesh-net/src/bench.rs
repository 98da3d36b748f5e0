//! Benchmarks the CLI runs (`agent-mesh bench net`): gossip time-to-all over
//! many in-process nodes on the memory transport, and request-response
//! throughput of large blobs over loopback TCP. Each function builds its own
//! tokio runtime, CA, identities and certificates, so callers need nothing
//! but this crate.

use std::time::{Duration, Instant};

use mesh_security::ca::{ca_pin, CertVerifier, MeshCa};
use mesh_security::envelope::{Envelope, MessageKind};
use mesh_security::rbac::{Role, RoleSet};
use mesh_security::NodeIdentity;
use prometheus_client::registry::Registry;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;

use crate::config::{envelope_mesh_id, NetConfig, TransportKind};
use crate::link_delay::LinkDelay;
use crate::metrics::{Direction, Kind};
use crate::{spawn, Multiaddr, NetError, NetEvent, NetHandle, PeerStatus};

const MESH: &str = "bench-mesh";
const TOPIC: &str = "bench";
/// Longest wait for one message to reach every node before it counts as lost.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for the mesh to form.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(300);
/// Gossip nodes close connections unused this long (see [`crate::trim`]);
/// the measurement starts after the first ones have closed.
pub const UNUSED_CLOSE: Duration = Duration::from_secs(5);

/// Gossip time-to-all over `nodes` in-process nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct GossipResult {
    /// Nodes in the mesh.
    pub nodes: usize,
    /// Messages published (one at a time, by rotating publishers).
    pub messages: usize,
    /// Messages that reached every other node within [`DELIVERY_TIMEOUT`].
    pub delivered: usize,
    /// Median time from publish until the last node received it, ms.
    pub p50_ms: f64,
    /// 99th percentile of the same, ms.
    pub p99_ms: f64,
    /// Time to start the nodes and have each admit its first peers, s.
    pub setup_s: f64,
    /// Gossip copies refused because the relaying peer was not admitted yet
    /// (summed over nodes).
    pub unadmitted_relays: u64,
    /// Each link's one-way delay range, when links were delayed.
    pub link_delay: Option<LinkDelay>,
    /// Most peers one node was connected to, sampled after the last message.
    pub connections_max: usize,
    /// Median over nodes of the same.
    pub connections_median: usize,
    /// Connections closed as unused, summed over nodes.
    pub unused_closed: u64,
}

/// What [`gossip_time_to_all`] measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GossipBench {
    /// Nodes in the mesh (at least 2).
    pub nodes: usize,
    /// Messages to publish, one at a time.
    pub messages: usize,
    /// Seed of identities, topology and link delays.
    pub seed: u64,
    /// Each link's one-way delay range; none for instant links.
    pub link_delay: Option<LinkDelay>,
}

/// Request-response throughput of one blob size over loopback TCP.
#[derive(Clone, Debug, PartialEq)]
pub struct ThroughputResult {
    /// Bytes per request.
    pub blob_bytes: usize,
    /// Requests sent (sequentially; each answered with a two-byte ack).
    pub transfers: usize,
    /// Wall time of all transfers, s.
    pub seconds: f64,
    /// Payload bytes per second, in GB/s (10^9 bytes).
    pub gb_per_s: f64,
}

/// Why a benchmark could not run. Not retryable unless the cause was load.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The network layer failed.
    #[error("network: {0}")]
    Net(#[from] NetError),
    /// Making the CA or certificates failed.
    #[error("certificates: {0}")]
    Cert(String),
    /// The runtime could not start.
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// The mesh did not form in time.
    #[error("setup did not finish: {0}")]
    Setup(String),
}

fn now_s() -> i64 {
    i64::try_from(crate::driver::now_ms() / 1000).unwrap_or(i64::MAX)
}

struct Fixture {
    ca: MeshCa,
    verifier: CertVerifier,
}

impl Fixture {
    fn new(seed: u64) -> Result<Self, BenchError> {
        let ca = MeshCa::init(
            identity(seed, u64::MAX),
            "bench-ca",
            now_s() - 3_600,
            now_s() + 86_400,
            [7; 16],
        )
        .map_err(|e| BenchError::Cert(e.to_string()))?;
        let verifier = CertVerifier::new(ca.cert_der().to_vec(), &ca_pin(ca.cert_der()))
            .map_err(|e| BenchError::Cert(e.to_string()))?;
        Ok(Self { ca, verifier })
    }

    fn config(&self, seed: u64, index: u64, kind: TransportKind) -> Result<NetConfig, BenchError> {
        let id = identity(seed, index);
        let mut serial = [0u8; 16];
        serial[..8].copy_from_slice(&index.to_be_bytes());
        serial[8] = 1;
        let cert = self
            .ca
            .issue(
                &id.verifying_key(),
                RoleSet::of(&[Role::Trainer]),
                now_s() - 60,
                now_s() + 86_400,
                serial,
            )
            .map_err(|e| BenchError::Cert(e.to_string()))?;
        let mut config = NetConfig::new(MESH, id, cert.der, self.verifier.clone());
        config.transport = kind;
        config.listen = vec![match kind {
            TransportKind::Memory => "/memory/0",
            TransportKind::Network => "/ip4/127.0.0.1/tcp/0",
        }
        .parse()
        .map_err(|e| BenchError::Setup(format!("address: {e}")))?];
        config.seed = seed ^ index;
        config.limits.memory_fraction_max = None;
        config.timing.tick = Duration::from_millis(100);
        config.timing.gossip_heartbeat = Duration::from_millis(200);
        config.timing.redial_base = Duration::from_millis(200);
        config.timing.redial_max = Duration::from_secs(5);
        Ok(config)
    }
}

fn identity(seed: u64, index: u64) -> NodeIdentity {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_be_bytes());
    bytes[8..16].copy_from_slice(&index.to_be_bytes());
    bytes[16] = 0x6e;
    NodeIdentity::from_seed(&bytes)
}

fn runtime() -> Result<tokio::runtime::Runtime, BenchError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn first_addr(handle: &NetHandle) -> Result<Multiaddr, BenchError> {
    for _ in 0..200 {
        if let Some(addr) = handle.listen_addrs().await.into_iter().next() {
            return Ok(addr);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(BenchError::Setup("node did not start listening".into()))
}

/// How many of `handle`'s peers are in one of `states`.
async fn peers_in(handle: &NetHandle, states: &[PeerStatus]) -> usize {
    let peers = handle.peers().await;
    peers.iter().filter(|p| states.contains(&p.state)).count()
}

/// Measures gossip time-to-all as `bench` says.
///
/// With link delays the nodes run on a simulated clock: one thread, tokio's
/// clock paused, so it moves only when every node waits, straight to the
/// next timer (a link delivering bytes). Time-to-all is then the links'
/// delays along the paths gossip took, not the time 2 cores need to run
/// every node's handshakes and signatures. The real network layer runs
/// unchanged; its own timers (gossipsub heartbeats, request and handshake
/// timeouts) keep wall-clock time, so the setup waits in wall-clock time
/// for heartbeats to build the mesh.
pub fn gossip_time_to_all(bench: GossipBench) -> Result<GossipResult, BenchError> {
    if bench.nodes < 2 {
        return Err(BenchError::Setup("need at least 2 nodes".into()));
    }
    let runtime = match bench.link_delay {
        Some(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()?,
        None => runtime()?,
    };
    runtime.block_on(gossip_async(bench))
}

/// Waits `duration` of wall-clock time. On a paused clock the simulated
/// time runs on meanwhile (links deliver, handshakes finish) while the
/// wall-clock timers (heartbeats) have time to fire.
async fn wall_clock_wait(duration: Duration) {
    let started = Instant::now();
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Arrival {
    message: u64,
    at: tokio::time::Instant,
}

async fn start_gossip_mesh(
    bench: GossipBench,
    arrivals: &mpsc::Sender<Arrival>,
) -> Result<Vec<NetHandle>, BenchError> {
    let GossipBench { nodes, seed, .. } = bench;
    let setup = Instant::now();
    let fixture = Fixture::new(seed)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut handles: Vec<NetHandle> = Vec::with_capacity(nodes);
    let mut addrs: Vec<Multiaddr> = Vec::with_capacity(nodes);
    for index in 0..nodes {
        let mut config = fixture.config(seed, index as u64, TransportKind::Memory)?;
        config.memory_link_delay = bench.link_delay;
        config.target_peers = 6;
        config.timing.unused_connection_close = Some(UNUSED_CLOSE);
        if index > 0 {
            config.bootstrap.push(addrs[index - 1].clone());
            config
                .bootstrap
                .push(addrs[rng.random_range(0..index)].clone());
        }
        let mut registry = Registry::default();
        let (handle, events) = spawn(config, &mut registry).await?;
        handle.subscribe(TOPIC).await?;
        tokio::spawn(collect_arrivals(events, arrivals.clone()));
        addrs.push(first_addr(&handle).await?);
        handles.push(handle);
        if (index + 1) % 100 == 0 || index + 1 == nodes {
            tracing::info!(target: "mesh_net::bench", started = index + 1, nodes, wall_s = setup.elapsed().as_secs(), "nodes started");
        }
    }
    let started = Instant::now();
    for handle in &handles {
        while peers_in(handle, &[PeerStatus::Admitted]).await < 2 {
            if started.elapsed() > SETUP_TIMEOUT {
                return Err(BenchError::Setup("nodes did not admit their peers".into()));
            }
            wall_clock_wait(Duration::from_millis(100)).await;
        }
    }
    tracing::info!(target: "mesh_net::bench", nodes, wall_s = setup.elapsed().as_secs(), "every node admitted two peers");
    // Let gossipsub build its mesh over a few heartbeats, and setup's
    // surplus connections close.
    wall_clock_wait(UNUSED_CLOSE + Duration::from_secs(3)).await;
    Ok(handles)
}

async fn collect_arrivals(mut events: mpsc::Receiver<NetEvent>, out: mpsc::Sender<Arrival>) {
    while let Some(event) = events.recv().await {
        if let NetEvent::Gossip { payload, .. } = event {
            let at = tokio::time::Instant::now();
            let Ok(envelope) = Envelope::decode(&payload, usize::MAX) else {
                continue;
            };
            let Some(bytes) = envelope.payload.get(..8) else {
                continue;
            };
            let mut id = [0u8; 8];
            id.copy_from_slice(bytes);
            let message = u64::from_be_bytes(id);
            if out.send(Arrival { message, at }).await.is_err() {
                return;
            }
        }
    }
}

async fn gossip_async(bench: GossipBench) -> Result<GossipResult, BenchError> {
    let GossipBench {
        nodes,
        messages,
        seed,
        link_delay,
    } = bench;
    let setup = Instant::now();
    let (arrivals_tx, mut arrivals) = mpsc::channel(nodes.saturating_mul(4).max(64));
    let handles = start_gossip_mesh(bench, &arrivals_tx).await?;
    let setup_s = setup.elapsed().as_secs_f64();
    let mut times_ms = Vec::with_capacity(messages);
    let mesh_id = envelope_mesh_id(MESH);
    for message in 0..messages as u64 {
        let publisher = (message as usize * 7 + 1) % nodes;
        let id = identity(seed, publisher as u64);
        let mut payload = message.to_be_bytes().to_vec();
        payload.resize(1024, 0);
        let envelope = Envelope::seal(
            &id,
            mesh_id,
            MessageKind(1),
            message + 1,
            crate::driver::now_ms(),
            payload,
        )
        .map_err(|e| BenchError::Setup(e.to_string()))?
        .encode()
        .map_err(|e| BenchError::Setup(e.to_string()))?;
        let sent = tokio::time::Instant::now();
        handles[publisher].publish(TOPIC, envelope).await?;
        let mut received = 0;
        let mut last = sent;
        let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
        while received < nodes - 1 {
            match tokio::time::timeout_at(deadline, arrivals.recv()).await {
                Ok(Some(arrival)) if arrival.message == message => {
                    received += 1;
                    last = last.max(arrival.at);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if received == nodes - 1 {
            times_ms.push(last.duration_since(sent).as_secs_f64() * 1e3);
        }
        tracing::info!(target: "mesh_net::bench", message, received, nodes, "message delivered");
    }
    let unadmitted_relays = handles
        .iter()
        .map(|h| {
            h.metrics()
                .messages(Kind::Gossip, Direction::In, "not_admitted")
        })
        .sum();
    let unused_closed = handles
        .iter()
        .map(|h| h.metrics().unused_connections_closed.get())
        .sum();
    let mut connections = Vec::with_capacity(nodes);
    for handle in &handles {
        connections.push(peers_in(handle, &[PeerStatus::Connected, PeerStatus::Admitted]).await);
    }
    connections.sort_unstable();
    for handle in handles {
        handle.shutdown().await;
    }
    times_ms.sort_by(f64::total_cmp);
    Ok(GossipResult {
        nodes,
        messages,
        delivered: times_ms.len(),
        p50_ms: percentile(&times_ms, 0.50),
        p99_ms: percentile(&times_ms, 0.99),
        setup_s,
        unadmitted_relays,
        link_delay,
        connections_max: connections.last().copied().unwrap_or(0),
        connections_median: connections.get(nodes / 2).copied().unwrap_or(0),
        unused_closed,
    })
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Measures request throughput for each blob size over loopback TCP
/// (`transfers` sequential requests each).
pub fn request_throughput(
    sizes: &[(usize, usize)],
    seed: u64,
) -> Result<Vec<ThroughputResult>, BenchError> {
    runtime()?.block_on(throughput_async(sizes, seed))
}

async fn throughput_async(
    sizes: &[(usize, usize)],
    seed: u64,
) -> Result<Vec<ThroughputResult>, BenchError> {
    let fixture = Fixture::new(seed)?;
    let mut registry = Registry::default();
    let (server, mut server_events) = spawn(
        fixture.config(seed, 0, TransportKind::Network)?,
        &mut registry,
    )
    .await?;
    tokio::spawn(async move {
        while let Some(event) = server_events.recv().await {
            if let NetEvent::Request { respond, .. } = event {
                let _ = respond.send(Ok(b"ok".to_vec()));
            }
        }
    });
    let mut client_config = fixture.config(seed, 1, TransportKind::Network)?;
    client_config.bootstrap = vec![first_addr(&server).await?];
    let (client, _client_events) = spawn(client_config, &mut registry).await?;
    let started = Instant::now();
    while peers_in(&client, &[PeerStatus::Admitted]).await < 1 {
        if started.elapsed() > Duration::from_secs(60) {
            return Err(BenchError::Setup("client was not admitted".into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let server_id = server.local_peer_id();
    let mut results = Vec::with_capacity(sizes.len());
    for &(blob_bytes, transfers) in sizes {
        let blob = vec![0xa5u8; blob_bytes];
        let start = Instant::now();
        for _ in 0..transfers {
            client
                .request(server_id, "bench/blob", blob.clone())
                .await?;
        }
        let seconds = start.elapsed().as_secs_f64();
        results.push(ThroughputResult {
            blob_bytes,
            transfers,
            seconds,
            gb_per_s: (blob_bytes * transfers) as f64 / seconds / 1e9,
        });
    }
    client.shutdown().await;
    server.shutdown().await;
    Ok(results)
}
