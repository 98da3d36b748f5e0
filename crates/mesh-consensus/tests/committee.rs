//! Committee behaviour under failures, over the in-memory network with real
//! redb stores in temporary directories. Every wait is bounded by a generous
//! safety timeout; no test passes or fails on timing alone.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::time::Duration;

use mesh_consensus::bench::LocalCommittee;
use mesh_consensus::certificate::{CommitCertificate, CommitStatement, SignedStatement};
use mesh_consensus::network::{RpcRequest, RpcResponse};
use mesh_consensus::state::StateHash;
use mesh_consensus::{
    Command, ConsensusConfig, ConsensusError, MemberId, NodeId, RevocationReason, Role,
};

const WAIT: Duration = Duration::from_secs(30);

fn put(i: u64) -> Command {
    Command::Put {
        key: format!("k{i}").into_bytes(),
        value: i.to_le_bytes().to_vec(),
    }
}

fn default_tweak(_: &mut ConsensusConfig) {}

fn quick_propose(c: &mut ConsensusConfig) {
    c.propose_timeout_ms = 1_500;
}

fn tiny_snapshots(c: &mut ConsensusConfig) {
    c.snapshot_every_entries = 20;
    c.log_kept_after_snapshot = 0;
    c.propose_timeout_ms = 1_500;
}

fn fast_healing(c: &mut ConsensusConfig) {
    c.voter_down_limit_ms = 1_000;
}

async fn commit_n(c: &LocalCommittee, via: MemberId, from: u64, n: u64) -> u64 {
    let mut last = 0;
    for i in from..from + n {
        last = c.nodes[&via].propose(put(i)).await.expect("commit").index;
    }
    last
}

async fn state_hash(c: &LocalCommittee, id: MemberId) -> StateHash {
    c.nodes[&id].read_state(|s| s.state_hash()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_forwards_writes_to_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCommittee::start(dir.path(), 3, 1, default_tweak)
        .await
        .unwrap();
    let leader = c.wait_leader(WAIT).await.unwrap();
    // The receipts say where the writes were committed; the leader's status
    // is published a moment later, so it may not count the last one yet.
    let mut last = 0;
    for id in c.ids() {
        let receipt = c.nodes[&id].propose(put(id.0)).await.unwrap();
        assert!(receipt.rejected.is_none());
        last = last.max(receipt.index);
    }
    assert!(c.wait_applied(&c.ids(), last, WAIT).await);
    let hashes: BTreeSet<_> = futures_hashes(&c).await;
    assert_eq!(hashes.len(), 1, "every node holds the same state");
    let status = c.nodes[&leader].status();
    assert_eq!(status.voters.len(), 3);
    assert_eq!(status.learners.len(), 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_serves_linearizable_reads_and_they_see_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCommittee::start(dir.path(), 3, 0, default_tweak)
        .await
        .unwrap();
    let leader = c.wait_leader(WAIT).await.unwrap();
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
    // A write through a follower is seen by the very next read at the leader.
    let receipt = c.nodes[&follower].propose(put(7)).await.unwrap();
    let (index, value) = c.nodes[&leader]
        .read_linearizable(|s| s.kv().get(b"k7").map(<[u8]>::to_vec))
        .await
        .unwrap();
    assert!(
        index >= receipt.index,
        "read index {index} < commit {}",
        receipt.index
    );
    assert_eq!(value, Some(7u64.to_le_bytes().to_vec()));
    let refused = c.nodes[&follower]
        .read_linearizable(|_| ())
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ConsensusError::NotLeader { leader: Some(l) } if l == leader),
        "{refused}"
    );
    assert!(refused.is_retryable());
    c.shutdown().await;
}

async fn futures_hashes(c: &LocalCommittee) -> BTreeSet<StateHash> {
    let mut out = BTreeSet::new();
    for id in c.nodes.keys() {
        out.insert(state_hash(c, *id).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_elects_a_new_leader_and_keeps_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCommittee::start(dir.path(), 3, 0, default_tweak)
        .await
        .unwrap();
    let old = c.wait_leader(WAIT).await.unwrap();
    let last = commit_n(&c, old, 0, 20).await;
    let before = state_hash(&c, old).await;
    c.stop_node(old).await.unwrap();
    let new = c.wait_leader(WAIT).await.expect("a new leader");
    assert_ne!(new, old);
    // Every entry committed under the old leader is still there.
    assert!(c.wait_applied(&[new], last, WAIT).await);
    let kept = c.nodes[&new]
        .read_state(|s| (0..20).all(|i| s.kv().get(format!("k{i}").as_bytes()).is_some()))
        .await;
    assert!(kept);
    let after = commit_n(&c, new, 20, 5).await;
    assert!(after > last);
    // The old leader comes back and catches up.
    c.start_node(old).await.unwrap();
    assert!(c.wait_applied(&c.ids(), after, WAIT).await);
    assert_eq!(futures_hashes(&c).await.len(), 1);
    assert_ne!(state_hash(&c, old).await, before);
    c.shutdown().await;
}

async fn partition_and_heal(
    tweak: fn(&mut ConsensusConfig),
    entries: u64,
) -> (LocalCommittee, MemberId) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.keep();
    let c = LocalCommittee::start(&root, 3, 0, tweak).await.unwrap();
    let leader = c.wait_leader(WAIT).await.unwrap();
    commit_n(&c, leader, 0, 5).await;
    let minority = *c.ids().iter().find(|id| **id != leader).unwrap();
    c.net.isolate(&[minority]);
    // The minority cannot commit.
    let refused = c.nodes[&minority].propose(put(999)).await;
    assert!(
        refused.is_err(),
        "an isolated voter must not commit: {refused:?}"
    );
    // The majority goes on.
    let majority: Vec<MemberId> = c.ids().into_iter().filter(|id| *id != minority).collect();
    let leader = c.wait_leader_among(&majority, WAIT).await.unwrap();
    let last = commit_n(&c, leader, 10, entries).await;
    c.net.heal();
    assert!(
        c.wait_applied(&c.ids(), last, WAIT).await,
        "the minority catches up"
    );
    assert_eq!(futures_hashes(&c).await.len(), 1);
    // The write refused during the partition never appears anywhere.
    for id in c.ids() {
        let absent = c.nodes[&id]
            .read_state(|s| s.kv().get(b"k999").is_none())
            .await;
        assert!(
            absent,
            "node {id} holds a write the minority could not commit"
        );
    }
    (c, minority)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_partition_cannot_commit_and_catches_up_by_log() {
    let (c, minority) = partition_and_heal(quick_propose, 30).await;
    assert_eq!(c.nodes[&minority].status().snapshots_installed, 0);
    c.shutdown().await;
}

/// openraft 0.10 keeps the log entries a lagging follower's replication
/// stream still covers, so a partitioned voter catches up by log; a member
/// whose entries were compacted away (a new or wiped node) gets a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_member_catches_up_by_snapshot_after_compaction() {
    let (mut c, minority) = partition_and_heal(tiny_snapshots, 100).await;
    let leader = c.wait_leader(WAIT).await.unwrap();
    // Keep committing until the leader has compacted its log.
    let deadline = std::time::Instant::now() + WAIT;
    let mut i = 1_000;
    while c.nodes[&leader].status().log_entries > 60 {
        assert!(
            std::time::Instant::now() < deadline,
            "the log was not compacted"
        );
        c.nodes[&leader].propose(put(i)).await.unwrap();
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let last = c.nodes[&leader].propose(put(i)).await.unwrap().index;
    let fresh = c.add_node().await.unwrap();
    assert!(c.wait_applied(&[fresh], last, WAIT).await);
    let status = c.nodes[&fresh].status();
    assert!(status.snapshots_installed > 0, "caught up by a snapshot");
    assert!(status.last_snapshot.expect("a snapshot").index >= 20);
    assert_eq!(state_hash(&c, fresh).await, state_hash(&c, leader).await);

    // The former minority loses its disk and rejoins empty: snapshot again.
    c.stop_node(minority).await.unwrap();
    std::fs::remove_dir_all(c.data_dir(minority)).unwrap();
    c.start_node(minority).await.unwrap();
    assert!(c.wait_applied(&[minority], last, WAIT).await);
    assert!(c.nodes[&minority].status().snapshots_installed > 0);
    assert_eq!(state_hash(&c, minority).await, state_hash(&c, leader).await);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_are_reported() {
    use mesh_consensus::memnet::MemNet;
    use mesh_consensus::{ConsensusNode, MemberInfo};
    let dir = tempfile::tempdir().unwrap();
    let identity = mesh_consensus::bench::local_identity(0);
    let mut registry = prometheus_client::registry::Registry::default();
    let mut config = ConsensusConfig::new(dir.path(), "m");
    config.address = "mem://0".into();
    let net = MemNet::new();
    let id = MemberId::from_node_id(&identity.node_id());
    let node = ConsensusNode::open(config, identity, net.transport(id), &mut registry)
        .await
        .unwrap();
    net.register(node.clone());
    let info: MemberInfo = node.info().clone();
    node.bootstrap([(id, info.clone())].into()).await.unwrap();
    node.bootstrap([(id, info)].into()).await.unwrap(); // idempotent
    node.propose(put(1)).await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        if text.contains("consensus_is_leader 1")
            && text.contains("consensus_proposal_latency_seconds_count 1")
        {
            assert!(text.contains("consensus_term"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "metrics not updated: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = node.status();
    assert_eq!(status.role, "leader");
    assert_eq!(status.voters, vec![id]);
    let json = serde_json::to_value(&status).unwrap();
    assert!(json.get("state_hash").is_some() && json.get("commit_index").is_some());
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_of_all_voters_keeps_the_state_hash() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCommittee::start(dir.path(), 3, 0, tiny_snapshots)
        .await
        .unwrap();
    let leader = c.wait_leader(WAIT).await.unwrap();
    let last = commit_n(&c, leader, 0, 50).await;
    assert!(c.wait_applied(&c.ids(), last, WAIT).await);
    let before = state_hash(&c, leader).await;
    for id in c.ids() {
        c.stop_node(id).await.unwrap();
    }
    for id in c.ids() {
        c.start_node(id).await.unwrap();
    }
    c.wait_leader(WAIT).await.expect("a leader after restart");
    assert!(c.wait_applied(&c.ids(), last, WAIT).await);
    for id in c.ids() {
        let s = c.nodes[&id]
            .read_state(|s| (s.state_hash(), s.kv().len()))
            .await;
        assert_eq!(s, (before, 50), "node {id} restored the same state");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_voter_is_replaced_automatically() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCommittee::start(dir.path(), 3, 2, fast_healing)
        .await
        .unwrap();
    let leader = c.wait_leader(WAIT).await.unwrap();
    let status = c.nodes[&leader].status();
    let victim = *status.voters.iter().find(|id| **id != leader).unwrap();
    c.stop_node(victim).await.unwrap();
    assert!(
        wait_voter_replaced(&c, victim).await,
        "the down voter was replaced by a learner"
    );
    let l = c.wait_leader(WAIT).await.unwrap();
    let learners = c.nodes[&l].status().learners;
    assert!(
        !learners.contains(&victim),
        "the dead voter no longer pins the log as a learner"
    );
    let l = c.wait_leader(WAIT).await.unwrap();
    c.nodes[&l]
        .propose(put(1))
        .await
        .expect("the healed committee commits");
    c.shutdown().await;
}

/// A revocation of `key`'s certificate, signed by a stand-in CA (the state
/// machine records revocations; nodes check the CA signature before acting).
fn revocation_of(key: [u8; 32], reason: RevocationReason) -> Command {
    let ca = mesh_security::identity::NodeIdentity::from_seed(&[5; 32]);
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key).unwrap();
    let entry = mesh_security::ca::RevocationEntry {
        serial: key.as_bytes()[..8].to_vec(),
        node_id: mesh_security::identity::NodeId::from_verifying_key(&key),
        revoked_at_unix_s: 1,
        reason: format!("{reason:?}"),
    };
    let revocation = mesh_security::ca::SignedRevocation::sign(&ca, entry).unwrap();
    Command::RevokeCertificate { revocation, reason }
}

/// Waits (bounded) until the leader reports three voters without `victim`.
async fn wait_voter_replaced(c: &LocalCommittee, victim: MemberId) -> bool {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(l) = c.wait_leader(WAIT).await else {
            continue;
        };
        let s = c.nodes[&l].status();
        if s.voters.len() == 3 && !s.voters.contains(&victim) {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_voter_is_replaced_while_it_is_still_up() {
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCommittee::start(dir.path(), 3, 2, fast_healing)
        .await
        .unwrap();
    let leader = c.wait_leader(WAIT).await.unwrap();
    let status = c.nodes[&leader].status();
    let mut others = status.voters.iter().filter(|id| **id != leader);
    let (renewed, victim) = (*others.next().unwrap(), *others.next().unwrap());
    // A superseded certificate was renewed: its node stays a voter.
    let key = c.nodes[&renewed].info().public_key;
    let superseded = revocation_of(key, RevocationReason::Superseded);
    c.nodes[&leader].propose(superseded).await.unwrap();
    let key = c.nodes[&victim].info().public_key;
    let compromised = revocation_of(key, RevocationReason::KeyCompromise);
    c.nodes[&leader].propose(compromised).await.unwrap();
    assert!(
        wait_voter_replaced(&c, victim).await,
        "the revoked voter was replaced by a learner"
    );
    let l = c.wait_leader(WAIT).await.unwrap();
    assert!(c.nodes[&l].status().voters.contains(&renewed));
    c.nodes[&l]
        .propose(put(1))
        .await
        .expect("the new committee commits");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_assemble_certificates_that_learners_verify() {
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCommittee::start(dir.path(), 3, 1, default_tweak)
        .await
        .unwrap();
    let leader = c.wait_leader(WAIT).await.unwrap();
    let last = commit_n(&c, leader, 0, 10).await;
    let learner = *c.nodes[&leader].status().learners.first().unwrap();
    assert!(c.wait_applied(&c.ids(), last, WAIT).await);
    let deadline = std::time::Instant::now() + WAIT;
    let cert = loop {
        if let Some(cert) = c.nodes[&leader].latest_certificate() {
            if cert.statement.index >= last {
                break cert;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no certificate");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let verified = c.nodes[&learner].accept_certificate(&cert).await.unwrap();
    assert!(verified, "the learner's state matches the certificate");
    // Gossip encoding round-trips.
    assert_eq!(CommitCertificate::decode(&cert.encode()).unwrap(), cert);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_certificate_is_rejected_and_conflicts_become_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCommittee::start(dir.path(), 3, 1, default_tweak)
        .await
        .unwrap();
    let leader = c.wait_leader(WAIT).await.unwrap();
    // Admit the voters to the mesh so evidence against them applies.
    let voters = c.nodes[&leader].status().voters;
    for v in &voters {
        let info = c.nodes[&leader].member_info(*v).unwrap();
        let cmd = Command::AddMember {
            node: NodeId(info.node_id),
            roles: [Role::Committee].into_iter().collect(),
            zone: info.zone,
        };
        c.nodes[&leader].propose(cmd).await.unwrap();
    }
    let last = commit_n(&c, leader, 0, 3).await;
    let learner = *c.nodes[&leader].status().learners.first().unwrap();
    assert!(c.wait_applied(&c.ids(), last, WAIT).await);

    // Forged: signed by keys that are not voters.
    let statement = CommitStatement {
        mesh_id: "local-mesh".into(),
        index: last,
        term: 1,
        entry_hash: [7; 32],
        state_hash: StateHash([7; 32]),
        state_digest: [7; 32],
    };
    let outsiders: Vec<_> = (100..103)
        .map(mesh_consensus::bench::local_identity)
        .collect();
    let forged = CommitCertificate {
        statement: statement.clone(),
        signatures: outsiders
            .iter()
            .map(|o| {
                let s = SignedStatement::sign(statement.clone(), o);
                (s.signer, s.signature)
            })
            .collect(),
    };
    assert!(c.nodes[&learner].accept_certificate(&forged).await.is_err());

    // Conflicting: a voter signs two different statements for one index.
    let accused = voters[0];
    let identity = c.identity(accused).unwrap().clone();
    let a = SignedStatement::sign(statement.clone(), &identity);
    let mut other = statement.clone();
    other.state_hash = StateHash([8; 32]);
    other.index = last + 1_000_000;
    let mut first = statement.clone();
    first.index = last + 1_000_000;
    let b1 = SignedStatement::sign(first, &identity);
    let b2 = SignedStatement::sign(other, &identity);
    let target = voters[1];
    for s in [a, b1, b2] {
        let bytes = RpcRequest::Statement(s).encode();
        let answer = c.nodes[&target].handle_rpc(accused, &bytes).await;
        assert!(RpcResponse::decode(&answer).is_ok());
    }
    let name = NodeId(c.nodes[&leader].member_info(accused).unwrap().node_id);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let score = c.nodes[&leader]
            .read_state(|s| s.reputation().score(&name))
            .await;
        if score < mesh_consensus::state::reputation::INITIAL_SCORE {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "evidence was not committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_to_handle_rpc_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCommittee::start(dir.path(), 1, 0, default_tweak)
        .await
        .unwrap();
    let node = c.nodes.values().next().unwrap().clone();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for len in 0..400usize {
        let mut bytes = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push(x as u8);
        }
        if len % 2 == 0 && !bytes.is_empty() {
            bytes[0] = mesh_consensus::network::WIRE_VERSION;
        }
        let answer = node.handle_rpc(MemberId(x), &bytes).await;
        assert!(RpcResponse::decode(&answer).is_ok());
    }
    // Still serving.
    node.propose(put(1)).await.unwrap();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committee_grows_with_the_mesh() {
    let dir = tempfile::tempdir().unwrap();
    // One voter and two learners: three eligible nodes call for three voters.
    let c = LocalCommittee::start(dir.path(), 1, 2, fast_healing)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let l = c.wait_leader(WAIT).await.unwrap();
        if c.nodes[&l].status().voters.len() == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the committee did not grow"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let l = c.wait_leader(WAIT).await.unwrap();
    c.nodes[&l].propose(put(1)).await.unwrap();
    c.shutdown().await;
}

/// Polls `check` every 50 ms until it holds, at most [`WAIT`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Regression: `/readyz` could not tell a follower cut off from the leader,
/// and the apply lag was measured against the node's own commit index. The
/// status now gives the leader's commit index, the lag behind it, and how
/// long ago the leader was heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_the_lag_behind_the_leader_and_when_it_was_heard() {
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCommittee::start(dir.path(), 3, 0, default_tweak)
        .await
        .unwrap();
    let leader = c.wait_leader(WAIT).await.unwrap();
    let last = commit_n(&c, leader, 0, 5).await;
    assert!(c.wait_applied(&c.ids(), last, WAIT).await);
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
    eventually("the follower caught up and hears the leader", || {
        let s = c.nodes[&follower].status();
        s.leader_commit_index >= Some(last)
            && s.apply_lag == 0
            && s.leader_contact_ms_ago.is_some_and(|ms| ms < 2_000)
    })
    .await;
    eventually("a quorum acknowledges the leader", || {
        let s = c.nodes[&leader].status();
        s.leader_contact_ms_ago.is_some_and(|ms| ms < 2_000) && s.apply_lag == 0
    })
    .await;
    c.net.isolate(&[follower]);
    eventually(
        "the isolated follower has not heard the leader for 2 s",
        || {
            let s = c.nodes[&follower].status();
            s.leader_contact_ms_ago.is_some_and(|ms| ms > 2_000)
        },
    )
    .await;
    c.net.heal();
    c.shutdown().await;
}
