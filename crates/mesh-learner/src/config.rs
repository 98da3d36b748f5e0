//! The node's `[learner]` table: how to start the user's learner and how
//! long to wait for it.
//!
//! ```toml
//! [learner]
//! command = ["python3", "-m", "my_learner"]
//! working_dir = "learner"          # relative to the config file
//! env = { CUDA_VISIBLE_DEVICES = "" }
//! fit_timeout_ms = 600000
//! evaluate_timeout_ms = 120000
//! max_restarts = 5
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::frame::FRAME_BYTES_MAX_DEFAULT;
use crate::restart::RestartPolicy;

/// Longest timeout any call may have (one day), in ms.
pub const TIMEOUT_MS_MAX: u64 = 86_400_000;
/// Most restarts in a row that may be configured.
pub const MAX_RESTARTS_MAX: u32 = 1_000;
/// Smallest frame limit that may be configured (a small model's frame).
pub const FRAME_BYTES_MIN: u32 = 1 << 16;

/// How to run one learner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearnerConfig {
    /// Program and arguments, e.g. `["python3", "-m", "my_learner"]`.
    pub command: Vec<String>,
    /// Extra environment variables for the learner (added to the node's).
    pub env: BTreeMap<String, String>,
    /// Folder the learner starts in (default: the node's).
    pub working_dir: Option<PathBuf>,
    /// Longest wait for the learner's hello after starting it, in ms
    /// (importing PyTorch can take seconds).
    pub start_timeout_ms: u64,
    /// Longest wait for a fit reply, in ms.
    pub fit_timeout_ms: u64,
    /// Longest wait for an evaluate (or layout) reply, in ms.
    pub evaluate_timeout_ms: u64,
    /// Most restarts in a row without a successful call before giving up.
    pub max_restarts: u32,
    /// Wait before the first restart, in ms; it doubles per restart in a row.
    pub backoff_initial_ms: u64,
    /// Longest wait between restarts, in ms.
    pub backoff_max_ms: u64,
    /// Largest frame either side may send, in bytes.
    pub frame_bytes_max: u32,
}

impl Default for LearnerConfig {
    fn default() -> Self {
        Self {
            command: Vec::new(),
            env: BTreeMap::new(),
            working_dir: None,
            start_timeout_ms: 60_000,
            fit_timeout_ms: 600_000,
            evaluate_timeout_ms: 120_000,
            max_restarts: 5,
            backoff_initial_ms: 500,
            backoff_max_ms: 30_000,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
        }
    }
}

/// A `[learner]` field out of range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct LearnerConfigError {
    /// The field, in dotted form (`learner.fit_timeout_ms`).
    pub field: &'static str,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl LearnerConfig {
    /// A config running `command` with every other field at its default.
    pub fn for_command(command: Vec<String>) -> Self {
        Self {
            command,
            ..Self::default()
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), LearnerConfigError> {
        let err = |field, message: &str| {
            Err(LearnerConfigError {
                field,
                message: message.to_owned(),
            })
        };
        if self.command.first().is_none_or(|p| p.is_empty()) {
            return err(
                "learner.command",
                "needs a program, e.g. [\"python3\", \"-m\", \"my_learner\"]",
            );
        }
        for (field, ms) in [
            ("learner.start_timeout_ms", self.start_timeout_ms),
            ("learner.fit_timeout_ms", self.fit_timeout_ms),
            ("learner.evaluate_timeout_ms", self.evaluate_timeout_ms),
        ] {
            if ms == 0 || ms > TIMEOUT_MS_MAX {
                return err(field, "must be 1 to 86400000 (one day)");
            }
        }
        if self.max_restarts > MAX_RESTARTS_MAX {
            return err("learner.max_restarts", "must be at most 1000");
        }
        if self.backoff_max_ms < self.backoff_initial_ms || self.backoff_max_ms > TIMEOUT_MS_MAX {
            return err(
                "learner.backoff_max_ms",
                "must be at least backoff_initial_ms and at most one day",
            );
        }
        if self.frame_bytes_max < FRAME_BYTES_MIN {
            return err("learner.frame_bytes_max", "must be at least 65536");
        }
        Ok(())
    }

    /// The restart rule of this config.
    pub fn restart_policy(&self) -> RestartPolicy {
        RestartPolicy {
            max_restarts: self.max_restarts,
            backoff_initial_ms: self.backoff_initial_ms,
            backoff_max_ms: self.backoff_max_ms,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_table_with_only_the_command_takes_the_defaults() {
        let config: LearnerConfig =
            toml::from_str(r#"command = ["python3", "-m", "my_learner"]"#).unwrap();
        assert_eq!(config.fit_timeout_ms, 600_000);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn out_of_range_fields_are_named() {
        assert_eq!(
            LearnerConfig::default().validate().unwrap_err().field,
            "learner.command"
        );
        let zero = LearnerConfig {
            fit_timeout_ms: 0,
            ..LearnerConfig::for_command(vec!["python3".into()])
        };
        assert_eq!(
            zero.validate().unwrap_err().to_string(),
            "learner.fit_timeout_ms: must be 1 to 86400000 (one day)"
        );
        assert!(toml::from_str::<LearnerConfig>("comand = []").is_err());
    }
}
