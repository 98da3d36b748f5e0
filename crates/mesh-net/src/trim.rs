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
//!
//! A closed connection must still say whether its peer is gone: the
//! application counts a peer whose last connection dropped as crashed at
//! once, and one closed as unused as alive. The two look the same on the
//! wire (a crashed process's sockets close cleanly too), so the closer
//! says so first: it sends a closing notice ([`CLOSING_PROTOCOL`]) and
//! closes once it is answered. [`ConnectionUse::on_connection_closed`]
//! then tells a peer's last close apart ([`PeerClose`]): closed by this
//! node as unused, announced by the peer lately, or neither, and then the
//! peer is gone.
//!
//! ```text
//!   closer: take_unused ─► notice request ─► answered (or NOTICE_WAIT_MS) ─► close
//!   peer:   notice ─► on_notice(now) ─► last connection closes within NOTICE_VALID_MS ─► Unused
//!           last connection closes without a notice ─────────────────────────────────► Gone
//! ```

use std::collections::{BTreeMap, BTreeSet};

use libp2p::swarm::ConnectionId;
use libp2p::PeerId;

/// The request protocol of the closing notice: the sender is about to
/// close its connections to the receiver as unused. The driver answers it
/// itself; it is never handed to the application and is not a use.
pub const CLOSING_PROTOCOL: &str = "net/closing-unused";
/// How long the closer waits for the notice to be answered before it
/// closes anyway, in ms.
pub const NOTICE_WAIT_MS: u64 = 5_000;
/// How long after a notice the peer's last connection may close and still
/// count as closed as unused, in ms: the notice wait and a margin.
pub const NOTICE_VALID_MS: u64 = 2 * NOTICE_WAIT_MS;

/// Why a peer's last connection closed, as far as this node can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerClose {
    /// Closed as unused, by this node or by the peer after its notice:
    /// the peer is most likely up and is dialled again on demand.
    Unused,
    /// Closed without either end closing it as unused: the peer crashed,
    /// left, or the network between the two failed.
    Gone,
}

/// One connected peer's use.
#[derive(Debug, Clone)]
struct Use {
    last_used_ms: u64,
    /// The connections to the peer that this node dialled.
    dialled: Vec<ConnectionId>,
    /// When the peer last said it is closing its connections as unused.
    notice_ms: Option<u64>,
}

/// When each connected peer was last used, in ms, which of its
/// connections this node dialled, and which it is closing as unused.
#[derive(Debug, Default)]
pub struct ConnectionUse {
    uses: BTreeMap<PeerId, Use>,
    /// Connections handed out by [`Self::take_unused`] that have not
    /// closed yet.
    closing: BTreeSet<ConnectionId>,
}

impl ConnectionUse {
    /// `connection` to `peer` was established at `now_ms`; `dialled` when
    /// this node opened it. Only a peer's first connection counts as a
    /// use: a further one (an AutoNAT dial-back, a simultaneous dial)
    /// carries nothing yet, and counting it kept a bootstrap node, which
    /// dials back every node's reachability probes, connected to them all.
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
            notice_ms: None,
        });
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

    /// `peer` sent a closing notice at `now_ms` (see [`CLOSING_PROTOCOL`]).
    pub fn on_notice(&mut self, peer: &PeerId, now_ms: u64) {
        if let Some(used) = self.uses.get_mut(peer) {
            used.notice_ms = Some(now_ms);
        }
    }

    /// `connection` to `peer` closed at `now_ms`; `last` when it was the
    /// peer's last. For the last, says why it most likely closed.
    pub fn on_connection_closed(
        &mut self,
        peer: &PeerId,
        connection: ConnectionId,
        last: bool,
        now_ms: u64,
    ) -> Option<PeerClose> {
        let closed_here = self.closing.remove(&connection);
        if !last {
            if let Some(used) = self.uses.get_mut(peer) {
                used.dialled.retain(|c| *c != connection);
            }
            return None;
        }
        let noticed = self
            .uses
            .remove(peer)
            .and_then(|used| used.notice_ms)
            .is_some_and(|at| now_ms.saturating_sub(at) <= NOTICE_VALID_MS);
        Some(if closed_here || noticed {
            PeerClose::Unused
        } else {
            PeerClose::Gone
        })
    }

    /// The newest connection this node dialled to `peer`, handed out to be
    /// closed (its close counts as [`PeerClose::Unused`]): an AutoNAT
    /// dial-back, which has done its work once the probe is answered.
    pub fn take_newest_dial(&mut self, peer: &PeerId) -> Option<ConnectionId> {
        let connection = self.uses.get_mut(peer)?.dialled.pop()?;
        self.closing.insert(connection);
        Some(connection)
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
    /// connections are handed out once, and their close counts as
    /// [`PeerClose::Unused`].
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
        let unused: Vec<(PeerId, Vec<ConnectionId>)> = idle
            .into_iter()
            .filter_map(|(_, peer)| {
                let used = self.uses.get_mut(&peer)?;
                Some((peer, std::mem::take(&mut used.dialled)))
            })
            .collect();
        self.closing
            .extend(unused.iter().flat_map(|(_, ids)| ids.iter().copied()));
        unused
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
        assert_eq!(uses.on_connection_closed(&p[1], id(1), false, 0), None);
        assert_eq!(
            uses.take_unused(5_000, 5_000, |_| false),
            vec![(p[1], vec![id(2)])]
        );
        assert_eq!(
            uses.on_connection_closed(&p[1], id(2), true, 5_000),
            Some(PeerClose::Unused),
            "closed by this node as unused"
        );
        assert_eq!(uses.len(), 1);
        assert!(uses.take_unused(10_000, 5_000, |_| false).is_empty());
        assert_eq!(
            closed_peers(uses.take_unused(13_000, 5_000, |_| false)),
            vec![p[0]]
        );
    }

    #[test]
    fn a_further_connection_to_a_connected_peer_is_not_a_use() {
        let p = peers(1);
        let mut uses = ConnectionUse::default();
        uses.on_connected(p[0], id(0), 0, false);
        uses.on_connected(p[0], id(1), 29_000, true);
        assert_eq!(
            uses.take_unused(30_000, 30_000, |_| false),
            vec![(p[0], vec![id(1)])],
            "the dial-back closes once the peer has been unused long enough"
        );
    }

    #[test]
    fn a_last_close_without_a_notice_or_a_trim_means_the_peer_is_gone() {
        let p = peers(4);
        let mut uses = ConnectionUse::default();
        for (n, peer) in p.iter().enumerate() {
            uses.on_connected(*peer, id(n), 0, n % 2 == 0);
        }
        assert_eq!(
            uses.on_connection_closed(&p[0], id(0), true, 1_000),
            Some(PeerClose::Gone),
            "its own dial closed under it"
        );
        assert_eq!(
            uses.on_connection_closed(&p[1], id(1), true, 1_000),
            Some(PeerClose::Gone),
            "the peer's dial closed without a notice"
        );
        uses.on_notice(&p[2], 1_000);
        uses.on_notice(&p[3], 1_000);
        assert_eq!(
            uses.on_connection_closed(&p[2], id(2), true, 1_000 + NOTICE_VALID_MS),
            Some(PeerClose::Unused),
            "closed by the peer after its notice"
        );
        assert_eq!(
            uses.on_connection_closed(&p[3], id(3), true, 1_001 + NOTICE_VALID_MS),
            Some(PeerClose::Gone),
            "a notice too old to explain the close"
        );
    }
}
