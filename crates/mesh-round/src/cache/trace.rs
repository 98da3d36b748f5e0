//! Trace-driven comparison of the cache policies: a bounded record of what a
//! [`BlobCache`](super::BlobCache) was asked ([`AccessLog`], kept only when
//! [`BlobCache::record_accesses`](super::BlobCache::record_accesses) asks for
//! it), a replay of such traces under any policy and capacity ([`replay`],
//! [`compare`]), and a seeded synthetic trace with scans ([`ScanWorkload`]).
//!
//! ```text
//!   record:  Hit(id, size) | Miss(id) | Insert(id, size) | Remove(id, size)
//!   replay:  Hit    ─► lookup; a miss here is a blob the recorded cache held: fetch it again
//!                      (insert it; its bytes count as refetched)
//!            Miss   ─► lookup (the blob arrives later by its own Insert, as it did)
//!            Insert ─► insert          Remove ─► remove
//! ```
//!
//! A replay keeps only ids and sizes (the cache's ledger), never bytes, so
//! traces of large models replay in little memory. Each trace (one per
//! node) runs in its own cache; outcomes add up.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::ledger::Ledger;
use super::{BlobId, CachePolicy};

/// What one recorded access was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    /// A lookup that found the blob.
    Hit,
    /// A lookup that did not.
    Miss,
    /// A blob stored (new, held already, or refused as too large).
    Insert,
    /// A blob removed by the cache's owner.
    Remove,
}

/// One recorded access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// The blob.
    pub id: BlobId,
    /// What happened.
    pub kind: AccessKind,
    /// The blob's size; 0 for a miss (the cache did not know it).
    pub size_bytes: usize,
}

/// A bounded record of accesses, oldest first.
#[derive(Clone, Debug, Default)]
pub struct AccessLog {
    accesses: Vec<Access>,
    accesses_max: usize,
    dropped: u64,
}

impl AccessLog {
    /// An empty record that keeps at most `accesses_max` accesses.
    pub fn new(accesses_max: usize) -> Self {
        Self {
            accesses: Vec::new(),
            accesses_max,
            dropped: 0,
        }
    }

    /// Records `access`, or counts it as dropped when the record is full.
    pub fn push(&mut self, access: Access) {
        if self.accesses.len() < self.accesses_max {
            self.accesses.push(access);
        } else {
            self.dropped += 1;
        }
    }

    /// The accesses recorded, oldest first.
    pub fn accesses(&self) -> &[Access] {
        &self.accesses
    }

    /// Accesses not recorded because the record was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Appends `other` (a later record of the same cache).
    pub fn append(&mut self, other: AccessLog) {
        for access in other.accesses {
            self.push(access);
        }
        self.dropped += other.dropped;
    }

    /// The recorded accesses.
    pub fn into_accesses(self) -> Vec<Access> {
        self.accesses
    }
}

/// How a policy did on replayed traces at one capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReplayOutcome {
    /// The policy.
    pub policy: CachePolicy,
    /// The capacity of each trace's cache.
    pub capacity_bytes: usize,
    /// Lookups replayed.
    pub lookups: u64,
    /// Lookups that hit.
    pub hits: u64,
    /// Blobs evicted.
    pub evictions: u64,
    /// Bytes of blobs fetched again because a lookup missed a blob the
    /// recorded cache held.
    pub refetched_bytes: u64,
}

impl ReplayOutcome {
    /// Hits per lookup (0 without lookups).
    pub fn hit_rate(&self) -> f64 {
        if self.lookups == 0 {
            0.0
        } else {
            self.hits as f64 / self.lookups as f64
        }
    }
}

/// Replays each trace in its own empty cache of `capacity_bytes` under
/// `policy`; the outcomes add up.
pub fn replay(traces: &[Vec<Access>], policy: CachePolicy, capacity_bytes: usize) -> ReplayOutcome {
    let mut total = ReplayOutcome {
        policy,
        capacity_bytes,
        lookups: 0,
        hits: 0,
        evictions: 0,
        refetched_bytes: 0,
    };
    for trace in traces {
        let mut ledger = Ledger::new(capacity_bytes, policy);
        for access in trace {
            match access.kind {
                AccessKind::Hit => {
                    if !ledger.lookup(&access.id)
                        && ledger.insert(access.id, access.size_bytes).is_ok()
                    {
                        total.refetched_bytes += access.size_bytes as u64;
                    }
                }
                AccessKind::Miss => {
                    ledger.lookup(&access.id);
                }
                AccessKind::Insert => {
                    // A blob too large for this capacity is refused, as it would be live.
                    let _ = ledger.insert(access.id, access.size_bytes);
                }
                AccessKind::Remove => {
                    ledger.remove(&access.id);
                }
            }
        }
        let counters = ledger.counters();
        total.lookups += counters.hits + counters.misses;
        total.hits += counters.hits;
        total.evictions += counters.evictions;
    }
    total
}

/// [`replay`] under every policy at every capacity: capacity by capacity,
/// policies in [`CachePolicy::ALL`] order.
pub fn compare(traces: &[Vec<Access>], capacities_bytes: &[usize]) -> Vec<ReplayOutcome> {
    capacities_bytes
        .iter()
        .flat_map(|&capacity| {
            CachePolicy::ALL
                .into_iter()
                .map(move |policy| replay(traces, policy, capacity))
        })
        .collect()
}

/// The most bytes of distinct blobs any one trace touched: a cache that
/// large never evicts on that trace.
pub fn working_set_bytes(traces: &[Vec<Access>]) -> usize {
    traces
        .iter()
        .map(|trace| {
            let mut sizes = std::collections::BTreeMap::new();
            for access in trace {
                if access.size_bytes > 0 {
                    sizes.insert(access.id, access.size_bytes);
                }
            }
            sizes.values().sum::<usize>()
        })
        .max()
        .unwrap_or(0)
}

/// A synthetic workload where recency misleads: a few blobs asked for again
/// and again (skewed towards the first), interrupted by scans of blobs each
/// asked for once, as when a node relays a burst of one-off blobs between
/// uses of the models it serves. Sizes vary by ±50% around the mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ScanWorkload {
    /// Blobs asked for again and again.
    pub hot_blobs: usize,
    /// Lookups of hot blobs between two scans.
    pub lookups_between_scans: usize,
    /// Blobs of one scan, each asked for once.
    pub scan_blobs: usize,
    /// Scans in the trace.
    pub scans: usize,
    /// Mean blob size.
    pub blob_size_bytes: usize,
    /// Seed of the choices of blobs and sizes.
    pub seed: u64,
}

impl Default for ScanWorkload {
    /// 16 hot blobs of 1 MiB on average, 200 lookups between scans of 32
    /// one-off blobs, 20 scans.
    fn default() -> Self {
        Self {
            hot_blobs: 16,
            lookups_between_scans: 200,
            scan_blobs: 32,
            scans: 20,
            blob_size_bytes: 1 << 20,
            seed: 42,
        }
    }
}

impl ScanWorkload {
    /// The trace as an unbounded cache would record it: a blob's first
    /// lookup misses and is followed by its insert; later lookups hit.
    pub fn trace(&self) -> Vec<Access> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let size = |rng: &mut ChaCha8Rng| {
            let half = self.blob_size_bytes / 2;
            rng.random_range(half..=self.blob_size_bytes + half)
        };
        let hot: Vec<(BlobId, usize)> = (0..self.hot_blobs)
            .map(|i| (synthetic_id("hot", i), size(&mut rng)))
            .collect();
        let mut seen = vec![false; hot.len()];
        let mut trace = Vec::new();
        for scan in 0..self.scans {
            for _ in 0..self.lookups_between_scans {
                if hot.is_empty() {
                    break;
                }
                // Squaring a uniform draw skews the choice towards the first blobs.
                let u: f64 = rng.random();
                let i = ((u * u * hot.len() as f64) as usize).min(hot.len() - 1);
                let (id, size_bytes) = hot[i];
                if seen[i] {
                    trace.push(access(id, AccessKind::Hit, size_bytes));
                } else {
                    seen[i] = true;
                    trace.push(access(id, AccessKind::Miss, 0));
                    trace.push(access(id, AccessKind::Insert, size_bytes));
                }
            }
            for j in 0..self.scan_blobs {
                let id = synthetic_id("scan", scan * self.scan_blobs + j);
                trace.push(access(id, AccessKind::Miss, 0));
                trace.push(access(id, AccessKind::Insert, size(&mut rng)));
            }
        }
        trace
    }
}

fn access(id: BlobId, kind: AccessKind, size_bytes: usize) -> Access {
    Access {
        id,
        kind,
        size_bytes,
    }
}

fn synthetic_id(kind: &str, i: usize) -> BlobId {
    BlobId::of(format!("synthetic {kind} blob {i}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::BlobCache;

    #[test]
    fn access_log_is_bounded_and_counts_what_it_dropped() {
        let mut log = AccessLog::new(2);
        let a = access(BlobId::of(b"a"), AccessKind::Miss, 0);
        for _ in 0..5 {
            log.push(a);
        }
        assert_eq!((log.accesses().len(), log.dropped()), (2, 3));
    }

    #[test]
    fn a_cache_records_lookups_inserts_and_removals_when_asked() {
        let mut cache = BlobCache::new(100);
        let untraced = cache.insert(vec![9u8; 5]).expect("fits");
        cache.record_accesses(100);
        let a = BlobId::of(&[1u8; 10]);
        assert!(cache.get(&a).is_none());
        cache.insert(vec![1u8; 10]).expect("fits");
        cache.get(&a).expect("held");
        assert!(cache.insert(vec![2u8; 101]).is_err());
        cache.remove(&untraced);
        let log = cache.take_access_log().expect("recording");
        let kinds: Vec<(AccessKind, usize)> = log
            .accesses()
            .iter()
            .map(|a| (a.kind, a.size_bytes))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (AccessKind::Miss, 0),
                (AccessKind::Insert, 10),
                (AccessKind::Hit, 10),
                (AccessKind::Insert, 101),
                (AccessKind::Remove, 5),
            ]
        );
        cache.get(&a);
        assert!(cache.take_access_log().is_none(), "recording stopped");
    }

    #[test]
    fn replay_of_a_recorded_trace_at_the_recorded_capacity_gives_the_recorded_counters() {
        for policy in CachePolicy::ALL {
            let mut cache = BlobCache::with_policy(256, policy);
            cache.record_accesses(10_000);
            let trace = ScanWorkload {
                blob_size_bytes: 64,
                ..ScanWorkload::default()
            }
            .trace();
            // Drive the live cache with the synthetic requests: fetch on a miss.
            let blobs: std::collections::BTreeMap<BlobId, usize> = trace
                .iter()
                .filter(|a| a.kind == AccessKind::Insert)
                .map(|a| (a.id, a.size_bytes))
                .collect();
            let bytes_of = |id: &BlobId, size: usize| -> Vec<u8> {
                let mut b = id.0.to_vec();
                b.resize(size.max(32), 0);
                b
            };
            for a in trace.iter().filter(|a| a.kind != AccessKind::Insert) {
                let bytes = bytes_of(&a.id, blobs[&a.id]);
                if cache.get(&BlobId::of(&bytes)).is_none() {
                    cache.insert(bytes).expect("fits");
                }
            }
            let live = cache.counters();
            let recorded = cache.take_access_log().expect("recording").into_accesses();
            assert!(live.evictions > 0, "{policy}: the trace must evict");
            let replayed = replay(&[recorded], policy, 256);
            assert_eq!(
                (replayed.lookups, replayed.hits, replayed.evictions),
                (live.hits + live.misses, live.hits, live.evictions),
                "{policy}"
            );
            assert_eq!(replayed.refetched_bytes, 0, "{policy}");
        }
    }

    #[test]
    fn synthetic_trace_is_a_pure_function_of_its_seed() {
        let workload = ScanWorkload::default();
        assert_eq!(workload.trace(), workload.trace());
        let other = ScanWorkload {
            seed: 7,
            ..workload
        };
        assert_ne!(workload.trace(), other.trace());
        let trace = workload.trace();
        let scans = trace
            .iter()
            .filter(|a| a.kind == AccessKind::Insert)
            .count();
        assert_eq!(scans, 16 + 20 * 32, "every blob is inserted once");
    }

    #[test]
    fn on_a_scan_workload_lfu_and_adaptive_beat_lru_and_unbounded_beats_all() {
        let traces = vec![ScanWorkload::default().trace()];
        let capacity = 24 << 20;
        let outcomes = compare(&traces, &[capacity, usize::MAX]);
        let rate = |policy, capacity| {
            outcomes
                .iter()
                .find(|o| o.policy == policy && o.capacity_bytes == capacity)
                .map(ReplayOutcome::hit_rate)
                .unwrap_or(0.0)
        };
        let lru = rate(CachePolicy::Lru, capacity);
        let lfu = rate(CachePolicy::Lfu, capacity);
        let adaptive = rate(CachePolicy::Adaptive, capacity);
        let unbounded = rate(CachePolicy::Lru, usize::MAX);
        assert!(lfu > lru + 0.05, "lfu {lfu} vs lru {lru}");
        assert!(adaptive > lru + 0.05, "adaptive {adaptive} vs lru {lru}");
        assert!(unbounded >= lfu && unbounded >= adaptive);
        for policy in CachePolicy::ALL {
            assert_eq!(rate(policy, usize::MAX), unbounded, "{policy}");
        }
    }
}
