//! `agent-mesh bench round`: what the round protocol costs on top of local
//! training. Every simulated node runs the real engine (selection, model
//! fetch, SecAgg+ masking and unmasking, signatures, group and final
//! aggregation, agreement, commit); the table shows wall time per round minus
//! the time spent in local training and in the simulator's own work
//! (evaluating committed models on the test set and checking invariants,
//! which no real node does; the final aggregators' own evaluation of each
//! new model stays in the overhead).
//! The model is an MLP with 100,010 parameters (288 MNIST pixels, two hidden
//! layers of 200, 10 classes).

use clap::Args;
use comfy_table::Table;
use mesh_consensus::command::{JobSpec, TrainingSpec};
use mesh_federated::data::partition::Partition;
use mesh_federated::data::{DataSource, Dataset};
use mesh_round::sim::{Faults, MeshSim, MeshSimConfig};

/// Pixels kept per image: a 12 x 24 band through the middle (288 features).
const FEATURES: std::ops::Range<usize> = 280..568;

/// The flags every benchmark over the mesh simulator takes.
#[derive(Debug, Args)]
pub struct SimRunArgs {
    /// MNIST data: builtin:mnist-10k (built into the binary) or a folder with the IDX files.
    #[arg(long, default_value = "builtin:mnist-10k")]
    pub data: DataSource,
    /// Worker threads: nodes' training and, when several nodes have messages
    /// in the same step, their protocol work run in parallel (a real mesh
    /// runs every node at once). 1 adds up every node's work one after another.
    #[arg(long, default_value_t = super::sim::all_cores())]
    pub threads: usize,
    /// Seed of the run (the simulation and any synthetic input).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl SimRunArgs {
    /// Refuses flags no run can use.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.threads >= 1, "--threads must be at least 1");
        Ok(())
    }

    /// The MNIST training set and the first 1,000 test images, cut to the
    /// band the benchmarks' model reads.
    pub fn load_band(&self) -> anyhow::Result<(Dataset, Dataset)> {
        let mnist = super::sim::load_data(&self.data, &Default::default())?;
        let test = mnist.test.subset(&(0..1000).collect::<Vec<_>>());
        Ok((crop(&mnist.train), crop(&test)))
    }

    /// A simulation of `nodes` running `spec` with these flags: IID shards,
    /// every node honest, no faults, at most one simulated hour.
    pub fn mesh_config(&self, nodes: usize, spec: JobSpec) -> MeshSimConfig {
        MeshSimConfig {
            nodes,
            spec,
            partition: Partition::Iid,
            byzantine: Vec::new(),
            quarantined: Vec::new(),
            faults: Faults::default(),
            threads: self.threads,
            seed: self.seed,
            time_limit_ms: 3_600_000,
            initial_weights: None,
        }
    }
}

/// Flags of `agent-mesh bench round`.
#[derive(Debug, Args)]
pub struct RoundArgs {
    /// Mesh sizes to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [10, 100])]
    pub nodes: Vec<usize>,
    /// Rounds per mesh; the table shows the mean per round.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Send plain signed updates instead of securely aggregating them.
    #[arg(long)]
    pub plain: bool,
    /// Data, threads, seed and output format.
    #[command(flatten)]
    pub run: super::bench_round::SimRunArgs,
}

/// The MNIST band the benchmark's model reads (also `bench cache`'s).
pub(super) fn crop(d: &Dataset) -> Dataset {
    let width = FEATURES.len();
    let mut features = Vec::with_capacity(d.len() * width);
    for i in 0..d.len() {
        features.extend_from_slice(&d.row(i)[FEATURES]);
    }
    Dataset {
        features,
        labels: d.labels.clone(),
        feature_count: width,
        image_shape: None,
        ..d.empty_like()
    }
}

/// The benchmark's job: the MLP, every node each round (also `bench cache`'s).
pub(super) fn spec(nodes: usize, rounds: u32, secagg: bool, seed: u64) -> JobSpec {
    JobSpec {
        model: mesh_spec::ModelSpec::Preset(mesh_spec::Preset::Mlp),
        rounds,
        participants_per_round: nodes as u32,
        rule_name: "fedavg".into(),
        pre_aggregation: "none".into(),
        server_optimizer: "sgd".into(),
        byzantine_count: 0,
        secagg,
        dp_budget: None,
        training: TrainingSpec {
            epochs: 1,
            batch_size: 32,
            learning_rate: 0.05,
            seed,
            group_size: if secagg { 10 } else { 1 },
            ..TrainingSpec::default()
        },
        initial_model: None,
    }
}

/// Runs the benchmark and prints the table.
pub fn run(args: RoundArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.nodes.iter().all(|n| *n >= 2),
        "--nodes values must be at least 2"
    );
    args.run.check()?;
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    let (train, test) = args.run.load_band()?;
    let mut table = Table::new();
    table.set_header([
        "nodes",
        "secagg",
        "rounds",
        "wall/round ms",
        "training/round ms",
        "simulator/round ms",
        "overhead/round ms",
        "messages/round",
        "MiB sent/round",
        "peak cache MiB",
    ]);
    let mut rows = Vec::new();
    for &nodes in &args.nodes {
        let config = args
            .run
            .mesh_config(nodes, spec(nodes, args.rounds, !args.plain, args.run.seed));
        let outcome = MeshSim::new(config, &train, test.clone())?.run()?;
        let rounds = outcome.rounds.len().max(1) as f64;
        let wall = outcome.total_wall_ms as f64 / rounds;
        let training = outcome.training_wall_ms as f64 / rounds;
        let simulator_ms = outcome.evaluation_wall_ms + outcome.checking_wall_ms;
        let overhead = outcome
            .total_wall_ms
            .saturating_sub(outcome.training_wall_ms + simulator_ms) as f64
            / rounds;
        let simulator = simulator_ms as f64 / rounds;
        let row = serde_json::json!({
            "nodes": nodes, "secagg": !args.plain, "rounds": outcome.rounds.len(),
            "wall_ms_per_round": wall, "training_ms_per_round": training,
            "simulator_ms_per_round": simulator, "overhead_ms_per_round": overhead,
            "messages_per_round": outcome.stats.messages_sent() as f64 / rounds,
            "mib_per_round": outcome.stats.sent_bytes as f64 / rounds / (1 << 20) as f64,
            "peak_cache_mib": outcome.cache_bytes_max as f64 / (1 << 20) as f64,
            "final_accuracy": outcome.rounds.last().map(|r| r.test_accuracy),
        });
        table.add_row(vec![
            nodes.to_string(),
            (!args.plain).to_string(),
            outcome.rounds.len().to_string(),
            format!("{wall:.1}"),
            format!("{training:.1}"),
            format!("{simulator:.1}"),
            format!("{overhead:.1}"),
            format!("{:.0}", row["messages_per_round"].as_f64().unwrap_or(0.0)),
            format!("{:.2}", row["mib_per_round"].as_f64().unwrap_or(0.0)),
            format!("{:.2}", row["peak_cache_mib"].as_f64().unwrap_or(0.0)),
        ]);
        rows.push(row);
    }
    if args.run.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "round protocol overhead, MLP of 100,010 parameters, one process, {} worker thread(s)\n{table}",
            args.run.threads
        );
    }
    Ok(())
}
