//! The store's write-ahead file: the fast durable path of every log write.
//!
//! A durable redb transaction rewrites several B-tree and allocator pages
//! spread over the file, so its fsync costs about four times one small fsync
//! on the same disk. The write-ahead file makes a batch durable with one
//! sequential write ([`super::durable_write`]: one direct, synchronous write
//! of whole blocks on Linux, else a write and an `fdatasync`); redb takes the same writes later,
//! many batches in one transaction ([`super::writer`] decides when), after
//! which the file starts a new generation.
//!
//! ```text
//!   file   = magic: 8 bytes | generation: u64 LE | record | record | ...
//!   record = len_bytes: u32 LE | generation: u64 LE
//!            | checksum: first 8 bytes of BLAKE3(generation LE | body) | body
//!   body   = postcard(Vec<WriteKind>)        (one writer batch)
//! ```
//!
//! The file is sized once ([`SIZED_BYTES`]) and records are written in place,
//! so an append never changes its length: `fdatasync` then has no inode to
//! write, only the record's block, which measured 20-30 µs less per durable
//! write on the development disk than appending to a growing file. A reset
//! (after a checkpoint) does not empty the file but starts a new generation
//! in its header; records of earlier generations left behind fail the
//! checksum, which covers the generation.
//!
//! Replay reads records of the header's generation until the first that is
//! short, of another generation or fails its checksum: the end of what was
//! written, or a batch whose write was cut by a crash. Only the last write
//! can be cut (each waits for the one before it to be durable), and it was
//! never acknowledged, so it is dropped. A bad record with an intact record
//! of the same generation anywhere after it is not a cut write but damage to
//! acknowledged writes: replay fails with [`WalError::Corrupt`] instead of
//! dropping them, and so does a record that passes its checksum but does not
//! decode, and a file shorter than it was sized (cut off from the end).
//!
//! ```text
//!   records: [ok][ok][bad][ok][ok]   → Corrupt (acknowledged writes after the bad one)
//!   records: [ok][ok][bad]  zeros    → torn tail, dropped (never acknowledged)
//! ```
//!
//! A flipped byte in the very last record reads like a torn write and is
//! dropped: nothing in the file tells them apart. A file without the magic is of
//! the earlier append-only layout (records of `len | checksum(body) | body`
//! from offset 0, no generation) and replays as such.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::durable_write::DurableWriter;
use super::writer::{WriteKind, WAL_CHECKPOINT_BYTES};

/// The file's first bytes.
const MAGIC: [u8; 8] = *b"amwal\0\0\x02";
/// Bytes of the file header (magic and generation).
const FILE_HEADER_BYTES: u64 = 16;
/// Bytes of a record's header (length, generation and checksum).
const HEADER_BYTES: usize = 20;
/// Bytes of a record header in the earlier append-only layout.
const LEGACY_HEADER_BYTES: usize = 12;
/// Largest record body replay accepts; a larger length field is corruption.
pub const RECORD_BYTES_MAX: usize = 512 * 1024 * 1024;
/// The size the file is given at creation and at every reset: room for the
/// writes up to a checkpoint and a last batch. A larger batch grows it.
pub const SIZED_BYTES: u64 = WAL_CHECKPOINT_BYTES + 1024 * 1024;

fn checksum(generation: Option<u64>, body: &[u8]) -> [u8; 8] {
    let mut hasher = blake3::Hasher::new();
    if let Some(generation) = generation {
        hasher.update(&generation.to_le_bytes());
    }
    hasher.update(body);
    let mut out = [0u8; 8];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    out
}

/// The write-ahead file of one store.
pub(super) struct Wal {
    /// The buffered handle: replay, sizing.
    file: File,
    /// How records and headers are made durable.
    durable: DurableWriter,
    /// The header's generation; `None` for a file of the earlier layout,
    /// until its first reset.
    generation: Option<u64>,
    /// Bytes of this generation's records.
    len_bytes: u64,
}

/// Why [`Wal::replay`] could not read the file.
#[derive(Debug, thiserror::Error)]
pub(super) enum WalError {
    /// Reading failed; retrying may help.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Acknowledged writes are damaged: dropping them would lose them.
    #[error("{0}")]
    Corrupt(String),
}

/// What [`Wal::replay`] found in the file.
pub(super) struct Replayed {
    /// The writes of every intact record, in order.
    pub writes: Vec<WriteKind>,
    /// Bytes of a torn record after the last intact one (a write cut by a
    /// crash), dropped; 0 when the records simply ended.
    pub torn_bytes: u64,
}

impl Wal {
    /// Opens the file at `path`, creating and sizing it if it is new. Call
    /// [`Self::replay`] and [`Self::reset`] before the first append.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)?;
        let size = file.metadata()?.len();
        let durable = DurableWriter::open(path);
        tracing::debug!(path = %path.display(), direct = durable.is_direct(), "write-ahead file opened");
        let mut header = [0u8; FILE_HEADER_BYTES as usize];
        let generation = if size == 0 {
            let mut wal = Self {
                file,
                durable,
                generation: Some(0),
                len_bytes: 0,
            };
            wal.reset()?;
            return Ok(wal);
        } else if size >= FILE_HEADER_BYTES
            && file.read_exact_at(&mut header, 0).is_ok()
            && header[..8] == MAGIC
        {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&header[8..]);
            Some(u64::from_le_bytes(bytes))
        } else {
            None
        };
        Ok(Self {
            file,
            durable,
            generation,
            len_bytes: 0,
        })
    }

    /// Bytes of this generation's records.
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// Whether the file has the generation layout (a file of the earlier
    /// layout has none until its first reset).
    pub fn has_generation(&self) -> bool {
        self.generation.is_some()
    }

    /// Where this generation's records start.
    fn records_start(&self) -> usize {
        match self.generation {
            Some(_) => FILE_HEADER_BYTES as usize,
            None => 0,
        }
    }

    /// Reads every intact record of this generation; fails with
    /// [`WalError::Corrupt`] where records are damaged, not only cut at the end.
    pub fn replay(&mut self) -> Result<Replayed, WalError> {
        let mut bytes = Vec::new();
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_to_end(&mut bytes)?;
        if self.generation.is_some() && (bytes.len() as u64) < SIZED_BYTES {
            return Err(WalError::Corrupt(format!(
                "the file is {} bytes, shorter than the {SIZED_BYTES} it was sized to: cut off from the end",
                bytes.len()
            )));
        }
        let start = self.records_start();
        let (writes, pos, torn_bytes) = decode_records(&bytes, start, self.generation)?;
        self.len_bytes = (pos - start) as u64;
        self.durable.set_end(&bytes, pos);
        Ok(Replayed { writes, torn_bytes })
    }

    /// Writes one batch after this generation's records and makes it
    /// durable. A failed write is not counted: the next one
    /// goes to the same place, and replay stops at whatever it left.
    pub fn append(&mut self, writes: &[WriteKind]) -> io::Result<()> {
        let generation = self
            .generation
            .ok_or_else(|| io::Error::other("the write-ahead file was not reset after replay"))?;
        let body = postcard::to_allocvec(writes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let len = u32::try_from(body.len())
            .ok()
            .filter(|&l| (l as usize) <= RECORD_BYTES_MAX)
            .ok_or_else(|| io::Error::other("a write batch is too large for one record"))?;
        let mut record = Vec::with_capacity(HEADER_BYTES + body.len());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&generation.to_le_bytes());
        record.extend_from_slice(&checksum(Some(generation), &body));
        record.extend_from_slice(&body);
        let at = FILE_HEADER_BYTES + self.len_bytes;
        self.durable.write(&self.file, &record, at)?;
        self.len_bytes += record.len() as u64;
        Ok(())
    }

    /// Starts a new generation once redb holds everything in the file: the
    /// records left behind no longer replay. The file is sized back to
    /// [`SIZED_BYTES`] (a file of the earlier layout takes the new one).
    pub fn reset(&mut self) -> io::Result<()> {
        let generation = self.generation.map_or(1, |g| g.wrapping_add(1));
        let mut header = [0u8; FILE_HEADER_BYTES as usize];
        header[..8].copy_from_slice(&MAGIC);
        header[8..].copy_from_slice(&generation.to_le_bytes());
        let resized = self.file.metadata()?.len() != SIZED_BYTES;
        if resized {
            self.file.set_len(SIZED_BYTES)?;
        }
        self.durable.write(&self.file, &header, 0)?;
        if resized {
            // The new length is metadata the data write may not carry.
            self.file.sync_all()?;
        }
        self.generation = Some(generation);
        self.len_bytes = 0;
        Ok(())
    }
}

/// The writes of every intact record from `start`, where they end, and the
/// bytes of a torn record there; [`WalError::Corrupt`] where records are
/// damaged, not only cut at the end (see the module docs).
fn decode_records(
    bytes: &[u8],
    start: usize,
    generation: Option<u64>,
) -> Result<(Vec<WriteKind>, usize, u64), WalError> {
    let mut writes = Vec::new();
    let mut pos = start;
    while let Some((body, next)) = next_record(bytes, pos, generation) {
        let batch = postcard::from_bytes::<Vec<WriteKind>>(body).map_err(|e| {
            WalError::Corrupt(format!(
                "the record at offset {pos} passes its checksum but does not decode: {e}"
            ))
        })?;
        writes.extend(batch);
        pos = next;
    }
    let torn_bytes = torn_at(bytes, pos, generation);
    if let Some(valid) = intact_record_after(bytes, pos, generation) {
        return Err(WalError::Corrupt(format!(
            "the record at offset {pos} is damaged and an intact record follows at offset {valid}: \
             acknowledged writes were lost, not a write cut by a crash"
        )));
    }
    Ok((writes, pos, torn_bytes))
}

/// Decodes a whole write-ahead file's bytes as replay reads them (the
/// header's layout, every intact record, torn tail or corruption), without
/// the check of the file's sized length, which is about the file, not its
/// bytes: the number of writes, or why the records are corrupt. The entry
/// point of the write-ahead fuzz target.
pub fn decode_file(bytes: &[u8]) -> Result<usize, String> {
    let header = bytes.get(..FILE_HEADER_BYTES as usize);
    let generation = header
        .filter(|h| h[..8] == MAGIC)
        .and_then(|h| h[8..].try_into().ok())
        .map(u64::from_le_bytes);
    let start = if generation.is_some() {
        FILE_HEADER_BYTES as usize
    } else {
        0
    };
    decode_records(bytes, start, generation)
        .map(|(writes, _, _)| writes.len())
        .map_err(|e| e.to_string())
}

/// Decodes one record body (a writer batch) as replay does once its checksum
/// passed: the number of writes, or why it does not decode. The fuzz
/// target's way past the checksum, which mutated records never pass.
pub fn decode_batch(body: &[u8]) -> Result<usize, String> {
    postcard::from_bytes::<Vec<WriteKind>>(body)
        .map(|batch| batch.len())
        .map_err(|e| e.to_string())
}

/// The body of the record at `pos` and where the next one starts, if the
/// record is whole, intact and of `generation` (`None`: the earlier layout).
fn next_record(bytes: &[u8], pos: usize, generation: Option<u64>) -> Option<(&[u8], usize)> {
    let header_bytes = generation.map_or(LEGACY_HEADER_BYTES, |_| HEADER_BYTES);
    let header = bytes.get(pos..pos.checked_add(header_bytes)?)?;
    let (len, claimed) = length_and_generation(header)?;
    if len > RECORD_BYTES_MAX || generation.is_some_and(|g| g != claimed) {
        return None;
    }
    let start = pos + header_bytes;
    let body = bytes.get(start..start.checked_add(len)?)?;
    (checksum(generation, body) == header[header_bytes - 8..]).then_some((body, start + len))
}

/// Where the first intact record of `generation` after the end of the
/// intact records at `pos` starts, if any: looked for at every offset, since
/// the length in a damaged header cannot be trusted. Zeros and records of
/// earlier generations never match (the checksum covers the generation).
fn intact_record_after(bytes: &[u8], pos: usize, generation: Option<u64>) -> Option<usize> {
    let header_bytes = generation.map_or(LEGACY_HEADER_BYTES, |_| HEADER_BYTES);
    let last = bytes.len().checked_sub(header_bytes)?;
    (pos + 1..=last).find(|&at| next_record(bytes, at, generation).is_some())
}

/// Bytes of a torn record at `pos`: one that claims this generation (or,
/// in the earlier layout, any bytes at all) but is short or fails its
/// checksum. Zeros and records of earlier generations are the clean end.
fn torn_at(bytes: &[u8], pos: usize, generation: Option<u64>) -> u64 {
    let rest = bytes.get(pos..).unwrap_or_default();
    let Some(generation) = generation else {
        return rest.len() as u64;
    };
    match length_and_generation(rest) {
        Some((len, claimed)) if claimed == generation => {
            HEADER_BYTES.saturating_add(len).min(rest.len()) as u64
        }
        _ => 0,
    }
}

/// The body length and generation a record header at the start of `bytes`
/// claims (in the earlier layout the "generation" is checksum bytes, unused).
fn length_and_generation(bytes: &[u8]) -> Option<(usize, u64)> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let generation = u64::from_le_bytes(bytes.get(4..12)?.try_into().ok()?);
    Some((len, generation))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn put(key: u64) -> WriteKind {
        WriteKind::Append(vec![(key, vec![key as u8; 3])])
    }

    /// A new, empty write-ahead file in a temporary folder.
    fn fresh() -> (tempfile::TempDir, std::path::PathBuf, Wal) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let wal = Wal::open(&path).unwrap();
        (dir, path, wal)
    }

    /// Opens the file at `path` again and replays it, as a restart does.
    fn reopen(path: &Path) -> Replayed {
        Wal::open(path).unwrap().replay().unwrap()
    }

    #[test]
    fn appended_batches_replay_in_order_and_the_size_never_changes() {
        let (_dir, path, mut wal) = fresh();
        let size = || std::fs::metadata(&path).unwrap().len();
        assert_eq!(size(), SIZED_BYTES);
        wal.append(&[put(1), put(2)]).unwrap();
        wal.append(&[WriteKind::TruncateFrom(2)]).unwrap();
        assert_eq!(size(), SIZED_BYTES, "an append must not grow the file");
        let replayed = reopen(&path);
        assert_eq!(replayed.torn_bytes, 0);
        assert_eq!(
            replayed.writes,
            vec![put(1), put(2), WriteKind::TruncateFrom(2)]
        );
    }

    #[test]
    fn an_append_after_reopening_keeps_the_header_and_records_before_it() {
        let (_dir, path, mut wal) = fresh();
        wal.append(&[put(1)]).unwrap();
        drop(wal);
        // Reopened without a reset: the next record shares a block with
        // the header and the first record.
        let mut wal = Wal::open(&path).unwrap();
        assert_eq!(wal.replay().unwrap().writes, vec![put(1)]);
        wal.append(&[put(2)]).unwrap();
        assert_eq!(reopen(&path).writes, vec![put(1), put(2)]);
    }

    #[test]
    fn a_damaged_last_record_is_dropped_and_earlier_records_kept() {
        // A flipped byte in the last record reads like a torn write: nothing
        // after it tells them apart (see the module docs).
        let (_dir, path, mut wal) = fresh();
        wal.append(&[put(1)]).unwrap();
        let good = FILE_HEADER_BYTES + wal.len_bytes();
        wal.append(&[put(2)]).unwrap();
        let end = FILE_HEADER_BYTES + wal.len_bytes();
        // Flip one body byte of the second record.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[end as usize - 1] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let replayed = reopen(&path);
        assert_eq!(replayed.writes, vec![put(1)]);
        assert_eq!(replayed.torn_bytes, end - good);
        // A write cut in the middle of the second record's header.
        bytes[good as usize + 14..].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        let replayed = reopen(&path);
        assert_eq!(replayed.writes, vec![put(1)]);
        assert!(replayed.torn_bytes > 0);
    }

    /// Replays the file at `path` as a restart does, expecting corruption.
    fn corrupt(path: &Path) -> String {
        match Wal::open(path).unwrap().replay() {
            Err(WalError::Corrupt(reason)) => reason,
            Err(e) => panic!("an I/O error, not corruption: {e}"),
            Ok(r) => panic!("replayed {} writes instead of failing", r.writes.len()),
        }
    }

    /// Regression: one byte flipped near the start of a follower's write-ahead
    /// file made replay drop all 23 records (acknowledged entries and the
    /// vote among them) as if they were the torn end of a crashed write.
    #[test]
    fn wal_damage_before_acknowledged_records_is_corruption_not_a_torn_tail() {
        let (_dir, path, mut wal) = fresh();
        for key in 1..=23 {
            wal.append(&[put(key)]).unwrap();
        }
        let pristine = std::fs::read(&path).unwrap();
        let first = FILE_HEADER_BYTES as usize;
        // A body byte, the length, and the generation of the first record.
        for at in [first + HEADER_BYTES + 1, first, first + 5] {
            let mut bytes = pristine.clone();
            bytes[at] ^= 0x40;
            std::fs::write(&path, &bytes).unwrap();
            let reason = corrupt(&path);
            assert!(reason.contains("intact record follows"), "{reason}");
        }
        // A record that passes its checksum but does not decode.
        let mut bytes = pristine.clone();
        let body = [0xffu8; 6];
        let mut record = (body.len() as u32).to_le_bytes().to_vec();
        record.extend_from_slice(&wal.generation.unwrap().to_le_bytes());
        record.extend_from_slice(&checksum(wal.generation, &body));
        record.extend_from_slice(&body);
        let end = first + wal.len_bytes() as usize;
        bytes[end..end + record.len()].copy_from_slice(&record);
        std::fs::write(&path, &bytes).unwrap();
        assert!(corrupt(&path).contains("does not decode"));
        // Cut off from the end.
        std::fs::write(&path, &pristine[..end]).unwrap();
        assert!(corrupt(&path).contains("shorter"));
    }

    #[test]
    fn file_bytes_decode_as_replay_reads_them() {
        let (_dir, path, mut wal) = fresh();
        wal.append(&[put(1), put(2)]).unwrap();
        wal.append(&[put(3)]).unwrap();
        let end = (FILE_HEADER_BYTES + wal.len_bytes()) as usize;
        let mut bytes = std::fs::read(&path).unwrap();
        assert_eq!(decode_file(&bytes[..end]), Ok(3));
        assert_eq!(
            decode_file(&bytes),
            Ok(3),
            "zeros after the records end them"
        );
        bytes[FILE_HEADER_BYTES as usize + 1] ^= 0x01;
        let err = decode_file(&bytes).unwrap_err();
        assert!(err.contains("intact record follows"), "{err}");
        assert_eq!(decode_file(b""), Ok(0));
        let body = postcard::to_allocvec(&vec![put(9)]).unwrap();
        assert_eq!(decode_batch(&body), Ok(1));
        assert!(decode_batch(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn a_write_cut_at_the_end_is_still_dropped_as_a_torn_tail() {
        let (_dir, path, mut wal) = fresh();
        for key in 1..=5 {
            wal.append(&[put(key)]).unwrap();
        }
        let before_last = FILE_HEADER_BYTES + wal.len_bytes();
        wal.append(&[put(6), put(7)]).unwrap();
        let end = FILE_HEADER_BYTES + wal.len_bytes();
        // The last write reached the disk only in part: its tail is zeros.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[before_last as usize + HEADER_BYTES + 2..end as usize].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        let replayed = reopen(&path);
        assert_eq!(replayed.writes, (1..=5).map(put).collect::<Vec<_>>());
        assert_eq!(replayed.torn_bytes, end - before_last);
    }

    #[test]
    fn after_a_reset_records_of_the_earlier_generation_never_replay() {
        let (_dir, path, mut wal) = fresh();
        wal.append(&[put(1), put(2), put(3)]).unwrap();
        wal.append(&[put(4)]).unwrap();
        wal.reset().unwrap();
        assert_eq!(wal.len_bytes(), 0);
        assert_eq!(reopen(&path).writes, Vec::<WriteKind>::new());
        // A shorter record over the old ones: the old one after it stays dead.
        wal.append(&[put(5)]).unwrap();
        let replayed = reopen(&path);
        assert_eq!(replayed.writes, vec![put(5)]);
        assert_eq!(replayed.torn_bytes, 0, "stale records are the clean end");
    }

    #[test]
    fn a_file_of_the_earlier_append_only_layout_replays_then_takes_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let mut bytes = Vec::new();
        for batch in [vec![put(1)], vec![put(2), put(3)]] {
            let body = postcard::to_allocvec(&batch).unwrap();
            bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&checksum(None, &body));
            bytes.extend_from_slice(&body);
        }
        bytes.extend_from_slice(&[9, 0, 0]); // a torn third append
        std::fs::write(&path, &bytes).unwrap();
        let mut wal = Wal::open(&path).unwrap();
        let replayed = wal.replay().unwrap();
        assert_eq!(replayed.writes, vec![put(1), put(2), put(3)]);
        assert_eq!(replayed.torn_bytes, 3);
        assert!(wal.append(&[put(4)]).is_err(), "no append before the reset");
        wal.reset().unwrap();
        wal.append(&[put(4)]).unwrap();
        assert_eq!(reopen(&path).writes, vec![put(4)]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), SIZED_BYTES);
    }
}
