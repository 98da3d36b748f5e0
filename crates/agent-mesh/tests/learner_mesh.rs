//! Training in the user's own Python learner, with real `agent-mesh node`
//! processes on loopback: three nodes, each running the numpy example
//! learner on its own shard of MNIST (the nodes hold no data themselves),
//! complete a job whose model is the learner's layout (printed by
//! `agent-mesh learner layout`). One learner process is killed with SIGKILL
//! in the middle of a fit: its node logs it, counts the failure, restarts
//! the learner, the round goes on without that update (a dropout), and the
//! job completes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::mesh::{http, start_node, submit_job, wait_for, wait_for_described, Mesh};

const NODES: usize = 3;
const ROUNDS: u64 = 5;
/// Well inside the test runner's 10-minute limit.
const JOB_LIMIT: Duration = Duration::from_secs(300);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn learner_script() -> String {
    let path = repo().join("examples/python-learner-numpy/mnist_softmax.py");
    path.to_str().unwrap().to_owned()
}

fn python_path() -> String {
    repo().join("python/src").to_str().unwrap().to_owned()
}

fn require_numpy() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import numpy"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs python3 with numpy: python3 -m pip install ./python"
    );
}

/// Appends the `[learner]` table for shard `shard` to a node's config.
fn add_learner(dir: &Path, shard: usize) {
    let table = format!(
        r#"
[learner]
command = ["python3", {script:?}]
fit_timeout_ms = 120000
backoff_initial_ms = 200
backoff_max_ms = 2000

[learner.env]
PYTHONPATH = {path:?}
LEARNER_SHARD = "{shard}/{NODES}"
LEARNER_TEST_ROWS = "1000"
"#,
        script = learner_script(),
        path = python_path(),
    );
    let file = dir.join("node.toml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&table);
    std::fs::write(file, text).unwrap();
}

/// The job's `model`, as `agent-mesh learner layout` prints it.
fn learner_model() -> serde_json::Value {
    let out = std::process::Command::new(common::mesh::bin())
        .args(["learner", "layout", "--env"])
        .arg(format!("PYTHONPATH={}", python_path()))
        .args(["--", "python3", &learner_script()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "learner layout failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn submit(mesh: &Mesh, token: &str, model: &serde_json::Value) {
    let spec = serde_json::json!({
        "job": "py",
        "spec": {
            "model": model, "rounds": ROUNDS, "participants_per_round": NODES,
            "rule_name": "fedavg", "byzantine_count": 0, "secagg": false, "dp_budget": null,
            "training": {
                "dataset": "mnist", "epochs": 60, "batch_size": 32, "learning_rate": 0.05,
                "seed": 7, "round_deadline_ms": 30000, "group_size": NODES, "clip_norm": 100.0,
                "noise_multiplier": 0.0, "sampling_rate": 1.0
            }
        }
    });
    submit_job(&mesh.nodes[0].http_url, token, &spec);
}

fn job_view(mesh: &Mesh, node: usize, token: &str) -> Option<serde_json::Value> {
    let url = format!("{}/v1/jobs/py", mesh.nodes[node].http_url);
    let (status, body) = http("GET", &url, Some(token), "")?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

/// A metric's value in a node's `/metrics` text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The pid of the learner child of the node process `node_pid`.
fn learner_pid(node_pid: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after_name = &stat[stat.rfind(')')? + 2..];
        let parent: u32 = after_name.split(' ').nth(1)?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let is_learner = String::from_utf8_lossy(&cmdline).contains("mnist_softmax.py");
        (parent == node_pid && is_learner).then_some(pid)
    })
}

fn node_pid(mesh: &Mesh, node: usize) -> u32 {
    let info = std::fs::read_to_string(mesh.nodes[node].dir.join("data/node.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&info).unwrap();
    json["pid"].as_u64().unwrap() as u32
}

fn log(mesh: &Mesh, node: usize) -> String {
    std::fs::read_to_string(mesh.nodes[node].dir.join("node.log")).unwrap_or_default()
}

/// Kills a learner while it is fitting; returns its node. A kill that lands
/// just after the fit ended (the learner idle) is not a dropout: the next
/// call restarts it silently, so it is tried again on the next fit.
fn kill_a_learner_mid_fit(mesh: &Mesh, token: &str) -> usize {
    for attempt in 0..6 {
        let (node, pid) = wait_for("a learner fitting", JOB_LIMIT, || {
            let view = job_view(mesh, 0, token)?;
            assert_ne!(view["status"], "Completed", "no fit was caught: {view}");
            (0..NODES).find_map(|i| {
                let fitting = metric(
                    &mesh.nodes[i].metrics(),
                    "mesh_learner_calls_in_flight{call=\"fit\"}",
                ) >= 1.0;
                fitting.then(|| learner_pid(node_pid(mesh, i)).map(|p| (i, p)))?
            })
        });
        let exited = "mesh_learner_failures_total{reason=\"exited\"}";
        let before = metric(&mesh.nodes[node].metrics(), exited);
        let killed = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        eprintln!("attempt {attempt}: killed learner {pid} of node {node}");
        let seen = wait_for(
            "the node to see its learner die",
            Duration::from_secs(120),
            || {
                let failures = metric(&mesh.nodes[node].metrics(), exited);
                (failures > before).then(|| log(mesh, node))
            },
        );
        if seen.contains(&format!("learner process {pid} ended")) && seen.contains("during fit") {
            return node;
        }
    }
    panic!("no learner was killed during a fit in 6 attempts");
}

#[test]
fn three_nodes_train_in_python_learners_and_survive_a_killed_learner() {
    require_numpy();
    let model = learner_model();
    assert_eq!(
        model["learner"]["parameters"][0],
        serde_json::json!({"name": "fc.weight", "shape": [784, 10]})
    );
    let mut mesh = Mesh::new(NODES);
    let mut boot = None::<String>;
    for i in 0..NODES {
        add_learner(&mesh.nodes[i].dir, i);
        start_node(&mut mesh.nodes[i], boot.as_deref(), &[]);
        boot.get_or_insert_with(|| mesh.nodes[0].listen[0].clone());
    }
    mesh.wait_full_mesh();
    let token = mesh.admin_token();
    submit(&mesh, &token, &model);

    let victim = kill_a_learner_mid_fit(&mesh, &token);
    let done = wait_for_described(
        JOB_LIMIT,
        || job_view(&mesh, 0, &token).filter(|v| v["status"] == "Completed"),
        || {
            let logs: Vec<String> = (0..NODES)
                .map(|i| format!("node {i}:\n{}", mesh.nodes[i].log_tail()))
                .collect();
            format!(
                "the job to complete: {:?}\n{}",
                job_view(&mesh, 0, &token),
                logs.join("\n")
            )
        },
    );
    assert_eq!(done["rounds_completed"], ROUNDS, "{done}");
    let accuracy = done["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.8, "accuracy {accuracy}: {done}");

    let text = wait_for(
        "the learner to be restarted",
        Duration::from_secs(60),
        || {
            let text = mesh.nodes[victim].metrics();
            (metric(&text, "mesh_learner_restarts_total") >= 1.0).then_some(text)
        },
    );
    assert_eq!(metric(&text, "mesh_learner_up"), 1.0, "{text}");
    let victim_log = log(&mesh, victim);
    assert!(victim_log.contains("learner failed"), "{victim_log}");
    assert!(victim_log.contains("local training failed"), "{victim_log}");
    let dropouts: f64 = (0..NODES)
        .map(|i| metric(&mesh.nodes[i].metrics(), "mesh_round_dropouts_total"))
        .sum();
    assert!(dropouts >= 1.0, "no dropout counted");
    let updates: Vec<u64> = done["detail"]["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["completion"]["metrics"]["updates_count"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    eprintln!("accuracy {accuracy:.4}, updates per round {updates:?}");
    assert!(
        updates.iter().any(|&u| u < NODES as u64),
        "a round should miss the killed learner's update: {updates:?}"
    );
}
