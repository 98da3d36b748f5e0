//! Keeps connections to chosen peers open. libp2p closes a connection once no
//! protocol needs it for the idle timeout; ping and Kademlia do not count, and
//! gossipsub only keeps its mesh peers. This behaviour holds every connection
//! of a peer open from [`KeepAlive::set`]`(peer, true)` until it is released
//! or its last connection closes. The driver keeps a bounded number of
//! admitted peers this way; other connections (Kademlia queries, peers over
//! the bound, peers never admitted) close when idle.
//!
//! Which admitted peers a node holds is decided by [`keep_rank`]: the ones
//! whose hash with this node's id ranks lowest (rendezvous hashing). Each
//! node ranks the others differently, so every node is held by about
//! `kept_peers_max` others whatever the mesh's size; holding the first
//! peers admitted instead made the bootstrap node (every node's first
//! peer) held by every node in the mesh.

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

/// Where `peer` ranks among the peers node `me` may hold (lower is held
/// first): a BLAKE3 hash of the seed and both peer ids, so the choice is
/// the same on every run and differs from node to node.
pub fn keep_rank(seed: u64, me: &PeerId, peer: &PeerId) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"agent-mesh/keep/1\0");
    hasher.update(&seed.to_le_bytes());
    hasher.update(&me.to_bytes());
    hasher.update(&peer.to_bytes());
    let mut rank = [0u8; 8];
    rank.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    u64::from_le_bytes(rank)
}

/// `peers` in the order node `me` holds them: lowest [`keep_rank`] first.
/// The driver holds the first `kept_peers_max` admitted peers of this
/// order; the application ranks the same way to know which those are.
pub fn ranked_peers<'a>(
    seed: u64,
    me: &PeerId,
    peers: impl Iterator<Item = &'a PeerId>,
) -> Vec<PeerId> {
    let mut ranked: Vec<(u64, PeerId)> = peers
        .map(|peer| (keep_rank(seed, me, peer), *peer))
        .collect();
    ranked.sort_unstable();
    ranked.into_iter().map(|(_, peer)| peer).collect()
}

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

    /// The peers held.
    pub fn kept(&self) -> impl Iterator<Item = &PeerId> {
        self.kept.iter()
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Peer ids of seeded keys, so the test gives the same ranks each run.
    fn peers(n: u8) -> Vec<PeerId> {
        (0..n)
            .map(|i| {
                let key = mesh_security::NodeIdentity::from_seed(&[i; 32]).node_id();
                crate::ids::peer_id(&key).unwrap()
            })
            .collect()
    }

    #[test]
    fn every_node_is_held_by_a_few_others_not_by_everyone() {
        const KEPT: usize = 8;
        let all = peers(200);
        let mut held_by = BTreeMap::<PeerId, usize>::new();
        for me in &all {
            let others = all.iter().filter(|p| *p != me);
            for peer in ranked_peers(7, me, others).into_iter().take(KEPT) {
                *held_by.entry(peer).or_default() += 1;
            }
        }
        let most = held_by.values().copied().max().unwrap();
        assert!(most <= 3 * KEPT, "one node held by {most} of 200");
        assert!(
            held_by.len() > all.len() / 2,
            "the holds spread over the mesh"
        );
        let other_seed = keep_rank(8, &all[0], &all[1]);
        assert_ne!(keep_rank(7, &all[0], &all[1]), other_seed);
        assert_ne!(
            keep_rank(7, &all[0], &all[1]),
            keep_rank(7, &all[1], &all[0])
        );
    }
}
