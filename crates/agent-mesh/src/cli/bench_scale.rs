//! `agent-mesh bench scale`: how the round engine's cost per node grows with
//! the size of the mesh. Every simulated node runs the real engine
//! (selection, model fetch by hash, SecAgg+ in groups, group and final
//! aggregation, agreement, commit) in the mesh simulator, on `bench round`'s
//! job: an MLP of 100,010 parameters on MNIST, every node a participant in
//! every round, securely aggregated in groups of `--group-size`.
//!
//! The simulated network gives each (sender, receiver) link one seeded
//! latency from `--latency-ms` and each node an uplink of `--bandwidth-mbps`
//! (a message occupies it for its encoded size over the bandwidth; downlinks
//! are not limited), so large blobs take simulated time.
//!
//! Figures, per mesh size:
//! - `round_ms`: mean wall time per committed round (the whole process: all
//!   nodes' protocol work, their training, the simulator's own checks);
//!   `sim_round_ms`: mean simulated time per round.
//! - `messages_per_node_per_round`, `bytes_per_node_per_round`: messages and
//!   encoded bytes (postcard, as on the wire) a node sends plus receives,
//!   mean over nodes, per committed round; `max_bytes_per_node_per_round`:
//!   the busiest node in its busiest round (rounds end at their commits).
//! - `peak_connections_per_node`: a real node dials a round's peers on
//!   demand and hangs up after, so a node's connections are the distinct
//!   peers it exchanged messages with (either direction) within a sliding
//!   window of one round's length (the mean simulated round time); the
//!   figure is the peak over nodes and times, `median_connections_per_node`
//!   the median over nodes of each node's own peak.
//! - `peak_rss_bytes`: the peak resident set of the process that ran that
//!   mesh size (`VmHWM` from `/proc/self/status`). Each size runs in a child
//!   process (this binary, re-executed with a hidden flag) so the peaks are
//!   separate; with `--in-process` they run in this process one after
//!   another and each peak includes the earlier sizes'. 0 where `/proc` is
//!   missing (not Linux). `setup_rss_bytes` is the resident set once the
//!   mesh is built, before the first round.
//! - With `--json`, bytes per node per round by message kind, and the
//!   messages the node with the peak connections sent and received by kind.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use comfy_table::Table;
use mesh_round::sim::traffic::LinkModel;
use mesh_round::sim::{Faults, MeshSim, MeshSimConfig};
use serde::{Deserialize, Serialize};

/// Most messages recorded per run (40 bytes each).
const TRANSFERS_MAX: usize = 10_000_000;

/// Flags of `agent-mesh bench scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Mesh sizes to measure (comma-separated), each in its own process.
    #[arg(long, value_delimiter = ',', default_values_t = [100, 300])]
    pub nodes: Vec<usize>,
    /// Rounds per mesh.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Participants per round; default: every node.
    #[arg(long)]
    pub participants: Option<u32>,
    /// Nodes per secure-aggregation group (the job's `training.group_size`).
    #[arg(long, default_value_t = 10)]
    pub group_size: u32,
    /// One-way latency of each link, MS or MIN-MAX milliseconds (one seeded
    /// draw per link).
    #[arg(long, default_value = "20-50", value_parser = super::sim_mesh::parse_latency)]
    pub latency_ms: (u64, u64),
    /// Uplink bandwidth of every node, Mbit/s (0: unlimited).
    #[arg(long, default_value_t = 1000.0)]
    pub bandwidth_mbps: f64,
    /// A round's deadline, in simulated ms (the job's `round_deadline_ms`):
    /// rounds that take over half of it make the planner scale out to
    /// smaller, more numerous groups.
    #[arg(long, default_value_t = 120_000)]
    pub round_deadline_ms: u64,
    /// Simulated time after which a mesh size gives up, in seconds.
    #[arg(long, default_value_t = 3_600)]
    pub time_limit_s: u64,
    /// Run every size in this process (peak RSS then accumulates).
    #[arg(long)]
    pub in_process: bool,
    /// Internal: run the single size given and print its row as JSON.
    #[arg(long, hide = true)]
    pub child_row: bool,
    /// Data, threads, seed and output format.
    #[command(flatten)]
    pub run: super::bench_round::SimRunArgs,
}

/// The figures of one mesh size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleRow {
    /// Simulated nodes.
    pub nodes: usize,
    /// Participants per round.
    pub participants: u32,
    /// Nodes per secure-aggregation group.
    pub group_size: u32,
    /// Rounds committed.
    pub rounds_completed: usize,
    /// Mean wall time per committed round, ms.
    pub round_ms: f64,
    /// Mean simulated time per committed round, ms.
    pub sim_round_ms: f64,
    /// Peak distinct peers of one node within a round's window.
    pub peak_connections_per_node: usize,
    /// The node with that peak (index; node 0 leads the committee).
    pub peak_connections_node: usize,
    /// Median over nodes of each node's own peak.
    pub median_connections_per_node: usize,
    /// Peak resident set of the process, bytes (0 where unknown).
    pub peak_rss_bytes: u64,
    /// Mean over nodes of encoded bytes sent plus received per round.
    pub bytes_per_node_per_round: f64,
    /// The busiest node's bytes sent plus received in its busiest round.
    pub max_bytes_per_node_per_round: u64,
    /// Mean over nodes of messages sent plus received per round.
    pub messages_per_node_per_round: f64,
    /// Wall time of local training, per round, ms (all nodes).
    pub training_ms_per_round: f64,
    /// Wall time of the simulator's own test-set evaluation and invariant checks, per round, ms.
    pub simulator_ms_per_round: f64,
    /// Wall time of the whole run (set-up included), s.
    pub wall_s: f64,
    /// Messages the record could not keep (0 unless the run was huge).
    pub unrecorded_messages: u64,
    /// Resident set once the mesh is built, before the first round, bytes.
    pub setup_rss_bytes: u64,
    /// `bytes_per_node_per_round` by message kind.
    pub bytes_per_node_per_round_by_kind: BTreeMap<String, f64>,
    /// Messages the node with the peak connections sent, by kind, over the run.
    pub peak_node_sent_by_kind: BTreeMap<String, u64>,
    /// Messages the node with the peak connections received, by kind, over the run.
    pub peak_node_received_by_kind: BTreeMap<String, u64>,
    /// Most blob copies one node uploaded in one round (the source of a
    /// start model included).
    pub max_blob_uploads_per_node_per_round: u64,
    /// Mean time from a round's start until every node that fetched its
    /// start model held it (rounds after the first), simulated ms.
    pub model_spread_ms: f64,
    /// The longest such time of any round, simulated ms.
    pub max_model_spread_ms: u64,
    /// Groups (and group aggregators) of each committed round, as the
    /// planner scaled them.
    pub groups_per_round: Vec<usize>,
    /// Simulated time of each committed round, ms.
    pub sim_round_ms_each: Vec<u64>,
    /// The committed state after the run as a snapshot, bytes: what a node
    /// that follows the state without the Raft log fetches for each newer
    /// certified state.
    pub state_bytes: usize,
}

/// Runs the benchmark and prints the table or JSON.
pub fn run(args: ScaleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.nodes.iter().all(|n| *n >= 2),
        "--nodes values must be at least 2"
    );
    args.run.check()?;
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    anyhow::ensure!(args.group_size >= 1, "--group-size must be at least 1");
    anyhow::ensure!(
        args.round_deadline_ms >= 1,
        "--round-deadline-ms must be at least 1"
    );
    anyhow::ensure!(
        args.bandwidth_mbps >= 0.0 && args.bandwidth_mbps.is_finite(),
        "--bandwidth-mbps must be a finite number, 0 or more"
    );
    if args.child_row {
        let [nodes] = args.nodes[..] else {
            anyhow::bail!("a child run measures exactly one mesh size");
        };
        let row = measure(&args, nodes)?;
        println!("{}", serde_json::to_string(&row)?);
        return Ok(());
    }
    let mut rows = Vec::new();
    for &nodes in &args.nodes {
        let row = if args.in_process {
            measure(&args, nodes)?
        } else {
            measure_in_child(&args, nodes)?
        };
        rows.push(row);
    }
    if args.run.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&args, &rows);
    }
    Ok(())
}

/// Runs one mesh size in a fresh process of this binary and reads its row.
fn measure_in_child(args: &ScaleArgs, nodes: usize) -> anyhow::Result<ScaleRow> {
    let exe = std::env::current_exe().context("finding this binary to run a mesh size in")?;
    let mut command = Command::new(exe);
    command.args([
        "bench",
        "scale",
        "--child-row",
        "--nodes",
        &nodes.to_string(),
        "--rounds",
        &args.rounds.to_string(),
        "--group-size",
        &args.group_size.to_string(),
        "--latency-ms",
        &format!("{}-{}", args.latency_ms.0, args.latency_ms.1),
        "--bandwidth-mbps",
        &args.bandwidth_mbps.to_string(),
        "--data",
        &args.run.data.to_string(),
        "--threads",
        &args.run.threads.to_string(),
        "--seed",
        &args.run.seed.to_string(),
        "--time-limit-s",
        &args.time_limit_s.to_string(),
        "--round-deadline-ms",
        &args.round_deadline_ms.to_string(),
    ]);
    if let Some(p) = args.participants {
        command.args(["--participants", &p.to_string()]);
    }
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running a mesh size in a child process")?;
    anyhow::ensure!(
        output.status.success(),
        "the run of {nodes} nodes failed ({})",
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("the child run printed no row")?;
    serde_json::from_str(line).context("reading the child run's row")
}

/// Runs one mesh size in this process.
fn measure(args: &ScaleArgs, nodes: usize) -> anyhow::Result<ScaleRow> {
    let started = Instant::now();
    let (train, test) = args.run.load_band()?;
    let participants = args.participants.unwrap_or(nodes as u32);
    let mut spec = super::bench_round::spec(nodes, args.rounds, true, args.run.seed);
    spec.participants_per_round = participants;
    spec.training.group_size = args.group_size;
    spec.training.round_deadline_ms = args.round_deadline_ms;
    let config = MeshSimConfig {
        faults: Faults {
            latency_min_ms: args.latency_ms.0,
            latency_max_ms: args.latency_ms.1,
            ..Faults::default()
        },
        time_limit_ms: args.time_limit_s.saturating_mul(1_000),
        ..args.run.mesh_config(nodes, spec)
    };
    let mut sim = MeshSim::new(config, &train, test)?;
    drop(train);
    sim.set_links(LinkModel {
        per_link_latency: true,
        uplink_mbps: (args.bandwidth_mbps > 0.0).then_some(args.bandwidth_mbps),
    });
    sim.record_traffic(TRANSFERS_MAX);
    let setup_rss_bytes = status_bytes("VmRSS:");
    eprintln!(
        "bench scale: {nodes} nodes ready after {:.1} s, {} MiB resident",
        started.elapsed().as_secs_f64(),
        setup_rss_bytes >> 20
    );
    let run_started = Instant::now();
    while let Some(report) = sim.run_until_round()? {
        eprintln!(
            "bench scale: {nodes} nodes, round {} committed at {:.1} s simulated, {:.1} s wall (accuracy {:.3}), {} MiB resident",
            report.round,
            report.committed_at_ms as f64 / 1e3,
            report.wall_ms as f64 / 1e3,
            report.test_accuracy,
            status_bytes("VmRSS:") >> 20,
        );
    }
    let outcome = sim.outcome(run_started);
    let traffic = sim.take_traffic();
    let ends: Vec<u64> = outcome.rounds.iter().map(|r| r.committed_at_ms).collect();
    let groups_per_round = outcome.rounds.iter().map(|r| r.groups).collect();
    let sim_round_ms_each = std::iter::once(0)
        .chain(ends.iter().copied())
        .zip(&ends)
        .map(|(before, end)| end.saturating_sub(before))
        .collect();
    let completed = ends.len();
    let rounds = completed.max(1) as f64;
    let sim_round_ms = ends.last().copied().unwrap_or(sim.now_ms()) as f64 / rounds;
    let summary = traffic.summary(nodes, &ends, sim_round_ms.round() as u64);
    Ok(ScaleRow {
        nodes,
        participants,
        group_size: args.group_size,
        rounds_completed: completed,
        round_ms: outcome.total_wall_ms as f64 / rounds,
        sim_round_ms,
        peak_connections_per_node: summary.peak_connections_per_node,
        peak_connections_node: summary.peak_connections_node,
        median_connections_per_node: summary.median_connections_per_node,
        peak_rss_bytes: status_bytes("VmHWM:"),
        bytes_per_node_per_round: summary.bytes_per_node_per_round,
        max_bytes_per_node_per_round: summary.max_bytes_per_node_per_round,
        messages_per_node_per_round: summary.messages_per_node_per_round,
        training_ms_per_round: outcome.training_wall_ms as f64 / rounds,
        simulator_ms_per_round: (outcome.evaluation_wall_ms + outcome.checking_wall_ms) as f64
            / rounds,
        wall_s: started.elapsed().as_secs_f64(),
        unrecorded_messages: traffic.unrecorded,
        setup_rss_bytes,
        bytes_per_node_per_round_by_kind: named(summary.bytes_per_node_per_round_by_kind),
        peak_node_sent_by_kind: named(summary.peak_node_sent_by_kind),
        peak_node_received_by_kind: named(summary.peak_node_received_by_kind),
        max_blob_uploads_per_node_per_round: summary.max_blob_uploads_per_node_per_round,
        model_spread_ms: summary.model_spread_ms,
        max_model_spread_ms: summary.max_model_spread_ms,
        groups_per_round,
        sim_round_ms_each,
        state_bytes: sim.state_snapshot_bytes(),
    })
}

fn named<V>(by_kind: BTreeMap<&'static str, V>) -> BTreeMap<String, V> {
    by_kind
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// A size from `/proc/self/status` (`VmHWM:` the peak resident set,
/// `VmRSS:` the current one), bytes; 0 where `/proc` is missing.
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let kib = line.strip_prefix(field)?.trim().strip_suffix("kB")?;
                kib.trim().parse::<u64>().ok()
            })
        })
        .map_or(0, |kib| kib * 1024)
}

/// `10, 10, 15` for the groups of each round.
fn groups_by_round(groups: &[usize]) -> String {
    let each: Vec<String> = groups.iter().map(ToString::to_string).collect();
    each.join(", ")
}

fn print_table(args: &ScaleArgs, rows: &[ScaleRow]) {
    let mut table = Table::new();
    table.set_header([
        "nodes",
        "rounds",
        "wall/round ms",
        "sim/round ms",
        "peak conns/node",
        "median conns/node",
        "peak RSS MiB",
        "KiB/node/round",
        "max KiB/node/round",
        "msgs/node/round",
        "max uploads/node/round",
        "model spread ms",
        "groups by round",
        "state KiB",
        "wall s",
    ]);
    for r in rows {
        table.add_row([
            r.nodes.to_string(),
            r.rounds_completed.to_string(),
            format!("{:.0}", r.round_ms),
            format!("{:.0}", r.sim_round_ms),
            format!(
                "{} (node {})",
                r.peak_connections_per_node, r.peak_connections_node
            ),
            r.median_connections_per_node.to_string(),
            format!("{:.0}", r.peak_rss_bytes as f64 / (1 << 20) as f64),
            format!("{:.0}", r.bytes_per_node_per_round / 1024.0),
            format!("{:.0}", r.max_bytes_per_node_per_round as f64 / 1024.0),
            format!("{:.1}", r.messages_per_node_per_round),
            r.max_blob_uploads_per_node_per_round.to_string(),
            format!("{:.0} (max {})", r.model_spread_ms, r.max_model_spread_ms),
            groups_by_round(&r.groups_per_round),
            format!("{:.0}", r.state_bytes as f64 / 1024.0),
            format!("{:.1}", r.wall_s),
        ]);
    }
    let where_ = if args.in_process {
        "all sizes in this process (peak RSS accumulates)"
    } else {
        "each size in its own process"
    };
    println!(
        "mesh scale, MLP of 100,010 parameters, SecAgg+ groups of {}, links {}-{} ms, uplinks {}, {} thread(s), {where_}\n{table}",
        args.group_size,
        args.latency_ms.0,
        args.latency_ms.1,
        if args.bandwidth_mbps > 0.0 {
            format!("{} Mbit/s", args.bandwidth_mbps)
        } else {
            "unlimited".into()
        },
        args.run.threads,
    );
}
