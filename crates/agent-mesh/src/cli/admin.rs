//! `agent-mesh admin`: operator commands on a running mesh. `admin reputation
//! list` shows the nodes with evidence against them (score, quarantine);
//! `admin reputation reset NODE` lifts a quarantine an operator judged wrong.

use clap::{Args, Subcommand};
use comfy_table::Table;

use super::job::{json, ApiArgs};

/// Subcommands of `agent-mesh admin`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Node reputations and quarantines.
    #[command(subcommand)]
    Reputation(ReputationCommand),
}

/// Subcommands of `agent-mesh admin reputation`.
#[derive(Debug, Subcommand)]
pub enum ReputationCommand {
    /// Nodes with evidence against them: score (from 1000) and quarantine (below 500).
    List(ListArgs),
    /// Restore a node's score and lift its quarantine (admin token).
    Reset(ResetArgs),
}

/// Flags of `agent-mesh admin reputation list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Flags of `agent-mesh admin reputation reset`.
#[derive(Debug, Args)]
pub struct ResetArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The node's id.
    node: String,
}

/// Runs an admin subcommand.
pub fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::Reputation(ReputationCommand::List(args)) => {
            let rows = json(&args.api, reqwest::Method::GET, "/v1/reputation", None)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            let mut table = Table::new();
            table.set_header(["node", "score", "quarantined"]);
            for r in rows.as_array().into_iter().flatten() {
                table.add_row([
                    r["node"].as_str().unwrap_or("").to_string(),
                    r["score"].to_string(),
                    r["quarantined"].to_string(),
                ]);
            }
            println!("{table}");
            Ok(())
        }
        AdminCommand::Reputation(ReputationCommand::Reset(args)) => {
            let path = format!("/v1/reputation/{}/reset", args.node);
            let commit = json(&args.api, reqwest::Method::POST, &path, None)?;
            println!(
                "reputation of {} reset (log index {})",
                args.node, commit["index"]
            );
            Ok(())
        }
    }
}
