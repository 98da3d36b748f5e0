//! Conversions between mesh identities (`mesh-security`, which speaks
//! libp2p-identity 0.2) and the libp2p 0.57 types the swarm uses
//! (libp2p-identity 0.3). Both encode the same Ed25519 key, so the node id a
//! certificate names and the peer id Noise authenticates are the same key.

use libp2p::identity::{ed25519, Keypair};
use libp2p::PeerId;
use mesh_security::{NodeId, NodeIdentity};

use crate::NetError;

/// The swarm keypair of a node identity (same Ed25519 key).
pub fn keypair(identity: &NodeIdentity) -> Result<Keypair, NetError> {
    let old = identity
        .to_libp2p_keypair()
        .map_err(|e| NetError::Config(format!("identity is not usable by libp2p: {e}")))?;
    let mut bytes = old
        .try_into_ed25519()
        .map_err(|e| NetError::Config(format!("identity is not Ed25519: {e}")))?
        .to_bytes();
    let pair = ed25519::Keypair::try_from_bytes(&mut bytes)
        .map_err(|e| NetError::Config(format!("identity bytes refused by libp2p: {e}")))?;
    Ok(Keypair::from(pair))
}

/// The peer id of a node id.
pub fn peer_id(node: &NodeId) -> Result<PeerId, NetError> {
    let key = ed25519::PublicKey::try_from_bytes(node.as_bytes())
        .map_err(|e| NetError::Config(format!("node id is not an Ed25519 key: {e}")))?;
    Ok(PeerId::from_public_key(&key.into()))
}

/// The node id of a peer id, if the peer id inlines an Ed25519 key (every
/// mesh node's does; anything else cannot hold a mesh certificate).
pub fn node_id(peer: &PeerId) -> Option<NodeId> {
    let old = libp2p_identity::PeerId::from_bytes(&peer.to_bytes()).ok()?;
    NodeId::from_peer_id(&old).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn node_and_peer_ids_round_trip() {
        let identity = NodeIdentity::from_seed(&[7; 32]);
        let pair = keypair(&identity).unwrap();
        let peer = pair.public().to_peer_id();
        assert_eq!(peer_id(&identity.node_id()).unwrap(), peer);
        assert_eq!(node_id(&peer), Some(identity.node_id()));
        assert_eq!(node_id(&PeerId::random()), None);
    }
}
