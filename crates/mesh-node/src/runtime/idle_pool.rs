//! A bounded pool of idle connections (swarm streams, direct links) per peer,
//! taken for one exchange and put back after it.

use std::collections::HashMap;
use std::sync::Mutex;

use mesh_net::PeerId;

/// Most peers with idle connections kept (a membership is at most a few dozen).
pub const POOL_PEERS_MAX: usize = 256;

/// Idle connections by peer: at most `per_peer` each, at most
/// [`POOL_PEERS_MAX`] peers (past that the pool starts over).
pub struct IdlePool<T> {
    per_peer: usize,
    idle: Mutex<HashMap<PeerId, Vec<T>>>,
}

impl<T> IdlePool<T> {
    /// An empty pool keeping at most `per_peer` idle connections a peer.
    pub fn new(per_peer: usize) -> Self {
        Self {
            per_peer,
            idle: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, Vec<T>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently returned idle connection to `peer`.
    pub fn take(&self, peer: &PeerId) -> Option<T> {
        self.lock().get_mut(peer)?.pop()
    }

    /// Like [`Self::take`] while `peer` is `admitted`; otherwise drops every
    /// idle connection to it (its connection, or its certificate, is gone).
    pub fn take_admitted(&self, peer: &PeerId, admitted: bool) -> Option<T> {
        if !admitted {
            self.forget(peer);
            return None;
        }
        self.take(peer)
    }

    /// Returns a connection; dropped if `peer` already has `per_peer` idle.
    pub fn put(&self, peer: PeerId, connection: T) {
        let mut idle = self.lock();
        if idle.len() >= POOL_PEERS_MAX && !idle.contains_key(&peer) {
            idle.clear();
        }
        let connections = idle.entry(peer).or_default();
        if connections.len() < self.per_peer {
            connections.push(connection);
        }
    }

    /// Drops every idle connection to `peer`.
    pub fn forget(&self, peer: &PeerId) {
        self.lock().remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_bounded_per_peer_and_last_in_first_out() {
        let pool = IdlePool::new(2);
        let peer = PeerId::random();
        for n in 0..5 {
            pool.put(peer, n);
        }
        assert_eq!(pool.take(&peer), Some(1));
        assert_eq!(pool.take(&peer), Some(0));
        assert_eq!(pool.take(&peer), None);
        pool.put(peer, 7);
        pool.forget(&peer);
        assert_eq!(pool.take(&peer), None);
        pool.put(peer, 8);
        pool.put(peer, 9);
        assert_eq!(pool.take_admitted(&peer, true), Some(9));
        assert_eq!(pool.take_admitted(&peer, false), None);
        assert_eq!(
            pool.take(&peer),
            None,
            "a peer no longer admitted loses its idle connections"
        );
    }
}
