//! Users' own tables with real `agent-mesh node` processes on loopback: three
//! nodes each hold a private shard of breast-cancer (two as CSV, one as
//! Parquet) and train a job that binds a 30-feature schema, with secure
//! aggregation. A fourth node whose CSV has 31 feature columns, without the
//! committee role (it follows the committed state without the Raft log and
//! sends its decline to a committee member), is selected, declines with the
//! schema message (in its log, its metrics and the job status), is not
//! selected again, and the job completes without it. A second
//! job then fine-tunes from the first one's model: `model get` writes it,
//! `job submit --init` uploads it to one node, and every participant fetches
//! it by hash, so round 0 starts exactly from the trained model.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::mesh::{http, run_ok, start_node, wait_for, wait_for_described, Mesh, ALL_NODE_ROLES};
use mesh_federated::data::table::{read_csv, write_parquet, Table, TableOptions};

const GOOD: usize = 3;
const JOB_LIMIT: Duration = Duration::from_secs(300);

fn dataset(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/breast-cancer")
        .join(file)
}

/// Row `r` of `table` as CSV text, with `extra` appended to the features.
fn csv_row(table: &Table, r: usize, extra: Option<f32>) -> String {
    let f = table.feature_names.len();
    let mut cells: Vec<String> = table.features[r * f..(r + 1) * f]
        .iter()
        .map(|v| v.to_string())
        .collect();
    cells.extend(extra.map(|v| v.to_string()));
    cells.push(table.labels[r].clone());
    cells.join(",")
}

fn write_csv(path: &Path, table: &Table, rows: &[usize], extra: bool) {
    let mut header = table.feature_names.clone();
    if extra {
        header.push("extra".into());
    }
    header.push("label".into());
    let mut text = header.join(",") + "\n";
    for &r in rows {
        text += &(csv_row(table, r, extra.then_some(r as f32)) + "\n");
    }
    std::fs::write(path, text).unwrap();
}

/// Shard folders: `GOOD` shards of the training rows (shard 1 as Parquet) and
/// one with an extra column, each with the whole test set.
fn shards(root: &Path) -> Vec<PathBuf> {
    let options = TableOptions::default();
    let train = read_csv(&dataset("train.csv"), &options).unwrap();
    let test = read_csv(&dataset("test.csv"), &options).unwrap();
    let test_rows: Vec<usize> = (0..test.len()).collect();
    (0..=GOOD)
        .map(|s| {
            let dir = root.join(format!("shard-{s}"));
            std::fs::create_dir_all(&dir).unwrap();
            let rows: Vec<usize> = (0..train.len()).filter(|r| r % GOOD == s % GOOD).collect();
            let bad = s == GOOD;
            if s == 1 {
                let mut part = train.clone();
                let f = part.feature_names.len();
                part.features = rows
                    .iter()
                    .flat_map(|&r| train.features[r * f..(r + 1) * f].to_vec())
                    .collect();
                part.labels = rows.iter().map(|&r| train.labels[r].clone()).collect();
                write_parquet(&part, &dir.join("train.parquet")).unwrap();
            } else {
                write_csv(&dir.join("train.csv"), &train, &rows, bad);
            }
            write_csv(&dir.join("test.csv"), &test, &test_rows, bad);
            dir
        })
        .collect()
}

fn bind_data(node_dir: &Path, shard: &Path) {
    let config = node_dir.join("node.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text += &format!(
        "\n[data]\ndataset = \"breast-cancer\"\ndir = {:?}\n",
        shard.to_str().unwrap()
    );
    std::fs::write(config, text).unwrap();
}

fn job_view(mesh: &Mesh, node: usize, token: &str, job: &str) -> Option<serde_json::Value> {
    let url = format!("{}/v1/jobs/{job}", mesh.nodes[node].http_url);
    let (status, body) = http("GET", &url, Some(token), "")?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

#[test]
fn csv_and_parquet_shards_train_securely_and_a_mismatched_node_declines() {
    // The mismatched node runs no Raft: its decline goes to a committee member.
    let roles = |i| {
        if i == GOOD {
            "aggregator,trainer,observer"
        } else {
            ALL_NODE_ROLES
        }
    };
    let mut mesh = Mesh::with_roles(GOOD + 1, roles);
    let shards = shards(mesh.root.path());
    for (node, shard) in mesh.nodes.iter().zip(&shards) {
        bind_data(&node.dir, shard);
    }
    let mut boot = None::<String>;
    for node in &mut mesh.nodes {
        start_node(node, boot.as_deref(), &[]);
        boot.get_or_insert_with(|| node.listen[0].clone());
    }
    mesh.wait_full_mesh();
    let token = mesh.admin_token();
    let spec = serde_json::json!({
        "job": "cancer",
        "spec": {
            "model": "mlp", "rounds": 4, "participants_per_round": GOOD + 1,
            "rule_name": "fedavg", "byzantine_count": 0, "secagg": true, "dp_budget": null,
            "training": {
                "dataset": "breast-cancer",
                "schema": {"input": {"table": {"features": 30}},
                           "task": {"classification": {"classes": ["0", "1"]}}},
                "epochs": 5, "batch_size": 16, "learning_rate": 0.05, "seed": 3,
                "round_deadline_ms": 90000, "group_size": 5, "clip_norm": 10.0,
                "noise_multiplier": 0.0, "sampling_rate": 1.0
            }
        }
    });
    wait_for("the job to be accepted", Duration::from_secs(120), || {
        let url = format!("{}/v1/jobs", mesh.nodes[0].http_url);
        let (status, body) = http("POST", &url, Some(&token), &spec.to_string())?;
        eprintln!("submit: {status} {body}");
        (status == 200).then_some(())
    });
    let done = wait_for_described(
        JOB_LIMIT,
        || job_view(&mesh, 0, &token, "cancer").filter(|v| v["status"] == "Completed"),
        || {
            let logs: Vec<String> = mesh.nodes.iter().map(|n| n.log_tail()).collect();
            format!(
                "the job to complete: {:?}\n{}",
                job_view(&mesh, 0, &token, "cancer"),
                logs.join("\n")
            )
        },
    );
    let accuracy = done["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "accuracy {accuracy}: {done}");
    let declined = done["declined"].as_array().unwrap();
    assert_eq!(declined.len(), 1, "{done}");
    let reason = declined[0].as_str().unwrap();
    assert!(
        reason.ends_with("schema mismatch: 31 columns, job wants 30 columns"),
        "{reason}"
    );
    let bad = &mesh.nodes[GOOD];
    let log = std::fs::read_to_string(bad.dir.join("node.log")).unwrap();
    assert!(log.contains("schema mismatch"), "{}", bad.log_tail());
    let metrics = bad.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mesh_round_schema_mismatches_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
    let rounds = done["detail"]["rounds"].as_array().unwrap();
    let bad_name = &declined[0].as_str().unwrap()[5..]
        .split(':')
        .next()
        .unwrap()
        .to_string();
    for round in &rounds[2..] {
        let participants = round["participants"].as_array().unwrap();
        assert!(
            !participants
                .iter()
                .any(|p| p.as_str() == Some(bad_name.as_str())),
            "the declining node was selected again: {round}"
        );
    }
    fine_tune_from(&mesh, &token, done["model_hash"].as_str().unwrap());
}

/// Submits a one-round job that starts from the `cancer` job's model (with
/// hash `trained_hash`) through the CLI, and checks that its round 0 started
/// from exactly that model and that it completes.
fn fine_tune_from(mesh: &Mesh, token: &str, trained_hash: &str) {
    let api = mesh.nodes[0].http_url.as_str();
    let dir = mesh.root.path();
    let weights = dir.join("trained.safetensors");
    let weights_arg = weights.to_str().unwrap();
    run_ok(&[
        "model",
        "get",
        "--api",
        api,
        "--token",
        token,
        "--job",
        "cancer",
        "--out",
        weights_arg,
    ]);
    let schema = dir.join("schema.json");
    let schema_text = r#"{"input": {"table": {"features": 30}},
        "task": {"classification": {"classes": ["0", "1"]}}}"#;
    std::fs::write(&schema, schema_text).unwrap();
    let participants = (GOOD + 1).to_string();
    run_ok(&[
        "job",
        "submit",
        "--api",
        api,
        "--token",
        token,
        "--id",
        "tuned",
        "--model",
        "mlp",
        "--data",
        "breast-cancer",
        "--schema",
        schema.to_str().unwrap(),
        "--rounds",
        "1",
        "--participants",
        &participants,
        "--secagg",
        "--group-size",
        "5",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--lr",
        "0.01",
        "--seed",
        "3",
        "--deadline-s",
        "90",
        "--init",
        weights_arg,
    ]);
    let done = wait_for_described(
        JOB_LIMIT,
        || job_view(mesh, 0, token, "tuned").filter(|v| v["status"] == "Completed"),
        || {
            format!(
                "the fine-tuning job to complete: {:?}",
                job_view(mesh, 0, token, "tuned")
            )
        },
    );
    let start = &done["detail"]["rounds"][0]["start_model_hash"];
    let start: Vec<u8> = serde_json::from_value(start.clone()).unwrap();
    assert_eq!(
        hex::encode(start),
        trained_hash,
        "round 0 started elsewhere: {done}"
    );
    let accuracy = done["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "accuracy {accuracy}: {done}");
}
