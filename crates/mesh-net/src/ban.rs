//! A bounded ban list: peers refused by admission are kept out for a while.
//!
//! Each entry expires at its own `until_ms`. When the list is full, expired
//! entries go first, then the oldest ban (by when it was last set), so a
//! flood of bad peers cannot grow memory without bound. The key is generic so
//! the same list can ban node ids or addresses.

use std::collections::{BTreeMap, BTreeSet};

use mesh_security::NodeId;

/// Why a ban list cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BanError {
    /// A capacity of zero could hold no ban. Not retryable: configure a positive capacity.
    #[error("ban list capacity must be at least 1")]
    ZeroCapacity,
}

/// One ban.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanEntry {
    /// The ban holds while `now_ms < until_ms`.
    pub until_ms: u64,
    /// A short label saying why (for example a rejection's metric label).
    pub reason: &'static str,
    seq: u64,
}

/// Banned peers, at most `capacity`, each until its own expiry.
#[derive(Clone, Debug)]
pub struct BanList<K = NodeId> {
    capacity: usize,
    entries: BTreeMap<K, BanEntry>,
    by_seq: BTreeMap<u64, K>,
    by_expiry: BTreeSet<(u64, u64)>,
    seq_next: u64,
}

impl<K: Ord + Clone> BanList<K> {
    /// An empty list holding at most `capacity` bans.
    pub fn new(capacity: usize) -> Result<Self, BanError> {
        if capacity == 0 {
            return Err(BanError::ZeroCapacity);
        }
        Ok(Self {
            capacity,
            entries: BTreeMap::new(),
            by_seq: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            seq_next: 0,
        })
    }

    /// Bans `peer` from `now_ms` for `duration_ms`. Banning a banned peer keeps
    /// the later expiry and counts as its newest ban. Returns the peer evicted
    /// to make room, if the list was full of unexpired bans.
    pub fn ban(
        &mut self,
        peer: K,
        now_ms: u64,
        duration_ms: u64,
        reason: &'static str,
    ) -> Option<K> {
        let mut until_ms = now_ms.saturating_add(duration_ms);
        if let Some(old) = self.remove_entry(&peer) {
            until_ms = until_ms.max(old.until_ms);
        }
        let mut evicted = None;
        if self.entries.len() >= self.capacity {
            self.prune(now_ms);
        }
        if self.entries.len() >= self.capacity {
            evicted = self.evict_oldest();
        }
        let seq = self.seq_next;
        self.seq_next += 1;
        self.by_seq.insert(seq, peer.clone());
        self.by_expiry.insert((until_ms, seq));
        self.entries.insert(
            peer,
            BanEntry {
                until_ms,
                reason,
                seq,
            },
        );
        debug_assert!(self.entries.len() <= self.capacity);
        evicted
    }

    /// Whether `peer` is banned at `now_ms`.
    pub fn is_banned(&self, peer: &K, now_ms: u64) -> bool {
        self.entries
            .get(peer)
            .is_some_and(|entry| now_ms < entry.until_ms)
    }

    /// The ban on `peer`, expired or not, if still held.
    pub fn get(&self, peer: &K) -> Option<&BanEntry> {
        self.entries.get(peer)
    }

    /// Lifts the ban on `peer`; returns whether there was one.
    pub fn unban(&mut self, peer: &K) -> bool {
        self.remove_entry(peer).is_some()
    }

    /// Drops every ban that has expired at `now_ms`; returns how many.
    pub fn prune(&mut self, now_ms: u64) -> usize {
        let mut dropped = 0;
        while let Some(&(until_ms, seq)) = self.by_expiry.first() {
            if until_ms > now_ms {
                break;
            }
            self.by_expiry.pop_first();
            if let Some(peer) = self.by_seq.remove(&seq) {
                self.entries.remove(&peer);
            }
            dropped += 1;
        }
        dropped
    }

    fn evict_oldest(&mut self) -> Option<K> {
        let (seq, peer) = self.by_seq.pop_first()?;
        if let Some(entry) = self.entries.remove(&peer) {
            self.by_expiry.remove(&(entry.until_ms, seq));
        }
        Some(peer)
    }

    fn remove_entry(&mut self, peer: &K) -> Option<BanEntry> {
        let entry = self.entries.remove(peer)?;
        self.by_seq.remove(&entry.seq);
        self.by_expiry.remove(&(entry.until_ms, entry.seq));
        Some(entry)
    }

    /// Number of bans held (some may have expired but not been pruned yet).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no ban is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most bans held at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn zero_capacity_is_refused() {
        assert_eq!(BanList::<u32>::new(0).unwrap_err(), BanError::ZeroCapacity);
    }

    #[test]
    fn a_ban_holds_until_it_expires() {
        let mut bans = BanList::new(4).unwrap();
        assert!(!bans.is_banned(&1, 100));
        assert_eq!(bans.ban(1, 100, 50, "revoked"), None);
        assert!(bans.is_banned(&1, 100));
        assert!(bans.is_banned(&1, 149));
        assert!(!bans.is_banned(&1, 150));
        assert_eq!(bans.get(&1).unwrap().reason, "revoked");
        assert_eq!(bans.prune(150), 1);
        assert!(bans.is_empty());
    }

    #[test]
    fn banning_again_keeps_the_later_expiry() {
        let mut bans = BanList::new(4).unwrap();
        bans.ban(1, 0, 1_000, "invalid");
        bans.ban(1, 10, 10, "timeout");
        assert_eq!(bans.get(&1).unwrap().until_ms, 1_000);
        assert_eq!(bans.get(&1).unwrap().reason, "timeout");
        bans.ban(1, 20, 5_000, "invalid");
        assert_eq!(bans.get(&1).unwrap().until_ms, 5_020);
        assert_eq!(bans.len(), 1);
    }

    #[test]
    fn when_full_the_oldest_ban_is_evicted() {
        let mut bans = BanList::new(2).unwrap();
        bans.ban(1, 0, 1_000, "x");
        bans.ban(2, 1, 1_000, "x");
        assert_eq!(bans.ban(3, 2, 1_000, "x"), Some(1));
        assert!(!bans.is_banned(&1, 3));
        assert!(bans.is_banned(&2, 3) && bans.is_banned(&3, 3));
        bans.ban(2, 4, 1_000, "x");
        assert_eq!(
            bans.ban(4, 5, 1_000, "x"),
            Some(3),
            "re-banning refreshes age"
        );
    }

    #[test]
    fn when_full_expired_bans_go_before_live_ones() {
        let mut bans = BanList::new(2).unwrap();
        bans.ban(1, 0, 1_000, "x");
        bans.ban(2, 0, 10, "x");
        assert_eq!(bans.ban(3, 20, 1_000, "x"), None);
        assert!(bans.is_banned(&1, 20));
        assert!(bans.get(&2).is_none());
    }

    #[test]
    fn unban_lifts_a_ban() {
        let mut bans = BanList::new(2).unwrap();
        bans.ban(1, 0, 1_000, "x");
        assert!(bans.unban(&1));
        assert!(!bans.unban(&1));
        assert!(!bans.is_banned(&1, 1));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn never_exceeds_capacity_and_a_fresh_ban_holds(
            capacity in 1usize..8,
            ops in prop::collection::vec((0u32..20, 0u64..100, 1u64..200), 1..100),
        ) {
            let mut bans = BanList::new(capacity).unwrap();
            let mut now_ms = 0;
            for (peer, step_ms, duration_ms) in ops {
                now_ms += step_ms;
                bans.ban(peer, now_ms, duration_ms, "x");
                prop_assert!(bans.len() <= capacity);
                prop_assert!(bans.is_banned(&peer, now_ms));
                prop_assert_eq!(bans.by_seq.len(), bans.len());
                prop_assert_eq!(bans.by_expiry.len(), bans.len());
            }
        }
    }
}
