//! The in-process commit benchmark (ignored by default; run it in release):
//! `cargo test --release -p mesh-consensus --test bench -- --ignored --nocapture`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use mesh_consensus::bench::{closed_loop, measure_fsync, LocalCommittee};
use mesh_consensus::ConsensusConfig;

fn bench_config(c: &mut ConsensusConfig) {
    c.certificates = true;
    c.self_healing = true;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark; run explicitly in release"]
async fn bench_closed_loop_three_voters() {
    let dir = tempfile::tempdir().unwrap();
    let fsync = measure_fsync(dir.path(), 200).unwrap();
    println!("fsync {}", serde_json::to_string(&fsync).unwrap());
    let committee = LocalCommittee::start(dir.path(), 3, 0, bench_config)
        .await
        .unwrap();
    for clients in [1usize, 16, 256, 1024] {
        // Warm up, then measure.
        closed_loop(&committee, clients, Duration::from_millis(500))
            .await
            .unwrap();
        let report = closed_loop(&committee, clients, Duration::from_secs(3))
            .await
            .unwrap();
        println!("closed_loop {}", serde_json::to_string(&report).unwrap());
        assert!(report.commits > 0);
    }
    committee.shutdown().await;
}

/// The disk floor of one commit: one durable append of one entry to the redb store.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark; run explicitly in release"]
async fn bench_store_append_one_entry() {
    use mesh_consensus::types::{Entry, TypeConfig};
    use openraft::entry::RaftEntry;
    use openraft::storage::RaftLogStorageExt;
    use openraft::vote::RaftLeaderId;
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _sm) = mesh_consensus::store::open(&dir.path().join("raft.redb")).unwrap();
    let leader = openraft::impls::leader_id_adv::LeaderId::new(1, mesh_consensus::MemberId(1));
    let mut times = Vec::new();
    for i in 1..=500u64 {
        let entry: Entry = RaftEntry::new_blank(openraft::LogId::new(leader, i));
        let t = std::time::Instant::now();
        RaftLogStorageExt::<TypeConfig>::blocking_append(&mut log, [entry])
            .await
            .unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    let fsync = measure_fsync(dir.path(), 500).unwrap();
    println!(
        "store_append_one p50_ms {:.3} p99_ms {:.3}; fsync p50_ms {:.3}",
        times[250].as_secs_f64() * 1e3,
        times[495].as_secs_f64() * 1e3,
        fsync.p50_ms
    );
}
