//! `agent-mesh bench cache`: hit rate of the blob cache's eviction policies
//! (LRU, LFU, adaptive W-TinyLFU) on recorded traces. It runs the mesh
//! simulator with every node recording its cache accesses, replays each
//! node's trace under every policy at several capacities
//! (`mesh_round::cache::trace`), and does the same for a seeded synthetic
//! trace where scans of one-off blobs interrupt a small set of hot ones.
//! The simulator's job is `bench round`'s: an MLP of 100,010 parameters on
//! MNIST, securely aggregated in groups of 10.

use std::str::FromStr;

use clap::Args;
use comfy_table::Table;
use mesh_round::cache::trace::{self, Access, ReplayOutcome, ScanWorkload};
use mesh_round::cache::CachePolicy;
use mesh_round::sim::MeshSim;

/// Most accesses recorded per node engine; more are counted as dropped.
const ACCESSES_PER_NODE_MAX: usize = 200_000;

/// A cache capacity: bytes (`4MiB`, `512KiB`, `1GiB`, `65536`) or a share of
/// the trace's working set (`25%`: a quarter of the most bytes of distinct
/// blobs any one node touched).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capacity {
    /// A fixed number of bytes.
    Bytes(usize),
    /// A percentage of the working set.
    WorkingSetPercent(u32),
}

impl Capacity {
    /// The capacity in bytes for a trace whose working set is `working_set_bytes` (at least 1).
    fn bytes(self, working_set_bytes: usize) -> usize {
        match self {
            Capacity::Bytes(bytes) => bytes,
            Capacity::WorkingSetPercent(p) => {
                ((working_set_bytes as u128 * u128::from(p) / 100) as usize).max(1)
            }
        }
    }
}

impl FromStr for Capacity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = || format!("{s:?} is not a capacity (e.g. 4MiB, 512KiB, 65536 or 25%)");
        if let Some(percent) = s.strip_suffix('%') {
            return match percent.trim().parse::<u32>() {
                Ok(p) if p >= 1 => Ok(Capacity::WorkingSetPercent(p)),
                _ => Err(bad()),
            };
        }
        let (number, shift) = [("GiB", 30), ("MiB", 20), ("KiB", 10), ("B", 0)]
            .into_iter()
            .find_map(|(unit, shift)| s.strip_suffix(unit).map(|n| (n, shift)))
            .unwrap_or((s, 0));
        let value: usize = number.trim().parse().map_err(|_| bad())?;
        value
            .checked_mul(1 << shift)
            .filter(|bytes| *bytes >= 1)
            .map(Capacity::Bytes)
            .ok_or_else(bad)
    }
}

impl std::fmt::Display for Capacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Capacity::Bytes(bytes) => write!(f, "{}", mib(*bytes)),
            Capacity::WorkingSetPercent(p) => write!(f, "{p}%"),
        }
    }
}

/// Flags of `agent-mesh bench cache`.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// Rounds of the simulated job.
    #[arg(long, default_value_t = 10)]
    pub rounds: u32,
    /// Replay only this node's trace (index from 0); default: every node's,
    /// each in its own cache.
    #[arg(long)]
    pub node: Option<usize>,
    /// Cache capacities to replay the simulator's traces at (comma-separated):
    /// bytes with an optional KiB/MiB/GiB suffix, or a percentage of the
    /// working set (the most bytes of distinct blobs one node touched).
    #[arg(long, value_delimiter = ',', default_value = "10%,25%,50%,100%")]
    pub capacities: Vec<Capacity>,
    /// Cache capacities to replay the synthetic trace at (same forms; its
    /// hot blobs take about 16 MiB with the defaults).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "8MiB,16MiB,24MiB,32MiB,64MiB"
    )]
    pub scan_capacities: Vec<Capacity>,
    /// Hot blobs of the synthetic trace (asked for again and again).
    #[arg(long, default_value_t = 16)]
    pub hot_blobs: usize,
    /// One-off blobs per scan of the synthetic trace (20 scans, 200 hot
    /// lookups apart, blobs of 1 MiB on average).
    #[arg(long, default_value_t = 32)]
    pub scan_blobs: usize,
    /// Data, threads, seed and output format.
    #[command(flatten)]
    pub run: super::bench_round::SimRunArgs,
}

/// One replayed trace set: where it came from and how each policy did.
struct TraceResult {
    name: &'static str,
    traces: usize,
    accesses: usize,
    dropped: u64,
    working_set_bytes: usize,
    rows: Vec<(Capacity, ReplayOutcome)>,
}

/// Runs the simulation, replays both traces and prints the tables (or JSON).
pub fn run(args: CacheArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.nodes >= 2, "--nodes must be at least 2");
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    args.run.check()?;
    anyhow::ensure!(
        !args.capacities.is_empty() && !args.scan_capacities.is_empty(),
        "--capacities and --scan-capacities need a value each"
    );
    if let Some(node) = args.node {
        anyhow::ensure!(
            node < args.nodes,
            "--node {node} is not below --nodes {}",
            args.nodes
        );
    }
    let (sim_traces, dropped, rounds) = simulate(&args)?;
    let synthetic = ScanWorkload {
        hot_blobs: args.hot_blobs,
        scan_blobs: args.scan_blobs,
        seed: args.run.seed,
        ..ScanWorkload::default()
    };
    let results = [
        replay_all("simulator", sim_traces, dropped, &args.capacities),
        replay_all(
            "synthetic scan",
            vec![synthetic.trace()],
            0,
            &args.scan_capacities,
        ),
    ];
    if args.run.json {
        print_json(&args, rounds, &synthetic, &results)
    } else {
        print_tables(&args, rounds, &results);
        Ok(())
    }
}

/// Runs the job in the simulator with every node recording its cache;
/// returns the traces asked for, the accesses dropped and the rounds committed.
fn simulate(args: &CacheArgs) -> anyhow::Result<(Vec<Vec<Access>>, u64, usize)> {
    let (train, test) = args.run.load_band()?;
    let spec = super::bench_round::spec(args.nodes, args.rounds, true, args.run.seed);
    let config = args.run.mesh_config(args.nodes, spec);
    let mut sim = MeshSim::new(config, &train, test)?;
    sim.record_cache_accesses(ACCESSES_PER_NODE_MAX);
    while !sim.finished() {
        sim.step()?;
    }
    let rounds = sim.reports().len();
    let mut dropped = 0;
    let traces = sim
        .take_cache_access_logs()
        .into_iter()
        .filter(|(node, _)| args.node.is_none_or(|n| n == *node))
        .map(|(_, log)| {
            dropped += log.dropped();
            log.into_accesses()
        })
        .collect();
    Ok((traces, dropped, rounds))
}

fn replay_all(
    name: &'static str,
    traces: Vec<Vec<Access>>,
    dropped: u64,
    capacities: &[Capacity],
) -> TraceResult {
    let working_set_bytes = trace::working_set_bytes(&traces);
    let mut rows = Vec::new();
    for &capacity in capacities {
        let bytes = capacity.bytes(working_set_bytes);
        for outcome in trace::compare(&traces, &[bytes]) {
            rows.push((capacity, outcome));
        }
    }
    TraceResult {
        name,
        traces: traces.len(),
        accesses: traces.iter().map(Vec::len).sum(),
        dropped,
        working_set_bytes,
        rows,
    }
}

fn mib(bytes: usize) -> String {
    format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
}

fn print_tables(args: &CacheArgs, rounds: usize, results: &[TraceResult]) {
    for result in results {
        let mut table = Table::new();
        let mut header = vec![
            "capacity".to_owned(),
            "bytes".to_owned(),
            "lookups".to_owned(),
        ];
        header.extend(
            CachePolicy::ALL
                .iter()
                .map(|p| format!("{p}: hit % / evictions / refetched MiB")),
        );
        table.set_header(header);
        // Rows come capacity by capacity, one per policy in `CachePolicy::ALL` order.
        for row in result.rows.chunks(CachePolicy::ALL.len()) {
            let Some((capacity, first)) = row.first() else {
                continue;
            };
            let mut cells = vec![
                capacity.to_string(),
                mib(first.capacity_bytes),
                first.lookups.to_string(),
            ];
            cells.extend(row.iter().map(|(_, o)| {
                format!(
                    "{:.1} / {} / {:.1}",
                    o.hit_rate() * 100.0,
                    o.evictions,
                    o.refetched_bytes as f64 / (1 << 20) as f64
                )
            }));
            table.add_row(cells);
        }
        let source = if result.name == "simulator" {
            format!(
                "{} nodes, {rounds} rounds committed, seed {}, {}",
                args.nodes,
                args.run.seed,
                args.node
                    .map_or("every node's trace".to_owned(), |n| format!(
                        "node {n}'s trace"
                    ))
            )
        } else {
            format!(
                "{} hot blobs, scans of {}, seed {}",
                args.hot_blobs, args.scan_blobs, args.run.seed
            )
        };
        println!(
            "{} trace ({source}): {} trace(s), {} accesses ({} dropped), working set {}\n{table}",
            result.name,
            result.traces,
            result.accesses,
            result.dropped,
            mib(result.working_set_bytes),
        );
    }
    println!(
        "each trace replays in its own cache; a lookup that misses a blob the recorded cache held \
         fetches it again (refetched)"
    );
}

fn print_json(
    args: &CacheArgs,
    rounds: usize,
    synthetic: &ScanWorkload,
    results: &[TraceResult],
) -> anyhow::Result<()> {
    let json: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            serde_json::json!({
                "trace": r.name,
                "traces": r.traces,
                "accesses": r.accesses,
                "dropped": r.dropped,
                "working_set_bytes": r.working_set_bytes,
                "rows": r.rows.iter().map(|(capacity, o)| serde_json::json!({
                    "capacity": capacity.to_string(),
                    "capacity_bytes": o.capacity_bytes,
                    "policy": o.policy,
                    "lookups": o.lookups,
                    "hits": o.hits,
                    "hit_rate": o.hit_rate(),
                    "evictions": o.evictions,
                    "refetched_bytes": o.refetched_bytes,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let out = serde_json::json!({
        "nodes": args.nodes,
        "rounds": rounds,
        "node": args.node,
        "seed": args.run.seed,
        "synthetic": synthetic,
        "results": json,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_capacities_parse_bytes_units_and_percentages() {
        assert_eq!("65536".parse(), Ok(Capacity::Bytes(65_536)));
        assert_eq!("4MiB".parse(), Ok(Capacity::Bytes(4 << 20)));
        assert_eq!(" 512 KiB".parse(), Ok(Capacity::Bytes(512 << 10)));
        assert_eq!("1GiB".parse(), Ok(Capacity::Bytes(1 << 30)));
        assert_eq!("25%".parse(), Ok(Capacity::WorkingSetPercent(25)));
        for bad in ["", "0", "0%", "4MB", "-1", "x%"] {
            assert!(bad.parse::<Capacity>().is_err(), "{bad}");
        }
        assert_eq!(Capacity::WorkingSetPercent(25).bytes(1000), 250);
        assert_eq!(Capacity::WorkingSetPercent(1).bytes(10), 1);
    }
}
