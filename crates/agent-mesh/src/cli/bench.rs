//! `agent-mesh bench`: benchmarks that print a table.

use clap::{Args, Subcommand};
use comfy_table::Table;

/// Subcommands of `agent-mesh bench`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// SecAgg+ cost per round: client time, aggregator time, bytes per client.
    Secagg(SecaggArgs),
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Secagg(args) => secagg(args),
    }
}

/// Flags of `agent-mesh bench secagg`.
#[derive(Debug, Args)]
pub struct SecaggArgs {
    /// Group sizes n (comma-separated).
    #[arg(long = "n", value_name = "N", value_delimiter = ',', default_values_t = mesh_security::secagg::bench::DEFAULT_CLIENTS)]
    pub n: Vec<usize>,
    /// Update dimensions d (comma-separated).
    #[arg(long = "d", value_name = "D", value_delimiter = ',', default_values_t = mesh_security::secagg::bench::DEFAULT_DIMENSIONS)]
    pub d: Vec<usize>,
    /// Mask modulus in bits: 32 or 64.
    #[arg(long, default_value_t = 32)]
    pub modulus_bits: u32,
    /// Seed of keys, graph and synthetic updates.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

fn secagg(args: SecaggArgs) -> anyhow::Result<()> {
    use mesh_security::secagg::{bench, ModulusBits};
    let modulus = match args.modulus_bits {
        32 => ModulusBits::B32,
        64 => ModulusBits::B64,
        other => anyhow::bail!("--modulus-bits must be 32 or 64, not {other}"),
    };
    anyhow::ensure!(
        args.n.iter().all(|&n| n >= 3),
        "--n values must be at least 3"
    );
    anyhow::ensure!(
        args.d.iter().all(|&d| d >= 1),
        "--d values must be at least 1"
    );
    let mut table = Table::new();
    table.set_header([
        "n",
        "d",
        "k",
        "t",
        "client (ms)",
        "aggregator (ms)",
        "bytes/client",
        "x plain f32",
    ]);
    for &n in &args.n {
        for &d in &args.d {
            let r = bench::bench(n, d, modulus, args.seed)?;
            table.add_row([
                r.clients.to_string(),
                r.dimension.to_string(),
                r.degree.to_string(),
                r.threshold.to_string(),
                format!("{:.1}", r.client_time.as_secs_f64() * 1e3),
                format!("{:.1}", r.aggregator_time.as_secs_f64() * 1e3),
                r.bytes_per_client.to_string(),
                format!("{:.4}", r.bytes_ratio),
            ]);
        }
    }
    println!("{table}");
    println!(
        "one round each, single thread; client time is the mean over clients of their four steps"
    );
    Ok(())
}
