//! Following the committed state without the Raft log.
//!
//! Only the committee runs Raft. Every other node keeps a copy of the mesh
//! state that it fetched from any peer and checked against a commit
//! certificate, so that it can train, aggregate and serve blobs without
//! holding the log:
//!
//! ```text
//!   voter, after applying index i (at most every certificate interval)
//!     bundle_i = postcard(StateBundle { index, term, voters, snapshot(state) })
//!     signs CommitStatement { .., state_hash, state_digest: digest(bundle_i) }
//!   a majority of voters signed the same statement ──► CommitCertificate
//!   any node holding (certificate, bundle) serves it: CertifiedState
//!
//!   follower: StateFollower::accept(certified, trust)
//!     digest(bundle) == statement.state_digest      (bytes are what was signed)
//!     bundle.index == statement.index, state hash matches
//!     a majority of the bundle's voters signed, counting only trusted keys
//! ```
//!
//! A follower that holds a state need not fetch the whole state again: a
//! committee member whose log still holds the entries since the follower's
//! index sends their commands instead ([`StateDelta`]). The follower applies
//! them to a copy of its state, rebuilds the bundle the voters signed, and
//! takes it only when its digest is the certified one, so a delta is checked
//! exactly as a whole state is.
//!
//! Whom a follower trusts ([`Trust`]): once it holds a state, only that
//! state's voters vouch for the next one ([`Trust::HeldVoters`]), so a node
//! that merely holds the committee role cannot feed it a state of its own
//! making; the committee changes one step at a time under Raft, and each new
//! voter set is signed by voters the follower already trusts. Its first
//! state (or one after it lost track for long) is anchored in the mesh's CA
//! instead ([`Trust::Committee`]): the signers must be nodes the network
//! layer admitted with a CA-signed committee role, and the voter set at
//! least `voters_min` large (the node asks for three once it knows three
//! committee members), so forging it takes a majority of that many
//! committee members.
//!
//! Everything here is sans-I/O; the node fetches and serves the bytes.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::certificate::{verify_certificate, CertificateError, CommitCertificate, VoterKeys};
use crate::command::Command;
use crate::snapshot;
use crate::state::MeshState;
use crate::types::MemberId;

/// Domain separation prefix of a bundle's digest.
pub const BUNDLE_DOMAIN: &[u8] = b"agent-mesh/state-bundle/v1\0";
/// Largest encoded certified state (or answer carrying one) a follower
/// accepts, in bytes.
pub const CERTIFIED_STATE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Why a certified state was not taken.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum FollowError {
    /// The bytes are not an encoded certified state.
    #[error("malformed certified state: {0} (the sender is faulty; ask another peer)")]
    Malformed(String),
    /// The state is no newer than the one held.
    #[error("state at index {offered} is not newer than the held {held}")]
    Stale {
        /// Index offered.
        offered: u64,
        /// Index held.
        held: u64,
    },
    /// The bundle's bytes are not what the voters signed.
    #[error(
        "the state's digest differs from the certified one (forged or corrupted; ask another peer)"
    )]
    DigestMismatch,
    /// The bundle contradicts its certificate.
    #[error("the state contradicts its certificate: {0}")]
    Inconsistent(String),
    /// The certificate does not verify against the bundle's voters.
    #[error("certificate: {0}")]
    Certificate(#[from] CertificateError),
    /// The voter set is smaller than the committee the mesh's size calls for.
    #[error("{voters} voters, a committee of at least {min} expected (ask another peer)")]
    TooFewVoters {
        /// Voters in the bundle.
        voters: usize,
        /// Fewest voters the follower takes.
        min: usize,
    },
    /// Too few of the signers are keys this node trusts.
    #[error("{trusted} signers are trusted, {needed} needed (retry once more of the committee is known)")]
    Untrusted {
        /// Valid signers this node trusts.
        trusted: usize,
        /// Majority of the bundle's voters.
        needed: usize,
    },
}

/// What voters hash and sign beside the chained state hash: the state at an
/// index and the voters that certify it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateBundle {
    /// Log index the state is at.
    pub index: u64,
    /// Term of the entry at that index.
    pub term: u64,
    /// The voters at that index, with their public keys.
    pub voters: VoterKeys,
    /// The state, as a snapshot ([`snapshot::encode`]).
    pub snapshot: Vec<u8>,
}

impl StateBundle {
    /// Encodes the bundle (postcard).
    pub fn encode(&self) -> Vec<u8> {
        // Plain data; postcard cannot fail on it.
        #[allow(clippy::expect_used)]
        postcard::to_allocvec(self).expect("a state bundle always serializes")
    }
}

/// The digest voters sign for encoded bundle bytes.
pub fn bundle_digest(bundle_bytes: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(BUNDLE_DOMAIN);
    hasher.update(bundle_bytes);
    *hasher.finalize().as_bytes()
}

/// A commit certificate and the encoded bundle it certifies: what a node
/// serves to followers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedState {
    /// A majority of the voters signing the bundle's digest.
    pub certificate: CommitCertificate,
    /// The encoded [`StateBundle`].
    pub bundle: Arc<Vec<u8>>,
}

impl CertifiedState {
    /// The log index it certifies.
    pub fn index(&self) -> u64 {
        self.certificate.statement.index
    }
}

/// The first fields of a [`StateBundle`], read without decoding the state.
#[derive(Deserialize)]
struct BundleHead {
    _index: u64,
    _term: u64,
    voters: VoterKeys,
}

/// The voters of an encoded bundle, read without decoding its state.
pub fn bundle_voters(bundle_bytes: &[u8]) -> Option<VoterKeys> {
    postcard::take_from_bytes::<BundleHead>(bundle_bytes)
        .ok()
        .map(|(head, _)| head.voters)
}

/// The commands committed since a follower's index, up to a certified one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateDelta {
    /// The certificate of the state the commands lead to.
    pub certificate: CommitCertificate,
    /// The voters at the certified index.
    pub voters: VoterKeys,
    /// `(index, command)` of every entry with a command after the
    /// follower's index, in order.
    pub commands: Vec<(u64, Command)>,
}

/// A state a follower verified.
#[derive(Clone, Debug)]
pub struct FollowedState {
    /// What it was verified with (served on to other followers as is).
    pub certified: CertifiedState,
    /// The voters that certified it.
    pub voters: VoterKeys,
    /// The state itself.
    pub state: Arc<MeshState>,
}

/// Whose signatures a follower counts (see the module docs).
#[derive(Clone, Copy, Debug)]
pub enum Trust<'a> {
    /// Only the voters of the state held.
    HeldVoters,
    /// Nodes known to hold the committee role (`keys`), for a voter set of
    /// at least `voters_min`.
    Committee {
        /// Public keys of nodes admitted with the committee role.
        keys: &'a BTreeSet<[u8; 32]>,
        /// Fewest voters taken.
        voters_min: usize,
    },
}

/// Keeps the newest verified state of one mesh (sans-I/O).
pub struct StateFollower {
    mesh_id: String,
    held: Option<FollowedState>,
}

impl StateFollower {
    /// A follower of mesh `mesh_id` holding nothing yet.
    pub fn new(mesh_id: impl Into<String>) -> Self {
        Self {
            mesh_id: mesh_id.into(),
            held: None,
        }
    }

    /// The state held, if any.
    pub fn held(&self) -> Option<&FollowedState> {
        self.held.as_ref()
    }

    /// The index of the state held, if any.
    pub fn index(&self) -> Option<u64> {
        self.held.as_ref().map(|f| f.certified.index())
    }

    /// Whether a state at `index` would be newer than the one held.
    pub fn wants(&self, index: u64) -> bool {
        self.index().is_none_or(|held| index > held)
    }

    /// Verifies `certified` and holds it when it is newer, counting the
    /// signers `trust` names. Returns the new index.
    pub fn accept(
        &mut self,
        certified: CertifiedState,
        trust: Trust<'_>,
    ) -> Result<u64, FollowError> {
        let statement = &certified.certificate.statement;
        if statement.mesh_id != self.mesh_id {
            return Err(CertificateError::WrongMesh(statement.mesh_id.clone()).into());
        }
        if let Some(held) = self.index().filter(|held| statement.index <= *held) {
            return Err(FollowError::Stale {
                offered: statement.index,
                held,
            });
        }
        if bundle_digest(&certified.bundle) != statement.state_digest {
            return Err(FollowError::DigestMismatch);
        }
        let bundle: StateBundle = postcard::from_bytes(&certified.bundle)
            .map_err(|e| FollowError::Malformed(format!("bundle: {e}")))?;
        if (bundle.index, bundle.term) != (statement.index, statement.term) {
            return Err(FollowError::Inconsistent(format!(
                "bundle at index {} term {}, certificate at index {} term {}",
                bundle.index, bundle.term, statement.index, statement.term
            )));
        }
        let verified = verify_certificate(&certified.certificate, &bundle.voters)?;
        self.check_trusted(&certified.certificate, &verified, &bundle.voters, trust)?;
        let state = snapshot::decode_bounded(&bundle.snapshot, CERTIFIED_STATE_BYTES_MAX)
            .map_err(|e| FollowError::Malformed(format!("state: {e}")))?;
        if state.state_hash() != statement.state_hash {
            return Err(FollowError::Inconsistent(
                "the state's hash differs from the certified one".into(),
            ));
        }
        let index = statement.index;
        self.held = Some(FollowedState {
            certified,
            voters: bundle.voters,
            state: Arc::new(state),
        });
        Ok(index)
    }

    /// Applies `delta` to a copy of the held state and holds the result when
    /// it rebuilds the certified bundle (see the module docs). Returns the
    /// new index.
    pub fn accept_delta(
        &mut self,
        delta: StateDelta,
        trust: Trust<'_>,
    ) -> Result<u64, FollowError> {
        let held = self
            .held
            .as_ref()
            .ok_or_else(|| FollowError::Inconsistent("a delta needs a state to apply to".into()))?;
        let statement = &delta.certificate.statement;
        let (mut index, upto) = (held.certified.index(), statement.index);
        let mut state = (*held.state).clone();
        for (at, command) in &delta.commands {
            if *at <= index || *at > upto {
                return Err(FollowError::Malformed(format!(
                    "delta entry at index {at} after {index}, certified up to {upto}"
                )));
            }
            index = *at;
            // A command the state machine rejects leaves the state as it
            // was, on the committee as here.
            let _ = state.apply(*at, command);
        }
        let bundle = StateBundle {
            index: statement.index,
            term: statement.term,
            voters: delta.voters,
            snapshot: snapshot::encode(&state),
        };
        let certified = CertifiedState {
            certificate: delta.certificate,
            bundle: Arc::new(bundle.encode()),
        };
        self.accept(certified, trust)
    }

    /// Counts the verified signers whose keys this node trusts.
    fn check_trusted(
        &self,
        certificate: &CommitCertificate,
        verified: &[usize],
        voters: &VoterKeys,
        trust: Trust<'_>,
    ) -> Result<(), FollowError> {
        if let Trust::Committee { voters_min, .. } = trust {
            if voters.len() < voters_min {
                return Err(FollowError::TooFewVoters {
                    voters: voters.len(),
                    min: voters_min,
                });
            }
        }
        let held_voters = self.held.as_ref().map(|h| &h.voters);
        let trusted_key = |signer: &MemberId, key: &[u8; 32]| match trust {
            Trust::Committee { keys, .. } => keys.contains(key),
            Trust::HeldVoters => held_voters.is_some_and(|held| held.get(signer) == Some(key)),
        };
        let trusted = verified
            .iter()
            .filter_map(|i| certificate.signatures.get(*i))
            .filter(|(signer, _)| voters.get(signer).is_some_and(|k| trusted_key(signer, k)))
            .count();
        let needed = voters.len() / 2 + 1;
        if trusted < needed {
            return Err(FollowError::Untrusted { trusted, needed });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::certificate::{CommitStatement, SignedStatement};
    use crate::command::Command;
    use mesh_security::identity::NodeIdentity;

    const MESH: &str = "m";

    fn identities(n: u8) -> Vec<NodeIdentity> {
        (0..n)
            .map(|i| NodeIdentity::from_seed(&[i + 1; 32]))
            .collect()
    }

    fn voter_keys(ids: &[NodeIdentity]) -> VoterKeys {
        ids.iter()
            .map(|i| {
                let pk = i.verifying_key().to_bytes();
                (MemberId::from_public_key(&pk), pk)
            })
            .collect()
    }

    fn keys_of(ids: &[NodeIdentity]) -> BTreeSet<[u8; 32]> {
        ids.iter().map(|i| i.verifying_key().to_bytes()).collect()
    }

    fn committee(keys: &BTreeSet<[u8; 32]>) -> Trust<'_> {
        Trust::Committee {
            keys,
            voters_min: 3,
        }
    }

    /// A state after `entries` key-value writes.
    fn state_after(entries: u64) -> MeshState {
        let mut state = MeshState::new();
        for index in 1..=entries {
            let command = Command::Put {
                key: format!("k{index}").into_bytes(),
                value: vec![1],
            };
            state.apply(index, &command).unwrap();
        }
        state
    }

    /// `state` at `index`, certified by `signers` out of `voters`.
    fn certify(
        state: &MeshState,
        index: u64,
        voters: &[NodeIdentity],
        signers: &[NodeIdentity],
    ) -> CertifiedState {
        let bundle = StateBundle {
            index,
            term: 1,
            voters: voter_keys(voters),
            snapshot: snapshot::encode(state),
        }
        .encode();
        let statement = CommitStatement {
            mesh_id: MESH.into(),
            index,
            term: 1,
            entry_hash: [0; 32],
            state_hash: state.state_hash(),
            state_digest: bundle_digest(&bundle),
        };
        let signatures = signers
            .iter()
            .map(|id| {
                let signed = SignedStatement::sign(statement.clone(), id);
                (signed.signer, signed.signature)
            })
            .collect();
        CertifiedState {
            certificate: CommitCertificate {
                statement,
                signatures,
            },
            bundle: Arc::new(bundle),
        }
    }

    #[test]
    fn a_state_certified_by_known_voters_is_held_and_round_trips_the_wire() {
        let voters = identities(3);
        let state = state_after(4);
        let certified = certify(&state, 4, &voters, &voters[..2]);
        let wire = postcard::to_allocvec(&certified).unwrap();
        let decoded: CertifiedState = postcard::from_bytes(&wire).unwrap();
        let mut follower = StateFollower::new(MESH);
        assert!(follower.wants(4));
        assert_eq!(
            follower
                .accept(decoded, committee(&keys_of(&voters)))
                .unwrap(),
            4
        );
        assert_eq!(*follower.held().unwrap().state, state);
        assert!(!follower.wants(4));
        assert!(follower.wants(5));
    }

    #[test]
    fn changed_bytes_a_minority_and_unknown_signers_are_refused() {
        let voters = identities(3);
        let known = keys_of(&voters);
        let state = state_after(2);
        let mut follower = StateFollower::new(MESH);

        let mut tampered = certify(&state, 2, &voters, &voters);
        let mut other = StateBundle {
            index: 2,
            term: 1,
            voters: voter_keys(&voters),
            snapshot: snapshot::encode(&state_after(1)),
        };
        other.snapshot.push(0);
        tampered.bundle = Arc::new(other.encode());
        assert_eq!(
            follower.accept(tampered, committee(&known)),
            Err(FollowError::DigestMismatch)
        );

        let minority = certify(&state, 2, &voters, &voters[..1]);
        assert!(matches!(
            follower.accept(minority, committee(&known)),
            Err(FollowError::Certificate(
                CertificateError::NoMajority { .. }
            ))
        ));

        // A forger's own committee: valid signatures, keys nobody vouched for.
        let forgers = identities(6)[3..].to_vec();
        let forged = certify(&state, 2, &forgers, &forgers);
        assert_eq!(
            follower.accept(forged, committee(&known)),
            Err(FollowError::Untrusted {
                trusted: 0,
                needed: 2
            })
        );
        assert!(follower.held().is_none());
    }

    #[test]
    fn a_state_whose_hash_differs_from_the_certified_one_is_refused() {
        let voters = identities(3);
        let mut certified = certify(&state_after(3), 3, &voters, &voters);
        // Re-certify a bundle holding another state under the first hash.
        let bundle = StateBundle {
            index: 3,
            term: 1,
            voters: voter_keys(&voters),
            snapshot: snapshot::encode(&state_after(2)),
        }
        .encode();
        certified.certificate.statement.state_digest = bundle_digest(&bundle);
        certified.certificate.signatures = voters
            .iter()
            .map(|id| {
                let s = SignedStatement::sign(certified.certificate.statement.clone(), id);
                (s.signer, s.signature)
            })
            .collect();
        certified.bundle = Arc::new(bundle);
        let mut follower = StateFollower::new(MESH);
        assert!(matches!(
            follower.accept(certified, committee(&keys_of(&voters))),
            Err(FollowError::Inconsistent(_))
        ));
    }

    #[test]
    fn older_states_are_stale_and_a_new_committee_is_trusted_through_the_held_one() {
        let old = identities(3);
        let state = state_after(5);
        let mut follower = StateFollower::new(MESH);
        let old_keys = keys_of(&old);
        follower
            .accept(
                certify(&state_after(3), 3, &old, &old),
                committee(&old_keys),
            )
            .unwrap();
        assert_eq!(
            follower.accept(certify(&state_after(2), 2, &old, &old), Trust::HeldVoters),
            Err(FollowError::Stale {
                offered: 2,
                held: 3
            })
        );
        // Two of the three old voters stay, one is replaced: the held voters
        // vouch for the majority.
        let mut new = old[..2].to_vec();
        new.push(identities(4).remove(3));
        let next = certify(&state, 5, &new, &new);
        assert_eq!(follower.accept(next, Trust::HeldVoters).unwrap(), 5);
    }

    /// The commands of `state_after(n)` from index `after` + 1 to `upto`.
    fn commands(after: u64, upto: u64) -> Vec<(u64, Command)> {
        (after + 1..=upto)
            .map(|index| {
                let command = Command::Put {
                    key: format!("k{index}").into_bytes(),
                    value: vec![1],
                };
                (index, command)
            })
            .collect()
    }

    #[test]
    fn a_delta_reaches_the_certified_state_and_a_gap_in_it_does_not() {
        let voters = identities(3);
        let known = keys_of(&voters);
        let mut follower = StateFollower::new(MESH);
        follower
            .accept(
                certify(&state_after(2), 2, &voters, &voters),
                committee(&known),
            )
            .unwrap();
        let target = certify(&state_after(6), 6, &voters, &voters);
        assert_eq!(bundle_voters(&target.bundle), Some(voter_keys(&voters)));
        let delta = |commands| StateDelta {
            certificate: target.certificate.clone(),
            voters: voter_keys(&voters),
            commands,
        };
        let mut gap = commands(2, 6);
        gap.remove(1);
        assert_eq!(
            follower.accept_delta(delta(gap), Trust::HeldVoters),
            Err(FollowError::DigestMismatch)
        );
        assert!(matches!(
            follower.accept_delta(delta(commands(1, 6)), Trust::HeldVoters),
            Err(FollowError::Malformed(_))
        ));
        assert_eq!(
            follower.accept_delta(delta(commands(2, 6)), Trust::HeldVoters),
            Ok(6)
        );
        assert_eq!(*follower.held().unwrap().state, state_after(6));
        assert_eq!(follower.held().unwrap().certified, target);
    }

    #[test]
    fn committee_members_cannot_make_themselves_the_committee() {
        let honest = identities(3);
        let rogues = identities(5)[3..].to_vec();
        // The rogues hold the committee role, so the CA anchor knows their keys.
        let mut known = keys_of(&honest);
        known.extend(keys_of(&rogues));
        let alone = &rogues[..1];
        let mut follower = StateFollower::new(MESH);
        assert_eq!(
            follower.accept(certify(&state_after(9), 9, alone, alone), committee(&known)),
            Err(FollowError::TooFewVoters { voters: 1, min: 3 })
        );
        follower
            .accept(
                certify(&state_after(2), 2, &honest, &honest),
                committee(&known),
            )
            .unwrap();
        // Once a state is held, only its voters vouch: two rogues naming an
        // honest key as a third, silent voter sign a valid majority of their
        // own voter set, but neither is a voter the follower trusts.
        let mut claimed = rogues.clone();
        claimed.push(honest[0].clone());
        let forged = certify(&state_after(9), 9, &claimed, &rogues);
        assert_eq!(
            follower.accept(forged, Trust::HeldVoters),
            Err(FollowError::Untrusted {
                trusted: 0,
                needed: 2
            })
        );
    }
}
