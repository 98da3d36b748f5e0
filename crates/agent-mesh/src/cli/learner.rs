//! `agent-mesh learner`: tools for a user's own learner before a node runs
//! it. `layout` starts the learner, asks for its parameters and prints the
//! `model` JSON a job needs; `check` runs one fit and one evaluate from the
//! mesh's seeded start, as a node would, and reports what came back.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use mesh_federated::model::{initial_values, ParameterInfo, TrainOptions};
use mesh_learner::model::fit_config;
use mesh_learner::{LearnerConfig, SupervisedLearner};

/// Subcommands of `agent-mesh learner`.
#[derive(Debug, Subcommand)]
pub enum LearnerCommand {
    /// Start a learner, ask for its parameters, and print the job's `model` JSON.
    Layout(LayoutArgs),
    /// Start a learner and run one fit and one evaluate, as a node would.
    Check(CheckArgs),
}

/// How to start the learner (shared by the subcommands).
#[derive(Debug, Args)]
pub struct StartArgs {
    /// An environment variable for the learner, NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Folder the learner starts in.
    #[arg(long, value_name = "DIR")]
    pub working_dir: Option<PathBuf>,
    /// Longest wait for the learner's hello after starting it, in ms.
    #[arg(long, default_value_t = 60_000)]
    pub start_timeout_ms: u64,
    /// The learner's command line, after `--` (e.g. `-- python3 -m my_learner`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Flags of `agent-mesh learner layout`.
#[derive(Debug, Args)]
pub struct LayoutArgs {
    #[command(flatten)]
    start: StartArgs,
}

/// Flags of `agent-mesh learner check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    start: StartArgs,
    /// Local epochs of the fit.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Batch size of the fit.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Learning rate of the fit.
    #[arg(long, default_value_t = 0.05)]
    learning_rate: f32,
    /// Seed of the starting parameters (the job's seed) and of the fit.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Longest wait for the fit reply, in ms.
    #[arg(long, default_value_t = 600_000)]
    fit_timeout_ms: u64,
}

/// Runs `agent-mesh learner ...`.
pub fn run(command: LearnerCommand) -> anyhow::Result<()> {
    init_logging();
    match command {
        LearnerCommand::Layout(args) => layout(args),
        LearnerCommand::Check(args) => check(args),
    }
}

/// The learner's output lines (and the driver's warnings) on stderr.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENT_MESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

fn config(start: StartArgs) -> anyhow::Result<LearnerConfig> {
    let mut config = LearnerConfig::for_command(start.command);
    for pair in start.env {
        let (name, value) = pair
            .split_once('=')
            .with_context(|| format!("--env {pair:?}: expected NAME=VALUE"))?;
        config.env.insert(name.to_owned(), value.to_owned());
    }
    config.working_dir = start.working_dir;
    config.start_timeout_ms = start.start_timeout_ms;
    config.max_restarts = 0;
    config.validate()?;
    Ok(config)
}

/// The `model` value of a job whose model is this layout.
pub fn model_json(layout: &[ParameterInfo]) -> serde_json::Value {
    let parameters: Vec<serde_json::Value> = layout
        .iter()
        .map(|p| serde_json::json!({ "name": p.name, "shape": p.shape }))
        .collect();
    serde_json::json!({ "learner": { "parameters": parameters } })
}

fn learner_layout(learner: &mut SupervisedLearner) -> anyhow::Result<Vec<ParameterInfo>> {
    let arrays = learner
        .layout()
        .context("asking the learner for its parameters")?;
    Ok(mesh_learner::layout::describe(&arrays))
}

fn layout(args: LayoutArgs) -> anyhow::Result<()> {
    let mut learner = SupervisedLearner::new(config(args.start)?);
    let layout = learner_layout(&mut learner)?;
    let count = mesh_learner::layout::parameter_count(&layout);
    eprintln!("{} tensors, {count} parameters", layout.len());
    println!("{}", serde_json::to_string_pretty(&model_json(&layout))?);
    Ok(())
}

fn check(args: CheckArgs) -> anyhow::Result<()> {
    let mut config = config(args.start)?;
    config.fit_timeout_ms = args.fit_timeout_ms;
    config.validate()?;
    let mut learner = SupervisedLearner::new(config);
    let layout = learner_layout(&mut learner)?;
    let name = learner.learner_name().unwrap_or_default().to_owned();
    println!("learner   {name} (pid {})", learner.pid().unwrap_or(0));
    println!(
        "layout    {} tensors, {} parameters",
        layout.len(),
        mesh_learner::layout::parameter_count(&layout)
    );
    let start = initial_values(&layout, args.seed);
    let options = TrainOptions {
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        proximal_mu: 0.0,
        seed: args.seed,
    };
    options.validate()?;
    let began = Instant::now();
    let fit = learner
        .fit(&layout, &start, fit_config(&options))
        .context("fit")?;
    let distance = fit
        .parameters
        .iter()
        .zip(&start)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    println!(
        "fit       {} examples in {:.2} s, update L2 norm {distance:.4}, metrics {}",
        fit.num_examples,
        began.elapsed().as_secs_f64(),
        serde_json::Value::Object(fit.metrics.clone())
    );
    let began = Instant::now();
    let eval = learner
        .evaluate(&layout, &fit.parameters, serde_json::Map::new())
        .context("evaluate")?;
    println!(
        "evaluate  loss {:.4} on {} examples in {:.2} s, metrics {}",
        eval.loss,
        eval.num_examples,
        began.elapsed().as_secs_f64(),
        serde_json::Value::Object(eval.metrics.clone())
    );
    println!("ok: the learner answers the protocol and its replies fit its layout");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_json_is_what_a_job_spec_takes() {
        let layout = vec![ParameterInfo {
            name: "fc.bias".into(),
            shape: vec![10],
        }];
        assert_eq!(
            model_json(&layout).to_string(),
            r#"{"learner":{"parameters":[{"name":"fc.bias","shape":[10]}]}}"#
        );
    }
}
