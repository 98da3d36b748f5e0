//! Commit certificates: a majority of the current voters signing what the log
//! holds at an index, so that any node can verify committed state without
//! trusting a single peer.
//!
//! After applying entry `i`, each voter signs a [`CommitStatement`]
//! `(mesh id, index, term, entry hash, state hash, state digest)` with its
//! Ed25519 identity. The state digest hashes the state itself with the
//! voters at `i` ([`crate::follow::StateBundle`]), so a copy of the state
//! fetched from any peer can be checked against the certificate.
//! Because the state hash is chained over every accepted entry, certifying
//! index `i` certifies the whole prefix up to `i`; voters therefore sign the
//! last entry of each applied batch, not every entry.
//!
//! Everything here is sans-I/O: the [`CertificateCollector`] takes signed
//! statements and returns outcomes (pending, certified, evidence); the node
//! decides what to send and what to commit. Evidence is either two valid
//! signatures by one voter over different statements for the same index
//! (equivocation) or a valid signature over a state hash that differs from the
//! local one for the same entry (state-hash mismatch).

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::{Signature, VerifyingKey};
use mesh_security::identity::{verify_signature, NodeIdentity};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::command::EvidenceKind;
use crate::state::StateHash;
use crate::store::AppliedRecord;
use crate::types::MemberId;

/// Domain separation prefix of every signed statement.
pub const STATEMENT_DOMAIN: &[u8] = b"agent-mesh/commit-statement/v2\0";
/// Most indices a collector tracks at once (older ones are forgotten).
pub const COLLECTOR_INDICES_MAX: usize = 256;
/// Most signatures a certificate may carry (the largest committee is 7).
pub const CERTIFICATE_SIGNATURES_MAX: usize = 16;
/// Longest mesh id, in bytes.
pub const MESH_ID_BYTES_MAX: usize = 128;

/// Why a statement or certificate was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CertificateError {
    /// The signature does not verify under the signer's key.
    #[error("signature of {0} does not verify (forged or corrupted; retrying does not help)")]
    BadSignature(MemberId),
    /// The signer is not a current voter.
    #[error("{0} is not a current voter (its signature does not count)")]
    NotAVoter(MemberId),
    /// The public key does not belong to the claimed signer.
    #[error("public key does not belong to {0} (forged; retrying does not help)")]
    KeyMismatch(MemberId),
    /// Too few valid signatures.
    #[error("{valid} valid voter signatures, {needed} needed for a majority")]
    NoMajority {
        /// Valid distinct voter signatures.
        valid: usize,
        /// Majority of the voters.
        needed: usize,
    },
    /// The statement is for another mesh.
    #[error("statement is for mesh {0:?}, not this one")]
    WrongMesh(String),
    /// Structural limits broken.
    #[error("malformed certificate: {0}")]
    Malformed(String),
}

/// What a voter signs after applying an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitStatement {
    /// The mesh this log belongs to.
    pub mesh_id: String,
    /// Log index.
    pub index: u64,
    /// Term of the leader that proposed the entry.
    pub term: u64,
    /// BLAKE3 of the encoded log entry.
    pub entry_hash: [u8; 32],
    /// State hash after applying it.
    pub state_hash: StateHash,
    /// [`crate::follow::bundle_digest`] of the state and voters after it.
    pub state_digest: [u8; 32],
}

impl CommitStatement {
    /// The statement describing an applied entry of mesh `mesh_id`, whose
    /// state bundle has `state_digest`.
    pub fn from_record(mesh_id: &str, record: &AppliedRecord, state_digest: [u8; 32]) -> Self {
        Self {
            mesh_id: mesh_id.to_owned(),
            index: record.index,
            term: record.term,
            entry_hash: record.entry_hash,
            state_hash: record.state_hash,
            state_digest,
        }
    }

    /// The exact bytes that are signed: domain prefix then the postcard encoding.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = STATEMENT_DOMAIN.to_vec();
        // Plain data; postcard cannot fail on it.
        #[allow(clippy::expect_used)]
        out.extend(postcard::to_allocvec(self).expect("a statement always serializes"));
        out
    }
}

/// One voter's signature over a statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedStatement {
    /// What was signed.
    pub statement: CommitStatement,
    /// The signer's Raft id.
    pub signer: MemberId,
    /// The signer's Ed25519 public key (its id is derived from it).
    pub public_key: [u8; 32],
    /// Ed25519 signature (64 bytes) over [`CommitStatement::signing_bytes`].
    pub signature: Vec<u8>,
}

impl SignedStatement {
    /// Signs `statement` with `identity`.
    pub fn sign(statement: CommitStatement, identity: &NodeIdentity) -> Self {
        let public_key = identity.verifying_key().to_bytes();
        let signature = identity
            .sign(&statement.signing_bytes())
            .to_bytes()
            .to_vec();
        Self {
            statement,
            signer: MemberId::from_public_key(&public_key),
            public_key,
            signature,
        }
    }

    /// Checks that the key belongs to the signer and the signature verifies.
    pub fn verify(&self) -> Result<(), CertificateError> {
        if MemberId::from_public_key(&self.public_key) != self.signer {
            return Err(CertificateError::KeyMismatch(self.signer));
        }
        verify_raw(
            &self.public_key,
            &self.statement.signing_bytes(),
            &self.signature,
        )
        .map_err(|()| CertificateError::BadSignature(self.signer))
    }
}

fn verify_raw(public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> Result<(), ()> {
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| ())?;
    let sig: [u8; 64] = signature.try_into().map_err(|_| ())?;
    verify_signature(&key, message, &Signature::from_bytes(&sig)).map_err(|_| ())
}

/// A statement with the signatures of a majority of the voters: the gossip
/// payload that lets any node verify committed state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitCertificate {
    /// What the voters signed.
    pub statement: CommitStatement,
    /// `(signer, signature)` pairs, sorted by signer.
    pub signatures: Vec<(MemberId, Vec<u8>)>,
}

impl CommitCertificate {
    /// Encodes for gossip (postcard).
    pub fn encode(&self) -> Vec<u8> {
        #[allow(clippy::expect_used)]
        postcard::to_allocvec(self).expect("a certificate always serializes")
    }

    /// Decodes gossip bytes, refusing oversized input.
    pub fn decode(bytes: &[u8]) -> Result<Self, CertificateError> {
        if bytes.len() > 16 * 1024 {
            return Err(CertificateError::Malformed("certificate too large".into()));
        }
        postcard::from_bytes(bytes).map_err(|e| CertificateError::Malformed(e.to_string()))
    }
}

/// The voters a certificate is checked against: Raft id to Ed25519 public key.
pub type VoterKeys = BTreeMap<MemberId, [u8; 32]>;

/// The voters of a Raft membership with their public keys.
pub fn voter_keys_of(
    membership: &openraft::Membership<MemberId, crate::types::MemberInfo>,
) -> VoterKeys {
    membership
        .voter_ids()
        .filter_map(|id| membership.get_node(&id).map(|n| (id, n.public_key)))
        .collect()
}

/// Checks that a majority of distinct current `voters` validly signed the
/// statement; returns the positions in `cert.signatures` of the signatures
/// that verified, so callers need not check any signature twice.
pub fn verify_certificate(
    cert: &CommitCertificate,
    voters: &VoterKeys,
) -> Result<Vec<usize>, CertificateError> {
    if cert.signatures.len() > CERTIFICATE_SIGNATURES_MAX {
        return Err(CertificateError::Malformed("too many signatures".into()));
    }
    if cert.statement.mesh_id.len() > MESH_ID_BYTES_MAX {
        return Err(CertificateError::Malformed("mesh id too long".into()));
    }
    let message = cert.statement.signing_bytes();
    let mut valid = BTreeSet::new();
    let mut verified = Vec::new();
    for (position, (signer, signature)) in cert.signatures.iter().enumerate() {
        let Some(key) = voters.get(signer) else {
            continue;
        };
        if verify_raw(key, &message, signature).is_ok() {
            valid.insert(*signer);
            verified.push(position);
        }
    }
    let needed = voters.len() / 2 + 1;
    if voters.is_empty() || valid.len() < needed {
        return Err(CertificateError::NoMajority {
            valid: valid.len(),
            needed,
        });
    }
    Ok(verified)
}

/// Proof that a voter misbehaved, checkable by anyone holding its public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Evidence {
    /// Two valid signatures by one signer over different statements for one index.
    Equivocation {
        /// The first statement seen.
        first: SignedStatement,
        /// The conflicting one.
        second: SignedStatement,
    },
    /// A valid signature over a different state or entry than the local
    /// (committed) one at the same index.
    StateHashMismatch {
        /// The signed statement.
        statement: SignedStatement,
        /// The local state hash at that index.
        local_state_hash: StateHash,
    },
}

impl Evidence {
    /// The accused voter.
    pub fn accused(&self) -> MemberId {
        match self {
            Self::Equivocation { first, .. } => first.signer,
            Self::StateHashMismatch { statement, .. } => statement.signer,
        }
    }

    /// The reputation evidence kind it is committed as.
    pub fn kind(&self) -> EvidenceKind {
        match self {
            Self::Equivocation { .. } => EvidenceKind::Equivocation,
            Self::StateHashMismatch { .. } => EvidenceKind::StateHashMismatch,
        }
    }
}

/// Compares a validly signed statement with the local applied record at the
/// same index; a difference is evidence against the signer.
pub fn check_against_local(signed: &SignedStatement, local: &AppliedRecord) -> Option<Evidence> {
    let s = &signed.statement;
    let differs = s.index == local.index
        && (s.entry_hash != local.entry_hash
            || s.state_hash != local.state_hash
            || s.term != local.term);
    differs.then(|| Evidence::StateHashMismatch {
        statement: signed.clone(),
        local_state_hash: local.state_hash,
    })
}

/// What adding a signed statement to the collector produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CollectOutcome {
    /// Valid; not yet a majority for its statement.
    Pending,
    /// This signature completed a majority: the certificate.
    Certified(CommitCertificate),
    /// Already counted (same signer, same statement) or the index is certified already.
    Duplicate,
    /// The signer signed something else for the same index.
    Evidence(Box<Evidence>),
    /// Not counted.
    Rejected(CertificateError),
}

#[derive(Default)]
struct IndexSlot {
    by_signer: BTreeMap<MemberId, SignedStatement>,
    certified: bool,
}

/// Collects voters' signed statements into certificates (sans-I/O).
pub struct CertificateCollector {
    mesh_id: String,
    voters: VoterKeys,
    slots: BTreeMap<u64, IndexSlot>,
    indices_max: usize,
}

impl CertificateCollector {
    /// A collector for `mesh_id` counting signatures of `voters`.
    pub fn new(mesh_id: impl Into<String>, voters: VoterKeys) -> Self {
        Self {
            mesh_id: mesh_id.into(),
            voters,
            slots: BTreeMap::new(),
            indices_max: COLLECTOR_INDICES_MAX,
        }
    }

    /// Replaces the voter set (after a membership change).
    pub fn set_voters(&mut self, voters: VoterKeys) {
        self.voters = voters;
    }

    /// The voter set signatures are counted against.
    pub fn voters(&self) -> &VoterKeys {
        &self.voters
    }

    /// Adds one signed statement.
    pub fn add(&mut self, signed: SignedStatement) -> CollectOutcome {
        if signed.statement.mesh_id != self.mesh_id {
            return CollectOutcome::Rejected(CertificateError::WrongMesh(
                signed.statement.mesh_id.clone(),
            ));
        }
        match self.voters.get(&signed.signer) {
            None => return CollectOutcome::Rejected(CertificateError::NotAVoter(signed.signer)),
            Some(key) if *key != signed.public_key => {
                return CollectOutcome::Rejected(CertificateError::KeyMismatch(signed.signer))
            }
            Some(_) => {}
        }
        if let Err(e) = signed.verify() {
            return CollectOutcome::Rejected(e);
        }
        let index = signed.statement.index;
        if !self.slots.contains_key(&index) && self.slots.len() >= self.indices_max {
            match self.slots.keys().next() {
                Some(&oldest) if oldest < index => {
                    self.slots.remove(&oldest);
                }
                _ => return CollectOutcome::Duplicate,
            }
        }
        let needed = self.voters.len() / 2 + 1;
        let slot = self.slots.entry(index).or_default();
        if let Some(previous) = slot.by_signer.get(&signed.signer) {
            if previous.statement == signed.statement {
                return CollectOutcome::Duplicate;
            }
            return CollectOutcome::Evidence(Box::new(Evidence::Equivocation {
                first: previous.clone(),
                second: signed,
            }));
        }
        let statement = signed.statement.clone();
        slot.by_signer.insert(signed.signer, signed);
        if slot.certified {
            return CollectOutcome::Duplicate;
        }
        let agreeing: Vec<(MemberId, Vec<u8>)> = slot
            .by_signer
            .values()
            .filter(|s| s.statement == statement)
            .map(|s| (s.signer, s.signature.clone()))
            .collect();
        if agreeing.len() < needed {
            return CollectOutcome::Pending;
        }
        slot.certified = true;
        CollectOutcome::Certified(CommitCertificate {
            statement,
            signatures: agreeing,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ids(n: u8) -> Vec<NodeIdentity> {
        (0..n)
            .map(|i| NodeIdentity::from_seed(&[i + 1; 32]))
            .collect()
    }

    fn keys(ids: &[NodeIdentity]) -> VoterKeys {
        ids.iter()
            .map(|i| {
                let pk = i.verifying_key().to_bytes();
                (MemberId::from_public_key(&pk), pk)
            })
            .collect()
    }

    fn statement(index: u64, state: u8) -> CommitStatement {
        CommitStatement {
            mesh_id: "m".into(),
            index,
            term: 1,
            entry_hash: [1; 32],
            state_hash: StateHash([state; 32]),
            state_digest: [state; 32],
        }
    }

    #[test]
    fn majority_of_voters_certifies() {
        let voters = ids(3);
        let mut c = CertificateCollector::new("m", keys(&voters));
        let s = statement(5, 9);
        assert_eq!(
            c.add(SignedStatement::sign(s.clone(), &voters[0])),
            CollectOutcome::Pending
        );
        let CollectOutcome::Certified(cert) = c.add(SignedStatement::sign(s, &voters[1])) else {
            panic!("expected a certificate");
        };
        verify_certificate(&cert, &keys(&voters)).unwrap();
    }

    #[test]
    fn forged_certificate_is_rejected() {
        let voters = ids(3);
        let outsiders = ids(6)[3..].to_vec();
        let s = statement(5, 9);
        let cert = CommitCertificate {
            statement: s.clone(),
            signatures: outsiders
                .iter()
                .map(|o| {
                    let st = SignedStatement::sign(s.clone(), o);
                    // Claim to be the voters while signing with other keys.
                    (st.signer, st.signature)
                })
                .collect(),
        };
        assert!(verify_certificate(&cert, &keys(&voters)).is_err());
        let mut tampered = {
            let a = SignedStatement::sign(s.clone(), &voters[0]);
            let b = SignedStatement::sign(s.clone(), &voters[1]);
            CommitCertificate {
                statement: s,
                signatures: vec![(a.signer, a.signature), (b.signer, b.signature)],
            }
        };
        verify_certificate(&tampered, &keys(&voters)).unwrap();
        tampered.statement.state_hash = StateHash([0; 32]);
        assert!(verify_certificate(&tampered, &keys(&voters)).is_err());
        // The same signer twice is one signature.
        let a = SignedStatement::sign(statement(5, 9), &voters[0]);
        let dup = CommitCertificate {
            statement: statement(5, 9),
            signatures: vec![(a.signer, a.signature.clone()), (a.signer, a.signature)],
        };
        assert!(verify_certificate(&dup, &keys(&voters)).is_err());
    }

    #[test]
    fn only_the_signatures_that_verified_are_returned() {
        let voters = ids(3);
        let s = statement(5, 9);
        let signed: Vec<_> = voters
            .iter()
            .map(|v| SignedStatement::sign(s.clone(), v))
            .collect();
        let mut bad = signed[1].signature.clone();
        bad[0] ^= 1;
        let cert = CommitCertificate {
            statement: s,
            signatures: vec![
                (signed[0].signer, signed[0].signature.clone()),
                (signed[1].signer, bad),
                (signed[2].signer, signed[2].signature.clone()),
            ],
        };
        assert_eq!(
            verify_certificate(&cert, &keys(&voters)).unwrap(),
            vec![0, 2]
        );
    }

    #[test]
    fn conflicting_signatures_are_equivocation() {
        let voters = ids(3);
        let mut c = CertificateCollector::new("m", keys(&voters));
        c.add(SignedStatement::sign(statement(7, 1), &voters[2]));
        let out = c.add(SignedStatement::sign(statement(7, 2), &voters[2]));
        let CollectOutcome::Evidence(ev) = out else {
            panic!("expected evidence, got {out:?}");
        };
        assert_eq!(ev.kind(), EvidenceKind::Equivocation);
        assert_eq!(
            ev.accused(),
            keys(&voters[2..]).keys().next().copied().unwrap()
        );
    }

    #[test]
    fn non_voters_and_bad_signatures_do_not_count() {
        let voters = ids(3);
        let mut c = CertificateCollector::new("m", keys(&voters));
        let outsider = NodeIdentity::from_seed(&[77; 32]);
        assert!(matches!(
            c.add(SignedStatement::sign(statement(1, 1), &outsider)),
            CollectOutcome::Rejected(CertificateError::NotAVoter(_))
        ));
        let mut s = SignedStatement::sign(statement(1, 1), &voters[0]);
        s.signature[0] ^= 1;
        assert!(matches!(c.add(s), CollectOutcome::Rejected(_)));
    }

    #[test]
    fn local_mismatch_is_evidence() {
        let voter = NodeIdentity::from_seed(&[1; 32]);
        let local = AppliedRecord {
            index: 3,
            term: 1,
            entry_hash: [1; 32],
            state_hash: StateHash([5; 32]),
        };
        let same =
            SignedStatement::sign(CommitStatement::from_record("m", &local, [5; 32]), &voter);
        assert_eq!(check_against_local(&same, &local), None);
        let other = SignedStatement::sign(statement(3, 6), &voter);
        let ev = check_against_local(&other, &local).unwrap();
        assert_eq!(ev.kind(), EvidenceKind::StateHashMismatch);
    }
}
