//! Who forms the first committee, and when (a pure decision).
//!
//! A fresh mesh has no committee. Each node with the committee role watches
//! the committee-capable peers it has admitted. Once it sees at least
//! `bootstrap_expect` of them (itself included) and that set has not changed
//! for a settle period, the chosen voters are the first `bootstrap_expect`
//! members by Raft id, and only the lowest of them initializes Raft. Every
//! node computes the same choice from the same view, so one node bootstraps
//! and the others join when its first heartbeat reaches them; a node that
//! already belongs to a committee never bootstraps again (openraft keeps that
//! on disk). Later nodes are added as learners by the leader and promoted by
//! the committee controller as the mesh grows.

use std::collections::BTreeMap;

use mesh_consensus::{MemberId, MemberInfo};

/// Tracks the committee-capable view and decides when to bootstrap.
#[derive(Debug)]
pub struct BootstrapPlanner {
    expect: usize,
    settle_ms: u64,
    view: BTreeMap<MemberId, MemberInfo>,
    stable_since_ms: u64,
}

impl BootstrapPlanner {
    /// Waits for `expect` committee-capable nodes, stable for `settle_ms`.
    pub fn new(me: MemberInfo, expect: usize, settle_ms: u64, now_ms: u64) -> Self {
        let mut view = BTreeMap::new();
        view.insert(me.member_id(), me);
        Self {
            expect: expect.max(1),
            settle_ms,
            view,
            stable_since_ms: now_ms,
        }
    }

    /// Records that a committee-capable peer is admitted, or what it told
    /// since (its zone): either change restarts the wait for a stable view.
    pub fn peer_up(&mut self, info: MemberInfo, now_ms: u64) {
        if self.view.insert(info.member_id(), info.clone()).as_ref() != Some(&info) {
            self.stable_since_ms = now_ms;
        }
    }

    /// Records that a peer went away.
    pub fn peer_down(&mut self, id: MemberId, now_ms: u64, me: MemberId) {
        if id != me && self.view.remove(&id).is_some() {
            self.stable_since_ms = now_ms;
        }
    }

    /// The committee-capable nodes seen now (this one included).
    pub fn view(&self) -> &BTreeMap<MemberId, MemberInfo> {
        &self.view
    }

    /// The voters to initialize with, if `me` should bootstrap now.
    pub fn decide(&self, me: MemberId, now_ms: u64) -> Option<BTreeMap<MemberId, MemberInfo>> {
        if self.view.len() < self.expect
            || now_ms.saturating_sub(self.stable_since_ms) < self.settle_ms
        {
            return None;
        }
        let voters: BTreeMap<_, _> = self
            .view
            .iter()
            .take(self.expect)
            .map(|(id, info)| (*id, info.clone()))
            .collect();
        (voters.keys().next() == Some(&me)).then_some(voters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_security::NodeIdentity;

    fn info(seed: u8) -> MemberInfo {
        MemberInfo::new(&NodeIdentity::from_seed(&[seed; 32]).node_id(), "", None)
    }

    #[test]
    fn exactly_one_node_bootstraps_once_the_view_is_full_and_settled() {
        let nodes: Vec<MemberInfo> = (1..=5).map(info).collect();
        let mut deciders = Vec::new();
        for me in &nodes {
            let mut planner = BootstrapPlanner::new(me.clone(), 3, 1_000, 0);
            for other in &nodes {
                planner.peer_up(other.clone(), 10);
            }
            assert!(planner.decide(me.member_id(), 500).is_none(), "not settled");
            if let Some(voters) = planner.decide(me.member_id(), 2_000) {
                assert_eq!(voters.len(), 3);
                deciders.push((me.member_id(), voters));
            }
        }
        assert_eq!(deciders.len(), 1, "one bootstrapper");
        let (who, voters) = &deciders[0];
        assert_eq!(voters.keys().next(), Some(who));
    }

    #[test]
    fn too_few_nodes_or_a_changing_view_waits() {
        let me = info(1);
        let mut planner = BootstrapPlanner::new(me.clone(), 3, 1_000, 0);
        planner.peer_up(info(2), 0);
        assert!(planner.decide(me.member_id(), 10_000).is_none());
        planner.peer_up(info(3), 9_500);
        let lowest = *planner.view().keys().next().expect("view");
        assert!(
            planner.decide(lowest, 10_000).is_none(),
            "changed 500 ms ago"
        );
        assert!(planner.decide(lowest, 10_600).is_some() || lowest != me.member_id());
        planner.peer_down(info(3).member_id(), 10_700, me.member_id());
        assert!(planner.decide(lowest, 20_000).is_none());
    }
}
