//! `agent-mesh sim`: an in-process federation training on MNIST.
//!
//! By default every simulated node runs the round protocol ([`super::sim_mesh`]).
//! With `--direct` it builds a [`mesh_node::sim::Simulation`] from the flags, runs it round by round
//! with a progress bar and a per-round table, and writes `OUT/report.json`,
//! `OUT/accuracy.png` and `OUT/model.safetensors`.

use super::plot;
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mesh_federated::aggregate::{PreAggregation, Rule, ServerOptimizer};
use mesh_federated::attack::Attack;
use mesh_federated::data::partition::Partition;
use mesh_federated::data::Mnist;
use mesh_federated::model::{store, ModelError, ModelKind, TrainOptions};
use mesh_federated::privacy::NoisePlacement;
use mesh_node::round::participant::ParticipantError;
use mesh_node::sim::{DpConfig, NoiseLevel, RoundReport, SimConfig, SimError, Simulation};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Flags of `agent-mesh sim`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  agent-mesh sim\n  agent-mesh sim --byzantine 2 --attack alie --rule trimmed-mean --pre nnm\n  agent-mesh sim --model logistic --nodes 100 --local-epochs 1 --lr 0.1 --dp-clip 0.5 --dp-epsilon 8 --dp-placement distributed\n  agent-mesh sim --nodes 100 --partition dirichlet:0.5 --rounds 30"
)]
pub struct SimArgs {
    /// Number of nodes in the mesh.
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// Federated rounds to run.
    #[arg(long, default_value_t = 12)]
    pub rounds: u64,
    /// Nodes sampled into each round (default: all).
    #[arg(long)]
    pub participants: Option<usize>,
    /// Local epochs per round.
    #[arg(long, default_value_t = 5)]
    pub local_epochs: usize,
    /// Local mini-batch size.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Local SGD learning rate.
    #[arg(long, default_value_t = 0.05)]
    pub lr: f32,
    /// FedProx proximal coefficient mu (0 = FedAvg local training).
    #[arg(long, default_value_t = 0.0)]
    pub prox_mu: f32,
    /// Model: logistic, mlp or cnn.
    #[arg(long, default_value = "cnn")]
    pub model: ModelKind,
    /// Data split: iid, dirichlet[:ALPHA], shards, quantity[:ALPHA].
    #[arg(long, default_value = "iid")]
    pub partition: Partition,
    /// Aggregation rule: fedavg, median, trimmed-mean, krum, multi-krum, bulyan, geomed, cclip.
    #[arg(long, default_value = "fedavg")]
    pub rule: Rule,
    /// Pre-aggregation: none, nnm, bucketing[:size=S].
    #[arg(long, default_value = "none")]
    pub pre: PreAggregation,
    /// Server optimizer: sgd, fedadam, fedyogi (optionally :lr=..).
    #[arg(long, default_value = "sgd")]
    pub server_opt: ServerOptimizer,
    /// Byzantine nodes; robust rules are told to tolerate this many.
    #[arg(long, default_value_t = 0)]
    pub byzantine: usize,
    /// What Byzantine nodes do: sign-flip, label-flip, gaussian, alie, ipm, mimic.
    #[arg(long, default_value = "sign-flip")]
    pub attack: Attack,
    /// Turn on client-level DP: L2 clipping norm of each update.
    #[arg(long)]
    pub dp_clip: Option<f32>,
    /// DP noise multiplier z (noise std = z * clip).
    #[arg(long, conflicts_with = "dp_epsilon", requires = "dp_clip")]
    pub dp_noise_multiplier: Option<f64>,
    /// DP target epsilon for all rounds; the noise multiplier is solved for it.
    #[arg(long, requires = "dp_clip")]
    pub dp_epsilon: Option<f64>,
    /// DP delta.
    #[arg(long, default_value_t = 1e-5)]
    pub dp_delta: f64,
    /// Where DP noise is added: central (aggregator) or distributed (each node).
    /// Default: distributed under the round protocol, central with --direct.
    #[arg(long, value_parser = ["central", "distributed"])]
    pub dp_placement: Option<String>,
    /// Stop before the round that would spend more than this epsilon.
    #[arg(long, requires = "dp_clip")]
    pub dp_budget: Option<f64>,
    /// Seed of every random choice; the same seed gives the same result.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Folder with the MNIST IDX files.
    #[arg(long, default_value = "data/mnist-10k")]
    pub data: PathBuf,
    /// Output folder for report.json, accuracy.png and model.safetensors.
    #[arg(long, default_value = "sim-out")]
    pub out: PathBuf,
    /// Worker threads for local training and for the protocol work of nodes
    /// busy in the same step (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar (the per-round table is still printed).
    #[arg(long)]
    pub quiet: bool,
    /// Run the old single-process aggregation (no round protocol): needed for
    /// --pre, --prox-mu, --server-opt, central DP noise and omniscient attacks.
    #[arg(long)]
    pub direct: bool,
    /// Securely aggregate updates (SecAgg+ with dropout recovery) within groups.
    #[arg(long)]
    pub secagg: bool,
    /// Participants per aggregation group (default 5 with --secagg, else 1).
    #[arg(long)]
    pub group_size: Option<usize>,
    /// L2 norm every update is clipped to before it leaves its node (without DP).
    #[arg(long, default_value_t = 10.0)]
    pub clip: f32,
    /// Simulated one-way message latency, MS or MIN-MAX milliseconds.
    #[arg(long, default_value = "1-5", value_parser = super::sim_mesh::parse_latency)]
    pub latency_ms: (u64, u64),
    /// Probability that a message is lost.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Node crashes to inject (each node restarts after --down-ms).
    #[arg(long, default_value_t = 0)]
    pub crashes: u32,
    /// Network partitions to inject (a random minority cut off for --down-ms).
    #[arg(long, default_value_t = 0)]
    pub partitions: u32,
    /// How long a crashed node or a partition lasts, in simulated ms.
    #[arg(long, default_value_t = 5_000)]
    pub down_ms: u64,
    /// A round closes with the updates it has after this many simulated ms.
    #[arg(long, default_value_t = 30_000)]
    pub round_deadline_ms: u64,
}

impl SimArgs {
    /// Where the direct simulation adds DP noise (central unless told otherwise).
    pub fn dp_placement(&self) -> &str {
        self.dp_placement.as_deref().unwrap_or("central")
    }

    fn dp_config(&self) -> anyhow::Result<Option<DpConfig>> {
        let Some(clip_norm) = self.dp_clip else {
            return Ok(None);
        };
        let noise = match (self.dp_noise_multiplier, self.dp_epsilon) {
            (Some(z), None) => NoiseLevel::Multiplier(z),
            (None, Some(eps)) => NoiseLevel::TargetEpsilon(eps),
            _ => anyhow::bail!("--dp-clip needs --dp-noise-multiplier or --dp-epsilon"),
        };
        let placement = match self.dp_placement() {
            "distributed" => NoisePlacement::Distributed,
            _ => NoisePlacement::Central,
        };
        Ok(Some(DpConfig {
            clip_norm,
            noise,
            placement,
            delta: self.dp_delta,
            epsilon_budget: self.dp_budget,
        }))
    }

    /// The simulation configuration these flags describe.
    pub fn to_config(&self) -> anyhow::Result<SimConfig> {
        let threads = self.threads.unwrap_or_else(all_cores);
        Ok(SimConfig {
            nodes: self.nodes,
            rounds: self.rounds,
            participants_per_round: self.participants.unwrap_or(self.nodes),
            local: TrainOptions {
                epochs: self.local_epochs,
                batch_size: self.batch_size,
                learning_rate: self.lr,
                proximal_mu: self.prox_mu,
                seed: self.seed,
            },
            model: self.model,
            partition: self.partition,
            rule: self.rule,
            pre: self.pre,
            server: self.server_opt.clone(),
            byzantine: self.byzantine,
            attack: if self.byzantine == 0 {
                Attack::None
            } else {
                self.attack
            },
            dp: self.dp_config()?,
            threads,
            seed: self.seed,
        })
    }
}

/// Runs the simulation.
pub fn run(args: SimArgs) -> anyhow::Result<()> {
    let config = args.to_config()?;
    let mnist = Mnist::load(&args.data).with_context(|| {
        format!(
            "loading MNIST from {} (pass --data DIR)",
            args.data.display()
        )
    })?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating output folder {}", args.out.display()))?;
    if !args.direct {
        return super::sim_mesh::run(&args, &config, mnist);
    }
    let mut sim = Simulation::new(config, &mnist.train, mnist.test)?;
    print_header(&args, &sim);
    let reports = run_rounds(&mut sim, &args).map_err(explain_divergence)?;
    let stopped_by_budget = sim.rounds_done() < args.rounds;
    if stopped_by_budget {
        println!(
            "stopped after round {}: the next round would exceed the privacy budget",
            sim.rounds_done()
        );
    }
    write_outputs(&args, &sim, &reports, stopped_by_budget)
}

fn print_header(args: &SimArgs, sim: &Simulation) {
    let c = sim.config();
    println!(
        "agent-mesh sim: {} nodes ({} Byzantine: {}), {} rounds, model {}, partition {}, rule {} (pre {}), seed {}",
        c.nodes, c.byzantine, c.attack, c.rounds, c.model, c.partition, c.rule, c.pre, c.seed
    );
    if let Some(z) = sim.noise_multiplier() {
        println!(
            "differential privacy: clip {:?}, noise multiplier {z:.4}, {}",
            args.dp_clip,
            args.dp_placement()
        );
    }
    println!(
        "{:>5}  {:>9}  {:>9}  {:>10}  {:>9}  {:>8}",
        "round", "test acc", "test loss", "train loss", "epsilon", "time"
    );
}

/// Runs every round; after each one the outputs are rewritten, so an interrupted
/// run keeps everything up to its last completed round.
fn run_rounds(sim: &mut Simulation, args: &SimArgs) -> anyhow::Result<Vec<RoundReport>> {
    let quiet = args.quiet;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(sim.config().rounds)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} round {pos}/{len} [{elapsed_precise}, eta {eta}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut reports = Vec::new();
    while let Some(r) = sim.run_round()? {
        let line = format!(
            "{:>5}  {:>8.2}%  {:>9.4}  {:>10.4}  {:>9.3}  {:>6.1} s",
            r.round,
            100.0 * r.test_accuracy,
            r.test_loss,
            r.train_loss,
            r.epsilon,
            r.duration_ms as f64 / 1000.0
        );
        if quiet {
            println!("{line}");
        } else {
            bar.println(line);
        }
        bar.set_message(format!("acc {:.2}%", 100.0 * r.test_accuracy));
        bar.inc(1);
        reports.push(r);
        save_outputs(args, sim, &reports, false)?;
    }
    bar.finish_and_clear();
    Ok(reports)
}

fn write_outputs(
    args: &SimArgs,
    sim: &Simulation,
    reports: &[RoundReport],
    stopped_by_budget: bool,
) -> anyhow::Result<()> {
    save_outputs(args, sim, reports, stopped_by_budget)?;
    if let Some(last) = reports.last() {
        println!(
            "final test accuracy {:.2}% after {} rounds",
            100.0 * last.test_accuracy,
            last.round
        );
    }
    println!(
        "wrote {}/report.json, accuracy.png, model.safetensors",
        args.out.display()
    );
    Ok(())
}

/// Writes report.json, accuracy.png and model.safetensors for the rounds so far.
fn save_outputs(
    args: &SimArgs,
    sim: &Simulation,
    reports: &[RoundReport],
    stopped_by_budget: bool,
) -> anyhow::Result<()> {
    let report = report_json(args, sim, reports, stopped_by_budget);
    write_atomically(
        &args.out.join("report.json"),
        serde_json::to_vec_pretty(&report)?.as_slice(),
    )?;
    plot::accuracy_and_loss(&args.out.join("accuracy.png"), reports)?;
    let metadata = HashMap::from([
        ("model".to_string(), sim.config().model.to_string()),
        ("rounds".to_string(), sim.rounds_done().to_string()),
        ("seed".to_string(), sim.config().seed.to_string()),
    ]);
    store::save(
        sim.global_model(),
        &args.out.join("model.safetensors"),
        metadata,
    )?;
    Ok(())
}

fn report_json(
    args: &SimArgs,
    sim: &Simulation,
    reports: &[RoundReport],
    stopped_by_budget: bool,
) -> serde_json::Value {
    let c = sim.config();
    serde_json::json!({
        "config": {
            "nodes": c.nodes, "rounds": c.rounds, "participants_per_round": c.participants_per_round,
            "local_epochs": c.local.epochs, "batch_size": c.local.batch_size,
            "learning_rate": c.local.learning_rate, "proximal_mu": c.local.proximal_mu,
            "model": c.model.to_string(), "partition": c.partition.to_string(),
            "rule": c.rule.to_string(), "pre_aggregation": format!("{:#}", c.pre),
            "server_optimizer": format!("{:?}", c.server.kind()),
            "byzantine": c.byzantine, "byzantine_nodes": sim.byzantine_nodes(), "attack": c.attack.to_string(),
            "dp_clip": args.dp_clip, "dp_noise_multiplier": sim.noise_multiplier(),
            "dp_target_epsilon": args.dp_epsilon, "dp_delta": args.dp_delta,
            "dp_placement": args.dp_clip.map(|_| args.dp_placement()), "dp_budget": args.dp_budget,
            "seed": c.seed, "data": args.data.display().to_string(),
        },
        "rounds": reports,
        "final_test_accuracy": reports.last().map(|r| r.test_accuracy),
        "stopped_by_privacy_budget": stopped_by_budget,
    })
}

/// Writes beside the target, then renames: a crash never leaves half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Adds the likely causes to a divergence: the global model was destroyed.
fn explain_divergence(err: anyhow::Error) -> anyhow::Error {
    let diverged = matches!(
        err.downcast_ref::<SimError>(),
        Some(SimError::Participant(ParticipantError::Model {
            source: ModelError::Diverged { .. },
            ..
        }))
    );
    if !diverged {
        return err;
    }
    err.context(
        "the global model was destroyed: too much DP noise for this many nodes and parameters \
         (client-level DP needs many nodes or a small model), an attack the rule does not stop, \
         or a learning rate too high; the rounds completed so far are in the output folder",
    )
}

/// Worker threads when none are asked for: one per core this process may use.
pub fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
