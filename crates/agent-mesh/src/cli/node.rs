//! `agent-mesh node --config node.toml`: run one mesh node until SIGTERM or SIGINT.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use mesh_consensus::{ConsensusError, StoreError};
use mesh_node::config::{LogFormat, NodeConfig, ENV_OVERRIDES};
use mesh_node::runtime::RuntimeError;
use mesh_node::telemetry::Telemetry;

/// Flags of `agent-mesh node`.
#[derive(Debug, Args)]
#[command(after_long_help = env_help())]
pub struct NodeArgs {
    /// The node's TOML config (see docs/operations.md); relative paths in it are
    /// taken from the file's folder.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Check the config and credentials, print the resolved config, and exit.
    #[arg(long)]
    pub check: bool,
    /// Let a config with an `[adversary]` section start: the node then shapes
    /// every update it sends with that attack. For robustness tests only.
    #[arg(long)]
    pub allow_adversary: bool,
    /// Move the node's raft folder aside (renamed, never deleted) and exit.
    /// The recovery from a damaged raft store: started again, the node finds
    /// its state gone and rejoins the committee as a learner, catching up
    /// from the leader. Refused while the node runs.
    #[arg(long, conflicts_with = "check")]
    pub reset_raft_state: bool,
}

fn env_help() -> String {
    let mut text = String::from("Environment overrides (applied after the file):\n");
    for item in ENV_OVERRIDES {
        text.push_str(&format!("  {:<30} {}\n", item.name, item.help));
    }
    text
}

/// Loads the config, starts logging, and runs the node on a tokio runtime.
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    let config = NodeConfig::load(&args.config, |name| std::env::var(name).ok())?;
    if args.check {
        mesh_node::runtime::Credentials::load(&config)?;
        println!(
            "{}",
            toml::to_string_pretty(&config).context("printing the config")?
        );
        return Ok(());
    }
    if args.reset_raft_state {
        return reset_raft_state(&config);
    }
    if !config.adversary.attack.is_empty() && !args.allow_adversary {
        anyhow::bail!(
            "{} makes this node adversarial ([adversary] attack = {:?}): it would poison every update it sends. \
             Pass --allow-adversary to run it anyway (robustness tests only), or remove the [adversary] section",
            args.config.display(),
            config.adversary.attack
        );
    }
    init_logging(config.log.format, &config.log.level)?;
    // Before the async runtime: the exporter's blocking HTTP client must be
    // built, and dropped, outside it.
    let telemetry = start_telemetry(&config)?;
    let runtime = runtime_with_threads(config.runtime.worker_threads)
        .context("starting the async runtime")?;
    let outcome = runtime
        .block_on(mesh_node::runtime::run(config, shutdown_signal()))
        .map_err(|err| with_recovery(err, &args.config));
    // The runtime's tasks (and the spans they hold) end first, so the
    // flush sends every span that was ended.
    drop(runtime);
    telemetry.shutdown();
    outcome
}

/// Starts exporting round spans when `[telemetry] otlp_endpoint` (or
/// AGENT_MESH_OTLP_ENDPOINT) names a collector; builds nothing otherwise.
fn start_telemetry(config: &NodeConfig) -> anyhow::Result<Telemetry> {
    if config.telemetry.traces_url().is_none() {
        return Ok(Telemetry::init(&config.telemetry, "")?);
    }
    // Spans name their node by peer id (service.instance.id).
    let credentials = mesh_node::runtime::Credentials::load(config)?;
    let node = mesh_round::protocol::node_name(&credentials.identity.node_id());
    Ok(Telemetry::init(&config.telemetry, &node.0)?)
}

/// `--reset-raft-state`: moves the raft folder aside and says what happens next.
fn reset_raft_state(config: &NodeConfig) -> anyhow::Result<()> {
    let dir = mesh_node::runtime::raft_dir(config);
    match mesh_consensus::store::move_aside(&dir)? {
        Some(aside) => println!(
            "moved {} to {} (nothing was deleted); start the node as usual: it rejoins the \
             committee as a learner and catches up from the leader",
            dir.display(),
            aside.display()
        ),
        None => println!("{} does not exist; nothing to move", dir.display()),
    }
    Ok(())
}

/// A damaged raft store stops the node; the error then ends with the exact
/// command that recovers it, for this node's config file.
fn with_recovery(err: RuntimeError, config_path: &Path) -> anyhow::Error {
    let damaged = matches!(
        &err,
        RuntimeError::Consensus(ConsensusError::Store(StoreError::Damaged { .. }))
    );
    let err = anyhow::Error::new(err);
    if !damaged {
        return err;
    }
    err.context(format!(
        "the raft store is damaged; to recover, run: agent-mesh node --config {} --reset-raft-state",
        config_path.display()
    ))
}

/// A tokio runtime with `threads` worker threads (0: one per core). One
/// thread is a current-thread runtime: every task then runs on the thread
/// that drives it, where a multi-thread runtime of one worker would still
/// hand work between that worker and the driving thread.
pub fn runtime_with_threads(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if threads > 1 {
        builder.worker_threads(threads);
    }
    builder.enable_all().build()
}

fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("log.level {level:?} is not a valid filter"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("starting the logger: {e}"))
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub(super) async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::runtime_with_threads;
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn one_thread_is_a_current_thread_runtime_and_more_are_multi_thread() {
        let flavor = |threads| {
            let runtime = runtime_with_threads(threads).unwrap();
            // Timers and I/O are enabled on both flavors.
            runtime.block_on(async {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            });
            runtime.handle().runtime_flavor()
        };
        assert_eq!(flavor(1), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(2), RuntimeFlavor::MultiThread);
        assert_eq!(flavor(0), RuntimeFlavor::MultiThread);
    }
}
