//! Test fixtures: a mesh CA, node identities and certificates made with
//! mesh-security, network configurations with short timers, and bounded
//! waiting helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;

use mesh_net::{
    envelope_mesh_id, spawn, Multiaddr, NetConfig, NetEvent, NetHandle, PeerId, PeerStatus, Timing,
    TransportKind,
};
use mesh_security::ca::{ca_pin, CertVerifier, IssuedCert, MeshCa};
use mesh_security::envelope::{Envelope, MessageKind};
use mesh_security::rbac::{Role, RoleSet};
use mesh_security::NodeIdentity;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

/// The mesh name every test node uses.
pub const MESH: &str = "test-mesh";
/// Upper bound of every wait (a safety net, not a timing assertion).
pub const WAIT: Duration = Duration::from_secs(40);

pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn now_ms() -> u64 {
    (now_s() as u64) * 1000
}

/// A mesh CA and its verifier.
pub struct TestCa {
    pub ca: MeshCa,
    pub verifier: CertVerifier,
}

impl TestCa {
    pub fn new(seed: u8) -> Self {
        let ca = MeshCa::init(
            NodeIdentity::from_seed(&[seed; 32]),
            "test-mesh-ca",
            now_s() - 3_600,
            now_s() + 86_400,
            [seed; 16],
        )
        .unwrap();
        let verifier = CertVerifier::new(ca.cert_der().to_vec(), &ca_pin(ca.cert_der())).unwrap();
        Self { ca, verifier }
    }

    pub fn issue(&self, identity: &NodeIdentity, serial: u8) -> IssuedCert {
        self.ca
            .issue(
                &identity.verifying_key(),
                RoleSet::of(&[Role::Trainer]),
                now_s() - 60,
                now_s() + 86_400,
                [serial; 16],
            )
            .unwrap()
    }
}

pub fn identity(index: u8) -> NodeIdentity {
    NodeIdentity::from_seed(&[100u8.wrapping_add(index); 32])
}

pub fn listen_addr(kind: TransportKind) -> Multiaddr {
    match kind {
        TransportKind::Memory => "/memory/0".parse().unwrap(),
        TransportKind::Network => "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
    }
}

/// A configuration with short timers for tests.
pub fn config(
    ca: &TestCa,
    identity: NodeIdentity,
    cert_der: Vec<u8>,
    kind: TransportKind,
    bootstrap: Vec<Multiaddr>,
) -> NetConfig {
    let mut config = NetConfig::new(MESH, identity, cert_der, ca.verifier.clone());
    config.transport = kind;
    config.listen = vec![listen_addr(kind)];
    config.bootstrap = bootstrap;
    config.target_peers = 8;
    config.limits.memory_fraction_max = None;
    config.timing = Timing {
        admission_deadline: Duration::from_secs(5),
        admission_attempts: 3,
        ban_duration: Duration::from_secs(120),
        request_timeout: Duration::from_secs(60),
        ping_interval: Duration::from_secs(1),
        gossip_heartbeat: Duration::from_millis(100),
        tick: Duration::from_millis(50),
        redial_base: Duration::from_millis(100),
        redial_max: Duration::from_secs(2),
        kad_bootstrap_interval: Duration::from_secs(3),
        unused_connection_close: None,
    };
    config
}

/// A running node: its handle, its registry, and the events that are not
/// requests (requests are answered by echoing the payload).
pub struct Node {
    pub handle: NetHandle,
    pub registry: Registry,
    pub events: mpsc::UnboundedReceiver<NetEvent>,
    pub identity: NodeIdentity,
}

impl Node {
    pub async fn start(config: NetConfig) -> Self {
        let identity =
            NodeIdentity::from_pkcs8_pem(&config.identity.to_pkcs8_pem().unwrap()).unwrap();
        let mut registry = Registry::default();
        let (handle, events) = spawn(config, &mut registry).await.unwrap();
        Self {
            handle,
            registry,
            events: echo_requests(events),
            identity,
        }
    }

    pub fn peer_id(&self) -> PeerId {
        self.handle.local_peer_id()
    }

    pub async fn addr(&self) -> Multiaddr {
        eventually("listening", || async {
            self.handle.listen_addrs().await.into_iter().next()
        })
        .await
    }

    pub async fn status_of(&self, peer: PeerId) -> Option<PeerStatus> {
        self.handle
            .peers()
            .await
            .into_iter()
            .find(|info| info.peer == peer)
            .map(|info| info.state)
    }

    pub async fn admitted(&self) -> Vec<PeerId> {
        self.handle
            .peers()
            .await
            .into_iter()
            .filter(|info| info.state == PeerStatus::Admitted)
            .map(|info| info.peer)
            .collect()
    }

    pub fn metrics_text(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }

    /// A fresh signed envelope from this node.
    pub fn envelope(&self, seq: u64, payload: &[u8]) -> Vec<u8> {
        Envelope::seal(
            &self.identity,
            envelope_mesh_id(MESH),
            MessageKind(1),
            seq,
            now_ms(),
            payload.to_vec(),
        )
        .unwrap()
        .encode()
        .unwrap()
    }

    /// Waits (bounded) for an event matching `pick`, skipping others.
    pub async fn next_event<T>(&mut self, mut pick: impl FnMut(&NetEvent) -> Option<T>) -> T {
        let wait = async {
            loop {
                let event = self.events.recv().await.expect("event stream ended");
                if let Some(found) = pick(&event) {
                    return found;
                }
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .expect("event did not arrive in time")
    }
}

/// Answers every request with its own payload; forwards other events.
fn echo_requests(mut events: mpsc::Receiver<NetEvent>) -> mpsc::UnboundedReceiver<NetEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                NetEvent::Request {
                    payload, respond, ..
                } => {
                    let _ = respond.send(Ok(payload));
                }
                other => {
                    let _ = tx.send(other);
                }
            }
        }
    });
    rx
}

/// Polls `check` every 50 ms until it returns `Some`, at most [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let rounds = WAIT.as_millis() / 50;
    for _ in 0..rounds {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Starts `n` nodes of one mesh; nodes 1.. bootstrap from node 0.
pub async fn start_mesh(ca: &TestCa, n: u8, kind: TransportKind) -> Vec<Node> {
    let first_identity = identity(0);
    let cert = ca.issue(&first_identity, 1).der;
    let first = Node::start(config(ca, first_identity, cert, kind, Vec::new())).await;
    let bootstrap = vec![first.addr().await];
    let mut nodes = vec![first];
    for index in 1..n {
        let id = identity(index);
        let cert = ca.issue(&id, index + 1).der;
        nodes.push(Node::start(config(ca, id, cert, kind, bootstrap.clone())).await);
    }
    nodes
}

/// Waits until every node has admitted every other node.
pub async fn wait_full_mesh(nodes: &[Node]) {
    let want = nodes.len() - 1;
    for node in nodes {
        eventually("every node admitted by every other", || async {
            (node.admitted().await.len() >= want).then_some(())
        })
        .await;
    }
}
