//! `agent-mesh bench consensus`: closed-loop durable writes against a 3-voter
//! committee of real `agent-mesh node` processes on loopback.
//!
//! In the style of etcd's `benchmark put`: N clients, each with one write in
//! flight on a keep-alive connection of its own ([`kv_client`]), send
//! `POST /v1/kv` to the leader for a fixed time; every write
//! returns only after a majority has it on disk (its write-ahead file, flushed) and the leader
//! applied it. The same disk's fsync latency is measured too, so the
//! single-client latency can be compared with the floor the disk sets:
//! alone, just before and just after each level (the disk's speed drifts),
//! and once with one writer per voter at the same time, because voters
//! sharing one disk flush together at every commit and wait for each
//! other's flushes.
//! Each level gets a fresh committee (new stores), so one level's log does
//! not slow the next, and its own thread count (see [`node_threads`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use comfy_table::Table;
use mesh_consensus::bench::{fsync_times, measure_fsync_concurrent, BenchReport, FsyncReport};
use mesh_node::config::WORKER_THREADS_MAX;

use super::sim::all_cores;
use super::status::get_json;

mod kv_client;
use kv_client::KvClient;

const MESH_ID: &str = "bench";
const VOTERS: usize = 3;

/// Flags of `agent-mesh bench consensus`.
#[derive(Debug, Args)]
pub struct ConsensusArgs {
    /// Run only this many concurrent clients (default: 1, 16, 256 and 1024).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Seconds each level runs.
    #[arg(long, default_value_t = 5)]
    pub duration_s: u64,
    /// Where the nodes keep their stores (default: a temporary folder; the disk under test).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Async worker threads per node (default: with one client, the
    /// machine's cores shared among the voters, at least 1; with more, one per
    /// core, as a lone node runs). 0 means one per core.
    #[arg(long, value_name = "N")]
    pub node_threads: Option<usize>,
    /// Print a JSON list instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Worker threads per node for a level of `clients` (0: one per core). One
/// client's commit is a chain of wake-ups, and fewer threads per node wake
/// each other less; many clients keep the leader busy, and it needs every core.
fn node_threads(args: &ConsensusArgs, clients: usize) -> usize {
    args.node_threads.unwrap_or(if clients == 1 {
        (all_cores() / VOTERS).max(1)
    } else {
        0
    })
}

/// Node processes that are killed when dropped.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(super) fn exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("locating the agent-mesh binary")
}

fn run_exe(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(exe()?)
        .args(args)
        .output()
        .with_context(|| format!("running agent-mesh {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "agent-mesh {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

pub(super) fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// The nodes' HTTP connection caps: every client of the benchmark connects
/// from the same address, up to 4,096 of them plus the benchmark's own scrapes.
const HTTP_CONNECTIONS_MAX: usize = 8_192;

/// The voters' directory names.
fn voter_names() -> impl Iterator<Item = String> {
    (0..VOTERS).map(|i| format!("node-{i}"))
}

/// Keys and certificates for the admin and the voters.
fn prepare(root: &Path) -> anyhow::Result<()> {
    let voters: Vec<(String, &str, String)> = voter_names()
        .map(|n| (n, "committee,observer", "127.0.0.1".to_string()))
        .collect();
    prepare_members(root, &voters)
}

/// A CA under `root/ca`, and a key and certificate in `root/NAME` for the
/// admin and for each `(NAME, roles, host)` of `members` (the host its
/// HTTPS API is reached at).
pub(super) fn prepare_members(
    root: &Path,
    members: &[(String, &str, String)],
) -> anyhow::Result<()> {
    let ca = root.join("ca");
    run_exe(&["ca", "init", "--out", path_str(&ca)?])?;
    let admin = ("admin".to_string(), "admin", "localhost".to_string());
    for (name, roles, host) in std::iter::once(&admin).chain(members) {
        let dir = root.join(name);
        run_exe(&["keygen", "--out", path_str(&dir)?])?;
        let cert = dir.join("node.cert.pem");
        let (ca, dir_s, cert) = (path_str(&ca)?, path_str(&dir)?, path_str(&cert)?);
        run_exe(&[
            "ca", "issue", "--ca", ca, "--node", dir_s, "--roles", roles, "--out", cert, "--host",
            host,
        ])?;
    }
    Ok(())
}

/// Fresh stores and configs for one level's committee.
fn configure(root: &Path, worker_threads: usize) -> anyhow::Result<()> {
    for name in voter_names() {
        let dir = root.join(name);
        match std::fs::remove_dir_all(dir.join("data")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let config = format!(
            "mesh_id = \"{MESH_ID}\"\ndata_dir = \"data\"\n[identity]\nkey = \"node.key.pem\"\n\
             cert = \"node.cert.pem\"\nca_cert = \"../ca/ca.cert.pem\"\nca_pin = \"../ca/ca.pin\"\n\
             [consensus]\nbootstrap_expect = {VOTERS}\n[log]\nlevel = \"warn\"\n\
             [runtime]\nworker_threads = {worker_threads}\n\
             [http]\nplain = true\nmax_connections = {HTTP_CONNECTIONS_MAX}\n\
             max_connections_per_ip = {HTTP_CONNECTIONS_MAX}\n"
        );
        std::fs::write(dir.join("node.toml"), config)?;
    }
    Ok(())
}

fn read_node_json(dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("data").join("node.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn spawn_node(dir: &Path, bootstrap: Option<&str>) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join("node.log"))?;
    let mut command = Command::new(exe()?);
    command
        .args(["node", "--config", path_str(&dir.join("node.toml"))?])
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(addr) = bootstrap {
        command.env("AGENT_MESH_BOOTSTRAP", addr);
    }
    command.spawn().context("starting a node process")
}

async fn wait_until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> anyhow::Result<T> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if let Some(value) = check().await {
            return Ok(value);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out waiting for {what}")
}

/// Starts the voters and returns their processes and the leader's API URL.
async fn start_committee(
    root: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<(Processes, String)> {
    let mut processes = Processes(Vec::new());
    let mut urls = Vec::new();
    let mut boot: Option<String> = None;
    for name in voter_names() {
        let dir = root.join(name);
        processes.0.push(spawn_node(&dir, boot.as_deref())?);
        let info = wait_until("a node to start", || async { read_node_json(&dir) }).await?;
        urls.push(info["http_url"].as_str().unwrap_or_default().to_string());
        if boot.is_none() {
            boot = info["listen_addrs"]
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str())
                        .find(|a| a.contains("/tcp/"))
                })
                .map(String::from);
        }
    }
    let leader = wait_until("the committee to elect a leader", || async {
        for url in &urls {
            let c = get_json(client, &format!("{url}/v1/consensus"))
                .await
                .ok()?;
            let voters = c["voters"].as_array().map_or(0, |v| v.len());
            if c["role"] == "leader" && voters == VOTERS {
                return Some(url.clone());
            }
        }
        None
    })
    .await?;
    Ok((processes, leader))
}

/// The leader's proposal-latency histogram totals: (sum of seconds, count).
async fn proposal_totals(client: &reqwest::Client, leader: &str) -> (f64, f64) {
    let text = match client.get(format!("{leader}/metrics")).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("consensus_proposal_latency_seconds_sum"),
        value("consensus_proposal_latency_seconds_count"),
    )
}

/// The socket address of an API URL such as `http://127.0.0.1:8080`.
fn api_addr(url: &str) -> anyhow::Result<std::net::SocketAddr> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("bad API URL {url:?}"))?;
    parsed
        .socket_addrs(|| None)?
        .into_iter()
        .next()
        .with_context(|| format!("API URL {url:?} has no address"))
}

/// Pause after a failed connection, so a node that is down is not spun on.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);
/// Longest one write may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One closed-loop writer: writes key `c{index}` with a rising value until
/// `deadline`; returns the latencies of the successful ones and
/// the number that failed.
async fn writer_loop(
    addr: std::net::SocketAddr,
    token: String,
    index: usize,
    deadline: Instant,
) -> (Vec<Duration>, usize) {
    let (mut latencies, mut errors, mut seq) = (Vec::new(), 0usize, 0u64);
    let mut connection: Option<KvClient> = None;
    while Instant::now() < deadline {
        let client = match &mut connection {
            Some(client) => client,
            None => match KvClient::connect(addr, &token).await {
                Ok(client) => connection.insert(client),
                Err(_) => {
                    errors += 1;
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            },
        };
        seq += 1;
        let body = serde_json::json!({ "key": format!("c{index}"), "value": seq.to_string() });
        let body = body.to_string().into_bytes();
        let t = Instant::now();
        match tokio::time::timeout(REQUEST_TIMEOUT, client.put(&body)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => latencies.push(t.elapsed()),
            Ok(Ok(_)) => errors += 1,
            Ok(Err(_)) | Err(_) => {
                errors += 1;
                connection = None;
            }
        }
    }
    (latencies, errors)
}

/// Runs `clients` closed-loop writers against `leader` for `duration`, each
/// on a keep-alive connection of its own.
async fn closed_loop(
    leader: &str,
    token: &str,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<BenchReport> {
    let addr = api_addr(leader)?;
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        tasks.spawn(writer_loop(addr, token.to_string(), c, deadline));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    while let Some(joined) = tasks.join_next().await {
        if let Ok((latencies, failed)) = joined {
            all.extend(latencies);
            errors += failed;
        }
    }
    Ok(BenchReport::from_latencies(
        clients,
        all,
        errors,
        started.elapsed(),
    ))
}

/// Runs the benchmark and prints the table (or JSON).
pub fn run(args: ConsensusArgs) -> anyhow::Result<()> {
    let levels = match args.clients {
        Some(0) => bail!("--clients must be at least 1"),
        Some(n) if n > 4_096 => bail!("--clients is limited to 4096"),
        Some(n) => vec![n],
        None => vec![1, 16, 256, 1_024],
    };
    let temp = work_dir(args.dir.as_deref())?;
    let root = temp.path();
    if args.node_threads.is_some_and(|n| n > WORKER_THREADS_MAX) {
        bail!("--node-threads is limited to {WORKER_THREADS_MAX}");
    }
    prepare(root)?;
    let fsync_voters =
        measure_fsync_concurrent(root, VOTERS, FSYNC_PROBE_SAMPLES).context("measuring fsync")?;
    let mut rows = Vec::new();
    for clients in levels {
        if !args.json {
            eprintln!("running {clients} clients for {} s ...", args.duration_s);
        }
        let threads = node_threads(&args, clients);
        configure(root, threads)?;
        let mut fsync = fsync_times(root, 1, FSYNC_PROBE_SAMPLES / 2).context("measuring fsync")?;
        let (report, leader_ms) = run_level(root, clients, args.duration_s)?;
        fsync.extend(fsync_times(root, 1, FSYNC_PROBE_SAMPLES / 2).context("measuring fsync")?);
        rows.push(Row {
            report,
            leader_propose_mean_ms: leader_ms,
            node_threads: threads,
            fsync: FsyncReport::from_times(fsync),
        });
    }
    print(&rows, &fsync_voters, args.json)
}

/// An admin token for the mesh `mesh_id`, from the admin key and
/// certificate [`prepare_members`] made under `root`.
pub(super) fn admin_token(root: &Path, mesh_id: &str, ttl_s: i64) -> anyhow::Result<String> {
    super::token::make_token(&super::token::TokenArgs {
        key: root.join("admin"),
        cert: root.join("admin").join("node.cert.pem"),
        mesh_id: mesh_id.into(),
        ttl_s,
    })
}

/// A temporary folder for a benchmark's nodes, under `dir` when given
/// (created if missing), else under the system's temporary folder.
pub(super) fn work_dir(dir: Option<&Path>) -> anyhow::Result<tempfile::TempDir> {
    Ok(match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            tempfile::tempdir_in(dir)?
        }
        None => tempfile::tempdir()?,
    })
}

/// Write+fsync samples behind each figure of the disk: a level's own
/// fsync is half of them taken just before it and half just after, since
/// the disk's speed drifts over minutes.
const FSYNC_PROBE_SAMPLES: usize = 500;

/// One level's figures.
struct Row {
    report: BenchReport,
    leader_propose_mean_ms: f64,
    node_threads: usize,
    /// The disk's fsync alone, around this level.
    fsync: FsyncReport,
}

/// Starts a committee, runs `clients` closed-loop writers for `duration_s`
/// and stops it; returns the report and the leader's mean propose time.
fn run_level(root: &Path, clients: usize, duration_s: u64) -> anyhow::Result<(BenchReport, f64)> {
    // The clients' own threads: no more than they can keep busy.
    let runtime = super::node::runtime_with_threads(clients.min(all_cores()))?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let (processes, leader) = start_committee(root, &client).await?;
        let token = admin_token(root, MESH_ID, 3_600)?;
        let duration = Duration::from_secs(duration_s.max(1));
        let before = proposal_totals(&client, &leader).await;
        let report = closed_loop(&leader, &token, clients, duration).await?;
        let after = proposal_totals(&client, &leader).await;
        drop(processes);
        let count = (after.1 - before.1).max(1.0);
        anyhow::Ok((report, (after.0 - before.0) / count * 1_000.0))
    })
}

fn print(rows: &[Row], voters: &FsyncReport, json: bool) -> anyhow::Result<()> {
    if json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|row| {
                let mut value = serde_json::to_value(&row.report).unwrap_or_default();
                value["leader_propose_mean_ms"] = serde_json::json!(row.leader_propose_mean_ms);
                value["fsync_p50_ms"] = serde_json::json!(row.fsync.p50_ms);
                value["fsync_voters_p50_ms"] = serde_json::json!(voters.p50_ms);
                value["node_threads"] = serde_json::json!(row.node_threads);
                value
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let mut table = Table::new();
    table.set_header([
        "clients",
        "commits/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "fsync p50 ms",
        "p50 / fsync",
        "leader propose mean ms",
        "node threads",
    ]);
    for row in rows {
        let r = &row.report;
        table.add_row([
            r.clients.to_string(),
            format!("{:.0}", r.throughput_per_s),
            format!("{:.2}", r.p50_ms),
            format!("{:.2}", r.p99_ms),
            format!("{:.2}", r.max_ms),
            r.errors.to_string(),
            format!("{:.3}", row.fsync.p50_ms),
            format!("{:.1}x", r.p50_ms / row.fsync.p50_ms.max(1e-6)),
            format!("{:.2}", row.leader_propose_mean_ms),
            match row.node_threads {
                0 => "1 per core".to_string(),
                n => n.to_string(),
            },
        ]);
    }
    println!("3 voters, real processes on loopback, durable stores (write-ahead file + redb)");
    println!("(a fresh committee per level; leader propose: time inside the committee on the leader, without HTTP)");
    println!(
        "fsync: a small append + fdatasync alone, around each level; {:.3} ms p50 with {VOTERS} writers at once (as the voters flush)",
        voters.p50_ms
    );
    println!("{table}");
    Ok(())
}
