//! The learner's error enum. [`LearnerError::needs_restart`] tells the
//! supervisor whether the process is still usable (the learner answered, but
//! badly: the call fails, the process stays) or not (it died, hung or broke
//! the framing: it is killed and restarted with backoff).

use crate::frame::FrameError;
use crate::layout::LayoutError;
use crate::message::MessageError;

/// Why a call to the learner failed.
#[derive(Debug, thiserror::Error)]
pub enum LearnerError {
    /// The configured command could not be started.
    #[error("cannot start learner {command:?}: {cause}")]
    Spawn {
        /// The command line.
        command: Vec<String>,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The learner process ended (crashed, killed, or exited).
    #[error("learner process {pid} ended ({status}) during {call}{}", output_hint(.last_output))]
    Exited {
        /// Its process id.
        pid: u32,
        /// Its exit status, as the OS tells it.
        status: String,
        /// The call it was serving.
        call: &'static str,
        /// The last lines it wrote to stderr.
        last_output: Vec<String>,
    },
    /// No reply within the call's timeout (the learner is killed).
    #[error("learner gave no {call} reply within {timeout_ms} ms")]
    Timeout {
        /// The call.
        call: &'static str,
        /// The timeout.
        timeout_ms: u64,
    },
    /// A frame was oversized, truncated or unreadable.
    #[error("learner sent a bad frame during {call}: {cause}")]
    Frame {
        /// The call.
        call: &'static str,
        /// What was wrong.
        cause: FrameError,
    },
    /// A frame held something that is not a protocol message.
    #[error("learner sent a bad message during {call}: {cause}")]
    Message {
        /// The call.
        call: &'static str,
        /// What was wrong.
        cause: MessageError,
    },
    /// The learner speaks another protocol version.
    #[error("learner speaks protocol version {theirs}, this node speaks {ours}")]
    Version {
        /// Ours.
        ours: u32,
        /// Theirs.
        theirs: u32,
    },
    /// The returned parameters do not fit the job's layout (shape, NaN, missing).
    #[error("learner's {call} reply: {cause}")]
    Layout {
        /// The call.
        call: &'static str,
        /// Which parameter and how.
        cause: LayoutError,
    },
    /// The reply is well-formed but not acceptable (wrong kind, impossible counts, NaN loss).
    #[error("learner's {call} reply: {reason}")]
    Reply {
        /// The call.
        call: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The learner's own code raised an error (it keeps serving).
    #[error("learner's {call} failed: {message}")]
    Learner {
        /// The call.
        call: &'static str,
        /// Its message (usually a Python traceback's last line).
        message: String,
    },
    /// Restarts were given up after too many failures in a row.
    #[error("learner given up after {restarts} restarts in a row; last failure: {last}")]
    GaveUp {
        /// Restarts tried.
        restarts: u32,
        /// The last failure.
        last: String,
    },
}

fn output_hint(lines: &[String]) -> String {
    match lines.last() {
        Some(last) => format!("; its last output: {last}"),
        None => String::new(),
    }
}

impl LearnerError {
    /// A short label for metrics (`mesh_learner_failures_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            LearnerError::Spawn { .. } => "spawn",
            LearnerError::Exited { .. } => "exited",
            LearnerError::Timeout { .. } => "timeout",
            LearnerError::Frame { .. } => "frame",
            LearnerError::Message { .. } => "message",
            LearnerError::Version { .. } => "version",
            LearnerError::Layout { .. } => "layout",
            LearnerError::Reply { .. } => "reply",
            LearnerError::Learner { .. } | LearnerError::GaveUp { .. } => "learner_error",
        }
    }

    /// Whether the process must be killed and started again: it is gone,
    /// hung, out of step with the framing, or incompatible.
    pub fn needs_restart(&self) -> bool {
        matches!(
            self,
            LearnerError::Spawn { .. }
                | LearnerError::Exited { .. }
                | LearnerError::Timeout { .. }
                | LearnerError::Frame { .. }
                | LearnerError::Message { .. }
                | LearnerError::Version { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_names_the_call_and_the_learners_last_words() {
        let err = LearnerError::Exited {
            pid: 42,
            status: "exit status: 1".into(),
            call: "fit",
            last_output: vec!["ModuleNotFoundError: No module named 'torch'".into()],
        };
        assert_eq!(
            err.to_string(),
            "learner process 42 ended (exit status: 1) during fit; \
             its last output: ModuleNotFoundError: No module named 'torch'"
        );
        assert!(err.needs_restart());
        assert_eq!(err.reason(), "exited");
    }

    #[test]
    fn a_bad_reply_keeps_the_process() {
        let err = LearnerError::Layout {
            call: "fit",
            cause: LayoutError::Missing {
                name: "fc.bias".into(),
            },
        };
        assert!(!err.needs_restart());
        assert_eq!(
            err.to_string(),
            "learner's fit reply: parameter fc.bias is missing"
        );
    }
}
