//! `agent-mesh status --api URL`: what a running node says about itself and the committee.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use comfy_table::Table;
use serde_json::Value;

/// Flags of `agent-mesh status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Base URL of the node's API (printed by `scripts/deploy.sh`, or in DATA_DIR/node.json).
    #[arg(long, value_name = "URL", default_value = "https://127.0.0.1:8080")]
    pub api: String,
    /// How the node's HTTPS certificate is verified.
    #[command(flatten)]
    pub tls: super::api_client::TlsArgs,
    /// Wait until the node has at least this many admitted peers (exit 1 on timeout).
    #[arg(long, value_name = "N")]
    pub wait_peers: Option<usize>,
    /// Give up after this many seconds (with --wait-peers; also the request timeout).
    #[arg(long, default_value_t = 30)]
    pub timeout_s: u64,
    /// Print the raw JSON of /v1/status, /v1/peers and /v1/consensus.
    #[arg(long)]
    pub json: bool,
}

/// GETs `url` and parses the JSON body; non-2xx answers become errors with the body.
pub async fn get_json(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", text.trim());
    }
    serde_json::from_str(&text).with_context(|| format!("GET {url}: body is not JSON"))
}

/// Prints the node's status, peers and committee view.
pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(status(args))
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout_s.max(1));
    let client = super::api_client::async_client(&args.api, &args.tls, timeout, false)?;
    let base = args.api.trim_end_matches('/');
    if let Some(want) = args.wait_peers {
        wait_for_peers(&client, base, want, Duration::from_secs(args.timeout_s)).await?;
    }
    let status = get_json(&client, &format!("{base}/v1/status")).await?;
    let peers = get_json(&client, &format!("{base}/v1/peers")).await?;
    let consensus = get_json(&client, &format!("{base}/v1/consensus"))
        .await
        .ok();
    if args.json {
        let all = serde_json::json!({ "status": status, "peers": peers, "consensus": consensus });
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    print_status(&status, &peers, consensus.as_ref());
    Ok(())
}

async fn wait_for_peers(
    client: &reqwest::Client,
    base: &str,
    want: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let admitted = get_json(client, &format!("{base}/v1/status"))
            .await
            .ok()
            .and_then(|s| s["peers_admitted"].as_u64())
            .unwrap_or(0) as usize;
        if admitted >= want {
            return Ok(());
        }
        if started.elapsed() >= limit {
            bail!("{base} has {admitted} admitted peers after {limit:?}, wanted {want}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_status(status: &Value, peers: &Value, consensus: Option<&Value>) {
    println!("node      {}", text(&status["node_id"]));
    println!("mesh      {}", text(&status["mesh_id"]));
    println!("roles     {}", text(&status["roles"]));
    let zone = status["zone"].as_str().unwrap_or("(none)");
    println!("zone      {zone}");
    println!(
        "peers     {} admitted, {} connected",
        text(&status["peers_admitted"]),
        text(&status["peers_connected"])
    );
    match consensus {
        Some(c) => {
            println!(
                "committee role {}, leader {}, term {}, commit index {}",
                text(&c["role"]),
                text(&c["leader"]),
                text(&c["term"]),
                text(&c["commit_index"])
            );
            println!(
                "          voters {}, learners {}, last snapshot {}",
                text(&c["voters"]),
                text(&c["learners"]),
                text(&c["last_snapshot"])
            );
            if let Some(zones) = c["member_zones"].as_object().filter(|z| !z.is_empty()) {
                let zones: Vec<String> = zones
                    .iter()
                    .map(|(member, zone)| format!("{member}: {}", text(zone)))
                    .collect();
                println!("          zones {}", zones.join(", "));
            }
        }
        None => println!("committee (this node does not run consensus)"),
    }
    let mut table = Table::new();
    table.set_header(["peer", "state", "rtt ms", "last seen ms ago"]);
    for peer in peers.as_array().into_iter().flatten() {
        table.add_row([
            text(&peer["peer_id"]),
            text(&peer["state"]),
            text(&peer["rtt_ms"]),
            text(&peer["last_seen_ms_ago"]),
        ]);
    }
    println!("{table}");
}
