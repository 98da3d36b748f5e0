//! The participant role: fetch the round's model, train on private data,
//! clip and add this node's share of DP noise, then hand the update to the
//! group aggregator, masked by SecAgg+ or signed in the clear.

use std::sync::Arc;

use mesh_consensus::command::{Command, JobSpec, ModelHash, NodeId, DECLINE_REASON_BYTES_MAX};
use mesh_federated::privacy::{clip_l2, GaussianMechanism, NoisePlacement};
use mesh_security::secagg::messages::{SharesForClient, Signed};
use mesh_security::secagg::{ModulusBits, SecAggClient, SecAggParams};
use mesh_spec::schema::SCHEMA_MISMATCH_PREFIX;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::blob::{decode_params, model_dimension};
use super::messages::{PlainUpdate, RoundKey, RoundMessage, SecAggStep};
use super::shared::{node_key, Action, Shared};
use super::worker::{TrainTask, TrainedUpdate};

/// Where local training stands.
#[derive(Debug)]
enum Training {
    NotStarted,
    Running,
    Done(Vec<f32>, u64),
    Failed,
}

/// Where the round's group and model are.
#[derive(Clone, Debug)]
pub struct Assignment {
    /// The round.
    pub key: RoundKey,
    /// The job.
    pub spec: Arc<JobSpec>,
    /// This node's group.
    pub group: u32,
    /// The group's aggregator.
    pub aggregator: NodeId,
    /// The group's members, sorted (SecAgg client indices).
    pub members: Vec<NodeId>,
    /// The round's start model.
    pub start_hash: ModelHash,
    /// Who may hold it.
    pub holders: Vec<NodeId>,
    /// Participants in the whole round.
    pub participants: usize,
}

/// Members a DP group may lose and still reveal its sum: a tenth of its
/// members, at least one from groups of 4 (secure aggregation in a group of
/// 2 or 3 needs every member anyway).
pub fn dp_dropouts_tolerated(members: usize) -> usize {
    if members < 4 {
        0
    } else {
        (members / 10).max(1)
    }
}

/// How many participants' noise is in every value an aggregator sees in
/// the clear: with secure aggregation, the fewest survivors a group of
/// `members` may reveal a sum with (the group aggregator drops the group
/// below that, see `group.rs`); without it, one (each update is seen alone:
/// local DP). Each participant adds `1 / sharers` of the calibrated noise
/// variance, so each clear value carries at least the full calibrated noise,
/// and a complete group no more than `members / sharers` of it.
pub fn noise_sharers(members: usize, secagg: bool) -> usize {
    if secagg {
        members
            .saturating_sub(dp_dropouts_tolerated(members))
            .max(1)
    } else {
        1
    }
}

/// Standard deviations of the noise bound an update's norm may exceed its
/// clip by (the norm of `d` Gaussian values of deviation `s` exceeds
/// `s * (sqrt(d) + t)` with probability below `exp(-t^2 / 2)`: 1e-14 here).
const NOISE_NORM_TAIL: f64 = 8.0;

/// The L2 bound of an update as it leaves its node, which secure
/// aggregation quantizes to and a group aggregator re-clips plain updates
/// to: the clip norm, plus, in a DP job, the norm the node's noise share
/// can reach. Clipping the noised update to the bare clip norm would scale
/// signal and noise down together (by 20x for logistic regression on MNIST
/// at epsilon 8) and stall training. Every member and the group aggregator
/// compute it alike from the job, the group size and the model dimension.
pub fn update_bound(spec: &JobSpec, members: usize, dimension: usize) -> f64 {
    let t = &spec.training;
    let clip = f64::from(t.clip_norm);
    if t.noise_multiplier <= 0.0 {
        return clip;
    }
    let sharers = noise_sharers(members, spec.secagg) as f64;
    let noise_std = t.noise_multiplier * clip / sharers.sqrt();
    clip + noise_std * ((dimension as f64).sqrt() + NOISE_NORM_TAIL)
}

/// Times one message is sent again while its answer is missing.
pub const RESENDS_MAX: u32 = 30;

/// One node's part in one round as a participant.
#[derive(Debug)]
pub struct TrainerRound {
    a: Assignment,
    training: Training,
    client: Option<SecAggClient>,
    shares: Option<SharesForClient>,
    submitted: bool,
    /// The last message sent to the aggregator, when, and how often again.
    last: Option<(RoundMessage, u64, u32)>,
}

impl TrainerRound {
    /// A participant for `a`.
    pub fn new(a: Assignment) -> Self {
        Self {
            a,
            training: Training::NotStarted,
            client: None,
            shares: None,
            submitted: false,
            last: None,
        }
    }

    /// This node's data cannot take part in the job: ask the committee to
    /// record it, so the job status says why and the node is not selected
    /// for the job again.
    fn decline(&self, sh: &mut Shared, err: &str) {
        sh.stats.schema_mismatches += 1;
        let mut reason = format!("node {}: {err}", sh.me);
        if reason.len() > DECLINE_REASON_BYTES_MAX {
            let mut cut = DECLINE_REASON_BYTES_MAX;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        sh.push(Action::Propose(Box::new(Command::DeclineJob {
            job: self.a.key.job.clone(),
            node: sh.me.clone(),
            reason,
        })));
    }

    /// The assignment.
    pub fn assignment(&self) -> &Assignment {
        &self.a
    }

    /// The group aggregator changed: start the exchange again with the new
    /// one, keeping the trained update.
    pub fn reassign(&mut self, aggregator: NodeId) {
        self.a.aggregator = aggregator;
        self.client = None;
        self.shares = None;
        self.submitted = false;
        self.last = None;
    }

    /// Moves on with what is available: starts training once the model is
    /// here, advertises keys, submits the update when ready.
    pub fn poll(&mut self, sh: &mut Shared, now_ms: u64) {
        self.resend(sh, now_ms);
        let Some(bytes) = sh.blob(&self.a.start_hash) else {
            sh.want(self.a.start_hash, self.a.holders.clone());
            return;
        };
        if matches!(self.training, Training::NotStarted) {
            match decode_params(&bytes) {
                Ok(params) => {
                    self.training = Training::Running;
                    sh.stats.trainings += 1;
                    sh.push(Action::Train(TrainTask {
                        key: self.a.key.clone(),
                        spec: self.a.spec.clone(),
                        params: Arc::new(params),
                        seed: sh.round_seed(&self.a.key, "train"),
                    }));
                }
                Err(err) => {
                    tracing::warn!(%err, round = %self.a.key, "start model unusable");
                    self.training = Training::Failed;
                }
            }
        }
        if self.a.spec.secagg && self.client.is_none() {
            self.advertise(sh, model_dimension(&bytes));
        }
        self.submit(sh);
    }

    fn params(&self, sh: &Shared, dimension: usize) -> Option<SecAggParams> {
        let keys: Option<Vec<_>> = self.a.members.iter().map(node_key).collect();
        let session = sh.session(&self.a.key, self.a.group, &self.a.aggregator);
        let clip = update_bound(&self.a.spec, self.a.members.len(), dimension);
        SecAggParams::new(session, keys?, dimension, clip, ModulusBits::B32, session).ok()
    }

    fn advertise(&mut self, sh: &mut Shared, dimension: usize) {
        let Some(index) = self.a.members.iter().position(|m| *m == sh.me) else {
            return;
        };
        let Some(params) = self.params(sh, dimension) else {
            tracing::warn!(round = %self.a.key, "cannot set up secure aggregation for this group");
            return;
        };
        let mut seed = [0u8; 32];
        let key_seed = sh.round_seed(&self.a.key, &format!("secagg-{}", self.a.aggregator));
        seed[..8].copy_from_slice(&key_seed.to_le_bytes());
        seed[8..16].copy_from_slice(&sh.config.seed.to_le_bytes());
        let client = SecAggClient::new(params, index as u32, sh.identity.clone(), seed);
        let advert = client.and_then(|mut c| c.advertise().map(|m| (c, m)));
        match advert {
            Ok((client, message)) => {
                self.client = Some(client);
                self.send_step(sh, SecAggStep::Advertise(message));
            }
            Err(err) => {
                tracing::warn!(%err, round = %self.a.key, "secure aggregation refused to start")
            }
        }
    }

    fn send_step(&mut self, sh: &mut Shared, step: SecAggStep) {
        let message = RoundMessage::SecAgg {
            key: self.a.key.clone(),
            group: self.a.group,
            step,
            trace: None,
        };
        self.send(sh, message);
    }

    /// Sends to the aggregator and remembers the message: the aggregator may
    /// not know the round yet (its copy of the state lags) or the message may
    /// be lost, so it goes again until the answer comes.
    fn send(&mut self, sh: &mut Shared, message: RoundMessage) {
        sh.send(&self.a.aggregator.clone(), message.clone());
        self.last = Some((message, u64::MAX, 0));
    }

    fn resend(&mut self, sh: &mut Shared, now_ms: u64) {
        let Some((message, at, count)) = self.last.as_mut() else {
            return;
        };
        if *at == u64::MAX {
            *at = now_ms;
            return;
        }
        if now_ms >= *at + sh.config.retry_ms && *count < RESENDS_MAX {
            *at = now_ms;
            *count += 1;
            sh.send(&self.a.aggregator.clone(), message.clone());
        }
    }

    /// Local training finished (or failed).
    pub fn on_trained(&mut self, sh: &mut Shared, result: Result<TrainedUpdate, String>) {
        let update = match result {
            Ok(update) => update,
            Err(err) => {
                tracing::warn!(%err, round = %self.a.key, "local training failed");
                if err.starts_with(SCHEMA_MISMATCH_PREFIX) {
                    self.decline(sh, &err);
                }
                self.training = Training::Failed;
                return;
            }
        };
        let mut delta = update.delta;
        let t = &self.a.spec.training;
        let mut rng = ChaCha8Rng::seed_from_u64(sh.round_seed(&self.a.key, "dp-noise"));
        let privatized = if t.noise_multiplier > 0.0 {
            let sharers = noise_sharers(self.a.members.len(), self.a.spec.secagg);
            GaussianMechanism::new(t.clip_norm, t.noise_multiplier, NoisePlacement::Distributed)
                .and_then(|m| m.privatize_client(&mut delta, sharers, &mut rng))
        } else {
            clip_l2(&mut delta, t.clip_norm)
        };
        match privatized {
            Ok(_) => self.training = Training::Done(delta, update.samples),
            Err(err) => {
                tracing::warn!(%err, round = %self.a.key, "clipping or noising failed");
                self.training = Training::Failed;
            }
        }
        self.submit(sh);
    }

    /// A SecAgg step from the group aggregator.
    pub fn on_step(&mut self, sh: &mut Shared, from: &NodeId, step: SecAggStep) {
        if *from != self.a.aggregator {
            sh.stats.updates_invalid += 1;
            return;
        }
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let reply = match step {
            SecAggStep::NeighbourKeys(keys) => client
                .share_keys(&keys)
                .map(|m| Some(SecAggStep::ShareKeys(m))),
            SecAggStep::Shares(shares) => {
                self.shares = Some(shares);
                Ok(None)
            }
            SecAggStep::UnmaskRequest(request) => {
                client.unmask(&request).map(|m| Some(SecAggStep::Unmask(m)))
            }
            _ => Ok(None),
        };
        match reply {
            Ok(Some(step)) => self.send_step(sh, step),
            Ok(None) => {
                // The answer to the last message came: stop repeating it.
                self.last = None;
                self.submit(sh);
            }
            Err(err) => {
                tracing::debug!(%err, round = %self.a.key, "secure aggregation step refused")
            }
        }
    }

    /// Sends the update once it is trained (and, with SecAgg, the shares are in).
    fn submit(&mut self, sh: &mut Shared) {
        let Training::Done(delta, samples) = &self.training else {
            return;
        };
        if self.submitted {
            return;
        }
        if self.a.spec.secagg {
            let (Some(client), Some(shares)) = (self.client.as_mut(), self.shares.as_ref()) else {
                return;
            };
            match client.masked_input(shares, delta) {
                Ok(masked) => {
                    self.submitted = true;
                    self.send_step(sh, SecAggStep::Masked(masked));
                }
                Err(err) => tracing::warn!(%err, round = %self.a.key, "masking refused"),
            }
            return;
        }
        let session = sh.session(&self.a.key, self.a.group, &self.a.aggregator);
        let body = PlainUpdate {
            values: delta.clone(),
            samples: *samples,
        };
        match Signed::sign(&sh.identity, &session, body) {
            Ok(update) => {
                self.submitted = true;
                let message = RoundMessage::Plain {
                    key: self.a.key.clone(),
                    group: self.a.group,
                    update,
                    trace: None,
                };
                self.send(sh, message);
            }
            Err(err) => tracing::warn!(%err, "cannot sign an update"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Empirical standard deviation of the sum of `members` privatized zero
    /// updates, each adding its share of noise for `sharers`.
    fn sum_noise_std(members: usize, sharers: usize, clip: f32, z: f64) -> f64 {
        let d = 200_000;
        let mechanism = GaussianMechanism::new(clip, z, NoisePlacement::Distributed).unwrap();
        let mut sum = vec![0.0_f64; d];
        for m in 0..members {
            let mut update = vec![0.0_f32; d];
            let mut rng = ChaCha8Rng::seed_from_u64(m as u64);
            mechanism
                .privatize_client(&mut update, sharers, &mut rng)
                .unwrap();
            sum.iter_mut()
                .zip(&update)
                .for_each(|(s, u)| *s += f64::from(*u));
        }
        let mean = sum.iter().sum::<f64>() / d as f64;
        (sum.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64).sqrt()
    }

    /// The group sum a final aggregator sees carries at least the calibrated
    /// noise `zC`, even when the most dropouts a group tolerates happen, and a
    /// complete group little more; without secure aggregation a single update
    /// carries it alone.
    #[test]
    fn every_value_seen_in_the_clear_carries_the_calibrated_noise() {
        let (clip, z) = (2.0_f32, 1.5_f64);
        let calibrated = z * f64::from(clip);
        for members in [3, 4, 5, 8, 20] {
            let t = noise_sharers(members, true);
            assert_eq!(t, members - dp_dropouts_tolerated(members));
            let all = sum_noise_std(members, t, clip, z);
            let expected = calibrated * (members as f64 / t as f64).sqrt();
            assert!((all / expected - 1.0).abs() < 0.02, "{all} vs {expected}");
            assert!(all <= calibrated * 1.2, "{members} members: {all}");
            let fewest = sum_noise_std(t, t, clip, z);
            assert!(
                (fewest / calibrated - 1.0).abs() < 0.02,
                "{fewest} vs {calibrated}"
            );
        }
        let single = sum_noise_std(1, noise_sharers(1, false), clip, z);
        assert!((single / calibrated - 1.0).abs() < 0.02, "{single}");
    }
}
