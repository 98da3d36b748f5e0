//! Least recently used: a recency-ordered list of blob ids with their sizes
//! ([`LruList`], also the window and the two main segments of the adaptive
//! policy), and the LRU policy built on one such list ([`Lru`]).
//!
//! ```text
//!   by_seq: BTreeMap<seq, BlobId>   oldest ◄── … ──► newest
//!   at:     HashMap<BlobId, (seq, size_bytes)>
//! ```
//!
//! Every use takes a fresh sequence number, so the oldest entry is the first
//! of `by_seq`. Nothing iterates the hash map, so the order never depends on
//! hashing.

use std::collections::{BTreeMap, HashMap};

use super::BlobId;

/// Blob ids in order of last use, with their sizes and their total size.
#[derive(Debug, Default)]
pub(crate) struct LruList {
    by_seq: BTreeMap<u64, BlobId>,
    at: HashMap<BlobId, (u64, usize)>,
    size_bytes: usize,
    seq_next: u64,
}

impl LruList {
    /// Adds `id` as the most recently used. `id` must not be in the list.
    pub(crate) fn push_newest(&mut self, id: BlobId, size_bytes: usize) {
        let seq = self.next_seq();
        let before = self.at.insert(id, (seq, size_bytes));
        assert!(before.is_none(), "blob already in the list");
        self.by_seq.insert(seq, id);
        self.size_bytes += size_bytes;
    }

    /// Marks `id` as just used; false if it is not in the list.
    pub(crate) fn touch(&mut self, id: &BlobId) -> bool {
        let seq = self.next_seq();
        let Some(entry) = self.at.get_mut(id) else {
            return false;
        };
        self.by_seq.remove(&entry.0);
        entry.0 = seq;
        self.by_seq.insert(seq, *id);
        true
    }

    /// Takes `id` out of the list; its size, if it was there.
    pub(crate) fn remove(&mut self, id: &BlobId) -> Option<usize> {
        let (seq, size_bytes) = self.at.remove(id)?;
        self.by_seq.remove(&seq);
        self.size_bytes -= size_bytes;
        Some(size_bytes)
    }

    /// Takes the least recently used id out of the list, with its size.
    pub(crate) fn pop_oldest(&mut self) -> Option<(BlobId, usize)> {
        let (_, id) = self.by_seq.pop_first()?;
        let (_, size_bytes) = self.at.remove(&id)?;
        self.size_bytes -= size_bytes;
        Some((id, size_bytes))
    }

    /// The least recently used id.
    pub(crate) fn oldest(&self) -> Option<BlobId> {
        self.by_seq.first_key_value().map(|(_, id)| *id)
    }

    /// Whether `id` is in the list.
    pub(crate) fn contains(&self, id: &BlobId) -> bool {
        self.at.contains_key(id)
    }

    /// How many ids the list holds.
    pub(crate) fn len(&self) -> usize {
        self.at.len()
    }

    /// The total size of the ids in the list.
    pub(crate) fn size_bytes(&self) -> usize {
        self.size_bytes
    }

    /// Panics if the two indexes or the size total disagree.
    pub(crate) fn check(&self) {
        assert_eq!(self.at.len(), self.by_seq.len(), "LRU indexes out of step");
    }

    fn next_seq(&mut self) -> u64 {
        // Bumped once per use: a u64 does not wrap in practice.
        let seq = self.seq_next;
        self.seq_next += 1;
        seq
    }
}

/// The LRU policy: evicts the blob whose last use is oldest.
#[derive(Debug, Default)]
pub(crate) struct Lru {
    list: LruList,
}

impl Lru {
    /// A held blob was used.
    pub(crate) fn touch(&mut self, id: &BlobId) {
        self.list.touch(id);
    }

    /// Admits `id` after evicting, oldest first, until it fits in
    /// `capacity_bytes`. The caller ensures `size_bytes <= capacity_bytes`.
    pub(crate) fn insert(
        &mut self,
        id: BlobId,
        size_bytes: usize,
        capacity_bytes: usize,
        evicted: &mut Vec<BlobId>,
    ) {
        while self.list.size_bytes() + size_bytes > capacity_bytes {
            let (victim, _) = self
                .list
                .pop_oldest()
                .expect("over capacity with nothing left to evict");
            evicted.push(victim);
        }
        self.list.push_newest(id, size_bytes);
    }

    /// The caller removed `id`.
    pub(crate) fn remove(&mut self, id: &BlobId) {
        self.list.remove(id);
    }

    /// Whether `id` is held.
    pub(crate) fn contains(&self, id: &BlobId) -> bool {
        self.list.contains(id)
    }

    /// How many blobs are held, and their total size.
    pub(crate) fn held(&self) -> (usize, usize) {
        (self.list.len(), self.list.size_bytes())
    }

    /// Panics if the list is inconsistent.
    pub(crate) fn check(&self) {
        self.list.check();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn id(n: u8) -> BlobId {
        BlobId([n; 32])
    }

    #[test]
    fn list_orders_by_last_use() {
        let mut list = LruList::default();
        for n in 1..=3 {
            list.push_newest(id(n), usize::from(n));
        }
        list.touch(&id(1));
        assert_eq!(list.oldest(), Some(id(2)));
        assert!(list.contains(&id(3)) && !list.contains(&id(4)));
        assert_eq!((list.len(), list.size_bytes()), (3, 6));
        assert_eq!(list.remove(&id(3)), Some(3));
        assert_eq!(list.pop_oldest(), Some((id(2), 2)));
        assert_eq!(list.pop_oldest(), Some((id(1), 1)));
        assert_eq!(list.pop_oldest(), None);
        assert_eq!(list.size_bytes(), 0);
        list.check();
    }

    #[test]
    fn lru_policy_evicts_the_least_recently_used_until_the_new_blob_fits() {
        let mut lru = Lru::default();
        let mut evicted = Vec::new();
        for n in 1..=3 {
            lru.insert(id(n), 10, 30, &mut evicted);
        }
        lru.touch(&id(1));
        lru.insert(id(4), 20, 30, &mut evicted);
        assert_eq!(evicted, vec![id(2), id(3)]);
        assert_eq!(lru.held(), (2, 30));
    }
}
