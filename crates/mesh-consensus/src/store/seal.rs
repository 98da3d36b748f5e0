//! The seal: a small file beside the raft folder that names the store this
//! node's Raft state lives in, and says whether the node is rejoining the
//! committee after losing that state.
//!
//! Why a file outside the store: a store whose folder was removed looks,
//! from the inside, like a new one, and a store restored from an old copy
//! looks intact. Either way the node has lost writes it acknowledged (log
//! entries, its vote), and Raft's safety rests on a voter never forgetting
//! them. Every store gets a random incarnation id when it is created
//! ([`super::Incarnation`]); the seal records it. At open the node compares
//! the two (see `node/rejoin.rs`): a seal naming another store means the
//! state was lost, and the node rejoins instead of voting with what is left.
//!
//! ```text
//!   <data_dir>.seal = magic "amseal\0\x01" | checksum: first 8 bytes of BLAKE3(body) | body
//!   body            = postcard(Seal { incarnation, standing })
//! ```
//!
//! A seal is written whole to a temporary file, synced, renamed over the old
//! one, and the folder is synced: a crash leaves the old seal or the new one.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::RejoinGrant;

/// The file's first bytes.
const MAGIC: [u8; 8] = *b"amseal\0\x01";
/// Largest seal file read; a seal is a few dozen bytes.
const SEAL_BYTES_MAX: u64 = 4096;

/// What the seal records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// The incarnation id of the store the node's state lives in.
    pub incarnation: u128,
    /// Whether that state is whole.
    pub standing: Standing,
}

/// Whether a node's Raft state is whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Standing {
    /// The store holds everything the node acknowledged: it takes part fully.
    Sealed,
    /// The node lost acknowledged state and is rejoining: it neither votes
    /// nor acknowledges appends until a leader has removed it from the
    /// membership and sent `grant`, and then votes only once its log
    /// reaches the grant's removal entry.
    Rejoining {
        /// The leader's grant, once received.
        grant: Option<RejoinGrant>,
    },
}

/// The seal of the raft folder `data_dir`: `<data_dir>.seal`, beside it, so
/// that removing the folder leaves the seal behind.
pub fn seal_path(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.as_os_str().to_owned();
    name.push(".seal");
    PathBuf::from(name)
}

/// Reads the seal at `path`: `Ok(None)` if there is none, `Err` with the
/// reason if it cannot be read or is damaged.
pub fn read(path: &Path) -> Result<Option<Seal>, String> {
    let bytes = match std::fs::metadata(path) {
        Ok(meta) if meta.len() > SEAL_BYTES_MAX => {
            return Err(format!(
                "{} is {} bytes, too large for a seal",
                path.display(),
                meta.len()
            ))
        }
        Ok(_) => std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    decode(&bytes).map(Some).ok_or_else(|| {
        format!(
            "{} is damaged (bad magic, checksum or body)",
            path.display()
        )
    })
}

fn decode(bytes: &[u8]) -> Option<Seal> {
    let magic = bytes.get(..8)?;
    let sum = bytes.get(8..16)?;
    let body = bytes.get(16..)?;
    (magic == MAGIC && sum == checksum(body)).then_some(())?;
    postcard::from_bytes(body).ok()
}

fn checksum(body: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&blake3::hash(body).as_bytes()[..8]);
    out
}

/// Writes `seal` to `path` durably and atomically (see the module docs).
pub fn write(path: &Path, seal: &Seal) -> io::Result<()> {
    let body = postcard::to_allocvec(seal).map_err(io::Error::other)?;
    let mut bytes = Vec::with_capacity(16 + body.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&checksum(&body));
    bytes.extend_from_slice(&body);
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    {
        let mut file = File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// Syncs the folder holding `path`, so a rename in it is durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => File::open(parent)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::types::MemberId;

    #[test]
    fn a_seal_round_trips_and_a_damaged_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = seal_path(&dir.path().join("raft"));
        assert_eq!(path, dir.path().join("raft.seal"));
        assert_eq!(read(&path), Ok(None), "no seal yet");
        let seal = Seal {
            incarnation: 7 << 100 | 42,
            standing: Standing::Rejoining {
                grant: Some(RejoinGrant {
                    term: 3,
                    leader: MemberId(9),
                    removed_at: 40,
                }),
            },
        };
        write(&path, &seal).unwrap();
        assert_eq!(read(&path), Ok(Some(seal.clone())));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read(&path).unwrap_err().contains("damaged"));
        std::fs::write(&path, b"amseal").unwrap();
        assert!(read(&path).is_err(), "a short file is damaged, not absent");
    }
}
