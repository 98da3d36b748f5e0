//! The store's writer: group commit through the write-ahead file on one
//! thread (or in place, on a follower), checkpoints into redb.
//!
//! ```text
//!   append/vote/truncate/purge/snapshot ──► bounded queue ──► writer thread
//!     1. drain every queued write (up to WRITE_BATCH_MAX) into one batch
//!     2. writes that nobody waits for (the committed id) are not written on
//!        their own: they wait in the held slot and ride in front of the next
//!        durable batch
//!     3. small batch: one record in the write-ahead file, one fdatasync,
//!        acknowledge each write in order; keep the batch for redb
//!     4. snapshot batch, or the write-ahead file past WAL_CHECKPOINT_BYTES:
//!        checkpoint = every kept write (and the batch) in ONE durable redb
//!        transaction, then start the write-ahead file's next generation
//! ```
//!
//! Why step 2: openraft saves the committed id after every commit. An fsync
//! of its own for it kept the writer busy for one fsync right when the next
//! entry arrived, so every single-client commit waited for two fsyncs in a
//! row on the leader and on the follower. Holding it loses nothing that
//! matters: a committed id older than the log only means a restarted node
//! re-applies fewer entries at start and learns the rest from the leader.
//! A held write does not even go through the queue: it is put in a shared
//! slot ([`Writer::hold`]) that the thread empties into its next batch, so a
//! commit does not wake the writer thread only to have it hold a write.
//!
//! **Flushing in place.** A node that is not the leader makes its writes
//! durable on the caller's thread ([`Writer::set_in_place`]) when nothing is
//! queued for the writer thread: a follower's answer to an append waits for
//! the flush anyway, and handing the write to the thread and the completion
//! back cost two thread wake-ups on the critical path of every commit (on
//! the development machine a wake-up of an idle core alone is 10-30 µs).
//! The leader keeps the thread: its flush runs while its replication sends
//! go out, and blocking its async thread would hold them back. Only the
//! write-ahead record is written in place: snapshots, and the checkpoint a
//! full write-ahead file calls for, are redb transactions of many pages and
//! go to the thread, so they never stall a follower's async thread. A write in
//! place never overtakes a queued one: it is made only when the count of
//! queued writes is 0, under the lock the thread takes for each batch, and
//! the thread reports its batch before it lowers that count.
//!
//! Every write is a "set" (insert a row, delete a range, set a key), so
//! replaying writes that redb already holds, after a crash between a
//! checkpoint's commit and the start of the file's next generation, changes nothing.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::IOFlushed;
use redb::{Database, Durability, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::lock;
use super::wal::Wal;
use crate::types::TypeConfig;

pub(super) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

/// Most writes queued for the writer thread; `append` waits when it is full.
pub const WRITE_QUEUE_LEN: usize = 4096;
/// Most queued writes the writer folds into one batch.
pub const WRITE_BATCH_MAX: usize = 1024;
/// Size of the write-ahead file past which its writes are checkpointed into
/// redb and it starts a new generation; it also bounds the writes kept in memory for that.
pub const WAL_CHECKPOINT_BYTES: u64 = 8 * 1024 * 1024;

/// A key of the store's metadata table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum MetaKey {
    Vote,
    Committed,
    Purged,
    SnapshotMeta,
    SnapshotData,
    /// The store's incarnation id (see `Incarnation` in the store module).
    Incarnation,
}

impl MetaKey {
    /// The key's name in the redb table.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vote => "vote",
            Self::Committed => "committed",
            Self::Purged => "purged",
            Self::SnapshotMeta => "snapshot_meta",
            Self::SnapshotData => "snapshot_data",
            Self::Incarnation => "incarnation",
        }
    }
}

/// One change to the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum WriteKind {
    /// Log rows (index, encoded entry).
    Append(Vec<(u64, Vec<u8>)>),
    /// Sets a metadata key.
    PutMeta(MetaKey, Vec<u8>),
    /// Deletes log entries with index >= the value.
    TruncateFrom(u64),
    /// Deletes log entries with index <= the value, and records the purged id.
    PurgeUpTo(u64, Vec<u8>),
}

impl WriteKind {
    /// Snapshots go straight to redb: they are large and rare.
    fn is_snapshot(&self) -> bool {
        matches!(self, Self::PutMeta(MetaKey::SnapshotData, _))
    }
}

/// How the writer reports that a write is durable.
pub(super) enum Done {
    Flushed(IOFlushed<TypeConfig>),
    Reply(oneshot::Sender<Result<(), String>>),
    /// Nobody waits: a checkpoint a write in place handed to the thread.
    Nobody,
}

/// What [`Writer::try_in_place`] did with a write.
enum InPlace {
    /// Durable and reported; `checkpoint_due` when the write-ahead file is
    /// full and the thread should move it into redb.
    Written { checkpoint_due: bool },
    /// Not made in place: for the thread's queue.
    Queue(WriteOp),
}

/// Metadata writes nobody waits for, made durable with the next durable
/// batch, a checkpoint, or the shutdown. A key's new value replaces the one
/// held before, so the slot holds at most one value per [`MetaKey`].
#[derive(Default)]
struct Held(Vec<(MetaKey, Vec<u8>)>);

impl Held {
    fn put(&mut self, key: MetaKey, value: Vec<u8>) {
        self.0.retain(|(k, _)| *k != key);
        self.0.push((key, value));
    }

    /// The held writes, oldest first, leaving the slot empty.
    fn take(&mut self) -> Vec<WriteKind> {
        self.0
            .drain(..)
            .map(|(key, value)| WriteKind::PutMeta(key, value))
            .collect()
    }
}

struct WriteOp {
    kinds: Vec<WriteKind>,
    done: Done,
}

/// Handle to the writer thread; the last clone dropped closes the queue and
/// waits for the thread, so the database file is closed when it returns.
#[derive(Clone)]
pub(super) struct Writer {
    shared: Arc<WriterShared>,
}

struct WriterShared {
    tx: Option<mpsc::Sender<WriteOp>>,
    held: Arc<Mutex<Held>>,
    /// The files and the writes kept for redb; the thread locks it for each
    /// batch, a write made in place for itself.
    state: Arc<Mutex<WriterState>>,
    /// Writes queued for the thread and not yet written: a write is made in
    /// place only when this is 0, so it never overtakes an earlier one.
    queued: Arc<AtomicUsize>,
    /// Whether writes are made in place ([`Writer::set_in_place`]).
    in_place: AtomicBool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WriterShared {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Writer {
    /// Starts the writer thread over `db` and its write-ahead file.
    pub fn spawn(db: Database, wal: Wal) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_LEN);
        let held = Arc::new(Mutex::new(Held::default()));
        let state = Arc::new(Mutex::new(WriterState::new(db, wal, held.clone())));
        let queued = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (state, queued) = (state.clone(), queued.clone());
            std::thread::Builder::new()
                .name("raft-store-writer".into())
                .spawn(move || run(&state, &queued, rx))?
        };
        Ok(Self {
            shared: Arc::new(WriterShared {
                tx: Some(tx),
                held,
                state,
                queued,
                in_place: AtomicBool::new(false),
                thread: Some(thread),
            }),
        })
    }

    /// Makes later writes durable in place, on the caller's thread, when
    /// nothing is queued for the writer thread (`true`), or always through
    /// the thread (`false`, the default). See the module docs for who flushes in place.
    pub fn set_in_place(&self, in_place: bool) {
        self.shared.in_place.store(in_place, Ordering::Relaxed);
    }

    /// Makes `op` durable on this thread and reports it, unless writes for
    /// the thread are queued or it holds a snapshot; then it is handed back.
    /// Only the write-ahead file is written in place: snapshots and
    /// checkpoints are redb transactions of many pages, left to the thread
    /// so they never hold up the caller's async thread.
    fn try_in_place(&self, op: WriteOp) -> InPlace {
        let shared = &self.shared;
        let queued = || shared.queued.load(Ordering::SeqCst) > 0;
        if !shared.in_place.load(Ordering::Relaxed)
            || queued()
            || op.kinds.iter().any(WriteKind::is_snapshot)
        {
            return InPlace::Queue(op);
        }
        let mut state = lock(&shared.state);
        // A write queued meanwhile (by another caller) goes first.
        if queued() {
            return InPlace::Queue(op);
        }
        let (kinds, dones) = state.batch(vec![op]);
        let result = state.append_batch(kinds);
        complete(dones, &result);
        InPlace::Written {
            checkpoint_due: state.checkpoint_due(),
        }
    }

    /// Holds a metadata write nobody waits for until the next durable batch;
    /// it replaces a value held before for the same key, and wakes nobody.
    pub fn hold(&self, key: MetaKey, value: Vec<u8>) {
        lock(&self.shared.held).put(key, value);
    }

    /// Makes a write durable, in place or through the thread's queue (see
    /// [`Self::set_in_place`]); completion is reported through `done`.
    pub async fn submit(&self, kinds: Vec<WriteKind>, done: Done) -> io::Result<()> {
        let op = match self.try_in_place(WriteOp { kinds, done }) {
            InPlace::Written {
                checkpoint_due: false,
            } => return Ok(()),
            InPlace::Written {
                checkpoint_due: true,
            } => WriteOp {
                kinds: Vec::new(),
                done: Done::Nobody,
            },
            InPlace::Queue(op) => op,
        };
        self.enqueue(op).await
    }

    /// Hands `op` to the writer thread.
    async fn enqueue(&self, op: WriteOp) -> io::Result<()> {
        let stopped = || io::Error::other("the store writer has stopped");
        let tx = self.shared.tx.as_ref().ok_or_else(stopped)?;
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        let sent = tx.send(op).await;
        if sent.is_err() {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
        }
        sent.map_err(|_| stopped())
    }

    /// Queues a write and waits until it is durable.
    pub async fn write(&self, kinds: Vec<WriteKind>) -> io::Result<()> {
        let (done_tx, done_rx) = oneshot::channel();
        self.submit(kinds, Done::Reply(done_tx)).await?;
        match done_rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io::Error::other(e)),
            Err(_) => Err(io::Error::other("the store writer has stopped")),
        }
    }
}

struct WriterState {
    db: Database,
    wal: Wal,
    /// Writes durable in the write-ahead file and not yet in redb.
    kept: Vec<WriteKind>,
    /// Writes nobody waits for, not yet durable ([`Writer::hold`]).
    held: Arc<Mutex<Held>>,
    /// Set after a failure that leaves the files in doubt; every later write fails.
    failed: Option<String>,
}

impl WriterState {
    fn new(db: Database, wal: Wal, held: Arc<Mutex<Held>>) -> Self {
        Self {
            db,
            wal,
            kept: Vec::new(),
            held,
            failed: None,
        }
    }

    /// Makes `ops` durable as one batch; who waits for them, and the outcome.
    fn write_ops(&mut self, ops: Vec<WriteOp>) -> (Vec<Done>, Result<(), String>) {
        let (kinds, dones) = self.batch(ops);
        let result = self.write_batch(kinds);
        (dones, result)
    }

    /// The last checkpoint, when the writer stops: held writes go to redb.
    fn finish(&mut self) {
        if self.failed.is_none() {
            let held = lock(&self.held).take();
            if let Err(e) = self.checkpoint(held) {
                tracing::warn!(error = %e, "raft store: final checkpoint failed; the write-ahead file is replayed on the next start");
            }
        }
    }

    /// The writes to make durable now, held ones first (they were made
    /// earlier), and who waits for them.
    fn batch(&mut self, ops: Vec<WriteOp>) -> (Vec<WriteKind>, Vec<Done>) {
        let mut kinds = lock(&self.held).take();
        let mut dones = Vec::with_capacity(ops.len());
        for op in ops {
            kinds.extend(op.kinds);
            dones.push(op.done);
        }
        (kinds, dones)
    }

    /// Makes one batch durable; see the module docs for the two paths.
    fn write_batch(&mut self, kinds: Vec<WriteKind>) -> Result<(), String> {
        if kinds.iter().any(WriteKind::is_snapshot) {
            self.check_not_failed()?;
            return self.checkpoint(kinds);
        }
        self.append_batch(kinds)?;
        if self.checkpoint_due() {
            // The batch is already durable: a failed checkpoint fails later writes, not this one.
            let _ = self.checkpoint(Vec::new());
        }
        Ok(())
    }

    /// Makes `kinds` durable in the write-ahead file and keeps them for redb
    /// (nothing to write: nothing done).
    fn append_batch(&mut self, kinds: Vec<WriteKind>) -> Result<(), String> {
        self.check_not_failed()?;
        if kinds.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.wal.append(&kinds) {
            let reason = format!("write-ahead append: {e}");
            self.failed = Some(reason.clone());
            return Err(reason);
        }
        self.kept.extend(kinds);
        Ok(())
    }

    /// Whether the write-ahead file is full enough to move into redb.
    fn checkpoint_due(&self) -> bool {
        self.wal.len_bytes() >= WAL_CHECKPOINT_BYTES
    }

    fn check_not_failed(&self) -> Result<(), String> {
        match &self.failed {
            Some(reason) => Err(format!(
                "the store stopped after an earlier failure: {reason}"
            )),
            None => Ok(()),
        }
    }

    /// Moves every kept write, then `more`, into redb in one durable
    /// transaction and starts the write-ahead file's next generation.
    fn checkpoint(&mut self, more: Vec<WriteKind>) -> Result<(), String> {
        let kept = std::mem::take(&mut self.kept);
        let outcome = commit_to_redb(&self.db, kept.iter().chain(more.iter())).and_then(|()| {
            self.wal
                .reset()
                .map_err(|e| format!("starting the write-ahead file's next generation: {e}"))
        });
        if let Err(e) = &outcome {
            self.failed = Some(format!("checkpoint: {e}"));
        }
        outcome
    }
}

/// The writer thread: every queued write, up to [`WRITE_BATCH_MAX`], in one
/// batch, until the last handle is dropped.
fn run(state: &Mutex<WriterState>, queued: &AtomicUsize, mut rx: mpsc::Receiver<WriteOp>) {
    while let Some(first) = rx.blocking_recv() {
        let mut ops = vec![first];
        while ops.len() < WRITE_BATCH_MAX {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let count = ops.len();
        let mut state = lock(state);
        let (dones, result) = state.write_ops(ops);
        // Reported before a write in place can follow: completions stay in order.
        complete(dones, &result);
        queued.fetch_sub(count, Ordering::SeqCst);
    }
    lock(state).finish();
}

/// Tells each waiter the outcome of its batch (a failure is logged once,
/// whether the thread or a write in place made the batch).
fn complete(dones: Vec<Done>, result: &Result<(), String>) {
    if let Err(e) = result {
        tracing::error!(error = %e, "raft store write failed");
    }
    for done in dones {
        match done {
            Done::Flushed(cb) => cb.io_completed(result.clone().map_err(io::Error::other)),
            Done::Reply(tx) => {
                let _ = tx.send(result.clone());
            }
            Done::Nobody => {}
        }
    }
}

/// Applies `writes`, in order, in one durable redb transaction.
pub(super) fn commit_to_redb<'a>(
    db: &Database,
    writes: impl Iterator<Item = &'a WriteKind>,
) -> Result<(), String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let mut tx = db.begin_write().map_err(|e| s(&e))?;
    tx.set_durability(Durability::Immediate)
        .map_err(|e| s(&e))?;
    {
        let mut log = tx.open_table(LOG).map_err(|e| s(&e))?;
        let mut meta = tx.open_table(META).map_err(|e| s(&e))?;
        for kind in writes {
            match kind {
                WriteKind::Append(entries) => {
                    for (index, bytes) in entries {
                        log.insert(*index, bytes.as_slice()).map_err(|e| s(&e))?;
                    }
                }
                WriteKind::PutMeta(key, value) => {
                    meta.insert(key.name(), value.as_slice())
                        .map_err(|e| s(&e))?;
                }
                WriteKind::TruncateFrom(from) => {
                    log.retain_in(*from.., |_, _| false).map_err(|e| s(&e))?;
                }
                WriteKind::PurgeUpTo(upto, purged) => {
                    log.retain_in(..=*upto, |_, _| false).map_err(|e| s(&e))?;
                    meta.insert(MetaKey::Purged.name(), purged.as_slice())
                        .map_err(|e| s(&e))?;
                }
            }
        }
    }
    tx.commit().map_err(|e| s(&e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use redb::ReadableDatabase;

    fn committed(index: u8) -> WriteKind {
        WriteKind::PutMeta(MetaKey::Committed, vec![index])
    }

    /// A writer state over a fresh database and write-ahead file.
    fn fresh() -> (tempfile::TempDir, WriterState) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("s.redb")).unwrap();
        let wal = Wal::open(&dir.path().join("s.redb.wal")).unwrap();
        (dir, WriterState::new(db, wal, Arc::default()))
    }

    #[test]
    fn held_writes_take_no_fsync_of_their_own_and_ride_with_the_next_batch() {
        let (_dir, mut state) = fresh();
        lock(&state.held).put(MetaKey::Committed, vec![1]);
        lock(&state.held).put(MetaKey::Committed, vec![2]);
        // The newer committed id replaced the older one.
        assert_eq!(lock(&state.held).0.len(), 1);
        assert_eq!(state.wal.len_bytes(), 0, "nothing written yet");
        let append = WriteKind::Append(vec![(1, vec![7])]);
        let (tx, _rx) = oneshot::channel();
        let (kinds, dones) = state.batch(vec![WriteOp {
            kinds: vec![append.clone()],
            done: Done::Reply(tx),
        }]);
        assert_eq!(kinds, vec![committed(2), append], "held first");
        assert_eq!(dones.len(), 1);
        assert!(lock(&state.held).0.is_empty());
    }

    #[test]
    fn a_held_write_is_durable_after_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let read_committed = |path: &std::path::Path| {
            let db = Database::create(path).unwrap();
            let tx = db.begin_read().unwrap();
            let meta = tx.open_table(META).unwrap();
            let value = meta.get(MetaKey::Committed.name()).unwrap();
            value.map(|v| v.value().to_vec())
        };
        {
            let db = Database::create(&path).unwrap();
            let wal = Wal::open(&path.with_extension("redb.wal")).unwrap();
            let writer = Writer::spawn(db, wal).unwrap();
            writer.hold(MetaKey::Committed, vec![3]);
            writer.hold(MetaKey::Committed, vec![4]);
            // Dropping the last handle checkpoints everything into redb.
        }
        assert_eq!(read_committed(&path), Some(vec![4]));
    }

    /// A writer over a fresh database and write-ahead file in `dir`.
    fn spawn_in(dir: &std::path::Path) -> Writer {
        let db = Database::create(dir.join("s.redb")).unwrap();
        let wal = Wal::open(&dir.join("s.redb.wal")).unwrap();
        Writer::spawn(db, wal).unwrap()
    }

    fn reply() -> (Done, oneshot::Receiver<Result<(), String>>) {
        let (tx, rx) = oneshot::channel();
        (Done::Reply(tx), rx)
    }

    #[tokio::test]
    async fn a_write_in_place_is_durable_before_submit_returns() {
        let dir = tempfile::tempdir().unwrap();
        let writer = spawn_in(dir.path());
        writer.set_in_place(true);
        let (done, mut rx) = reply();
        let append = WriteKind::Append(vec![(1, vec![7])]);
        writer.submit(vec![append.clone()], done).await.unwrap();
        assert_eq!(
            rx.try_recv().unwrap(),
            Ok(()),
            "reported before submit returned"
        );
        let state = lock(&writer.shared.state);
        assert!(
            state.wal.len_bytes() > 0,
            "the record is in the write-ahead file"
        );
        assert_eq!(state.kept, vec![append]);
    }

    #[tokio::test]
    #[allow(clippy::await_holding_lock)] // the test holds the thread's lock on purpose
    async fn a_write_in_place_never_overtakes_a_queued_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let writer = spawn_in(dir.path());
            // The thread is busy: it cannot take the state for the first write.
            let busy = lock(&writer.shared.state);
            let (first, first_rx) = reply();
            let append = WriteKind::Append(vec![(1, vec![7])]);
            writer.submit(vec![append], first).await.unwrap();
            writer.set_in_place(true);
            let (second, mut second_rx) = reply();
            writer
                .submit(vec![WriteKind::TruncateFrom(1)], second)
                .await
                .unwrap();
            assert!(second_rx.try_recv().is_err(), "queued behind the first");
            drop(busy);
            assert_eq!(first_rx.await.unwrap(), Ok(()));
            assert_eq!(second_rx.await.unwrap(), Ok(()));
        }
        // In order, the truncation removed the appended row.
        let db = Database::create(&path).unwrap();
        let tx = db.begin_read().unwrap();
        let log = tx.open_table(LOG).unwrap();
        assert!(log.get(1).unwrap().is_none());
    }

    #[tokio::test]
    async fn a_write_in_place_leaves_checkpoints_and_snapshots_to_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let writer = spawn_in(dir.path());
        writer.set_in_place(true);
        let snapshot = WriteKind::PutMeta(MetaKey::SnapshotData, vec![1]);
        let (done, _rx) = reply();
        let op = WriteOp {
            kinds: vec![snapshot],
            done,
        };
        assert!(matches!(writer.try_in_place(op), InPlace::Queue(_)));
        // One write that fills the write-ahead file: durable in place, the
        // checkpoint due but not made here.
        let big = WriteKind::Append(vec![(1, vec![7; WAL_CHECKPOINT_BYTES as usize])]);
        let (done, mut rx) = reply();
        let op = WriteOp {
            kinds: vec![big],
            done,
        };
        let InPlace::Written { checkpoint_due } = writer.try_in_place(op) else {
            panic!("written in place");
        };
        assert!(checkpoint_due);
        assert_eq!(rx.try_recv().unwrap(), Ok(()));
        assert_eq!(
            lock(&writer.shared.state).kept.len(),
            1,
            "still in the file only"
        );
        // An empty write through submit finds the checkpoint due and hands
        // it to the thread; a later write waits behind it.
        writer.submit(Vec::new(), Done::Nobody).await.unwrap();
        writer.write(vec![committed(1)]).await.unwrap();
        let state = lock(&writer.shared.state);
        assert!(state.wal.len_bytes() < WAL_CHECKPOINT_BYTES);
        let tx = state.db.begin_read().unwrap();
        assert!(tx.open_table(LOG).unwrap().get(1).unwrap().is_some());
    }
}
