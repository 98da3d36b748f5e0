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
//! unless they are held: kept ([`crate::keep_alive`]), in this node's
//! gossipsub mesh, or protected by the application ([`crate::NetHandle::protect`]).
//! A later request dials again.
//!
//! Only the dialer closes: a node never closes a connection its peer opened
//! (the peer may keep it as one of its own kept peers, and would dial again
//! at once). So a node's own dials are bounded by its kept peers and its
//! current traffic, and its inbound connections by what other nodes keep,
//! about `target_peers` on average in a random mesh.

use std::collections::BTreeMap;

use libp2p::PeerId;

/// One connected peer's use.
#[derive(Debug, Clone, Copy)]
struct Use {
    last_used_ms: u64,
    /// Every connection to the peer was dialled by this node.
    dialled_only: bool,
}

/// When each connected peer was last used, in ms.
#[derive(Debug, Default)]
pub struct ConnectionUse {
    uses: BTreeMap<PeerId, Use>,
}

impl ConnectionUse {
    /// A connection to `peer` was established at `now_ms`; `dialled` when
    /// this node opened it.
    pub fn on_connected(&mut self, peer: PeerId, now_ms: u64, dialled: bool) {
        let dialled_only = self.uses.get(&peer).is_none_or(|u| u.dialled_only) && dialled;
        self.uses.insert(
            peer,
            Use {
                last_used_ms: now_ms,
                dialled_only,
            },
        );
    }

    /// `peer` was used at `now_ms` (a request either way).
    pub fn on_used(&mut self, peer: PeerId, now_ms: u64) {
        if let Some(used) = self.uses.get_mut(&peer) {
            used.last_used_ms = now_ms;
        }
    }

    /// `peer`'s last connection closed.
    pub fn on_closed(&mut self, peer: &PeerId) {
        self.uses.remove(peer);
    }

    /// Peers tracked (connected now).
    pub fn len(&self) -> usize {
        self.uses.len()
    }

    /// True when no peer is connected.
    pub fn is_empty(&self) -> bool {
        self.uses.is_empty()
    }

    /// Peers this node dialled that have been unused for at least
    /// `unused_ms` and that `held` does not hold, oldest use first.
    pub fn unused(
        &self,
        now_ms: u64,
        unused_ms: u64,
        held: impl Fn(&PeerId) -> bool,
    ) -> Vec<PeerId> {
        let mut idle: Vec<(u64, PeerId)> = self
            .uses
            .iter()
            .filter(|(peer, used)| {
                used.dialled_only
                    && now_ms.saturating_sub(used.last_used_ms) >= unused_ms
                    && !held(peer)
            })
            .map(|(peer, used)| (used.last_used_ms, *peer))
            .collect();
        idle.sort_unstable();
        idle.into_iter().map(|(_, peer)| peer).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn only_unused_peers_that_nothing_holds_are_closed_oldest_first() {
        let p = peers(4);
        let mut uses = ConnectionUse::default();
        uses.on_connected(p[0], 1_000, true);
        uses.on_connected(p[1], 0, true);
        uses.on_connected(p[2], 500, true);
        uses.on_connected(p[3], 9_000, true);
        let held: BTreeSet<PeerId> = [p[2]].into();
        let closed = uses.unused(10_000, 5_000, |peer| held.contains(peer));
        assert_eq!(closed, vec![p[1], p[0]]);
    }

    #[test]
    fn a_peer_that_dialled_this_node_is_never_closed_by_it() {
        let p = peers(3);
        let mut uses = ConnectionUse::default();
        uses.on_connected(p[0], 0, false);
        uses.on_connected(p[1], 0, true);
        uses.on_connected(p[1], 0, false);
        uses.on_connected(p[2], 0, true);
        assert_eq!(uses.unused(60_000, 5_000, |_| false), vec![p[2]]);
    }

    #[test]
    fn a_use_or_a_close_resets_a_peer() {
        let p = peers(2);
        let mut uses = ConnectionUse::default();
        uses.on_connected(p[0], 0, true);
        uses.on_connected(p[1], 0, true);
        uses.on_used(p[0], 8_000);
        uses.on_closed(&p[1]);
        assert_eq!(uses.len(), 1);
        assert!(uses.unused(10_000, 5_000, |_| false).is_empty());
        assert_eq!(uses.unused(13_000, 5_000, |_| false), vec![p[0]]);
    }
}
