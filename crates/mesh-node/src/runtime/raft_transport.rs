//! The committee's Raft RPCs over the P2P layer's request-response protocol.
//!
//! `mesh-consensus` knows nothing of libp2p; it calls [`RaftTransport::call`]
//! with a member's record. The record's `node_id` is the member's libp2p peer
//! id, so routing is a parse; the link under it is the Noise-encrypted,
//! certificate-admitted connection of `mesh-net`. The receiving side hands the
//! bytes to `ConsensusNode::handle_rpc` with the authenticated sender id.

use std::str::FromStr;

use mesh_consensus::{MemberId, MemberInfo, RaftTransport, TransportError};
use mesh_net::{NetError, NetHandle, PeerId};

/// The request-response protocol name of Raft RPCs.
pub const RAFT_PROTOCOL: &str = "raft/1";

/// [`RaftTransport`] over a [`NetHandle`].
pub struct NetRaftTransport {
    net: NetHandle,
    request_timeout_ms: u64,
}

impl NetRaftTransport {
    /// Sends through `net`; `request_timeout_ms` is reported in timeout errors.
    pub fn new(net: NetHandle, request_timeout_ms: u64) -> Self {
        Self {
            net,
            request_timeout_ms,
        }
    }
}

/// The Raft id of a peer, from its peer id (the same key).
pub fn member_of_peer(peer: &PeerId) -> Option<MemberId> {
    mesh_net::ids::node_id(peer).map(|node| MemberId::from_node_id(&node))
}

#[async_trait::async_trait]
impl RaftTransport for NetRaftTransport {
    async fn call(
        &self,
        target: MemberId,
        route: &MemberInfo,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, TransportError> {
        let unreachable = |reason: String| TransportError::Unreachable {
            target: target.to_string(),
            reason,
        };
        let peer = PeerId::from_str(&route.node_id)
            .map_err(|e| unreachable(format!("bad peer id {:?}: {e}", route.node_id)))?;
        match self.net.request(peer, RAFT_PROTOCOL, payload).await {
            Ok(answer) => Ok(answer),
            Err(NetError::Timeout(_)) => Err(TransportError::Timeout {
                target: target.to_string(),
                timeout_ms: self.request_timeout_ms,
            }),
            Err(NetError::TooLarge {
                size_bytes,
                limit_bytes,
            }) => Err(TransportError::TooLarge {
                len_bytes: size_bytes,
                max_bytes: limit_bytes,
            }),
            Err(other) => Err(unreachable(other.to_string())),
        }
    }
}
