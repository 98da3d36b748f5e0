//! The L1 blob cache: content-addressed blobs (models, updates) held in memory,
//! bounded in bytes, evicted least recently used first.
//!
//! A blob's id is the BLAKE3 hash of its bytes, so a blob fetched from any peer
//! can be checked on arrival ([`BlobCache::insert_verified`]) and two nodes that
//! hold the same id hold the same bytes. The cache does no I/O: the node driver
//! fetches and sends, and after inserting it calls [`BlobCache::drain_evicted`]
//! to learn which blobs it no longer holds, so it can stop announcing them.
//!
//! ```text
//!   insert(bytes) ──hash──► BlobId ──► entries: HashMap<BlobId, Entry{bytes, use_seq}>
//!                                      by_use:  BTreeMap<use_seq, BlobId>  (oldest first)
//!   over capacity? pop the oldest use_seq ──► evicted ids ──► drain_evicted()
//! ```
//!
//! It also counts lookups that hit and missed and blobs it evicted
//! ([`BlobCache::counters`]); the node exports them as metrics, so a cache too
//! small for the models in play (thrashing) shows up on a dashboard.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

/// The id of a blob: the BLAKE3 hash of its bytes. Displays as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub [u8; 32]);

impl BlobId {
    /// The id of `bytes` (their BLAKE3 hash).
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({self})")
    }
}

/// Why a blob was not cached. The cache is unchanged after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The blob alone is larger than the whole cache. Retrying never helps:
    /// the blob must be kept elsewhere, or the cache configured larger.
    #[error("blob of {size_bytes} bytes exceeds the cache capacity of {capacity_bytes} bytes; not retryable")]
    TooLarge {
        /// The blob's size.
        size_bytes: usize,
        /// The cache's capacity.
        capacity_bytes: usize,
    },
    /// The bytes do not hash to the id they were fetched as (corrupt or
    /// malicious sender). Retrying the fetch from another holder may help.
    #[error(
        "blob hash mismatch: expected {expected}, got {actual}; fetch again from another holder"
    )]
    HashMismatch {
        /// The id that was asked for.
        expected: BlobId,
        /// The hash of the bytes that arrived.
        actual: BlobId,
    },
}

/// What a cache did since it was created; counters only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounters {
    /// [`BlobCache::get`] calls that found the blob.
    pub hits: u64,
    /// [`BlobCache::get`] calls that did not.
    pub misses: u64,
    /// Blobs evicted to make room (removals by the caller are not counted).
    pub evictions: u64,
}

/// One cached blob and when it was last used.
#[derive(Debug)]
struct Entry {
    bytes: Arc<[u8]>,
    use_seq: u64,
}

/// Content-addressed blobs in memory, at most `capacity_bytes` in total,
/// evicted least recently used first.
#[derive(Debug)]
pub struct BlobCache {
    capacity_bytes: usize,
    size_bytes: usize,
    entries: HashMap<BlobId, Entry>,
    by_use: BTreeMap<u64, BlobId>,
    use_seq_next: u64,
    evicted: Vec<BlobId>,
    counters: CacheCounters,
}

impl BlobCache {
    /// An empty cache that holds at most `capacity_bytes` of blob bytes.
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            capacity_bytes,
            size_bytes: 0,
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
            use_seq_next: 0,
            evicted: Vec::new(),
            counters: CacheCounters::default(),
        }
    }

    /// Caches `bytes` under their BLAKE3 id, evicting least recently used
    /// blobs until they fit. Re-inserting a held blob only refreshes it.
    pub fn insert(&mut self, bytes: impl Into<Arc<[u8]>>) -> Result<BlobId, CacheError> {
        let bytes = bytes.into();
        let id = BlobId::of(&bytes);
        self.insert_with_id(id, bytes)
    }

    /// Like [`insert`](Self::insert), for bytes fetched as `expected`: bytes
    /// that hash to anything else are refused and the cache is unchanged.
    pub fn insert_verified(
        &mut self,
        expected: BlobId,
        bytes: impl Into<Arc<[u8]>>,
    ) -> Result<BlobId, CacheError> {
        let bytes = bytes.into();
        let actual = BlobId::of(&bytes);
        if actual != expected {
            return Err(CacheError::HashMismatch { expected, actual });
        }
        self.insert_with_id(actual, bytes)
    }

    /// The blob `id`, if held; marks it as just used. Counts a hit or a miss.
    pub fn get(&mut self, id: &BlobId) -> Option<Arc<[u8]>> {
        if self.touch(id) {
            self.counters.hits += 1;
        } else {
            self.counters.misses += 1;
        }
        self.entries.get(id).map(|entry| Arc::clone(&entry.bytes))
    }

    /// Hits, misses and evictions so far.
    pub fn counters(&self) -> CacheCounters {
        self.counters
    }

    /// Whether the blob `id` is held. Does not change its recency.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.entries.contains_key(id)
    }

    /// Removes the blob `id` and returns its bytes, if held. A removal is the
    /// caller's own decision, so it is not reported by [`drain_evicted`](Self::drain_evicted).
    pub fn remove(&mut self, id: &BlobId) -> Option<Arc<[u8]>> {
        let entry = self.entries.remove(id)?;
        self.by_use.remove(&entry.use_seq);
        self.size_bytes -= entry.bytes.len();
        self.check_invariants();
        Some(entry.bytes)
    }

    /// The ids evicted since the last call, oldest eviction first. Ids that were
    /// evicted and then cached again are left out, since they are held again.
    pub fn drain_evicted(&mut self) -> Vec<BlobId> {
        std::mem::take(&mut self.evicted)
    }

    /// How many blobs are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no blob is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The total size of the held blobs.
    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }

    /// The most bytes the cache holds.
    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    fn insert_with_id(&mut self, id: BlobId, bytes: Arc<[u8]>) -> Result<BlobId, CacheError> {
        if self.touch(&id) {
            return Ok(id);
        }
        let size_bytes = bytes.len();
        if size_bytes > self.capacity_bytes {
            return Err(CacheError::TooLarge {
                size_bytes,
                capacity_bytes: self.capacity_bytes,
            });
        }
        while self.size_bytes + size_bytes > self.capacity_bytes {
            // Cannot run dry: the held bytes alone exceed what is left of the capacity.
            assert!(
                self.evict_oldest(),
                "cache over capacity with nothing to evict"
            );
        }
        let use_seq = self.next_use_seq();
        self.entries.insert(id, Entry { bytes, use_seq });
        self.by_use.insert(use_seq, id);
        self.size_bytes += size_bytes;
        self.evicted.retain(|evicted| *evicted != id);
        self.check_invariants();
        Ok(id)
    }

    /// Marks `id` as just used; false if it is not held.
    fn touch(&mut self, id: &BlobId) -> bool {
        let use_seq = self.next_use_seq();
        let Some(entry) = self.entries.get_mut(id) else {
            return false;
        };
        self.by_use.remove(&entry.use_seq);
        entry.use_seq = use_seq;
        self.by_use.insert(use_seq, *id);
        true
    }

    /// Evicts the least recently used blob; false if the cache is empty.
    fn evict_oldest(&mut self) -> bool {
        let Some((_, id)) = self.by_use.pop_first() else {
            return false;
        };
        if let Some(entry) = self.entries.remove(&id) {
            self.size_bytes -= entry.bytes.len();
        }
        self.evicted.push(id);
        self.counters.evictions += 1;
        true
    }

    fn next_use_seq(&mut self) -> u64 {
        // A u64 counter bumped once per operation does not wrap in practice.
        let use_seq = self.use_seq_next;
        self.use_seq_next += 1;
        use_seq
    }

    fn check_invariants(&self) {
        assert!(
            self.size_bytes <= self.capacity_bytes,
            "cache over capacity"
        );
        assert_eq!(
            self.entries.len(),
            self.by_use.len(),
            "recency index out of step"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    fn blob(byte: u8, len: usize) -> Vec<u8> {
        vec![byte; len]
    }

    #[test]
    fn blob_id_is_blake3_and_displays_as_hex() {
        let id = BlobId::of(b"abc");
        assert_eq!(id.to_string(), blake3::hash(b"abc").to_hex().as_str());
        assert_eq!(id.to_string().len(), 64);
        assert_eq!(format!("{id:?}"), format!("BlobId({id})"));
    }

    #[test]
    fn insert_then_get_returns_the_same_bytes() {
        let mut cache = BlobCache::new(100);
        let id = cache.insert(blob(1, 10)).unwrap();
        assert_eq!(id, BlobId::of(&blob(1, 10)));
        assert_eq!(&*cache.get(&id).unwrap(), &blob(1, 10)[..]);
        assert!(cache.contains(&id));
        assert_eq!(
            (cache.len(), cache.size_bytes(), cache.capacity_bytes()),
            (1, 10, 100)
        );
    }

    #[test]
    fn get_of_an_absent_blob_is_none() {
        let mut cache = BlobCache::new(100);
        let id = BlobId::of(b"never inserted");
        assert!(cache.get(&id).is_none());
        assert!(!cache.contains(&id));
        assert!(cache.is_empty());
    }

    #[test]
    fn blob_larger_than_capacity_is_refused_and_cache_unchanged() {
        let mut cache = BlobCache::new(10);
        let small = cache.insert(blob(1, 5)).unwrap();
        let err = cache.insert(blob(2, 11)).unwrap_err();
        assert_eq!(
            err,
            CacheError::TooLarge {
                size_bytes: 11,
                capacity_bytes: 10
            }
        );
        assert!(err.to_string().contains("not retryable"));
        assert!(cache.contains(&small));
        assert_eq!(cache.size_bytes(), 5);
        assert!(cache.drain_evicted().is_empty());
    }

    #[test]
    fn blob_equal_to_capacity_evicts_everything_else() {
        let mut cache = BlobCache::new(10);
        let a = cache.insert(blob(1, 4)).unwrap();
        let b = cache.insert(blob(2, 4)).unwrap();
        let full = cache.insert(blob(3, 10)).unwrap();
        assert_eq!(cache.drain_evicted(), vec![a, b]);
        assert_eq!((cache.len(), cache.size_bytes()), (1, 10));
        assert!(cache.contains(&full));
    }

    #[test]
    fn eviction_takes_least_recently_used_first_and_is_reported() {
        let mut cache = BlobCache::new(30);
        let a = cache.insert(blob(1, 10)).unwrap();
        let b = cache.insert(blob(2, 10)).unwrap();
        let c = cache.insert(blob(3, 10)).unwrap();
        let d = cache.insert(blob(4, 15)).unwrap();
        assert_eq!(cache.drain_evicted(), vec![a, b]);
        assert!(cache.drain_evicted().is_empty(), "drain empties the record");
        assert!(cache.contains(&c) && cache.contains(&d));
        assert_eq!(cache.size_bytes(), 25);
    }

    #[test]
    fn get_refreshes_recency() {
        let mut cache = BlobCache::new(20);
        let a = cache.insert(blob(1, 10)).unwrap();
        let b = cache.insert(blob(2, 10)).unwrap();
        cache.get(&a).unwrap();
        cache.insert(blob(3, 10)).unwrap();
        assert_eq!(cache.drain_evicted(), vec![b]);
        assert!(cache.contains(&a));
    }

    #[test]
    fn contains_does_not_refresh_recency() {
        let mut cache = BlobCache::new(20);
        let a = cache.insert(blob(1, 10)).unwrap();
        cache.insert(blob(2, 10)).unwrap();
        assert!(cache.contains(&a));
        cache.insert(blob(3, 10)).unwrap();
        assert_eq!(cache.drain_evicted(), vec![a]);
    }

    #[test]
    fn reinserting_a_held_blob_only_refreshes_it() {
        let mut cache = BlobCache::new(20);
        let a = cache.insert(blob(1, 10)).unwrap();
        let b = cache.insert(blob(2, 10)).unwrap();
        assert_eq!(cache.insert(blob(1, 10)).unwrap(), a);
        assert_eq!((cache.len(), cache.size_bytes()), (2, 20));
        assert!(cache.drain_evicted().is_empty());
        cache.insert(blob(3, 10)).unwrap();
        assert_eq!(cache.drain_evicted(), vec![b]);
    }

    #[test]
    fn insert_verified_accepts_matching_bytes() {
        let mut cache = BlobCache::new(100);
        let expected = BlobId::of(&blob(7, 8));
        assert_eq!(
            cache.insert_verified(expected, blob(7, 8)).unwrap(),
            expected
        );
        assert!(cache.contains(&expected));
    }

    #[test]
    fn insert_verified_refuses_bytes_of_another_hash_naming_both() {
        let mut cache = BlobCache::new(100);
        let expected = BlobId::of(&blob(7, 8));
        let actual = BlobId::of(&blob(9, 8));
        let err = cache.insert_verified(expected, blob(9, 8)).unwrap_err();
        assert_eq!(err, CacheError::HashMismatch { expected, actual });
        let message = err.to_string();
        assert!(message.contains(&expected.to_string()) && message.contains(&actual.to_string()));
        assert!(cache.is_empty());
    }

    #[test]
    fn remove_returns_the_bytes_frees_space_and_is_not_reported() {
        let mut cache = BlobCache::new(100);
        let a = cache.insert(blob(1, 10)).unwrap();
        assert_eq!(&*cache.remove(&a).unwrap(), &blob(1, 10)[..]);
        assert!(cache.remove(&a).is_none());
        assert!(!cache.contains(&a));
        assert_eq!((cache.len(), cache.size_bytes()), (0, 0));
        assert!(cache.drain_evicted().is_empty());
    }

    #[test]
    fn evicted_then_reinserted_blob_is_not_reported() {
        let mut cache = BlobCache::new(10);
        let a = cache.insert(blob(1, 10)).unwrap();
        let b = cache.insert(blob(2, 10)).unwrap();
        cache.insert(blob(1, 10)).unwrap();
        assert_eq!(cache.drain_evicted(), vec![b], "a is held again, b is gone");
        assert!(cache.contains(&a));
    }

    #[test]
    fn counters_count_hits_misses_and_evictions_but_not_removals() {
        let mut cache = BlobCache::new(20);
        let a = cache.insert(blob(1, 10)).unwrap();
        assert!(cache.get(&a).is_some());
        assert!(cache.get(&BlobId::of(b"absent")).is_none());
        cache.insert(blob(2, 10)).unwrap();
        let c = cache.insert(blob(3, 10)).unwrap();
        assert!(
            cache.get(&a).is_none(),
            "a was least recently used: evicted"
        );
        cache.remove(&c);
        let counters = cache.counters();
        assert_eq!(
            counters,
            CacheCounters {
                hits: 1,
                misses: 2,
                evictions: 1
            }
        );
        assert!(cache.contains(&BlobId::of(&blob(2, 10))));
        assert_eq!(cache.counters(), counters, "contains counts nothing");
    }

    #[test]
    fn empty_blob_fits_a_zero_capacity_cache() {
        let mut cache = BlobCache::new(0);
        let id = cache.insert(Vec::new()).unwrap();
        assert_eq!((cache.len(), cache.size_bytes()), (1, 0));
        assert!(cache.get(&id).unwrap().is_empty());
    }

    /// One step of the property test.
    #[derive(Debug, Clone)]
    enum Op {
        Insert(Vec<u8>),
        Get(u8),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => proptest::collection::vec(0u8..4, 0..48).prop_map(Op::Insert),
            1 => any::<u8>().prop_map(Op::Get),
            1 => any::<u8>().prop_map(Op::Remove),
        ]
    }

    /// The id of the `pick`-th held blob (in id order), if any.
    fn held(cache: &BlobCache, pick: u8) -> Option<BlobId> {
        let mut ids: Vec<BlobId> = cache.entries.keys().copied().collect();
        ids.sort();
        (!ids.is_empty()).then(|| ids[usize::from(pick) % ids.len()])
    }

    fn apply(cache: &mut BlobCache, op: Op) {
        match op {
            Op::Insert(bytes) => {
                let fits = bytes.len() <= cache.capacity_bytes();
                assert_eq!(cache.insert(bytes).is_ok(), fits);
            }
            Op::Get(pick) => {
                if let Some(id) = held(cache, pick) {
                    assert!(cache.get(&id).is_some());
                }
            }
            Op::Remove(pick) => {
                if let Some(id) = held(cache, pick) {
                    assert!(cache.remove(&id).is_some());
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn size_stays_within_capacity_and_every_blob_matches_its_id(
            capacity_bytes in 0usize..128,
            ops in proptest::collection::vec(op(), 0..64),
        ) {
            let mut cache = BlobCache::new(capacity_bytes);
            for op in ops {
                apply(&mut cache, op);
                prop_assert!(cache.size_bytes() <= cache.capacity_bytes());
                let total_bytes: usize = cache.entries.values().map(|e| e.bytes.len()).sum();
                prop_assert_eq!(total_bytes, cache.size_bytes());
                for (id, entry) in &cache.entries {
                    prop_assert_eq!(*id, BlobId::of(&entry.bytes));
                }
                for evicted in cache.drain_evicted() {
                    prop_assert!(!cache.contains(&evicted));
                }
            }
        }
    }
}
