//! The adaptive policy: W-TinyLFU (Einziger, Friedman and Manes, "TinyLFU: A
//! Highly Efficient Cache Admission Policy", 2017; as in Caffeine), sized in
//! bytes.
//!
//! ```text
//!   insert ──► window (LRU) ──overflow──► probation (LRU) ──hit──► protected (LRU, ≤ 80% of main)
//!                                             ▲                         │ overflow
//!                                             └─────────────────────────┘
//!   over capacity: candidate (newest arrival in probation) vs victim (oldest of probation);
//!                  the one the frequency sketch counts less often is evicted (ties: the candidate)
//!   every 10 x sketch width lookups: the hill climber moves the window/main split
//!                  towards whichever direction raised the hit rate
//! ```
//!
//! A new blob always enters the window, so it is held when its insert
//! returns, even if the window is smaller than the blob: the node serves
//! what it just stored. Blobs leave the window for probation; they stay in
//! the cache only if the sketch counts them more often than the probation
//! victim they would replace, so a scan of blobs used once cannot flush blobs
//! used many times. Probation blobs used again are promoted to protected.
//!
//! The window starts at 1% of the capacity, and the hill climber moves it
//! between 1% and 80% in steps of 6.25% of the capacity (decaying by 2% per
//! sample, restarting when the hit rate jumps by 5 points), so a workload
//! where recency matters most (every round brings a new model) can grow the
//! window towards LRU.

use super::lru::LruList;
use super::sketch::FrequencySketch;
use super::BlobId;

/// The window's share of the capacity, at start and at least, in percent.
const WINDOW_PERCENT_MIN: usize = 1;
/// The window's largest share of the capacity, in percent.
const WINDOW_PERCENT_MAX: usize = 80;
/// The protected segment's share of the main area, in percent.
const PROTECTED_PERCENT: usize = 80;
/// The hill climber's first step, in percent of the capacity.
const STEP_PERCENT: f64 = 6.25;
/// Each sample keeps this share of the previous step.
const STEP_DECAY: f64 = 0.98;
/// A change of the hit rate this large restarts the climb with a full step.
const RESTART_THRESHOLD: f64 = 0.05;

/// W-TinyLFU over byte sizes.
#[derive(Debug)]
pub(crate) struct TinyLfu {
    window: LruList,
    probation: LruList,
    protected: LruList,
    sketch: FrequencySketch,
    capacity_bytes: usize,
    window_max_bytes: usize,
    climber: HillClimber,
}

impl TinyLfu {
    /// An empty cache of `capacity_bytes` with the window at its smallest.
    pub(crate) fn new(capacity_bytes: usize) -> Self {
        Self {
            window: LruList::default(),
            probation: LruList::default(),
            protected: LruList::default(),
            sketch: FrequencySketch::default(),
            capacity_bytes,
            window_max_bytes: percent(capacity_bytes, WINDOW_PERCENT_MIN),
            climber: HillClimber::new(capacity_bytes),
        }
    }

    /// A lookup found `id`.
    pub(crate) fn on_hit(&mut self, id: &BlobId) {
        self.touch(id);
        self.sample(true);
    }

    /// A lookup did not find `id`: counted, so a blob asked for often is
    /// admitted once it arrives.
    pub(crate) fn on_miss(&mut self, id: &BlobId) {
        self.sketch.increment(id);
        self.sample(false);
    }

    /// A held blob was used (stored again).
    pub(crate) fn touch(&mut self, id: &BlobId) {
        self.sketch.increment(id);
        if self.window.touch(id) || self.protected.touch(id) {
            return;
        }
        if let Some(size_bytes) = self.probation.remove(id) {
            self.protected.push_newest(*id, size_bytes);
            self.demote_protected();
        }
    }

    /// Admits `id` into the window, moves what overflows the window to
    /// probation, and evicts until everything fits in the capacity; `id`
    /// itself stays. The caller ensures `size_bytes <= capacity_bytes`.
    pub(crate) fn insert(&mut self, id: BlobId, size_bytes: usize, evicted: &mut Vec<BlobId>) {
        self.sketch.ensure_capacity(self.len() + 1);
        self.sketch.increment(&id);
        self.window.push_newest(id, size_bytes);
        let candidates = self.drain_window();
        self.evict_main(candidates, &id, evicted);
        debug_assert!(self.window.contains(&id) || self.probation.contains(&id));
    }

    /// The caller removed `id`.
    pub(crate) fn remove(&mut self, id: &BlobId) {
        if self.window.remove(id).is_none() && self.probation.remove(id).is_none() {
            self.protected.remove(id);
        }
    }

    /// Whether `id` is held.
    pub(crate) fn contains(&self, id: &BlobId) -> bool {
        self.window.contains(id) || self.probation.contains(id) || self.protected.contains(id)
    }

    /// How many blobs are held, and their total size.
    pub(crate) fn held(&self) -> (usize, usize) {
        (self.len(), self.size_bytes())
    }

    /// Panics if a segment is inconsistent or the segments overlap in size.
    pub(crate) fn check(&self) {
        self.window.check();
        self.probation.check();
        self.protected.check();
        assert!(
            self.size_bytes() <= self.capacity_bytes,
            "adaptive cache over capacity"
        );
    }

    fn len(&self) -> usize {
        self.window.len() + self.probation.len() + self.protected.len()
    }

    fn size_bytes(&self) -> usize {
        self.window.size_bytes() + self.probation.size_bytes() + self.protected.size_bytes()
    }

    fn protected_max_bytes(&self) -> usize {
        percent(
            self.capacity_bytes.saturating_sub(self.window_max_bytes),
            PROTECTED_PERCENT,
        )
    }

    /// Moves the window's oldest blobs to probation until the window fits
    /// its target, keeping at least the newest; returns them, oldest first.
    fn drain_window(&mut self) -> Vec<BlobId> {
        let mut moved = Vec::new();
        while self.window.size_bytes() > self.window_max_bytes && self.window.len() > 1 {
            let Some((id, size_bytes)) = self.window.pop_oldest() else {
                break;
            };
            self.probation.push_newest(id, size_bytes);
            moved.push(id);
        }
        moved
    }

    /// Moves protected blobs beyond the protected segment's share to probation.
    fn demote_protected(&mut self) {
        while self.protected.size_bytes() > self.protected_max_bytes() {
            let Some((id, size_bytes)) = self.protected.pop_oldest() else {
                break;
            };
            self.probation.push_newest(id, size_bytes);
        }
    }

    /// Evicts until the held blobs fit: each candidate that just left the
    /// window (newest first) duels the oldest probation blob, and the one
    /// the sketch counts less often goes. Without candidates, the oldest
    /// probation blob goes, then the oldest protected one, then the oldest
    /// window blob other than `newest`.
    fn evict_main(&mut self, mut candidates: Vec<BlobId>, newest: &BlobId, out: &mut Vec<BlobId>) {
        while self.size_bytes() > self.capacity_bytes {
            let victim = self.probation.oldest();
            let loser = match (candidates.last().copied(), victim) {
                (Some(candidate), Some(victim)) if candidate != victim => {
                    if self.sketch.frequency(&candidate) > self.sketch.frequency(&victim) {
                        candidates.retain(|c| *c != victim);
                        victim
                    } else {
                        candidates.pop();
                        candidate
                    }
                }
                (Some(candidate), _) => {
                    candidates.pop();
                    candidate
                }
                (None, Some(victim)) => victim,
                (None, None) => self
                    .protected
                    .oldest()
                    .or_else(|| self.window.oldest().filter(|id| id != newest))
                    .expect("over capacity with nothing left to evict but the new blob"),
            };
            self.remove(&loser);
            out.push(loser);
        }
    }

    /// Feeds one lookup to the hill climber and applies its verdict.
    fn sample(&mut self, hit: bool) {
        let Some(step_bytes) = self.climber.record(hit, self.sketch.width()) else {
            return;
        };
        let low = percent(self.capacity_bytes, WINDOW_PERCENT_MIN);
        let high = percent(self.capacity_bytes, WINDOW_PERCENT_MAX);
        let target = if step_bytes >= 0.0 {
            self.window_max_bytes.saturating_add(step_bytes as usize)
        } else {
            self.window_max_bytes.saturating_sub((-step_bytes) as usize)
        };
        self.window_max_bytes = target.clamp(low, high);
        // Nothing is evicted here: what no longer fits its segment moves to probation.
        self.drain_window();
        self.demote_protected();
    }
}

/// `percent`% of `bytes`, rounded down.
fn percent(bytes: usize, percent: usize) -> usize {
    // Widened so large capacities do not overflow.
    (bytes as u128 * percent as u128 / 100) as usize
}

/// Moves the window size by steps, each in the direction that raised the hit
/// rate over the last sample of lookups (Caffeine's simple climber).
#[derive(Debug)]
struct HillClimber {
    capacity_bytes: usize,
    hits: u64,
    misses: u64,
    hit_rate_previous: f64,
    step_bytes: f64,
}

impl HillClimber {
    fn new(capacity_bytes: usize) -> Self {
        Self {
            capacity_bytes,
            hits: 0,
            misses: 0,
            hit_rate_previous: 0.0,
            step_bytes: Self::full_step(capacity_bytes),
        }
    }

    fn full_step(capacity_bytes: usize) -> f64 {
        capacity_bytes as f64 * STEP_PERCENT / 100.0
    }

    /// Counts a lookup; once 10 x `width` lookups are in, returns how many
    /// bytes to move the window by (negative: shrink it).
    fn record(&mut self, hit: bool, width: usize) -> Option<f64> {
        if hit {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        let lookups = self.hits + self.misses;
        if lookups < 10 * width as u64 {
            return None;
        }
        let hit_rate = self.hits as f64 / lookups as f64;
        let delta = hit_rate - self.hit_rate_previous;
        let amount = if delta >= 0.0 {
            self.step_bytes
        } else {
            -self.step_bytes
        };
        self.step_bytes = if delta.abs() >= RESTART_THRESHOLD {
            Self::full_step(self.capacity_bytes).copysign(amount)
        } else {
            STEP_DECAY * amount
        };
        self.hit_rate_previous = hit_rate;
        self.hits = 0;
        self.misses = 0;
        Some(amount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> BlobId {
        BlobId::of(&n.to_le_bytes())
    }

    #[test]
    fn a_new_blob_is_held_even_when_larger_than_the_window() {
        let mut cache = TinyLfu::new(1_000);
        let mut evicted = Vec::new();
        cache.insert(id(1), 600, &mut evicted);
        assert!(cache.window.contains(&id(1)), "window of 10 bytes keeps it");
        cache.insert(id(2), 600, &mut evicted);
        assert!(cache.window.contains(&id(2)));
        assert_eq!(
            evicted,
            vec![id(1)],
            "the candidate leaving the window lost"
        );
        cache.check();
    }

    #[test]
    fn a_candidate_counted_more_often_evicts_the_probation_victim() {
        let mut cache = TinyLfu::new(300);
        let mut evicted = Vec::new();
        cache.insert(id(1), 100, &mut evicted);
        cache.insert(id(2), 100, &mut evicted);
        cache.insert(id(3), 100, &mut evicted);
        // 1 and 2 sit in probation, 3 in the window; 3 is asked for often.
        for _ in 0..4 {
            cache.on_hit(&id(3));
        }
        cache.insert(id(4), 100, &mut evicted);
        assert_eq!(evicted, vec![id(1)], "3 (5 uses) beat 1 (1 use)");
        assert!(cache.probation.contains(&id(3)));
        cache.check();
    }

    #[test]
    fn a_probation_hit_is_promoted_and_protected_overflow_is_demoted() {
        let mut cache = TinyLfu::new(1_000);
        let mut evicted = Vec::new();
        for n in 1..=4 {
            cache.insert(id(n), 200, &mut evicted);
        }
        for n in 1..=3 {
            cache.on_hit(&id(n));
        }
        // Protected may hold 80% of 990 bytes: three blobs of 200 fit.
        assert_eq!(cache.protected.len(), 3);
        cache.insert(id(5), 200, &mut evicted);
        cache.on_hit(&id(4));
        assert_eq!(cache.protected.len(), 3, "the oldest protected was demoted");
        assert!(cache.probation.contains(&id(1)));
        assert!(evicted.is_empty());
        cache.check();
    }

    #[test]
    fn the_climber_grows_the_window_while_the_hit_rate_rises() {
        let mut cache = TinyLfu::new(10_000);
        let start = cache.window_max_bytes;
        let mut evicted = Vec::new();
        cache.insert(id(1), 10, &mut evicted);
        // One sample of 160 lookups with hits: the first step grows the window.
        for _ in 0..160 {
            cache.on_hit(&id(1));
        }
        assert_eq!(cache.window_max_bytes, start + 625);
        // A worse sample reverses the direction with a full step (the rate fell by 50 points).
        for n in 0..160 {
            if n % 2 == 0 {
                cache.on_hit(&id(1));
            } else {
                cache.on_miss(&id(2));
            }
        }
        assert_eq!(cache.window_max_bytes, start);
    }
}
