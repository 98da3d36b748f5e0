//! `agent-mesh bench robustness`: final test accuracy for every (attack x rule)
//! pair, the ByzFL-style table.
//!
//! Each cell is a full in-process federation (`agent-mesh sim` with the shared
//! flags) where the Byzantine nodes run one attack and the aggregator one rule
//! configuration (`rule` or `rule+pre`). Prints a Markdown table with the worst
//! case per rule, and writes it with the raw numbers to `OUT/robustness.{md,json}`.

use super::sim::{write_atomically, SimArgs};
use anyhow::Context;
use clap::Args;
use mesh_federated::aggregate::{PreAggregation, Rule};
use mesh_federated::attack::Attack;
use mesh_federated::data::Mnist;
use mesh_federated::model::ModelError;
use mesh_node::round::participant::ParticipantError;
use mesh_node::sim::{SimError, Simulation};

/// Flags of `agent-mesh bench robustness`.
#[derive(Debug, Args)]
pub struct RobustnessArgs {
    /// Attacks, one table row each (comma-separated).
    #[arg(long, value_delimiter = ',', default_values = ["sign-flip", "label-flip", "gaussian", "alie", "ipm"])]
    pub attacks: Vec<Attack>,
    /// Rule configurations `rule[+pre]`, one column each (comma-separated).
    #[arg(long, value_delimiter = ',', default_values = ["fedavg", "median", "trimmed-mean", "trimmed-mean+nnm", "multi-krum+nnm", "geomed", "cclip+nnm"])]
    pub configs: Vec<String>,
    /// Settings shared by every cell (nodes, rounds, --byzantine, model, seed, ...).
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
    let mnist = Mnist::load(&args.sim.data).with_context(|| {
        format!(
            "loading MNIST from {} (pass --data DIR)",
            args.sim.data.display()
        )
    })?;
    std::fs::create_dir_all(&args.sim.out)?;
    let mut accuracy: Vec<Vec<Option<f32>>> = vec![vec![None; configs.len()]; args.attacks.len()];
    let mut diverged = vec![vec![false; configs.len()]; args.attacks.len()];
    let total = args.attacks.len() * configs.len();
    for (a, attack) in args.attacks.iter().enumerate() {
        for (c, &(rule, pre)) in configs.iter().enumerate() {
            let mut config = args.sim.to_config()?;
            (config.attack, config.rule, config.pre) = (*attack, rule, pre);
            let done = a * configs.len() + c + 1;
            match run_cell(config, &mnist) {
                Ok(cell) => {
                    let note = if cell.diverged {
                        " (training diverged: collapsed)"
                    } else {
                        ""
                    };
                    println!(
                        "[{done}/{total}] {attack} vs {}: {:.2}%{note}",
                        args.configs[c],
                        100.0 * cell.accuracy
                    );
                    accuracy[a][c] = Some(cell.accuracy);
                    diverged[a][c] = cell.diverged;
                }
                Err(e) => println!(
                    "[{done}/{total}] {attack} vs {}: not run ({e:#})",
                    args.configs[c]
                ),
            }
        }
    }
    let table = markdown(&args, &accuracy, &diverged);
    println!("\n{table}");
    write_atomically(&args.sim.out.join("robustness.md"), table.as_bytes())?;
    let json = serde_json::json!({
        "attacks": args.attacks.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "configs": args.configs, "final_test_accuracy": accuracy, "diverged": diverged,
        "nodes": args.sim.nodes, "byzantine": args.sim.byzantine, "rounds": args.sim.rounds,
        "local_epochs": args.sim.local_epochs, "seed": args.sim.seed,
    });
    write_atomically(
        &args.sim.out.join("robustness.json"),
        serde_json::to_vec_pretty(&json)?.as_slice(),
    )
}

/// The outcome of one (attack, rule) run.
struct Cell {
    /// Test accuracy after the last round that completed.
    accuracy: f32,
    /// Local training diverged on the global model the rule produced: the
    /// federation collapsed, and `accuracy` is that of the collapsed model.
    diverged: bool,
}

fn run_cell(config: mesh_node::sim::SimConfig, mnist: &Mnist) -> anyhow::Result<Cell> {
    let mut sim = Simulation::new(config, &mnist.train, mnist.test.clone())?;
    let mut accuracy = 0.0;
    loop {
        match sim.run_round() {
            Ok(Some(report)) => accuracy = report.test_accuracy,
            Ok(None) => {
                return Ok(Cell {
                    accuracy,
                    diverged: false,
                })
            }
            Err(SimError::Participant(ParticipantError::Model {
                source: ModelError::Diverged { .. },
                ..
            })) => {
                return Ok(Cell {
                    accuracy,
                    diverged: true,
                })
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn markdown(
    args: &RobustnessArgs,
    accuracy: &[Vec<Option<f32>>],
    diverged: &[Vec<bool>],
) -> String {
    let cell = |v: Option<f32>| v.map_or("n/a".to_string(), |a| format!("{:.1}", 100.0 * a));
    let mut out = format!(
        "Final test accuracy (%), {} nodes, {} Byzantine, {} rounds x {} local epochs, seed {}\n\n| attack | {} |\n|---|{}\n",
        args.sim.nodes,
        args.sim.byzantine,
        args.sim.rounds,
        args.sim.local_epochs,
        args.sim.seed,
        args.configs.join(" | "),
        "---|".repeat(args.configs.len())
    );
    for (a, attack) in args.attacks.iter().enumerate() {
        let row: Vec<String> = accuracy[a]
            .iter()
            .zip(&diverged[a])
            .map(|(&v, &d)| {
                if d {
                    format!("{} (diverged)", cell(v))
                } else {
                    cell(v)
                }
            })
            .collect();
        out += &format!("| {attack} | {} |\n", row.join(" | "));
    }
    let worst: Vec<String> = (0..args.configs.len())
        .map(|c| {
            let column: Option<Vec<f32>> = accuracy.iter().map(|row| row[c]).collect();
            cell(column.map(|v| v.into_iter().fold(1.0, f32::min)))
        })
        .collect();
    out += &format!("| **worst case** | {} |\n", worst.join(" | "));
    out
}
