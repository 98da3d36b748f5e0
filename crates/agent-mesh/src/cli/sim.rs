//! `agent-mesh sim` (being written).
use clap::Args;
/// Flags of `agent-mesh sim`.
#[derive(Debug, Args)]
pub struct SimArgs {}
/// Runs the simulation.
pub fn run(_args: SimArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
