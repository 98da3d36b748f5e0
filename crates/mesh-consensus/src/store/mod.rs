//! Durable Raft storage: the log, the vote, the committed and purged log
//! ids, and the latest snapshot of the [`MeshState`], in one redb file, with
//! a write-ahead file in front of it for commit latency.
//!
//! ```text
//!   openraft core ──append/vote/truncate/purge──► LogStore ─┐  (in-memory log cache,
//!   openraft sm   ──apply/build/install─────────► StateMachineStore ─┤   reads never block)
//!                                                                     ▼
//!        bounded queue ──► writer thread (writer.rs): every queued write in ONE batch
//!          (a follower with nothing queued writes in place, on the calling thread)
//!             batch ──► <store>.wal: one record, one durable write, then acknowledged
//!             every 8 MiB, and for snapshots ──► redb: ONE durable transaction,
//!                                                then the .wal file starts a new generation
//! ```
//!
//! Group commit: one fsync covers every entry of an append call, and under
//! load several append calls too. The write-ahead file (wal.rs) makes that
//! fsync a sequential append: a durable redb transaction costs about four
//! small fsyncs on the same disk, because it rewrites pages all over its file.
//! Opening the store replays the write-ahead file into redb first.
//!
//! Opening never goes on with less than the store acknowledged without
//! saying so: damaged write-ahead records with intact ones after them
//! (wal.rs), a redb file redb cannot read (its panics included) and
//! undecodable rows are [`StoreError::Damaged`], naming the file; a torn
//! last record (never acknowledged) is dropped. Every store carries a random
//! [`Incarnation`] id from its creation, which the node's seal (seal.rs)
//! records, so a store that was removed or replaced is noticed too.
//!
//! The log is also kept in memory (bounded by compaction: snapshots by entry
//! count and by bytes purge it), so replication reads never wait for the
//! disk, and an entry is readable as soon as `append` returns, before its
//! fsync completes, as openraft expects.
//!
//! The state machine is in memory and made durable by its snapshots: on restart
//! the last snapshot is loaded and openraft re-applies the committed entries
//! after it (the committed log id is stored for that). Snapshots use the
//! existing format of [`crate::snapshot`].

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, IOFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftLogReader, RaftSnapshotBuilder};
use redb::{Database, ReadableDatabase, ReadableTable};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use crate::command::Command;
use crate::error::StoreError;
use crate::follow::StateBundle;
use crate::snapshot;
use crate::state::{MeshState, Response, StateHash};
use crate::types::{
    CommitReceipt, Entry, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig, Vote,
};

mod durable_write;
pub mod seal;
mod wal;
mod writer;

pub use wal::{decode_batch as decode_wal_batch, decode_file as decode_wal_file};
use wal::{Wal, WalError};
use writer::{commit_to_redb, Done, MetaKey, WriteKind, Writer, LOG, META};
pub use writer::{WAL_CHECKPOINT_BYTES, WRITE_BATCH_MAX, WRITE_QUEUE_LEN};

/// Most applied-entry records kept for certificate cross-checks.
pub const APPLIED_HISTORY_LEN: usize = 4096;
/// Largest snapshot this store accepts from a peer, in bytes.
pub const SNAPSHOT_BYTES_MAX: usize = 256 * 1024 * 1024;

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens (or creates) the store at `path`; returns the log half and the state
/// machine half, which share one database and one writer thread.
pub fn open(path: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let (db, wal, loaded) = open_files(path)?;
    let writer = Writer::spawn(db, wal)
        .map_err(|e| StoreError::Open(format!("cannot start the writer thread: {e}")))?;
    let log = LogStore {
        inner: Arc::new(LogInner {
            cache: Mutex::new(loaded.log),
            writer: writer.clone(),
            incarnation: loaded.incarnation,
        }),
    };
    let sm = StateMachineStore::restore(loaded.snapshot, writer, path)?;
    Ok((log, sm))
}

/// Opens redb, replays the write-ahead file into it and reads the store.
/// redb panics on some damaged files (a page header it cannot read is
/// "unreachable" to it); the panic is caught here and becomes
/// [`StoreError::Damaged`], so the node stops with advice instead of a trace.
fn open_files(path: &Path) -> Result<(Database, Wal, Loaded), StoreError> {
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let db = create_with_retry(path)?;
        let wal = replay_wal(&db, path)?;
        let loaded = load(&db, path)?;
        Ok((db, wal, loaded))
    }));
    opened.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        Err(damaged(
            path,
            format!("the database library stopped on it ({what})"),
        ))
    })
}

/// [`StoreError::Damaged`] for the file at `path`.
fn damaged(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Damaged {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The store's file in a node's raft folder (its write-ahead file is
/// [`wal_path`] of it).
pub const STORE_FILE: &str = "raft.redb";

/// Moves the raft folder `raft_dir` aside, to `<raft_dir>.damaged-<unix ms>`
/// beside it, never deleting anything: the recovery from
/// [`StoreError::Damaged`]. The seal beside the folder stays, so the node's
/// next start finds a new store under the old seal and rejoins the
/// committee as a learner (see `node/rejoin.rs`). Returns where the folder
/// went, or `None` if there is no folder. Refused while a node has the store open.
pub fn move_aside(raft_dir: &Path) -> Result<Option<PathBuf>, StoreError> {
    if !raft_dir.exists() {
        return Ok(None);
    }
    let store = raft_dir.join(STORE_FILE);
    if in_use(&store) {
        return Err(StoreError::Open(format!(
            "{} is open in a running node; stop the node first",
            store.display()
        )));
    }
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut name = raft_dir.as_os_str().to_owned();
    name.push(format!(".damaged-{unix_ms}"));
    let aside = PathBuf::from(name);
    let failed = |e: io::Error| {
        StoreError::Open(format!(
            "moving {} to {}: {e}",
            raft_dir.display(),
            aside.display()
        ))
    };
    if aside.exists() {
        return Err(failed(io::ErrorKind::AlreadyExists.into()));
    }
    std::fs::rename(raft_dir, &aside).map_err(failed)?;
    seal::sync_parent(raft_dir).map_err(failed)?;
    Ok(Some(aside))
}

/// Whether a running node holds the redb file at `path` (redb locks it
/// while open). A file redb cannot read at all is held by nobody.
fn in_use(path: &Path) -> bool {
    let opened = std::panic::catch_unwind(|| redb::ReadOnlyDatabase::open(path));
    matches!(opened, Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)))
}

/// The write-ahead file that belongs to the store at `store_path`
/// (`<store_path>.wal`).
pub fn wal_path(store_path: &Path) -> PathBuf {
    let mut name = store_path.as_os_str().to_owned();
    name.push(".wal");
    PathBuf::from(name)
}

/// Moves what the write-ahead file of the store at `path` holds into redb
/// (one durable transaction), starts its next generation if it held
/// anything, and returns it open for appending. Damaged records, as opposed
/// to a write cut at the end by a crash, are [`StoreError::Damaged`].
fn replay_wal(db: &Database, path: &Path) -> Result<Wal, StoreError> {
    let wal_path = wal_path(path);
    let open_err = |e: io::Error| StoreError::Open(format!("{}: {e}", wal_path.display()));
    let mut wal = Wal::open(&wal_path).map_err(open_err)?;
    let replayed = wal.replay().map_err(|e| match e {
        WalError::Io(e) => open_err(e),
        WalError::Corrupt(reason) => damaged(&wal_path, reason),
    })?;
    if replayed.torn_bytes > 0 {
        tracing::warn!(
            torn_bytes = replayed.torn_bytes,
            "raft store: dropped the torn end of the write-ahead file (the last write, cut by a crash, never acknowledged)"
        );
    }
    if !replayed.writes.is_empty() {
        commit_to_redb(db, replayed.writes.iter()).map_err(|e| damaged(path, e))?;
    }
    // A file with nothing of its generation to replay is ready as it is
    // (a new one was given its header when created); only one that held
    // records, a torn end or the earlier layout starts a new generation.
    if wal.len_bytes() > 0 || replayed.torn_bytes > 0 || !wal.has_generation() {
        wal.reset().map_err(open_err)?;
    }
    Ok(wal)
}

/// Opens the file, waiting (bounded) for a previous instance in this process
/// to finish closing it (a restarted node reopens its own store).
fn create_with_retry(path: &Path) -> Result<Database, StoreError> {
    let mut attempts = 0;
    loop {
        match Database::create(path) {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if attempts < OPEN_RETRIES => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(reason))) => {
                return Err(damaged(path, reason))
            }
            // redb's word for a file it does not recognise (bad magic).
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                if e.kind() == io::ErrorKind::InvalidData =>
            {
                return Err(damaged(path, e.to_string()))
            }
            Err(e) => return Err(StoreError::Open(format!("{}: {e}", path.display()))),
        }
    }
}

/// How often [`open`] retries a database still held by a closing instance (10 ms apart).
const OPEN_RETRIES: u32 = 300;

struct Loaded {
    log: LogCache,
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    incarnation: Incarnation,
}

/// Which store this is: a random id written when the store is first
/// opened, and whether this open wrote it (a new store, or one from before
/// stores had one). The node compares it with its seal (see `seal.rs`) to
/// notice a store that was removed or replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incarnation {
    /// The store's id.
    pub id: u128,
    /// Whether this open created it.
    pub created: bool,
}

/// A new incarnation id: BLAKE3 of the wall clock in nanoseconds, the
/// process id and the path. Unique per store creation in practice, which is
/// all it is for (it is no secret).
fn new_incarnation_id(path: &Path) -> u128 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut hasher = blake3::Hasher::new();
    hasher.update(&nanos.to_le_bytes());
    hasher.update(&std::process::id().to_le_bytes());
    hasher.update(path.as_os_str().as_encoded_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    u128::from_le_bytes(first)
}

/// Decodes a stored value, if there is one, of the store at `path`.
fn decode_opt<T: DeserializeOwned>(
    bytes: Option<Vec<u8>>,
    path: &Path,
) -> Result<Option<T>, StoreError> {
    bytes
        .map(|b| decode(&b))
        .transpose()
        .map_err(|e| damaged(path, e.to_string()))
}

fn load(db: &Database, path: &Path) -> Result<Loaded, StoreError> {
    let bad = |e: &dyn std::fmt::Display| damaged(path, e.to_string());
    // Create the tables so that a fresh file reads like an empty one.
    let tx = db.begin_write().map_err(|e| bad(&e))?;
    tx.open_table(LOG).map_err(|e| bad(&e))?;
    tx.open_table(META).map_err(|e| bad(&e))?;
    tx.commit().map_err(|e| bad(&e))?;

    let tx = db.begin_read().map_err(|e| bad(&e))?;
    let log_table = tx.open_table(LOG).map_err(|e| bad(&e))?;
    let meta = tx.open_table(META).map_err(|e| bad(&e))?;
    let mut cache = LogCache::default();
    for row in log_table.iter().map_err(|e| bad(&e))? {
        let (k, v) = row.map_err(|e| bad(&e))?;
        let entry: Entry = decode(v.value()).map_err(|e| bad(&e))?;
        if entry.index() != k.value() {
            return Err(bad(&format!(
                "log key {} holds entry {}",
                k.value(),
                entry.index()
            )));
        }
        cache.insert(entry, v.value().len());
    }
    let get = |key: MetaKey| -> Result<Option<Vec<u8>>, StoreError> {
        Ok(meta
            .get(key.name())
            .map_err(|e| bad(&e))?
            .map(|v| v.value().to_vec()))
    };
    cache.vote = decode_opt(get(MetaKey::Vote)?, path)?;
    cache.committed = decode_opt(get(MetaKey::Committed)?, path)?;
    cache.purged = decode_opt(get(MetaKey::Purged)?, path)?;
    let snapshot = match (get(MetaKey::SnapshotMeta)?, get(MetaKey::SnapshotData)?) {
        (Some(m), Some(d)) => Some((decode::<SnapshotMeta>(&m).map_err(|e| bad(&e))?, d)),
        _ => None,
    };
    let stored: Option<u128> = decode_opt(get(MetaKey::Incarnation)?, path)?;
    drop((log_table, meta, tx));
    let incarnation = match stored {
        Some(id) => Incarnation { id, created: false },
        None => {
            let id = new_incarnation_id(path);
            let row = WriteKind::PutMeta(MetaKey::Incarnation, encode(&id).map_err(|e| bad(&e))?);
            commit_to_redb(db, [row].iter()).map_err(|e| bad(&e))?;
            Incarnation { id, created: true }
        }
    };
    Ok(Loaded {
        log: cache,
        snapshot,
        incarnation,
    })
}

// ---------------------------------------------------------------------------
// The log.
// ---------------------------------------------------------------------------

#[derive(Default)]
struct LogCache {
    entries: BTreeMap<u64, (Entry, usize)>,
    bytes: u64,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
}

impl LogCache {
    fn insert(&mut self, entry: Entry, len_bytes: usize) {
        let index = entry.index();
        if let Some((_, old)) = self.entries.insert(index, (entry, len_bytes)) {
            self.bytes -= old as u64;
        }
        self.bytes += len_bytes as u64;
    }

    fn remove_range(&mut self, range: impl RangeBounds<u64>) {
        let keys: Vec<u64> = self.entries.range(range).map(|(k, _)| *k).collect();
        for k in keys {
            if let Some((_, len)) = self.entries.remove(&k) {
                self.bytes -= len as u64;
            }
        }
    }
}

struct LogInner {
    cache: Mutex<LogCache>,
    writer: Writer,
    incarnation: Incarnation,
}

/// The Raft log, vote and committed id (openraft's `RaftLogStorage`).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<LogInner>,
}

impl LogStore {
    /// Entries held in the log now (not yet purged by compaction).
    pub fn len_entries(&self) -> usize {
        lock(&self.inner.cache).entries.len()
    }

    /// Encoded bytes of the entries held in the log now.
    pub fn len_bytes(&self) -> u64 {
        lock(&self.inner.cache).bytes
    }

    /// Which store this is, and whether this open created it.
    pub fn incarnation(&self) -> Incarnation {
        self.inner.incarnation
    }

    /// Whether writes are made durable on the caller's thread instead of the
    /// writer thread's (see `writer.rs`): for a node that is not the
    /// leader, whose answer waits for the flush anyway.
    pub fn set_flush_in_place(&self, in_place: bool) {
        self.inner.writer.set_in_place(in_place);
    }

    /// The commands of the entries after index `after` up to `upto`, with
    /// their indices (entries without a command left out), when the log
    /// still holds every entry after `after` and there are at most
    /// `entries_max` of them; `None` otherwise.
    pub fn commands_between(
        &self,
        after: u64,
        upto: u64,
        entries_max: usize,
    ) -> Option<Vec<(u64, Command)>> {
        let cache = lock(&self.inner.cache);
        if cache.purged.is_some_and(|p| p.index() > after)
            || upto.saturating_sub(after) > entries_max as u64
        {
            return None;
        }
        let entries = cache.entries.range(after + 1..=upto);
        let mut commands = Vec::new();
        let mut expected = after + 1;
        for (index, (entry, _)) in entries {
            if *index != expected {
                return None;
            }
            expected += 1;
            if let EntryPayload::Normal(command) = &entry.payload {
                commands.push((*index, command.clone()));
            }
        }
        (expected == upto + 1).then_some(commands)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        let cache = lock(&self.inner.cache);
        Ok(cache
            .entries
            .range((start, end))
            .map(|(_, (e, _))| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(lock(&self.inner.cache).vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let cache = lock(&self.inner.cache);
        let last = cache.entries.values().next_back().map(|(e, _)| e.log_id());
        Ok(LogState {
            last_purged_log_id: cache.purged,
            last_log_id: last.or(cache.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = encode(vote)?;
        lock(&self.inner.cache).vote = Some(*vote);
        self.inner
            .writer
            .write(vec![WriteKind::PutMeta(MetaKey::Vote, bytes)])
            .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        lock(&self.inner.cache).committed = committed;
        let Some(committed) = committed else {
            return Ok(());
        };
        // Not waited for, and held until the next durable write (writer.rs):
        // a lost committed id only means re-applying from the snapshot is
        // shorter after a crash; openraft re-learns it from the leader.
        let bytes = encode(&committed)?;
        self.inner.writer.hold(MetaKey::Committed, bytes);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(lock(&self.inner.cache).committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        {
            let mut cache = lock(&self.inner.cache);
            for entry in entries {
                let bytes = encode(&entry)?;
                let index = entry.index();
                cache.insert(entry, bytes.len());
                rows.push((index, bytes));
            }
        }
        self.inner
            .writer
            .submit(vec![WriteKind::Append(rows)], Done::Flushed(callback))
            .await
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        lock(&self.inner.cache).remove_range(from..);
        self.inner
            .writer
            .write(vec![WriteKind::TruncateFrom(from)])
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let bytes = encode(&log_id)?;
        {
            let mut cache = lock(&self.inner.cache);
            cache.remove_range(..=log_id.index());
            cache.purged = Some(log_id);
        }
        self.inner
            .writer
            .write(vec![WriteKind::PurgeUpTo(log_id.index(), bytes)])
            .await
    }
}

// ---------------------------------------------------------------------------
// The state machine.
// ---------------------------------------------------------------------------

/// One applied entry, as commit certificates describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppliedRecord {
    /// Log index.
    pub index: u64,
    /// Term of the leader that proposed it.
    pub term: u64,
    /// BLAKE3 of the encoded log entry.
    pub entry_hash: [u8; 32],
    /// State hash after applying it.
    pub state_hash: StateHash,
}

struct SmInner {
    state: MeshState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshot: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
    history: VecDeque<AppliedRecord>,
}

struct SmShared {
    inner: Mutex<SmInner>,
    writer: Writer,
    /// Encoded bytes applied since the last snapshot (drives compaction by bytes).
    bytes_since_snapshot: AtomicU64,
    snapshots_built: AtomicU64,
    snapshots_installed: AtomicU64,
    latest: watch::Sender<Option<AppliedRecord>>,
}

/// The mesh state machine under openraft (`RaftStateMachine`), shared with the
/// node for reads.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<SmShared>,
}

impl StateMachineStore {
    fn restore(
        snapshot: Option<(SnapshotMeta, Vec<u8>)>,
        writer: Writer,
        path: &Path,
    ) -> Result<Self, StoreError> {
        let mut inner = SmInner {
            state: MeshState::new(),
            last_applied: None,
            membership: StoredMembership::default(),
            snapshot: None,
            history: VecDeque::new(),
        };
        if let Some((meta, data)) = snapshot {
            inner.state = snapshot::decode_bounded(&data, SNAPSHOT_BYTES_MAX)
                .map_err(|e| damaged(path, format!("stored snapshot: {e}")))?;
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
            inner.snapshot = Some((meta, Arc::new(data)));
        }
        Ok(Self {
            shared: Arc::new(SmShared {
                inner: Mutex::new(inner),
                writer,
                bytes_since_snapshot: AtomicU64::new(0),
                snapshots_built: AtomicU64::new(0),
                snapshots_installed: AtomicU64::new(0),
                latest: watch::channel(None).0,
            }),
        })
    }

    /// Runs `f` on the current state.
    pub fn read<R>(&self, f: impl FnOnce(&MeshState) -> R) -> R {
        f(&lock(&self.shared.inner).state)
    }

    /// The record of the applied entry at `index`, if still in the bounded history.
    pub fn applied_record(&self, index: u64) -> Option<AppliedRecord> {
        let inner = lock(&self.shared.inner);
        let first = inner.history.front()?.index;
        let pos = usize::try_from(index.checked_sub(first)?).ok()?;
        inner.history.get(pos).copied().filter(|r| r.index == index)
    }

    /// The latest applied entry (if still in the history) with the encoded
    /// [`StateBundle`] of the state and voters after it, read together: what
    /// a voter's commit statement describes. With `at`, only when the latest
    /// entry is at that index (nothing is encoded otherwise).
    pub fn latest_bundle_at(&self, at: Option<u64>) -> Option<(AppliedRecord, Vec<u8>)> {
        let inner = lock(&self.shared.inner);
        let record = *inner.history.back()?;
        if at.is_some_and(|index| index != record.index) {
            return None;
        }
        let bundle = StateBundle {
            index: record.index,
            term: record.term,
            voters: crate::certificate::voter_keys_of(inner.membership.membership()),
            snapshot: snapshot::encode(&inner.state),
        };
        Some((record, bundle.encode()))
    }

    /// Watches the latest applied entry.
    pub fn watch_applied(&self) -> watch::Receiver<Option<AppliedRecord>> {
        self.shared.latest.subscribe()
    }

    /// Encoded bytes applied since the last snapshot.
    pub fn bytes_since_snapshot(&self) -> u64 {
        self.shared.bytes_since_snapshot.load(Ordering::Relaxed)
    }

    /// Snapshots built by this node since it started.
    pub fn snapshots_built(&self) -> u64 {
        self.shared.snapshots_built.load(Ordering::Relaxed)
    }

    /// Snapshots received from a leader and installed since this node started.
    pub fn snapshots_installed(&self) -> u64 {
        self.shared.snapshots_installed.load(Ordering::Relaxed)
    }

    /// Index and size of the current snapshot, if any.
    pub fn snapshot_info(&self) -> Option<(u64, u64)> {
        let inner = lock(&self.shared.inner);
        let (meta, data) = inner.snapshot.as_ref()?;
        Some((meta.last_log_id?.index(), data.len() as u64))
    }

    fn apply_one(&self, entry: &Entry) -> io::Result<CommitReceipt> {
        let bytes = encode(entry)?;
        let log_id = entry.log_id();
        let index = log_id.index();
        let term = log_id.leader_id.term;
        let mut inner = lock(&self.shared.inner);
        let mut rejected = None;
        let mut took_effect = index;
        match &entry.payload {
            EntryPayload::Normal(cmd) => match inner.state.apply(index, cmd) {
                Ok(Response::AlreadyCommitted { index: first }) => took_effect = first,
                Ok(_) => {}
                Err(e) => rejected = Some(e.to_string()),
            },
            EntryPayload::Membership(m) => {
                inner.membership = StoredMembership::new(Some(log_id), m.clone());
            }
            EntryPayload::Blank => {}
        }
        inner.last_applied = Some(log_id);
        let record = AppliedRecord {
            index,
            term,
            entry_hash: *blake3::hash(&bytes).as_bytes(),
            state_hash: inner.state.state_hash(),
        };
        if inner.history.len() >= APPLIED_HISTORY_LEN {
            inner.history.pop_front();
        }
        inner.history.push_back(record);
        drop(inner);
        self.shared
            .bytes_since_snapshot
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.shared.latest.send_replace(Some(record));
        Ok(CommitReceipt {
            index: took_effect,
            term,
            state_hash: record.state_hash,
            rejected,
        })
    }
}

impl StateMachineStore {
    /// Writes a snapshot's metadata and bytes durably (one transaction).
    async fn persist_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), io::Error> {
        let meta_bytes = encode(meta)?;
        self.shared
            .writer
            .write(vec![
                WriteKind::PutMeta(MetaKey::SnapshotMeta, meta_bytes),
                WriteKind::PutMeta(MetaKey::SnapshotData, data.to_vec()),
            ])
            .await
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (meta, data) = {
            let inner = lock(&self.shared.inner);
            let meta = SnapshotMeta {
                last_log_id: inner.last_applied,
                last_membership: inner.membership.clone(),
            };
            (meta, snapshot::encode(&inner.state))
        };
        self.shared.bytes_since_snapshot.store(0, Ordering::Relaxed);
        self.persist_snapshot(&meta, &data).await?;
        lock(&self.shared.inner).snapshot = Some((meta.clone(), Arc::new(data.clone())));
        self.shared.snapshots_built.fetch_add(1, Ordering::Relaxed);
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let inner = lock(&self.shared.inner);
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let receipt = self.apply_one(&entry)?;
            if let Some(responder) = responder {
                responder.send(receipt);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, data: Vec<u8>) -> io::Result<()> {
        let state = snapshot::decode_bounded(&data, SNAPSHOT_BYTES_MAX)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.persist_snapshot(meta, &data).await?;
        let mut inner = lock(&self.shared.inner);
        inner.state = state;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), Arc::new(data)));
        inner.history.clear();
        self.shared.bytes_since_snapshot.store(0, Ordering::Relaxed);
        self.shared
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let inner = lock(&self.shared.inner);
        Ok(inner.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: data.as_ref().clone(),
        }))
    }
}
