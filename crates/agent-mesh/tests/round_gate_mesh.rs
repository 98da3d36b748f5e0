//! Forged and replayed round messages against a real `agent-mesh node`
//! process. The test joins the mesh as an ordinary member (its own key and a
//! trainer certificate from the mesh CA, the project's own network layer),
//! so the messages arrive over an admitted, authenticated link exactly as a
//! peer's would; the node's round gate must refuse each one and count it in
//! `mesh_round_messages_refused_total{reason}`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::mesh::{make_member, write_config, Mesh, MESH_ID};
use mesh_net::{Multiaddr, NetConfig, NetError, NetEvent, NetHandle, PeerId};
use mesh_node::config::NodeConfig;
use mesh_node::runtime::round_gate::RoundGate;
use mesh_node::runtime::Credentials;
use mesh_round::protocol::{RoundMessage, ROUND_PROTOCOL};
use mesh_security::envelope::Envelope;
use mesh_security::NodeIdentity;
use prometheus_client::registry::Registry;

/// The longest the test waits for its link to the node to be admitted.
const ADMISSION_WAIT: Duration = Duration::from_secs(60);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A mesh member run by the test: the network layer with the member's
/// credentials, and a round gate that signs as that member.
struct Member {
    net: NetHandle,
    gate: RoundGate,
}

impl Member {
    /// Joins with the key and certificate in `dir` (written by the CA) and
    /// dials `node`; returns once the node is admitted on this side.
    async fn join(dir: &std::path::Path, node: &PeerId, address: &str) -> Self {
        let config = NodeConfig::load(&dir.join("node.toml"), |_| None).unwrap();
        let creds = Credentials::load(&config).unwrap();
        let mut net_config = NetConfig::new(
            MESH_ID,
            creds.identity.clone(),
            creds.cert_der.clone(),
            creds.verifier.clone(),
        );
        net_config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        net_config.bootstrap = vec![Multiaddr::from_str(address).unwrap()];
        let mut registry = Registry::default();
        let (net, mut events) = mesh_net::spawn(net_config, &mut registry).await.unwrap();
        // The node never has a reason to ask this member anything; answer
        // whatever comes and keep the bounded event queue drained.
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let NetEvent::Request { respond, .. } = event {
                    let _ = respond.send(Err("not serving".into()));
                }
            }
        });
        let started = std::time::Instant::now();
        while !net.is_admitted(node) {
            assert!(
                started.elapsed() < ADMISSION_WAIT,
                "the node was not admitted"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let gate = RoundGate::starting_now(creds.identity, mesh_net::envelope_mesh_id(MESH_ID));
        Self { net, gate }
    }

    /// Sends signed round-message bytes to `node`; `Ok` when it took them.
    async fn send(&self, node: PeerId, bytes: Vec<u8>) -> Result<(), String> {
        match self.net.request(node, ROUND_PROTOCOL, bytes).await {
            Ok(_) => Ok(()),
            Err(NetError::Remote { reason, .. }) => Err(reason),
            Err(other) => panic!("the request itself failed: {other}"),
        }
    }
}

/// The value of `mesh_round_messages_refused_total{reason="REASON"}`.
fn refused(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("mesh_round_messages_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn a_forged_or_replayed_round_message_is_refused_and_counted_by_a_node() {
    let mut mesh = Mesh::new(1);
    mesh.start(0, None);
    let member_dir = mesh.root.path().join("member");
    make_member(mesh.root.path(), &mesh.ca(), "member", "trainer");
    write_config(&member_dir, "../ca", 99);
    let node = &mesh.nodes[0];
    let node_peer = PeerId::from_str(&node.peer_id).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcomes = runtime.block_on(async {
        let mut member = Member::join(&member_dir, &node_peer, &node.listen[0]).await;
        let message = RoundMessage::BlobRequest { hash: [7; 32] };
        // A message the member signed: the gate lets it through to the engine.
        let genuine = member.gate.seal(&message, now_ms()).unwrap();
        let accepted = member.send(node_peer, genuine.clone()).await;
        // The same bytes again: a replay.
        let replayed = member.send(node_peer, genuine).await;
        // Another key's signature, sent over the member's link.
        let other = NodeIdentity::from_seed(&[66; 32]);
        let mut impostor = RoundGate::starting_now(other, mesh_net::envelope_mesh_id(MESH_ID));
        let foreign = impostor.seal(&message, now_ms()).unwrap();
        let wrong_sender = member.send(node_peer, foreign).await;
        // The member's own envelope with its payload altered after signing.
        let fresh = member.gate.seal(&message, now_ms()).unwrap();
        let mut envelope = Envelope::decode(&fresh, usize::MAX).unwrap();
        envelope.payload = RoundMessage::BlobRequest { hash: [8; 32] }.encode();
        let tampered = member.send(node_peer, envelope.encode().unwrap()).await;
        (accepted, replayed, wrong_sender, tampered)
    });
    let (accepted, replayed, wrong_sender, tampered) = outcomes;
    assert_eq!(accepted, Ok(()), "a genuine message is taken");
    let replayed = replayed.expect_err("a replay is refused");
    assert!(replayed.contains("replay"), "{replayed}");
    let wrong_sender = wrong_sender.expect_err("another signer is refused");
    assert!(wrong_sender.contains("signed by"), "{wrong_sender}");
    let tampered = tampered.expect_err("an altered payload is refused");
    assert!(tampered.contains("signature"), "{tampered}");
    let metrics = node.metrics();
    for reason in ["replay", "wrong_sender", "signature"] {
        assert_eq!(refused(&metrics, reason), 1, "{reason}\n{metrics}");
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
}
