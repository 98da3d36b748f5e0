//! An in-memory network of consensus nodes for tests and the simulator, with
//! fault controls: partition the nodes into groups, isolate some, heal, and
//! drop a node (a crash as the others see it).
//!
//! Calls go straight to the target's [`ConsensusNode::handle_rpc`] in the same
//! process; a call across a cut link or to a dropped node fails as
//! unreachable, like a real disconnected peer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::TransportError;
use crate::network::RaftTransport;
use crate::node::ConsensusNode;
use crate::types::{MemberId, MemberInfo};

#[derive(Default)]
struct NetState {
    nodes: BTreeMap<MemberId, ConsensusNode>,
    /// Partition group per node; nodes talk only within one group. Absent = group 0.
    groups: BTreeMap<MemberId, u32>,
    next_group: u32,
}

/// The in-memory network.
#[derive(Default)]
pub struct MemNet {
    state: Mutex<NetState>,
}

impl MemNet {
    /// An empty network.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The transport a node with id `from` uses on this network.
    pub fn transport(self: &Arc<Self>, from: MemberId) -> Arc<dyn RaftTransport> {
        Arc::new(MemTransport {
            net: self.clone(),
            from,
        })
    }

    /// Attaches a node so others can reach it.
    pub fn register(&self, node: ConsensusNode) {
        self.lock().nodes.insert(node.id(), node);
    }

    /// Detaches a node (as if it crashed); returns it so the test can shut it down.
    pub fn drop_node(&self, id: MemberId) -> Option<ConsensusNode> {
        self.lock().nodes.remove(&id)
    }

    /// Cuts `ids` off from every other node (links among `ids` stay up).
    pub fn isolate(&self, ids: &[MemberId]) {
        let mut s = self.lock();
        s.next_group += 1;
        let g = s.next_group;
        for id in ids {
            s.groups.insert(*id, g);
        }
    }

    /// Splits the network into the given groups (nodes not named stay in group 0).
    pub fn partition(&self, groups: &[&[MemberId]]) {
        for g in groups {
            self.isolate(g);
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().groups.clear();
    }

    /// Whether `a` and `b` can talk now.
    pub fn connected(&self, a: MemberId, b: MemberId) -> bool {
        let s = self.lock();
        s.groups.get(&a).copied().unwrap_or(0) == s.groups.get(&b).copied().unwrap_or(0)
    }

    /// The registered nodes.
    pub fn members(&self) -> BTreeSet<MemberId> {
        self.lock().nodes.keys().copied().collect()
    }
}

struct MemTransport {
    net: Arc<MemNet>,
    from: MemberId,
}

#[async_trait::async_trait]
impl RaftTransport for MemTransport {
    async fn call(
        &self,
        target: MemberId,
        _route: &MemberInfo,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, TransportError> {
        let unreachable = |reason: &str| TransportError::Unreachable {
            target: target.to_string(),
            reason: reason.to_owned(),
        };
        if !self.net.connected(self.from, target) {
            return Err(unreachable("partitioned"));
        }
        let node = self.net.lock().nodes.get(&target).cloned();
        let node = node.ok_or_else(|| unreachable("not on the network"))?;
        let answer = node.handle_rpc(self.from, &payload).await;
        // A partition that starts while the call runs loses the answer too.
        if !self.net.connected(self.from, target) {
            return Err(unreachable("partitioned"));
        }
        Ok(answer)
    }
}
