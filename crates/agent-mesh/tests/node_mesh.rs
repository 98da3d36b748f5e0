//! Real `agent-mesh node` processes on loopback: admission, gossip, failure and
//! recovery of the P2P layer, and the Raft committee across process kills.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::mesh::{http, make_member, run_ok, start_node, wait_for, write_config, Mesh, Node};

const LIMIT: Duration = Duration::from_secs(90);

/// The sum of every sample of `name` whose labels contain all of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until `node` has counted an admission rejection with `reason`.
fn wait_rejected(node: &Node, what: &str, reason: &str) {
    let label = format!("reason=\"{reason}\"");
    wait_for(what, LIMIT, || {
        let text = node.metrics();
        (metric(&text, "mesh_net_admission_rejections_total", &[&label]) > 0.0).then_some(())
    });
}

fn tcp_port(addr: &str) -> u16 {
    let after = addr.split("/tcp/").nth(1).unwrap();
    after.split('/').next().unwrap().parse().unwrap()
}

fn consensus(node: &Node) -> Option<serde_json::Value> {
    node.get("/v1/consensus")
}

/// Waits until some running node reports itself leader with `voters` voters; returns its index.
fn wait_leader(mesh: &Mesh, alive: &[usize], voters: usize) -> usize {
    wait_for("a committee leader", LIMIT, || {
        alive.iter().copied().find(|&i| {
            consensus(&mesh.nodes[i]).is_some_and(|c| {
                c["role"] == "leader" && c["voters"].as_array().map_or(0, |v| v.len()) == voters
            })
        })
    })
}

fn put(node: &Node, token: &str, key: &str) -> Option<u64> {
    let body = format!(r#"{{"key":"{key}","value":"v-{key}"}}"#);
    let (status, text) = http(
        "POST",
        &format!("{}/v1/kv", node.http_url),
        Some(token),
        &body,
    )?;
    if status != 200 {
        return None;
    }
    serde_json::from_str::<serde_json::Value>(&text).ok()?["index"].as_u64()
}

#[test]
fn five_nodes_admit_gossip_survive_garbage_and_a_kill9() {
    let mut mesh = Mesh::new(5);
    mesh.start_all();
    // Ready once each node is in the committee it knows and keeps up with
    // its leader (learners are added by the leader after admission).
    for node in &mesh.nodes {
        wait_for("readyz", LIMIT, || {
            let (status, _) = http("GET", &format!("{}/readyz", node.http_url), None, "")?;
            (status == 200).then_some(())
        });
    }

    // The committee forms by itself; a write through any node commits, and the
    // commit certificates it produces are gossiped to every node.
    let leader = wait_leader(&mesh, &[0, 1, 2, 3, 4], 3);
    let token = mesh.admin_token();
    let follower = (leader + 1) % 5;
    wait_for("a forwarded write to commit", LIMIT, || {
        put(&mesh.nodes[follower], &token, "k1")
    });
    for node in &mesh.nodes {
        wait_for("gossip to reach every node", LIMIT, || {
            let text = node.metrics();
            let got = metric(
                &text,
                "mesh_net_messages_total",
                &["kind=\"gossip\"", "direction=\"in\"", "result=\"accepted\""],
            );
            (got > 0.0).then_some(())
        });
    }

    // Garbage and an oversized frame at the P2P port: the node stays up and connected.
    let port = tcp_port(&mesh.nodes[0].listen[0]);
    for payload in [vec![0xA5u8; 256 * 1024], {
        let mut frame = vec![0x13u8];
        frame.extend_from_slice(b"/multistream/1.0.0\n");
        frame.extend_from_slice(&[0xFF; 64 * 1024]);
        frame
    }] {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.write_all(&payload);
        }
    }
    assert!(mesh.nodes[0].is_running(), "{}", mesh.nodes[0].log_tail());
    wait_for("node 0 to serve and keep its peers", LIMIT, || {
        (mesh.nodes[0].admitted() == 4).then_some(())
    });

    // kill -9 one node: the others mark it down; restarted, it rejoins.
    let victim = 4;
    let victim_id = mesh.nodes[victim].peer_id.clone();
    mesh.nodes[victim].kill9();
    for i in 0..4 {
        wait_for("the others to mark the killed node down", LIMIT, || {
            let peers = mesh.nodes[i].get("/v1/peers")?;
            let row = peers
                .as_array()?
                .iter()
                .find(|p| p["peer_id"] == victim_id.as_str())
                .cloned();
            let gone = row.is_none_or(|p| p["state"] != "admitted");
            gone.then_some(())
        });
    }
    let boot = mesh.nodes[0].listen[0].clone();
    mesh.start(victim, Some(&boot));
    mesh.wait_full_mesh();
    let restarted = &mesh.nodes[victim];
    assert_eq!(restarted.peer_id, victim_id, "same key, same id");
    for node in &mut mesh.nodes {
        assert!(
            node.terminate(),
            "clean exit on SIGTERM\n{}",
            node.log_tail()
        );
    }
}

#[test]
fn foreign_and_revoked_certificates_are_refused_and_counted() {
    let mut mesh = Mesh::new(2);
    mesh.start_all();
    let boot = mesh.nodes[0].listen[0].clone();
    let root = mesh.root.path().to_path_buf();

    // A node whose certificate comes from another CA (self-made mesh).
    let rogue_ca = root.join("rogue-ca");
    run_ok(&["ca", "init", "--out", rogue_ca.to_str().unwrap()]);
    make_member(&root, &rogue_ca, "rogue", "committee,trainer");
    write_config(&root.join("rogue"), "../rogue-ca", 99);
    let mut rogue = node_at(&root, "rogue");
    start_node(&mut rogue, Some(&boot), &[]);
    wait_rejected(
        &mesh.nodes[0],
        "the foreign certificate to be refused",
        "wrong_mesh",
    );
    assert_eq!(mesh.nodes[0].admitted(), 1, "the rogue is not admitted");

    // A certificate revoked before its node starts.
    make_member(&root, &mesh.ca(), "revoked", "trainer");
    write_config(&root.join("revoked"), "../ca", 98);
    let cert = root.join("revoked/node.cert.pem");
    mesh.revoke(&cert);
    std::thread::sleep(Duration::from_secs(3)); // the nodes re-read the list every 2 s
    let mut revoked = node_at(&root, "revoked");
    start_node(&mut revoked, Some(&boot), &[]);
    wait_rejected(
        &mesh.nodes[0],
        "the revoked certificate to be refused",
        "revoked",
    );

    // A revocation learned later disconnects an admitted peer.
    let cert = mesh.nodes[1].dir.join("node.cert.pem");
    mesh.revoke(&cert);
    wait_for("node 0 to drop the newly revoked node 1", LIMIT, || {
        (mesh.nodes[0].admitted() == 0).then_some(())
    });
}

/// Copies the CA folder, so that revoking in the copy leaves the file the nodes watch alone.
fn offline_ca_copy(mesh: &Mesh) -> std::path::PathBuf {
    let copy = mesh.root.path().join("ca-offline");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(mesh.ca()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
    }
    copy
}

#[test]
fn a_committed_revocation_reaches_every_node_without_the_cas_file() {
    let mut mesh = Mesh::new(3);
    let outsider = mesh.add_member("trainer,observer");
    let victim = mesh.add_member("trainer");
    mesh.start_all();
    let token = mesh.admin_token();
    wait_leader(&mesh, &[0, 1, 2], 3);
    let ca = offline_ca_copy(&mesh);
    let cert = mesh.nodes[victim].dir.join("node.cert.pem");
    // Through a node without the committee: the write is forwarded.
    let api = mesh.nodes[outsider].http_url.clone();
    let revoke = |what: &str| {
        let args = [
            "ca",
            "revoke",
            "--ca",
            ca.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--reason",
            "key compromise",
            "--api",
            &api,
            "--token",
            &token,
        ];
        let out = std::process::Command::new(common::mesh::bin())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!("{what}: {}", String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, text) = revoke("first revocation");
    assert!(ok, "{text}");
    assert!(text.contains("committed to the mesh at index"), "{text}");
    let others: Vec<usize> = (0..mesh.nodes.len()).filter(|&i| i != victim).collect();
    for &i in &others {
        let node = &mesh.nodes[i];
        let what = format!("node {i} to drop the revoked node\n{}", node.log_tail());
        wait_for(&what, LIMIT, || {
            (node.admitted() == others.len() - 1).then_some(())
        });
    }
    wait_rejected(
        &mesh.nodes[outsider],
        "the outsider to refuse the revoked node's reconnection",
        "revoked",
    );
    let (ok, text) = revoke("second revocation");
    assert!(!ok, "the same certificate cannot be revoked twice: {text}");
    assert!(text.contains("already revoked"), "{text}");
}

fn node_at(root: &std::path::Path, name: &str) -> Node {
    Node::at(root.join(name))
}

#[test]
fn committee_keeps_commits_across_a_leader_kill9_and_restart() {
    let mut mesh = Mesh::new(3);
    // Node 3 does not run the committee: its writes are forwarded.
    let outsider = mesh.add_member("trainer,observer");
    mesh.start_all();
    let token = mesh.admin_token();
    let leader = wait_leader(&mesh, &[0, 1, 2], 3);
    assert!(consensus(&mesh.nodes[outsider]).is_none());
    let mut last = 0;
    for k in 0..12 {
        let index = wait_for("a write to commit", LIMIT, || {
            put(&mesh.nodes[k % 4], &token, &format!("a{k}"))
        });
        assert!(index > last, "every write is a new entry");
        last = index;
    }
    wait_direct_raft_calls(&mesh.nodes[leader]);
    let (status, _) = http(
        "POST",
        &format!("{}/v1/kv", mesh.nodes[outsider].http_url),
        Some("not-a-token"),
        r#"{"key":"k","value":"v"}"#,
    )
    .unwrap();
    assert_eq!(
        status, 401,
        "a bad token is refused before anything is forwarded"
    );

    mesh.nodes[leader].kill9();
    let alive: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let new_leader = wait_leader(&mesh, &alive, 3);
    assert_ne!(new_leader, leader);
    for k in 0..10 {
        let via = if k % 3 == 2 { outsider } else { alive[k % 2] };
        let index = wait_for("a write after the election", LIMIT, || {
            put(&mesh.nodes[via], &token, &format!("b{k}"))
        });
        assert!(index > last, "no committed entry is lost or reused");
        last = index;
    }

    // The old leader restarts from its disk and catches up to the same state.
    let boot = mesh.nodes[new_leader].listen[0].clone();
    mesh.start(leader, Some(&boot));
    let reference = wait_for("survivors to agree", LIMIT, || {
        let a = consensus(&mesh.nodes[alive[0]])?;
        let b = consensus(&mesh.nodes[alive[1]])?;
        (a["last_applied"] == b["last_applied"] && a["state_hash"] == b["state_hash"])
            .then(|| a["state_hash"].clone())
    });
    wait_for("the restarted node to catch up", LIMIT, || {
        let c = consensus(&mesh.nodes[leader])?;
        (c["state_hash"] == reference && c["last_applied"].as_u64()? >= last).then_some(())
    });
}

/// Waits until `node` has sent Raft RPCs over direct links, not only over
/// swarm streams (links open in the background after the first calls).
fn wait_direct_raft_calls(node: &Node) {
    wait_for("raft calls over a direct link", LIMIT, || {
        let text = node.metrics();
        (metric(&text, "mesh_raft_calls_total", &["path=\"direct\""]) > 0.0).then_some(())
    });
}

/// `agent-mesh bench consensus` starts its own committee of three node
/// processes and its writers commit through it: the JSON row says so.
#[test]
fn bench_consensus_commits_through_a_committee_of_three_processes() {
    let stdout = run_ok(&[
        "bench",
        "consensus",
        "--clients",
        "2",
        "--duration-s",
        "1",
        "--json",
    ]);
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let row = &rows.as_array().expect("a JSON list")[0];
    assert_eq!(row["clients"], 2);
    assert_eq!(row["errors"], 0, "{row}");
    // More than one client: the nodes get one worker per core.
    assert_eq!(row["node_threads"], 0, "{row}");
    assert!(row["commits"].as_u64().unwrap() > 0, "{row}");
    for field in [
        "throughput_per_s",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "fsync_p50_ms",
        "fsync_voters_p50_ms",
    ] {
        assert!(row[field].as_f64().is_some(), "{field} missing from {row}");
    }
}
