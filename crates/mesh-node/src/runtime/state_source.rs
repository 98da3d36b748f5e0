//! Where the round driver reads the committed state, learns the committee
//! leader and sends its proposals: this node's own Raft copy on committee
//! nodes, or the certified copy a node without the committee follows
//! ([`super::state_follow`]).

use std::sync::Arc;

use mesh_consensus::command::{Command, NodeId};
use mesh_consensus::{ConsensusNode, MeshState};

/// The committed state the round engine runs on.
#[derive(Clone)]
pub enum StateSource {
    /// This node's own copy under Raft (committee nodes).
    Committee(ConsensusNode),
    /// A certified copy followed without the log.
    Followed {
        /// The state, as last verified.
        state: Arc<MeshState>,
        /// The committee leader, as the peer that served the state named
        /// it (checked to be one of the state's voters).
        leader: Option<NodeId>,
    },
}

impl StateSource {
    /// Runs `f` on the committed state.
    pub async fn read<R>(&self, f: impl FnOnce(&MeshState) -> R) -> R {
        match self {
            Self::Committee(consensus) => consensus.read_state(f).await,
            Self::Followed { state, .. } => f(state),
        }
    }

    /// The committee leader's mesh name, if known.
    pub fn leader(&self) -> Option<NodeId> {
        match self {
            Self::Committee(consensus) => consensus
                .status()
                .leader
                .and_then(|id| consensus.member_info(id))
                .map(|info| NodeId(info.node_id)),
            Self::Followed { leader, .. } => leader.clone(),
        }
    }

    /// Proposes `command` to the committee; the reason when it was not
    /// committed or was rejected. A node that follows the state cannot
    /// propose: the only command a participant sends, declining a job
    /// whose data it lacks, is then left out and the job's rounds go on
    /// without it.
    pub async fn propose(&self, command: Command) -> Option<String> {
        let consensus = match self {
            Self::Committee(consensus) => consensus,
            Self::Followed { .. } => {
                return Some(format!(
                    "{command}: a node without the committee protocol does not propose"
                ))
            }
        };
        match consensus.propose(command).await {
            Ok(receipt) => receipt.rejected,
            Err(err) => Some(err.to_string()),
        }
    }
}
