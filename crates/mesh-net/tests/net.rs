//! End-to-end tests of the network layer over real TCP and QUIC on
//! 127.0.0.1 and over the in-memory transport.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;

use common::*;
use mesh_net::{NetError, NetEvent, PeerId, PeerStatus, TransportKind};
use mesh_security::ca::{RevocationEntry, SignedRevocation};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_with_one_bootstrap_address_are_all_admitted_over_tcp() {
    let ca = TestCa::new(1);
    let nodes = start_mesh(&ca, 5, TransportKind::Network).await;
    wait_full_mesh(&nodes).await;
    for node in &nodes {
        let peers = node.handle.peers().await;
        let admitted: Vec<_> = peers
            .iter()
            .filter(|p| p.state == PeerStatus::Admitted)
            .collect();
        assert_eq!(admitted.len(), 4);
        assert!(admitted.iter().all(|p| !p.addresses.is_empty()));
        assert!(node.metrics_text().contains("mesh_net_peers_admitted 4"));
    }
    eventually("ping measured an RTT", || async {
        let peers = nodes[0].handle.peers().await;
        peers
            .iter()
            .all(|p| p.rtt_ms.is_some() && p.last_seen_ms.is_some())
            .then_some(())
    })
    .await;
    for node in nodes {
        node.handle.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gossip_message_from_one_node_reaches_all() {
    let ca = TestCa::new(2);
    let mut nodes = start_mesh(&ca, 5, TransportKind::Memory).await;
    for node in &nodes {
        node.handle.subscribe("updates").await.unwrap();
    }
    wait_full_mesh(&nodes).await;
    let payload = nodes[2].envelope(1, b"round 1 started");
    let publisher = nodes[2].peer_id();
    eventually("publish accepted", || async {
        match nodes[2].handle.publish("updates", payload.clone()).await {
            Ok(()) => Some(()),
            Err(NetError::NoPeers(_)) => None,
            Err(e) => panic!("publish failed: {e}"),
        }
    })
    .await;
    for (index, node) in nodes.iter_mut().enumerate() {
        if index == 2 {
            continue;
        }
        let (source, topic, got) = node
            .next_event(|event| match event {
                NetEvent::Gossip {
                    source,
                    topic,
                    payload,
                } => Some((*source, topic.clone(), payload.clone())),
                _ => None,
            })
            .await;
        assert_eq!(
            (source, topic.as_str(), &got),
            (publisher, "updates", &payload)
        );
    }
    // Publishing the same envelope again is refused by every receiver's
    // replay window: counted, not delivered.
    nodes[2]
        .handle
        .publish("updates", payload.clone())
        .await
        .unwrap();
    eventually("replay refused", || async {
        nodes[0]
            .metrics_text()
            .contains("result=\"replay\"")
            .then_some(())
    })
    .await;
    // Something that is not a signed envelope is refused before it leaves.
    let garbage = nodes[2].handle.publish("updates", vec![1, 2, 3]).await;
    assert!(matches!(garbage, Err(NetError::InvalidEnvelope(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_certificate_is_refused_with_its_reason_in_metrics() {
    let ca = TestCa::new(3);
    let nodes = start_mesh(&ca, 1, TransportKind::Memory).await;
    let mut good = nodes.into_iter().next().unwrap();
    let rogue_ca = TestCa::new(33);
    let rogue_id = identity(9);
    let rogue_cert = rogue_ca.issue(&rogue_id, 9).der;
    let rogue = Node::start(config(
        &rogue_ca,
        rogue_id,
        rogue_cert,
        TransportKind::Memory,
        vec![good.addr().await],
    ))
    .await;
    let reason = good
        .next_event(|event| match event {
            NetEvent::PeerRejected { peer, reason } if *peer == rogue.peer_id() => {
                Some(reason.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(reason, "wrong_mesh");
    assert!(good
        .metrics_text()
        .contains("mesh_net_admission_rejections_total{reason=\"wrong_mesh\"} 1"));
    assert_eq!(
        good.status_of(rogue.peer_id()).await,
        Some(PeerStatus::Banned)
    );
    // Its requests never reach the application.
    let refused = rogue.handle.request(good.peer_id(), "x", vec![1]).await;
    assert!(matches!(refused, Err(NetError::NotAdmitted(_))));
}

fn revocation(ca: &TestCa, node: &Node, serial: u8) -> SignedRevocation {
    SignedRevocation::sign(
        ca.ca.identity(),
        RevocationEntry {
            serial: ca.issue(&node.identity, serial).serial,
            node_id: node.identity.node_id(),
            revoked_at_unix_s: now_s(),
            reason: "key compromised".into(),
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused() {
    let ca = TestCa::new(4);
    let mut good = start_mesh(&ca, 1, TransportKind::Memory).await.remove(0);
    let id = identity(7);
    let cert = ca.issue(&id, 70).der;
    let bad_config = config(
        &ca,
        id,
        cert,
        TransportKind::Memory,
        vec![good.addr().await],
    );
    let bad_identity = identity(7);
    let serial = ca.issue(&bad_identity, 70).serial;
    let revoked = SignedRevocation::sign(
        ca.ca.identity(),
        RevocationEntry {
            serial,
            node_id: bad_identity.node_id(),
            revoked_at_unix_s: now_s(),
            reason: "left the mesh".into(),
        },
    )
    .unwrap();
    good.handle.revoke(revoked).await.unwrap();
    let bad = Node::start(bad_config).await;
    let reason = good
        .next_event(|event| match event {
            NetEvent::PeerRejected { peer, reason } if *peer == bad.peer_id() => {
                Some(reason.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(reason, "revoked");
    assert!(good
        .metrics_text()
        .contains("mesh_net_admission_rejections_total{reason=\"revoked\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_learned_later_disconnects_the_peer() {
    let ca = TestCa::new(5);
    let mut nodes = start_mesh(&ca, 3, TransportKind::Memory).await;
    wait_full_mesh(&nodes).await;
    let target = nodes[2].peer_id();
    let entry = revocation(&ca, &nodes[2], 3);
    nodes[0].handle.revoke(entry).await.unwrap();
    let reason = nodes[0]
        .next_event(|event| match event {
            NetEvent::PeerRejected { peer, reason } if *peer == target => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert_eq!(reason, "revoked");
    assert_eq!(nodes[0].status_of(target).await, Some(PeerStatus::Banned));
    let node0 = nodes[0].peer_id();
    nodes[2]
        .next_event(|event| match event {
            NetEvent::PeerDown { peer, .. } if *peer == node0 => Some(()),
            _ => None,
        })
        .await;
    // A forged revocation (not signed by the mesh CA) is refused.
    let forger = TestCa::new(55);
    let forged = revocation(&forger, &nodes[1], 2);
    assert!(matches!(
        nodes[0].handle.revoke(forged).await,
        Err(NetError::BadRevocation(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_blob_round_trips_over_tcp() {
    let ca = TestCa::new(6);
    let nodes = start_mesh(&ca, 2, TransportKind::Network).await;
    wait_full_mesh(&nodes).await;
    let blob: Vec<u8> = (0..64 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let echoed = nodes[1]
        .handle
        .request(nodes[0].peer_id(), "model/fetch", blob.clone())
        .await
        .unwrap();
    assert_eq!(echoed.len(), blob.len());
    assert!(echoed == blob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_quic_is_answered() {
    let ca = TestCa::new(7);
    let quic: mesh_net::Multiaddr = "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap();
    let first_id = identity(0);
    let mut first_config = config(
        &ca,
        first_id,
        ca.issue(&identity(0), 1).der,
        TransportKind::Network,
        vec![],
    );
    first_config.listen = vec![quic.clone()];
    let first = Node::start(first_config).await;
    let mut second_config = config(
        &ca,
        identity(1),
        ca.issue(&identity(1), 2).der,
        TransportKind::Network,
        vec![first.addr().await],
    );
    second_config.listen = vec![quic];
    let second = Node::start(second_config).await;
    let nodes = vec![first, second];
    wait_full_mesh(&nodes).await;
    let answer = nodes[1]
        .handle
        .request(nodes[0].peer_id(), "ping", b"over quic".to_vec())
        .await
        .unwrap();
    assert_eq!(answer, b"over quic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_refused_without_crashing() {
    let ca = TestCa::new(8);
    let small_id = identity(0);
    let mut small = config(
        &ca,
        small_id,
        ca.issue(&identity(0), 1).der,
        TransportKind::Memory,
        vec![],
    );
    small.sizes.request_bytes_max = 1024 * 1024;
    let small = Node::start(small).await;
    let big = Node::start(config(
        &ca,
        identity(1),
        ca.issue(&identity(1), 2).der,
        TransportKind::Memory,
        vec![small.addr().await],
    ))
    .await;
    let nodes = vec![small, big];
    wait_full_mesh(&nodes).await;
    let (small, big) = (&nodes[0], &nodes[1]);
    // Refused by the sender's own limit before anything is sent.
    let local = small
        .handle
        .request(big.peer_id(), "x", vec![0; 1024 * 1024 + 1])
        .await;
    assert!(matches!(local, Err(NetError::TooLarge { .. })));
    // Refused by the receiver's limit: the stream is dropped, the node lives on.
    let remote = big
        .handle
        .request(small.peer_id(), "x", vec![0; 2 * 1024 * 1024])
        .await;
    assert!(
        remote.is_err(),
        "the receiver refuses a request over its limit"
    );
    let fine = big
        .handle
        .request(small.peer_id(), "x", b"still here".to_vec())
        .await
        .unwrap();
    assert_eq!(fine, b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_on_the_tcp_port_do_not_stall_the_node() {
    let ca = TestCa::new(9);
    let target = start_mesh(&ca, 1, TransportKind::Network).await.remove(0);
    let addr = target.addr().await;
    let port = addr
        .iter()
        .find_map(|p| match p {
            mesh_net::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap();
    let idle = tokio::task::spawn_blocking(move || {
        let garbage: Vec<u8> = (0..200_000u32).map(|i| (i * 7919 % 256) as u8).collect();
        let mut first = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = first.write_all(&garbage);
        let mut second = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        // A multistream frame that declares a huge length, then junk.
        let _ = second.write_all(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        let _ = second.write_all(&[0xaa; 4096]);
        // A connection that says nothing at all, kept open.
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()
    })
    .await
    .unwrap();
    let client = Node::start(config(
        &ca,
        identity(1),
        ca.issue(&identity(1), 2).der,
        TransportKind::Network,
        vec![addr],
    ))
    .await;
    let nodes = vec![target, client];
    wait_full_mesh(&nodes).await;
    let answer = nodes[1]
        .handle
        .request(nodes[0].peer_id(), "ping", b"hello".to_vec())
        .await
        .unwrap();
    assert_eq!(answer, b"hello");
    // Regression: random bytes on the P2P port left no log line
    // and no metric; the failed handshakes are now counted.
    let target = &nodes[0];
    eventually("garbage counted as failed incoming handshakes", || async {
        let text = target.metrics_text();
        let line = text.lines().find(|l| {
            l.starts_with("mesh_net_incoming_connection_errors_total{error=\"handshake\"}")
        })?;
        let count: u64 = line.rsplit(' ').next()?.parse().ok()?;
        (count >= 1).then_some(())
    })
    .await;
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_is_marked_down_and_rejoins_with_the_same_key() {
    let ca = TestCa::new(10);
    let mut nodes = start_mesh(&ca, 3, TransportKind::Memory).await;
    wait_full_mesh(&nodes).await;
    let gone = nodes.pop().unwrap();
    let gone_id = gone.peer_id();
    gone.handle.shutdown().await;
    for node in nodes.iter_mut() {
        node.next_event(|event| match event {
            NetEvent::PeerDown { peer, gone: true } if *peer == gone_id => Some(()),
            _ => None,
        })
        .await;
        assert_eq!(node.status_of(gone_id).await, Some(PeerStatus::Down));
    }
    let bootstrap = vec![nodes[0].addr().await];
    let back = Node::start(config(
        &ca,
        identity(2),
        ca.issue(&identity(2), 3).der,
        TransportKind::Memory,
        bootstrap,
    ))
    .await;
    assert_eq!(back.peer_id(), gone_id);
    nodes.push(back);
    wait_full_mesh(&nodes).await;
    let answer = nodes[0]
        .handle
        .request(gone_id, "ping", b"welcome back".to_vec())
        .await
        .unwrap();
    assert_eq!(answer, b"welcome back");
}

/// Waits for `node` to refuse `peer` and returns the reason label.
async fn refusal_reason(node: &mut Node, refused: mesh_net::PeerId) -> String {
    node.next_event(|event| match event {
        NetEvent::PeerRejected { peer, reason } if *peer == refused => Some(reason.clone()),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_key_is_refused() {
    let ca = TestCa::new(11);
    let mut good = start_mesh(&ca, 1, TransportKind::Memory).await.remove(0);
    let borrowed = ca.issue(&identity(6), 60).der;
    let impostor = Node::start(config(
        &ca,
        identity(5),
        borrowed,
        TransportKind::Memory,
        vec![good.addr().await],
    ))
    .await;
    assert_eq!(
        refusal_reason(&mut good, impostor.peer_id()).await,
        "key_mismatch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_mesh_name_is_refused() {
    let ca = TestCa::new(12);
    let mut good = start_mesh(&ca, 1, TransportKind::Memory).await.remove(0);
    let mut other = config(
        &ca,
        identity(4),
        ca.issue(&identity(4), 40).der,
        TransportKind::Memory,
        vec![good.addr().await],
    );
    other.mesh_id = "another-mesh".into();
    let other = Node::start(other).await;
    assert_eq!(
        refusal_reason(&mut good, other.peer_id()).await,
        "wrong_mesh"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_presents_a_certificate_is_refused_at_the_deadline() {
    use libp2p::swarm::{dummy, Swarm};
    let ca = TestCa::new(13);
    let mut node_config = config(
        &ca,
        identity(0),
        ca.issue(&identity(0), 1).der,
        TransportKind::Memory,
        vec![],
    );
    node_config.timing.admission_deadline = std::time::Duration::from_millis(500);
    let mut node = Node::start(node_config).await;
    // A bare libp2p node: real Noise handshake, no certificate protocol.
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let silent_id = keypair.public().to_peer_id();
    let transport = mesh_net::transport::build(TransportKind::Memory, &keypair, None).unwrap();
    let mut silent = Swarm::new(
        transport,
        dummy::Behaviour,
        silent_id,
        libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(std::time::Duration::from_secs(60)),
    );
    silent.dial(node.addr().await).unwrap();
    let driver = tokio::spawn(async move {
        use futures::StreamExt;
        loop {
            silent.select_next_some().await;
        }
    });
    assert_eq!(refusal_reason(&mut node, silent_id).await, "timeout");
    let text = node.metrics_text();
    assert!(text.contains("mesh_net_admission_rejections_total{reason=\"timeout\"} 1"));
    assert!(
        text.contains("mesh_net_admission_retries_total 2"),
        "two retries before the timeout: {text}"
    );
    assert_ne!(
        node.status_of(silent_id).await,
        Some(PeerStatus::Banned),
        "a timeout disconnects, it does not ban"
    );
    driver.abort();
}

/// Regression: a certificate exchange slower than the admission
/// deadline (five nodes starting at once on two cores) got a legitimate peer
/// refused and banned for a minute. Here every exchange misses a 1 ms
/// deadline: the late certificates are still verified and every node is
/// admitted, none refused or banned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_slower_than_the_deadline_still_admit_and_never_ban() {
    let ca = TestCa::new(14);
    let slow = |mut c: mesh_net::NetConfig| {
        c.timing.admission_deadline = std::time::Duration::from_millis(1);
        c.timing.admission_attempts = 10;
        c
    };
    let first = Node::start(slow(config(
        &ca,
        identity(0),
        ca.issue(&identity(0), 1).der,
        TransportKind::Memory,
        vec![],
    )))
    .await;
    let bootstrap = vec![first.addr().await];
    let mut nodes = vec![first];
    for i in 1..3u8 {
        nodes.push(
            Node::start(slow(config(
                &ca,
                identity(i),
                ca.issue(&identity(i), i + 1).der,
                TransportKind::Memory,
                bootstrap.clone(),
            )))
            .await,
        );
    }
    wait_full_mesh(&nodes).await;
    for node in &nodes {
        let text = node.metrics_text();
        assert!(
            text.contains("mesh_net_admission_rejections_total{reason=\"timeout\"} 0"),
            "{text}"
        );
        for other in &nodes {
            assert_ne!(
                node.status_of(other.peer_id()).await,
                Some(PeerStatus::Banned)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_application_refuses_or_drops_fails_at_the_requester() {
    let ca = TestCa::new(14);
    let client = start_mesh(&ca, 1, TransportKind::Memory).await.remove(0);
    let mut registry = prometheus_client::registry::Registry::default();
    let server_config = config(
        &ca,
        identity(1),
        ca.issue(&identity(1), 2).der,
        TransportKind::Memory,
        vec![client.addr().await],
    );
    let (server, mut events) = mesh_net::spawn(server_config, &mut registry).await.unwrap();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let NetEvent::Request {
                protocol, respond, ..
            } = event
            {
                if protocol == "refuse" {
                    let _ = respond.send(Err("unknown model".into()));
                }
                // Any other request is dropped unanswered.
            }
        }
    });
    let server_id = server.local_peer_id();
    eventually("server admitted", || async {
        client.admitted().await.contains(&server_id).then_some(())
    })
    .await;
    let refused = client.handle.request(server_id, "refuse", vec![1]).await;
    assert!(
        matches!(&refused, Err(NetError::Remote { reason, .. }) if reason == "unknown model"),
        "{refused:?}"
    );
    let dropped = client.handle.request(server_id, "drop", vec![2]).await;
    assert!(
        matches!(dropped, Err(NetError::Remote { .. })),
        "{dropped:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_carry_frames_refuse_oversized_ones_and_unadmitted_peers() {
    use mesh_net::{read_frame, write_frame};
    const LIMIT: usize = 1024;
    let ca = TestCa::new(12);
    let nodes = start_mesh(&ca, 2, TransportKind::Memory).await;
    wait_full_mesh(&nodes).await;
    let mut incoming = nodes[0].handle.accept_streams("echo/1").unwrap();
    assert!(
        nodes[0].handle.accept_streams("echo/1").is_err(),
        "one acceptor per protocol"
    );
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            tokio::spawn(async move {
                while let Ok(Some(frame)) = read_frame(&mut stream, LIMIT).await {
                    if write_frame(&mut stream, &frame).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let server = nodes[0].peer_id();
    let client = &nodes[1].handle;
    let mut stream = client.open_stream(server, "echo/1").await.unwrap();
    for i in 0..3u8 {
        write_frame(&mut stream, &[i; 100]).await.unwrap();
        let echoed = read_frame(&mut stream, LIMIT).await.unwrap().unwrap();
        assert_eq!(echoed, vec![i; 100]);
    }
    // Over the receiver's limit: it drops the stream without reading the body.
    write_frame(&mut stream, &vec![0; LIMIT + 1]).await.ok();
    let answer = read_frame(&mut stream, LIMIT).await;
    assert!(
        !matches!(answer, Ok(Some(_))),
        "no answer to an oversized frame"
    );
    // The node lives on and a new stream works.
    let mut fresh = client.open_stream(server, "echo/1").await.unwrap();
    write_frame(&mut fresh, b"again").await.unwrap();
    assert_eq!(
        read_frame(&mut fresh, LIMIT).await.unwrap().unwrap(),
        b"again"
    );
    // A peer that is not admitted gets no stream.
    let stranger = mesh_net::PeerId::random();
    assert!(matches!(
        client.open_stream(stranger, "echo/1").await,
        Err(NetError::NotAdmitted(_))
    ));
    // A protocol nobody accepts fails to open, with a reason.
    assert!(client.open_stream(server, "nobody/1").await.is_err());
}

/// A node that keeps one peer and closes dialled connections unused for
/// 300 ms, once it has dialled `kept` and admitted it.
async fn dialler_keeping(ca: &TestCa, kept: &Node) -> Node {
    let id = identity(9);
    let cert = ca.issue(&id, 10).der;
    let mut dialler = config(ca, id, cert, TransportKind::Memory, Vec::new());
    dialler.target_peers = 1;
    dialler.kept_peers_max = 1;
    dialler.timing.kad_bootstrap_interval = std::time::Duration::from_secs(600);
    dialler.timing.unused_connection_close = Some(std::time::Duration::from_millis(300));
    let node = Node::start(dialler).await;
    node.handle.dial(kept.addr().await).await.unwrap();
    eventually("the first peer admitted and kept", || async {
        node.admitted()
            .await
            .contains(&kept.peer_id())
            .then_some(())
    })
    .await;
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialled_connection_nothing_uses_closes_while_kept_and_protected_ones_stay() {
    let ca = TestCa::new(2);
    let peers = start_mesh(&ca, 3, TransportKind::Memory).await;
    wait_full_mesh(&peers).await;
    let (kept, protected, unused) = (&peers[0], &peers[1], &peers[2]);
    let node = dialler_keeping(&ca, kept).await;
    node.handle
        .protect([protected.peer_id()].into())
        .await
        .unwrap();
    node.handle.dial(protected.addr().await).await.unwrap();
    node.handle.dial(unused.addr().await).await.unwrap();
    eventually("the unused connection closed", || async {
        (node.handle.metrics().unused_connections_closed.get() >= 1).then_some(())
    })
    .await;
    let admitted = node.admitted().await;
    assert!(admitted.contains(&kept.peer_id()), "the kept peer stays");
    assert!(
        admitted.contains(&protected.peer_id()),
        "the protected peer stays"
    );
    assert!(node
        .metrics_text()
        .contains("mesh_net_unused_connections_closed_total "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_peer_whose_connection_closed_dials_it_again_and_waits_for_admission() {
    let ca = TestCa::new(2);
    let mut peers = start_mesh(&ca, 2, TransportKind::Memory).await;
    wait_full_mesh(&peers).await;
    let mut node = dialler_keeping(&ca, &peers[0]).await;
    let (node_id, other_id) = (node.peer_id(), peers[1].peer_id());
    node.handle.dial(peers[1].addr().await).await.unwrap();
    eventually("the unused connection closed", || async {
        let gone = !node.admitted().await.contains(&other_id);
        (node.handle.metrics().unused_connections_closed.get() >= 1 && gone).then_some(())
    })
    .await;
    // Both ends know it was closed as unused (the closer's notice), not
    // that the other end is gone.
    let down = |of: PeerId| {
        move |event: &NetEvent| match event {
            NetEvent::PeerDown { peer, gone } if *peer == of => Some(*gone),
            _ => None,
        }
    };
    assert!(!node.next_event(down(other_id)).await, "the closer");
    assert!(!peers[1].next_event(down(node_id)).await, "the closed");
    let other = &peers[1];
    // Not connected any more: the request dials the peer, waits for its
    // admission and gets the echo.
    let echoed = node
        .handle
        .request(other.peer_id(), "echo", b"again".to_vec())
        .await
        .unwrap();
    assert_eq!(echoed, b"again");
    // Unused again, the connection closes again.
    eventually("the on-demand connection closed once unused", || async {
        let gone = !node.admitted().await.contains(&other.peer_id());
        (node.handle.metrics().unused_connections_closed.get() >= 2 && gone).then_some(())
    })
    .await;
    // A peer nobody knows an address of: the lookup finds none, and the
    // request fails without waiting for its deadline.
    let stranger = mesh_net::PeerId::random();
    let refused = node.handle.request(stranger, "echo", vec![1]).await;
    assert!(
        matches!(refused, Err(NetError::NotAdmitted(p)) if p == stranger),
        "{refused:?}"
    );
}
