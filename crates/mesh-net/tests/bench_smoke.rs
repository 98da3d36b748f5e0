//! The benchmark functions the CLI calls, run small so they cannot rot.
#![allow(clippy::unwrap_used)]

use mesh_net::bench;

#[test]
fn gossip_time_to_all_runs_on_a_small_mesh() {
    let nodes = std::env::var("MESH_NET_BENCH_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let result = bench::gossip_time_to_all(nodes, 5, 1).unwrap();
    eprintln!("{result:?}");
    assert_eq!(result.nodes, nodes);
    assert_eq!(result.delivered, 5, "every message reached every node");
    assert!(result.p50_ms <= result.p99_ms);
}

#[test]
fn request_throughput_runs_over_loopback_tcp() {
    let results = bench::request_throughput(&[(1 << 20, 4)], 2).unwrap();
    eprintln!("{results:?}");
    assert_eq!(results.len(), 1);
    assert!(results[0].gb_per_s > 0.0);
}
