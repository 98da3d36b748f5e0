//! Snapshots: the whole [`MeshState`] as bytes, and back.
//!
//! ```text
//!   "AMSS" | version u16 LE | postcard(MeshState) | blake3(body) 32 bytes
//! ```
//!
//! The version names the body's layout. This build writes [`FORMAT_VERSION`]
//! (2: the state with its table of committed proposals) and reads the
//! previous one too (1: the same fields without that table), so a node
//! upgraded from a build that wrote format 1 starts from its own stored
//! snapshot, and a leader's snapshot in the previous format installs. A
//! change to any type inside the state changes the body, so it needs the
//! next format version and a reader for the one before
//! (`docs/operations.md`, "Upgrades"; a checked-in format-1 snapshot,
//! `testdata/snapshot-v1.amss`, keeps the reader honest).
//!
//! The state holds only `BTreeMap`s and `Vec`s, so equal states encode to equal
//! bytes. Decoding is bounded ([`SNAPSHOT_BYTES_MAX_DEFAULT`] unless told
//! otherwise), checks the checksum before parsing, and checks the invariants
//! that `apply` keeps, so garbage gives a [`SnapshotError`], never a panic. The
//! state hash travels inside the state; [`digest`] hashes the encoded bytes for
//! comparing snapshots themselves.

use crate::error::SnapshotError;
use crate::state::{MeshState, MeshStateV1};

/// First bytes of every snapshot.
pub const MAGIC: [u8; 4] = *b"AMSS";
/// Format version this build writes (and the newest it reads).
pub const FORMAT_VERSION: u16 = 2;
/// The oldest format version this build reads.
pub const FORMAT_VERSION_MIN: u16 = 1;
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
    if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&version) {
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
    let state = if version == 1 {
        MeshState::from(decode_body::<MeshStateV1>(body)?)
    } else {
        decode_body::<MeshState>(body)?
    };
    state
        .check_invariants()
        .map_err(SnapshotError::Inconsistent)?;
    Ok(state)
}

/// The whole of `body` as one `T`.
fn decode_body<T: for<'de> serde::Deserialize<'de>>(body: &[u8]) -> Result<T, SnapshotError> {
    let (value, rest): (T, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(SnapshotError::Malformed(format!(
            "{} trailing bytes after the state",
            rest.len()
        )));
    }
    Ok(value)
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

    /// Format 1 as the builds before format 2 wrote it: the state without
    /// its proposal table, under version 1.
    fn encode_v1(state: &MeshState) -> Vec<u8> {
        let body = postcard::to_allocvec(&state.to_v1()).unwrap();
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(blake3::hash(&body).as_bytes());
        out
    }

    /// A state with a member, a key and a committed retried proposal.
    fn populated() -> MeshState {
        let mut s = sample();
        s.apply(
            2,
            &Command::AddMember {
                node: crate::command::NodeId("node-a".into()),
                roles: [crate::command::Role::Committee].into(),
                zone: Some("eu-1".into()),
            },
        )
        .unwrap();
        s.apply(
            3,
            &Command::Once {
                session: 7,
                seq: 1,
                command: Box::new(Command::Put {
                    key: b"once".to_vec(),
                    value: b"1".to_vec(),
                }),
            },
        )
        .unwrap();
        s
    }

    #[test]
    fn the_previous_format_is_read_without_the_proposal_table() {
        let state = populated();
        let v1 = encode_v1(&state);
        assert_eq!(u16::from_le_bytes([v1[4], v1[5]]), 1);
        let back = decode(&v1).unwrap();
        assert_eq!(back.last_applied(), state.last_applied());
        assert_eq!(back.state_hash(), state.state_hash());
        assert_eq!(back.members(), state.members());
        assert_eq!(back.kv(), state.kv());
        // What format 1 could not hold is empty, and the next snapshot is format 2.
        assert_eq!(back, MeshState::from(state.to_v1()));
        assert_eq!(&encode(&back)[4..6], &FORMAT_VERSION.to_le_bytes());
    }

    /// A format-1 snapshot checked into the repository (written by
    /// `encode_v1` from [`populated`]; `AGENT_MESH_WRITE_FIXTURES=1` writes it
    /// again): any change to the state's types that changes format 1's body
    /// fails here, and needs a new format version.
    #[test]
    fn the_checked_in_format_1_snapshot_still_decodes() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/snapshot-v1.amss");
        if std::env::var_os("AGENT_MESH_WRITE_FIXTURES").is_some() {
            std::fs::write(&path, encode_v1(&populated())).unwrap();
        }
        let fixture = std::fs::read(&path).unwrap();
        let state = decode(&fixture).unwrap();
        let expected = populated();
        assert_eq!(state.last_applied(), Some(3));
        assert_eq!(state.state_hash(), expected.state_hash());
        assert_eq!(state.members(), expected.members());
        assert_eq!(state.kv(), expected.kv());
        assert_eq!(fixture, encode_v1(&expected), "format 1 must not change");
    }

    #[test]
    fn versions_outside_the_read_range_are_refused() {
        for version in [0u16, FORMAT_VERSION + 1] {
            let mut bytes = encode(&sample());
            bytes[4..6].copy_from_slice(&version.to_le_bytes());
            let err = decode(&bytes).unwrap_err();
            assert!(
                matches!(err, SnapshotError::UnsupportedVersion { found, .. } if found == version)
            );
            assert!(err.to_string().contains("versions 1 to 2"), "{err}");
        }
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
