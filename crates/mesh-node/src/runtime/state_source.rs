//! Where the round driver reads the committed state, learns the committee
//! leader and sends its proposals: this node's own Raft copy on committee
//! nodes, or the certified copy a node without the committee follows
//! ([`super::state_follow`]).

use std::sync::Arc;

use mesh_consensus::command::{Command, NodeId};
use mesh_consensus::{ConsensusNode, MeshState};
use mesh_net::{NetHandle, PeerId};

/// The committed state the round engine runs on.
#[derive(Clone)]
pub enum StateSource {
    /// This node's own copy under Raft (committee nodes).
    Committee(ConsensusNode),
    /// A certified copy followed without the log.
    Followed(Box<Followed>),
}

/// The committed state of a node that follows it without the log.
#[derive(Clone)]
pub struct Followed {
    /// The state, as last verified.
    pub state: Arc<MeshState>,
    /// The committee leader, as the peer that served the state named it
    /// (checked to be one of the state's voters).
    pub leader: Option<NodeId>,
    /// The admitted committee members, where this node's declines go.
    pub committee: Vec<PeerId>,
    /// The network, to send them.
    pub net: NetHandle,
}

impl StateSource {
    /// Runs `f` on the committed state.
    pub async fn read<R>(&self, f: impl FnOnce(&MeshState) -> R) -> R {
        match self {
            Self::Committee(consensus) => consensus.read_state(f).await,
            Self::Followed(followed) => f(&followed.state),
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
            Self::Followed(followed) => followed.leader.clone(),
        }
    }

    /// Proposes `command` to the committee; the reason when it was not
    /// committed or was rejected. A node that follows the state sends the
    /// one command a participant proposes, declining a job whose data it
    /// lacks, to a committee member (`decline/1`); it proposes nothing else.
    pub async fn propose(&self, command: Command) -> Option<String> {
        match self {
            Self::Committee(consensus) => match consensus.propose(command).await {
                Ok(receipt) => receipt.rejected,
                Err(err) => Some(err.to_string()),
            },
            Self::Followed(followed) => match command {
                Command::DeclineJob { .. } => {
                    super::forward::forward_decline(&followed.net, &followed.committee, &command)
                        .await
                        .err()
                }
                other => Some(format!(
                    "{other}: a node without the committee protocol proposes only its declines"
                )),
            },
        }
    }
}
