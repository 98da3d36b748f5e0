//! Writes proposed straight from the HTTP handlers on committee nodes.
//!
//! A committee node's handler proposes through its own [`ConsensusNode`]
//! instead of sending the write through the runtime's event loop: one task
//! hop less per write, and a write never waits behind the loop's other work.
//! A node without the committee sends its writes to the runtime, which
//! forwards them (`runtime/forward.rs`). The runtime proposes forwarded
//! writes through the same [`Proposer`], so one semaphore bounds them all.
//!
//! Being the one door for API writes, it also refuses, before any entry is
//! written, the writes that could only be rejected once committed: a job
//! spec out of bounds, and stopping a job this node's committed state does
//! not hold or holds as ended. That check reads this node's copy, which may
//! lag the leader by a few entries; the state machine still rejects a stop
//! that races another.

use std::sync::Arc;

use mesh_consensus::command::JobId;
use mesh_consensus::{Command, CommitReceipt, ConsensusError, ConsensusNode, MeshState};
use tokio::sync::Semaphore;

use super::CommitView;

/// Proposes writes with a bound on how many are in flight.
#[derive(Clone)]
pub struct Proposer {
    consensus: ConsensusNode,
    permits: Arc<Semaphore>,
}

impl Proposer {
    /// Proposes through `consensus`, at most `in_flight_max` writes at once.
    pub fn new(consensus: ConsensusNode, in_flight_max: usize) -> Self {
        Self {
            consensus,
            permits: Arc::new(Semaphore::new(in_flight_max)),
        }
    }

    /// Commits `command`, or says why not (a full bound is an error to retry).
    pub async fn propose(&self, command: Command) -> Result<CommitView, String> {
        let Ok(_permit) = self.permits.try_acquire() else {
            return Err("too many writes in flight; retry later".into());
        };
        self.precheck(&command).await?;
        receipt_view(self.consensus.propose(command).await)
    }

    /// Reads `key` from the key-value map linearizably (only the leader
    /// answers; see [`ConsensusNode::read_linearizable`]): the read index and
    /// the value, if the key is set.
    pub async fn read_kv(&self, key: &[u8]) -> Result<(u64, Option<Vec<u8>>), ConsensusError> {
        self.consensus
            .read_linearizable(|state| state.kv().get(key).map(<[u8]>::to_vec))
            .await
    }

    /// Refuses a write that would only be rejected once committed (see the module docs).
    async fn precheck(&self, command: &Command) -> Result<(), String> {
        match command {
            Command::CreateJob { spec, .. } => spec.check_bounds().map_err(|e| e.to_string()),
            Command::StopJob { job, .. } => {
                self.consensus
                    .read_state(|state| stoppable(state, job))
                    .await
            }
            _ => Ok(()),
        }
    }
}

/// Whether `job` is in `state` and still running or waiting.
fn stoppable(state: &MeshState, job: &JobId) -> Result<(), String> {
    match state.jobs().get(job) {
        None => Err(format!(
            "no job {job} in this node's committed state; nothing was written \
             (a job submitted moments ago through another node may not be here yet: retry)"
        )),
        Some(record) if record.status.is_finished() => Err(format!(
            "job {job} already ended ({:?}); nothing was written",
            record.status
        )),
        Some(_) => Ok(()),
    }
}

/// A commit as the API shows it; a command the state machine rejected is an error.
fn receipt_view(outcome: Result<CommitReceipt, ConsensusError>) -> Result<CommitView, String> {
    match outcome {
        Ok(receipt) => match receipt.rejected {
            None => Ok(CommitView {
                index: receipt.index,
                state_hash: receipt.state_hash.to_string(),
            }),
            Some(reason) => Err(format!(
                "committed at {} but rejected: {reason}",
                receipt.index
            )),
        },
        Err(err) => Err(err.to_string()),
    }
}
