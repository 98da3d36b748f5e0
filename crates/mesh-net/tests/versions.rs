//! Protocol version negotiation between real swarms on the in-memory
//! transport: nodes announce the versions they speak in identify, each pair
//! uses the newest both speak, and a node two releases ahead (no version in
//! common) is admitted but shown as incompatible.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use mesh_net::version::PROTOCOL_VERSION_MAX;
use mesh_net::{PeerVersion, TransportKind, VersionRange};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pair_uses_the_newest_version_both_speak() {
    let ca = TestCa::new(7);
    let kind = TransportKind::Memory;
    let ranges = [
        VersionRange::default(),
        VersionRange::capped(1).unwrap(),
        VersionRange::new(PROTOCOL_VERSION_MAX + 1, PROTOCOL_VERSION_MAX + 2).unwrap(),
        VersionRange::default(),
    ];
    let mut nodes = Vec::new();
    let mut bootstrap = Vec::new();
    for (index, range) in ranges.iter().enumerate() {
        let index = index as u8;
        let id = identity(index);
        let cert = ca.issue(&id, index + 1).der;
        let mut config = config(&ca, id, cert, kind, bootstrap.clone());
        config.versions = *range;
        let node = Node::start(config).await;
        if bootstrap.is_empty() {
            bootstrap.push(node.addr().await);
        }
        nodes.push(node);
    }
    wait_full_mesh(&nodes).await;

    let expect = |from: usize, to: usize| match (from, to) {
        (0, 3) | (3, 0) => PeerVersion::Negotiated(PROTOCOL_VERSION_MAX),
        (0 | 3, 1) | (1, 0 | 3) => PeerVersion::Negotiated(1),
        (2, _) | (_, 2) => PeerVersion::Incompatible { theirs: ranges[to] },
        _ => unreachable!(),
    };
    for (from, node) in nodes.iter().enumerate() {
        assert_eq!(node.handle.protocol_versions(), ranges[from]);
        for (to, peer) in nodes.iter().enumerate().filter(|(to, _)| *to != from) {
            let want = expect(from, to);
            eventually("the peer's identify", || async {
                (node.handle.peer_version(&peer.peer_id()) == want).then_some(())
            })
            .await;
        }
    }
    // Nothing is encoded for an incompatible peer; version 1 for the capped one.
    let ours = nodes[0].handle.protocol_versions();
    assert_eq!(
        nodes[0]
            .handle
            .peer_version(&nodes[2].peer_id())
            .usable(ours),
        None
    );
    assert_eq!(
        nodes[0]
            .handle
            .peer_version(&nodes[1].peer_id())
            .usable(ours),
        Some(1)
    );
    for node in nodes {
        node.handle.shutdown().await;
    }
}
