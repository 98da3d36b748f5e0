//! The L1 blob cache: content-addressed blobs (models, updates) held in memory,
//! bounded in bytes, evicted by a configurable [`CachePolicy`]: least recently
//! used (the default), least frequently used, or adaptive (W-TinyLFU).
//!
//! A blob's id is the BLAKE3 hash of its bytes, so a blob fetched from any peer
//! can be checked on arrival ([`BlobCache::insert_verified`]) and two nodes that
//! hold the same id hold the same bytes. The cache does no I/O: the node driver
//! fetches and sends, and after inserting it calls [`BlobCache::drain_evicted`]
//! to learn which blobs it no longer holds, so it can stop announcing them.
//!
//! ```text
//!   insert(bytes) ──hash──► BlobId ──► bytes:  HashMap<BlobId, Arc<[u8]>>
//!                                      ledger: ids and sizes under the policy (ledger.rs)
//!                                        ├─ lru.rs      one recency list
//!                                        ├─ lfu.rs      uses while held, then recency
//!                                        └─ tinylfu.rs  window + probation + protected LRU lists,
//!                                                       admission by sketch.rs (count-min, halving)
//!   over capacity? the policy picks victims ──► evicted ids ──► drain_evicted()
//!   trace.rs: an optional bounded access log, and its replay under every policy
//! ```
//!
//! It also counts lookups that hit and missed and blobs it evicted
//! ([`BlobCache::counters`]); the node exports them as metrics, with the
//! policy as an info metric, so a cache too small for the models in play
//! (thrashing) shows up on a dashboard, next to the policy that ran.
//!
//! Every policy keeps two promises the round engine relies on: a blob that
//! an insert accepted is held when the insert returns (the node serves what
//! it just stored), and a blob larger than the whole capacity is refused
//! with the cache unchanged.
//!
//! Why these three, and why our own code. A node's cache sees a new model
//! (or group result) each round, fetched by many peers at once, and now and
//! then blobs used once (a relayed update, a model fetched for `model get`).
//! LRU suits the first and is what ran before, so it stays the default
//! (`agent-mesh bench cache` measures all three on the simulator's
//! traces: `docs/results.md`, "Blob cache policies"); LFU
//! is the textbook opposite; the adaptive policy is W-TinyLFU rather than
//! ARC because its admission test (is the newcomer asked for more often
//! than the blob it would replace?) works unchanged when blobs differ in
//! size, while ARC's ghost lists and its target `p` count entries, not bytes,
//! and have no settled byte-weighted form; TinyLFU's state is a fixed-width
//! sketch instead of a ghost list of up to a cache's worth of evicted ids;
//! and its hill climber moves the window towards LRU when recency is what
//! pays. `moka` has TinyLFU without the window (W-TinyLFU is on its
//! roadmap), so it may refuse a blob at once on insert, when the engine
//! needs what it just stored; it bounds its size best-effort, applying
//! evictions in batches on its own schedule, so the simulator could not
//! replay a run exactly and `drain_evicted` would not be complete after an
//! insert; and it has no hook to record or replay an access trace. The
//! core here must stay I/O-free and deterministic (no clock, no randomness,
//! no hash-map iteration order in any decision), and the three policies
//! take some 800 lines, comments included, over one shared LRU list.

mod ledger;
mod lfu;
mod lru;
mod policy;
mod sketch;
mod tinylfu;
pub mod trace;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use ledger::{Inserted, Ledger};
pub use policy::{CachePolicy, ParseCachePolicyError};
use trace::{Access, AccessKind, AccessLog};

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

/// Content-addressed blobs in memory, at most `capacity_bytes` in total,
/// evicted by its [`CachePolicy`].
#[derive(Debug)]
pub struct BlobCache {
    bytes: HashMap<BlobId, Arc<[u8]>>,
    ledger: Ledger,
    log: Option<AccessLog>,
}

impl BlobCache {
    /// An empty LRU cache that holds at most `capacity_bytes` of blob bytes.
    pub fn new(capacity_bytes: usize) -> Self {
        Self::with_policy(capacity_bytes, CachePolicy::Lru)
    }

    /// An empty cache of `capacity_bytes` that evicts by `policy`.
    pub fn with_policy(capacity_bytes: usize, policy: CachePolicy) -> Self {
        Self {
            bytes: HashMap::new(),
            ledger: Ledger::new(capacity_bytes, policy),
            log: None,
        }
    }

    /// Caches `bytes` under their BLAKE3 id, evicting what the policy
    /// chooses until they fit. Re-inserting a held blob only counts as a use.
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

    /// The blob `id`, if held; counts as a use of it. Counts a hit or a miss.
    pub fn get(&mut self, id: &BlobId) -> Option<Arc<[u8]>> {
        let hit = self.ledger.lookup(id);
        let bytes = self.bytes.get(id).map(Arc::clone);
        debug_assert_eq!(hit, bytes.is_some(), "ledger and bytes out of step");
        if let Some(log) = &mut self.log {
            let (kind, size_bytes) = match &bytes {
                Some(b) => (AccessKind::Hit, b.len()),
                None => (AccessKind::Miss, 0),
            };
            log.push(Access {
                id: *id,
                kind,
                size_bytes,
            });
        }
        bytes
    }

    /// Hits, misses and evictions so far.
    pub fn counters(&self) -> CacheCounters {
        self.ledger.counters()
    }

    /// Whether the blob `id` is held. Counts nothing and changes no ranking.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.bytes.contains_key(id)
    }

    /// Removes the blob `id` and returns its bytes, if held. A removal is the
    /// caller's own decision, so it is not reported by [`drain_evicted`](Self::drain_evicted).
    pub fn remove(&mut self, id: &BlobId) -> Option<Arc<[u8]>> {
        let bytes = self.bytes.remove(id)?;
        let held = self.ledger.remove(id);
        debug_assert!(held, "ledger and bytes out of step");
        if let Some(log) = &mut self.log {
            log.push(Access {
                id: *id,
                kind: AccessKind::Remove,
                size_bytes: bytes.len(),
            });
        }
        self.check_invariants();
        Some(bytes)
    }

    /// The ids evicted since the last call, oldest eviction first. Ids that were
    /// evicted and then cached again are left out, since they are held again.
    pub fn drain_evicted(&mut self) -> Vec<BlobId> {
        self.ledger.drain_evicted()
    }

    /// How many blobs are held.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether no blob is held.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The total size of the held blobs.
    pub fn size_bytes(&self) -> usize {
        self.ledger.size_bytes()
    }

    /// The most bytes the cache holds.
    pub fn capacity_bytes(&self) -> usize {
        self.ledger.capacity_bytes()
    }

    /// The eviction policy.
    pub fn policy(&self) -> CachePolicy {
        self.ledger.policy()
    }

    /// Starts recording every lookup, insert and removal (replacing any
    /// record under way), up to `accesses_max` of them; later ones are
    /// counted as dropped. For trace-driven comparisons of the policies
    /// ([`trace::replay`]); off unless asked for.
    pub fn record_accesses(&mut self, accesses_max: usize) {
        self.log = Some(AccessLog::new(accesses_max));
    }

    /// Stops recording and returns the record, if one was under way.
    pub fn take_access_log(&mut self) -> Option<AccessLog> {
        self.log.take()
    }

    fn insert_with_id(&mut self, id: BlobId, bytes: Arc<[u8]>) -> Result<BlobId, CacheError> {
        let size_bytes = bytes.len();
        let inserted = self.ledger.insert(id, size_bytes);
        if let (Some(log), Ok(_) | Err(CacheError::TooLarge { .. })) = (&mut self.log, &inserted) {
            log.push(Access {
                id,
                kind: AccessKind::Insert,
                size_bytes,
            });
        }
        if let Inserted::New { evicted } = inserted? {
            for victim in self.ledger.last_evicted(evicted) {
                self.bytes.remove(victim);
            }
            self.bytes.insert(id, bytes);
        }
        self.check_invariants();
        Ok(id)
    }

    fn check_invariants(&self) {
        assert_eq!(
            self.bytes.len(),
            self.ledger.len(),
            "policy bookkeeping out of step with the held bytes"
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

    /// Inserts `a`, `b`, `c` (10 bytes each) into a cache of 30 and uses `a`
    /// five times, then `b`, then `c`: `a` is the most used but the least
    /// recent. Returns the cache and the three ids.
    fn used_often_long_ago(policy: CachePolicy) -> (BlobCache, [BlobId; 3]) {
        let mut cache = BlobCache::with_policy(30, policy);
        let ids = [1, 2, 3].map(|n| cache.insert(blob(n, 10)).unwrap());
        for _ in 0..5 {
            cache.get(&ids[0]).unwrap();
        }
        cache.get(&ids[1]).unwrap();
        cache.get(&ids[2]).unwrap();
        (cache, ids)
    }

    #[test]
    fn lru_evicts_the_least_recent_blob_even_the_most_used() {
        let (mut cache, [a, _, _]) = used_often_long_ago(CachePolicy::Lru);
        let d = cache.insert(blob(4, 10)).unwrap();
        assert_eq!(cache.drain_evicted(), vec![a]);
        assert!(cache.contains(&d));
    }

    #[test]
    fn lfu_evicts_the_least_used_blob_and_the_least_recent_among_equals() {
        let (mut cache, [a, b, c]) = used_often_long_ago(CachePolicy::Lfu);
        let d = cache.insert(blob(4, 10)).unwrap();
        assert_eq!(
            cache.drain_evicted(),
            vec![b],
            "b and c: 2 uses each, b older"
        );
        assert!(cache.contains(&a) && cache.contains(&c) && cache.contains(&d));
        // d (1 use) is the least used now, but only once it is no longer new.
        cache.insert(blob(5, 10)).unwrap();
        assert_eq!(cache.drain_evicted(), vec![d]);
    }

    #[test]
    fn lfu_evicts_several_small_blobs_for_a_large_one_least_used_first() {
        let mut cache = BlobCache::with_policy(30, CachePolicy::Lfu);
        let small = [1, 2, 3].map(|n| cache.insert(blob(n, 10)).unwrap());
        cache.get(&small[0]).unwrap();
        cache.get(&small[0]).unwrap();
        cache.get(&small[2]).unwrap();
        let large = cache.insert(blob(9, 20)).unwrap();
        assert_eq!(cache.drain_evicted(), vec![small[1], small[2]]);
        assert!(cache.contains(&small[0]) && cache.contains(&large));
        assert_eq!(cache.size_bytes(), 30);
    }

    /// A blob used six times, then a scan of 12 blobs used once each, in a
    /// cache with room for four blobs. Returns whether the hot blob survived.
    fn hot_blob_survives_a_scan(policy: CachePolicy) -> bool {
        let mut cache = BlobCache::with_policy(40, policy);
        let hot = cache.insert(blob(0, 10)).unwrap();
        for _ in 0..5 {
            cache.get(&hot).unwrap();
        }
        for n in 1..=12 {
            let id = cache.insert(blob(n, 10)).unwrap();
            assert!(cache.contains(&id), "{policy}: a new blob is held");
        }
        let evicted = cache.drain_evicted();
        assert!(!evicted.is_empty());
        cache.get(&hot).is_some()
    }

    #[test]
    fn adaptive_keeps_a_frequently_used_blob_through_a_scan_that_flushes_lru() {
        assert!(!hot_blob_survives_a_scan(CachePolicy::Lru));
        assert!(hot_blob_survives_a_scan(CachePolicy::Adaptive));
        assert!(hot_blob_survives_a_scan(CachePolicy::Lfu));
    }

    #[test]
    fn adaptive_admits_a_newcomer_used_more_often_than_the_oldest_probation_blob() {
        let mut cache = BlobCache::with_policy(40, CachePolicy::Adaptive);
        let old = [1, 2, 3].map(|n| cache.insert(blob(n, 10)).unwrap());
        let popular = cache.insert(blob(4, 10)).unwrap();
        for _ in 0..3 {
            cache.get(&popular).unwrap();
        }
        cache.insert(blob(5, 10)).unwrap();
        assert_eq!(
            cache.drain_evicted(),
            vec![old[0]],
            "popular (4 uses) left the window and beat the oldest blob (1 use)"
        );
        assert!(cache.contains(&popular));
    }

    #[test]
    fn with_policy_reports_its_policy_and_new_is_lru() {
        assert_eq!(BlobCache::new(1).policy(), CachePolicy::Lru);
        for policy in CachePolicy::ALL {
            let cache = BlobCache::with_policy(7, policy);
            assert_eq!((cache.policy(), cache.capacity_bytes()), (policy, 7));
        }
    }

    #[test]
    fn every_policy_refuses_a_blob_larger_than_the_capacity_unchanged() {
        for policy in CachePolicy::ALL {
            let mut cache = BlobCache::with_policy(10, policy);
            let small = cache.insert(blob(1, 5)).unwrap();
            let err = cache.insert(blob(2, 11)).unwrap_err();
            assert!(matches!(err, CacheError::TooLarge { .. }), "{policy}");
            assert!(
                cache.contains(&small) && cache.size_bytes() == 5,
                "{policy}"
            );
            assert!(cache.drain_evicted().is_empty(), "{policy}");
            assert_eq!(cache.counters().evictions, 0, "{policy}");
        }
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
            3 => any::<u8>().prop_map(Op::Get),
            1 => any::<u8>().prop_map(Op::Remove),
        ]
    }

    fn policy() -> impl Strategy<Value = CachePolicy> {
        prop_oneof![
            Just(CachePolicy::Lru),
            Just(CachePolicy::Lfu),
            Just(CachePolicy::Adaptive),
        ]
    }

    /// The `pick`-th id (in id order) of `ids`, if any.
    fn pick(ids: &std::collections::BTreeSet<BlobId>, pick: u8) -> Option<BlobId> {
        (!ids.is_empty()).then(|| {
            *ids.iter()
                .nth(usize::from(pick) % ids.len())
                .expect("index below len")
        })
    }

    /// Runs `ops` on a fresh cache, checking after each step that the cache
    /// holds exactly what was inserted minus what it reported evicted and
    /// what was removed; returns every eviction, in order.
    fn run_checked(
        capacity_bytes: usize,
        policy: CachePolicy,
        ops: &[Op],
    ) -> Result<Vec<BlobId>, TestCaseError> {
        let mut cache = BlobCache::with_policy(capacity_bytes, policy);
        // Every id ever seen (lookups pick among them, held or not) and the model of what is held.
        let mut known = std::collections::BTreeSet::new();
        let mut held: std::collections::BTreeMap<BlobId, usize> = Default::default();
        let mut evictions = Vec::new();
        for op in ops {
            match op {
                Op::Insert(bytes) => {
                    let fits = bytes.len() <= capacity_bytes;
                    let result = cache.insert(bytes.clone());
                    prop_assert_eq!(result.is_ok(), fits);
                    if let Ok(id) = result {
                        prop_assert!(cache.contains(&id), "an accepted blob is held");
                        known.insert(id);
                        held.insert(id, bytes.len());
                    }
                }
                Op::Get(n) => {
                    if let Some(id) = pick(&known, *n) {
                        let got = cache.get(&id);
                        prop_assert_eq!(got.is_some(), held.contains_key(&id));
                        if let Some(bytes) = got {
                            prop_assert_eq!(BlobId::of(&bytes), id);
                        }
                    }
                }
                Op::Remove(n) => {
                    if let Some(id) = pick(&known, *n) {
                        prop_assert_eq!(cache.remove(&id).is_some(), held.remove(&id).is_some());
                    }
                }
            }
            for evicted in cache.drain_evicted() {
                prop_assert!(!cache.contains(&evicted), "a drained id is not held");
                prop_assert!(
                    held.remove(&evicted).is_some(),
                    "only held blobs are evicted"
                );
                evictions.push(evicted);
            }
            prop_assert!(cache.size_bytes() <= cache.capacity_bytes());
            prop_assert_eq!(cache.size_bytes(), held.values().sum::<usize>());
            prop_assert_eq!(cache.len(), held.len());
            prop_assert_eq!(cache.is_empty(), held.is_empty());
            for id in &known {
                prop_assert_eq!(cache.contains(id), held.contains_key(id));
            }
            for (id, bytes) in &cache.bytes {
                prop_assert_eq!(*id, BlobId::of(bytes));
            }
            prop_assert_eq!(cache.counters().evictions, evictions.len() as u64);
        }
        Ok(evictions)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn every_policy_holds_exactly_what_was_inserted_less_evictions_and_removals(
            capacity_bytes in 0usize..128,
            policy in policy(),
            ops in proptest::collection::vec(op(), 0..96),
        ) {
            run_checked(capacity_bytes, policy, &ops)?;
        }

        #[test]
        fn every_policy_evicts_the_same_blobs_for_the_same_operations(
            capacity_bytes in 0usize..128,
            policy in policy(),
            ops in proptest::collection::vec(op(), 0..96),
        ) {
            let first = run_checked(capacity_bytes, policy, &ops)?;
            let second = run_checked(capacity_bytes, policy, &ops)?;
            prop_assert_eq!(first, second);
        }
    }
}
