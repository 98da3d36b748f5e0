//! A member that lost Raft state it had acknowledged (its raft folder
//! removed, or its write-ahead file damaged and moved aside) never votes or
//! acknowledges with what is left: it is removed from the membership,
//! rejoins as a learner and catches up. Over the in-memory network with real
//! stores; every wait is bounded by a generous safety timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use mesh_consensus::bench::LocalCommittee;
use mesh_consensus::network::{RemoteFailure, RpcRequest, RpcResponse};
use mesh_consensus::store::{self, STORE_FILE};
use mesh_consensus::types::{TypeConfig, Vote};
use mesh_consensus::{Command, ConsensusConfig, ConsensusError, MemberId, StoreError};
use openraft::raft::{AppendEntriesRequest, VoteRequest};

const WAIT: Duration = Duration::from_secs(30);

fn fast_healing(c: &mut ConsensusConfig) {
    c.voter_down_limit_ms = 1_000;
}

async fn commit_n(c: &LocalCommittee, from: u64, n: u64) -> u64 {
    let mut last = 0;
    for i in from..from + n {
        let via = c.wait_leader(WAIT).await.expect("a leader");
        let command = Command::Put {
            key: format!("k{i}").into_bytes(),
            value: i.to_le_bytes().to_vec(),
        };
        last = c.nodes[&via].propose(command).await.expect("commit").index;
    }
    last
}

/// A voter other than the leader, once it has applied `index`.
async fn caught_up_follower(c: &LocalCommittee, index: u64) -> MemberId {
    let leader = c.wait_leader(WAIT).await.expect("a leader");
    let follower = *c.ids().iter().find(|id| **id != leader).unwrap();
    assert!(c.wait_applied(&[follower], index, WAIT).await);
    follower
}

/// What `member` answers to a vote request and to an append from a leader
/// of a far later term.
async fn answers_to_raft(c: &LocalCommittee, member: MemberId, from: MemberId) -> [RpcResponse; 2] {
    let vote = RpcRequest::Vote(VoteRequest::new(Vote::new(99, from), None));
    let append = RpcRequest::Append(AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(99, from),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    });
    let node = &c.nodes[&member];
    let mut out = Vec::new();
    for request in [vote, append] {
        let bytes = node.handle_rpc(from, &request.encode()).await;
        out.push(RpcResponse::decode(&bytes).unwrap());
    }
    out.try_into().unwrap()
}

/// A committee of three voters that committed `n` writes, and a follower
/// that applied them all and was then stopped.
async fn with_a_stopped_follower(root: &Path, n: u64) -> (LocalCommittee, MemberId) {
    let mut c = LocalCommittee::start(root, 3, 0, fast_healing)
        .await
        .unwrap();
    let last = commit_n(&c, 0, n).await;
    let victim = caught_up_follower(&c, last).await;
    c.stop_node(victim).await.unwrap();
    (c, victim)
}

/// Waits until `member` is sealed again, holds the leader's state and is a voter.
async fn wait_rejoined(c: &LocalCommittee, member: MemberId, index: u64) {
    let started = Instant::now();
    loop {
        let leader = c.wait_leader(WAIT).await.expect("a leader");
        let status = c.nodes[&member].status();
        let lead = c.nodes[&leader].status();
        let done = !status.rejoining
            && status.last_applied >= Some(index)
            && status.state_hash == lead.state_hash
            && lead.voters.contains(&member);
        if done {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "{member} did not rejoin: {status:?}\nleader: {lead:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Regression: a voter whose raft folder was removed came back empty under
/// the same identity, and could vote and acknowledge appends it never held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_voter_refuses_to_vote_then_rejoins_as_a_learner_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, victim) = with_a_stopped_follower(dir.path(), 30).await;
    std::fs::remove_dir_all(c.data_dir(victim)).unwrap();

    // Cut off from the others, it cannot be granted a rejoin: it refuses
    // votes and appends, even from a leader of a far later term.
    c.net.isolate(&[victim]);
    c.start_node(victim).await.unwrap();
    assert!(c.nodes[&victim].status().rejoining);
    // An empty store under an old seal does not start a committee of its own.
    let alone = [(victim, c.nodes[&victim].info().clone())].into();
    c.nodes[&victim].bootstrap(alone).await.unwrap();
    assert!(c.nodes[&victim].status().voters.is_empty());
    let leader = c.wait_leader(WAIT).await.unwrap();
    for answer in answers_to_raft(&c, victim, leader).await {
        assert!(
            matches!(answer, RpcResponse::Failed(RemoteFailure::Rejoining)),
            "{answer:?}"
        );
    }

    c.net.heal();
    let last = commit_n(&c, 30, 10).await;
    wait_rejoined(&c, victim, last).await;
    let last = commit_n(&c, 40, 5).await;
    assert!(c.wait_applied(&c.ids(), last, WAIT).await);
    c.shutdown().await;
}

/// Regression: a voter that lost its log without knowing it (here its seal
/// went with its raft folder) stayed behind forever while its leader sent it
/// the same append in a busy loop; only a leader change healed it. The
/// leader now sees the member's log go back behind what it had matched,
/// removes it and adds it back, and it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_whose_log_went_back_unnoticed_is_re_added_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, victim) = with_a_stopped_follower(dir.path(), 30).await;
    let raft_dir = c.data_dir(victim);
    std::fs::remove_dir_all(&raft_dir).unwrap();
    std::fs::remove_file(store::seal::seal_path(&raft_dir)).unwrap();
    c.start_node(victim).await.unwrap();
    assert!(!c.nodes[&victim].status().rejoining, "it cannot tell");
    let last = commit_n(&c, 30, 10).await;
    wait_rejoined(&c, victim, last).await;
    c.shutdown().await;
}

/// The files of a running node's store copied to `to`, as a kill -9 leaves them.
fn crash_copy(raft_dir: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let redb = raft_dir.join(STORE_FILE);
    std::fs::copy(&redb, to.join(STORE_FILE)).unwrap();
    std::fs::copy(
        store::wal_path(&redb),
        store::wal_path(&to.join(STORE_FILE)),
    )
    .unwrap();
}

/// Regression: a learner's write-ahead file with one byte flipped near its
/// start came back without 23 acknowledged records and its latest vote, and
/// stayed behind forever. Now the node refuses to start, naming the file;
/// once the folder is moved aside it rejoins and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_wal_stops_the_node_and_after_the_move_aside_it_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCommittee::start(dir.path(), 3, 0, fast_healing)
        .await
        .unwrap();
    let last = commit_n(&c, 0, 23).await;
    let victim = caught_up_follower(&c, last).await;
    let raft_dir = c.data_dir(victim);
    let crashed = dir.path().join("crashed");
    crash_copy(&raft_dir, &crashed);
    c.stop_node(victim).await.unwrap();
    std::fs::remove_dir_all(&raft_dir).unwrap();
    std::fs::rename(&crashed, &raft_dir).unwrap();
    let wal = store::wal_path(&raft_dir.join(STORE_FILE));
    let mut bytes = std::fs::read(&wal).unwrap();
    bytes[16 + 20 + 3] ^= 0x08;
    std::fs::write(&wal, &bytes).unwrap();

    match c.start_node(victim).await {
        Err(ConsensusError::Store(StoreError::Damaged { path, .. })) => assert_eq!(path, wal),
        Err(e) => panic!("another error: {e}"),
        Ok(()) => panic!("the node started with damaged acknowledged writes"),
    }
    let aside = store::move_aside(&raft_dir).unwrap().expect("moved");
    assert!(aside.join(STORE_FILE).exists(), "moved, never deleted");
    c.start_node(victim).await.unwrap();
    let last = commit_n(&c, 23, 5).await;
    wait_rejoined(&c, victim, last).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raft_folder_of_a_running_node_is_not_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCommittee::start(dir.path(), 1, 0, fast_healing)
        .await
        .unwrap();
    let id = c.ids()[0];
    let refused = store::move_aside(&c.data_dir(id));
    assert!(matches!(refused, Err(StoreError::Open(_))), "{refused:?}");
    assert!(c.data_dir(id).exists());
    c.shutdown().await;
    assert_eq!(store::move_aside(&dir.path().join("none")), Ok(None));
}
