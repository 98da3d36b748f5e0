//! `agent-mesh bench robustness`: final test accuracy for every (attack x rule)
//! pair, the ByzFL-style table.
//!
//! Each cell is a full simulated mesh (`agent-mesh sim` with the shared flags),
//! every node running the node's own round engine: the Byzantine nodes run one
//! attack and the final aggregators one rule configuration (`rule` or
//! `rule+pre`). With `--secagg` the rule sees one input per secure-aggregation
//! group, and groups are sized so it still has the inputs it needs for
//! `--byzantine`. Prints a Markdown table with the worst case per rule, and
//! writes it with the raw numbers to `OUT/robustness.{md,json}`.

use super::sim::{write_atomically, SimArgs};
use anyhow::Context;
use clap::Args;
use mesh_federated::aggregate::{PreAggregation, Rule};
use mesh_federated::attack::Attack;
use mesh_federated::data::LoadedData;
use mesh_round::sim::MeshSim;

/// Flags of `agent-mesh bench robustness`.
#[derive(Debug, Args)]
pub struct RobustnessArgs {
    /// Attacks, one table row each (comma-separated).
    #[arg(long, value_delimiter = ',', default_values = ["sign-flip", "label-flip", "gaussian", "alie", "ipm", "mimic"])]
    pub attacks: Vec<Attack>,
    /// Rule configurations `rule[+pre]`, one column each (comma-separated).
    #[arg(long, value_delimiter = ',', default_values = ["fedavg", "median", "trimmed-mean", "trimmed-mean+nnm", "multi-krum+nnm", "geomed", "cclip+nnm"])]
    pub configs: Vec<String>,
    /// Settings shared by every cell (nodes, rounds, --byzantine, --secagg, model, seed, ...).
    #[command(flatten)]
    pub sim: SimArgs,
}

fn parse_config(text: &str) -> anyhow::Result<(Rule, PreAggregation)> {
    let (rule, pre) = text.split_once('+').unwrap_or((text, "none"));
    let rule: Rule = rule
        .parse()
        .with_context(|| format!("configuration {text:?}"))?;
    let pre: PreAggregation = pre
        .parse()
        .with_context(|| format!("configuration {text:?}"))?;
    Ok((rule, pre))
}

/// Runs the matrix.
pub fn run(args: RobustnessArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.sim.byzantine > 0,
        "pass --byzantine F (F > 0) for a robustness table"
    );
    let configs = args
        .configs
        .iter()
        .map(|c| parse_config(c))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut sim_args = args.sim.clone();
    let data = sim_args.load_data()?;
    std::fs::create_dir_all(&args.sim.out)?;
    let mut cells: Vec<Vec<Option<Cell>>> = vec![vec![None; configs.len()]; args.attacks.len()];
    let total = args.attacks.len() * configs.len();
    for (a, attack) in args.attacks.iter().enumerate() {
        for (c, &(rule, pre)) in configs.iter().enumerate() {
            let mut sim = args.sim.clone();
            (sim.attack, sim.rule, sim.pre) = (*attack, rule, pre);
            let done = a * configs.len() + c + 1;
            let name = &args.configs[c];
            match run_cell(&sim, &data) {
                Ok(cell) => {
                    println!("[{done}/{total}] {attack} vs {name}: {}", cell.describe());
                    cells[a][c] = Some(cell);
                }
                Err(e) => println!("[{done}/{total}] {attack} vs {name}: not run ({e:#})"),
            }
        }
    }
    let table = markdown(&args, &cells);
    println!("\n{table}");
    write_atomically(&args.sim.out.join("robustness.md"), table.as_bytes())?;
    let accuracy: Vec<Vec<Option<f32>>> = cells
        .iter()
        .map(|row| row.iter().map(|c| c.as_ref().map(|c| c.accuracy)).collect())
        .collect();
    let rounds: Vec<Vec<Option<u32>>> = cells
        .iter()
        .map(|row| row.iter().map(|c| c.as_ref().map(|c| c.rounds)).collect())
        .collect();
    let json = serde_json::json!({
        "engine": "protocol",
        "attacks": args.attacks.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "configs": args.configs, "final_test_accuracy": accuracy, "rounds_completed": rounds,
        "nodes": args.sim.nodes, "byzantine": args.sim.byzantine, "rounds": args.sim.rounds,
        "local_epochs": args.sim.local_epochs, "partition": args.sim.partition.to_string(),
        "secagg": args.sim.secagg, "seed": args.sim.seed,
    });
    write_atomically(
        &args.sim.out.join("robustness.json"),
        serde_json::to_vec_pretty(&json)?.as_slice(),
    )
}

/// The outcome of one (attack, rule) run.
#[derive(Clone, Debug)]
struct Cell {
    /// Test accuracy of the last committed model (0 when none was committed).
    accuracy: f32,
    /// Rounds committed.
    rounds: u32,
    /// Rounds the job asked for.
    rounds_wanted: u32,
}

impl Cell {
    fn describe(&self) -> String {
        let short = if self.rounds < self.rounds_wanted {
            format!(
                " (only {} of {} rounds committed)",
                self.rounds, self.rounds_wanted
            )
        } else {
            String::new()
        };
        format!("{:.2}%{short}", 100.0 * self.accuracy)
    }
}

fn run_cell(args: &SimArgs, data: &LoadedData) -> anyhow::Result<Cell> {
    let config = args.mesh_config(&data.train)?;
    let rounds_wanted = config.spec.rounds;
    let outcome = MeshSim::new(config, &data.train, data.test.clone())?.run()?;
    Ok(Cell {
        accuracy: outcome.rounds.last().map_or(0.0, |r| r.test_accuracy),
        rounds: outcome.rounds.len() as u32,
        rounds_wanted,
    })
}

fn markdown(args: &RobustnessArgs, cells: &[Vec<Option<Cell>>]) -> String {
    let show = |c: &Option<Cell>| match c {
        None => "n/a".to_string(),
        Some(c) if c.rounds < c.rounds_wanted => {
            format!(
                "{:.1} ({}/{} rounds)",
                100.0 * c.accuracy,
                c.rounds,
                c.rounds_wanted
            )
        }
        Some(c) => format!("{:.1}", 100.0 * c.accuracy),
    };
    let mut out = format!(
        "Final test accuracy (%), round protocol, {} nodes, {} Byzantine, {} rounds x {} local epochs, partition {}, secure aggregation {}, seed {}\n\n| attack | {} |\n|---|{}\n",
        args.sim.nodes,
        args.sim.byzantine,
        args.sim.rounds,
        args.sim.local_epochs,
        args.sim.partition,
        if args.sim.secagg { "on" } else { "off" },
        args.sim.seed,
        args.configs.join(" | "),
        "---|".repeat(args.configs.len())
    );
    for (a, attack) in args.attacks.iter().enumerate() {
        let row: Vec<String> = cells[a].iter().map(show).collect();
        out += &format!("| {attack} | {} |\n", row.join(" | "));
    }
    let worst: Vec<String> = (0..args.configs.len())
        .map(|c| {
            let column: Option<Vec<f32>> = cells
                .iter()
                .map(|row| row[c].as_ref().map(|cell| cell.accuracy))
                .collect();
            column.map_or("n/a".to_string(), |v| {
                format!("{:.1}", 100.0 * v.into_iter().fold(1.0, f32::min))
            })
        })
        .collect();
    out += &format!("| **worst case** | {} |\n", worst.join(" | "));
    out
}
