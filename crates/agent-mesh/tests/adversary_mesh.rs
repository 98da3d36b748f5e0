//! Robustness and detection with real `agent-mesh node` processes on
//! loopback: seven nodes, two of them adversarial (`[adversary] attack =
//! "sign-flip"`, started with `--allow-adversary`). A job with a robust rule
//! and no secure aggregation reaches 90% MNIST test accuracy, the final
//! aggregators' outlier evidence quarantines both adversarial nodes, no
//! honest node is quarantined, and an operator's reset lifts a quarantine.
//! A config with an `[adversary]` section does not start without the flag.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::mesh::{
    bin, http, mnist_dir, start_node_with_args, wait_for, wait_for_described, Mesh,
};

const NODES: usize = 7;
const ADVERSARIES: [usize; 2] = [2, 5];
const JOB_LIMIT: Duration = Duration::from_secs(420);

fn make_adversarial(mesh: &Mesh, i: usize) {
    let path = mesh.nodes[i].dir.join("node.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\n[adversary]\nattack = \"sign-flip\"\n");
    std::fs::write(path, text).unwrap();
}

fn start_mesh() -> Mesh {
    let mut mesh = Mesh::new(NODES);
    for i in ADVERSARIES {
        make_adversarial(&mesh, i);
    }
    let data = mnist_dir();
    let mut boot = None::<String>;
    for i in 0..NODES {
        let shard = format!("{i}/{NODES}");
        let env = [
            ("AGENT_MESH_DATA", data.as_str()),
            ("AGENT_MESH_DATA_SHARD", shard.as_str()),
        ];
        let args: &[&str] = if ADVERSARIES.contains(&i) {
            &["--allow-adversary"]
        } else {
            &[]
        };
        start_node_with_args(&mut mesh.nodes[i], boot.as_deref(), &env, args);
        if boot.is_none() {
            boot = Some(mesh.nodes[0].listen[0].clone());
        }
    }
    mesh.wait_full_mesh();
    mesh
}

fn reputation(mesh: &Mesh, token: &str) -> Vec<serde_json::Value> {
    let url = format!("{}/v1/reputation", mesh.nodes[0].http_url);
    http("GET", &url, Some(token), "")
        .and_then(|(_, body)| serde_json::from_str::<Vec<serde_json::Value>>(&body).ok())
        .unwrap_or_default()
}

fn quarantined(mesh: &Mesh, token: &str) -> Vec<String> {
    reputation(mesh, token)
        .into_iter()
        .filter(|r| r["quarantined"] == true)
        .filter_map(|r| r["node"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn adversarial_nodes_are_outvoted_and_quarantined_and_honest_ones_are_not() {
    let mesh = start_mesh();
    let token = mesh.admin_token();
    let metrics = mesh.nodes[ADVERSARIES[0]].metrics();
    assert!(
        metrics.contains("mesh_node_adversarial{attack=\"sign-flip\"} 1"),
        "{metrics}"
    );
    let spec = serde_json::json!({
        "job": "robust",
        "spec": {
            "model": "mlp", "rounds": 8, "participants_per_round": NODES,
            "rule_name": "trimmed-mean", "pre_aggregation": "none", "server_optimizer": "sgd",
            "byzantine_count": 2, "secagg": false, "dp_budget": null,
            "training": {
                "dataset": "mnist", "epochs": 2, "batch_size": 32, "learning_rate": 0.1, "seed": 9,
                "round_deadline_ms": 120000, "group_size": 1, "clip_norm": 20.0,
                "noise_multiplier": 0.0, "sampling_rate": 1.0
            }
        }
    });
    wait_for("the job to be accepted", Duration::from_secs(120), || {
        let url = format!("{}/v1/jobs", mesh.nodes[1].http_url);
        let (status, body) = http("POST", &url, Some(&token), &spec.to_string())?;
        eprintln!("submit: {status} {body}");
        (status == 200).then_some(())
    });
    let view = wait_for_described(
        JOB_LIMIT,
        || {
            let url = format!("{}/v1/jobs/robust", mesh.nodes[0].http_url);
            let (status, body) = http("GET", &url, Some(&token), "")?;
            let view: serde_json::Value = serde_json::from_str(&body).ok()?;
            (status == 200 && view["status"] == "Completed").then_some(view)
        },
        || {
            let logs: Vec<String> = (0..NODES)
                .map(|i| format!("node {i}:\n{}", mesh.nodes[i].log_tail()))
                .collect();
            format!("the job to complete\n{}", logs.join("\n"))
        },
    );
    let accuracy = view["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "accuracy {accuracy}: {view}");
    let adversaries: Vec<String> = ADVERSARIES
        .iter()
        .map(|&i| mesh.nodes[i].peer_id.clone())
        .collect();
    let mut flagged = quarantined(&mesh, &token);
    flagged.sort();
    let mut expected = adversaries.clone();
    expected.sort();
    assert_eq!(
        flagged,
        expected,
        "quarantined: {:?}",
        reputation(&mesh, &token)
    );

    // An operator lifts one quarantine.
    let url = format!(
        "{}/v1/reputation/{}/reset",
        mesh.nodes[0].http_url, adversaries[0]
    );
    let (status, body) = http("POST", &url, Some(&token), "").unwrap();
    assert_eq!(status, 200, "{body}");
    wait_for("the reset to be seen", Duration::from_secs(30), || {
        let now = quarantined(&mesh, &token);
        (!now.contains(&adversaries[0])).then_some(())
    });
}

#[test]
fn an_adversarial_config_does_not_start_without_the_flag() {
    let mesh = Mesh::new(1);
    make_adversarial(&mesh, 0);
    let output = Command::new(bin())
        .args(["node", "--config"])
        .arg(mesh.nodes[0].dir.join("node.toml"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--allow-adversary") && stderr.contains("sign-flip"),
        "{stderr}"
    );
}
