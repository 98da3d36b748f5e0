//! `agent-mesh`: the single binary of Agent Mesh.
//!
//! Thin glue over the library crates: it parses the command line and hands each
//! subcommand to its module under [`cli`].

mod cli;

/// mimalloc instead of the system allocator: the node allocates and frees
/// small buffers on every message, and glibc's per-thread arenas trimmed and
/// regrew their heaps (an `mprotect` every few commits) under that pattern.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// Agent Mesh: a decentralized federated-learning mesh.
#[derive(Debug, Parser)]
#[command(name = "agent-mesh", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands, one module each under `cli/`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run an in-process federation on MNIST and report accuracy per round.
    Sim(Box<cli::sim::SimArgs>),
    /// Differential-privacy tools (privacy accounting).
    #[command(subcommand)]
    Dp(cli::dp::DpCommand),
    /// Benchmarks that print a table.
    #[command(subcommand)]
    Bench(cli::bench::BenchCommand),
    /// Create a node identity (Ed25519 key pair; the node id is its libp2p peer id).
    Keygen(cli::keygen::KeygenArgs),
    /// Operate the mesh certificate authority (init, issue, renew, revoke, verify, list).
    #[command(subcommand)]
    Ca(cli::ca::CaCommand),
    /// Run a mesh node: P2P network, committee member, HTTP API (until SIGTERM/SIGINT).
    Node(cli::node::NodeArgs),
    /// Probe a node's /healthz (or /readyz): exit 0 when it answers 200 (container health checks).
    Health(cli::health::HealthArgs),
    /// Show a running node's status, peers and committee.
    Status(cli::status::StatusArgs),
    /// Sign a short-lived admin token for the HTTP API's write endpoints.
    Token(cli::token::TokenArgs),
    /// Submit, list, inspect and cancel training jobs on a running mesh.
    #[command(subcommand)]
    Job(cli::job::JobCommand),
    /// Download global models from a running mesh.
    #[command(subcommand)]
    Model(cli::job::ModelCommand),
    /// Operate a running mesh: node reputations and quarantines.
    #[command(subcommand)]
    Admin(cli::admin::AdminCommand),
    /// Try a user's own learner (a Python training process): print its layout, check it.
    #[command(subcommand)]
    Learner(cli::learner::LearnerCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => cli::sim::run(*args),
        Command::Dp(cmd) => cli::dp::run(cmd),
        Command::Bench(cmd) => cli::bench::run(cmd),
        Command::Keygen(args) => cli::keygen::run(args),
        Command::Ca(cmd) => cli::ca::run(cmd),
        Command::Node(args) => cli::node::run(args),
        Command::Health(args) => cli::health::run(args),
        Command::Status(args) => cli::status::run(args),
        Command::Token(args) => cli::token::run(args),
        Command::Job(cmd) => cli::job::run(cmd),
        Command::Model(cmd) => cli::job::run_model(cmd),
        Command::Admin(cmd) => cli::admin::run(cmd),
        Command::Learner(cmd) => cli::learner::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
