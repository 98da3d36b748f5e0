//! Snapshots: the whole [`MeshState`] as bytes, and back.
//!
//! ```text
//!   "AMSS" | version u16 LE | postcard(MeshState) | blake3(body) 32 bytes
//! ```
//!
//! The state holds only `BTreeMap`s and `Vec`s, so equal states encode to equal
//! bytes. Decoding is bounded ([`SNAPSHOT_BYTES_MAX_DEFAULT`] unless told
//! otherwise), checks the checksum before parsing, and checks the invariants
//! that `apply` keeps, so garbage gives a [`SnapshotError`], never a panic. The
//! state hash travels inside the state; [`digest`] hashes the encoded bytes for
//! comparing snapshots themselves.

use crate::error::SnapshotError;
use crate::state::MeshState;

/// First bytes of every snapshot.
pub const MAGIC: [u8; 4] = *b"AMSS";
/// Format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 2;
/// Default largest snapshot [`decode`] accepts, in bytes.
pub const SNAPSHOT_BYTES_MAX_DEFAULT: usize = 1024 * 1024 * 1024;

const HEADER_BYTES: usize = MAGIC.len() + 2;
const CHECKSUM_BYTES: usize = 32;

/// Encodes the state as snapshot bytes.
pub fn encode(state: &MeshState) -> Vec<u8> {
    // Every field is plain data that postcard supports, so this cannot fail.
    #[allow(clippy::expect_used)]
    let body = postcard::to_allocvec(state).expect("the mesh state always serializes");
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len() + CHECKSUM_BYTES);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(blake3::hash(&body).as_bytes());
    out
}

/// Decodes snapshot bytes, accepting at most [`SNAPSHOT_BYTES_MAX_DEFAULT`].
pub fn decode(bytes: &[u8]) -> Result<MeshState, SnapshotError> {
    decode_bounded(bytes, SNAPSHOT_BYTES_MAX_DEFAULT)
}

/// Decodes snapshot bytes, accepting at most `max_bytes`.
pub fn decode_bounded(bytes: &[u8], max_bytes: usize) -> Result<MeshState, SnapshotError> {
    if bytes.len() > max_bytes {
        return Err(SnapshotError::TooLarge {
            len_bytes: bytes.len(),
            max_bytes,
        });
    }
    if bytes.len() < HEADER_BYTES + CHECKSUM_BYTES || bytes[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != FORMAT_VERSION {
        return Err(SnapshotError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let (body, checksum) =
        bytes[HEADER_BYTES..].split_at(bytes.len() - HEADER_BYTES - CHECKSUM_BYTES);
    if blake3::hash(body).as_bytes() != checksum {
        return Err(SnapshotError::ChecksumMismatch);
    }
    let (state, rest): (MeshState, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(SnapshotError::Malformed(format!(
            "{} trailing bytes after the state",
            rest.len()
        )));
    }
    state
        .check_invariants()
        .map_err(SnapshotError::Inconsistent)?;
    Ok(state)
}

/// BLAKE3 of snapshot bytes (identifies a snapshot, for example in transfer).
pub fn digest(snapshot: &[u8]) -> [u8; 32] {
    *blake3::hash(snapshot).as_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::command::Command;

    fn sample() -> MeshState {
        let mut s = MeshState::new();
        s.apply(
            1,
            &Command::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
        )
        .unwrap();
        s
    }

    #[test]
    fn round_trip_preserves_state_and_hash() {
        let s = sample();
        let back = decode(&encode(&s)).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.state_hash(), s.state_hash());
    }

    #[test]
    fn equal_states_encode_equally() {
        assert_eq!(digest(&encode(&sample())), digest(&encode(&sample())));
    }

    #[test]
    fn size_bound_is_checked_first() {
        let bytes = encode(&sample());
        assert!(matches!(
            decode_bounded(&bytes, 8),
            Err(SnapshotError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_gives_clear_errors() {
        assert_eq!(decode(b"nope"), Err(SnapshotError::NotASnapshot));
        let mut bytes = encode(&sample());
        bytes[4] = 9;
        assert!(matches!(
            decode(&bytes),
            Err(SnapshotError::UnsupportedVersion { found: 9, .. })
        ));
        let mut bytes = encode(&sample());
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        assert_eq!(decode(&bytes), Err(SnapshotError::ChecksumMismatch));
    }

    #[test]
    fn valid_checksum_over_bad_body_is_malformed() {
        let body = [0xffu8; 8];
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(blake3::hash(&body).as_bytes());
        assert!(matches!(decode(&bytes), Err(SnapshotError::Malformed(_))));
    }
}
