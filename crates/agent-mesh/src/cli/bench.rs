//! `agent-mesh bench`: benchmarks that print a table.

use clap::{Args, Subcommand};
use comfy_table::Table;
use mesh_federated::aggregate::{bench, PreAggregation, Rule};

/// Subcommands of `agent-mesh bench`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Throughput of the aggregation rules on synthetic updates (one thread).
    Aggregators(AggregatorsArgs),
    /// SecAgg+ cost per round: client time, aggregator time, bytes per client.
    Secagg(SecaggArgs),
    /// Final accuracy of every (attack x aggregation rule) pair on MNIST.
    Robustness(Box<super::robustness::RobustnessArgs>),
    /// Gossip time-to-all over in-process nodes and blob throughput over loopback TCP.
    Net(super::bench_net::NetArgs),
    /// Closed-loop durable writes against a 3-voter committee of real node processes.
    Consensus(super::bench_consensus::ConsensusArgs),
    /// Real node processes under seeded faults (kill -9, SIGSTOP, partitions, loss, slow
    /// links, clock skew, full disks) while clients write and read keys and a job trains;
    /// checks the history for linearizability and the job for lost rounds.
    Chaos(super::bench_chaos::ChaosArgs),
    /// Round protocol overhead per round (wall time minus local training) in the mesh simulator.
    Round(super::bench_round::RoundArgs),
    /// Blob-cache hit rate of the LRU, LFU and adaptive policies, replaying the
    /// mesh simulator's cache traces and a synthetic trace with scans.
    Cache(super::bench_cache::CacheArgs),
    /// How the round engine's cost per node (wall and simulated time per round, messages,
    /// bytes, connections, memory) grows with the mesh size, in the mesh simulator.
    Scale(super::bench_scale::ScaleArgs),
}

/// Flags of `agent-mesh bench aggregators`.
#[derive(Debug, Args)]
pub struct AggregatorsArgs {
    /// Numbers of updates n (comma-separated).
    #[arg(long = "n", value_name = "N", value_delimiter = ',', default_values_t = [10, 100])]
    pub n: Vec<usize>,
    /// Update dimensions d (comma-separated).
    #[arg(long = "d", value_name = "D", value_delimiter = ',', default_values_t = [100_000, 1_000_000])]
    pub d: Vec<usize>,
    /// Rules to measure (comma-separated; default: all of fedavg, median, trimmed-mean,
    /// krum, multi-krum, bulyan, geomed, cclip).
    #[arg(long, value_name = "RULE", value_delimiter = ',')]
    pub rules: Vec<Rule>,
    /// One more rule to measure, with parameters that contain commas
    /// (`--rule geomed:iters=3,tol=0,nu=0.1`); repeatable, added after `--rules`.
    #[arg(long = "rule", value_name = "RULE")]
    pub rule: Vec<Rule>,
    /// Pre-aggregation step before every rule: none, nnm or bucketing[:size=S].
    #[arg(long, value_name = "PRE", default_value = "none")]
    pub pre: PreAggregation,
    /// Timed calls per (rule, n, d); the table shows their median.
    #[arg(long, value_name = "R", default_value_t = 3)]
    pub repetitions: usize,
    /// Seed of the synthetic updates.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Aggregators(args) => aggregators(args),
        BenchCommand::Secagg(args) => secagg(args),
        BenchCommand::Robustness(args) => super::robustness::run(*args),
        BenchCommand::Net(args) => super::bench_net::run(args),
        BenchCommand::Consensus(args) => super::bench_consensus::run(args),
        BenchCommand::Round(args) => super::bench_round::run(args),
        BenchCommand::Cache(args) => super::bench_cache::run(args),
        BenchCommand::Scale(args) => super::bench_scale::run(args),
        BenchCommand::Chaos(args) => super::bench_chaos::run(args),
    }
}

fn aggregators(args: AggregatorsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.n.iter().all(|&n| n >= 1),
        "--n values must be at least 1"
    );
    anyhow::ensure!(
        args.d.iter().all(|&d| d >= 1),
        "--d values must be at least 1"
    );
    anyhow::ensure!(args.repetitions >= 1, "--repetitions must be at least 1");
    let mut rules = args.rules;
    rules.extend(args.rule);
    if rules.is_empty() {
        rules = Rule::all();
    }
    let results = bench::run(
        &rules,
        args.pre,
        &args.n,
        &args.d,
        args.repetitions,
        args.seed,
    )?;
    let mut table = Table::new();
    table.set_header(["rule", "n", "d", "f", "time (ms)", "cpu (ms)", "input GB/s"]);
    for r in results {
        let cpu_ms = r
            .cpu_time_median
            .map_or("-".to_owned(), |t| format!("{:.2}", t.as_secs_f64() * 1e3));
        table.add_row([
            r.rule,
            r.n.to_string(),
            r.d.to_string(),
            r.byzantine.to_string(),
            format!("{:.2}", r.time_median.as_secs_f64() * 1e3),
            cpu_ms,
            format!("{:.2}", r.input_gb_per_s),
        ]);
    }
    println!("{table}");
    println!("medians over the repetitions, one thread; GB/s from the wall time");
    Ok(())
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
