//! The typed job: one place that turns the strings of a committed
//! [`JobSpec`] into the rule, pre-aggregation, server optimizer and model of
//! mesh-federated, with mesh-federated's own parsers, and that sizes a round's
//! groups so secure aggregation and the robust rule can work together.
//!
//! ```text
//!   POST /v1/jobs ─┐
//!   job submit  ───┼──► JobSpec::check() ──► CheckedJob { rule, pre, server_optimizer, model, privacy }
//!   sim / bench ───┘            │                   │
//!                               ▼                   ▼
//!                 400 naming the field      plan: group_size_for(participants)
//!                 and the accepted values   worker: combine with the typed pipeline
//! ```
//!
//! Sizing (docs/security.md has the trade-off): with secure aggregation the
//! robust rule sees one input per group, so a round of `p` participants in
//! groups of `g` gives the rule about `p / g` inputs. The rule needs
//! [`Rule::n_min`]`(f)` of them to tolerate `f` Byzantine inputs, and a group
//! needs [`SECAGG_GROUP_MIN`] members to survive a dropout and still hide
//! each update among at least two others. The planner takes the job's group size as the most
//! it may use and shrinks groups until the rule has enough inputs.

use std::str::FromStr;

use mesh_consensus::command::JobSpec;
use mesh_federated::aggregate::{PreAggregation, Rule, ServerOptimizer};
use mesh_spec::ModelSpec;

/// Fewest members of a secure-aggregation group. SecAgg+ in a group of `g`
/// (complete graph, `g - 1` neighbours, threshold `(g - 1) / 2 + 1`) tolerates
/// `g - 1 - threshold` dropouts: none for 3, one for 4. A group of 4 survives
/// a dropout, and its unmasked sum still hides each update among two others.
pub const SECAGG_GROUP_MIN: usize = 4;

/// The one smaller secure group allowed: a round of exactly three
/// participants whose rule needs one input (FedAvg, no Byzantine tolerance)
/// runs as one group of three. It still hides each update among the other
/// two, but tolerates no dropout: a member lost aborts the round, which starts
/// again. Without it a three-node mesh could not aggregate securely at all.
pub const SECAGG_GROUP_SMALLEST: usize = 3;

/// Where differential-privacy noise protects a participant's update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum PrivacyMode {
    /// No DP noise.
    Off,
    /// Each group sum an aggregator unmasks carries the full calibrated
    /// noise; single updates are never seen in the clear.
    Distributed,
    /// Without secure aggregation each update is seen alone, so each carries
    /// the full calibrated noise itself: local DP.
    Local,
}

impl std::fmt::Display for PrivacyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PrivacyMode::Off => "off",
            PrivacyMode::Distributed => "distributed DP (noise in every group sum)",
            PrivacyMode::Local => "local DP (no secure aggregation: noise in every update)",
        })
    }
}

/// A job's parameters, parsed and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedJob {
    /// The robust aggregation rule.
    pub rule: Rule,
    /// The pre-aggregation step before the rule.
    pub pre: PreAggregation,
    /// The server optimizer that steps the global model.
    pub server_optimizer: ServerOptimizer,
    /// The model architecture.
    pub model: ModelSpec,
    /// Byzantine inputs the rule must tolerate.
    pub byzantine_count: usize,
    /// Whether updates are securely aggregated within groups.
    pub secagg: bool,
    /// How DP noise is placed.
    pub privacy: PrivacyMode,
}

/// Why a job spec is refused. Not retryable: the spec must change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobSpecError {
    /// A field holds a value that does not parse or is out of range.
    #[error("{field}: {message}")]
    Field {
        /// The JSON field (`rule`, `pre_aggregation`, ...).
        field: &'static str,
        /// What is wrong and what is accepted.
        message: String,
        /// The accepted values, where they are a list of names.
        accepted: Vec<&'static str>,
    },
    /// The mesh or the round is too small for the rule, `f` and secure
    /// aggregation at once.
    #[error("{0}")]
    TooSmall(String),
}

impl JobSpecError {
    /// The field to change (`byzantine_count` etc. for a sizing refusal).
    pub fn field(&self) -> &'static str {
        match self {
            JobSpecError::Field { field, .. } => field,
            JobSpecError::TooSmall(_) => "participants_per_round",
        }
    }
}

/// Checking a [`JobSpec`]: implemented here so the committee's crate needs
/// no knowledge of rules or models.
pub trait JobSpecCheck {
    /// Parses every named parameter and checks that the round can be sized.
    fn check(&self) -> Result<CheckedJob, JobSpecError>;
}

impl JobSpecCheck for JobSpec {
    fn check(&self) -> Result<CheckedJob, JobSpecError> {
        let rule = parse_field("rule", &self.rule_name, Rule::NAMES.to_vec())?;
        let pre = parse_field(
            "pre_aggregation",
            &self.pre_aggregation,
            vec!["none", "nnm", "bucketing"],
        )?;
        let server_optimizer = parse_field(
            "server_optimizer",
            &self.server_optimizer,
            vec!["sgd", "fedadam", "fedyogi"],
        )?;
        let model = self.check_model()?;
        let privacy = match (self.training.noise_multiplier > 0.0, self.secagg) {
            (false, _) => PrivacyMode::Off,
            (true, true) => PrivacyMode::Distributed,
            (true, false) => PrivacyMode::Local,
        };
        let job = CheckedJob {
            rule,
            pre,
            server_optimizer,
            model,
            byzantine_count: self.byzantine_count as usize,
            secagg: self.secagg,
            privacy,
        };
        job.group_size_for(
            self.participants_per_round as usize,
            self.training.group_size as usize,
        )?;
        Ok(job)
    }
}

/// The model (and data schema, when the job binds one) as a typed pair.
trait ModelCheck {
    fn check_model(&self) -> Result<ModelSpec, JobSpecError>;
}

impl ModelCheck for JobSpec {
    /// The model's bounds; with a schema, the schema's ranges and whether
    /// every layer can take its input.
    fn check_model(&self) -> Result<ModelSpec, JobSpecError> {
        let field = |field: &'static str, message: String| JobSpecError::Field {
            field,
            message,
            accepted: Vec::new(),
        };
        self.model
            .check_bounds()
            .map_err(|e| field("model", e.to_string()))?;
        if let Some(schema) = &self.training.schema {
            schema
                .validate()
                .map_err(|e| field("training.schema", e.to_string()))?;
            if !matches!(self.model, ModelSpec::Learner(_)) {
                self.model
                    .plan(&schema.input, schema.task.outputs())
                    .map_err(|e| field("model", e.to_string()))?;
            }
        }
        Ok(self.model.clone())
    }
}

fn parse_field<T>(
    field: &'static str,
    value: &str,
    accepted: Vec<&'static str>,
) -> Result<T, JobSpecError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    T::from_str(value).map_err(|e| JobSpecError::Field {
        field,
        message: format!("{e} (accepted: {})", accepted.join(", ")),
        accepted,
    })
}

impl CheckedJob {
    /// Inputs the rule needs after pre-aggregation to tolerate `f`.
    pub fn rule_inputs_min(&self) -> usize {
        let needed = self.rule.n_min(self.byzantine_count);
        match self.pre {
            PreAggregation::Bucketing { bucket_size } => needed.saturating_mul(bucket_size.max(1)),
            PreAggregation::None | PreAggregation::Nnm => needed,
        }
    }

    /// The group size for a round of `participants`, at most `wanted`: plain
    /// updates keep `wanted`; with secure aggregation
    /// the largest size of at least [`SECAGG_GROUP_MIN`] that still gives the
    /// rule enough group results. Refuses, saying what to change, when no
    /// size does.
    pub fn group_size_for(
        &self,
        participants: usize,
        wanted: usize,
    ) -> Result<usize, JobSpecError> {
        let inputs_min = self.rule_inputs_min();
        if !self.secagg {
            let size = wanted.max(1);
            let inputs = (participants / size).max(1);
            if inputs < inputs_min {
                return Err(JobSpecError::TooSmall(format!(
                    "rule {} tolerating {} Byzantine inputs needs {inputs_min} inputs, but {participants} participants in groups of {size} give {inputs}: add participants, lower byzantine_count or group_size, or choose a rule that needs fewer inputs",
                    self.rule, self.byzantine_count
                )));
            }
            return Ok(size);
        }
        let largest = participants / inputs_min.max(1);
        if participants == SECAGG_GROUP_SMALLEST && inputs_min <= 1 {
            return Ok(SECAGG_GROUP_SMALLEST);
        }
        if largest < SECAGG_GROUP_MIN {
            return Err(JobSpecError::TooSmall(format!(
                "secure aggregation in groups of at least {SECAGG_GROUP_MIN} (to survive a dropout) with rule {} tolerating {} Byzantine group results needs {} participants, this round has {participants}: add participants, lower byzantine_count, choose a rule that needs fewer inputs, or turn secure aggregation off",
                self.rule,
                self.byzantine_count,
                inputs_min.saturating_mul(SECAGG_GROUP_MIN)
            )));
        }
        Ok(wanted.clamp(SECAGG_GROUP_MIN, largest))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mesh_consensus::command::TrainingSpec;

    fn spec(rule: &str, participants: u32, f: u32, secagg: bool) -> JobSpec {
        JobSpec {
            model: mesh_spec::ModelSpec::Preset(mesh_spec::Preset::Mlp),
            rounds: 3,
            participants_per_round: participants,
            rule_name: rule.into(),
            pre_aggregation: "none".into(),
            server_optimizer: "sgd".into(),
            byzantine_count: f,
            secagg,
            dp_budget: None,
            training: TrainingSpec {
                group_size: if secagg { 5 } else { 1 },
                ..TrainingSpec::default()
            },
            initial_model: None,
        }
    }

    #[test]
    fn a_misspelled_rule_names_the_field_and_the_accepted_values() {
        let err = spec("krumm", 10, 0, false).check().unwrap_err();
        assert_eq!(err.field(), "rule");
        let text = err.to_string();
        assert!(text.starts_with("rule: "), "{text}");
        assert!(
            text.contains("krumm") && text.contains("multi-krum"),
            "{text}"
        );
    }

    #[test]
    fn every_named_field_is_parsed_with_its_own_parser() {
        let mut s = spec("trimmed-mean", 10, 2, false);
        s.pre_aggregation = "nnm".into();
        s.server_optimizer = "fedadam:lr=0.05".into();
        let job = s.check().unwrap();
        assert_eq!(job.pre, PreAggregation::Nnm);
        assert_eq!(job.server_optimizer.learning_rate, 0.05);
        for (field, bad) in [("pre_aggregation", "nmm"), ("server_optimizer", "adamw")] {
            let mut s = spec("median", 10, 0, false);
            match field {
                "pre_aggregation" => s.pre_aggregation = bad.into(),
                _ => s.server_optimizer = bad.into(),
            }
            assert_eq!(s.check().unwrap_err().field(), field);
        }
        // A CNN cannot take a table: refused naming the model and the layer.
        let mut s = spec("median", 10, 0, false);
        s.model = "cnn".parse().unwrap();
        s.training.schema = Some(mesh_spec::DataSchema {
            input: mesh_spec::InputShape::Table { features: 30 },
            task: mesh_spec::Task::Classification {
                classes: vec!["0".into(), "1".into()],
            },
            normalization: None,
        });
        let err = s.check().unwrap_err();
        assert_eq!(err.field(), "model");
        assert!(err.to_string().contains("needs image input"), "{err}");
    }

    #[test]
    fn secure_groups_shrink_until_the_rule_has_enough_inputs() {
        // 10 participants, trimmed mean with f = 1 needs 3 group results: groups of 3
        // would be needed, below the dropout-safe minimum of 4.
        let err = spec("trimmed-mean", 10, 1, true).check().unwrap_err();
        assert!(matches!(err, JobSpecError::TooSmall(_)));
        assert!(err.to_string().contains("secure aggregation off"));
        // 12 participants: three groups of 4.
        let job = spec("trimmed-mean", 12, 1, true).check().unwrap();
        assert_eq!(job.group_size_for(12, 5).unwrap(), 4);
        // 100 participants keep the wanted 5 (20 results >= 5).
        let job = spec("trimmed-mean", 100, 2, true).check().unwrap();
        assert_eq!(job.group_size_for(100, 5).unwrap(), 5);
        // FedAvg needs one input: groups stay as wanted.
        let job = spec("fedavg", 10, 0, true).check().unwrap();
        assert_eq!(job.group_size_for(10, 5).unwrap(), 5);
        // Three participants form one group of three (no dropout tolerated);
        // two cannot aggregate securely.
        assert_eq!(job.group_size_for(3, 5).unwrap(), 3);
        assert!(job.group_size_for(2, 5).is_err());
    }

    #[test]
    fn dp_without_secure_aggregation_is_local() {
        let mut s = spec("fedavg", 10, 0, false);
        s.training.noise_multiplier = 1.0;
        assert_eq!(s.check().unwrap().privacy, PrivacyMode::Local);
        s.secagg = true;
        assert_eq!(s.check().unwrap().privacy, PrivacyMode::Distributed);
    }
}
