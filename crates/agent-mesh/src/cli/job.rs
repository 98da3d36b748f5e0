//! `agent-mesh job submit | list | status | cancel` and `agent-mesh model get`:
//! the job API of a running node, with a token from `agent-mesh token`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use comfy_table::Table;
use mesh_consensus::command::{
    parse_model_hash, DpBudget, InitialModel, JobSpec, NodeId, TrainingSpec,
};
use mesh_federated::model::store;
use mesh_federated::privacy::noise_multiplier_for_epsilon;
use mesh_round::job::{JobSpecCheck, PrivacyMode};
use serde_json::Value;

use super::api_client::{blocking_client, TlsArgs};

/// Where the node is and who asks.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Base URL of the node's API (https://; plain http:// only to loopback).
    #[arg(long, value_name = "URL", default_value = "https://127.0.0.1:8080")]
    pub api: String,
    /// Bearer token (`agent-mesh token`); also read from AGENT_MESH_TOKEN.
    #[arg(long, env = "AGENT_MESH_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Request timeout in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout_s: u64,
    /// How the node's HTTPS certificate is verified.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Subcommands of `agent-mesh job`.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Submit a training job (committed by the committee; rounds start by themselves).
    Submit(Box<SubmitArgs>),
    /// List the mesh's jobs.
    List(ApiArgs),
    /// One job and its rounds; --wait blocks until it ends.
    Status(StatusArgs),
    /// Stop a job.
    Cancel(JobRef),
}

/// Flags of `agent-mesh job submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The job's id (never reused).
    #[arg(long)]
    id: String,
    /// Model: a preset (logistic, mlp, cnn, small-cnn) or a JSON/TOML file in
    /// the layer language (docs/data-and-models.md), or a learner's layout file
    /// (`{"learner": {"parameters": [...]}}`).
    #[arg(long, default_value = "cnn")]
    model: String,
    /// Dataset name every node binds to its own private data.
    #[arg(long, default_value = "mnist")]
    data: String,
    /// The data schema every participant's data must match, as a JSON file
    /// (`{"input": {"table": {"features": 30}}, "task": {"classification":
    /// {"classes": ["0", "1"]}}}`). Without it (and without --schema-from),
    /// nodes use their data as it is.
    #[arg(long, conflicts_with = "schema_from")]
    schema: Option<std::path::PathBuf>,
    /// Derive the schema from a local copy of the data (a folder as
    /// `sim --data` takes it); only its shape and class names go in the job.
    #[arg(long)]
    schema_from: Option<mesh_federated::data::DataSource>,
    /// With --schema-from: the label (or target) column of a table.
    #[arg(long, default_value = "label")]
    label: String,
    /// With --schema-from: classification or regression.
    #[arg(long, default_value = "classification", value_parser = ["classification", "regression"])]
    task: String,
    /// Rounds to run.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Participants per round.
    #[arg(long, default_value_t = 5)]
    participants: u32,
    /// Robust rule across group results: fedavg, median, trimmed-mean, krum,
    /// multi-krum, bulyan, geomed, cclip (optionally `name:key=value,...`).
    #[arg(long, default_value = "fedavg")]
    rule: String,
    /// Pre-aggregation before the rule: none, nnm, bucketing[:size=S].
    #[arg(long, default_value = "none")]
    pre: String,
    /// Server optimizer: sgd, fedadam, fedyogi (optionally `:lr=..`).
    #[arg(long, default_value = "sgd")]
    server_opt: String,
    /// Byzantine participants the rule must tolerate.
    #[arg(long, default_value_t = 0)]
    byzantine: u32,
    /// Securely aggregate updates within groups.
    #[arg(long)]
    secagg: bool,
    /// Participants per group (default with --secagg: 5, or the whole round
    /// with DP, where every group sum carries the full noise and fewer groups
    /// cost less accuracy; else 1).
    #[arg(long)]
    group_size: Option<u32>,
    /// Local epochs per round.
    #[arg(long, default_value_t = 1)]
    epochs: u32,
    /// Local mini-batch size.
    #[arg(long, default_value_t = 32)]
    batch_size: u32,
    /// Local learning rate.
    #[arg(long, default_value_t = 0.05)]
    lr: f32,
    /// L2 clipping norm of every update.
    #[arg(long, default_value_t = 10.0)]
    clip: f32,
    /// Total DP epsilon budget; the noise multiplier is solved for it.
    #[arg(long)]
    dp_epsilon: Option<f64>,
    /// DP delta.
    #[arg(long, default_value_t = 1e-5)]
    dp_delta: f64,
    /// Nodes the participants are drawn from (sets the accountant's sampling rate).
    #[arg(long)]
    population: Option<u32>,
    /// Round deadline in seconds.
    #[arg(long, default_value_t = 300)]
    deadline_s: u64,
    /// Seed of the initial model and of every seeded choice.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Starting weights to fine-tune from: a safetensors file with exactly the
    /// model's tensors (`agent-mesh model get` writes one; PyTorch's
    /// `safetensors.torch.save_file` too). It is uploaded to the --api node
    /// first, which then serves it to the round's participants.
    #[arg(long, value_name = "FILE")]
    init: Option<PathBuf>,
}

/// A job by id.
#[derive(Debug, Args)]
pub struct JobRef {
    #[command(flatten)]
    api: ApiArgs,
    /// The job's id.
    id: String,
}

/// Flags of `agent-mesh job status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    job: JobRef,
    /// Wait until the job ends, printing each new round.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 3600)]
    wait_s: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Flags of `agent-mesh model get`.
#[derive(Debug, Args)]
pub struct ModelGetArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The job.
    #[arg(long)]
    job: String,
    /// Round from 0 (default: the latest completed).
    #[arg(long)]
    round: Option<u32>,
    /// Output file (safetensors).
    #[arg(long, default_value = "model.safetensors")]
    out: PathBuf,
}

/// Subcommands of `agent-mesh model`.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Download a round's global model as safetensors.
    Get(ModelGetArgs),
}

fn client(api: &ApiArgs) -> anyhow::Result<reqwest::blocking::Client> {
    let timeout = Duration::from_secs(api.timeout_s.max(1));
    blocking_client(&api.api, &api.tls, timeout, true)
}

fn call(
    api: &ApiArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<reqwest::blocking::Response> {
    let url = format!("{}{path}", api.api.trim_end_matches('/'));
    let mut request = client(api)?
        .request(method.clone(), &url)
        .bearer_auth(api.token.trim());
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().with_context(|| format!("{method} {url}"))
}

/// Sends a request and reads a JSON answer; a non-2xx status is an error with the node's message.
pub(super) fn json(
    api: &ApiArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    answer_json(path, call(api, method, path, body)?)
}

/// The JSON of a 2xx answer to `path`; any other status is an error with the node's message.
fn answer_json(path: &str, response: reqwest::blocking::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let text = response.text().context("reading the answer")?;
    if !status.is_success() {
        bail!("{path}: {status}: {}", text.trim());
    }
    serde_json::from_str(&text).with_context(|| format!("{path}: answer is not JSON"))
}

impl SubmitArgs {
    /// `--schema FILE`, or the schema of the data `--schema-from` names.
    fn data_schema(&self) -> anyhow::Result<Option<mesh_spec::DataSchema>> {
        if let Some(path) = &self.schema {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --schema {}", path.display()))?;
            let schema: mesh_spec::DataSchema = serde_json::from_str(&text)
                .with_context(|| format!("--schema {}: not a data schema", path.display()))?;
            return Ok(Some(schema));
        }
        let Some(source) = &self.schema_from else {
            return Ok(None);
        };
        let options = mesh_federated::data::LoadOptions {
            table: mesh_federated::data::table::TableOptions {
                label: self.label.clone(),
                regression: self.task == "regression",
                ..Default::default()
            },
            ..Default::default()
        };
        let data = super::sim::load_data(source, &options)?;
        Ok(Some(data.train.schema()))
    }

    fn spec(&self) -> anyhow::Result<JobSpec> {
        let population = self.population.unwrap_or(self.participants).max(1);
        let sampling_rate = (f64::from(self.participants) / f64::from(population)).min(1.0);
        let (noise_multiplier, dp_budget) = match self.dp_epsilon {
            Some(eps) => (
                noise_multiplier_for_epsilon(
                    sampling_rate,
                    u64::from(self.rounds),
                    self.dp_delta,
                    eps,
                )?,
                Some(DpBudget {
                    epsilon_micros: (eps * 1e6) as u64,
                    delta: self.dp_delta,
                }),
            ),
            None => (0.0, None),
        };
        let model = match self.model.parse::<mesh_spec::ModelSpec>() {
            Ok(spec) => spec,
            Err(_) => super::sim::read_model_file(std::path::Path::new(&self.model))?,
        };
        Ok(JobSpec {
            model,
            rounds: self.rounds,
            participants_per_round: self.participants,
            rule_name: self.rule.clone(),
            pre_aggregation: self.pre.clone(),
            server_optimizer: self.server_opt.clone(),
            byzantine_count: self.byzantine,
            secagg: self.secagg,
            dp_budget,
            training: TrainingSpec {
                dataset: self.data.clone(),
                schema: self.data_schema()?,
                epochs: self.epochs,
                batch_size: self.batch_size,
                learning_rate: self.lr,
                proximal_mu: 0.0,
                seed: self.seed,
                round_deadline_ms: self.deadline_s.saturating_mul(1000),
                group_size: self.group_size.unwrap_or(default_group_size(
                    self.secagg,
                    self.dp_epsilon.is_some(),
                    self.participants as usize,
                ) as u32),
                clip_norm: self.clip,
                noise_multiplier,
                sampling_rate,
            },
            initial_model: None,
        })
    }
}

/// The group size when none is asked for: one participant a group without
/// secure aggregation; with it, groups of 5, or with DP the whole round (each
/// group sum carries the full noise, so `G` groups put `sqrt(G)` times the
/// noise of one sum into the model; the planner still shrinks groups for a
/// robust rule's inputs).
pub fn default_group_size(secagg: bool, dp: bool, participants: usize) -> usize {
    match (secagg, dp) {
        (false, _) => 1,
        (true, false) => 5,
        (true, true) => participants.max(1),
    }
}

/// Runs a job subcommand.
pub fn run(cmd: JobCommand) -> anyhow::Result<()> {
    match cmd {
        JobCommand::Submit(args) => {
            let spec = args.spec()?;
            // Refused here, a spec never costs the mesh a request or a log entry.
            spec.check_bounds()?;
            // The node runs the same check; refusing here saves the round trip.
            let job = spec
                .check()
                .map_err(|e| anyhow::anyhow!("job {} refused: {e}", args.id))?;
            if job.privacy == PrivacyMode::Local {
                println!("privacy: {} (add --secagg for distributed DP)", job.privacy);
            }
            let mut spec = spec;
            if let Some(path) = &args.init {
                spec.initial_model = Some(upload_weights(&args.api, path, &spec)?);
            }
            let body = serde_json::json!({ "job": args.id, "spec": spec });
            let commit = json(&args.api, reqwest::Method::POST, "/v1/jobs", Some(body))?;
            println!("job {} submitted (log index {})", args.id, commit["index"]);
            Ok(())
        }
        JobCommand::List(api) => {
            let jobs = json(&api, reqwest::Method::GET, "/v1/jobs", None)?;
            let mut table = Table::new();
            table.set_header(COLUMNS);
            for j in jobs.as_array().into_iter().flatten() {
                table.add_row(row(j));
            }
            println!("{table}");
            Ok(())
        }
        JobCommand::Status(args) => status(&args),
        JobCommand::Cancel(job) => {
            let path = format!("/v1/jobs/{}/cancel", job.id);
            let commit = json(&job.api, reqwest::Method::POST, &path, None)?;
            println!("job {} cancelled (log index {})", job.id, commit["index"]);
            Ok(())
        }
    }
}

/// Checks a starting-weights file against the job's model (where its shapes
/// are known here) and uploads it to the node, which pins it.
fn upload_weights(api: &ApiArgs, path: &Path, spec: &JobSpec) -> anyhow::Result<InitialModel> {
    let bytes = super::weights::read_init_file(path)?;
    if let Ok(layout) = spec.model.layout(spec.training.schema.as_ref()) {
        store::weights_for_layout(&bytes, &layout)
            .with_context(|| format!("--init {}", path.display()))?;
    }
    let url = format!("{}/v1/models", api.api.trim_end_matches('/'));
    let response = client(api)?
        .post(&url)
        .bearer_auth(api.token.trim())
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .with_context(|| format!("POST {url}"))?;
    let answer = answer_json("/v1/models", response)?;
    let (Some(hash), Some(holder)) = (answer["hash"].as_str(), answer["holder"].as_str()) else {
        bail!("/v1/models: answer lacks hash or holder: {answer}");
    };
    println!("starting weights {hash} uploaded to {holder}");
    Ok(InitialModel {
        hash: parse_model_hash(hash).map_err(anyhow::Error::msg)?,
        holders: vec![NodeId(holder.to_string())],
    })
}

fn row(j: &Value) -> Vec<String> {
    vec![
        j["job"].as_str().unwrap_or("").to_string(),
        j["status"].as_str().unwrap_or("").to_string(),
        format!("{}/{}", j["rounds_completed"], j["rounds"]),
        j["rounds_aborted"].to_string(),
        match (j["accuracy"].as_f64(), j["loss"].as_f64()) {
            (Some(a), _) => format!("{:.2}%", 100.0 * a),
            (None, Some(mse)) => format!("mse {mse:.4}"),
            (None, None) => "-".into(),
        },
        format!("{:.3}", j["epsilon_spent"].as_f64().unwrap_or(0.0)),
        j["model_hash"]
            .as_str()
            .map_or("-".into(), |h| h.chars().take(12).collect()),
        j["privacy"].as_str().unwrap_or("-").to_string(),
    ]
}

/// Column names of [`row`].
const COLUMNS: [&str; 8] = [
    "job", "status", "rounds", "aborted", "accuracy", "epsilon", "model", "privacy",
];

fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let path = format!("/v1/jobs/{}", args.job.id);
    let started = Instant::now();
    let mut shown = 0;
    loop {
        let job = json(&args.job.api, reqwest::Method::GET, &path, None);
        match (&job, args.wait) {
            (Ok(j), _) => {
                let done = j["rounds_completed"].as_u64().unwrap_or(0);
                if args.wait && !args.json && done > shown {
                    println!("{}", row(j).join("  "));
                    shown = done;
                }
                let ended = matches!(
                    j["status"].as_str(),
                    Some("Completed" | "BudgetExhausted" | "Cancelled")
                );
                if !args.wait || ended {
                    if args.json {
                        println!("{}", serde_json::to_string_pretty(j)?);
                    } else {
                        let mut table = Table::new();
                        table.set_header(COLUMNS);
                        table.add_row(row(j));
                        println!("{table}");
                        for reason in j["declined"].as_array().into_iter().flatten() {
                            println!("declined: {}", reason.as_str().unwrap_or_default());
                        }
                    }
                    return Ok(());
                }
            }
            (Err(err), false) => bail!("{err:#}"),
            (Err(_), true) => {}
        }
        if started.elapsed() > Duration::from_secs(args.wait_s) {
            bail!("job {} did not end within {} s", args.job.id, args.wait_s);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The parameter names and shapes of a job's model: the learner's layout, or
/// the layers planned for the job's schema (MNIST's when it has none, as
/// jobs without a schema run on MNIST-shaped data).
fn model_layout(spec: &JobSpec) -> anyhow::Result<Vec<mesh_federated::model::ParameterInfo>> {
    if let mesh_spec::ModelSpec::Learner(learner) = &spec.model {
        return Ok(learner.parameters.clone());
    }
    let schema = spec
        .training
        .schema
        .clone()
        .unwrap_or(mesh_spec::DataSchema {
            input: mesh_spec::InputShape::Image {
                channels: 1,
                height: 28,
                width: 28,
            },
            task: mesh_federated::data::numbered_classes(10),
            normalization: None,
        });
    Ok(spec.model.layout(Some(&schema))?)
}

/// Runs a model subcommand: fetches the blob (retrying while the node fetches it) and saves safetensors.
pub fn run_model(cmd: ModelCommand) -> anyhow::Result<()> {
    let ModelCommand::Get(args) = cmd;
    let job = json(
        &args.api,
        reqwest::Method::GET,
        &format!("/v1/jobs/{}", args.job),
        None,
    )?;
    let spec: JobSpec = serde_json::from_value(job["detail"]["spec"].clone())
        .context("the node's job record has no readable spec")?;
    let round = args
        .round
        .map(|r| format!("?round={r}"))
        .unwrap_or_default();
    let path = format!("/v1/jobs/{}/model{round}", args.job);
    let mut bytes = None;
    for _ in 0..60 {
        let response = call(&args.api, reqwest::Method::GET, &path, None)?;
        let status = response.status();
        if status.is_success() {
            bytes = Some(response.bytes().context("reading the model")?.to_vec());
            break;
        }
        if status.as_u16() != 503 {
            bail!(
                "{path}: {status}: {}",
                response.text().unwrap_or_default().trim()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let bytes = bytes.context("the node could not fetch the model from its holders")?;
    let params = mesh_round::protocol::blob::decode_params(&bytes)?;
    let layout = model_layout(&spec)?;
    let metadata = HashMap::from([
        ("job".to_string(), args.job.clone()),
        ("model".to_string(), serde_json::to_string(&spec.model)?),
    ]);
    store::save_layout(&layout, &params, &args.out, metadata)
        .context("the model does not match the job's architecture")?;
    println!("wrote {} ({} parameters)", args.out.display(), params.len());
    Ok(())
}
