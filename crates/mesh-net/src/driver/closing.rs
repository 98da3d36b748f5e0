//! The driver's side of closing unused connections (see [`crate::trim`]):
//! it picks the connections to close, tells each admitted peer first with
//! a closing notice, closes once the notice is answered or
//! [`NOTICE_WAIT_MS`] passed, and answers the notices its peers send. It
//! also closes the connections it dialled back for other nodes' AutoNAT
//! probes, once they have done their work.

use std::collections::BTreeSet;

use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use libp2p::swarm::ConnectionId;
use libp2p::PeerId;

use super::{now_ms, Driver};
use crate::codec::{WireRequest, WireResponse};
use crate::ids;
use crate::keep_alive::KeepAlive;
use crate::trim::{CLOSING_PROTOCOL, NOTICE_WAIT_MS};

/// How long a reachability dial-back stays open after its probe was
/// answered, in ms: closed at once, the dialled node could still be
/// finishing its side of the handshake, and failed it.
const DIAL_BACK_GRACE_MS: u64 = 1_000;
/// Most dial-backs waiting for their grace to pass; more close at once.
const DIAL_BACKS_MAX: usize = 1_024;

/// Connections waiting for their peer to answer a closing notice, and
/// dial-backs waiting for their grace to pass.
#[derive(Debug, Default)]
pub(super) struct PendingCloses {
    by_request: std::collections::HashMap<OutboundRequestId, (u64, Vec<ConnectionId>)>,
    dial_backs: std::collections::VecDeque<(u64, PeerId)>,
}

impl Driver {
    /// Closes connections unused for the configured time that nothing
    /// holds, after a closing notice to each admitted peer.
    pub(super) fn close_unused_connections(&mut self, now: u64) {
        self.close_unanswered(now);
        self.close_dial_backs_due(now);
        let Some(unused_ms) = self.settings.unused_connection_close_ms else {
            return;
        };
        // Gossipsub mesh peers are not held: each topic draws its own mesh
        // (6 to 12 peers), and together they held most of a 40-node mesh
        // open. Gossipsub grafts again among the connections that stay.
        let (keep_alive, protected) = (&self.swarm.behaviour().keep_alive, &self.protected);
        let unused = self
            .uses
            .take_unused(now, unused_ms, |peer| is_held(keep_alive, protected, peer));
        for (peer, connections) in unused {
            tracing::debug!(%peer, "closing an unused connection");
            self.metrics.unused_connections_closed.inc();
            self.close_with_notice(peer, connections, now);
        }
    }

    /// This node dialled `peer` back for its reachability probe, and the
    /// dial-back worked: its connection closes after [`DIAL_BACK_GRACE_MS`].
    /// Left open, the dial-backs a bootstrap node makes for every node's
    /// probes kept it connected to all of them.
    pub(super) fn on_dial_back(&mut self, peer: PeerId) {
        if self.closes.dial_backs.len() >= DIAL_BACKS_MAX {
            return self.close_dial_back(peer);
        }
        self.closes.dial_backs.push_back((now_ms(), peer));
    }

    /// Closes the dial-backs whose grace has passed.
    fn close_dial_backs_due(&mut self, now: u64) {
        while let Some(&(answered_ms, peer)) = self.closes.dial_backs.front() {
            if now.saturating_sub(answered_ms) < DIAL_BACK_GRACE_MS {
                break;
            }
            self.closes.dial_backs.pop_front();
            self.close_dial_back(peer);
        }
    }

    /// Closes the newest connection this node dialled to `peer` (its
    /// dial-back), unless it is the only one to a peer this node holds.
    fn close_dial_back(&mut self, peer: PeerId) {
        let keep_alive = &self.swarm.behaviour().keep_alive;
        if is_held(keep_alive, &self.protected, &peer) && keep_alive.connection_count(&peer) < 2 {
            return;
        }
        if let Some(connection) = self.uses.take_newest_dial(&peer) {
            tracing::debug!(%peer, "closing a reachability dial-back");
            self.close_with_notice(peer, vec![connection], now_ms());
        }
    }

    /// Closes `connections` to `peer`; an admitted peer is told first.
    fn close_with_notice(&mut self, peer: PeerId, connections: Vec<ConnectionId>, now: u64) {
        if ids::node_id(&peer).is_some_and(|node| self.admission.may_process(&node)) {
            let notice = WireRequest {
                protocol: CLOSING_PROTOCOL.to_string(),
                payload: Vec::new(),
            };
            let id = self.swarm.behaviour_mut().rpc.send_request(&peer, notice);
            self.closes.by_request.insert(id, (now, connections));
        } else {
            self.close_all(connections);
        }
    }

    /// `request` was answered or failed: when it was a closing notice,
    /// closes its connections and returns true.
    pub(super) fn on_notice_settled(&mut self, request: &OutboundRequestId) -> bool {
        match self.closes.by_request.remove(request) {
            Some((_, connections)) => {
                self.close_all(connections);
                true
            }
            None => false,
        }
    }

    /// `peer` is closing its connections to this node as unused: remember
    /// it, so their close does not count the peer as gone, and answer.
    pub(super) fn on_closing_notice(
        &mut self,
        peer: PeerId,
        channel: ResponseChannel<WireResponse>,
    ) {
        self.uses.on_notice(&peer, now_ms());
        let _ = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_response(channel, WireResponse(Ok(Vec::new())));
    }

    /// Closes the connections whose notice went unanswered for [`NOTICE_WAIT_MS`].
    fn close_unanswered(&mut self, now: u64) {
        let overdue: Vec<OutboundRequestId> = self
            .closes
            .by_request
            .iter()
            .filter(|(_, (sent_ms, _))| now.saturating_sub(*sent_ms) >= NOTICE_WAIT_MS)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            self.on_notice_settled(&id);
        }
    }

    fn close_all(&mut self, connections: Vec<ConnectionId>) {
        for connection in connections {
            self.swarm.close_connection(connection);
        }
    }
}

/// Whether this node holds `peer`'s connections open: one of its kept
/// peers ([`crate::keep_alive`]) or protected by the application.
fn is_held(keep_alive: &KeepAlive, protected: &BTreeSet<PeerId>, peer: &PeerId) -> bool {
    keep_alive.is_kept(peer) || protected.contains(peer)
}
