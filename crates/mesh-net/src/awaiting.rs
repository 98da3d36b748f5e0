//! Requests to peers that are not admitted yet, held while the driver
//! connects to them on demand.
//!
//! A node keeps only `target_peers` connections (and closes unused ones, see
//! [`crate::trim`]), so the peer a round message or a state fetch is for is
//! often not connected. Such a request is held here, the driver dials the
//! peer (or looks it up when no address is known), and the held requests go
//! out once the peer is admitted; they fail when admission is refused or the
//! deadline passes first.
//!
//! ```text
//!   request to an unadmitted peer ─► Awaiting::hold(peer, request, deadline)
//!        first for this peer? ─► dial the known addresses | Kademlia lookup
//!   peer admitted  ─► Awaiting::take(peer)  ─► sent as any request
//!   peer refused   ─► Awaiting::take(peer)  ─► each fails: not admitted
//!   tick           ─► Awaiting::expire(now) ─► each fails: not admitted
//! ```
//!
//! Bounded per peer and in total; a request past either bound is refused at
//! once, so a burst to unreachable peers cannot hold memory.

use std::collections::HashMap;
use std::hash::Hash;

/// Most requests held for one peer.
pub const AWAITING_PER_PEER_MAX: usize = 64;
/// Most requests held for all peers together.
pub const AWAITING_MAX: usize = 1024;

/// Requests held until their peer is admitted, keyed by peer.
#[derive(Debug)]
pub struct Awaiting<K, V> {
    held: HashMap<K, Vec<(u64, V)>>,
    len: usize,
    per_peer_max: usize,
    total_max: usize,
}

impl<K, V> Default for Awaiting<K, V> {
    fn default() -> Self {
        Self::new(AWAITING_PER_PEER_MAX, AWAITING_MAX)
    }
}

impl<K, V> Awaiting<K, V> {
    /// A table holding at most `per_peer_max` requests per peer and
    /// `total_max` in all.
    pub fn new(per_peer_max: usize, total_max: usize) -> Self {
        Self {
            held: HashMap::new(),
            len: 0,
            per_peer_max,
            total_max,
        }
    }

    /// How many requests are held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no request is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<K: Eq + Hash + Clone, V> Awaiting<K, V> {
    /// Holds `request` for `peer` until `deadline_ms`. `Ok(true)` when it is
    /// the first held for that peer (the caller then starts connecting),
    /// `Err(request)` when a bound is reached.
    pub fn hold(&mut self, peer: K, request: V, deadline_ms: u64) -> Result<bool, V> {
        let held = self.held.get(&peer).map_or(0, Vec::len);
        if self.len >= self.total_max || held >= self.per_peer_max {
            return Err(request);
        }
        self.held
            .entry(peer)
            .or_default()
            .push((deadline_ms, request));
        self.len += 1;
        Ok(held == 0)
    }

    /// Whether any request waits for `peer`.
    pub fn is_waiting(&self, peer: &K) -> bool {
        self.held.contains_key(peer)
    }

    /// Removes and returns the requests held for `peer`, oldest first.
    pub fn take(&mut self, peer: &K) -> Vec<V> {
        let taken: Vec<V> = self
            .held
            .remove(peer)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, request)| request)
            .collect();
        self.len -= taken.len();
        taken
    }

    /// Removes and returns every request whose deadline is at or before
    /// `now_ms`, with its peer.
    pub fn expire(&mut self, now_ms: u64) -> Vec<(K, V)> {
        let mut expired = Vec::new();
        for (peer, held) in &mut self.held {
            let (due, kept): (Vec<_>, Vec<_>) = std::mem::take(held)
                .into_iter()
                .partition(|(deadline_ms, _)| *deadline_ms <= now_ms);
            *held = kept;
            expired.extend(due.into_iter().map(|(_, request)| (peer.clone(), request)));
        }
        self.held.retain(|_, held| !held.is_empty());
        self.len -= expired.len();
        expired
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_first_request_for_a_peer_says_so_and_admission_releases_all_in_order() {
        let mut awaiting = Awaiting::new(4, 10);
        assert_eq!(awaiting.hold("a", 1, 100), Ok(true));
        assert_eq!(awaiting.hold("a", 2, 100), Ok(false));
        assert_eq!(awaiting.hold("b", 3, 100), Ok(true));
        assert!(awaiting.is_waiting(&"a"));
        assert_eq!(awaiting.take(&"a"), vec![1, 2]);
        assert!(!awaiting.is_waiting(&"a"));
        assert_eq!(awaiting.len(), 1);
        assert_eq!(awaiting.take(&"a"), Vec::<i32>::new());
    }

    #[test]
    fn requests_past_either_bound_are_handed_back() {
        let mut awaiting = Awaiting::new(2, 3);
        assert!(awaiting.hold("a", 1, 100).is_ok());
        assert!(awaiting.hold("a", 2, 100).is_ok());
        assert_eq!(awaiting.hold("a", 3, 100), Err(3));
        assert!(awaiting.hold("b", 4, 100).is_ok());
        assert_eq!(awaiting.hold("c", 5, 100), Err(5));
        assert_eq!(awaiting.len(), 3);
    }

    #[test]
    fn only_requests_past_their_deadline_expire() {
        let mut awaiting = Awaiting::new(4, 10);
        awaiting.hold("a", 1, 100).unwrap();
        awaiting.hold("a", 2, 300).unwrap();
        awaiting.hold("b", 3, 200).unwrap();
        let mut expired = awaiting.expire(200);
        expired.sort();
        assert_eq!(expired, vec![("a", 1), ("b", 3)]);
        assert!(!awaiting.is_waiting(&"b"));
        assert_eq!(awaiting.len(), 1);
        assert_eq!(awaiting.take(&"a"), vec![2]);
        assert!(awaiting.is_empty());
    }

    proptest! {
        /// Whatever the operations, the count matches what is held, stays
        /// within the bounds, and every request leaves exactly once.
        #[test]
        fn every_request_is_held_within_bounds_and_leaves_once(
            ops in proptest::collection::vec((0u8..3, 0u8..4, 0u64..50), 1..200)
        ) {
            let mut awaiting = Awaiting::new(3, 8);
            let (mut accepted, mut left) = (0usize, 0usize);
            for (step, (op, peer, at)) in ops.into_iter().enumerate() {
                match op {
                    0 => accepted += usize::from(awaiting.hold(peer, step, at + 10).is_ok()),
                    1 => left += awaiting.take(&peer).len(),
                    _ => left += awaiting.expire(at).len(),
                }
                let held: usize = awaiting.held.values().map(Vec::len).sum();
                prop_assert_eq!(held, awaiting.len());
                prop_assert!(awaiting.len() <= 8);
                prop_assert!(awaiting.held.values().all(|h| !h.is_empty() && h.len() <= 3));
                prop_assert_eq!(accepted, left + awaiting.len());
            }
        }
    }
}
