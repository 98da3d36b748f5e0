//! The supervised learner: one [`LearnerProcess`] at a time, started on the
//! first call, killed when a call shows it unusable (it died, hung, or broke
//! the framing) and started again on the next call after the backoff of
//! [`crate::restart`]. Each failure is logged with its reason and counted in
//! [`LearnerStats`]; a bad reply from a healthy learner fails the call but
//! keeps the process.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mesh_federated::model::ParameterInfo;
use serde_json::{Map, Value};

use crate::config::LearnerConfig;
use crate::error::LearnerError;
use crate::layout::{self, NamedArray};
use crate::message::Request;
use crate::process::LearnerProcess;
use crate::reply::{self, EvaluateOutcome, FitOutcome};
use crate::restart::{RestartDecision, RestartTracker};
use crate::stats::LearnerStats;

/// One supervised learner shared by every model that trains through it.
pub type SharedLearner = Arc<Mutex<SupervisedLearner>>;

/// Locks a shared learner; a poisoned lock (a panic elsewhere) still gives
/// the learner, whose state stays consistent between calls.
pub fn lock(learner: &SharedLearner) -> MutexGuard<'_, SupervisedLearner> {
    match learner.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A learner process under supervision.
#[derive(Debug)]
pub struct SupervisedLearner {
    config: LearnerConfig,
    tracker: RestartTracker,
    process: Option<LearnerProcess>,
    stats: Arc<LearnerStats>,
    restart_delay_ms: Option<u64>,
    given_up: Option<(u32, String)>,
}

impl SupervisedLearner {
    /// A learner for `config` (checked by [`LearnerConfig::validate`]); nothing starts yet.
    pub fn new(config: LearnerConfig) -> Self {
        Self {
            tracker: RestartTracker::new(config.restart_policy()),
            config,
            process: None,
            stats: Arc::default(),
            restart_delay_ms: None,
            given_up: None,
        }
    }

    /// Wraps the learner for sharing.
    pub fn shared(self) -> SharedLearner {
        Arc::new(Mutex::new(self))
    }

    /// The config it runs.
    pub fn config(&self) -> &LearnerConfig {
        &self.config
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<LearnerStats> {
        self.stats.clone()
    }

    /// The running process's id, if one runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(LearnerProcess::pid)
    }

    /// The name the running learner gave, if one runs.
    pub fn learner_name(&self) -> Option<&str> {
        self.process.as_ref().map(LearnerProcess::learner_name)
    }

    /// Starts the learner unless it runs (after the backoff, if it failed).
    pub fn start(&mut self) -> Result<(), LearnerError> {
        if let Some(process) = &mut self.process {
            if !process.has_exited() {
                return Ok(());
            }
            let err = self.died_idle();
            self.fail(&err);
        }
        if let Some((restarts, last)) = &self.given_up {
            return Err(LearnerError::GaveUp {
                restarts: *restarts,
                last: last.clone(),
            });
        }
        let restart = self.restart_delay_ms.is_some();
        if let Some(delay_ms) = self.restart_delay_ms.take() {
            std::thread::sleep(Duration::from_millis(delay_ms));
        }
        match LearnerProcess::spawn(&self.config) {
            Ok(process) => {
                tracing::info!(
                    pid = process.pid(),
                    learner = process.learner_name(),
                    restart,
                    "learner started"
                );
                self.stats.started(restart);
                self.process = Some(process);
                Ok(())
            }
            Err(err) => {
                self.fail(&err);
                Err(err)
            }
        }
    }

    fn died_idle(&mut self) -> LearnerError {
        match self.process.take() {
            Some(process) => LearnerError::Exited {
                pid: process.pid(),
                status: "ended while idle".into(),
                call: "idle",
                last_output: process.last_output(),
            },
            None => LearnerError::Exited {
                pid: 0,
                status: "not running".into(),
                call: "idle",
                last_output: Vec::new(),
            },
        }
    }

    /// Records a failure: counts it, and for an unusable learner kills the
    /// process and plans the restart (or gives up).
    fn fail(&mut self, err: &LearnerError) {
        self.stats.failed(err.reason());
        if !err.needs_restart() {
            tracing::warn!(error = %err, reason = err.reason(), "learner reply refused");
            return;
        }
        if let Some(process) = self.process.take() {
            process.kill();
        }
        self.stats.down();
        match self.tracker.on_failure() {
            RestartDecision::Restart { delay_ms, attempt } => {
                tracing::warn!(
                    error = %err,
                    reason = err.reason(),
                    delay_ms,
                    attempt,
                    "learner failed; it restarts on the next call"
                );
                self.restart_delay_ms = Some(delay_ms);
            }
            RestartDecision::GiveUp { attempts } => {
                tracing::error!(
                    error = %err,
                    attempts,
                    "learner failed too often in a row; giving up until the node restarts"
                );
                self.stats.gave_up();
                self.given_up = Some((attempts, err.to_string()));
            }
        }
    }

    /// Sends one request (starting the learner first if needed) and returns
    /// the reply; an `error` reply is [`LearnerError::Learner`].
    fn call(
        &mut self,
        request: &Request,
        timeout_ms: u64,
    ) -> Result<crate::message::Reply, LearnerError> {
        self.start()?;
        let process = self.process.as_mut().ok_or_else(|| LearnerError::Exited {
            pid: 0,
            status: "not running".into(),
            call: request.kind(),
            last_output: Vec::new(),
        })?;
        self.stats.call_started(request.kind());
        let result = process.call(request, timeout_ms);
        self.stats.call_ended(request.kind());
        match result {
            Ok(reply) => {
                self.tracker.on_success();
                Ok(reply)
            }
            Err(err) => {
                self.fail(&err);
                Err(err)
            }
        }
    }

    /// Runs a checked call: a reply the check refuses is counted as a failure too.
    fn checked<T>(
        &mut self,
        request: &Request,
        timeout_ms: u64,
        check: impl FnOnce(crate::message::Reply) -> Result<T, LearnerError>,
    ) -> Result<T, LearnerError> {
        let reply = self.call(request, timeout_ms)?;
        check(reply).inspect_err(|err| self.fail(err))
    }

    /// The learner's own parameters (names, shapes, values, in its order).
    pub fn layout(&mut self) -> Result<Vec<NamedArray>, LearnerError> {
        let timeout_ms = self.config.evaluate_timeout_ms;
        self.checked(&Request::Layout, timeout_ms, reply::check_layout)
    }

    /// Trains from `parameters` (flat, in `layout` order) with `config`.
    pub fn fit(
        &mut self,
        layout: &[ParameterInfo],
        parameters: &[f32],
        config: Map<String, Value>,
    ) -> Result<FitOutcome, LearnerError> {
        let call = "fit";
        let arrays = layout::split(layout, parameters)
            .map_err(|cause| LearnerError::Layout { call, cause })?;
        let request = Request::Fit {
            parameters: arrays,
            config,
        };
        let timeout_ms = self.config.fit_timeout_ms;
        self.checked(&request, timeout_ms, |reply| {
            reply::check_fit(layout, reply)
        })
    }

    /// Evaluates `parameters` (flat, in `layout` order) on the learner's data.
    pub fn evaluate(
        &mut self,
        layout: &[ParameterInfo],
        parameters: &[f32],
        config: Map<String, Value>,
    ) -> Result<EvaluateOutcome, LearnerError> {
        let call = "evaluate";
        let arrays = layout::split(layout, parameters)
            .map_err(|cause| LearnerError::Layout { call, cause })?;
        let request = Request::Evaluate {
            parameters: arrays,
            config,
        };
        let timeout_ms = self.config.evaluate_timeout_ms;
        self.checked(&request, timeout_ms, reply::check_evaluate)
    }
}
