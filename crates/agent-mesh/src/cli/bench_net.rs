//! `agent-mesh bench net`: gossip time-to-all over in-process nodes (memory
//! transport) and request-response throughput of large blobs over loopback TCP.

use clap::Args;
use comfy_table::Table;
use mesh_net::bench::{self, GossipBench};
use mesh_net::link_delay::LinkDelay;

/// Flags of `agent-mesh bench net`.
#[derive(Debug, Args)]
pub struct NetArgs {
    /// Mesh sizes for the gossip measurement (comma-separated).
    #[arg(long, value_name = "N", value_delimiter = ',', default_values_t = [100])]
    pub nodes: Vec<usize>,
    /// Messages published per mesh size.
    #[arg(long, default_value_t = 50)]
    pub messages: usize,
    /// Blob sizes in MiB for the throughput measurement (comma-separated).
    #[arg(long, value_name = "MIB", value_delimiter = ',', default_values_t = [1, 64])]
    pub blob_mib: Vec<usize>,
    /// Total MiB sent per blob size (at least one request each).
    #[arg(long, default_value_t = 512)]
    pub volume_mib: usize,
    /// Seed of identities, topology and link delays.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// One-way delay of every in-process link for the gossip measurement,
    /// in ms: `MIN-MAX` (each connection draws its own, seeded) or one
    /// value. Without it links are instant.
    #[arg(long, value_name = "MIN-MAX", value_parser = parse_link_delay)]
    pub link_delay_ms: Option<LinkDelay>,
    /// Only the gossip measurement (skip the blob throughput).
    #[arg(long)]
    pub gossip_only: bool,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Runs both measurements and prints them; progress goes to stderr, and
/// the nodes' logs too when `AGENT_MESH_LOG` holds a filter (`mesh_net=debug`).
pub fn run(args: NetArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.nodes.iter().all(|&n| n >= 2),
        "--nodes values must be at least 2"
    );
    anyhow::ensure!(args.messages >= 1, "--messages must be at least 1");
    anyhow::ensure!(
        args.blob_mib.iter().all(|&m| m >= 1),
        "--blob-mib values must be at least 1"
    );
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENT_MESH_LOG")
        // Hundreds of nodes starting and stopping at once warn by the
        // thousand (a bootstrap before any peer is known, handshakes cut
        // off by a close, gossip to a peer whose connection just closed):
        // by default only errors and the progress show.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("error,libp2p_gossipsub=off,mesh_net::bench=info")
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let mut gossip = Vec::new();
    for &n in &args.nodes {
        gossip.push(bench::gossip_time_to_all(GossipBench {
            nodes: n,
            messages: args.messages,
            seed: args.seed,
            link_delay: args.link_delay_ms,
        })?);
    }
    let sizes: Vec<(usize, usize)> = args
        .blob_mib
        .iter()
        .map(|&mib| (mib << 20, (args.volume_mib / mib).max(1)))
        .collect();
    let throughput = if args.gossip_only {
        Vec::new()
    } else {
        bench::request_throughput(&sizes, args.seed)?
    };
    if args.json {
        let json = serde_json::json!({
            "gossip": gossip.iter().map(|g| serde_json::json!({
                "nodes": g.nodes, "messages": g.messages, "delivered": g.delivered,
                "p50_ms": g.p50_ms, "p99_ms": g.p99_ms, "setup_s": g.setup_s,
                "unadmitted_relays": g.unadmitted_relays,
                "link_delay_ms": g.link_delay.map(|d| [d.min_ms, d.max_ms]),
                "connections_max": g.connections_max,
                "connections_median": g.connections_median,
                "unused_closed": g.unused_closed,
            })).collect::<Vec<_>>(),
            "throughput": throughput.iter().map(|t| serde_json::json!({
                "blob_bytes": t.blob_bytes, "transfers": t.transfers,
                "seconds": t.seconds, "gb_per_s": t.gb_per_s,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    let mut table = Table::new();
    table.set_header([
        "nodes",
        "messages",
        "delivered",
        "p50 (ms)",
        "p99 (ms)",
        "setup (s)",
        "unadmitted relays",
        "link delay (ms)",
        "connections max / median",
        "unused closed",
    ]);
    for g in &gossip {
        table.add_row([
            g.nodes.to_string(),
            g.messages.to_string(),
            g.delivered.to_string(),
            format!("{:.1}", g.p50_ms),
            format!("{:.1}", g.p99_ms),
            format!("{:.1}", g.setup_s),
            g.unadmitted_relays.to_string(),
            g.link_delay
                .map_or("none".into(), |d| format!("{}-{}", d.min_ms, d.max_ms)),
            format!("{} / {}", g.connections_max, g.connections_median),
            g.unused_closed.to_string(),
        ]);
    }
    println!("gossip time-to-all (memory transport, one process)\n{table}");
    if throughput.is_empty() {
        return Ok(());
    }
    let mut table = Table::new();
    table.set_header(["blob (MiB)", "requests", "time (s)", "GB/s"]);
    for t in &throughput {
        table.add_row([
            (t.blob_bytes >> 20).to_string(),
            t.transfers.to_string(),
            format!("{:.2}", t.seconds),
            format!("{:.3}", t.gb_per_s),
        ]);
    }
    println!("request-response throughput (TCP + Noise + Yamux on 127.0.0.1)\n{table}");
    Ok(())
}

/// Parses `MIN-MAX` or `MS` into a delay range (the simulator's latency syntax).
fn parse_link_delay(text: &str) -> Result<LinkDelay, String> {
    let (min_ms, max_ms) = super::sim_mesh::parse_latency(text)?;
    Ok(LinkDelay { min_ms, max_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_delays_parse_as_a_range_or_one_value() {
        assert_eq!(
            parse_link_delay("20-50"),
            Ok(LinkDelay {
                min_ms: 20,
                max_ms: 50
            })
        );
        assert_eq!(
            parse_link_delay("30"),
            Ok(LinkDelay {
                min_ms: 30,
                max_ms: 30
            })
        );
        assert!(parse_link_delay("50-20").is_err());
        assert!(parse_link_delay("fast").is_err());
    }
}
