//! Lookups of peers that cannot be reached at the addresses known for them.
//!
//! A peer that restarts at a new address (a replaced container, a moved
//! host) keeps its peer id, but the nodes that knew it hold only its old
//! addresses, and a node that started after it may hold none. Nothing would
//! tell them the new one: identify speaks only for a connected peer, and
//! Kademlia's routing refresh runs every few minutes. So when the
//! application wants a peer that is not admitted (a committee member its
//! Raft messages cannot reach) or a dial to a known peer fails, the driver
//! asks the connected peers for it with a Kademlia `FIND_NODE` lookup of
//! that peer id; whoever is connected to it answers with its current
//! addresses, the lookup itself dials them, and admission runs as on any
//! connection.
//!
//! ```text
//!   open_stream / request to an unadmitted peer ─┐
//!   failed dial of a known peer ──────────────────┴─► Lookups::start(peer, now)?
//!        yes (none for this peer within LOOKUP_INTERVAL_MS) ─► kad.get_closest_peers(peer)
//!        result: addresses learned, the wanted peer dialled if still unconnected
//! ```
//!
//! This table only paces the lookups: at most one per peer per
//! [`LOOKUP_INTERVAL_MS`], at most [`LOOKUPS_MAX`] peers remembered.

use std::collections::HashMap;
use std::hash::Hash;

/// Fewest milliseconds between two lookups of the same peer.
pub const LOOKUP_INTERVAL_MS: u64 = 5_000;
/// Most peers whose last lookup is remembered; past it, a new peer's lookup
/// waits until an old entry has aged out.
pub const LOOKUPS_MAX: usize = 256;

/// When each wanted peer was last looked up.
#[derive(Debug, Clone)]
pub struct Lookups<K> {
    started_ms: HashMap<K, u64>,
}

impl<K> Default for Lookups<K> {
    fn default() -> Self {
        Self {
            started_ms: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone> Lookups<K> {
    /// Whether a lookup of `peer` may start at `now_ms`; records it if so.
    pub fn start(&mut self, peer: &K, now_ms: u64) -> bool {
        let due = |at: u64| now_ms.saturating_sub(at) >= LOOKUP_INTERVAL_MS;
        if let Some(at) = self.started_ms.get(peer) {
            if !due(*at) {
                return false;
            }
        } else if self.started_ms.len() >= LOOKUPS_MAX {
            self.started_ms.retain(|_, at| !due(*at));
            if self.started_ms.len() >= LOOKUPS_MAX {
                return false;
            }
        }
        self.started_ms.insert(peer.clone(), now_ms);
        true
    }

    /// How many peers are remembered.
    pub fn len(&self) -> usize {
        self.started_ms.len()
    }

    /// Whether no peer is remembered.
    pub fn is_empty(&self) -> bool {
        self.started_ms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lookup_per_peer_per_interval() {
        let mut lookups = Lookups::default();
        assert!(lookups.start(&1u32, 1_000));
        assert!(!lookups.start(&1, 1_000 + LOOKUP_INTERVAL_MS - 1));
        assert!(lookups.start(&2, 1_001), "other peers are not held back");
        assert!(lookups.start(&1, 1_000 + LOOKUP_INTERVAL_MS));
        assert_eq!(lookups.len(), 2);
    }

    #[test]
    fn the_table_stays_bounded_and_frees_aged_entries() {
        let mut lookups = Lookups::default();
        for peer in 0..LOOKUPS_MAX {
            assert!(lookups.start(&peer, 0));
        }
        assert!(!lookups.start(&LOOKUPS_MAX, 1), "full of recent lookups");
        assert_eq!(lookups.len(), LOOKUPS_MAX);
        assert!(lookups.start(&LOOKUPS_MAX, LOOKUP_INTERVAL_MS));
        assert_eq!(lookups.len(), 1, "aged entries were dropped");
    }
}
