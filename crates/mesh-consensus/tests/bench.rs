//! The in-process commit benchmark (ignored by default; run it in release):
//! `cargo test --release -p mesh-consensus --test bench -- --ignored --nocapture --test-threads 1`
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

/// The floor this machine sets for any durable three-voter commit over
/// loopback: a leader and two followers as plain threads with blocking
/// sockets, one small `fdatasync`ed append per voter and commit, the leader's
/// own flush in parallel with the followers', a commit on its flush plus one
/// follower's; no Raft library, no encryption, no HTTP. A client thread keeps
/// one write in flight. Compare the committee's figures with this, not with
/// the bare fsync alone.
#[test]
#[ignore = "benchmark; run explicitly in release"]
fn bench_floor_raw_replication() {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    const FRAME: usize = 64;
    const COMMITS: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let fsync = measure_fsync(dir.path(), 500).unwrap();
    let wal = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join(name))
            .unwrap()
    };
    let nodelay = |s: TcpStream| {
        s.set_nodelay(true).unwrap();
        s
    };
    // Followers: read an entry, append + fdatasync it, acknowledge.
    let mut to_followers = Vec::new();
    let (acks_tx, acks) = mpsc::channel::<u64>();
    for f in 0..2 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut file = wal(&format!("follower-{f}.wal"));
        std::thread::spawn(move || {
            let mut s = nodelay(listener.accept().unwrap().0);
            let mut entry = [0u8; FRAME];
            while s.read_exact(&mut entry).is_ok() {
                file.write_all(&entry).unwrap();
                file.sync_data().unwrap();
                // The leader hangs up when its run is over.
                if s.write_all(&entry[..8]).is_err() {
                    break;
                }
            }
        });
        let s = nodelay(TcpStream::connect(addr).unwrap());
        let (mut reader, acks_tx) = (s.try_clone().unwrap(), acks_tx.clone());
        std::thread::spawn(move || {
            let mut ack = [0u8; 8];
            while reader.read_exact(&mut ack).is_ok()
                && acks_tx.send(u64::from_le_bytes(ack)).is_ok()
            {}
        });
        to_followers.push(s);
    }
    // The leader's own flush, in parallel with the followers'.
    let (flush_tx, flush_rx) = mpsc::channel::<()>();
    let (flushed_tx, flushed) = mpsc::channel::<()>();
    let mut leader_file = wal("leader.wal");
    std::thread::spawn(move || {
        while flush_rx.recv().is_ok() {
            leader_file.write_all(&[0u8; FRAME]).unwrap();
            leader_file.sync_data().unwrap();
            if flushed_tx.send(()).is_err() {
                return;
            }
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let mut s = nodelay(TcpStream::connect(addr).unwrap());
        let mut times = Vec::with_capacity(COMMITS);
        let mut reply = [0u8; 1];
        for _ in 0..COMMITS {
            let t = std::time::Instant::now();
            s.write_all(&[0u8; FRAME]).unwrap();
            s.read_exact(&mut reply).unwrap();
            times.push(t.elapsed());
        }
        times
    });
    let mut from_client = nodelay(listener.accept().unwrap().0);
    let mut entry = [0u8; FRAME];
    for index in 1..=COMMITS as u64 {
        from_client.read_exact(&mut entry).unwrap();
        entry[..8].copy_from_slice(&index.to_le_bytes());
        for s in &mut to_followers {
            s.write_all(&entry).unwrap();
        }
        flush_tx.send(()).unwrap();
        // A majority of three: the leader's flush and one follower's (the
        // slower follower's acknowledgements of earlier entries are skipped).
        while acks.recv().unwrap() != index {}
        flushed.recv().unwrap();
        from_client.write_all(&[1]).unwrap();
    }
    let mut times = client.join().unwrap();
    times.sort();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let p50 = ms(times[times.len() / 2]);
    println!(
        "floor commits {} p50_ms {p50:.3} p99_ms {:.3}; fsync p50_ms {:.3} ({:.1}x)",
        times.len(),
        ms(times[times.len() * 99 / 100]),
        fsync.p50_ms,
        p50 / fsync.p50_ms
    );
    assert_eq!(times.len(), COMMITS);
}
