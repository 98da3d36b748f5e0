//! Criterion benches of blobs in verified parts (`protocol/transfer.rs`):
//! a holder hashing a blob to serve it, encoding one part, a receiver
//! checking one part, and a whole download (every part checked, then the
//! blob assembled). Throughput is in blob bytes. Run with
//! `cargo bench -p mesh-round --bench transfer`.
#![allow(missing_docs)] // criterion_group! generates an undocumented public function.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mesh_round::protocol::transfer::{
    decode_part, encode_part, part_count, Download, Outboard, PART_BYTES,
};

fn blob(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8)
        .collect()
}

fn transfer(c: &mut Criterion) {
    let mut group = c.benchmark_group("transfer");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for size in [400_040_usize, 16 << 20] {
        let bytes = blob(size);
        let outboard = Outboard::of(&bytes);
        let hash = outboard.hash();
        let parts = part_count(size as u64);
        let encoded: Vec<Vec<u8>> = (0..parts)
            .map(|p| encode_part(&bytes, &outboard, p).expect("encodes"))
            .collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("outboard", size), |b| {
            b.iter(|| Outboard::of(&bytes))
        });
        group.bench_function(BenchmarkId::new("download", size), |b| {
            b.iter(|| {
                let mut download = Download::new(hash, u64::MAX);
                for (p, e) in encoded.iter().enumerate() {
                    download
                        .accept(p as u32, size as u64, e.clone())
                        .expect("verifies");
                }
                download.assemble().expect("complete").expect("valid")
            })
        });
        // The last part, which may be short.
        let part_bytes = size as u64 - u64::from(parts - 1) * PART_BYTES;
        group.throughput(Throughput::Bytes(part_bytes));
        group.bench_function(BenchmarkId::new("encode_part", size), |b| {
            b.iter(|| encode_part(&bytes, &outboard, parts - 1).expect("encodes"))
        });
        group.bench_function(BenchmarkId::new("decode_part", size), |b| {
            let last = &encoded[parts as usize - 1];
            b.iter(|| decode_part(&hash, size as u64, parts - 1, last, |_, _| {}))
        });
    }
    group.finish();
}

criterion_group!(benches, transfer);
criterion_main!(benches);
