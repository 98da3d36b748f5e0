//! The mesh state and its deterministic [`MeshState::apply`].
//!
//! `apply` first validates the command on its own, then checks it against the
//! state, and only then mutates: a rejected command leaves every field,
//! including the last applied index and the state hash, as it was. After an
//! accepted entry the state hash is chained:
//! `hash = blake3(prev_hash || index (u64 LE) || encoded command)`.

pub mod jobs;
pub mod kv;
pub mod members;
pub mod privacy;
pub mod proposals;
pub mod reputation;

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::command::{Command, EvidenceKind, JobId, NodeId, Role};
use crate::error::ApplyError;
use jobs::{JobStatus, Jobs, RoundCompletion, RoundStart};
use kv::Kv;
use members::{Member, Members, Revocation};
use privacy::PrivacyLedger;
use proposals::Proposals;
use reputation::Reputation;

/// The chained hash of every accepted entry; all-zero before the first.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct StateHash(pub [u8; 32]);

impl StateHash {
    /// The hash after applying `cmd` (encoded as `cmd_bytes`) at `index`.
    pub fn chain(&self, index: u64, cmd_bytes: &[u8]) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(&self.0);
        h.update(&index.to_le_bytes());
        h.update(cmd_bytes);
        Self(*h.finalize().as_bytes())
    }
}

impl fmt::Display for StateHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// What an accepted command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Accepted; nothing to report.
    Done,
    /// A key-value command; the value the key held before.
    Kv {
        /// Previous value, if any.
        previous: Option<Vec<u8>>,
    },
    /// Evidence recorded.
    Reputation {
        /// The node's new score.
        score: u32,
        /// Whether it is now quarantined.
        quarantined: bool,
    },
    /// A retried proposal: its first copy took effect at `index`, this one did nothing.
    AlreadyCommitted {
        /// Log index of the first copy.
        index: u64,
    },
    /// A round completed.
    RoundCompleted {
        /// The job's status after the round.
        status: JobStatus,
        /// Epsilon left, in millionths (`None` for a job without DP).
        remaining_epsilon_micros: Option<u64>,
    },
}

/// The replicated mesh state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MeshState {
    last_applied: Option<u64>,
    state_hash: StateHash,
    members: Members,
    jobs: Jobs,
    reputation: Reputation,
    privacy: PrivacyLedger,
    kv: Kv,
    proposals: Proposals,
}

/// The mesh state as snapshot format 1 laid it out: every field of
/// [`MeshState`] but the proposal table, which came with format 2 (postcard
/// writes fields in order, so format 1 is format 2 without its last field).
#[derive(Serialize, Deserialize)]
pub(crate) struct MeshStateV1 {
    last_applied: Option<u64>,
    state_hash: StateHash,
    members: Members,
    jobs: Jobs,
    reputation: Reputation,
    privacy: PrivacyLedger,
    kv: Kv,
}

impl From<MeshStateV1> for MeshState {
    /// A state read from format 1 remembers no proposals: a retried
    /// proposal committed before the snapshot is applied again, as it was
    /// by the builds that wrote format 1.
    fn from(v1: MeshStateV1) -> Self {
        Self {
            last_applied: v1.last_applied,
            state_hash: v1.state_hash,
            members: v1.members,
            jobs: v1.jobs,
            reputation: v1.reputation,
            privacy: v1.privacy,
            kv: v1.kv,
            proposals: Proposals::default(),
        }
    }
}

impl MeshState {
    /// The state in the layout of snapshot format 1 (without the proposal
    /// table), for the format-1 writer that tests keep.
    #[cfg(test)]
    pub(crate) fn to_v1(&self) -> MeshStateV1 {
        MeshStateV1 {
            last_applied: self.last_applied,
            state_hash: self.state_hash,
            members: self.members.clone(),
            jobs: self.jobs.clone(),
            reputation: self.reputation.clone(),
            privacy: self.privacy.clone(),
            kv: self.kv.clone(),
        }
    }

    /// An empty state (no entry applied).
    pub fn new() -> Self {
        Self::default()
    }

    /// Index of the last accepted entry.
    pub fn last_applied(&self) -> Option<u64> {
        self.last_applied
    }

    /// Hash chained over every accepted entry.
    pub fn state_hash(&self) -> StateHash {
        self.state_hash
    }

    /// Members and revocations.
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// Jobs, rounds and model hashes.
    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// Reputation scores and quarantine.
    pub fn reputation(&self) -> &Reputation {
        &self.reputation
    }

    /// Privacy-budget ledger.
    pub fn privacy(&self) -> &PrivacyLedger {
        &self.privacy
    }

    /// Key-value map.
    pub fn kv(&self) -> &Kv {
        &self.kv
    }

    /// Applies the committed entry `cmd` at log `index`.
    ///
    /// Deterministic and I/O-free. On `Err` the state is unchanged; the caller
    /// still counts the entry as applied in its log (a rejection is an outcome).
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Result<Response, ApplyError> {
        if let Some(last_applied) = self.last_applied.filter(|last| index <= *last) {
            return Err(ApplyError::IndexNotIncreasing {
                index,
                last_applied,
            });
        }
        cmd.validate()?;
        let response = self.execute(index, cmd)?;
        self.last_applied = Some(index);
        self.state_hash = self.state_hash.chain(index, &cmd.encode());
        Ok(response)
    }

    fn execute(&mut self, index: u64, cmd: &Command) -> Result<Response, ApplyError> {
        match cmd {
            Command::Once {
                session,
                seq,
                command,
            } => {
                if let Some(first) = self.proposals.committed_at(*session, *seq)? {
                    return Ok(Response::AlreadyCommitted { index: first });
                }
                let response = self.execute(index, command)?;
                self.proposals.record(*session, *seq, index);
                Ok(response)
            }
            Command::AddMember { node, roles, zone } => {
                let member = Member::new(roles, zone.as_deref(), index);
                self.members.add(node, member).map(|()| Response::Done)
            }
            Command::SetRoles { node, roles } => {
                self.members.set_roles(node, roles).map(|()| Response::Done)
            }
            Command::RemoveMember { node } => self.members.remove(node).map(|()| Response::Done),
            Command::RevokeCertificate { revocation, reason } => {
                let revocation = Revocation {
                    reason: *reason,
                    revoked_index: index,
                    signed: revocation.clone(),
                };
                self.members.revoke(revocation).map(|()| Response::Done)
            }
            Command::CreateJob { job, spec } => {
                self.jobs.check_create(job)?;
                self.jobs.create(job, spec, index);
                if let Some(budget) = spec.dp_budget {
                    self.privacy.open(job, budget);
                }
                Ok(Response::Done)
            }
            Command::StartRound {
                job,
                round,
                model_hash,
                participants,
                deadline_unix_ms,
                plan,
            } => {
                let start = RoundStart {
                    job,
                    round: *round,
                    model_hash: *model_hash,
                    participants,
                    deadline_unix_ms: *deadline_unix_ms,
                    plan,
                };
                self.start_round(&start, index)
            }
            Command::CompleteRound {
                job,
                round,
                model_hash,
                metrics,
                privacy_spent_epsilon_micros,
                inputs,
                evidence,
            } => {
                let completion = RoundCompletion {
                    model_hash: *model_hash,
                    metrics: *metrics,
                    privacy_spent_epsilon_micros: *privacy_spent_epsilon_micros,
                    completed_index: index,
                    inputs: inputs.clone(),
                };
                let response = self.complete_round(job, *round, completion)?;
                // Evidence against nodes that are no longer members is dropped.
                for (node, kind) in evidence {
                    if self.members.get(node).is_some() {
                        self.reputation.record(node, *kind);
                    }
                }
                Ok(response)
            }
            Command::ReassignAggregator {
                job,
                round,
                slot,
                node,
            } => {
                self.check_member_with(node, Role::Aggregator)?;
                self.jobs.reassign(job, *round, *slot, node)?;
                Ok(Response::Done)
            }
            Command::AbortRound { job, round } => {
                self.jobs.abort(job, *round)?;
                Ok(Response::Done)
            }
            Command::StopJob { job, reason } => {
                self.jobs.stop(job, *reason)?;
                Ok(Response::Done)
            }
            Command::DeclineJob { job, node, reason } => {
                self.check_member_with(node, Role::Trainer)?;
                self.jobs.decline(job, node, reason)?;
                Ok(Response::Done)
            }
            Command::RecordEvidence { node, kind } => self.record_evidence(node, *kind),
            Command::ResetReputation { node } => {
                self.reputation.reset(node);
                Ok(Response::Done)
            }
            Command::Put { key, value } => {
                let previous = self.kv.put(key, value)?;
                Ok(Response::Kv { previous })
            }
            Command::Delete { key } => Ok(Response::Kv {
                previous: self.kv.delete(key),
            }),
        }
    }

    fn start_round(&mut self, start: &RoundStart<'_>, index: u64) -> Result<Response, ApplyError> {
        self.jobs.check_start(start)?;
        for node in start.participants {
            self.check_eligible(node)?;
        }
        let plan = start.plan;
        for node in plan
            .groups
            .iter()
            .map(|g| &g.aggregator)
            .chain(&plan.aggregators)
        {
            self.check_member_with(node, Role::Aggregator)?;
        }
        self.jobs.start(start, index);
        Ok(Response::Done)
    }

    fn check_eligible(&self, node: &NodeId) -> Result<(), ApplyError> {
        let reason = match self.members.get(node) {
            None => "not a member",
            Some(m) if !m.roles.contains(&Role::Trainer) => "no trainer role",
            Some(_) if self.reputation.is_quarantined(node) => "quarantined",
            Some(_) => return Ok(()),
        };
        Err(ApplyError::IneligibleParticipant {
            node: node.clone(),
            reason,
        })
    }

    /// A member with `role` that is not quarantined (aggregators).
    fn check_member_with(&self, node: &NodeId, role: Role) -> Result<(), ApplyError> {
        match self.members.get(node) {
            Some(m) if m.roles.contains(&role) && !self.reputation.is_quarantined(node) => Ok(()),
            _ => Err(ApplyError::Invalid(format!(
                "{node} is not a member with the {role:?} role, or is quarantined"
            ))),
        }
    }

    fn complete_round(
        &mut self,
        job: &JobId,
        round: u32,
        completion: RoundCompletion,
    ) -> Result<Response, ApplyError> {
        let spent_epsilon_micros = completion.privacy_spent_epsilon_micros;
        self.jobs.check_complete(job, round)?;
        let remaining = self.privacy.check_spend(job, spent_epsilon_micros)?;
        // Both checks passed: from here on nothing can fail.
        self.privacy.spend(job, spent_epsilon_micros);
        let status = self
            .jobs
            .complete(job, completion, remaining)
            .unwrap_or(JobStatus::Completed);
        Ok(Response::RoundCompleted {
            status,
            remaining_epsilon_micros: remaining,
        })
    }

    fn record_evidence(
        &mut self,
        node: &NodeId,
        kind: EvidenceKind,
    ) -> Result<Response, ApplyError> {
        if self.members.get(node).is_none() {
            return Err(ApplyError::UnknownMember(node.clone()));
        }
        let score = self.reputation.record(node, kind);
        Ok(Response::Reputation {
            score,
            quarantined: self.reputation.is_quarantined(node),
        })
    }

    /// Checks the invariants that `apply` always keeps (used on restore).
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        self.members.check_invariants()?;
        self.jobs.check_invariants()?;
        self.reputation.check_invariants()?;
        self.privacy.check_invariants()?;
        self.kv.check_invariants()?;
        let dp_jobs: BTreeSet<&JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.spec.dp_budget.is_some())
            .map(|(id, _)| id)
            .collect();
        let ledger_ok = dp_jobs.iter().all(|j| self.privacy.account(j).is_some());
        if !ledger_ok {
            return Err("a job with a DP budget has no privacy account".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// A revocation of `serial` (for a node whose key comes from its first
/// byte) signed by a fixed test CA key.
#[cfg(test)]
pub(crate) fn test_revocation(serial: &[u8]) -> mesh_security::ca::SignedRevocation {
    use mesh_security::identity::NodeIdentity;
    let ca = NodeIdentity::from_seed(&[9; 32]);
    let node_seed = [serial.first().copied().unwrap_or(0); 32];
    let entry = mesh_security::ca::RevocationEntry {
        serial: serial.to_vec(),
        node_id: NodeIdentity::from_seed(&node_seed).node_id(),
        revoked_at_unix_s: 1,
        reason: "test".into(),
    };
    mesh_security::ca::SignedRevocation::sign(&ca, entry).expect("a small entry encodes")
}
