//! Forty real `agent-mesh node` processes on loopback, one worker thread
//! each, every one holding a shard of MNIST: five nodes hold the committee
//! role and form the committee, the other 35 follow the committed state
//! without the Raft log, a secure 3-round job with every node taking part
//! completes, and the test prints each node's
//! resident memory (idle, before the job, and after it) and connection
//! count. Connections are bounded: each node keeps [`TARGET_PEERS`], dials
//! the peers round traffic is for on demand and closes what no request
//! used for [`UNUSED_CLOSE_MS`]; who is alive comes from the nodes'
//! announcements, not from connections. Ignored by default (forty processes keep two cores busy for a few
//! minutes); run it with
//! `cargo nextest run --workspace -E 'binary(forty_nodes)' --run-ignored only --no-capture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::mesh::{start_mnist_nodes_of, submit_job, wait_for_described, Mesh, ALL_NODE_ROLES};

const NODES: usize = 40;
/// Nodes with the committee role (the first ones).
const COMMITTEE: usize = 5;
const ROUNDS: u64 = 3;
/// Connections each node keeps (`network.target_peers`).
const TARGET_PEERS: &str = "8";
/// Dialled connections unused this long close (`network.unused_connection_close_ms`).
const UNUSED_CLOSE_MS: &str = "30000";

/// A field of `/proc/PID/smaps_rollup` (`Rss:`, or `Pss:`, which
/// charges each page shared by several processes, such as the binary's
/// code, in equal parts to each), KiB.
fn memory_kib(pid: u32, field: &str) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup.lines().find_map(|line| {
        let kib = line.strip_prefix(field)?.trim().strip_suffix("kB")?;
        kib.trim().parse().ok()
    })
}

/// One node's figures at one time.
struct Sample {
    rss_kib: u64,
    pss_kib: u64,
    /// Anonymous memory (heap, stacks): RSS less the pages mapped from files.
    anon_kib: u64,
    connected: u64,
    admitted: u64,
    /// The index of the committed state it follows (nodes without the committee).
    followed_index: Option<u64>,
}

/// Every node's figures now.
fn sample(mesh: &Mesh) -> Vec<Sample> {
    mesh.nodes
        .iter()
        .map(|node| {
            let pid = node.pid();
            let status = node.get("/v1/status").unwrap_or_default();
            Sample {
                rss_kib: pid.and_then(|p| memory_kib(p, "Rss:")).unwrap_or(0),
                pss_kib: pid.and_then(|p| memory_kib(p, "Pss:")).unwrap_or(0),
                anon_kib: pid.and_then(|p| memory_kib(p, "Anonymous:")).unwrap_or(0),
                connected: status["peers_connected"].as_u64().unwrap_or(0),
                admitted: status["peers_admitted"].as_u64().unwrap_or(0),
                followed_index: status["followed_index"].as_u64(),
            }
        })
        .collect()
}

/// min / median / max of `values`.
fn spread(mut values: Vec<u64>) -> (u64, u64, u64) {
    values.sort_unstable();
    let median = values[values.len() / 2];
    (values[0], median, values[values.len() - 1])
}

fn print_sample(when: &str, rows: &[Sample]) {
    let (rss_min, rss_med, rss_max) = spread(rows.iter().map(|r| r.rss_kib / 1024).collect());
    let (pss_min, pss_med, pss_max) = spread(rows.iter().map(|r| r.pss_kib / 1024).collect());
    let (anon_min, anon_med, anon_max) = spread(rows.iter().map(|r| r.anon_kib / 1024).collect());
    let (c_min, c_med, c_max) = spread(rows.iter().map(|r| r.connected).collect());
    println!(
        "{when}: RSS MiB min/median/max {rss_min}/{rss_med}/{rss_max}; PSS MiB {pss_min}/{pss_med}/{pss_max}; anonymous MiB {anon_min}/{anon_med}/{anon_max}; connected peers min/median/max {c_min}/{c_med}/{c_max}"
    );
    for (i, r) in rows.iter().enumerate() {
        let followed = r
            .followed_index
            .map_or_else(|| "committee".to_string(), |i| format!("follows index {i}"));
        println!(
            "  node {i:2}: RSS {:5.1} MiB, PSS {:5.1} MiB, anonymous {:5.1} MiB, {:2} connected, {:2} admitted, {followed}",
            r.rss_kib as f64 / 1024.0,
            r.pss_kib as f64 / 1024.0,
            r.anon_kib as f64 / 1024.0,
            r.connected,
            r.admitted
        );
    }
}

/// The leader's consensus view, once one node leads `voters` voters and
/// `learners` learners.
fn committee_of(mesh: &Mesh, members: usize) -> serde_json::Value {
    wait_for_described(
        Duration::from_secs(240),
        || {
            mesh.nodes.iter().find_map(|node| {
                let c = node.get("/v1/consensus")?;
                let voters = c["voters"].as_array()?.len();
                let learners = c["learners"].as_array()?.len();
                (c["role"] == "leader" && voters + learners >= members).then_some(c)
            })
        },
        || {
            format!(
                "a leader with {members} members\n{}",
                mesh.nodes[0].log_tail()
            )
        },
    )
}

/// A counter's value in a node's Prometheus text (0 when absent).
fn counter(node: &common::mesh::Node, name: &str) -> u64 {
    node.metrics()
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0, |v| v as u64)
}

/// What the followers fetched to follow the state, min / median / max.
fn print_followed_bytes(mesh: &Mesh) {
    let followers = &mesh.nodes[COMMITTEE..];
    let of = |name: &str| spread(followers.iter().map(|n| counter(n, name)).collect());
    let (b_min, b_med, b_max) = of("mesh_state_follow_answer_bytes_total");
    let (a_min, a_med, a_max) = of("mesh_state_follow_accepted_total");
    let (d_min, d_med, d_max) = of("mesh_state_follow_deltas_total");
    println!(
        "followers since start: state answers KiB {}/{}/{}, states taken {a_min}/{a_med}/{a_max}, of them deltas {d_min}/{d_med}/{d_max} (min/median/max)",
        b_min / 1024,
        b_med / 1024,
        b_max / 1024
    );
}

#[test]
#[ignore = "forty processes: a measurement, run on demand"]
fn forty_processes_train_with_a_committee_of_five() {
    let started = Instant::now();
    let env = [
        ("AGENT_MESH_WORKER_THREADS", "1"),
        ("AGENT_MESH_BOOTSTRAP_EXPECT", "5"),
        ("AGENT_MESH_LOG", "warn"),
        ("AGENT_MESH_TARGET_PEERS", TARGET_PEERS),
        ("AGENT_MESH_UNUSED_CONNECTION_CLOSE_MS", UNUSED_CLOSE_MS),
    ];
    let roles = |i| {
        if i < COMMITTEE {
            ALL_NODE_ROLES
        } else {
            "aggregator,trainer,observer"
        }
    };
    let mut mesh = start_mnist_nodes_of(Mesh::with_roles(NODES, roles), &env);
    let committee = committee_of(&mesh, COMMITTEE);
    let voters = committee["voters"].as_array().unwrap().len();
    println!(
        "{NODES} nodes started, committee of {voters} voters and {} learners after {:.1} s",
        committee["learners"].as_array().unwrap().len(),
        started.elapsed().as_secs_f64()
    );
    assert!((3..=5).contains(&voters), "{committee}");
    let learners = committee["learners"].as_array().unwrap().len();
    assert!(voters + learners <= COMMITTEE, "{committee}");

    // Idle: nothing runs but the mesh's own upkeep (connections opened
    // while joining close once idle for 30 s).
    std::thread::sleep(Duration::from_secs(45));
    let idle = sample(&mesh);
    print_sample("idle", &idle);
    let following = idle.iter().filter(|r| r.followed_index.is_some()).count();
    assert_eq!(
        following,
        NODES - COMMITTEE,
        "every node without the committee follows"
    );

    let token = mesh.admin_token();
    let spec = serde_json::json!({
        "job": "forty",
        "spec": {
            "model": "mlp", "rounds": ROUNDS, "participants_per_round": NODES,
            "rule_name": "fedavg", "byzantine_count": 0, "secagg": true, "dp_budget": null,
            "training": {
                "dataset": "mnist", "epochs": 1, "batch_size": 32, "learning_rate": 0.1, "seed": 7,
                "round_deadline_ms": 240000, "group_size": 10, "clip_norm": 20.0,
                "noise_multiplier": 0.0, "sampling_rate": 1.0
            }
        }
    });
    let job_started = Instant::now();
    submit_job(&mesh.nodes[0].http_url, &token, &spec);
    let done = wait_for_described(
        Duration::from_secs(480),
        || {
            let view = common::mesh::job_view(&mesh.nodes[0].http_url, &token, "forty")?;
            (view["status"] == "Completed").then_some(view)
        },
        || {
            let view = common::mesh::job_view(&mesh.nodes[0].http_url, &token, "forty");
            format!("the job to complete: {view:?}")
        },
    );
    let after = sample(&mesh);
    assert_eq!(done["rounds_completed"], ROUNDS);
    let rounds = done["detail"]["rounds"].as_array().unwrap();
    for (i, round) in rounds.iter().enumerate() {
        let participants = round["participants"].as_array().map_or(0, Vec::len);
        let updates = round["completion"]["metrics"]["updates_count"]
            .as_u64()
            .unwrap_or(0);
        let groups = round["plan"]["groups"].as_array().map_or(0, Vec::len);
        println!("round {i}: {participants} participants, {groups} groups, {updates} updates");
        assert!(participants >= NODES / 2, "round {i}: {round}");
    }
    println!(
        "job of {ROUNDS} rounds completed in {:.1} s, accuracy {}",
        job_started.elapsed().as_secs_f64(),
        done["accuracy"]
    );
    print_sample("after the job", &after);
    print_followed_bytes(&mesh);
    // Connections nothing uses close after the idle timeout (30 s).
    std::thread::sleep(Duration::from_secs(60));
    let settled = sample(&mesh);
    print_sample("a minute after the job", &settled);
    let target: u64 = TARGET_PEERS.parse().unwrap();
    let (_, median, _) = spread(settled.iter().map(|r| r.connected).collect());
    assert!(
        median <= 3 * target,
        "a median node holds {median} connections with target_peers {target}"
    );
    for node in &mut mesh.nodes {
        assert!(node.is_running(), "{}", node.log_tail());
    }
}
