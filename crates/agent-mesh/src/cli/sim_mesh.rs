//! `agent-mesh sim` over the round protocol: every simulated node runs the
//! node's own engine ([`mesh_node::protocol::NodeEngine`]) in the mesh
//! simulator, with secure aggregation and seeded faults as options. Writes
//! the same report, chart and model as the direct simulation, plus protocol
//! statistics.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use mesh_consensus::command::{DpBudget, JobSpec, TrainingSpec};
use mesh_federated::aggregate::ServerOptimizer;
use mesh_federated::data::Mnist;
use mesh_federated::model::{store, ModelShape};
use mesh_federated::privacy::noise_multiplier_for_epsilon;
use mesh_node::mesh_sim::{Faults, MeshRoundReport, MeshSim, MeshSimConfig, MeshSimOutcome};
use mesh_node::protocol::plan::split_groups;
use mesh_node::protocol::Conduct;
use mesh_node::sim::{NoiseLevel, RoundReport, SimConfig};

use super::plot;
use super::sim::{write_atomically, SimArgs};

/// The job and mesh the flags describe.
pub fn mesh_config(args: &SimArgs, c: &SimConfig) -> anyhow::Result<MeshSimConfig> {
    if !matches!(c.pre, mesh_federated::aggregate::PreAggregation::None)
        || c.local.proximal_mu != 0.0
    {
        anyhow::bail!("--pre and --prox-mu run only in the direct simulation (add --direct)");
    }
    // The protocol's final aggregators step the model by the aggregate (server SGD, rate 1).
    if c.server != ServerOptimizer::sgd(1.0) {
        anyhow::bail!(
            "--server-opt other than sgd:lr=1 runs only in the direct simulation (add --direct)"
        );
    }
    let participants = c.participants_per_round;
    let group_size = args.group_size.unwrap_or(if args.secagg { 5 } else { 1 });
    let min = if args.secagg { 2 } else { 1 };
    let names: Vec<usize> = (0..participants).collect();
    let groups = split_groups(
        &names
            .iter()
            .map(|i| mesh_consensus::NodeId(i.to_string()))
            .collect::<Vec<_>>(),
        group_size,
        min,
    )
    .len();
    let needed = c.rule.n_min(c.byzantine);
    if groups < needed {
        anyhow::bail!(
            "rule {} needs at least {needed} group results to tolerate {} Byzantine nodes, but {participants} participants in groups of {group_size} give {groups}; lower --group-size or add nodes",
            c.rule, c.byzantine
        );
    }
    let (noise_multiplier, dp_budget) = dp_settings(args, c)?;
    let spec = JobSpec {
        model_name: c.model.to_string(),
        rounds: u32::try_from(c.rounds).context("--rounds is too large")?,
        participants_per_round: u32::try_from(participants)
            .context("--participants is too large")?,
        rule_name: format!("{:#}", c.rule),
        byzantine_count: c.byzantine as u32,
        secagg: args.secagg,
        dp_budget,
        training: TrainingSpec {
            dataset: "mnist".into(),
            epochs: c.local.epochs as u32,
            batch_size: c.local.batch_size as u32,
            learning_rate: c.local.learning_rate,
            seed: c.seed,
            round_deadline_ms: args.round_deadline_ms,
            group_size: group_size as u32,
            clip_norm: args.dp_clip.unwrap_or(args.clip),
            noise_multiplier,
            sampling_rate: participants as f64 / c.nodes as f64,
        },
    };
    let byzantine = pick_byzantine(c);
    let faults = Faults {
        latency_min_ms: args.latency_ms.0,
        latency_max_ms: args.latency_ms.1,
        loss: args.loss,
        crashes: args.crashes,
        down_ms: args.down_ms,
        partitions: args.partitions,
        window_ms: args.round_deadline_ms * c.rounds,
    };
    faults.validate().map_err(anyhow::Error::msg)?;
    Ok(MeshSimConfig {
        nodes: c.nodes,
        spec,
        partition: c.partition,
        byzantine,
        quarantined: Vec::new(),
        faults,
        threads: c.threads,
        seed: c.seed,
        time_limit_ms: args
            .round_deadline_ms
            .saturating_mul(c.rounds)
            .saturating_mul(4),
    })
}

fn dp_settings(args: &SimArgs, c: &SimConfig) -> anyhow::Result<(f64, Option<DpBudget>)> {
    let Some(dp) = c.dp else {
        return Ok((0.0, None));
    };
    if args.dp_placement.as_deref() == Some("central") {
        anyhow::bail!("the round protocol adds DP noise on each node: use --dp-placement distributed (or --direct for central noise)");
    }
    let q = c.participants_per_round as f64 / c.nodes as f64;
    let (z, eps) = match dp.noise {
        NoiseLevel::Multiplier(z) => (z, dp.epsilon_budget),
        NoiseLevel::TargetEpsilon(eps) => (
            noise_multiplier_for_epsilon(q, c.rounds, dp.delta, eps)?,
            Some(dp.epsilon_budget.unwrap_or(eps)),
        ),
    };
    let budget = eps
        .map(|e| DpBudget {
            epsilon_micros: (e * 1e6) as u64,
            delta: dp.delta,
        })
        .unwrap_or(DpBudget {
            epsilon_micros: u64::MAX / 4,
            delta: dp.delta,
        });
    Ok((z, Some(budget)))
}

fn pick_byzantine(c: &SimConfig) -> Vec<(usize, Conduct)> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut order: Vec<usize> = (0..c.nodes).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(c.seed ^ 0xB42));
    let attack = c.attack.resolve(c.participants_per_round, c.byzantine);
    order
        .into_iter()
        .take(c.byzantine)
        .map(|n| (n, Conduct::Byzantine(attack)))
        .collect()
}

/// Runs the protocol simulation with progress and writes the outputs.
pub fn run(args: &SimArgs, c: &SimConfig, mnist: Mnist) -> anyhow::Result<()> {
    let config = mesh_config(args, c)?;
    let shape = ModelShape::of(&mnist.test);
    println!(
        "agent-mesh sim: {} nodes running the round protocol ({} Byzantine: {}), {} rounds, model {}, rule {}, secure aggregation {}, groups of {}, seed {}",
        c.nodes, c.byzantine, c.attack, c.rounds, c.model, c.rule, if args.secagg { "on" } else { "off" }, config.spec.training.group_size, c.seed
    );
    if config.spec.training.noise_multiplier > 0.0 {
        println!(
            "differential privacy: clip {}, noise multiplier {:.4} shared across nodes",
            config.spec.training.clip_norm, config.spec.training.noise_multiplier
        );
    }
    println!(
        "{:>5}  {:>9}  {:>9}  {:>8}  {:>9}  {:>9}  {:>8}",
        "round", "test acc", "test loss", "updates", "epsilon", "sim time", "time"
    );
    let started = Instant::now();
    let mut sim = MeshSim::new(config, &mnist.train, mnist.test)?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(c.rounds)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} round {pos}/{len} [{elapsed_precise}, eta {eta}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    while let Some(r) = sim.run_until_round()? {
        let line = format!(
            "{:>5}  {:>8.2}%  {:>9.4}  {:>8}  {:>9.3}  {:>7.1} s  {:>6.1} s",
            r.round,
            100.0 * r.test_accuracy,
            r.test_loss,
            r.updates,
            r.epsilon,
            r.committed_at_ms as f64 / 1000.0,
            r.wall_ms as f64 / 1000.0
        );
        if args.quiet {
            println!("{line}")
        } else {
            bar.println(line)
        }
        bar.set_message(format!("acc {:.2}%", 100.0 * r.test_accuracy));
        bar.inc(1);
        let outcome = sim.outcome(started);
        save(args, c, shape, &outcome)?;
    }
    bar.finish_and_clear();
    let outcome = sim.outcome(started);
    save(args, c, shape, &outcome)?;
    print_summary(args, &outcome);
    Ok(())
}

fn print_summary(args: &SimArgs, o: &MeshSimOutcome) {
    if let Some(status) = o
        .status
        .filter(|s| *s != mesh_consensus::state::jobs::JobStatus::Completed)
    {
        println!("job ended {status:?} after {} rounds", o.rounds.len());
    }
    if let Some(last) = o.rounds.last() {
        println!(
            "final test accuracy {:.2}% after {} rounds",
            100.0 * last.test_accuracy,
            last.round
        );
    }
    println!(
        "protocol: {} messages, {:.1} MiB sent, {} updates accepted, {} late, {} invalid, {} dropouts, {} messages lost, {} crashes",
        o.stats.messages_sent(), o.stats.sent_bytes as f64 / (1 << 20) as f64, o.stats.updates_accepted, o.stats.updates_late, o.stats.updates_invalid, o.stats.dropouts, o.messages_dropped, o.crashes
    );
    println!(
        "wrote {}/report.json, accuracy.png, model.safetensors",
        args.out.display()
    );
}

fn save(
    args: &SimArgs,
    c: &SimConfig,
    shape: ModelShape,
    o: &MeshSimOutcome,
) -> anyhow::Result<()> {
    let reports: Vec<RoundReport> = o.rounds.iter().map(as_round_report).collect();
    let report = serde_json::json!({
        "config": {
            "engine": "protocol", "nodes": c.nodes, "rounds": c.rounds, "participants_per_round": c.participants_per_round,
            "local_epochs": c.local.epochs, "batch_size": c.local.batch_size, "learning_rate": c.local.learning_rate,
            "model": c.model.to_string(), "partition": c.partition.to_string(), "rule": c.rule.to_string(),
            "byzantine": c.byzantine, "attack": c.attack.to_string(), "secagg": args.secagg,
            "dp_clip": args.dp_clip, "dp_delta": args.dp_delta, "seed": c.seed, "data": args.data.display().to_string(),
            "latency_ms": [args.latency_ms.0, args.latency_ms.1], "loss": args.loss, "crashes": args.crashes, "partitions": args.partitions,
        },
        "rounds": reports,
        "protocol_rounds": o.rounds,
        "final_test_accuracy": o.rounds.last().map(|r| r.test_accuracy),
        "job_status": o.status.map(|s| format!("{s:?}")),
        "stopped_by_privacy_budget": o.status == Some(mesh_consensus::state::jobs::JobStatus::BudgetExhausted),
        "protocol": {
            "messages_sent": o.stats.sent_messages, "bytes_sent": o.stats.sent_bytes,
            "updates_accepted": o.stats.updates_accepted, "updates_late": o.stats.updates_late,
            "updates_invalid": o.stats.updates_invalid, "dropouts": o.stats.dropouts,
            "messages_lost": o.messages_dropped, "crashes": o.crashes,
            "training_wall_ms": o.training_wall_ms, "total_wall_ms": o.total_wall_ms,
            "cache_bytes_max": o.cache_bytes_max,
        },
    });
    write_atomically(
        &args.out.join("report.json"),
        serde_json::to_vec_pretty(&report)?.as_slice(),
    )?;
    plot::accuracy_and_loss(&args.out.join("accuracy.png"), &reports)?;
    if let Some(params) = &o.model {
        let mut model = c.model.build(shape, c.seed)?;
        model.set_parameters(params)?;
        let metadata = HashMap::from([
            ("model".to_string(), c.model.to_string()),
            ("rounds".to_string(), o.rounds.len().to_string()),
            ("seed".to_string(), c.seed.to_string()),
        ]);
        store::save(
            model.as_ref(),
            &args.out.join("model.safetensors"),
            metadata,
        )?;
    }
    Ok(())
}

fn as_round_report(r: &MeshRoundReport) -> RoundReport {
    RoundReport {
        round: u64::from(r.round),
        test_accuracy: r.test_accuracy,
        test_loss: r.test_loss,
        train_loss: 0.0,
        epsilon: r.epsilon,
        duration_ms: r.wall_ms,
        participants: r.updates as usize,
    }
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
