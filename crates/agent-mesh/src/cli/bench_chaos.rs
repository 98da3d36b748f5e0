//! `agent-mesh bench chaos`: real node processes under seeded faults while
//! clients write and read keys and a job trains; afterwards the key-value
//! history is checked for linearizability and the job for lost or changed
//! committed rounds.
//!
//! ```text
//!   hosts (namespaces on a bridge, or loopback) ── N `agent-mesh node` processes
//!   clients ── POST /v1/kv (any node) · GET /v1/kv/{key} (leader) ──► history
//!   watcher ── GET /v1/jobs/chaos on every node ──► round ledger
//!   fault loop ── kill -9 · SIGSTOP · partitions · loss · slow link ·
//!                 clock skew · full disk, one at a time, seeded
//!   end: heal all, restart the dead, wait until every node holds the same
//!        state, check the history (WGL) and the rounds
//! ```
//!
//! Module map: [`hosts`] (where nodes run, how faults reach them),
//! [`schedule`] (the seeded fault plan), [`workload`] (clients, job watcher),
//! [`linearizability`] (the checker).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use comfy_table::Table;
use serde::Serialize;

use super::bench_consensus::path_str;

pub mod hosts;
pub mod linearizability;
pub mod schedule;
pub mod workload;

use hosts::Hosts;
use schedule::{Fault, FaultKind, Plan};
use workload::{RoundLedger, Target};

const MESH_ID: &str = "chaos";
const JOB: &str = "chaos";
/// Longest the end of a run waits for every node to hold the same state.
const CONVERGE_LIMIT: Duration = Duration::from_secs(180);
/// Longest the start waits for a committee and an accepted job.
const START_LIMIT: Duration = Duration::from_secs(180);
/// Most concurrent clients.
const CLIENTS_MAX: usize = 256;
/// Longest run.
const DURATION_S_MAX: u64 = 7 * 86_400;
/// Search steps the checker may spend per key.
const CHECK_STEPS_MAX: u64 = 200_000_000;

/// Flags of `agent-mesh bench chaos`.
#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// Node processes (3 to 9); the first three found the committee.
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// Seconds of faults and load.
    #[arg(long, default_value_t = 300)]
    pub duration_s: u64,
    /// Seed of the fault plan and the clients' choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Concurrent key-value clients.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Keys the clients share.
    #[arg(long, default_value_t = 8)]
    pub keys: usize,
    /// Folder of the breast-cancer CSV set the job trains on (sharded over the nodes).
    #[arg(long, value_name = "DIR", default_value = "data/breast-cancer")]
    pub data: PathBuf,
    /// Where the nodes keep their files (default: a temporary folder, removed after).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Run on loopback even where network namespaces could be made.
    #[arg(long)]
    pub loopback: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What a run did and found.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// `namespaces` or `loopback`.
    pub network: String,
    /// Fault kinds left out, and why.
    pub skipped: Vec<String>,
    /// Node processes.
    pub nodes: usize,
    /// Seconds of faults and load.
    pub duration_s: u64,
    /// The seed.
    pub seed: u64,
    /// Writes acknowledged.
    pub writes_ok: usize,
    /// Writes whose outcome is unknown (error or timeout).
    pub writes_unknown: usize,
    /// Reads answered.
    pub reads_ok: usize,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u32>,
    /// Node processes that exited without being killed (restarted after).
    pub unplanned_exits: u32,
    /// Keys whose history is not linearizable.
    pub linearizability_anomalies: usize,
    /// Keys the checker could not decide.
    pub inconclusive: usize,
    /// Committed rounds of the job seen.
    pub rounds_committed: usize,
    /// Lost, changed or unchained rounds, in words.
    pub round_anomalies: Vec<String>,
    /// Whether every node ended with the same state.
    pub converged: bool,
    /// Seconds the end waited for that.
    pub converge_s: f64,
}

impl Summary {
    /// Whether the run found anything wrong.
    pub fn failed(&self) -> bool {
        self.linearizability_anomalies > 0 || !self.round_anomalies.is_empty() || !self.converged
    }
}

/// Runs the chaos benchmark and prints its summary.
pub fn run(args: ChaosArgs) -> anyhow::Result<()> {
    if !(3..=9).contains(&args.nodes) {
        bail!("--nodes must be 3 to 9");
    }
    if !(1..=CLIENTS_MAX).contains(&args.clients) || args.keys == 0 {
        bail!("--clients must be 1 to {CLIENTS_MAX} and --keys at least 1");
    }
    if args.duration_s > DURATION_S_MAX {
        bail!("--duration-s is limited to {DURATION_S_MAX} (a week)");
    }
    let data = std::fs::canonicalize(&args.data)
        .with_context(|| format!("the data folder {} (pass --data)", args.data.display()))?;
    let temp = super::bench_consensus::work_dir(args.dir.as_deref())?;
    let root = temp.path();
    let (mut hosts, fallback) = Hosts::new(root, args.nodes, !args.loopback)?;
    prepare(root, &hosts)?;
    if let Some(reason) = &fallback {
        eprintln!("chaos: running on loopback: {reason}");
    }
    configure(&hosts, &data)?;
    let runtime = super::node::runtime_with_threads(2)?;
    // SIGINT or SIGTERM ends the run early, still removing namespaces and mounts.
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = drive(&args, root, &mut hosts) => outcome,
            _ = super::node::shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    drop(hosts);
    // Node logs are kept for a run that failed or found anything.
    let summary = match outcome {
        Ok(summary) if !summary.failed() => summary,
        Ok(summary) => {
            print(&summary, args.json)?;
            let kept = temp.keep();
            bail!(
                "the chaos run found anomalies (see above); node logs kept in {}",
                kept.display()
            );
        }
        Err(e) => {
            let kept = temp.keep();
            return Err(e.context(format!("node logs kept in {}", kept.display())));
        }
    };
    print(&summary, args.json)
}

/// Keys and certificates for the admin and every node (for HTTPS at its address).
fn prepare(root: &Path, hosts: &Hosts) -> anyhow::Result<()> {
    let roles = "committee,aggregator,trainer,observer";
    let members: Vec<(String, &str, String)> = hosts
        .nodes
        .iter()
        .enumerate()
        .map(|(i, host)| (format!("node-{i}"), roles, host.ip.clone()))
        .collect();
    super::bench_consensus::prepare_members(root, &members)
}

/// Every node's config: fixed addresses, every other node to bootstrap
/// from, a shard of the data.
fn configure(hosts: &Hosts, data: &Path) -> anyhow::Result<()> {
    let addrs = hosts.p2p_addrs();
    let shards = hosts.nodes.len();
    for (i, host) in hosts.nodes.iter().enumerate() {
        let others: Vec<String> = addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| format!("{a:?}"))
            .collect();
        let config = format!(
            "mesh_id = \"{MESH_ID}\"\ndata_dir = \"data\"\n[identity]\nkey = \"node.key.pem\"\n\
             cert = \"node.cert.pem\"\nca_cert = \"../ca/ca.cert.pem\"\nca_pin = \"../ca/ca.pin\"\n\
             [network]\nlisten = [{listen:?}]\nbootstrap = [{others}]\nseed = {i}\n\
             [http]\naddr = {http:?}\n[consensus]\nbootstrap_expect = 3\n[log]\nlevel = \"warn\"\n\
             [data]\ndataset = \"breast-cancer\"\ndir = {data:?}\nshards = {shards}\nshard = {i}\n",
            listen = host.p2p_addr(),
            others = others.join(", "),
            http = host.http_addr(),
            data = path_str(data)?,
        );
        std::fs::write(host.dir.join("node.toml"), config)?;
    }
    Ok(())
}

/// The job every run trains: logistic regression on the breast-cancer shards,
/// as many rounds as the run lasts.
fn job_spec(nodes: usize) -> serde_json::Value {
    serde_json::json!({
        "job": JOB,
        "spec": {
            "model": "logistic", "rounds": 100_000, "participants_per_round": nodes.min(3),
            "rule_name": "fedavg", "byzantine_count": 0, "secagg": false, "dp_budget": null,
            "training": {
                "dataset": "breast-cancer",
                "schema": {"input": {"table": {"features": 30}},
                           "task": {"classification": {"classes": ["0", "1"]}}},
                "epochs": 1, "batch_size": 32, "learning_rate": 0.1, "seed": 1,
                "round_deadline_ms": 15_000, "group_size": 5, "clip_norm": 10.0,
                "noise_multiplier": 0.0, "sampling_rate": 1.0
            }
        }
    })
}

/// Starts the nodes, runs load and faults, heals, and checks.
async fn drive(args: &ChaosArgs, root: &Path, hosts: &mut Hosts) -> anyhow::Result<Summary> {
    for i in 0..hosts.nodes.len() {
        hosts.start(i, 0)?;
    }
    let token = super::bench_consensus::admin_token(root, MESH_ID, 86_400)?;
    let tls = super::api_client::TlsArgs {
        ca: Some(root.join("ca")),
        client_cert: None,
    };
    let first = hosts
        .nodes
        .first()
        .map(|h| h.http_url.as_str())
        .unwrap_or_default();
    let target = Target {
        http: super::api_client::async_client(first, &tls, Duration::from_secs(60), true)?,
        urls: hosts.nodes.iter().map(|h| h.http_url.clone()).collect(),
        token,
        started: Instant::now(),
    };
    submit_job(&target, hosts.nodes.len()).await?;
    if !args.json {
        eprintln!(
            "chaos: {} nodes up, job submitted; {} s of faults and load (seed {})",
            hosts.nodes.len(),
            args.duration_s,
            args.seed
        );
    }
    let deadline = Instant::now() + Duration::from_secs(args.duration_s);
    let mut clients = tokio::task::JoinSet::new();
    for id in 0..args.clients {
        let client = workload::kv_client(target.clone(), id, args.keys, args.seed, deadline);
        clients.spawn(client);
    }
    let watcher = tokio::spawn(workload::watch_job(target.clone(), JOB.into(), deadline));
    let mut summary = Summary {
        network: format!("{:?}", hosts.network).to_lowercase(),
        skipped: hosts.skipped(),
        nodes: hosts.nodes.len(),
        duration_s: args.duration_s,
        seed: args.seed,
        ..Summary::default()
    };
    inject_faults(hosts, args, deadline, &mut summary).await?;
    let mut history = Vec::new();
    while let Some(ops) = clients.join_next().await {
        history.extend(ops.context("a client task failed")?);
    }
    let mut ledger = watcher.await.context("the job watcher failed")?;
    converge(hosts, &target, &mut summary, &mut ledger).await?;
    tally(&mut summary, &history, &ledger);
    let report =
        tokio::task::spawn_blocking(move || linearizability::check(&history, CHECK_STEPS_MAX))
            .await?;
    summary.linearizability_anomalies = report.anomalies();
    summary.inconclusive = report.inconclusive();
    Ok(summary)
}

async fn submit_job(target: &Target, nodes: usize) -> anyhow::Result<()> {
    let spec = job_spec(nodes);
    let started = Instant::now();
    let mut last = String::from("no answer");
    while started.elapsed() < START_LIMIT {
        for i in 0..target.urls.len() {
            match target.post(i, "/v1/jobs", Some(&spec)).await {
                Some((status, _)) if (200..300).contains(&status) => return Ok(()),
                Some((status, body)) => last = format!("{status}: {body}"),
                None => last = format!("{} did not answer", target.urls[i]),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!("the mesh did not accept the job within {START_LIMIT:?}: {last}")
}

/// Injects planned faults, one at a time, until `deadline`.
async fn inject_faults(
    hosts: &mut Hosts,
    args: &ChaosArgs,
    deadline: Instant,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let mut plan = Plan::new(args.seed, hosts.kinds(), hosts.nodes.len());
    // Let the clients and the job get going before the first fault.
    tokio::time::sleep(Duration::from_secs(3).min(deadline - Instant::now())).await;
    while Instant::now() < deadline {
        let Some(fault) = plan.next_fault() else {
            tokio::time::sleep(deadline - Instant::now()).await;
            break;
        };
        if !args.json {
            eprintln!(
                "chaos: {} on {:?} for {} ms",
                fault.kind, fault.targets, fault.hold_ms
            );
        }
        match inject(hosts, &fault).await {
            Ok(()) => *summary.faults.entry(fault.kind.to_string()).or_default() += 1,
            Err(e) => {
                // This machine cannot inject it: say so and plan no more of it.
                eprintln!("chaos: cannot inject {}: {e:#}", fault.kind);
                summary.skipped.push(format!("{}: {e:#}", fault.kind));
                plan.disable(fault.kind);
                hosts.heal_network();
                let _ = hosts.signal(fault.targets[0], "CONT");
            }
        }
        summary.unplanned_exits += restart_exited(hosts)?;
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(Duration::from_millis(fault.settle_ms).min(left)).await;
    }
    Ok(())
}

/// Applies one fault, holds it, and heals it.
async fn inject(hosts: &mut Hosts, fault: &Fault) -> anyhow::Result<()> {
    let hold = Duration::from_millis(fault.hold_ms);
    let t = fault.targets[0];
    match fault.kind {
        FaultKind::Kill => {
            hosts.kill(t);
            tokio::time::sleep(hold).await;
            hosts.start(t, 0)?;
        }
        FaultKind::Pause => {
            hosts.signal(t, "STOP")?;
            tokio::time::sleep(hold).await;
            hosts.signal(t, "CONT")?;
        }
        FaultKind::Isolate | FaultKind::Split => {
            hosts.partition(&fault.targets)?;
            tokio::time::sleep(hold).await;
            hosts.heal_network();
        }
        FaultKind::Loss => {
            hosts.loss(t, fault.amount)?;
            tokio::time::sleep(hold).await;
            hosts.heal_network();
        }
        FaultKind::SlowLink => {
            hosts.slow_link(t)?;
            tokio::time::sleep(hold).await;
            hosts.heal_network();
        }
        FaultKind::ClockSkew => {
            hosts.kill(t);
            hosts.start(t, fault.amount)?;
            tokio::time::sleep(hold).await;
            hosts.kill(t);
            hosts.start(t, 0)?;
        }
        FaultKind::DiskFull => {
            let ballast = hosts.fill_disk(t)?;
            tokio::time::sleep(hold).await;
            std::fs::remove_file(&ballast)
                .with_context(|| format!("removing {}", ballast.display()))?;
        }
    }
    Ok(())
}

/// Restarts every node whose process exited; returns how many had.
fn restart_exited(hosts: &mut Hosts) -> anyhow::Result<u32> {
    let mut exited = 0;
    for i in 0..hosts.nodes.len() {
        if hosts.restart_if_exited(i)? {
            eprintln!("chaos: node {i} had exited; started again (see node-{i}/node.log)");
            exited += 1;
        }
    }
    Ok(exited)
}

/// Heals everything and waits until every node reports the same state hash
/// and applied index; then checks every node's copy of the job.
async fn converge(
    hosts: &mut Hosts,
    target: &Target,
    summary: &mut Summary,
    ledger: &mut RoundLedger,
) -> anyhow::Result<()> {
    hosts.heal_network();
    for i in 0..hosts.nodes.len() {
        let _ = hosts.signal(i, "CONT");
    }
    summary.unplanned_exits += restart_exited(hosts)?;
    let started = Instant::now();
    // A stopped job stops changing the state, so the copies can be compared.
    cancel_job(target).await;
    while started.elapsed() < CONVERGE_LIMIT {
        let mut states = Vec::new();
        for i in 0..hosts.nodes.len() {
            let c = target.get(i, "/v1/consensus").await;
            states.push(c.map(|c| (c["state_hash"].to_string(), c["last_applied"].as_u64())));
        }
        let first = states[0].clone();
        if first.is_some() && states.iter().all(|s| *s == first) {
            summary.converged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    summary.converge_s = started.elapsed().as_secs_f64();
    for i in 0..hosts.nodes.len() {
        match target.get(i, &format!("/v1/jobs/{JOB}")).await {
            Some(view) => ledger.check_final(i, &view),
            None => ledger
                .anomalies
                .push(format!("node {i}: the job is not readable at the end")),
        }
    }
    Ok(())
}

/// Cancels the job through any node that takes it (bounded; 409 means it already ended).
async fn cancel_job(target: &Target) {
    for attempt in 0..60 {
        let path = format!("/v1/jobs/{JOB}/cancel");
        let answer = target.post(attempt % target.urls.len(), &path, None).await;
        if let Some((status, _)) = answer {
            if (200..300).contains(&status) || status == 409 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Counts the operations and rounds into the summary.
fn tally(summary: &mut Summary, history: &[linearizability::Operation], ledger: &RoundLedger) {
    use linearizability::OpKind;
    for op in history {
        match (&op.kind, op.completed_ns) {
            (OpKind::Write(_), Some(_)) => summary.writes_ok += 1,
            (OpKind::Write(_), None) => summary.writes_unknown += 1,
            (OpKind::Read(_), _) => summary.reads_ok += 1,
        }
    }
    summary.rounds_committed = ledger.committed.len();
    summary.round_anomalies = ledger.anomalies.clone();
}

fn print(summary: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
        return Ok(());
    }
    let faults: u32 = summary.faults.values().sum();
    let mut table = Table::new();
    table.set_header(["what", "figure"]);
    let rows = [
        ("network", summary.network.clone()),
        ("nodes", summary.nodes.to_string()),
        ("seconds of faults and load", summary.duration_s.to_string()),
        ("seed", summary.seed.to_string()),
        ("writes acknowledged", summary.writes_ok.to_string()),
        (
            "writes with unknown outcome",
            summary.writes_unknown.to_string(),
        ),
        (
            "reads (linearizable, at the leader)",
            summary.reads_ok.to_string(),
        ),
        ("faults injected", faults.to_string()),
        ("unplanned node exits", summary.unplanned_exits.to_string()),
        (
            "linearizability anomalies (keys)",
            summary.linearizability_anomalies.to_string(),
        ),
        (
            "keys undecided by the checker",
            summary.inconclusive.to_string(),
        ),
        (
            "committed rounds seen",
            summary.rounds_committed.to_string(),
        ),
        (
            "lost or changed rounds",
            summary.round_anomalies.len().to_string(),
        ),
        (
            "every node converged",
            format!("{} (after {:.1} s)", summary.converged, summary.converge_s),
        ),
    ];
    for (what, figure) in rows {
        table.add_row([what.to_string(), figure]);
    }
    println!("{table}");
    for (kind, count) in &summary.faults {
        println!("  {kind}: {count}");
    }
    for skipped in &summary.skipped {
        println!("  not injected: {skipped}");
    }
    for anomaly in &summary.round_anomalies {
        println!("  round anomaly: {anomaly}");
    }
    Ok(())
}
