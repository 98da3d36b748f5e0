//! Invariants every simulated run must keep, checked at each commit:
//!
//! 1. every committed round's model is the deterministic combination of the
//!    group results it names, from the round's start model (recomputed here);
//! 2. no round is committed twice with different models;
//! 3. the privacy budget is never exceeded;
//! 4. no quarantined node takes part in a round (so its updates are never
//!    accepted: group aggregators take updates from group members only), and
//!    no group result counts more contributors than its group has members.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mesh_consensus::command::{Command, JobId, JobSpec, ModelHash};
use mesh_consensus::MeshState;

use crate::protocol::blob::{blob_hash, decode_model, decode_params, encode_model, GlobalModel};
use crate::protocol::worker::{combine_params, CombineTask};
use crate::protocol::{RoundKey, RoundMessage};

/// Checks commits against the blobs seen on the wire.
pub struct Checker {
    spec: Arc<JobSpec>,
    blobs: HashMap<ModelHash, Arc<[u8]>>,
    committed: BTreeMap<(JobId, u32), ModelHash>,
    /// Rounds whose model was recomputed and matched.
    pub verified_rounds: u64,
}

impl Checker {
    /// A checker for a job running `spec`.
    pub fn new(spec: JobSpec) -> Self {
        Self {
            spec: Arc::new(spec),
            blobs: HashMap::new(),
            committed: BTreeMap::new(),
            verified_rounds: 0,
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.blobs
                .entry(blob_hash(bytes))
                .or_insert_with(|| Arc::from(bytes));
        }
    }

    /// Remembers blobs that travel in messages.
    pub fn observe_message(&mut self, message: &RoundMessage) {
        match message {
            RoundMessage::GroupResult { blob, .. } => self.keep(blob),
            RoundMessage::BlobReply { bytes, .. } => self.keep(bytes),
            _ => {}
        }
    }

    /// Remembers a model some node computed.
    pub fn observe_model(&mut self, model: &GlobalModel) {
        self.keep(&encode_model(model));
    }

    /// A blob seen so far.
    pub fn model(&self, hash: &ModelHash) -> Option<Arc<[u8]>> {
        self.blobs.get(hash).cloned()
    }

    /// Checks one command the state machine accepted, against the state after
    /// it. (A round start changes no reputation and a completion keeps the
    /// round's record, so the state before is not needed.)
    pub fn on_commit(&mut self, after: &MeshState, command: &Command) -> Result<(), String> {
        match command {
            Command::StartRound {
                participants, plan, ..
            } => {
                if let Some(q) = participants
                    .iter()
                    .find(|p| after.reputation().is_quarantined(p))
                {
                    return Err(format!("quarantined node {q} was selected"));
                }
                if plan.groups.iter().flat_map(|g| &g.members).count() != participants.len() {
                    return Err("groups do not cover the participants".into());
                }
            }
            Command::CompleteRound {
                job,
                round,
                model_hash,
                inputs,
                ..
            } => {
                if let Some(previous) = self.committed.insert((job.clone(), *round), *model_hash) {
                    if previous != *model_hash {
                        return Err(format!(
                            "round {round} committed twice with different models"
                        ));
                    }
                }
                self.check_model(after, job, *round, *model_hash, inputs)?;
            }
            _ => {}
        }
        for (id, job) in after.jobs().iter() {
            if let (Some(budget), Some(account)) = (job.spec.dp_budget, after.privacy().account(id))
            {
                let spent: u64 = job.epsilon_spent_micros();
                if spent > budget.epsilon_micros
                    || account.remaining_epsilon_micros() > budget.epsilon_micros
                {
                    return Err(format!(
                        "job {id} spent {spent} of {} micro-epsilon",
                        budget.epsilon_micros
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_model(
        &mut self,
        state: &MeshState,
        job: &JobId,
        round: u32,
        model_hash: ModelHash,
        inputs: &[mesh_consensus::command::GroupInput],
    ) -> Result<(), String> {
        let record = state
            .jobs()
            .get(job)
            .and_then(|j| j.rounds.get(round as usize))
            .ok_or_else(|| format!("round {round} completed but never started"))?;
        for input in inputs {
            let group = record
                .plan
                .groups
                .get(input.group as usize)
                .ok_or_else(|| {
                    format!(
                        "input names group {} of {}",
                        input.group,
                        record.plan.groups.len()
                    )
                })?;
            if input.contributors as usize > group.members.len() {
                return Err(format!(
                    "group {} counts {} contributors of {} members",
                    input.group,
                    input.contributors,
                    group.members.len()
                ));
            }
        }
        let blob = |h: &ModelHash| {
            self.blobs
                .get(h)
                .and_then(|b| decode_params(b).ok())
                .map(Arc::new)
        };
        let start = self
            .blobs
            .get(&record.start_model_hash)
            .and_then(|b| decode_model(b).ok())
            .map(Arc::new)
            .ok_or("the round's start model was never seen")?;
        let decoded: Option<Vec<_>> = inputs
            .iter()
            .map(|i| blob(&i.hash).map(|b| (b, i.contributors)))
            .collect();
        let task = CombineTask {
            key: RoundKey {
                job: job.clone(),
                round,
                attempt: record.aborted_attempts,
            },
            spec: self.spec.clone(),
            start,
            inputs: decoded.ok_or("a group result of the round was never seen")?,
            inputs_digest: [0; 32],
        };
        let (model, _) =
            combine_params(&task).map_err(|e| format!("recomputing round {round}: {e}"))?;
        if blob_hash(&encode_model(&model)) != model_hash {
            return Err(format!(
                "round {round}'s committed model is not the combination of its inputs"
            ));
        }
        self.verified_rounds += 1;
        // Only the new model is needed from here on (the next round starts from it).
        self.blobs.retain(|hash, _| *hash == model_hash);
        Ok(())
    }
}
