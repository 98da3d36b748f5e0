//! Real `agent-mesh node` processes whose Raft state is damaged or removed
//! behind their back: a node never takes part in the committee
//! with less than it acknowledged. It stops with the command that recovers
//! it, or rejoins as a learner, and the mesh ends with every node caught up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mesh::{bin, http, run_ok, wait_for, Mesh, Node};

/// The generous bound the other process tests use for each wait.
const LIMIT: Duration = Duration::from_secs(90);
/// How long the damaged or wiped node may take to catch up once restarted.
const CATCH_UP: Duration = Duration::from_secs(60);

/// The sum of every sample of `name`.
fn metric(node: &Node, name: &str) -> f64 {
    node.metrics()
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn consensus(node: &Node) -> Option<serde_json::Value> {
    node.get("/v1/consensus")
}

/// Waits until some node leads a committee of three voters; returns its index.
fn wait_leader(mesh: &Mesh) -> usize {
    wait_for("a committee leader", LIMIT, || {
        (0..mesh.nodes.len()).find(|&i| {
            consensus(&mesh.nodes[i]).is_some_and(|c| {
                c["role"] == "leader" && c["voters"].as_array().map_or(0, |v| v.len()) == 3
            })
        })
    })
}

/// Commits `n` writes through the current leader; returns the last index.
fn commit(mesh: &Mesh, token: &str, prefix: &str, n: usize) -> u64 {
    let mut last = 0;
    for k in 0..n {
        let body = format!(r#"{{"key":"{prefix}{k}","value":"v"}}"#);
        last = wait_for("a write to commit", LIMIT, || {
            let leader = wait_leader(mesh);
            let url = format!("{}/v1/kv", mesh.nodes[leader].http_url);
            let (status, text) = http("POST", &url, Some(token), &body)?;
            let value: serde_json::Value = serde_json::from_str(&text).ok()?;
            (status == 200).then(|| value["index"].as_u64())?
        });
    }
    last
}

/// How long the leader's Raft calls are counted to compare two rates.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Raft calls the current leader makes over [`RATE_WINDOW`].
fn leader_calls_per_window(mesh: &Mesh) -> f64 {
    let leader = &mesh.nodes[wait_leader(mesh)];
    let before = metric(leader, "mesh_raft_calls_total");
    std::thread::sleep(RATE_WINDOW);
    metric(leader, "mesh_raft_calls_total") - before
}

/// A voter other than the leader, once it has applied `index`.
fn caught_up_follower(mesh: &Mesh, index: u64) -> usize {
    let leader = wait_leader(mesh);
    let follower = (leader + 1) % mesh.nodes.len();
    wait_for("the follower to apply the writes", LIMIT, || {
        let c = consensus(&mesh.nodes[follower])?;
        (c["last_applied"].as_u64()? >= index).then_some(follower)
    })
}

/// Waits until node `i` is sealed, a voter again, and holds the leader's state at `index` or later.
fn wait_rejoined(mesh: &Mesh, i: usize, index: u64) {
    wait_for(
        &format!(
            "node {i} to rejoin and catch up\n{}",
            mesh.nodes[i].log_tail()
        ),
        CATCH_UP,
        || {
            let leader = consensus(&mesh.nodes[wait_leader(mesh)])?;
            let c = consensus(&mesh.nodes[i])?;
            let voter = leader["voters"].as_array()?.contains(&c["member"]);
            let same = c["state_hash"] == leader["state_hash"];
            let done = c["rejoining"] == false && voter && same;
            (done && c["last_applied"].as_u64()? >= index).then_some(())
        },
    )
}

/// A mesh of three committee nodes that committed `writes` writes, an admin
/// token, and a follower that applied them all and was then killed with kill -9.
fn with_a_killed_follower(writes: usize) -> (Mesh, String, usize) {
    let mut mesh = Mesh::new(3);
    mesh.start_all();
    let token = mesh.admin_token();
    let last = commit(&mesh, &token, "a", writes);
    let victim = caught_up_follower(&mesh, last);
    mesh.nodes[victim].kill9();
    (mesh, token, victim)
}

/// Starts node `victim` again and waits until it has rejoined and caught up
/// with writes made after its restart.
fn restart_and_wait_rejoined(mesh: &mut Mesh, token: &str, victim: usize) {
    let leader = wait_leader(mesh);
    let boot = mesh.nodes[leader].listen[0].clone();
    mesh.start(victim, Some(&boot));
    let last = commit(mesh, token, "b", 5);
    wait_rejoined(mesh, victim, last);
}

/// Commits a few more writes and waits until every node holds them as a voter.
fn all_caught_up(mesh: &Mesh, token: &str) {
    let last = commit(mesh, token, "c", 3);
    for i in 0..mesh.nodes.len() {
        wait_rejoined(mesh, i, last);
    }
}

/// The node's raft folder.
fn raft_dir(node: &Node) -> PathBuf {
    node.dir.join("data").join("raft")
}

/// Runs `agent-mesh node` for `node` and waits (bounded) for it to exit;
/// returns whether it exited 0 and what it wrote to stderr.
fn run_until_exit(node: &Node) -> (bool, String) {
    let log = node.dir.join("failed-start.log");
    let mut child = Command::new(bin())
        .args([
            "node",
            "--config",
            node.dir.join("node.toml").to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("the node with a damaged store kept running");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status.success(), std::fs::read_to_string(&log).unwrap())
}

/// Flips one byte of the first record of the write-ahead file under `raft`,
/// leaving the records after it intact.
fn damage_first_wal_record(raft: &Path) {
    let wal = raft.join("raft.redb.wal");
    let mut bytes = std::fs::read(&wal).unwrap();
    let generation = &bytes[8..16];
    let second = 16 + 20 + u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as usize;
    assert_eq!(&bytes[20..28], generation, "a first record to damage");
    assert_eq!(
        &bytes[second + 4..second + 12],
        generation,
        "records after it"
    );
    bytes[16 + 20 + 1] ^= 0x10;
    std::fs::write(&wal, &bytes).unwrap();
}

/// Regression: a follower killed with kill -9 whose write-ahead file had one
/// byte flipped near its start came back without 23 acknowledged records and
/// its latest vote, stayed behind forever, and its leader spun on it.
#[test]
fn a_voter_with_a_damaged_wal_stops_with_the_recovery_command_then_rejoins() {
    let (mut mesh, token, victim) = with_a_killed_follower(12);
    damage_first_wal_record(&raft_dir(&mesh.nodes[victim]));

    let (ok, stderr) = run_until_exit(&mesh.nodes[victim]);
    assert!(!ok, "a node with damaged acknowledged writes must not run");
    let config = mesh.nodes[victim].dir.join("node.toml");
    let command = format!(
        "agent-mesh node --config {} --reset-raft-state",
        config.display()
    );
    assert!(
        stderr.contains(&command),
        "names the recovery command: {stderr}"
    );
    assert!(stderr.contains("raft.redb.wal"), "names the file: {stderr}");
    // Meanwhile the leader's calls to the stopped node are delayed, not retried at once.
    wait_for(
        "the leader to back off from the stopped node",
        LIMIT,
        || {
            let leader = &mesh.nodes[wait_leader(&mesh)];
            (metric(leader, "consensus_replication_backoffs") > 0.0).then_some(())
        },
    );
    let broken_calls = leader_calls_per_window(&mesh);

    let moved = run_ok(&[
        "node",
        "--config",
        config.to_str().unwrap(),
        "--reset-raft-state",
    ]);
    assert!(moved.contains("nothing was deleted"), "{moved}");
    restart_and_wait_rejoined(&mut mesh, &token, victim);
    assert!(
        metric(&mesh.nodes[victim], "consensus_rejoin_refusals") > 0.0,
        "it refused raft calls while it had lost state"
    );
    let granted: f64 = mesh
        .nodes
        .iter()
        .map(|n| metric(n, "consensus_rejoins_granted"))
        .sum();
    assert!(granted >= 1.0, "a leader removed it and granted the rejoin");
    all_caught_up(&mesh, &token);
    // The leader never spins at a broken voter: it once made 35,600 calls a
    // second at one; now it calls no more than a few times its idle rate.
    let idle_calls = leader_calls_per_window(&mesh);
    assert!(
        broken_calls < 10.0 * idle_calls.max(1.0),
        "{broken_calls} raft calls in {RATE_WINDOW:?} at a stopped voter, {idle_calls} when idle"
    );
    eprintln!("leader raft calls per {RATE_WINDOW:?}: {broken_calls} with a stopped voter, {idle_calls} idle");
}

/// Regression: a voter whose `data/raft` was removed came back empty under the
/// same identity, still a voter in the committee's eyes.
#[test]
fn a_voter_whose_raft_folder_was_removed_rejoins_and_catches_up() {
    let (mut mesh, token, victim) = with_a_killed_follower(8);
    std::fs::remove_dir_all(raft_dir(&mesh.nodes[victim])).unwrap();

    restart_and_wait_rejoined(&mut mesh, &token, victim);
    assert!(metric(&mesh.nodes[victim], "consensus_rejoin_refusals") > 0.0);
    all_caught_up(&mesh, &token);
}
