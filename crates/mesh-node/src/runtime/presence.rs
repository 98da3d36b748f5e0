//! Which nodes are up, without a connection to each of them.
//!
//! A node keeps only a bounded set of connections and dials the others on
//! demand, so "connected" no longer means "alive": the round planner would
//! see a handful of participants and a group aggregator would count every
//! member it is not connected to as gone. Every node's signed announcement
//! ([`super::announce`], at least every [`ANNOUNCE_EVERY_MS`]) is its
//! heartbeat: a node heard within [`PRESENCE_WINDOW_MS`] counts as alive,
//! with the roles the committed membership gives it.
//!
//! ```text
//!   announcement from N (signed, verified by the gossip gate) ─► Presence::heard(N, now)
//!   round view: alive = admitted peers (certificate roles)
//!                     ∪ heard within the window and a member (roles from the state)
//!   peer down, gone: forgotten at once (its last connection closed
//!              without either end closing it as unused, `mesh_net::trim`)
//!   peer down, closed as unused: alive while it is heard
//! ```

use std::collections::HashMap;

use mesh_consensus::NodeId;

use super::announce::{ANNOUNCE_EVERY_MS, DECLARED_MAX};

/// How long a node counts as alive after its last announcement: three
/// announcement periods and a little, so one or two lost announcements do
/// not make it look gone.
pub const PRESENCE_WINDOW_MS: u64 = 3 * ANNOUNCE_EVERY_MS + ANNOUNCE_EVERY_MS / 2;

/// When each node was last heard, bounded by [`DECLARED_MAX`] nodes.
#[derive(Debug, Default)]
pub struct Presence {
    heard_ms: HashMap<NodeId, u64>,
}

impl Presence {
    /// `node` announced itself at `now_ms`. Past the bound, nodes not heard
    /// within the window make room; a new node is dropped while all are fresh.
    pub fn heard(&mut self, node: NodeId, now_ms: u64) {
        if self.heard_ms.len() >= DECLARED_MAX && !self.heard_ms.contains_key(&node) {
            self.heard_ms
                .retain(|_, at| now_ms.saturating_sub(*at) < PRESENCE_WINDOW_MS);
            if self.heard_ms.len() >= DECLARED_MAX {
                return;
            }
        }
        self.heard_ms.insert(node, now_ms);
    }

    /// `node` is known to be gone (its last connection closed, and not as
    /// unused).
    pub fn forget(&mut self, node: &NodeId) {
        self.heard_ms.remove(node);
    }

    /// The nodes heard within [`PRESENCE_WINDOW_MS`] before `now_ms`.
    pub fn recent(&self, now_ms: u64) -> impl Iterator<Item = &NodeId> {
        self.heard_ms
            .iter()
            .filter(move |(_, at)| now_ms.saturating_sub(**at) < PRESENCE_WINDOW_MS)
            .map(|(node, _)| node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeId {
        NodeId(name.into())
    }

    #[test]
    fn a_node_is_alive_for_the_window_after_it_was_last_heard() {
        let mut presence = Presence::default();
        presence.heard(node("a"), 1_000);
        presence.heard(node("b"), 1_000);
        presence.heard(node("a"), 1_000 + ANNOUNCE_EVERY_MS);
        let at = 1_000 + PRESENCE_WINDOW_MS;
        let mut alive: Vec<_> = presence.recent(at).cloned().collect();
        alive.sort();
        assert_eq!(alive, vec![node("a")], "b was last heard a window ago");
        presence.forget(&node("a"));
        assert_eq!(presence.recent(at).count(), 0);
    }

    #[test]
    fn past_the_bound_stale_nodes_make_room_and_fresh_ones_stay() {
        let mut presence = Presence::default();
        for i in 0..DECLARED_MAX {
            presence.heard(node(&i.to_string()), 0);
        }
        presence.heard(node("late"), 1);
        assert!(
            !presence.recent(1).any(|n| *n == node("late")),
            "all fresh: dropped"
        );
        presence.heard(node("later"), PRESENCE_WINDOW_MS);
        let alive: Vec<_> = presence.recent(PRESENCE_WINDOW_MS).collect();
        assert_eq!(alive, vec![&node("later")]);
    }
}
