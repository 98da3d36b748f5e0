//! The cache without its bytes: which blob ids are held and how large they
//! are (kept by the policy's [`Evictor`]), the hit, miss and eviction
//! counters, and the evictions not yet drained. [`BlobCache`](super::BlobCache)
//! adds the bytes; [`trace::replay`](super::trace::replay) runs a recorded
//! trace through a ledger alone, so replaying needs no blob bytes.

use super::policy::{CachePolicy, Evictor};
use super::{BlobId, CacheCounters, CacheError};

/// Held ids and sizes under a policy, with counters.
#[derive(Debug)]
pub(crate) struct Ledger {
    capacity_bytes: usize,
    policy: CachePolicy,
    evictor: Evictor,
    counters: CacheCounters,
    evicted: Vec<BlobId>,
}

/// What an insert did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// The blob was held already; it counts as used.
    Refreshed,
    /// The blob is new; the number of ids at the end of the eviction
    /// record that its insert evicted.
    New {
        /// Ids evicted by this insert.
        evicted: usize,
    },
}

impl Ledger {
    /// An empty ledger of `capacity_bytes` under `policy`.
    pub(crate) fn new(capacity_bytes: usize, policy: CachePolicy) -> Self {
        Self {
            capacity_bytes,
            policy,
            evictor: Evictor::new(policy, capacity_bytes),
            counters: CacheCounters::default(),
            evicted: Vec::new(),
        }
    }

    /// A lookup of `id`: counts a hit or a miss and tells the policy;
    /// true on a hit.
    pub(crate) fn lookup(&mut self, id: &BlobId) -> bool {
        let hit = self.evictor.contains(id);
        if hit {
            self.counters.hits += 1;
            self.evictor.on_hit(id);
        } else {
            self.counters.misses += 1;
            self.evictor.on_miss(id);
        }
        hit
    }

    /// Stores `id` of `size_bytes`, evicting what the policy chooses until
    /// it fits. Storing a held blob only counts as a use of it.
    pub(crate) fn insert(&mut self, id: BlobId, size_bytes: usize) -> Result<Inserted, CacheError> {
        if self.evictor.contains(&id) {
            self.evictor.on_refresh(&id);
            return Ok(Inserted::Refreshed);
        }
        if size_bytes > self.capacity_bytes {
            return Err(CacheError::TooLarge {
                size_bytes,
                capacity_bytes: self.capacity_bytes,
            });
        }
        self.evicted.retain(|evicted| *evicted != id);
        let before = self.evicted.len();
        self.evictor
            .insert(id, size_bytes, self.capacity_bytes, &mut self.evicted);
        let evicted = self.evicted.len() - before;
        self.counters.evictions += evicted as u64;
        self.check_invariants();
        Ok(Inserted::New { evicted })
    }

    /// The ids the last insert evicted (`count` of them, from [`Inserted::New`]).
    pub(crate) fn last_evicted(&self, count: usize) -> &[BlobId] {
        &self.evicted[self.evicted.len() - count..]
    }

    /// Forgets `id` (not an eviction); false if it was not held.
    pub(crate) fn remove(&mut self, id: &BlobId) -> bool {
        if !self.evictor.contains(id) {
            return false;
        }
        self.evictor.remove(id);
        self.check_invariants();
        true
    }

    /// The evictions since the last call, oldest first.
    pub(crate) fn drain_evicted(&mut self) -> Vec<BlobId> {
        std::mem::take(&mut self.evicted)
    }

    /// Hits, misses and evictions so far.
    pub(crate) fn counters(&self) -> CacheCounters {
        self.counters
    }

    /// How many blobs are held.
    pub(crate) fn len(&self) -> usize {
        self.evictor.held().0
    }

    /// The total size of the held blobs.
    pub(crate) fn size_bytes(&self) -> usize {
        self.evictor.held().1
    }

    /// The most bytes held.
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    /// The eviction policy.
    pub(crate) fn policy(&self) -> CachePolicy {
        self.policy
    }

    fn check_invariants(&self) {
        assert!(
            self.size_bytes() <= self.capacity_bytes,
            "cache over capacity"
        );
        self.evictor.check();
    }
}
