//! The final aggregator role: holds the group results of a round, combines
//! exactly the inputs the coordinator names (robust rule, server step) and
//! reports the new model's hash. Two or more final aggregators compute the
//! same deterministic result; the coordinator commits it only when they agree.

use std::sync::Arc;

use mesh_consensus::command::{GroupInput, GroupPlan, JobSpec, ModelHash, NodeId, RoundMetrics};

use super::blob::{blob_hash, decode_model, decode_params, encode_model};
use super::messages::{inputs_digest, RoundKey, RoundMessage};
use super::shared::{Action, Shared};
use super::worker::{CombineTask, CombinedModel};

/// What a final aggregator reports: inputs digest, model hash, metrics, outliers.
type Report = ([u8; 32], ModelHash, RoundMetrics, Vec<u32>);

/// A final aggregator's state for one round.
#[derive(Debug)]
pub struct FinalRound {
    key: RoundKey,
    spec: Arc<JobSpec>,
    start_hash: ModelHash,
    holders: Vec<NodeId>,
    request: Option<Vec<GroupInput>>,
    combining: Option<[u8; 32]>,
    report: Option<Report>,
    last_report_ms: Option<u64>,
}

impl FinalRound {
    /// A final aggregator for round `key` starting from `start_hash`.
    pub fn new(
        key: RoundKey,
        spec: Arc<JobSpec>,
        start_hash: ModelHash,
        holders: Vec<NodeId>,
    ) -> Self {
        Self {
            key,
            spec,
            start_hash,
            holders,
            request: None,
            combining: None,
            report: None,
            last_report_ms: None,
        }
    }

    /// A group result blob pushed by a group aggregator.
    pub fn on_group_result(&mut self, sh: &mut Shared, blob: Vec<u8>) {
        if decode_params(&blob).is_err() {
            sh.stats.blobs_rejected += 1;
            return;
        }
        sh.store(blob);
    }

    /// The coordinator's list of inputs to combine.
    pub fn on_request(&mut self, inputs: Vec<GroupInput>, groups: &[GroupPlan]) {
        if inputs.is_empty() || inputs.iter().any(|i| i.group as usize >= groups.len()) {
            return;
        }
        if self.request.as_ref() != Some(&inputs) {
            self.request = Some(inputs);
            self.combining = None;
            self.report = None;
            self.last_report_ms = None;
        }
    }

    /// Starts the combination when every blob is here; reports the result to the leader.
    pub fn poll(
        &mut self,
        sh: &mut Shared,
        groups: &[GroupPlan],
        leader: Option<&NodeId>,
        now_ms: u64,
    ) {
        let Some(inputs) = self.request.clone() else {
            return;
        };
        let digest = inputs_digest(&inputs);
        if self.combining.is_none() {
            if let Some(task) = self.task(sh, &inputs, groups, digest) {
                self.combining = Some(digest);
                sh.stats.combinations += 1;
                sh.push(Action::Combine(task));
            }
        }
        let Some((digest, model_hash, metrics, outliers)) = self.report.clone() else {
            return;
        };
        let due = self
            .last_report_ms
            .is_none_or(|t| now_ms >= t + sh.config.retry_ms);
        if let (Some(leader), true) = (leader, due) {
            self.last_report_ms = Some(now_ms);
            let message = RoundMessage::AggregateReport {
                key: self.key.clone(),
                inputs_digest: digest,
                model_hash,
                metrics,
                outliers,
                trace: None,
            };
            sh.send(leader, message);
        }
    }

    fn task(
        &self,
        sh: &mut Shared,
        inputs: &[GroupInput],
        groups: &[GroupPlan],
        digest: [u8; 32],
    ) -> Option<CombineTask> {
        let start = sh.blob(&self.start_hash);
        if start.is_none() {
            sh.want(self.start_hash, self.holders.clone());
        }
        let mut decoded = Vec::with_capacity(inputs.len());
        for input in inputs {
            match sh.blob(&input.hash) {
                Some(bytes) => {
                    decoded.push((Arc::new(decode_params(&bytes).ok()?), input.contributors))
                }
                None => {
                    let holder = groups
                        .get(input.group as usize)
                        .map(|g| g.aggregator.clone());
                    sh.want(input.hash, holder.into_iter().collect());
                }
            }
        }
        let start = decode_model(&start?).ok()?;
        if decoded.len() != inputs.len() {
            return None;
        }
        Some(CombineTask {
            key: self.key.clone(),
            spec: self.spec.clone(),
            start: Arc::new(start),
            inputs: decoded,
            inputs_digest: digest,
        })
    }

    /// The combination finished.
    pub fn on_combined(
        &mut self,
        sh: &mut Shared,
        digest: [u8; 32],
        result: Result<CombinedModel, String>,
    ) {
        if self.combining != Some(digest) {
            return;
        }
        match result {
            Ok(model) => {
                let blob = encode_model(&model.model);
                let hash = blob_hash(&blob);
                sh.store(blob);
                self.report = Some((digest, hash, model.metrics, model.outliers));
            }
            Err(err) => {
                tracing::warn!(%err, round = %self.key, "combining group results failed");
                self.combining = None;
                self.request = None;
            }
        }
    }

    /// The hashes this role still needs.
    pub fn wanted(&self) -> Vec<ModelHash> {
        let mut out = vec![self.start_hash];
        if let Some(inputs) = &self.request {
            out.extend(inputs.iter().map(|i| i.hash));
        }
        out
    }
}
