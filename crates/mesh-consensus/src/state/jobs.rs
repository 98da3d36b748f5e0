//! Jobs and their rounds, and the model hashes that rounds start from and
//! produce.
//!
//! A job runs its rounds strictly in order: round `r` can start only when
//! rounds `0..r` are complete and no round is running, and only the running
//! round can complete. Checks (`check_start`, `check_complete`)
//! are separate from the mutations so that a command touching several parts of
//! the state is checked in full before any part changes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::{
    AggregatorSlot, GroupInput, JobId, JobSpec, ModelHash, NodeId, RoundMetrics, RoundPlan,
    StopReason, PARTICIPANTS_MAX,
};
use crate::error::ApplyError;

/// Most jobs the state may hold.
pub const JOBS_MAX: usize = 100_000;

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    /// Waiting for its next round to start.
    WaitingForRound,
    /// A round is running.
    RoundRunning,
    /// All rounds are complete.
    Completed,
    /// Stopped early: the privacy budget is spent.
    BudgetExhausted,
    /// Stopped early by an admin.
    Cancelled,
}

impl JobStatus {
    /// Whether the job will run no more rounds.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::BudgetExhausted | Self::Cancelled
        )
    }
}

/// How a completed round ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundCompletion {
    /// Hash of the aggregated model.
    pub model_hash: ModelHash,
    /// What the aggregators measured.
    pub metrics: RoundMetrics,
    /// Epsilon the round spent, in millionths.
    pub privacy_spent_epsilon_micros: u64,
    /// Log index of the completing entry.
    pub completed_index: u64,
    /// The group results combined into the model.
    pub inputs: Vec<GroupInput>,
}

/// One round of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Hash of the global model the round started from.
    pub start_model_hash: ModelHash,
    /// Members selected to train.
    pub participants: BTreeSet<NodeId>,
    /// Deadline, in milliseconds since the Unix epoch.
    pub deadline_unix_ms: u64,
    /// Log index of the starting entry.
    pub started_index: u64,
    /// Groups and aggregators (reassignments update it).
    pub plan: RoundPlan,
    /// Times this round number was started and aborted before this attempt.
    pub aborted_attempts: u32,
    /// Set once the round completes.
    pub completion: Option<RoundCompletion>,
}

/// One job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// What it runs.
    pub spec: JobSpec,
    /// Log index of the creating entry.
    pub created_index: u64,
    /// Where it stands.
    pub status: JobStatus,
    /// Its rounds, indexed by round number.
    pub rounds: Vec<RoundRecord>,
    /// Rounds aborted at their deadline and started again.
    pub aborted_rounds: u32,
    /// Nodes that declined the job, with their reason (not selected again).
    #[serde(default)]
    pub declined: BTreeMap<NodeId, String>,
}

impl Job {
    /// The completions of its completed rounds, in order.
    pub fn completions(&self) -> impl Iterator<Item = &RoundCompletion> {
        self.rounds.iter().filter_map(|r| r.completion.as_ref())
    }

    /// Epsilon its completed rounds spent, in millionths.
    pub fn epsilon_spent_micros(&self) -> u64 {
        self.completions()
            .map(|c| c.privacy_spent_epsilon_micros)
            .sum()
    }
}

/// Where a model hash was first seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// The job.
    pub job: JobId,
    /// The round.
    pub round: u32,
    /// Whether it was produced by aggregation (`false`: a round started from it).
    pub aggregated: bool,
}

/// The arguments of a round start, bundled.
#[derive(Clone, Debug)]
pub(crate) struct RoundStart<'a> {
    pub job: &'a JobId,
    pub round: u32,
    pub model_hash: ModelHash,
    pub participants: &'a BTreeSet<NodeId>,
    pub deadline_unix_ms: u64,
    pub plan: &'a RoundPlan,
}

/// All jobs and known model hashes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Jobs {
    jobs: BTreeMap<JobId, Job>,
    models: BTreeMap<ModelHash, ModelRecord>,
}

impl Jobs {
    /// The job with this id.
    pub fn get(&self, job: &JobId) -> Option<&Job> {
        self.jobs.get(job)
    }

    /// All jobs, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&JobId, &Job)> {
        self.jobs.iter()
    }

    /// Where a model hash was first recorded, if known.
    pub fn model(&self, hash: &ModelHash) -> Option<&ModelRecord> {
        self.models.get(hash)
    }

    pub(crate) fn check_create(&self, job: &JobId) -> Result<(), ApplyError> {
        if self.jobs.contains_key(job) {
            return Err(ApplyError::JobExists(job.clone()));
        }
        if self.jobs.len() >= JOBS_MAX {
            return Err(ApplyError::Invalid(format!(
                "the mesh already holds {JOBS_MAX} jobs"
            )));
        }
        Ok(())
    }

    pub(crate) fn create(&mut self, job: &JobId, spec: &JobSpec, index: u64) {
        let record = Job {
            spec: spec.clone(),
            created_index: index,
            status: JobStatus::WaitingForRound,
            rounds: Vec::new(),
            aborted_rounds: 0,
            declined: BTreeMap::new(),
        };
        self.jobs.insert(job.clone(), record);
    }

    /// Checks that `round` may start now with this many participants.
    pub(crate) fn check_start(&self, s: &RoundStart<'_>) -> Result<&Job, ApplyError> {
        let job = self.existing(s.job)?;
        let out_of_order = |reason: String| ApplyError::RoundOutOfOrder {
            job: s.job.clone(),
            reason,
        };
        if job.status != JobStatus::WaitingForRound {
            return Err(out_of_order(format!(
                "cannot start round {} while the job is {:?}",
                s.round, job.status
            )));
        }
        let next = job.rounds.len();
        if usize::try_from(s.round) != Ok(next) {
            return Err(out_of_order(format!(
                "round {} requested but the next round is {next}",
                s.round
            )));
        }
        let max = job.spec.participants_per_round as usize;
        if s.participants.len() > max {
            return Err(ApplyError::Invalid(format!(
                "{} participants, but job {} allows {max} per round",
                s.participants.len(),
                s.job
            )));
        }
        Ok(job)
    }

    pub(crate) fn start(&mut self, s: &RoundStart<'_>, index: u64) {
        let Some(job) = self.jobs.get_mut(s.job) else {
            return;
        };
        job.rounds.push(RoundRecord {
            start_model_hash: s.model_hash,
            participants: s.participants.clone(),
            deadline_unix_ms: s.deadline_unix_ms,
            started_index: index,
            plan: s.plan.clone(),
            aborted_attempts: job.aborted_rounds,
            completion: None,
        });
        job.status = JobStatus::RoundRunning;
        self.models.entry(s.model_hash).or_insert(ModelRecord {
            job: s.job.clone(),
            round: s.round,
            aggregated: false,
        });
    }

    /// Checks that `round` is the job's running round.
    pub(crate) fn check_complete(&self, job_id: &JobId, round: u32) -> Result<&Job, ApplyError> {
        let job = self.existing(job_id)?;
        let running = job.rounds.len().checked_sub(1);
        if job.status != JobStatus::RoundRunning || running != usize::try_from(round).ok() {
            return Err(ApplyError::RoundOutOfOrder {
                job: job_id.clone(),
                reason: format!(
                    "round {round} is not running (status {:?}, {} rounds started)",
                    job.status,
                    job.rounds.len()
                ),
            });
        }
        Ok(job)
    }

    /// Replaces one aggregator of the running round.
    pub(crate) fn reassign(
        &mut self,
        job_id: &JobId,
        round: u32,
        slot: AggregatorSlot,
        node: &NodeId,
    ) -> Result<(), ApplyError> {
        self.check_complete(job_id, round)?;
        let plan = self
            .jobs
            .get_mut(job_id)
            .and_then(|j| j.rounds.last_mut())
            .map(|r| &mut r.plan)
            .ok_or_else(|| ApplyError::UnknownJob(job_id.clone()))?;
        let target = match slot {
            AggregatorSlot::Group(g) => plan.groups.get_mut(g as usize).map(|g| &mut g.aggregator),
            AggregatorSlot::Final(i) => {
                if plan.aggregators.contains(node) {
                    return Err(ApplyError::Invalid(format!(
                        "{node} is already a final aggregator"
                    )));
                }
                plan.aggregators.get_mut(i as usize)
            }
        };
        let target = target.ok_or_else(|| {
            ApplyError::Invalid(format!("round {round} has no aggregator slot {slot:?}"))
        })?;
        *target = node.clone();
        Ok(())
    }

    /// Drops the running round so that the same round number starts again.
    pub(crate) fn abort(&mut self, job_id: &JobId, round: u32) -> Result<(), ApplyError> {
        self.check_complete(job_id, round)?;
        if let Some(job) = self.jobs.get_mut(job_id) {
            job.rounds.pop();
            job.aborted_rounds += 1;
            job.status = JobStatus::WaitingForRound;
        }
        Ok(())
    }

    /// Records that `node` declines the job; the latest reason is kept.
    pub(crate) fn decline(
        &mut self,
        job_id: &JobId,
        node: &NodeId,
        reason: &str,
    ) -> Result<(), ApplyError> {
        let job = self
            .jobs
            .get_mut(job_id)
            .ok_or_else(|| ApplyError::UnknownJob(job_id.clone()))?;
        if job.declined.len() >= PARTICIPANTS_MAX as usize && !job.declined.contains_key(node) {
            return Err(ApplyError::Invalid(format!(
                "job {job_id} already has {PARTICIPANTS_MAX} declining nodes"
            )));
        }
        job.declined.insert(node.clone(), reason.to_string());
        Ok(())
    }

    /// Stops a job that has not finished.
    pub(crate) fn stop(&mut self, job_id: &JobId, reason: StopReason) -> Result<(), ApplyError> {
        let job = self
            .jobs
            .get_mut(job_id)
            .ok_or_else(|| ApplyError::UnknownJob(job_id.clone()))?;
        if job.status.is_finished() {
            return Err(ApplyError::RoundOutOfOrder {
                job: job_id.clone(),
                reason: format!("the job already ended ({:?})", job.status),
            });
        }
        if job.rounds.last().is_some_and(|r| r.completion.is_none()) {
            job.rounds.pop();
        }
        job.status = match reason {
            StopReason::Cancelled => JobStatus::Cancelled,
            StopReason::BudgetExhausted => JobStatus::BudgetExhausted,
        };
        Ok(())
    }

    /// Completes the running round; `budget_left` is `Some(0)` when the
    /// privacy budget is now spent. Returns the job's new status.
    pub(crate) fn complete(
        &mut self,
        job_id: &JobId,
        completion: RoundCompletion,
        budget_left: Option<u64>,
    ) -> Option<JobStatus> {
        let job = self.jobs.get_mut(job_id)?;
        let round = u32::try_from(job.rounds.len().checked_sub(1)?).ok()?;
        let hash = completion.model_hash;
        job.rounds.last_mut()?.completion = Some(completion);
        job.status = if round + 1 >= job.spec.rounds {
            JobStatus::Completed
        } else if budget_left == Some(0) {
            JobStatus::BudgetExhausted
        } else {
            JobStatus::WaitingForRound
        };
        let status = job.status;
        self.models.entry(hash).or_insert(ModelRecord {
            job: job_id.clone(),
            round,
            aggregated: true,
        });
        Some(status)
    }

    fn existing(&self, job: &JobId) -> Result<&Job, ApplyError> {
        self.jobs
            .get(job)
            .ok_or_else(|| ApplyError::UnknownJob(job.clone()))
    }

    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        if self.jobs.len() > JOBS_MAX {
            return Err(format!("more than {JOBS_MAX} jobs"));
        }
        for (id, job) in &self.jobs {
            let started = job.rounds.len();
            let incomplete = job.rounds.iter().filter(|r| r.completion.is_none()).count();
            let running = job.status == JobStatus::RoundRunning;
            let last_open = job.rounds.last().is_some_and(|r| r.completion.is_none());
            if started > job.spec.rounds as usize || incomplete > 1 || running != last_open {
                return Err(format!("job {id} has inconsistent rounds"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(rounds: u32) -> JobSpec {
        JobSpec {
            model: mesh_spec::ModelSpec::default(),
            rounds,
            participants_per_round: 2,
            rule_name: "median".into(),
            pre_aggregation: "none".into(),
            server_optimizer: "sgd".into(),
            byzantine_count: 0,
            secagg: true,
            dp_budget: None,
            training: crate::command::TrainingSpec::default(),
            initial_model: None,
        }
    }

    fn plan(participants: &BTreeSet<NodeId>) -> RoundPlan {
        RoundPlan {
            groups: vec![crate::command::GroupPlan {
                aggregator: NodeId::from("a"),
                members: participants.iter().cloned().collect(),
            }],
            aggregators: vec![NodeId::from("a")],
        }
    }

    fn metrics() -> RoundMetrics {
        RoundMetrics {
            accuracy: 0.5,
            loss: 1.0,
            updates_count: 1,
        }
    }

    #[test]
    fn start_and_complete_follow_the_round_order() {
        let mut jobs = Jobs::default();
        let id = JobId::from("j");
        jobs.check_create(&id).unwrap();
        jobs.create(&id, &spec(1), 1);
        assert!(matches!(
            jobs.check_create(&id),
            Err(ApplyError::JobExists(_))
        ));
        let participants = BTreeSet::from([NodeId::from("a")]);
        let s = RoundStart {
            job: &id,
            round: 0,
            model_hash: [1; 32],
            participants: &participants,
            deadline_unix_ms: 10,
            plan: &plan(&participants),
        };
        assert!(jobs.check_complete(&id, 0).is_err());
        jobs.check_start(&s).unwrap();
        jobs.start(&s, 2);
        assert!(jobs.check_start(&s).is_err());
        jobs.check_complete(&id, 0).unwrap();
        let done = RoundCompletion {
            model_hash: [2; 32],
            metrics: metrics(),
            privacy_spent_epsilon_micros: 0,
            completed_index: 3,
            inputs: Vec::new(),
        };
        assert_eq!(jobs.complete(&id, done, None), Some(JobStatus::Completed));
        jobs.check_invariants().unwrap();
        assert_eq!(jobs.model(&[2; 32]).unwrap().round, 0);
    }

    #[test]
    fn too_many_participants_is_invalid() {
        let mut jobs = Jobs::default();
        let id = JobId::from("j");
        jobs.create(&id, &spec(3), 1);
        let participants: BTreeSet<NodeId> =
            ["a", "b", "c"].into_iter().map(NodeId::from).collect();
        let s = RoundStart {
            job: &id,
            round: 0,
            model_hash: [1; 32],
            participants: &participants,
            deadline_unix_ms: 10,
            plan: &plan(&participants),
        };
        assert!(matches!(jobs.check_start(&s), Err(ApplyError::Invalid(_))));
    }
}
