//! The address book: the addresses learned for each peer (bootstrap, identify,
//! Kademlia, mDNS), bounded per peer and in total, so discovery input from
//! the network cannot grow memory without bound. Which peers to dial, and
//! when, is [`crate::peers::PeerTable`]'s decision; this only remembers where.

use std::collections::BTreeMap;

use libp2p::{Multiaddr, PeerId};

/// Most addresses kept per peer (the newest win).
pub const ADDRS_PER_PEER_MAX: usize = 8;

/// The last [`ADDRS_PER_PEER_MAX`] of `addrs`. Kademlia appends a peer's
/// newly learned addresses to the end of its list and keeps the old ones,
/// so after a peer restarted at a new address (a replaced container) the
/// first entries are the stale ones: taking those made a replaced task
/// unreachable for minutes, or for good.
pub fn newest_addrs(addrs: Vec<Multiaddr>) -> impl Iterator<Item = Multiaddr> {
    let stale = addrs.len().saturating_sub(ADDRS_PER_PEER_MAX);
    addrs.into_iter().skip(stale)
}

/// Addresses per peer, at most `peers_max` peers.
#[derive(Debug, Clone)]
pub struct AddressBook {
    peers_max: usize,
    addrs: BTreeMap<PeerId, Vec<Multiaddr>>,
}

impl AddressBook {
    /// An empty book for at most `peers_max` peers.
    pub fn new(peers_max: usize) -> Self {
        Self {
            peers_max: peers_max.max(1),
            addrs: BTreeMap::new(),
        }
    }

    /// Records that `peer` can be reached at `addr` (moved to the front if
    /// known). Returns false when the book is full of other peers.
    pub fn add(&mut self, peer: PeerId, addr: Multiaddr) -> bool {
        if !self.addrs.contains_key(&peer) && self.addrs.len() >= self.peers_max {
            return false;
        }
        let list = self.addrs.entry(peer).or_default();
        list.retain(|known| known != &addr);
        list.insert(0, addr);
        list.truncate(ADDRS_PER_PEER_MAX);
        true
    }

    /// Forgets one address of `peer` (expired mDNS record, failed dial).
    pub fn remove(&mut self, peer: &PeerId, addr: &Multiaddr) {
        if let Some(list) = self.addrs.get_mut(peer) {
            list.retain(|known| known != addr);
            if list.is_empty() {
                self.addrs.remove(peer);
            }
        }
    }

    /// Forgets `peer` entirely.
    pub fn forget(&mut self, peer: &PeerId) {
        self.addrs.remove(peer);
    }

    /// The addresses of `peer`, newest first.
    pub fn get(&self, peer: &PeerId) -> &[Multiaddr] {
        self.addrs.get(peer).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Number of peers with addresses.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether no address is known.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn keeps_the_newest_addresses_within_bounds() {
        let mut book = AddressBook::new(1);
        let peer = PeerId::random();
        for port in 0..20 {
            assert!(book.add(peer, addr(port)));
        }
        assert_eq!(book.get(&peer).len(), ADDRS_PER_PEER_MAX);
        assert_eq!(book.get(&peer)[0], addr(19));
        assert!(!book.add(PeerId::random(), addr(1)), "full of other peers");
        book.add(peer, addr(5));
        assert_eq!(book.get(&peer)[0], addr(5));
        assert_eq!(book.get(&peer).len(), ADDRS_PER_PEER_MAX);
        book.remove(&peer, &addr(5));
        assert!(!book.get(&peer).contains(&addr(5)));
        book.forget(&peer);
        assert!(book.is_empty());
    }

    #[test]
    fn the_newest_addresses_are_the_ones_kept_from_a_long_list() {
        let stale_then_new: Vec<Multiaddr> = (0..12).map(addr).collect();
        let kept: Vec<Multiaddr> = newest_addrs(stale_then_new).collect();
        assert_eq!(kept, (4..12).map(addr).collect::<Vec<_>>());
        assert_eq!(newest_addrs(vec![addr(1)]).count(), 1);
    }
}
