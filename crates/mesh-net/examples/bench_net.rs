//! The network benchmarks without the rest of the product:
//! `cargo run -p mesh-net --example bench_net -- [NODES] [MESSAGES]`.
//! (`agent-mesh bench net` runs the same functions and prints tables.)

use mesh_net::bench;

fn main() -> Result<(), bench::BenchError> {
    let mut args = std::env::args().skip(1);
    let nodes = args.next().and_then(|n| n.parse().ok()).unwrap_or(100);
    let messages = args.next().and_then(|n| n.parse().ok()).unwrap_or(50);
    let gossip = bench::gossip_time_to_all(bench::GossipBench {
        nodes,
        messages,
        seed: 42,
        link_delay: None,
    })?;
    println!("{gossip:?}");
    for result in bench::request_throughput(&[(1 << 20, 256), (64 << 20, 8)], 42)? {
        println!("{result:?}");
    }
    Ok(())
}
