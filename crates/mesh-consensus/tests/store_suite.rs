//! openraft's own storage test suite against the redb store.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use mesh_consensus::store::{self, LogStore, StateMachineStore};
use mesh_consensus::types::TypeConfig;
use mesh_consensus::StoreError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RedbBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) = store::open(&dir.path().join("raft.redb")).expect("open store");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_store_passes_openraft_suite() {
    Suite::test_all(RedbBuilder).await.expect("suite passes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_and_vote_survive_reopen() {
    use openraft::entry::RaftEntry;
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    use openraft::vote::RaftLeaderId;
    use openraft::{RaftLogReader, Vote};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.redb");
    {
        let (mut log, _sm) = store::open(&path).unwrap();
        log.save_vote(&Vote::new(3, mesh_consensus::MemberId(7)))
            .await
            .unwrap();
        let entries: Vec<_> = (1..=5)
            .map(|i| {
                openraft::Entry::<_, _>::new_blank(openraft::LogId::new(
                    openraft::impls::leader_id_adv::LeaderId::new(3, mesh_consensus::MemberId(7)),
                    i,
                ))
            })
            .collect();
        log.blocking_append(entries).await.unwrap();
    }
    let (mut log, _sm) = store::open(&path).unwrap();
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(Vote::new(3, mesh_consensus::MemberId(7)))
    );
    assert_eq!(log.try_get_log_entries(1..=5).await.unwrap().len(), 5);
    assert_eq!(
        log.get_log_state()
            .await
            .unwrap()
            .last_log_id
            .map(|l| l.index),
        Some(5)
    );
}

/// The generation in the header of the write-ahead file of the store at `path`.
fn wal_generation(path: &std::path::Path) -> u64 {
    let bytes = std::fs::read(store::wal_path(path)).unwrap();
    u64::from_le_bytes(bytes[8..16].try_into().unwrap())
}

/// Opening a store resets its write-ahead file (a durable header write)
/// only when the file held something to replay: a new file gets its header
/// once, and a file left clean by a shutdown is used as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_store_with_nothing_to_replay_starts_no_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.redb");
    let opened = store::open(&path).unwrap();
    assert_eq!(wal_generation(&path), 1, "a new file is reset once");
    drop(opened);
    let after_shutdown = wal_generation(&path);
    let _reopened = store::open(&path).unwrap();
    assert_eq!(wal_generation(&path), after_shutdown);
}

/// A copy of the running store's files at `path` (redb and write-ahead
/// file), as a power cut would leave them; the folder lives as long as the
/// returned guard.
fn crash_copy(path: &std::path::Path) -> (tempfile::TempDir, std::path::PathBuf) {
    let crashed = tempfile::tempdir().unwrap();
    let copy = crashed.path().join("raft.redb");
    std::fs::copy(path, &copy).unwrap();
    std::fs::copy(store::wal_path(path), store::wal_path(&copy)).unwrap();
    (crashed, copy)
}

/// A crash leaves writes in the write-ahead file only (no final checkpoint
/// into redb): a copy of the files taken while the store runs must reopen
/// with every acknowledged entry and the vote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_crash_before_checkpoint() {
    use openraft::entry::RaftEntry;
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    use openraft::vote::RaftLeaderId;
    use openraft::{RaftLogReader, Vote};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.redb");
    let (mut log, _sm) = store::open(&path).unwrap();
    let vote = Vote::new(4, mesh_consensus::MemberId(9));
    log.save_vote(&vote).await.unwrap();
    let leader = openraft::impls::leader_id_adv::LeaderId::new(4, mesh_consensus::MemberId(9));
    for i in 1..=20 {
        let entry = openraft::Entry::<_, _>::new_blank(openraft::LogId::new(leader, i));
        log.blocking_append([entry]).await.unwrap();
    }
    let (_crashed, copy) = crash_copy(&path);
    let wal = store::wal_path;
    // A torn record after the last one: a write the crash cut short
    // (its header claims the file's generation; its body is missing).
    let mut bytes = std::fs::read(wal(&copy)).unwrap();
    let end = records_end(&bytes);
    assert!(end > 16, "the entries are in the write-ahead file");
    let generation = bytes[8..16].to_vec();
    bytes[end..end + 4].copy_from_slice(&200u32.to_le_bytes());
    bytes[end + 4..end + 12].copy_from_slice(&generation);
    bytes[end + 12..end + 15].copy_from_slice(&[1, 2, 3]);
    std::fs::write(wal(&copy), &bytes).unwrap();

    let (mut reopened, _sm) = store::open(&copy).unwrap();
    assert_eq!(reopened.read_vote().await.unwrap(), Some(vote));
    assert_eq!(
        reopened.try_get_log_entries(1..=20).await.unwrap().len(),
        20
    );
    let bytes = std::fs::read(wal(&copy)).unwrap();
    assert_eq!(
        records_end(&bytes),
        16,
        "replayed into redb: a new, empty generation"
    );
    drop(log);
}

/// Where the records of a write-ahead file's generation end (store/wal.rs:
/// a 16-byte file header with the generation at 8..16, then records of
/// length u32 | generation u64 | checksum 8 bytes | body).
fn records_end(bytes: &[u8]) -> usize {
    let generation = &bytes[8..16];
    let mut pos = 16;
    while bytes.get(pos + 4..pos + 12) == Some(generation) {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 20 + len;
    }
    pos
}

/// The committed id is held, not fsynced on its own (writer.rs): the next
/// durable write carries it, so a crash after that write keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_committed_id_is_durable_after_the_next_write() {
    use openraft::entry::RaftEntry;
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    use openraft::vote::RaftLeaderId;
    use openraft::Vote;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.redb");
    let (mut log, _sm) = store::open(&path).unwrap();
    let leader = openraft::impls::leader_id_adv::LeaderId::new(2, mesh_consensus::MemberId(5));
    let entries: Vec<_> = (1..=3)
        .map(|i| openraft::Entry::<_, _>::new_blank(openraft::LogId::new(leader, i)))
        .collect();
    log.blocking_append(entries).await.unwrap();
    let committed = Some(openraft::LogId::new(leader, 3));
    log.save_committed(committed).await.unwrap();
    // A durable write after it: the held committed id rides in front of it.
    log.save_vote(&Vote::new(2, mesh_consensus::MemberId(5)))
        .await
        .unwrap();
    let (_crashed, copy) = crash_copy(&path);
    let (mut reopened, _sm) = store::open(&copy).unwrap();
    assert_eq!(reopened.read_committed().await.unwrap(), committed);
    drop(log);
}

/// A store at `path` with a vote and `n` entries of term 2, left as a crash
/// leaves it when `crashed` (a copy taken while it runs), else closed cleanly
/// (everything checkpointed into redb).
async fn used_store(dir: &std::path::Path, n: u64, crashed: bool) -> std::path::PathBuf {
    use openraft::entry::RaftEntry;
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    use openraft::vote::RaftLeaderId;
    use openraft::Vote;
    let path = dir.join("raft.redb");
    let (mut log, _sm) = store::open(&path).unwrap();
    log.save_vote(&Vote::new(2, mesh_consensus::MemberId(5)))
        .await
        .unwrap();
    let leader = openraft::impls::leader_id_adv::LeaderId::new(2, mesh_consensus::MemberId(5));
    for i in 1..=n {
        let entry = openraft::Entry::<_, _>::new_blank(openraft::LogId::new(leader, i));
        log.blocking_append([entry]).await.unwrap();
    }
    if !crashed {
        return path;
    }
    let copy = dir.join("crashed");
    std::fs::create_dir_all(&copy).unwrap();
    let copy = copy.join("raft.redb");
    std::fs::copy(&path, &copy).unwrap();
    std::fs::copy(store::wal_path(&path), store::wal_path(&copy)).unwrap();
    copy
}

/// Regression: a byte flipped near the start of the write-ahead file made the
/// store drop every record after it, acknowledged ones included, and open
/// as if nothing was wrong. It must refuse to open, naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_wal_record_before_intact_ones_stops_the_open_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = used_store(dir.path(), 23, true).await;
    let wal = store::wal_path(&path);
    let mut bytes = std::fs::read(&wal).unwrap();
    bytes[16 + 20 + 2] ^= 0x01;
    std::fs::write(&wal, &bytes).unwrap();
    match store::open(&path) {
        Err(StoreError::Damaged {
            path: named,
            reason,
        }) => {
            assert_eq!(named, wal);
            assert!(reason.contains("intact record follows"), "{reason}");
        }
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("a store with damaged acknowledged writes opened"),
    }
    let message = StoreError::Damaged {
        path: wal.clone(),
        reason: "x".into(),
    }
    .to_string();
    assert!(message.contains("--reset-raft-state") && message.contains(&*wal.to_string_lossy()));
}

/// Regression: 16 bytes flipped at each 4 KiB page header of `raft.redb` made
/// the node exit with a panic inside redb ("entered unreachable code"). It
/// must be a typed error that names the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_damaged_page_headers_are_a_typed_error_not_a_panic() {
    // From the first page (the file header too) and from the second on.
    for first_page in [0, 1] {
        let dir = tempfile::tempdir().unwrap();
        let path = used_store(dir.path(), 200, false).await;
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 4 * 4096, "a store of several pages");
        for page in (first_page * 4096..bytes.len()).step_by(4096) {
            for b in &mut bytes[page..page + 16] {
                *b ^= 0xff;
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        match store::open(&path) {
            Err(StoreError::Damaged { path: named, .. }) => assert_eq!(named, path),
            Err(e) => panic!("not reported as damage: {e}"),
            Ok(_) => panic!("a damaged redb file opened"),
        }
    }
}
