//! Criterion benches of every aggregation rule at n in {10, 100} and d in {1e5, 1e6}.
//!
//! Throughput is reported in input bytes (`n * d * 4`). Run a subset with e.g.
//! `cargo bench -p mesh-federated --bench aggregators -- 'median/n=100'`.
#![allow(missing_docs)] // criterion_group! generates an undocumented public function.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mesh_federated::aggregate::bench::{byzantine_for, synthetic_updates};
use mesh_federated::aggregate::{Aggregator, AggregatorConfig, PreAggregation, Rule};

fn aggregators(c: &mut Criterion) {
    for n in [10_usize, 100] {
        for d in [100_000_usize, 1_000_000] {
            let updates = synthetic_updates(n, d, 42);
            let weights = vec![1.0_f32; n];
            for rule in Rule::all() {
                let mut group = c.benchmark_group(rule.name());
                group.sample_size(10);
                group.warm_up_time(Duration::from_millis(500));
                group.measurement_time(Duration::from_secs(2));
                group.throughput(Throughput::Bytes(
                    (n * d * std::mem::size_of::<f32>()) as u64,
                ));
                let config = AggregatorConfig {
                    rule,
                    pre: PreAggregation::None,
                    byzantine_count: byzantine_for(n),
                    seed: 0,
                };
                let mut aggregator = Aggregator::new(config);
                group.bench_function(BenchmarkId::new(format!("n={n}"), format!("d={d}")), |b| {
                    b.iter(|| aggregator.aggregate(&updates, &weights))
                });
                group.finish();
            }
        }
    }
}

criterion_group!(benches, aggregators);
criterion_main!(benches);
