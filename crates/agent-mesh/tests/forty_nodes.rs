//! Forty real `agent-mesh node` processes on loopback, one worker thread
//! each, every one holding a shard of MNIST: the committee stays at its size
//! for the mesh (5 voters, everyone else a learner), a secure 3-round job
//! with every node taking part completes, and the test prints each node's
//! resident memory (idle, before the job, and after it) and connection
//! count. Ignored by default (forty processes keep two cores busy for a few
//! minutes); run it with
//! `cargo nextest run --workspace -E 'binary(forty_nodes)' --run-ignored only --no-capture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::mesh::{mnist_dir, start_node, submit_job, wait_for_described, Mesh};

const NODES: usize = 40;
const ROUNDS: u64 = 3;

/// A node's resident set from `/proc/PID/status`, KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let kib = line.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?;
        kib.trim().parse().ok()
    })
}

/// Every node's (resident KiB, connected peers, admitted peers).
fn sample(mesh: &Mesh) -> Vec<(u64, u64, u64)> {
    mesh.nodes
        .iter()
        .map(|node| {
            let rss = node.pid().and_then(rss_kib).unwrap_or(0);
            let status = node.get("/v1/status").unwrap_or_default();
            let connected = status["peers_connected"].as_u64().unwrap_or(0);
            let admitted = status["peers_admitted"].as_u64().unwrap_or(0);
            (rss, connected, admitted)
        })
        .collect()
}

/// min / median / max of `values`.
fn spread(mut values: Vec<u64>) -> (u64, u64, u64) {
    values.sort_unstable();
    let median = values[values.len() / 2];
    (values[0], median, values[values.len() - 1])
}

fn print_sample(when: &str, rows: &[(u64, u64, u64)]) {
    let (rss_min, rss_med, rss_max) = spread(rows.iter().map(|r| r.0 / 1024).collect());
    let (c_min, c_med, c_max) = spread(rows.iter().map(|r| r.1).collect());
    println!(
        "{when}: RSS MiB min/median/max {rss_min}/{rss_med}/{rss_max}; connected peers min/median/max {c_min}/{c_med}/{c_max}"
    );
    for (i, (rss, connected, admitted)) in rows.iter().enumerate() {
        println!(
            "  node {i:2}: {:5.1} MiB, {connected:2} connected, {admitted:2} admitted",
            *rss as f64 / 1024.0
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

#[test]
#[ignore = "forty processes: a measurement, run on demand"]
fn forty_processes_train_with_a_committee_of_five() {
    let mut mesh = Mesh::new(NODES);
    let data = mnist_dir();
    let started = Instant::now();
    let mut boot = None::<String>;
    for i in 0..NODES {
        let shard = format!("{i}/{NODES}");
        let env = [
            ("AGENT_MESH_DATA", data.as_str()),
            ("AGENT_MESH_DATA_SHARD", shard.as_str()),
            ("AGENT_MESH_WORKER_THREADS", "1"),
            ("AGENT_MESH_BOOTSTRAP_EXPECT", "5"),
            ("AGENT_MESH_LOG", "warn"),
        ];
        start_node(&mut mesh.nodes[i], boot.as_deref(), &env);
        if boot.is_none() {
            boot = Some(mesh.nodes[0].listen[0].clone());
        }
    }
    let committee = committee_of(&mesh, NODES);
    let voters = committee["voters"].as_array().unwrap().len();
    println!(
        "{NODES} nodes started, committee of {voters} voters and {} learners after {:.1} s",
        committee["learners"].as_array().unwrap().len(),
        started.elapsed().as_secs_f64()
    );
    assert!((3..=5).contains(&voters), "{committee}");

    // Idle: nothing runs but the mesh's own upkeep.
    std::thread::sleep(Duration::from_secs(20));
    let idle = sample(&mesh);
    print_sample("idle", &idle);

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
    for node in &mut mesh.nodes {
        assert!(node.is_running(), "{}", node.log_tail());
    }
}
