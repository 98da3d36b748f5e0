//! `agent-mesh dp` (being written).
use clap::Subcommand;
/// Subcommands of `agent-mesh dp`.
#[derive(Debug, Subcommand)]
pub enum DpCommand {}
/// Runs a dp subcommand.
pub fn run(cmd: DpCommand) -> anyhow::Result<()> {
    match cmd {}
}
