//! The benchmark functions the CLI calls, run small so they cannot rot.
#![allow(clippy::unwrap_used)]

use mesh_net::bench;
use mesh_net::link_delay::LinkDelay;

#[test]
fn gossip_time_to_all_runs_on_a_small_mesh() {
    let nodes = std::env::var("MESH_NET_BENCH_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let result = bench::gossip_time_to_all(bench::GossipBench {
        nodes,
        messages: 5,
        seed: 1,
        link_delay: None,
    })
    .unwrap();
    eprintln!("{result:?}");
    assert_eq!(result.nodes, nodes);
    assert_eq!(result.delivered, 5, "every message reached every node");
    assert!(result.p50_ms <= result.p99_ms);
    assert!(result.connections_median >= 1);
    assert!(result.connections_max < nodes);
}

#[test]
fn gossip_over_delayed_links_reaches_everyone_no_sooner_than_one_link_delay() {
    let link_delay = LinkDelay {
        min_ms: 20,
        max_ms: 50,
    };
    let result = bench::gossip_time_to_all(bench::GossipBench {
        nodes: 8,
        messages: 5,
        seed: 3,
        link_delay: Some(link_delay),
    })
    .unwrap();
    eprintln!("{result:?}");
    assert_eq!(result.delivered, 5, "every message reached every node");
    assert!(result.p50_ms >= link_delay.min_ms as f64);
    assert_eq!(result.link_delay, Some(link_delay));
}

#[test]
fn request_throughput_runs_over_loopback_tcp() {
    let results = bench::request_throughput(&[(1 << 20, 4)], 2).unwrap();
    eprintln!("{results:?}");
    assert_eq!(results.len(), 1);
    assert!(results[0].gb_per_s > 0.0);
}
