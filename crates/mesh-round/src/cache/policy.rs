//! Which blobs a full cache gives up: the configurable [`CachePolicy`] and
//! the [`Evictor`] that carries it out over blob ids and sizes (the bytes
//! stay in [`BlobCache`](super::BlobCache)).

use std::fmt;
use std::str::FromStr;

use super::lfu::Lfu;
use super::lru::Lru;
use super::tinylfu::TinyLfu;
use super::BlobId;

/// How the blob cache chooses what to evict when a new blob needs room.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum CachePolicy {
    /// Least recently used first (the default): right when the blobs in use
    /// are the newest ones, as in a job whose rounds each bring a new model.
    #[default]
    Lru,
    /// Least frequently used first (uses counted while held, least recent
    /// first among equals): keeps blobs asked for again and again, but a
    /// once-popular blob stays until others are used more often.
    Lfu,
    /// W-TinyLFU: a small LRU window, then admission to the main area only for
    /// blobs asked for more often than what they would replace, with counts
    /// that fade over time and a window size that adapts to the hit rate.
    /// Resists scans of blobs used once.
    Adaptive,
}

impl CachePolicy {
    /// Every policy, in the order tables list them.
    pub const ALL: [CachePolicy; 3] = [CachePolicy::Lru, CachePolicy::Lfu, CachePolicy::Adaptive];

    /// The policy's name in configs, flags and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CachePolicy::Lru => "lru",
            CachePolicy::Lfu => "lfu",
            CachePolicy::Adaptive => "adaptive",
        }
    }
}

impl fmt::Display for CachePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cache policy name that is none of `lru`, `lfu`, `adaptive`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown cache policy {0:?}: expected lru, lfu or adaptive")]
pub struct ParseCachePolicyError(pub String);

impl FromStr for CachePolicy {
    type Err = ParseCachePolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CachePolicy::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ParseCachePolicyError(s.to_owned()))
    }
}

/// A policy's bookkeeping of the held blob ids and sizes.
#[derive(Debug)]
pub(crate) enum Evictor {
    /// [`CachePolicy::Lru`].
    Lru(Lru),
    /// [`CachePolicy::Lfu`].
    Lfu(Lfu),
    /// [`CachePolicy::Adaptive`].
    Adaptive(Box<TinyLfu>),
}

impl Evictor {
    /// Empty bookkeeping for `policy` over `capacity_bytes`.
    pub(crate) fn new(policy: CachePolicy, capacity_bytes: usize) -> Self {
        match policy {
            CachePolicy::Lru => Evictor::Lru(Lru::default()),
            CachePolicy::Lfu => Evictor::Lfu(Lfu::default()),
            CachePolicy::Adaptive => Evictor::Adaptive(Box::new(TinyLfu::new(capacity_bytes))),
        }
    }

    /// A lookup found the held blob `id`.
    pub(crate) fn on_hit(&mut self, id: &BlobId) {
        match self {
            Evictor::Lru(p) => p.touch(id),
            Evictor::Lfu(p) => p.touch(id),
            Evictor::Adaptive(p) => p.on_hit(id),
        }
    }

    /// A lookup did not find `id`.
    pub(crate) fn on_miss(&mut self, id: &BlobId) {
        if let Evictor::Adaptive(p) = self {
            p.on_miss(id);
        }
    }

    /// The held blob `id` was stored again.
    pub(crate) fn on_refresh(&mut self, id: &BlobId) {
        match self {
            Evictor::Lru(p) => p.touch(id),
            Evictor::Lfu(p) => p.touch(id),
            Evictor::Adaptive(p) => p.touch(id),
        }
    }

    /// Admits the new blob `id`, pushing the ids it evicts to `evicted`;
    /// `id` is held afterwards. The caller ensures `id` is not held and
    /// `size_bytes <= capacity_bytes`.
    pub(crate) fn insert(
        &mut self,
        id: BlobId,
        size_bytes: usize,
        capacity_bytes: usize,
        evicted: &mut Vec<BlobId>,
    ) {
        match self {
            Evictor::Lru(p) => p.insert(id, size_bytes, capacity_bytes, evicted),
            Evictor::Lfu(p) => p.insert(id, size_bytes, capacity_bytes, evicted),
            Evictor::Adaptive(p) => p.insert(id, size_bytes, evicted),
        }
    }

    /// The caller removed `id`.
    pub(crate) fn remove(&mut self, id: &BlobId) {
        match self {
            Evictor::Lru(p) => p.remove(id),
            Evictor::Lfu(p) => p.remove(id),
            Evictor::Adaptive(p) => p.remove(id),
        }
    }

    /// Whether `id` is held.
    pub(crate) fn contains(&self, id: &BlobId) -> bool {
        match self {
            Evictor::Lru(p) => p.contains(id),
            Evictor::Lfu(p) => p.contains(id),
            Evictor::Adaptive(p) => p.contains(id),
        }
    }

    /// How many blobs are held, and their total size.
    pub(crate) fn held(&self) -> (usize, usize) {
        match self {
            Evictor::Lru(p) => p.held(),
            Evictor::Lfu(p) => p.held(),
            Evictor::Adaptive(p) => p.held(),
        }
    }

    /// Panics if the bookkeeping is inconsistent.
    pub(crate) fn check(&self) {
        match self {
            Evictor::Lru(p) => p.check(),
            Evictor::Lfu(p) => p.check(),
            Evictor::Adaptive(p) => p.check(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_parse_display_and_serialize_in_lowercase() {
        for policy in CachePolicy::ALL {
            assert_eq!(policy.to_string().parse::<CachePolicy>(), Ok(policy));
            let json = serde_json::to_string(&policy).expect("serialize");
            assert_eq!(json, format!("\"{policy}\""));
            assert_eq!(
                serde_json::from_str::<CachePolicy>(&json).ok(),
                Some(policy)
            );
        }
        assert_eq!(" Adaptive ".parse(), Ok(CachePolicy::Adaptive));
        assert_eq!(CachePolicy::default(), CachePolicy::Lru);
    }

    #[test]
    fn an_unknown_policy_name_says_what_is_allowed() {
        let err = "arc".parse::<CachePolicy>().expect_err("not a policy");
        assert_eq!(
            err.to_string(),
            "unknown cache policy \"arc\": expected lru, lfu or adaptive"
        );
        assert!(serde_json::from_str::<CachePolicy>("\"arc\"").is_err());
    }
}
