//! Least frequently used: evicts the held blob used the fewest times since it
//! was cached, the least recently used of those first.
//!
//! ```text
//!   by_rank: BTreeMap<(uses, seq), BlobId>   fewest uses, oldest ◄── … ──► most uses, newest
//!   at:      HashMap<BlobId, (uses, seq, size_bytes)>
//! ```
//!
//! Counts live only while a blob is held (an evicted blob that comes back
//! starts again at one use) and never age, so a blob that was popular once
//! stays until blobs used more often push it out. That is plain LFU's known
//! weakness; the adaptive policy (`tinylfu`) ages its counts instead.

use std::collections::{BTreeMap, HashMap};

use super::BlobId;

/// The LFU policy.
#[derive(Debug, Default)]
pub(crate) struct Lfu {
    by_rank: BTreeMap<(u64, u64), BlobId>,
    at: HashMap<BlobId, Rank>,
    size_bytes: usize,
    seq_next: u64,
}

/// Where a held blob ranks, and its size.
#[derive(Clone, Copy, Debug)]
struct Rank {
    uses: u64,
    seq: u64,
    size_bytes: usize,
}

impl Lfu {
    /// A held blob was used: one use more.
    pub(crate) fn touch(&mut self, id: &BlobId) {
        let seq = self.next_seq();
        let Some(rank) = self.at.get_mut(id) else {
            return;
        };
        self.by_rank.remove(&(rank.uses, rank.seq));
        rank.uses = rank.uses.saturating_add(1);
        rank.seq = seq;
        self.by_rank.insert((rank.uses, rank.seq), *id);
    }

    /// Admits `id` (one use) after evicting, least frequently used first,
    /// until it fits in `capacity_bytes`. The new blob is never its own
    /// victim, though it has the fewest uses: the caller serves it next. The
    /// caller ensures `size_bytes <= capacity_bytes`.
    pub(crate) fn insert(
        &mut self,
        id: BlobId,
        size_bytes: usize,
        capacity_bytes: usize,
        evicted: &mut Vec<BlobId>,
    ) {
        while self.size_bytes + size_bytes > capacity_bytes {
            let (_, victim) = self
                .by_rank
                .pop_first()
                .expect("over capacity with nothing left to evict");
            if let Some(rank) = self.at.remove(&victim) {
                self.size_bytes -= rank.size_bytes;
            }
            evicted.push(victim);
        }
        let seq = self.next_seq();
        let rank = Rank {
            uses: 1,
            seq,
            size_bytes,
        };
        let before = self.at.insert(id, rank);
        assert!(before.is_none(), "blob already held");
        self.by_rank.insert((rank.uses, rank.seq), id);
        self.size_bytes += size_bytes;
    }

    /// The caller removed `id`.
    pub(crate) fn remove(&mut self, id: &BlobId) {
        if let Some(rank) = self.at.remove(id) {
            self.by_rank.remove(&(rank.uses, rank.seq));
            self.size_bytes -= rank.size_bytes;
        }
    }

    /// Whether `id` is held.
    pub(crate) fn contains(&self, id: &BlobId) -> bool {
        self.at.contains_key(id)
    }

    /// How many blobs are held, and their total size.
    pub(crate) fn held(&self) -> (usize, usize) {
        (self.at.len(), self.size_bytes)
    }

    /// Panics if the two indexes disagree.
    pub(crate) fn check(&self) {
        assert_eq!(self.at.len(), self.by_rank.len(), "LFU indexes out of step");
    }

    fn next_seq(&mut self) -> u64 {
        // Bumped once per use: a u64 does not wrap in practice.
        let seq = self.seq_next;
        self.seq_next += 1;
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> BlobId {
        BlobId([n; 32])
    }

    #[test]
    fn evicts_the_fewest_uses_and_the_oldest_among_equals() {
        let mut lfu = Lfu::default();
        let mut evicted = Vec::new();
        for n in 1..=3 {
            lfu.insert(id(n), 10, 30, &mut evicted);
        }
        lfu.touch(&id(1));
        lfu.touch(&id(1));
        lfu.touch(&id(2));
        lfu.touch(&id(3));
        // 1: three uses; 2 and 3: two each, 2 used longer ago.
        lfu.insert(id(4), 10, 30, &mut evicted);
        assert_eq!(evicted, vec![id(2)]);
        // 4 has one use but was just cached: the next insert evicts it.
        lfu.insert(id(5), 10, 30, &mut evicted);
        assert_eq!(evicted, vec![id(2), id(4)]);
        assert_eq!(lfu.held(), (3, 30));
        lfu.check();
    }
}
