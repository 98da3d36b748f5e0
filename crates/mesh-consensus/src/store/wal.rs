//! The store's write-ahead file: the fast durable path of every log write.
//!
//! A durable redb transaction rewrites several B-tree and allocator pages
//! spread over the file, so its fsync costs about four times one small fsync
//! on the same disk. The write-ahead file makes a batch durable with one
//! sequential append and one `fdatasync`; redb takes the same writes later,
//! many batches in one transaction ([`super::writer`] decides when), after
//! which the file is emptied.
//!
//! ```text
//!   record = len_bytes: u32 LE | checksum: first 8 bytes of BLAKE3(body) | body
//!   body   = postcard(Vec<WriteKind>)        (one writer batch)
//! ```
//!
//! Replay reads records until the end or the first record that is short or
//! fails its checksum: that is a batch whose append was cut by a crash, so it
//! was never acknowledged, and it and anything after it are dropped.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::writer::WriteKind;

/// Bytes of a record's header (length and checksum).
const HEADER_BYTES: usize = 12;
/// Largest record body replay accepts; a larger length field is corruption.
pub const RECORD_BYTES_MAX: usize = 512 * 1024 * 1024;

fn checksum(body: &[u8]) -> [u8; 8] {
    let hash = blake3::hash(body);
    let mut out = [0u8; 8];
    out.copy_from_slice(&hash.as_bytes()[..8]);
    out
}

/// The write-ahead file of one store.
pub(super) struct Wal {
    file: File,
    len_bytes: u64,
}

/// What [`Wal::replay`] found in the file.
pub(super) struct Replayed {
    /// The writes of every intact record, in order.
    pub writes: Vec<WriteKind>,
    /// Bytes after the last intact record (a torn final append), dropped.
    pub torn_bytes: u64,
}

impl Wal {
    /// Opens (or creates) the file at `path` for appending.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let len_bytes = file.metadata()?.len();
        Ok(Self { file, len_bytes })
    }

    /// Bytes in the file now.
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// Reads every intact record of the file.
    pub fn replay(&mut self) -> io::Result<Replayed> {
        let mut bytes = Vec::new();
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_to_end(&mut bytes)?;
        let mut writes = Vec::new();
        let mut pos = 0usize;
        while let Some((body, next)) = next_record(&bytes, pos) {
            match postcard::from_bytes::<Vec<WriteKind>>(body) {
                Ok(batch) => writes.extend(batch),
                Err(_) => break,
            }
            pos = next;
        }
        Ok(Replayed {
            writes,
            torn_bytes: (bytes.len() - pos) as u64,
        })
    }

    /// Appends one batch and makes it durable (`fdatasync`). On failure the
    /// file is cut back to where it was, so a later append is not stranded
    /// behind a partial record; if even that fails, the error says so and
    /// the caller must stop writing.
    pub fn append(&mut self, writes: &[WriteKind]) -> io::Result<()> {
        let body = postcard::to_allocvec(writes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let len = u32::try_from(body.len())
            .ok()
            .filter(|&l| (l as usize) <= RECORD_BYTES_MAX)
            .ok_or_else(|| io::Error::other("a write batch is too large for one record"))?;
        let mut record = Vec::with_capacity(HEADER_BYTES + body.len());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&checksum(&body));
        record.extend_from_slice(&body);
        let written = self
            .file
            .write_all(&record)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len_bytes += record.len() as u64;
                Ok(())
            }
            Err(e) => match self.file.set_len(self.len_bytes) {
                Ok(()) => Err(e),
                Err(cut) => Err(io::Error::other(format!(
                    "{e}; cutting the write-ahead file back also failed: {cut}"
                ))),
            },
        }
    }

    /// Empties the file once redb holds everything in it.
    pub fn reset(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_all()?;
        self.len_bytes = 0;
        Ok(())
    }
}

/// The body of the record at `pos` and where the next one starts, if the
/// record is whole and intact.
fn next_record(bytes: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(pos..pos.checked_add(HEADER_BYTES)?)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    if len > RECORD_BYTES_MAX {
        return None;
    }
    let start = pos + HEADER_BYTES;
    let body = bytes.get(start..start.checked_add(len)?)?;
    (checksum(body) == header[4..]).then_some((body, start + len))
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

    #[test]
    fn appended_batches_replay_in_order() {
        let (_dir, path, mut wal) = fresh();
        wal.append(&[put(1), put(2)]).unwrap();
        wal.append(&[WriteKind::TruncateFrom(2)]).unwrap();
        let mut wal = Wal::open(&path).unwrap();
        let replayed = wal.replay().unwrap();
        assert_eq!(replayed.torn_bytes, 0);
        assert_eq!(
            replayed.writes,
            vec![put(1), put(2), WriteKind::TruncateFrom(2)]
        );
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_dropped_and_earlier_records_kept() {
        let (_dir, path, mut wal) = fresh();
        wal.append(&[put(1)]).unwrap();
        let good = wal.len_bytes();
        wal.append(&[put(2)]).unwrap();
        // Flip one body byte of the second record.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let replayed = Wal::open(&path).unwrap().replay().unwrap();
        assert_eq!(replayed.writes, vec![put(1)]);
        assert_eq!(replayed.torn_bytes, bytes.len() as u64 - good);
        // A cut in the middle of a header.
        std::fs::write(&path, &bytes[..good as usize + 5]).unwrap();
        let replayed = Wal::open(&path).unwrap().replay().unwrap();
        assert_eq!(replayed.writes, vec![put(1)]);
        assert_eq!(replayed.torn_bytes, 5);
    }

    #[test]
    fn reset_empties_the_file() {
        let (_dir, path, mut wal) = fresh();
        wal.append(&[put(1)]).unwrap();
        wal.reset().unwrap();
        assert_eq!(wal.len_bytes(), 0);
        wal.append(&[put(3)]).unwrap();
        let replayed = Wal::open(&path).unwrap().replay().unwrap();
        assert_eq!(replayed.writes, vec![put(3)]);
    }
}
