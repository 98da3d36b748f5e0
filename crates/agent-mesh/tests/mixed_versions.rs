//! Mixed protocol versions and rolling upgrades with real `agent-mesh node`
//! processes on loopback.
//!
//! Nodes capped to protocol version 1 (`AGENT_MESH_MAX_PROTOCOL_VERSION=1`,
//! how a node of two releases ago talks), nodes capped to version 2 and nodes
//! speaking versions 1 to 3 form one mesh, each pair on the newest version
//! both speak (shown in `/v1/peers`: version 3 sends blobs in verified parts,
//! older ones whole), and complete a job with secure aggregation. Then a mesh
//! of version-1 nodes is upgraded one node at a time during a multi-round job
//! (SIGTERM, restart on the same data folder speaking {1, 2, 3}, wait until it
//! is back): the job completes, every round is committed exactly once, and
//! the rounds committed before the upgrade are unchanged after it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::mesh::{
    http, mnist_dir, start_node, submit_job, wait_for, wait_for_described, Mesh, Node,
};

const NODES: usize = 5;
/// The variable that caps the protocol versions a node speaks.
const CAP: &str = "AGENT_MESH_MAX_PROTOCOL_VERSION";
/// Well inside the test runner's 10-minute limit, so a stuck job fails with
/// its own message.
const JOB_LIMIT: Duration = Duration::from_secs(300);
/// How long a restarted node may take to be back in the mesh.
const BACK_LIMIT: Duration = Duration::from_secs(120);

/// Starts node `i` on its MNIST shard, capped at `max_version`.
fn start(mesh: &mut Mesh, i: usize, boot: Option<&str>, max_version: u8) {
    let data = mnist_dir();
    let shard = format!("{i}/{NODES}");
    let cap = max_version.to_string();
    let env = [
        ("AGENT_MESH_DATA", data.as_str()),
        ("AGENT_MESH_DATA_SHARD", shard.as_str()),
        (CAP, cap.as_str()),
    ];
    start_node(&mut mesh.nodes[i], boot, &env);
}

/// A mesh of [`NODES`] nodes, node `i` capped at `caps[i]`.
fn start_mesh(caps: [u8; NODES]) -> Mesh {
    let mut mesh = Mesh::new(NODES);
    start(&mut mesh, 0, None, caps[0]);
    let boot = mesh.nodes[0].listen[0].clone();
    for (i, cap) in caps.iter().enumerate().skip(1) {
        start(&mut mesh, i, Some(&boot), *cap);
    }
    mesh.wait_full_mesh();
    mesh
}

fn submit(mesh: &Mesh, token: &str, job: &str, rounds: u32, secagg: bool, deadline_ms: u64) {
    let spec = serde_json::json!({
        "job": job,
        "spec": {
            "model": "mlp", "rounds": rounds, "participants_per_round": NODES,
            "rule_name": "fedavg", "byzantine_count": 0, "secagg": secagg, "dp_budget": null,
            "training": {
                "dataset": "mnist", "epochs": 1, "batch_size": 32, "learning_rate": 0.1, "seed": 7,
                "round_deadline_ms": deadline_ms, "group_size": NODES, "clip_norm": 20.0,
                "noise_multiplier": 0.0, "sampling_rate": 1.0
            }
        }
    });
    submit_job(&mesh.nodes[0].http_url, token, &spec);
}

/// The job as the first running node that knows it shows it.
fn job_view(mesh: &mut Mesh, token: &str, job: &str) -> Option<serde_json::Value> {
    let urls: Vec<String> = mesh
        .nodes
        .iter_mut()
        .filter_map(|n| n.is_running().then(|| n.http_url.clone()))
        .collect();
    urls.iter()
        .find_map(|url| common::mesh::job_view(url, token, job))
}

fn wait_completed(mesh: &mut Mesh, token: &str, job: &str) -> serde_json::Value {
    let started = Instant::now();
    loop {
        if let Some(view) = job_view(mesh, token, job).filter(|v| v["status"] == "Completed") {
            return view;
        }
        if started.elapsed() >= JOB_LIMIT {
            let view = job_view(mesh, token, job).unwrap_or_default();
            panic!("timed out after {JOB_LIMIT:?} waiting for job {job} to complete: {view}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Each peer's negotiated protocol version as `node` shows it in `/v1/peers`.
fn peer_versions(node: &Node) -> BTreeMap<String, String> {
    let Some(peers) = node.get("/v1/peers") else {
        return BTreeMap::new();
    };
    peers
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["state"] == "admitted")
        .map(|p| {
            let id = p["peer_id"].as_str().unwrap_or_default().to_string();
            let version = p["protocol_version"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (id, version)
        })
        .collect()
}

/// Waits until every node shows, for every other node, the newest version
/// both speak (`caps[i].min(caps[j])`), and its own range in `/v1/status`.
fn wait_negotiated(mesh: &Mesh, caps: [u8; NODES]) {
    for (i, node) in mesh.nodes.iter().enumerate() {
        let want: BTreeMap<String, String> = (0..NODES)
            .filter(|&j| j != i)
            .map(|j| {
                let version = caps[i].min(caps[j]).to_string();
                (mesh.nodes[j].peer_id.clone(), version)
            })
            .collect();
        wait_for_described(
            Duration::from_secs(60),
            || (peer_versions(node) == want).then_some(()),
            || {
                format!(
                    "node {i} to show versions {want:?}: {:?}",
                    peer_versions(node)
                )
            },
        );
        let status = node.get("/v1/status").unwrap();
        assert_eq!(status["protocol_versions"], format!("1-{}", caps[i]));
    }
}

#[test]
fn nodes_speaking_versions_1_2_and_3_form_one_mesh_and_complete_a_secure_job() {
    let caps = [1, 3, 2, 3, 1];
    let mut mesh = start_mesh(caps);
    wait_negotiated(&mesh, caps);
    let token = mesh.admin_token();
    submit(&mesh, &token, "mixed", 3, true, 60_000);
    let done = wait_completed(&mut mesh, &token, "mixed");
    assert_eq!(done["rounds_completed"], 3, "{done}");
    assert_eq!(done["detail"]["spec"]["secagg"], true, "{done}");
    let updates = done["detail"]["rounds"][2]["completion"]["metrics"]["updates_count"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        updates >= 4,
        "the last round aggregated {updates} updates: {done}"
    );
    // Nodes capped at 1 took part and refused nothing as malformed.
    for node in &mesh.nodes {
        let metrics = node.metrics();
        let malformed = metrics
            .lines()
            .filter(|l| {
                l.starts_with("mesh_round_messages_refused_total") && l.contains("malformed")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        assert_eq!(malformed, 0.0, "{}:\n{metrics}", node.dir.display());
    }
}

/// Round number -> (model hash, log index) of every committed round.
fn committed_rounds(view: &serde_json::Value) -> BTreeMap<usize, (String, u64)> {
    view["detail"]["rounds"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(round, record)| {
            let completion = record.get("completion").filter(|c| !c.is_null())?;
            let hash = completion["model_hash"].to_string();
            Some((round, (hash, completion["completed_index"].as_u64()?)))
        })
        .collect()
}

/// Whether node `i` is back: ready, and it and every other node admit all.
fn is_back(mesh: &Mesh, i: usize) -> bool {
    let ready = http(
        "GET",
        &format!("{}/readyz", mesh.nodes[i].http_url),
        None,
        "",
    )
    .is_some_and(|(status, _)| status == 200);
    ready && mesh.nodes.iter().all(|n| n.admitted() >= NODES - 1)
}

/// Rounds committed so far (the first running node's view).
fn committed_count(mesh: &mut Mesh, token: &str, job: &str) -> usize {
    job_view(mesh, token, job).map_or(0, |v| committed_rounds(&v).len())
}

/// Restarts every node, one at a time, speaking {1, 2, 3}: each is back in the
/// mesh, and the job has committed a round with it back (or has ended),
/// before the next goes. Returns the time it took.
fn rolling_upgrade(mesh: &mut Mesh, token: &str, job: &str) -> Duration {
    let started = Instant::now();
    for i in 0..NODES {
        let committed = committed_count(mesh, token, job);
        let clean = mesh.nodes[i].terminate();
        eprintln!("node {i} stopped (clean exit: {clean}); restarting it speaking 1-3");
        let boot = mesh.nodes[(i + 1) % NODES].listen[0].clone();
        start(mesh, i, Some(&boot), 3);
        wait_for_described(
            BACK_LIMIT,
            || is_back(mesh, i).then_some(()),
            || {
                format!(
                    "node {i} to be back in the mesh\n{}",
                    mesh.nodes[i].log_tail()
                )
            },
        );
        wait_for("a round committed with the node back", JOB_LIMIT, || {
            let view = job_view(mesh, token, job)?;
            let running = ["RoundRunning", "WaitingForRound"].map(serde_json::Value::from);
            let ended = !running.contains(&view["status"]);
            (ended || committed_rounds(&view).len() > committed).then_some(())
        });
    }
    started.elapsed()
}

#[test]
fn a_rolling_upgrade_during_a_job_loses_no_committed_round() {
    const ROUNDS: u32 = 40;
    let mut mesh = start_mesh([1; NODES]);
    wait_negotiated(&mesh, [1; NODES]);
    let token = mesh.admin_token();
    // A participant restarted mid-round loses its update; the round then
    // closes at its deadline with the others, so keep the deadline short.
    submit(&mesh, &token, "rolling", ROUNDS, false, 20_000);
    let before = wait_for("a first committed round", JOB_LIMIT, || {
        let rounds = committed_rounds(&job_view(&mut mesh, &token, "rolling")?);
        (!rounds.is_empty()).then_some(rounds)
    });

    let took = rolling_upgrade(&mut mesh, &token, "rolling");
    let during = job_view(&mut mesh, &token, "rolling").unwrap_or_default();
    let after_restart = committed_rounds(&during);
    println!(
        "figure: rolling restart of {NODES} nodes took {:.1} s; rounds committed during it: {} \
         ({} before, {} after; job status then: {})",
        took.as_secs_f64(),
        after_restart.len().saturating_sub(before.len()),
        before.len(),
        after_restart.len(),
        during["status"]
    );
    wait_negotiated(&mesh, [3; NODES]);

    let done = wait_completed(&mut mesh, &token, "rolling");
    println!(
        "figure: the job's {ROUNDS} rounds completed with {} aborted attempts",
        done["rounds_aborted"]
    );
    let rounds = committed_rounds(&done);
    assert_eq!(done["rounds_completed"], ROUNDS, "{done}");
    assert_eq!(rounds.len(), ROUNDS as usize, "{done}");
    let records = done["detail"]["rounds"].as_array().unwrap();
    assert_eq!(
        records.len(),
        ROUNDS as usize,
        "one record per round: {done}"
    );
    for (round, committed) in &before {
        assert_eq!(rounds.get(round), Some(committed), "round {round} changed");
    }
    // Each round committed once, in order, each starting from the model the
    // round before committed.
    let indexes: Vec<u64> = rounds.values().map(|(_, index)| *index).collect();
    assert!(indexes.windows(2).all(|w| w[0] < w[1]), "{indexes:?}");
    for round in 1..ROUNDS as usize {
        assert_eq!(
            records[round]["start_model_hash"].to_string(),
            rounds[&(round - 1)].0,
            "round {round} did not start from round {}'s model",
            round - 1
        );
    }
}
