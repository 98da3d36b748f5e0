//! Certificate revocations a node enforces, from three sources, each checked
//! against the CA key before any peer is refused.
//!
//! ```text
//!   CA's revocations file (identity.revocations) ─ re-read when it changes ─┐
//!   committed state (committee nodes: RevokeCertificate entries) ───────────┼─► CA signature ok?
//!   gossip topic revocations/1 (sent by the committee's leader) ────────────┘        │
//!         ▲ each newly committed revocation; everything it holds after a peer joins  ▼
//!         └──────────────────────────────────── leader      NetHandle::revoke (drop + refuse),
//!                                                            admin tokens refused
//! ```
//!
//! The committed state is the mesh's agreed list, so a revocation reaches
//! every node whether or not it can read the CA's file: committee nodes read
//! it from their own state, every other node hears it from the leader. A
//! gossiped or committed revocation is only ever trusted for its CA
//! signature, never for who sent it. [`Revocations`] is the I/O-free part:
//! which revocations are known, which are new, and when to send them again.

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use ed25519_dalek::VerifyingKey;
use mesh_security::ca::{RevocationList, SignedRevocation};
use mesh_security::envelope::MessageKind;

/// Gossip topic of CA-signed revocations.
pub const REVOCATION_TOPIC: &str = "agent-mesh/revocations/1";
/// Envelope kind of a gossiped batch of revocations.
pub const REVOCATION_KIND: MessageKind = MessageKind(0x0110);
/// Most revocations in one gossip message (each is about 150 bytes).
pub const REVOCATIONS_PER_MESSAGE_MAX: usize = 256;
/// Largest gossiped revocation envelope decoded.
pub const REVOCATION_ENVELOPE_BYTES_MAX: usize = 128 * 1024;
/// Least time between two sends of the whole list after peers joined.
pub const REPUBLISH_GAP_MS: u64 = 10_000;
/// Most revocations learned from the committed state or gossip.
pub const LEARNED_REVOCATIONS_MAX: usize = 1_000_000;

/// What a node knows about revocations and what it has acted on.
#[derive(Default)]
pub struct Revocations {
    /// Modification time of the revocations file when last read.
    pub file_modified: Option<SystemTime>,
    /// Verified entries of the file, as last read.
    file: Vec<SignedRevocation>,
    /// Verified entries from the committed state or gossip, by serial.
    learned: BTreeMap<Vec<u8>, SignedRevocation>,
    /// Serials already handed to the network layer.
    applied: HashSet<Vec<u8>>,
    /// Committed revocations already read from the state.
    committed_seen: usize,
    /// Learned revocations the leader has not gossiped yet.
    unsent: Vec<SignedRevocation>,
    /// A peer joined since the whole list was last gossiped.
    republish_wanted: bool,
    /// When the whole list was last gossiped, ms since the epoch.
    republished_ms: Option<u64>,
}

/// Why a revocation from outside the process was not taken.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// Not hex, not a revocation, or too large.
    #[error("malformed revocation: {0}")]
    Malformed(String),
    /// The CA did not sign it.
    #[error("the revocation is not signed by this mesh's CA ({0}); retrying does not help")]
    NotSignedByCa(String),
}

/// Decodes a CA-signed revocation (hex of its wire encoding, as in the `signed`
/// field of the CA's revocations file) and checks the CA's signature.
pub fn decode_hex(text: &str, ca_key: &VerifyingKey) -> Result<SignedRevocation, RevocationError> {
    let limit = 2 * mesh_security::ca::REVOCATION_BYTES_MAX;
    if text.len() > limit {
        let why = format!("{} hex digits, the limit is {limit}", text.len());
        return Err(RevocationError::Malformed(why));
    }
    let bytes = hex::decode(text.trim()).map_err(|e| RevocationError::Malformed(e.to_string()))?;
    decode(&bytes, ca_key)
}

/// Decodes a revocation's wire encoding and checks the CA's signature.
pub fn decode(bytes: &[u8], ca_key: &VerifyingKey) -> Result<SignedRevocation, RevocationError> {
    let revocation = SignedRevocation::from_bytes(bytes)
        .map_err(|e| RevocationError::Malformed(e.to_string()))?;
    revocation
        .verify(ca_key)
        .map_err(|e| RevocationError::NotSignedByCa(e.to_string()))?;
    Ok(revocation)
}

/// Checks a command from outside the process before it is proposed: a
/// revocation must carry the CA's signature; every other command passes.
pub fn check_command(
    command: &mesh_consensus::Command,
    ca_key: &VerifyingKey,
) -> Result<(), RevocationError> {
    match command {
        mesh_consensus::Command::RevokeCertificate { revocation, .. } => revocation
            .verify(ca_key)
            .map_err(|e| RevocationError::NotSignedByCa(e.to_string())),
        _ => Ok(()),
    }
}

/// Encodes revocations into gossip payloads of at most
/// [`REVOCATIONS_PER_MESSAGE_MAX`] each.
pub fn encode_batches(revocations: &[SignedRevocation]) -> Vec<Vec<u8>> {
    revocations
        .chunks(REVOCATIONS_PER_MESSAGE_MAX)
        .filter_map(|chunk| {
            let encoded: Vec<Vec<u8>> = chunk.iter().filter_map(|r| r.to_bytes().ok()).collect();
            postcard::to_allocvec(&encoded).ok()
        })
        .collect()
}

/// Decodes a gossip payload and keeps the revocations the CA signed; the
/// rest are counted as refused.
pub fn decode_batch(
    payload: &[u8],
    ca_key: &VerifyingKey,
) -> Result<(Vec<SignedRevocation>, usize), RevocationError> {
    let encoded: Vec<Vec<u8>> =
        postcard::from_bytes(payload).map_err(|e| RevocationError::Malformed(e.to_string()))?;
    if encoded.len() > REVOCATIONS_PER_MESSAGE_MAX {
        let why = format!(
            "{} revocations in one message, the limit is {REVOCATIONS_PER_MESSAGE_MAX}",
            encoded.len()
        );
        return Err(RevocationError::Malformed(why));
    }
    let total = encoded.len();
    let taken: Vec<SignedRevocation> = encoded
        .iter()
        .filter_map(|bytes| decode(bytes, ca_key).ok())
        .collect();
    let refused = total - taken.len();
    Ok((taken, refused))
}

impl Revocations {
    /// Replaces the file's entries (already verified) with what it holds now.
    pub fn set_file(&mut self, entries: Vec<SignedRevocation>, modified: Option<SystemTime>) {
        self.file = entries;
        self.file_modified = modified;
    }

    /// Takes verified revocations from the committed state or gossip; returns
    /// how many were new. New ones are queued to be gossiped by a leader.
    pub fn learn(&mut self, revocations: impl IntoIterator<Item = SignedRevocation>) -> usize {
        let mut new = 0;
        for revocation in revocations {
            let serial = &revocation.entry.serial;
            if self.learned.contains_key(serial) || self.learned.len() >= LEARNED_REVOCATIONS_MAX {
                continue;
            }
            self.learned.insert(serial.clone(), revocation.clone());
            if self.unsent.len() < LEARNED_REVOCATIONS_MAX {
                self.unsent.push(revocation);
            }
            new += 1;
        }
        new
    }

    /// Whether a revocation of `serial` was learned already (its signature
    /// then need not be checked again).
    pub fn is_learned(&self, serial: &[u8]) -> bool {
        self.learned.contains_key(serial)
    }

    /// Whether the committed state holds revocations not read yet.
    pub fn committed_changed(&self, committed_count: usize) -> bool {
        committed_count != self.committed_seen
    }

    /// Records how many committed revocations have been read.
    pub fn set_committed_seen(&mut self, committed_count: usize) {
        self.committed_seen = committed_count;
    }

    /// Every known revocation not yet handed to the network layer; they count
    /// as handed over once returned.
    pub fn take_unapplied(&mut self) -> Vec<SignedRevocation> {
        let known = self.file.iter().chain(self.learned.values());
        let fresh: Vec<SignedRevocation> = known
            .filter(|r| !self.applied.contains(&r.entry.serial))
            .cloned()
            .collect();
        for revocation in &fresh {
            self.applied.insert(revocation.entry.serial.clone());
        }
        fresh
    }

    /// The list admin tokens are checked against: the file's and the learned.
    pub fn list(&self, ca_key: &VerifyingKey) -> RevocationList {
        let mut list = RevocationList::new();
        for revocation in self.file.iter().chain(self.learned.values()) {
            if list.insert(revocation, ca_key).is_err() {
                break;
            }
        }
        list
    }

    /// Notes that a peer joined: it may not have heard earlier revocations.
    pub fn peer_joined(&mut self) {
        self.republish_wanted = true;
    }

    /// What a leader should gossip now at `now_ms`: every learned revocation
    /// when peers joined and the last full send is [`REPUBLISH_GAP_MS`] old,
    /// else the ones learned since the last call. Non-leaders send nothing
    /// and forget what is queued.
    pub fn to_gossip(&mut self, is_leader: bool, now_ms: u64) -> Vec<SignedRevocation> {
        let unsent = std::mem::take(&mut self.unsent);
        if !is_leader {
            return Vec::new();
        }
        let gap_over = self
            .republished_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= REPUBLISH_GAP_MS);
        if self.republish_wanted && gap_over && !self.learned.is_empty() {
            self.republish_wanted = false;
            self.republished_ms = Some(now_ms);
            return self.learned.values().cloned().collect();
        }
        unsent
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mesh_security::ca::RevocationEntry;
    use mesh_security::identity::NodeIdentity;

    fn signed(ca: &NodeIdentity, serial: u8) -> SignedRevocation {
        let entry = RevocationEntry {
            serial: vec![serial],
            node_id: NodeIdentity::from_seed(&[serial; 32]).node_id(),
            revoked_at_unix_s: 10,
            reason: "key compromise".into(),
        };
        SignedRevocation::sign(ca, entry).unwrap()
    }

    #[test]
    fn only_the_cas_signature_counts() {
        let ca = NodeIdentity::from_seed(&[1; 32]);
        let other = NodeIdentity::from_seed(&[2; 32]);
        let good = hex::encode(signed(&ca, 5).to_bytes().unwrap());
        let forged = hex::encode(signed(&other, 5).to_bytes().unwrap());
        let key = ca.verifying_key();
        assert_eq!(decode_hex(&good, &key).unwrap().entry.serial, vec![5]);
        assert!(matches!(
            decode_hex(&forged, &key),
            Err(RevocationError::NotSignedByCa(_))
        ));
        assert!(matches!(
            decode_hex("zz", &key),
            Err(RevocationError::Malformed(_))
        ));
        let huge = "00".repeat(10_000);
        assert!(matches!(
            decode_hex(&huge, &key),
            Err(RevocationError::Malformed(_))
        ));
    }

    #[test]
    fn gossip_batches_round_trip_and_drop_forged_entries() {
        let ca = NodeIdentity::from_seed(&[1; 32]);
        let other = NodeIdentity::from_seed(&[2; 32]);
        let mut all: Vec<SignedRevocation> = (0..=255u8).map(|s| signed(&ca, s)).collect();
        all.push(signed(&other, 7));
        let batches = encode_batches(&all);
        assert_eq!(batches.len(), 2, "257 entries make two messages");
        let key = ca.verifying_key();
        let (first, refused_first) = decode_batch(&batches[0], &key).unwrap();
        let (second, refused_second) = decode_batch(&batches[1], &key).unwrap();
        assert_eq!((first.len(), refused_first), (256, 0));
        assert_eq!((second.len(), refused_second), (0, 1));
        assert!(decode_batch(b"\xff\xff\xff", &key).is_err());
    }

    #[test]
    fn each_revocation_is_applied_once_and_tokens_see_every_source() {
        let ca = NodeIdentity::from_seed(&[1; 32]);
        let key = ca.verifying_key();
        let mut r = Revocations::default();
        r.set_file(vec![signed(&ca, 1)], None);
        assert_eq!(r.learn([signed(&ca, 2), signed(&ca, 2)]), 1);
        assert!(
            r.is_learned(&[2]) && !r.is_learned(&[1]),
            "the file's entries are not learned"
        );
        let first: Vec<Vec<u8>> = r
            .take_unapplied()
            .into_iter()
            .map(|x| x.entry.serial)
            .collect();
        assert_eq!(first, vec![vec![1], vec![2]]);
        assert!(r.take_unapplied().is_empty());
        assert_eq!(
            r.learn([signed(&ca, 1)]),
            1,
            "file and state are separate sources"
        );
        assert!(
            r.take_unapplied().is_empty(),
            "serial 1 was applied already"
        );
        assert_eq!(r.list(&key).len(), 2);
    }

    #[test]
    fn the_leader_sends_new_ones_and_everything_after_a_join_at_most_every_gap() {
        let ca = NodeIdentity::from_seed(&[1; 32]);
        let mut r = Revocations::default();
        r.learn([signed(&ca, 1)]);
        assert!(r.to_gossip(false, 0).is_empty(), "a follower sends nothing");
        r.learn([signed(&ca, 2)]);
        assert_eq!(r.to_gossip(true, 0).len(), 1, "only what is new");
        assert!(r.to_gossip(true, 1).is_empty());
        r.peer_joined();
        assert_eq!(r.to_gossip(true, 2).len(), 2, "everything for the newcomer");
        r.peer_joined();
        assert!(r.to_gossip(true, 3).is_empty(), "not again within the gap");
        let later = 2 + REPUBLISH_GAP_MS;
        assert_eq!(r.to_gossip(true, later).len(), 2);
    }

    #[test]
    fn committed_count_tells_when_to_read_the_state() {
        let mut r = Revocations::default();
        assert!(!r.committed_changed(0));
        assert!(r.committed_changed(3));
        r.set_committed_seen(3);
        assert!(!r.committed_changed(3));
    }
}
