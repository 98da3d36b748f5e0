//! The driver's lookups of wanted peers it cannot reach (see [`crate::lookup`]).

use libp2p::kad::{GetClosestPeersError, GetClosestPeersOk};
use libp2p::PeerId;

use super::{now_ms, Driver};
use crate::discovery::newest_addrs;

impl Driver {
    /// Starts a Kademlia lookup of `peer` unless it is this node, already
    /// connected (admission is then under way or done), or was looked up
    /// less than [`crate::lookup::LOOKUP_INTERVAL_MS`] ago; whether one started.
    pub(super) fn find_peer(&mut self, peer: PeerId) -> bool {
        if peer == self.local_peer_id() || self.swarm.is_connected(&peer) {
            return false;
        }
        if !self.lookups.start(&peer, now_ms()) {
            return false;
        }
        tracing::debug!(%peer, "looking up a wanted peer that is not connected");
        self.metrics.peer_lookups.inc();
        self.swarm.behaviour_mut().kad.get_closest_peers(peer);
        true
    }

    /// A lookup ended: every peer it met is remembered where it was found,
    /// and the wanted one is dialled there unless the lookup connected it.
    pub(super) fn on_lookup_done(
        &mut self,
        result: Result<GetClosestPeersOk, GetClosestPeersError>,
    ) {
        let (key, found) = match result {
            Ok(GetClosestPeersOk { key, peers }) => (key, peers),
            Err(GetClosestPeersError::Timeout { key, peers }) => (key, peers),
        };
        for info in found {
            self.learn(info.peer_id, newest_addrs(info.addrs));
        }
        let Ok(wanted) = PeerId::from_bytes(&key) else {
            return;
        };
        if self.swarm.is_connected(&wanted) || self.bans.is_banned(&wanted, now_ms()) {
            return;
        }
        let addrs = self.dial_addresses(&wanted, self.book.get(&wanted).to_vec());
        if addrs.is_empty() {
            tracing::debug!(peer = %wanted, "lookup found no address for the wanted peer");
            self.fail_awaiting(&wanted);
            return;
        }
        if let Err(e) = self.dial_peer(wanted, addrs) {
            tracing::debug!(peer = %wanted, "dial after lookup not started: {e}");
        }
    }
}
