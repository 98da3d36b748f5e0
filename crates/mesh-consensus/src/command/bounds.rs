//! The numeric bounds of a [`JobSpec`]: what an admin may ask for, checked
//! before a job is proposed (by the HTTP API and by `agent-mesh job submit`).
//!
//! A field outside its range used to be committed and then fail at run time:
//! a round deadline of `u64::MAX` wrapped the leader's clock arithmetic and
//! aborted rounds several times a second, and a zero-sized round never
//! started. [`JobSpec::check_bounds`] refuses such a spec with the field's
//! name and the accepted range, so nothing of it reaches the log.
//!
//! These bounds are deliberately not part of [`super::Command::validate`],
//! which the state machine runs on every committed entry: an entry committed
//! before a bound existed (or changed) must apply the same way on replay.

use std::fmt;
use std::ops::RangeInclusive;

use super::{JobSpec, INITIAL_MODEL_HOLDERS_MAX, PARTICIPANTS_MAX, ROUNDS_MAX};

/// Fewest participants a job may ask for per round (secure aggregation needs
/// two, and the planner never starts a round with fewer).
pub const JOB_PARTICIPANTS_MIN: u32 = 2;
/// Most local epochs per round.
pub const EPOCHS_MAX: u32 = 1_000;
/// Largest local mini-batch, in rows.
pub const BATCH_SIZE_MAX: u32 = 65_536;
/// Largest local learning rate.
pub const LEARNING_RATE_MAX: f32 = 100.0;
/// Shortest round deadline, in milliseconds.
pub const ROUND_DEADLINE_MS_MIN: u64 = 1_000;
/// Longest round deadline, in milliseconds (one day).
pub const ROUND_DEADLINE_MS_MAX: u64 = 86_400_000;
/// Largest clipping norm of an update.
pub const CLIP_NORM_MAX: f32 = 1.0e6;
/// Largest Gaussian noise multiplier.
pub const NOISE_MULTIPLIER_MAX: f64 = 1_000.0;
/// Largest DP epsilon budget, in millionths (epsilon 1000).
pub const EPSILON_MICROS_MAX: u64 = 1_000_000_000;

/// A job spec field outside the range the mesh accepts. Resubmitting the same
/// spec cannot succeed: change the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be {accepted}, got {got} (change it and submit again)")]
pub struct JobSpecError {
    /// The field, as it is named in the JSON spec (`training.round_deadline_ms`).
    pub field: &'static str,
    /// The accepted values, in words (`in 1000..=86400000`).
    pub accepted: String,
    /// The value that was sent.
    pub got: String,
}

fn refuse(field: &'static str, accepted: String, got: impl fmt::Display) -> JobSpecError {
    JobSpecError {
        field,
        accepted,
        got: got.to_string(),
    }
}

/// `value` in the inclusive integer range `range`.
fn within<T>(field: &'static str, value: T, range: RangeInclusive<T>) -> Result<(), JobSpecError>
where
    T: PartialOrd + fmt::Display + Copy,
{
    if range.contains(&value) {
        return Ok(());
    }
    let accepted = format!("in {}..={}", range.start(), range.end());
    Err(refuse(field, accepted, value))
}

/// `value` finite and in `(0, max]` (or `[0, max]` when `zero_ok`).
fn finite_up_to(
    field: &'static str,
    value: f64,
    max: f64,
    zero_ok: bool,
) -> Result<(), JobSpecError> {
    let low_ok = if zero_ok { value >= 0.0 } else { value > 0.0 };
    if value.is_finite() && low_ok && value <= max {
        return Ok(());
    }
    let open = if zero_ok { "[" } else { "(" };
    Err(refuse(
        field,
        format!("finite and in {open}0, {max}]"),
        value,
    ))
}

impl JobSpec {
    /// Checks every numeric field against the range the mesh accepts; the
    /// first field out of range is named in the error, with its range.
    pub fn check_bounds(&self) -> Result<(), JobSpecError> {
        within("rounds", self.rounds, 1..=ROUNDS_MAX)?;
        let n = self.participants_per_round;
        within(
            "participants_per_round",
            n,
            JOB_PARTICIPANTS_MIN..=PARTICIPANTS_MAX,
        )?;
        // Byzantine participants must leave an honest majority: 2f < n.
        within("byzantine_count", self.byzantine_count, 0..=(n - 1) / 2)?;
        self.check_training_bounds()?;
        self.check_privacy_bounds()?;
        match self
            .initial_model
            .as_ref()
            .and_then(|m| m.holders_problem())
        {
            Some(problem) => Err(refuse(
                "initial_model.holders",
                format!("1 to {INITIAL_MODEL_HOLDERS_MAX} node names"),
                problem,
            )),
            None => Ok(()),
        }
    }

    fn check_training_bounds(&self) -> Result<(), JobSpecError> {
        let t = &self.training;
        within("training.epochs", t.epochs, 1..=EPOCHS_MAX)?;
        within("training.batch_size", t.batch_size, 1..=BATCH_SIZE_MAX)?;
        let rate = f64::from(t.learning_rate);
        let rate_max = f64::from(LEARNING_RATE_MAX);
        finite_up_to("training.learning_rate", rate, rate_max, false)?;
        within(
            "training.round_deadline_ms",
            t.round_deadline_ms,
            ROUND_DEADLINE_MS_MIN..=ROUND_DEADLINE_MS_MAX,
        )?;
        within("training.group_size", t.group_size, 1..=PARTICIPANTS_MAX)?;
        let clip = f64::from(t.clip_norm);
        finite_up_to("training.clip_norm", clip, f64::from(CLIP_NORM_MAX), false)?;
        let z = t.noise_multiplier;
        finite_up_to("training.noise_multiplier", z, NOISE_MULTIPLIER_MAX, true)?;
        finite_up_to("training.sampling_rate", t.sampling_rate, 1.0, false)
    }

    fn check_privacy_bounds(&self) -> Result<(), JobSpecError> {
        let Some(budget) = self.dp_budget else {
            return Ok(());
        };
        within(
            "dp_budget.epsilon_micros",
            budget.epsilon_micros,
            1..=EPSILON_MICROS_MAX,
        )?;
        let delta = budget.delta;
        if !(delta.is_finite() && delta > 0.0 && delta < 1.0) {
            return Err(refuse("dp_budget.delta", "in (0, 1)".into(), delta));
        }
        // Without noise a DP job spends an infinite epsilon on its first round.
        let z = self.training.noise_multiplier;
        if z <= 0.0 {
            let accepted = format!("in (0, {NOISE_MULTIPLIER_MAX}] when dp_budget is set");
            return Err(refuse("training.noise_multiplier", accepted, z));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{DpBudget, TrainingSpec};

    fn spec() -> JobSpec {
        JobSpec {
            model: mesh_spec::ModelSpec::Preset(mesh_spec::Preset::Mlp),
            rounds: 5,
            participants_per_round: 5,
            rule_name: "fedavg".into(),
            pre_aggregation: "none".into(),
            server_optimizer: "sgd".into(),
            byzantine_count: 1,
            secagg: true,
            dp_budget: None,
            training: TrainingSpec::default(),
            initial_model: None,
        }
    }

    /// Puts one field of a spec out of range.
    type Breaker = fn(&mut JobSpec);

    fn refused_field(spec: &JobSpec) -> &'static str {
        match spec.check_bounds() {
            Err(err) => err.field,
            Ok(()) => panic!("{spec:?} passed its bounds"),
        }
    }

    #[test]
    fn the_default_spec_and_the_edges_of_every_range_pass() {
        assert_eq!(spec().check_bounds(), Ok(()));
        let mut edge = spec();
        edge.rounds = ROUNDS_MAX;
        edge.participants_per_round = JOB_PARTICIPANTS_MIN;
        edge.byzantine_count = 0;
        edge.training.round_deadline_ms = ROUND_DEADLINE_MS_MAX;
        edge.training.learning_rate = LEARNING_RATE_MAX;
        edge.training.sampling_rate = 1.0;
        edge.training.noise_multiplier = 0.0;
        assert_eq!(edge.check_bounds(), Ok(()));
    }

    /// Regression: `round_deadline_ms = 2^64 - 1` was accepted and
    /// `now + deadline` wrapped on the leader, aborting rounds ~9 times a second.
    #[test]
    fn a_round_deadline_of_u64_max_is_refused_with_its_range() {
        let mut s = spec();
        s.training.round_deadline_ms = u64::MAX;
        let err = s.check_bounds().expect_err("refused");
        assert_eq!(err.field, "training.round_deadline_ms");
        let text = err.to_string();
        assert!(text.contains("in 1000..=86400000"), "{text}");
        assert!(text.contains(&u64::MAX.to_string()), "{text}");
    }

    #[test]
    fn every_numeric_field_out_of_range_is_named() {
        let cases: Vec<(&str, Breaker)> = vec![
            ("rounds", |s| s.rounds = 0),
            ("rounds", |s| s.rounds = ROUNDS_MAX + 1),
            ("participants_per_round", |s| s.participants_per_round = 1),
            ("participants_per_round", |s| {
                s.participants_per_round = PARTICIPANTS_MAX + 1
            }),
            ("byzantine_count", |s| s.byzantine_count = 3),
            ("training.epochs", |s| s.training.epochs = 0),
            ("training.epochs", |s| s.training.epochs = EPOCHS_MAX + 1),
            ("training.batch_size", |s| s.training.batch_size = 0),
            ("training.batch_size", |s| s.training.batch_size = u32::MAX),
            ("training.learning_rate", |s| s.training.learning_rate = 0.0),
            ("training.learning_rate", |s| {
                s.training.learning_rate = f32::NAN
            }),
            ("training.learning_rate", |s| {
                s.training.learning_rate = f32::INFINITY
            }),
            ("training.round_deadline_ms", |s| {
                s.training.round_deadline_ms = 0
            }),
            ("training.group_size", |s| s.training.group_size = 0),
            ("training.clip_norm", |s| s.training.clip_norm = -1.0),
            ("training.clip_norm", |s| s.training.clip_norm = f32::NAN),
            ("training.noise_multiplier", |s| {
                s.training.noise_multiplier = -0.5
            }),
            ("training.sampling_rate", |s| s.training.sampling_rate = 0.0),
            ("training.sampling_rate", |s| s.training.sampling_rate = 1.5),
        ];
        for (field, break_it) in cases {
            let mut s = spec();
            break_it(&mut s);
            assert_eq!(refused_field(&s), field, "{s:?}");
        }
    }

    #[test]
    fn a_dp_budget_needs_a_usable_epsilon_delta_and_noise() {
        let mut s = spec();
        s.training.noise_multiplier = 1.0;
        s.dp_budget = Some(DpBudget {
            epsilon_micros: 0,
            delta: 1e-5,
        });
        assert_eq!(refused_field(&s), "dp_budget.epsilon_micros");
        s.dp_budget = Some(DpBudget {
            epsilon_micros: 1_000_000,
            delta: 1.0,
        });
        assert_eq!(refused_field(&s), "dp_budget.delta");
        s.dp_budget = Some(DpBudget {
            epsilon_micros: 1_000_000,
            delta: 1e-5,
        });
        assert_eq!(s.check_bounds(), Ok(()));
        s.training.noise_multiplier = 0.0;
        assert_eq!(refused_field(&s), "training.noise_multiplier");
    }
}
