//! Rate limiting of repeated log lines: at most one line per call site and
//! key per interval; the next line written says how many were left out.
//!
//! Hostile or broken input (garbage on a listening port, a job no node can
//! run, a client over its connection cap) can trigger the same warning
//! thousands of times a second. A [`LogLimiter`] turns that into one line per
//! interval, with a count:
//!
//! ```text
//!   admit(site, key, now_ms) ── first line of (site, key), or interval passed ──► Some(suppressed)
//!                           └── within the interval of the last line ──────────► None (counted)
//! ```
//!
//! It keeps at most `keys_max` keys: when full, keys whose interval has
//! passed go first, then the key logged longest ago (its count is lost). It
//! holds no clock: callers pass `now_ms`, so tests are deterministic.

use std::collections::HashMap;
use std::fmt;

/// Default interval between two lines of the same site and key, in ms.
pub const LOG_INTERVAL_MS: u64 = 10_000;
/// Default number of keys tracked at once.
pub const LOG_KEYS_MAX: usize = 1_024;

#[derive(Clone, Copy, Debug)]
struct Entry {
    logged_ms: u64,
    suppressed: u64,
}

/// Decides which repeated log lines are written (see the module docs).
#[derive(Debug)]
pub struct LogLimiter {
    interval_ms: u64,
    keys_max: usize,
    entries: HashMap<(&'static str, String), Entry>,
}

impl Default for LogLimiter {
    /// One line per site and key every [`LOG_INTERVAL_MS`], [`LOG_KEYS_MAX`] keys.
    fn default() -> Self {
        Self::new(LOG_INTERVAL_MS, LOG_KEYS_MAX)
    }
}

impl LogLimiter {
    /// A limiter writing one line per site and key every `interval_ms`,
    /// tracking at most `keys_max` keys (at least one).
    pub fn new(interval_ms: u64, keys_max: usize) -> Self {
        Self {
            interval_ms,
            keys_max: keys_max.max(1),
            entries: HashMap::new(),
        }
    }

    /// Whether the line of `site` about `key` is written at `now_ms`:
    /// `Some(n)` to write it, `n` lines of the same site and key having been
    /// left out since the last one written; `None` to leave it out.
    pub fn admit(&mut self, site: &'static str, key: &str, now_ms: u64) -> Option<Suppressed> {
        let interval_ms = self.interval_ms;
        if let Some(entry) = self.entries.get_mut(&(site, key.to_owned())) {
            if now_ms.saturating_sub(entry.logged_ms) < interval_ms {
                entry.suppressed = entry.suppressed.saturating_add(1);
                return None;
            }
            let suppressed = Suppressed(entry.suppressed);
            *entry = Entry {
                logged_ms: now_ms,
                suppressed: 0,
            };
            return Some(suppressed);
        }
        self.make_room(now_ms);
        let entry = Entry {
            logged_ms: now_ms,
            suppressed: 0,
        };
        self.entries.insert((site, key.to_owned()), entry);
        Some(Suppressed(0))
    }

    fn make_room(&mut self, now_ms: u64) {
        if self.entries.len() < self.keys_max {
            return;
        }
        let interval_ms = self.interval_ms;
        self.entries
            .retain(|_, e| now_ms.saturating_sub(e.logged_ms) < interval_ms);
        if self.entries.len() < self.keys_max {
            return;
        }
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.logged_ms)
            .map(|(k, _)| k.clone());
        if let Some(oldest) = oldest {
            self.entries.remove(&oldest);
        }
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// How many lines were left out before the one being written. Displays as
/// nothing for zero and as ` (N similar suppressed)` otherwise, to append to
/// the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Suppressed(pub u64);

impl fmt::Display for Suppressed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} similar suppressed)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn one_line_per_key_per_interval_and_the_next_carries_the_count() {
        let mut limiter = LogLimiter::new(10_000, 8);
        assert_eq!(limiter.admit("job", "a", 0), Some(Suppressed(0)));
        for t in 1..=5 {
            assert_eq!(limiter.admit("job", "a", t), None);
        }
        assert_eq!(
            limiter.admit("job", "b", 6),
            Some(Suppressed(0)),
            "keys apart"
        );
        assert_eq!(
            limiter.admit("other", "a", 7),
            Some(Suppressed(0)),
            "sites apart"
        );
        assert_eq!(limiter.admit("job", "a", 9_999), None);
        let next = limiter.admit("job", "a", 10_000).expect("interval passed");
        assert_eq!(next, Suppressed(6));
        assert_eq!(next.to_string(), " (6 similar suppressed)");
        assert_eq!(Suppressed(0).to_string(), "");
        assert_eq!(limiter.admit("job", "a", 10_001), None);
    }

    /// Regression: one failing job logged 192,016 identical lines in
    /// 10 s; through the limiter the same burst is one line.
    #[test]
    fn a_burst_of_identical_warnings_is_one_line() {
        let mut limiter = LogLimiter::default();
        let written = (0..192_016u64)
            .filter(|i| limiter.admit("initial-model", "job-1", i / 20).is_some())
            .count();
        assert_eq!(written, 1);
        let later = limiter.admit("initial-model", "job-1", LOG_INTERVAL_MS);
        assert_eq!(later, Some(Suppressed(192_015)));
    }

    #[test]
    fn a_full_table_drops_stale_keys_first_then_the_oldest() {
        let mut limiter = LogLimiter::new(100, 2);
        limiter.admit("s", "old", 0);
        limiter.admit("s", "mid", 150);
        assert!(limiter.admit("s", "new", 160).is_some());
        assert_eq!(limiter.len(), 2, "the stale key made room");
        assert_eq!(limiter.admit("s", "mid", 170), None, "a live key is kept");
        assert!(limiter.admit("s", "newest", 180).is_some());
        assert_eq!(limiter.len(), 2);
        assert!(
            limiter.admit("s", "mid", 190).is_some(),
            "the oldest live key was evicted, so it logs again"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn never_tracks_more_than_keys_max_nor_writes_twice_in_an_interval(
            keys_max in 1usize..12,
            events in prop::collection::vec((0u8..10, 0u64..50), 1..200),
        ) {
            let mut limiter = LogLimiter::new(100, keys_max);
            let mut last: HashMap<u8, u64> = HashMap::new();
            let mut now_ms = 0;
            for (key, step_ms) in events {
                now_ms += step_ms;
                if limiter.admit("site", &key.to_string(), now_ms).is_some() {
                    // With room for all ten keys nothing is evicted early.
                    if let (Some(t), true) = (last.get(&key), keys_max >= 10) {
                        prop_assert!(now_ms - t >= 100);
                    }
                    last.insert(key, now_ms);
                }
                prop_assert!(limiter.len() <= keys_max);
            }
        }
    }
}
