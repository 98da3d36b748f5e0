//! `agent-mesh sim`: an in-process federation training on MNIST (or on the
//! user's own tables or image folders with `--data DIR`), every simulated
//! node running the node's own round engine (`mesh-round`) over a simulated
//! network ([`super::sim_mesh`] runs it and writes the outputs).
//!
//! The flags describe one job, built into the same [`JobSpec`] a deployed
//! mesh commits and checked by the same [`JobSpecCheck::check`]
//! `POST /v1/jobs` calls, so a value the node would refuse is refused here
//! with the same message.

use anyhow::Context;
use clap::Args;
use mesh_consensus::command::{DpBudget, JobSpec, TrainingSpec};
use mesh_federated::aggregate::{PreAggregation, Rule, ServerOptimizer};
use mesh_federated::attack::Attack;
use mesh_federated::data::partition::Partition;
use mesh_federated::data::table::{MissingValues, TableOptions};
use mesh_federated::data::{normalize, DataSource, Dataset, LoadOptions, LoadedData};
use mesh_federated::privacy::noise_multiplier_for_epsilon;
use mesh_round::job::JobSpecCheck;
use mesh_round::protocol::Conduct;
use mesh_round::sim::{Faults, MeshSimConfig};
use mesh_spec::{DataSchema, ModelSpec};
use std::path::{Path, PathBuf};

/// Flags of `agent-mesh sim`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Examples:\n  agent-mesh sim\n  agent-mesh sim --byzantine 2 --attack alie --rule trimmed-mean --pre nnm\n  agent-mesh sim --model logistic --nodes 100 --local-epochs 1 --lr 0.1 --dp-clip 0.5 --dp-epsilon 8 --secagg\n  agent-mesh sim --nodes 100 --partition dirichlet:0.5 --rounds 30\n  agent-mesh sim --data data/breast-cancer --rounds 20\n  agent-mesh sim --data data/diabetes --label target --task regression --model logistic\n  agent-mesh sim --data data/digits-png --model small-cnn"
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
    /// Model: a preset (logistic, mlp, cnn, small-cnn) or a JSON/TOML file in
    /// the layer language (docs/data-and-models.md). Default: cnn for images of at
    /// least 12x12, small-cnn for smaller ones, mlp for tables.
    #[arg(long)]
    pub model: Option<String>,
    /// Starting weights to fine-tune from: a safetensors file with exactly the
    /// model's tensors (`agent-mesh model get` writes one; PyTorch's
    /// `safetensors.torch.save_file` too). Default: the model's seeded init.
    #[arg(long, value_name = "FILE")]
    pub init: Option<std::path::PathBuf>,
    /// The label (or regression target) column of a table.
    #[arg(long, default_value = "label")]
    pub label: String,
    /// What a table's label is: classification (class names or integers)
    /// or regression (a number).
    #[arg(long, default_value = "classification", value_parser = ["classification", "regression"])]
    pub task: String,
    /// Missing cells in a table: refuse (name the row and column), mean or zero.
    #[arg(long, default_value = "refuse")]
    pub missing: MissingValues,
    /// Standardization of table features: local (each node with its own
    /// training statistics, which never leave it) or job (the statistics of
    /// the whole training set, written into the job as an operator would).
    #[arg(long, default_value = "local", value_parser = ["local", "job"])]
    pub normalize: String,
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
    /// Turn on client-level DP: L2 clipping norm of each update. Every value an
    /// aggregator sees in the clear carries the full calibrated noise: a group
    /// sum with --secagg, each single update without it (local DP).
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
    /// Stop before the round that would spend more than this epsilon.
    #[arg(long, requires = "dp_clip")]
    pub dp_budget: Option<f64>,
    /// Seed of every random choice; the same seed gives the same result.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Data: builtin:mnist-10k (the 10,000-digit subset built into the
    /// binary, needs no files), or a folder holding train.csv + test.csv (or
    /// .parquet), train/ + test/ image folders (root/<class>/<file>), or the
    /// four MNIST IDX files. The training rows are split across the nodes.
    #[arg(long, default_value = "builtin:mnist-10k")]
    pub data: DataSource,
    /// SHA-256 of the data's files, set when they are loaded (for the report).
    #[arg(skip)]
    pub data_sha256: Option<String>,
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
    /// Securely aggregate updates (SecAgg+ with dropout recovery) within groups.
    #[arg(long)]
    pub secagg: bool,
    /// Most participants per aggregation group (default with --secagg: 5, or
    /// the whole round with DP, where every group sum carries the full noise
    /// and fewer groups cost less accuracy; else 1); with --secagg groups
    /// shrink (to 4 at least) until the rule has the group results it needs
    /// to tolerate --byzantine.
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
    /// The group size asked for (the planner may shrink it with --secagg).
    fn group_size(&self, participants: usize) -> usize {
        let dp = self.dp_clip.is_some();
        self.group_size.unwrap_or(super::job::default_group_size(
            self.secagg,
            dp,
            participants,
        ))
    }

    /// How `--data` is read.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            table: TableOptions {
                label: self.label.clone(),
                regression: self.task == "regression",
                missing: self.missing,
                ..TableOptions::default()
            },
            ..LoadOptions::default()
        }
    }

    /// Reads `--data` and remembers its digest for the report.
    pub fn load_data(&mut self) -> anyhow::Result<LoadedData> {
        let loaded = load_data(&self.data, &self.load_options())?;
        self.data_sha256 = Some(loaded.sha256_hex.clone());
        Ok(loaded)
    }

    /// The name the simulated nodes bind their data under.
    fn dataset_name(&self) -> String {
        match &self.data {
            DataSource::Builtin(_) => "mnist".into(),
            DataSource::Dir(dir) => dir
                .file_name()
                .map_or("data".into(), |n| n.to_string_lossy().into_owned()),
        }
    }

    /// The job's schema: the training set's, with its statistics when
    /// `--normalize job`.
    pub fn schema(&self, train: &Dataset) -> DataSchema {
        let mut schema = train.schema();
        if self.normalize == "job" && train.needs_standardizing {
            schema.normalization = Some(normalize::fit(train));
        }
        schema
    }

    /// `--model`: a preset name, a JSON or TOML file, or the default for the data.
    pub fn model_spec(&self, schema: &DataSchema) -> anyhow::Result<ModelSpec> {
        let Some(text) = &self.model else {
            return Ok(ModelSpec::default_for(&schema.input));
        };
        if let Ok(spec) = text.parse::<ModelSpec>() {
            return Ok(spec);
        }
        read_model_file(Path::new(text))
    }

    /// The job these flags describe for data like `train`, checked as the
    /// node checks a submitted job.
    pub fn job_spec(&self, train: &Dataset) -> anyhow::Result<JobSpec> {
        let participants = self.participants.unwrap_or(self.nodes);
        anyhow::ensure!(
            (2..=self.nodes).contains(&participants),
            "--participants must be in 2..={} (the number of nodes), got {participants}",
            self.nodes
        );
        let (noise_multiplier, dp_budget) = self.dp_settings(participants)?;
        let schema = self.schema(train);
        let spec = JobSpec {
            model: self.model_spec(&schema)?,
            rounds: u32::try_from(self.rounds).context("--rounds is too large")?,
            participants_per_round: u32::try_from(participants)
                .context("--participants is too large")?,
            rule_name: format!("{:#}", self.rule),
            pre_aggregation: format!("{:#}", self.pre),
            server_optimizer: format!("{:#}", self.server_opt),
            byzantine_count: u32::try_from(self.byzantine).context("--byzantine is too large")?,
            secagg: self.secagg,
            dp_budget,
            training: TrainingSpec {
                dataset: self.dataset_name(),
                schema: Some(schema),
                epochs: u32::try_from(self.local_epochs).context("--local-epochs is too large")?,
                batch_size: u32::try_from(self.batch_size).context("--batch-size is too large")?,
                learning_rate: self.lr,
                proximal_mu: self.prox_mu,
                seed: self.seed,
                round_deadline_ms: self.round_deadline_ms,
                group_size: u32::try_from(self.group_size(participants))
                    .context("--group-size is too large")?,
                clip_norm: self.dp_clip.unwrap_or(self.clip),
                noise_multiplier,
                sampling_rate: participants as f64 / self.nodes as f64,
            },
            initial_model: None,
        };
        spec.check()
            .map_err(|e| anyhow::anyhow!("{}", flag_words(&e.to_string())))?;
        Ok(spec)
    }

    /// The noise multiplier and budget of `--dp-*` (none without `--dp-clip`).
    fn dp_settings(&self, participants: usize) -> anyhow::Result<(f64, Option<DpBudget>)> {
        if self.dp_clip.is_none() {
            return Ok((0.0, None));
        }
        let q = participants as f64 / self.nodes as f64;
        let (z, epsilon) = match (self.dp_noise_multiplier, self.dp_epsilon) {
            (Some(z), None) => (z, self.dp_budget),
            (None, Some(eps)) => (
                noise_multiplier_for_epsilon(q, self.rounds, self.dp_delta, eps)?,
                Some(self.dp_budget.unwrap_or(eps)),
            ),
            _ => anyhow::bail!("--dp-clip needs --dp-noise-multiplier or --dp-epsilon"),
        };
        let epsilon_micros = epsilon.map_or(u64::MAX / 4, |e| (e * 1e6) as u64);
        let budget = DpBudget {
            epsilon_micros,
            delta: self.dp_delta,
        };
        Ok((z, Some(budget)))
    }

    /// The simulated mesh: the job, the data split, the Byzantine nodes and the faults.
    pub fn mesh_config(&self, train: &Dataset) -> anyhow::Result<MeshSimConfig> {
        let spec = self.job_spec(train)?;
        let faults = Faults {
            latency_min_ms: self.latency_ms.0,
            latency_max_ms: self.latency_ms.1,
            loss: self.loss,
            crashes: self.crashes,
            down_ms: self.down_ms,
            partitions: self.partitions,
            window_ms: self.round_deadline_ms.saturating_mul(self.rounds),
        };
        faults.validate().map_err(anyhow::Error::msg)?;
        Ok(MeshSimConfig {
            nodes: self.nodes,
            byzantine: self.pick_byzantine(spec.participants_per_round as usize),
            spec,
            partition: self.partition,
            quarantined: Vec::new(),
            faults,
            threads: self.threads.unwrap_or_else(all_cores),
            seed: self.seed,
            time_limit_ms: self
                .round_deadline_ms
                .saturating_mul(self.rounds)
                .saturating_mul(4),
            initial_weights: self
                .init
                .as_deref()
                .map(super::weights::read_init_file)
                .transpose()?,
        })
    }

    /// The Byzantine nodes, a seeded choice, each running `--attack`.
    fn pick_byzantine(&self, participants: usize) -> Vec<(usize, Conduct)> {
        let attack = self.attack.resolve(participants, self.byzantine);
        self.byzantine_nodes()
            .into_iter()
            .map(|n| (n, Conduct::Byzantine(attack)))
            .collect()
    }

    /// Indices of the Byzantine nodes (a seeded choice of `--byzantine` nodes).
    pub fn byzantine_nodes(&self) -> Vec<usize> {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let mut order: Vec<usize> = (0..self.nodes).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
            self.seed ^ 0xB42,
        ));
        order.truncate(self.byzantine);
        order
    }

    /// The attack the Byzantine nodes run (none without `--byzantine`).
    pub fn attack(&self) -> Attack {
        if self.byzantine == 0 {
            Attack::None
        } else {
            self.attack
        }
    }
}

/// Rewords a job-spec message in the flags' terms.
fn flag_words(message: &str) -> String {
    [
        ("byzantine_count", "--byzantine"),
        ("group_size", "--group-size"),
        ("secure aggregation off", "--secagg off"),
        ("rule:", "--rule:"),
        ("pre_aggregation:", "--pre:"),
        ("server_optimizer:", "--server-opt:"),
        ("model:", "--model:"),
        ("training.schema:", "--data:"),
        ("add participants", "add nodes or --participants"),
    ]
    .iter()
    .fold(message.to_string(), |text, (from, to)| {
        text.replace(from, to)
    })
}

/// Runs the simulation.
pub fn run(mut args: SimArgs) -> anyhow::Result<()> {
    let data = args.load_data()?;
    let config = args.mesh_config(&data.train)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating output folder {}", args.out.display()))?;
    super::sim_mesh::run(&args, config, data)
}

/// Loads the train and test sets `source` names, built in or from a folder.
pub fn load_data(source: &DataSource, options: &LoadOptions) -> anyhow::Result<LoadedData> {
    source.load(options).with_context(|| {
        format!("loading --data {source} (a folder with train.csv + test.csv, train/ + test/ image folders, or MNIST IDX files; or builtin:mnist-10k)")
    })
}

/// A model spec from a JSON or TOML file (`{"layers": [...]}` or `layers = [...]`).
pub fn read_model_file(path: &Path) -> anyhow::Result<ModelSpec> {
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "--model {}: not a preset (logistic, mlp, cnn, small-cnn) nor a readable file",
            path.display()
        )
    })?;
    anyhow::ensure!(
        meta.len() <= 1 << 20,
        "--model {}: over 1 MiB",
        path.display()
    );
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let spec = if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str(&text).with_context(|| format!("{}: not a model spec", path.display()))?
    } else {
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a model spec", path.display()))?
    };
    Ok(spec)
}

/// Writes beside the target, then renames: a crash never leaves half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Worker threads when none are asked for: one per core this process may use.
pub fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
