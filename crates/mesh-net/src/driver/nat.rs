//! The driver's side of NAT traversal: it records how each connection was
//! made, feeds AutoNAT its servers (bootstrap peers and relays), reserves on
//! relays while the node is private, closes a relayed connection once hole
//! punching gave a direct one, and offers circuit addresses for peers that
//! could not be dialled directly. The decisions themselves are in
//! [`crate::nat`].

use std::collections::BTreeSet;

use libp2p::core::transport::ListenerId;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::swarm::{ConnectionId, DialError};
use libp2p::{autonat, dcutr, relay, Multiaddr, PeerId, StreamProtocol};

use super::{now_ms, Driver};
use crate::ids;
use crate::nat::{circuit_addr, is_relayed, relays_to_reserve, ConnectionKind, Reachability};

/// How long a relay that refused or lost this node's reservation rests.
const RESERVATION_RETRY_MS: u64 = 10_000;

/// What AutoNAT's status means for this node.
fn reachability(status: &autonat::NatStatus) -> Reachability {
    match status {
        autonat::NatStatus::Public(_) => Reachability::Public,
        autonat::NatStatus::Private => Reachability::Private,
        autonat::NatStatus::Unknown => Reachability::Unknown,
    }
}

impl Driver {
    /// A connection is up: remember its kind. A bootstrap peer we dialled
    /// sees us from outside, so it becomes an AutoNAT server.
    pub(super) fn nat_on_connected(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        endpoint: &ConnectedPoint,
    ) {
        let kind = if endpoint.is_relayed() {
            ConnectionKind::Relayed
        } else if self.nat.punched_early.remove(&connection)
            || matches!(
                endpoint,
                ConnectedPoint::Dialer {
                    role_override: Endpoint::Listener,
                    ..
                }
            )
        {
            ConnectionKind::HolePunched
        } else {
            ConnectionKind::Direct
        };
        self.nat.connections.insert(connection, (peer, kind));
        self.metrics.nat.connection(kind, true);
        if kind == ConnectionKind::HolePunched {
            self.close_relayed(peer);
        }
        if let Some(addr) = self.bootstrap_dials.get(&connection).cloned() {
            if let Some(autonat) = self.swarm.behaviour_mut().autonat.as_mut() {
                autonat.add_server(peer, Some(addr));
            }
        }
    }

    /// A connection closed.
    pub(super) fn nat_on_closed(&mut self, connection: ConnectionId) {
        if let Some((_, kind)) = self.nat.connections.remove(&connection) {
            self.metrics.nat.connection(kind, false);
        }
    }

    /// `peer` told us its protocols: a peer that serves the relay hop
    /// protocol is a relay (and an AutoNAT server) at its first plain address.
    pub(super) fn nat_on_identified(&mut self, peer: PeerId, protocols: &[StreamProtocol]) {
        if !protocols.contains(&relay::HOP_PROTOCOL_NAME) {
            self.nat.relays.remove(&peer);
            return;
        }
        let Some(addr) = self
            .book
            .get(&peer)
            .iter()
            .find(|a| !is_relayed(a))
            .cloned()
        else {
            return;
        };
        if self.nat.relays.insert(peer, addr.clone()).is_none() {
            tracing::info!(%peer, %addr, "relay peer found");
            if let Some(autonat) = self.swarm.behaviour_mut().autonat.as_mut() {
                autonat.add_server(peer, Some(addr));
            }
        }
    }

    /// Hole punching gave a direct connection to `peer`: its relayed ones
    /// close, so round traffic leaves the relay.
    fn close_relayed(&mut self, peer: PeerId) {
        for connection in self.nat.relayed_connections(&peer) {
            tracing::debug!(%peer, "direct connection punched; closing the relayed one");
            let _ = self.swarm.close_connection(connection);
        }
    }

    /// Reserves on relays while this node is private, up to the bound;
    /// gives reservations up once it is public. Runs every tick.
    pub(super) fn manage_reservations(&mut self) {
        let reachability = self.nat.reachability();
        self.metrics.nat.set_reachability(reachability);
        if reachability == Reachability::Public && !self.nat.reservations.is_empty() {
            for (relay, listener) in std::mem::take(&mut self.nat.reservations) {
                tracing::info!(%relay, "publicly reachable; giving the relay reservation up");
                let _ = self.swarm.remove_listener(listener);
            }
            self.nat.accepted.clear();
            self.metrics.nat.reservations.set(0);
            return;
        }
        let now = now_ms();
        self.nat.retry_after_ms.retain(|_, at| *at > now);
        let admitted: BTreeSet<PeerId> = self
            .nat
            .relays
            .keys()
            .filter(|relay| !self.nat.retry_after_ms.contains_key(*relay))
            .filter(|relay| ids::node_id(relay).is_some_and(|n| self.admission.may_process(&n)))
            .copied()
            .collect();
        let reserved: BTreeSet<PeerId> = self.nat.reservations.keys().copied().collect();
        let relay_client = self.nat.relay_client;
        let wanted = relays_to_reserve(
            reachability,
            relay_client,
            self.nat.relays_max,
            &admitted,
            &reserved,
        );
        for relay in wanted {
            self.reserve(relay);
        }
    }

    fn reserve(&mut self, relay: PeerId) {
        let Some(addr) = self
            .nat
            .relays
            .get(&relay)
            .and_then(|addr| circuit_addr(addr, relay, None))
        else {
            return;
        };
        match self.swarm.listen_on(addr.clone()) {
            Ok(listener) => {
                tracing::info!(%relay, %addr, "private; reserving on a relay");
                self.nat.reservations.insert(relay, listener);
            }
            Err(e) => {
                tracing::warn!(%relay, %addr, "cannot listen through the relay: {e}");
                self.nat
                    .retry_after_ms
                    .insert(relay, now_ms().saturating_add(RESERVATION_RETRY_MS));
            }
        }
    }

    /// A listener closed; a relay listener means the reservation is gone.
    pub(super) fn nat_on_listener_closed(&mut self, listener: ListenerId, reason: &str) {
        let Some(relay) = self
            .nat
            .reservations
            .iter()
            .find(|(_, l)| **l == listener)
            .map(|(relay, _)| *relay)
        else {
            return;
        };
        tracing::info!(%relay, reason, "relay reservation ended");
        self.nat.reservations.remove(&relay);
        if self.nat.accepted.remove(&relay) {
            self.metrics.nat.reservations.dec();
        }
        self.nat
            .retry_after_ms
            .insert(relay, now_ms().saturating_add(RESERVATION_RETRY_MS));
    }

    /// The addresses to dial `peer` at, from those known (`known`): its own
    /// addresses first; circuit addresses (known ones, and ones through the
    /// relays this node is connected to) only once a dial has failed or
    /// when it has no other. A peer behind a NAT is reached through the
    /// relay it reserved on, and a reachable one is never relayed for nothing.
    pub(super) fn dial_addresses(&self, peer: &PeerId, known: Vec<Multiaddr>) -> Vec<Multiaddr> {
        let failed = self.peers.get(peer).is_some_and(|info| info.failures > 0);
        let (relayed, direct): (Vec<Multiaddr>, Vec<Multiaddr>) =
            known.into_iter().partition(is_relayed);
        if !failed && !direct.is_empty() {
            return direct;
        }
        let through_relays: Vec<Multiaddr> = if relayed.is_empty() {
            self.nat
                .relays
                .iter()
                .filter(|(relay, _)| *relay != peer && self.swarm.is_connected(relay))
                .filter_map(|(relay, addr)| circuit_addr(addr, *relay, Some(*peer)))
                .take(self.nat.relays_max.max(1))
                .collect()
        } else {
            Vec::new()
        };
        direct
            .into_iter()
            .chain(relayed)
            .chain(through_relays)
            .collect()
    }

    /// A dial of `peer` failed. A peer this node did not know yet (a
    /// Kademlia query found it but could not reach it: most likely it is
    /// behind a NAT) is remembered with the addresses tried and one failure,
    /// so the next dial also goes through the relays. Kademlia reports only
    /// peers it reached, so without this a private peer would stay unknown.
    pub(super) fn nat_on_dial_failure(&mut self, peer: Option<PeerId>, error: &DialError) {
        let Some(peer) = peer else {
            return;
        };
        let DialError::Transport(attempts) = error else {
            return;
        };
        let known = self.peers.get(&peer).is_some();
        if known || peer == self.local_peer_id() || self.swarm.is_connected(&peer) {
            return;
        }
        let now = now_ms();
        if self.peers.insert(peer, now).is_err() {
            return;
        }
        for (addr, _) in attempts.iter().take(crate::discovery::ADDRS_PER_PEER_MAX) {
            if !is_relayed(addr) {
                self.book.add(peer, addr.clone());
            }
        }
        let _ = self.peers.on_dialing(&peer, now);
        let _ = self.peers.on_disconnected(&peer, now);
        tracing::debug!(%peer, "unreachable peer remembered; the next dial tries the relays");
    }

    /// AutoNAT's verdict changed.
    pub(super) fn on_autonat_event(&mut self, event: autonat::Event) {
        match event {
            autonat::Event::StatusChanged { old, new } => {
                let found = reachability(&new);
                tracing::info!(old = ?old, new = ?new, "reachability changed");
                self.nat.reachability = Some(found);
                self.manage_reservations();
            }
            autonat::Event::InboundProbe(autonat::InboundProbeEvent::Response { peer, .. }) => {
                self.on_dial_back(peer);
            }
            _ => {}
        }
    }

    /// A hole-punching attempt ended.
    pub(super) fn on_dcutr_event(&mut self, event: dcutr::Event) {
        let peer = event.remote_peer_id;
        match event.result {
            Ok(connection) => {
                self.metrics.nat.hole_punch(true);
                tracing::info!(%peer, "hole punched: direct connection");
                match self.nat.connections.get_mut(&connection) {
                    Some((_, kind)) if *kind == ConnectionKind::Direct => {
                        *kind = ConnectionKind::HolePunched;
                        self.metrics.nat.reclassify_as_hole_punched();
                    }
                    Some(_) => {}
                    None => {
                        self.nat.punched_early.insert(connection);
                    }
                }
                self.close_relayed(peer);
            }
            Err(e) => {
                self.metrics.nat.hole_punch(false);
                tracing::info!(%peer, "hole punching failed; staying on the relay: {e}");
            }
        }
    }

    /// This node's reservations and circuits as a relay client.
    pub(super) fn on_relay_client_event(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            } => {
                if !renewal && self.nat.accepted.insert(relay_peer_id) {
                    self.metrics.nat.reservations.inc();
                }
                tracing::info!(relay = %relay_peer_id, renewal, "relay reservation accepted");
            }
            relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                tracing::debug!(relay = %relay_peer_id, "relayed connection dialled");
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                tracing::debug!(peer = %src_peer_id, "relayed connection accepted");
            }
        }
    }

    /// What this node serves as a relay.
    #[allow(deprecated)] // libp2p marks some failure events deprecated; they still come.
    pub(super) fn on_relay_server_event(&mut self, event: relay::Event) {
        let served = &self.metrics.nat;
        match event {
            relay::Event::ReservationReqAccepted {
                src_peer_id,
                renewed,
            } => {
                if !renewed {
                    served.served_reservations.inc();
                }
                tracing::info!(peer = %src_peer_id, renewed, "relay: reservation accepted");
            }
            relay::Event::ReservationClosed { .. } | relay::Event::ReservationTimedOut { .. } => {
                served.served_reservations.dec();
            }
            relay::Event::ReservationReqDenied {
                src_peer_id,
                status,
            } => {
                tracing::info!(peer = %src_peer_id, ?status, "relay: reservation denied");
            }
            relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => {
                served.served_circuit("accepted");
                tracing::info!(src = %src_peer_id, dst = %dst_peer_id, "relay: circuit opened");
            }
            relay::Event::CircuitReqDenied {
                src_peer_id,
                dst_peer_id,
                status,
            } => {
                served.served_circuit("denied");
                tracing::info!(src = %src_peer_id, dst = %dst_peer_id, ?status, "relay: circuit denied");
            }
            relay::Event::CircuitClosed {
                src_peer_id,
                dst_peer_id,
                error,
            } => {
                served.served_circuit("closed");
                tracing::debug!(src = %src_peer_id, dst = %dst_peer_id, ?error, "relay: circuit closed");
            }
            _ => {}
        }
    }
}
