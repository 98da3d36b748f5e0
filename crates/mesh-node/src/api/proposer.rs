//! Writes proposed straight from the HTTP handlers on committee nodes.
//!
//! A committee node's handler proposes through its own [`ConsensusNode`]
//! instead of sending the write through the runtime's event loop: one task
//! hop less per write, and a write never waits behind the loop's other work.
//! A node without the committee sends its writes to the runtime, which
//! forwards them (`runtime/forward.rs`). The runtime proposes forwarded
//! writes through the same [`Proposer`], so one semaphore bounds them all.

use std::sync::Arc;

use mesh_consensus::{Command, CommitReceipt, ConsensusError, ConsensusNode};
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
        receipt_view(self.consensus.propose(command).await)
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
