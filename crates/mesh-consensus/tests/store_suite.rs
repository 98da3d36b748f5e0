//! openraft's own storage test suite against the redb store.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use mesh_consensus::store::{self, LogStore, StateMachineStore};
use mesh_consensus::types::TypeConfig;
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
