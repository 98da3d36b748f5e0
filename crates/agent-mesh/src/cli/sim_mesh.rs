//! `agent-mesh sim` runs here: every simulated node runs the node's own
//! engine ([`mesh_round::protocol::NodeEngine`]) in the mesh simulator, with
//! secure aggregation and seeded faults as options. Prints a table row per
//! committed round (through the progress bar on a terminal, straight to
//! standard output otherwise, so logs and CI see every round) and writes
//! `report.json`, `accuracy.png` and `model.safetensors` after each round.

use std::collections::HashMap;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use mesh_consensus::command::JobSpec;
use mesh_consensus::state::jobs::JobStatus;
use mesh_federated::data::LoadedData;
use mesh_federated::model::{self, store};
use mesh_round::job::JobSpecCheck;
use mesh_round::sim::MeshRoundReport;
use mesh_round::sim::{MeshSim, MeshSimConfig, MeshSimOutcome};

use super::plot;
use super::sim::{write_atomically, SimArgs};

/// Runs the protocol simulation with progress and writes the outputs.
pub fn run(args: &SimArgs, config: MeshSimConfig, data: LoadedData) -> anyhow::Result<()> {
    let regression = data.train.is_regression();
    let started = Instant::now();
    let rounds = u64::from(config.spec.rounds);
    let spec = config.spec.clone();
    // Built before the header, so a configuration error is all that prints.
    let mut sim = MeshSim::new(config.clone(), &data.train, data.test.clone())?;
    print_header(args, &config, &data);
    let bar = progress_bar(args.quiet, rounds);
    while let Some(r) = sim.run_until_round()? {
        let line = format!(
            "{:>5}  {}  {:>9.4}  {:>8}  {:>9.3}  {:>7.1} s  {:>6.1} s",
            r.round,
            headline(&r, regression),
            r.test_loss,
            r.updates,
            r.epsilon,
            r.committed_at_ms as f64 / 1000.0,
            r.wall_ms as f64 / 1000.0
        );
        if bar.is_hidden() {
            println!("{line}");
        } else {
            bar.println(line);
        }
        bar.set_message(headline(&r, regression).trim().to_string());
        bar.inc(1);
        save(args, &spec, &sim.outcome(started))?;
    }
    bar.finish_and_clear();
    let outcome = sim.outcome(started);
    save(args, &spec, &outcome)?;
    print_summary(args, &outcome, regression);
    Ok(())
}

/// The round's main figure: test accuracy, or RMSE for regression (9 wide).
fn headline(r: &MeshRoundReport, regression: bool) -> String {
    match r.test_rmse.filter(|_| regression) {
        Some(rmse) => format!("{rmse:>9.3}"),
        None => format!("{:>8.2}%", 100.0 * r.test_accuracy),
    }
}

/// A bar on a terminal; hidden with `--quiet` or when standard error is not one.
fn progress_bar(quiet: bool, rounds: u64) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(rounds)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} round {pos}/{len} [{elapsed_precise}, eta {eta}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn print_header(args: &SimArgs, config: &MeshSimConfig, data: &LoadedData) {
    let spec = &config.spec;
    println!(
        "agent-mesh sim: {} nodes running the round protocol ({} Byzantine: {}), {} rounds, model {}, rule {} (pre {}, server {}), secure aggregation {}, groups of up to {}, seed {}",
        args.nodes, args.byzantine, args.attack(), spec.rounds, spec.model, spec.rule_name, spec.pre_aggregation, spec.server_optimizer,
        if spec.secagg { "on" } else { "off" }, spec.training.group_size, args.seed
    );
    println!(
        "data {}: {} ({} training rows, {} test rows, split {})",
        args.data,
        data.train.schema(),
        data.train.len(),
        data.test.len(),
        args.partition
    );
    if spec.training.noise_multiplier > 0.0 {
        let privacy = spec
            .check()
            .map(|j| j.privacy.to_string())
            .unwrap_or_default();
        println!(
            "differential privacy: clip {}, noise multiplier {:.4}, {privacy}",
            spec.training.clip_norm, spec.training.noise_multiplier
        );
    }
    let headline = if data.train.is_regression() {
        "test rmse"
    } else {
        "test acc"
    };
    println!(
        "{:>5}  {:>9}  {:>9}  {:>8}  {:>9}  {:>9}  {:>8}",
        "round", headline, "test loss", "updates", "epsilon", "sim time", "time"
    );
}

fn print_summary(args: &SimArgs, o: &MeshSimOutcome, regression: bool) {
    if let Some(status) = o.status.filter(|s| *s != JobStatus::Completed) {
        println!("job ended {status:?} after {} rounds", o.rounds.len());
    }
    match o.rounds.last() {
        Some(last) if regression => println!(
            "final test RMSE {:.3}, R^2 {:.3} after {} rounds",
            last.test_rmse.unwrap_or(f32::NAN),
            last.test_r2.unwrap_or(f32::NAN),
            last.round
        ),
        Some(last) => println!(
            "final test accuracy {:.2}% (macro F1 {:.3}) after {} rounds",
            100.0 * last.test_accuracy,
            last.test_macro_f1,
            last.round
        ),
        None => {}
    }
    println!(
        "protocol: {} messages, {:.1} MiB sent, {} updates accepted, {} late, {} invalid, {} dropouts, {} messages lost, {} crashes",
        o.stats.messages_sent(), o.stats.sent_bytes as f64 / (1 << 20) as f64, o.stats.updates_accepted, o.stats.updates_late, o.stats.updates_invalid, o.stats.dropouts, o.messages_dropped, o.crashes
    );
    if !o.reputation.is_empty() {
        let byzantine = args.byzantine_nodes();
        let describe = |(node, score, quarantined): &(usize, u32, bool)| {
            let role = if byzantine.contains(node) {
                "Byzantine"
            } else {
                "honest"
            };
            let state = if *quarantined { ", quarantined" } else { "" };
            format!("node {node} ({role}) {score}{state}")
        };
        let rows: Vec<String> = o.reputation.iter().map(describe).collect();
        println!("reputation: {}", rows.join("; "));
    }
    println!(
        "wrote {}/report.json, accuracy.png, model.safetensors",
        args.out.display()
    );
}

fn save(args: &SimArgs, spec: &JobSpec, o: &MeshSimOutcome) -> anyhow::Result<()> {
    let report = report_json(args, spec, o);
    write_atomically(
        &args.out.join("report.json"),
        serde_json::to_vec_pretty(&report)?.as_slice(),
    )?;
    plot::accuracy_and_loss(&args.out.join("accuracy.png"), &o.rounds)?;
    if let Some(params) = &o.model {
        save_model(args, spec, params, o.rounds.len())?;
    }
    Ok(())
}

fn save_model(args: &SimArgs, spec: &JobSpec, params: &[f32], rounds: usize) -> anyhow::Result<()> {
    let schema = spec
        .training
        .schema
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the simulated job has no data schema"))?;
    let mut model = model::build(&spec.model, schema, args.seed)?;
    model.set_parameters(params)?;
    let metadata = HashMap::from([
        ("model".to_string(), serde_json::to_string(&spec.model)?),
        ("schema".to_string(), serde_json::to_string(schema)?),
        ("rounds".to_string(), rounds.to_string()),
        ("seed".to_string(), args.seed.to_string()),
    ]);
    store::save(
        model.as_ref(),
        &args.out.join("model.safetensors"),
        metadata,
    )?;
    Ok(())
}

fn report_json(args: &SimArgs, spec: &JobSpec, o: &MeshSimOutcome) -> serde_json::Value {
    let privacy = spec.check().ok().map(|j| j.privacy);
    let last = o.rounds.last();
    let regression = spec
        .training
        .schema
        .as_ref()
        .is_some_and(|s| s.task.is_regression());
    serde_json::json!({
        "config": {
            "engine": "protocol", "nodes": args.nodes, "rounds": args.rounds,
            "participants_per_round": args.participants.unwrap_or(args.nodes),
            "local_epochs": args.local_epochs, "batch_size": args.batch_size, "learning_rate": args.lr,
            "proximal_mu": args.prox_mu, "model": spec.model.to_string(), "model_spec": spec.model, "schema": spec.training.schema, "partition": args.partition.to_string(),
            "rule": format!("{:#}", args.rule), "pre_aggregation": format!("{:#}", args.pre),
            "server_optimizer": format!("{:#}", args.server_opt),
            "byzantine": args.byzantine, "attack": args.attack().to_string(), "secagg": args.secagg,
            "dp_clip": args.dp_clip, "dp_delta": args.dp_delta, "dp_privacy": privacy,
            "seed": args.seed, "data": args.data.to_string(), "data_sha256": args.data_sha256,
            "latency_ms": [args.latency_ms.0, args.latency_ms.1], "loss": args.loss, "crashes": args.crashes, "partitions": args.partitions,
        },
        "rounds": o.rounds,
        "task": if regression { "regression" } else { "classification" },
        "final_test_accuracy": last.filter(|_| !regression).map(|r| r.test_accuracy),
        "final_test_macro_f1": last.filter(|_| !regression).map(|r| r.test_macro_f1),
        "final_test_rmse": last.and_then(|r| r.test_rmse),
        "final_test_r2": last.and_then(|r| r.test_r2),
        "job_status": o.status.map(|s| format!("{s:?}")),
        "stopped_by_privacy_budget": o.status == Some(JobStatus::BudgetExhausted),
        "reputation": o.reputation.iter().map(|(node, score, quarantined)| serde_json::json!({
            "node": node, "score": score, "quarantined": quarantined,
            "byzantine": args.byzantine_nodes().contains(node),
        })).collect::<Vec<_>>(),
        "protocol": {
            "messages_sent": o.stats.sent_messages, "bytes_sent": o.stats.sent_bytes,
            "updates_accepted": o.stats.updates_accepted, "updates_late": o.stats.updates_late,
            "updates_invalid": o.stats.updates_invalid, "dropouts": o.stats.dropouts,
            "messages_lost": o.messages_dropped, "crashes": o.crashes,
            "training_wall_ms": o.training_wall_ms, "total_wall_ms": o.total_wall_ms,
            "cache_bytes_max": o.cache_bytes_max,
        },
    })
}

/// Parses `MIN-MAX` or `MS` milliseconds.
pub fn parse_latency(s: &str) -> Result<(u64, u64), String> {
    let parse = |v: &str| {
        v.trim()
            .parse::<u64>()
            .map_err(|_| format!("{s:?}: expected MS or MIN-MAX milliseconds"))
    };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => (parse(s)?, parse(s)?),
    };
    if lo > hi {
        return Err(format!("{s:?}: minimum exceeds maximum"));
    }
    Ok((lo, hi))
}
