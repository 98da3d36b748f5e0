//! `agent-mesh bench` (being written).
use clap::Subcommand;
/// Subcommands of `agent-mesh bench`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {}
/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {}
}
