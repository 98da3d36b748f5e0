//! Closes connections nothing uses, so a node's connection count stays near
//! its kept peers however large the mesh is.
//!
//! libp2p keeps a connection open while any stream on it is open, and
//! gossipsub holds a stream to every connected peer that shares a topic, so
//! a connection once made (a bootstrap dial, a Kademlia query, one request)
//! otherwise stays for good: at 100 in-process nodes every node ended up
//! connected to all 99 others. [`ConnectionUse`] remembers when each
//! connected peer was last used for requests; the driver closes the
//! connections of peers unused for [`crate::config::Timing::unused_connection_close`]
//! unless they are held: kept ([`crate::keep_alive`]) or protected by the
//! application ([`crate::NetHandle::protect`]). A later request dials again
//! ([`crate::awaiting`]). Gossipsub mesh peers are not held: each topic
//! draws its own mesh of 6 to 12 peers, and together they held most of a
//! 40-node mesh open; gossipsub grafts again among the connections that stay.
//!
//! Only the dialer closes, and only the connections it dialled: a node
//! never closes a connection its peer opened (the peer may keep it as one
//! of its own kept peers, and would dial again at once). So a node's own
//! dials are bounded by its kept peers and its current traffic, and its
//! inbound connections by what other nodes keep, about `target_peers` on
//! average in a random mesh. When both ends dialled (a lookup from each
//! side), each closes its own: deciding per peer instead ("every
//! connection dialled by this node") left such pairs open for good.

use std::collections::BTreeMap;

use libp2p::swarm::ConnectionId;
use libp2p::PeerId;

/// One connected peer's use.
#[derive(Debug, Clone)]
struct Use {
    last_used_ms: u64,
    /// The connections to the peer that this node dialled.
    dialled: Vec<ConnectionId>,
}

/// When each connected peer was last used, in ms, and which of its
/// connections this node dialled.
#[derive(Debug, Default)]
pub struct ConnectionUse {
    uses: BTreeMap<PeerId, Use>,
}

impl ConnectionUse {
    /// `connection` to `peer` was established at `now_ms`; `dialled` when
    /// this node opened it.
    pub fn on_connected(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        now_ms: u64,
        dialled: bool,
    ) {
        let used = self.uses.entry(peer).or_insert(Use {
            last_used_ms: now_ms,
            dialled: Vec::new(),
        });
        used.last_used_ms = now_ms;
        if dialled {
            used.dialled.push(connection);
        }
    }

    /// `peer` was used at `now_ms` (a request either way).
    pub fn on_used(&mut self, peer: PeerId, now_ms: u64) {
        if let Some(used) = self.uses.get_mut(&peer) {
            used.last_used_ms = now_ms;
        }
    }

    /// `connection` to `peer` closed; `last` when it was the peer's last.
    pub fn on_connection_closed(&mut self, peer: &PeerId, connection: ConnectionId, last: bool) {
        if last {
            self.uses.remove(peer);
        } else if let Some(used) = self.uses.get_mut(peer) {
            used.dialled.retain(|c| *c != connection);
        }
    }

    /// Peers tracked (connected now).
    pub fn len(&self) -> usize {
        self.uses.len()
    }

    /// True when no peer is connected.
    pub fn is_empty(&self) -> bool {
        self.uses.is_empty()
    }

    /// The connections this node dialled to peers unused for at least
    /// `unused_ms` that `held` does not hold, oldest use first; a peer's
    /// connections are forgotten here once returned.
    pub fn take_unused(
        &mut self,
        now_ms: u64,
        unused_ms: u64,
        held: impl Fn(&PeerId) -> bool,
    ) -> Vec<(PeerId, Vec<ConnectionId>)> {
        let mut idle: Vec<(u64, PeerId)> = self
            .uses
            .iter()
            .filter(|(peer, used)| {
                !used.dialled.is_empty()
                    && now_ms.saturating_sub(used.last_used_ms) >= unused_ms
                    && !held(peer)
            })
            .map(|(peer, used)| (used.last_used_ms, *peer))
            .collect();
        idle.sort_unstable();
        idle.into_iter()
            .filter_map(|(_, peer)| {
                let used = self.uses.get_mut(&peer)?;
                Some((peer, std::mem::take(&mut used.dialled)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    fn id(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    fn closed_peers(closed: Vec<(PeerId, Vec<ConnectionId>)>) -> Vec<PeerId> {
        closed.into_iter().map(|(peer, _)| peer).collect()
    }

    #[test]
    fn only_unused_peers_that_nothing_holds_are_closed_oldest_first() {
        let p = peers(4);
        let mut uses = ConnectionUse::default();
        uses.on_connected(p[0], id(0), 1_000, true);
        uses.on_connected(p[1], id(1), 0, true);
        uses.on_connected(p[2], id(2), 500, true);
        uses.on_connected(p[3], id(3), 9_000, true);
        let held: BTreeSet<PeerId> = [p[2]].into();
        let closed = uses.take_unused(10_000, 5_000, |peer| held.contains(peer));
        assert_eq!(closed, vec![(p[1], vec![id(1)]), (p[0], vec![id(0)])]);
        assert!(
            uses.take_unused(10_000, 5_000, |peer| held.contains(peer))
                .is_empty(),
            "each connection is handed out once"
        );
    }

    #[test]
    fn only_the_connections_this_node_dialled_are_closed() {
        let p = peers(3);
        let mut uses = ConnectionUse::default();
        uses.on_connected(p[0], id(0), 0, false);
        uses.on_connected(p[1], id(1), 0, true);
        uses.on_connected(p[1], id(2), 0, false);
        uses.on_connected(p[2], id(3), 0, true);
        let mut closed = uses.take_unused(60_000, 5_000, |_| false);
        closed.sort();
        let mut expected = vec![(p[1], vec![id(1)]), (p[2], vec![id(3)])];
        expected.sort();
        assert_eq!(closed, expected);
    }

    #[test]
    fn a_use_or_a_close_resets_a_peer() {
        let p = peers(2);
        let mut uses = ConnectionUse::default();
        uses.on_connected(p[0], id(0), 0, true);
        uses.on_connected(p[1], id(1), 0, true);
        uses.on_connected(p[1], id(2), 0, true);
        uses.on_used(p[0], 8_000);
        uses.on_connection_closed(&p[1], id(1), false);
        assert_eq!(
            uses.take_unused(5_000, 5_000, |_| false),
            vec![(p[1], vec![id(2)])]
        );
        uses.on_connection_closed(&p[1], id(2), true);
        assert_eq!(uses.len(), 1);
        assert!(uses.take_unused(10_000, 5_000, |_| false).is_empty());
        assert_eq!(
            closed_peers(uses.take_unused(13_000, 5_000, |_| false)),
            vec![p[0]]
        );
    }
}
