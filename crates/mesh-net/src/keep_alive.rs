//! Keeps connections to chosen peers open. libp2p closes a connection once no
//! protocol needs it for the idle timeout; ping and Kademlia do not count, and
//! gossipsub only keeps its mesh peers. This behaviour holds every connection
//! of a peer open from [`KeepAlive::set`]`(peer, true)` until it is released
//! or its last connection closes. The driver keeps a bounded number of
//! admitted peers this way; other connections (Kademlia queries, peers over
//! the bound, peers never admitted) close when idle.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::Endpoint;
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, NotifyHandler, SubstreamProtocol, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Tracks which peers' connections to hold open.
#[derive(Debug, Default)]
pub struct KeepAlive {
    kept: BTreeSet<PeerId>,
    connections: BTreeMap<PeerId, Vec<ConnectionId>>,
    pending: VecDeque<ToSwarm<Infallible, bool>>,
}

impl KeepAlive {
    /// Holds (`true`) or releases (`false`) every connection to `peer`,
    /// including ones opened later.
    pub fn set(&mut self, peer: PeerId, keep: bool) {
        let changed = if keep {
            self.kept.insert(peer)
        } else {
            self.kept.remove(&peer)
        };
        if !changed {
            return;
        }
        for connection in self.connections.get(&peer).into_iter().flatten() {
            self.pending.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(*connection),
                event: keep,
            });
        }
    }

    /// Whether `peer`'s connections are held open.
    pub fn is_kept(&self, peer: &PeerId) -> bool {
        self.kept.contains(peer)
    }

    /// How many connections to `peer` are established now.
    pub fn connection_count(&self, peer: &PeerId) -> usize {
        self.connections.get(peer).map_or(0, Vec::len)
    }

    /// How many peers are held.
    pub fn kept_len(&self) -> usize {
        self.kept.len()
    }

    fn handler(&mut self, connection: ConnectionId, peer: PeerId) -> Handler {
        self.connections.entry(peer).or_default().push(connection);
        Handler {
            keep: self.kept.contains(&peer),
        }
    }
}

impl NetworkBehaviour for KeepAlive {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(connection, peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(connection, peer))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(closed) = event {
            if let Some(list) = self.connections.get_mut(&closed.peer_id) {
                list.retain(|c| *c != closed.connection_id);
                if list.is_empty() {
                    self.connections.remove(&closed.peer_id);
                    self.kept.remove(&closed.peer_id);
                }
            }
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.pending.pop_front() {
            Some(action) => Poll::Ready(action),
            None => Poll::Pending,
        }
    }
}

/// The per-connection half: no protocol, only the keep-alive flag.
#[derive(Debug)]
pub struct Handler {
    keep: bool,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = bool;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<DeniedUpgrade> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep
    }

    fn on_behaviour_event(&mut self, keep: bool) {
        self.keep = keep;
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, (), Infallible>> {
        Poll::Pending
    }

    fn on_connection_event(&mut self, _: ConnectionEvent<DeniedUpgrade, DeniedUpgrade>) {}
}
