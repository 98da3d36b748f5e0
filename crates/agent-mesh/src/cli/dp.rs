//! `agent-mesh dp`: privacy accounting from the command line, over
//! `mesh_federated::privacy`'s RDP accountant (the same numbers as Google's
//! `dp-accounting` RdpAccountant).

use clap::{Args, Subcommand};
use mesh_federated::privacy::{epsilon_for, noise_multiplier_for_epsilon};

/// Subcommands of `agent-mesh dp`.
#[derive(Debug, Subcommand)]
pub enum DpCommand {
    /// Print the epsilon spent by T steps of the Poisson-subsampled Gaussian mechanism.
    Epsilon(EpsilonArgs),
    /// Print the smallest noise multiplier that keeps T steps within a target epsilon.
    Noise(NoiseArgs),
}

/// Flags of `agent-mesh dp epsilon`.
#[derive(Debug, Args)]
pub struct EpsilonArgs {
    /// Poisson sampling rate q, in (0, 1] (1 = every client in every round).
    #[arg(long, value_name = "Q", value_parser = parse_sampling_rate)]
    pub sampling_rate: f64,
    /// Noise multiplier z (noise standard deviation / L2 sensitivity), > 0.
    #[arg(long, value_name = "Z", value_parser = parse_positive)]
    pub noise_multiplier: f64,
    /// Number of steps (rounds) composed.
    #[arg(long, value_name = "T")]
    pub steps: u64,
    /// Target delta, in (0, 1).
    #[arg(long, value_name = "D", value_parser = parse_delta)]
    pub delta: f64,
}

/// Flags of `agent-mesh dp noise`.
#[derive(Debug, Args)]
pub struct NoiseArgs {
    /// Poisson sampling rate q, in (0, 1].
    #[arg(long, value_name = "Q", value_parser = parse_sampling_rate)]
    pub sampling_rate: f64,
    /// Number of steps (rounds) composed.
    #[arg(long, value_name = "T")]
    pub steps: u64,
    /// Target delta, in (0, 1).
    #[arg(long, value_name = "D", value_parser = parse_delta)]
    pub delta: f64,
    /// Target epsilon, > 0.
    #[arg(long, value_name = "EPS", value_parser = parse_positive)]
    pub epsilon: f64,
}

fn parse_number(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .map_err(|e| format!("not a number: {e}"))
}

fn parse_sampling_rate(text: &str) -> Result<f64, String> {
    let q = parse_number(text)?;
    if q > 0.0 && q <= 1.0 {
        Ok(q)
    } else {
        Err("must be in (0, 1]".to_owned())
    }
}

fn parse_positive(text: &str) -> Result<f64, String> {
    let v = parse_number(text)?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err("must be a finite number > 0".to_owned())
    }
}

fn parse_delta(text: &str) -> Result<f64, String> {
    let delta = parse_number(text)?;
    if delta > 0.0 && delta < 1.0 {
        Ok(delta)
    } else {
        Err("must be in (0, 1)".to_owned())
    }
}

/// Runs a `dp` subcommand, printing one number on standard output.
pub fn run(cmd: DpCommand) -> anyhow::Result<()> {
    match cmd {
        DpCommand::Epsilon(a) => {
            let eps = epsilon_for(a.sampling_rate, a.noise_multiplier, a.steps, a.delta)?;
            println!("{eps:.6}");
        }
        DpCommand::Noise(a) => {
            let z = noise_multiplier_for_epsilon(a.sampling_rate, a.steps, a.delta, a.epsilon)?;
            // Round up so the printed multiplier still meets the target.
            println!("{:.6}", (z * 1e6).ceil() / 1e6);
        }
    }
    Ok(())
}
