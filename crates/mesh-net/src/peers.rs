//! The peer table: every peer a node knows, its connection state, RTT and
//! last-seen time, and when to dial it again.
//!
//! ```text
//!   insert ──> Known ──on_dialing──> Connecting ──on_admitted──> Admitted
//!                ^                      |  dial failed,             |  closed, or silent
//!                |                      |  silent too long          |  for silence_timeout_ms
//!                |                      v                           v
//!                +──── (dialable at next_attempt_ms) ─────────── Down
//! ```
//!
//! A failed or lost peer is redialled after a capped exponential backoff with
//! seeded jitter ([`Backoff`]); [`PeerTable::peers_to_dial`] says which peers
//! to dial to reach the target number of connections. The table is bounded:
//! when full, the down peer with the most failures makes room.

use std::collections::BTreeMap;
use std::fmt::Debug;

use mesh_security::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Capped exponential backoff with jitter: after `n` consecutive failures the
/// ceiling is `base_ms * 2^(n-1)`, capped at `max_ms`, and the delay is drawn
/// uniformly from the upper half of `[0, ceiling]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling after the first failure.
    pub base_ms: u64,
    /// Largest delay ever returned.
    pub max_ms: u64,
}

impl Backoff {
    /// The ceiling of the delay after `failures` consecutive failures (0 for none).
    pub fn ceiling_ms(&self, failures: u32) -> u64 {
        if failures == 0 {
            return 0;
        }
        let factor = 1u64.checked_shl(failures - 1).unwrap_or(u64::MAX);
        self.base_ms.saturating_mul(factor).min(self.max_ms)
    }

    /// A jittered delay after `failures` failures, in `[ceiling / 2, ceiling]`.
    pub fn delay_ms(&self, failures: u32, rng: &mut impl Rng) -> u64 {
        let ceiling_ms = self.ceiling_ms(failures);
        let floor_ms = ceiling_ms / 2;
        floor_ms + rng.random_range(0..=ceiling_ms - floor_ms)
    }
}

/// A peer's connection state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerState {
    /// Known (bootstrap or discovery) and never dialled.
    Known,
    /// A dial is under way, or the connection awaits admission.
    Connecting,
    /// Connected and admitted.
    Admitted,
    /// Failed or lost; dialable again at `next_attempt_ms`.
    Down,
}

impl PeerState {
    /// A stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Known => "known",
            Self::Connecting => "connecting",
            Self::Admitted => "admitted",
            Self::Down => "down",
        }
    }
}

/// What the table knows about one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Connection state.
    pub state: PeerState,
    /// When the state last changed, Unix milliseconds.
    pub state_since_ms: u64,
    /// Latest round-trip time, if measured.
    pub rtt_ms: Option<u64>,
    /// When the peer was last heard from, if ever.
    pub last_seen_ms: Option<u64>,
    /// Consecutive failed dials or lost connections since the last admission.
    pub failures: u32,
    /// Earliest time to dial it again.
    pub next_attempt_ms: u64,
}

/// Peer table limits and timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerTableConfig {
    /// Most peers held.
    pub peers_max: usize,
    /// Connections (admitted plus connecting) the node tries to keep.
    pub connections_target: usize,
    /// Redial backoff.
    pub backoff: Backoff,
    /// A connecting or admitted peer not heard from for this long is down.
    pub silence_timeout_ms: u64,
    /// Seed of the jitter generator.
    pub seed: u64,
}

impl Default for PeerTableConfig {
    fn default() -> Self {
        Self {
            peers_max: 1_024,
            connections_target: 8,
            backoff: Backoff {
                base_ms: 500,
                max_ms: 60_000,
            },
            silence_timeout_ms: 30_000,
            seed: 0,
        }
    }
}

/// Why a peer-table input could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The table is full and no down peer can be evicted. Retrying helps once
    /// peers go down or are removed.
    #[error("peer table is full ({peers_max} peers, none down); retry later")]
    Full {
        /// The configured limit.
        peers_max: usize,
    },
    /// The peer is not in the table. Not retryable: insert it first.
    #[error("peer {peer} is not in the peer table")]
    UnknownPeer {
        /// The peer (debug form).
        peer: String,
    },
    /// The transition is not allowed from the peer's state (a driver bug). Not retryable.
    #[error("peer {peer} cannot be dialled while {state}")]
    NotDialable {
        /// The peer (debug form).
        peer: String,
        /// Its current state label.
        state: &'static str,
    },
}

/// Every known peer, bounded by [`PeerTableConfig::peers_max`].
#[derive(Clone, Debug)]
pub struct PeerTable<K = NodeId> {
    config: PeerTableConfig,
    peers: BTreeMap<K, PeerInfo>,
    rng: ChaCha8Rng,
}

impl<K: Ord + Clone + Debug> PeerTable<K> {
    /// An empty table.
    pub fn new(config: PeerTableConfig) -> Self {
        Self {
            config,
            peers: BTreeMap::new(),
            rng: ChaCha8Rng::seed_from_u64(config.seed),
        }
    }

    fn unknown(peer: &K) -> PeerError {
        PeerError::UnknownPeer {
            peer: format!("{peer:?}"),
        }
    }

    /// Adds `peer` as [`PeerState::Known`], dialable now; returns false if it
    /// was already present (left unchanged). When full, evicts the down or
    /// never-dialled peer with the most failures (oldest state first).
    pub fn insert(&mut self, peer: K, now_ms: u64) -> Result<bool, PeerError> {
        if self.peers.contains_key(&peer) {
            return Ok(false);
        }
        if self.peers.len() >= self.config.peers_max {
            let victim = self
                .peers
                .iter()
                .filter(|(_, info)| matches!(info.state, PeerState::Known | PeerState::Down))
                .max_by_key(|(_, info)| (info.failures, u64::MAX - info.state_since_ms))
                .map(|(key, _)| key.clone())
                .ok_or(PeerError::Full {
                    peers_max: self.config.peers_max,
                })?;
            self.peers.remove(&victim);
        }
        let info = PeerInfo {
            state: PeerState::Known,
            state_since_ms: now_ms,
            rtt_ms: None,
            last_seen_ms: None,
            failures: 0,
            next_attempt_ms: now_ms,
        };
        self.peers.insert(peer, info);
        debug_assert!(self.peers.len() <= self.config.peers_max);
        Ok(true)
    }

    /// Removes `peer`; returns what was known about it.
    pub fn remove(&mut self, peer: &K) -> Option<PeerInfo> {
        self.peers.remove(peer)
    }

    /// A dial to `peer` started (only from known or down).
    pub fn on_dialing(&mut self, peer: &K, now_ms: u64) -> Result<(), PeerError> {
        let info = self
            .peers
            .get_mut(peer)
            .ok_or_else(|| Self::unknown(peer))?;
        if !matches!(info.state, PeerState::Known | PeerState::Down) {
            return Err(PeerError::NotDialable {
                peer: format!("{peer:?}"),
                state: info.state.as_str(),
            });
        }
        info.state = PeerState::Connecting;
        info.state_since_ms = now_ms;
        Ok(())
    }

    /// `peer` was admitted (outbound or inbound; an unknown peer is inserted).
    pub fn on_admitted(&mut self, peer: K, now_ms: u64) -> Result<(), PeerError> {
        self.insert(peer.clone(), now_ms)?;
        let info = self
            .peers
            .get_mut(&peer)
            .ok_or_else(|| Self::unknown(&peer))?;
        info.state = PeerState::Admitted;
        info.state_since_ms = now_ms;
        info.last_seen_ms = Some(now_ms);
        info.failures = 0;
        Ok(())
    }

    /// A dial failed or the connection closed, and no connection to `peer`
    /// is left (the caller checks): `peer` is down and its next attempt is
    /// scheduled with backoff. Returns that time. A peer already known or
    /// down is left as it is.
    pub fn on_disconnected(&mut self, peer: &K, now_ms: u64) -> Result<u64, PeerError> {
        let info = self
            .peers
            .get_mut(peer)
            .ok_or_else(|| Self::unknown(peer))?;
        if matches!(info.state, PeerState::Connecting | PeerState::Admitted) {
            Self::mark_down(info, &self.config.backoff, &mut self.rng, now_ms);
        }
        Ok(info.next_attempt_ms)
    }

    fn mark_down(info: &mut PeerInfo, backoff: &Backoff, rng: &mut ChaCha8Rng, now_ms: u64) {
        info.failures = info.failures.saturating_add(1);
        info.state = PeerState::Down;
        info.state_since_ms = now_ms;
        info.next_attempt_ms = now_ms.saturating_add(backoff.delay_ms(info.failures, rng));
    }

    /// `peer` was heard from at `now_ms` (any message).
    pub fn on_seen(&mut self, peer: &K, now_ms: u64) -> Result<(), PeerError> {
        let info = self
            .peers
            .get_mut(peer)
            .ok_or_else(|| Self::unknown(peer))?;
        info.last_seen_ms = Some(now_ms);
        Ok(())
    }

    /// A ping to `peer` took `rtt_ms`; it counts as hearing from it.
    pub fn on_rtt(&mut self, peer: &K, rtt_ms: u64, now_ms: u64) -> Result<(), PeerError> {
        let info = self
            .peers
            .get_mut(peer)
            .ok_or_else(|| Self::unknown(peer))?;
        info.rtt_ms = Some(rtt_ms);
        info.last_seen_ms = Some(now_ms);
        Ok(())
    }

    /// Marks down every admitted peer silent for `silence_timeout_ms` and every
    /// connecting one stuck that long; returns them (the driver disconnects them).
    pub fn mark_silent_down(&mut self, now_ms: u64) -> Vec<K> {
        let timeout_ms = self.config.silence_timeout_ms;
        let mut down = Vec::new();
        for (peer, info) in &mut self.peers {
            let since_ms = match info.state {
                PeerState::Admitted => info.last_seen_ms.unwrap_or(info.state_since_ms),
                PeerState::Connecting => info.state_since_ms,
                PeerState::Known | PeerState::Down => continue,
            };
            if now_ms.saturating_sub(since_ms) >= timeout_ms {
                Self::mark_down(info, &self.config.backoff, &mut self.rng, now_ms);
                down.push(peer.clone());
            }
        }
        down
    }

    /// The peers to dial now to reach the target number of connections:
    /// known or down peers whose next attempt is due, earliest first, fewest
    /// failures first. Does not change state; call [`PeerTable::on_dialing`].
    pub fn peers_to_dial(&self, now_ms: u64) -> Vec<K> {
        let active = self
            .peers
            .values()
            .filter(|info| matches!(info.state, PeerState::Connecting | PeerState::Admitted))
            .count();
        let needed = self.config.connections_target.saturating_sub(active);
        if needed == 0 {
            return Vec::new();
        }
        let mut due: Vec<(&K, &PeerInfo)> = self
            .peers
            .iter()
            .filter(|(_, info)| matches!(info.state, PeerState::Known | PeerState::Down))
            .filter(|(_, info)| info.next_attempt_ms <= now_ms)
            .collect();
        due.sort_by_key(|(key, info)| (info.next_attempt_ms, info.failures, *key));
        due.into_iter()
            .take(needed)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// When `peer` may next be dialled, if it is in the table.
    pub fn next_attempt_ms(&self, peer: &K) -> Option<u64> {
        self.peers.get(peer).map(|info| info.next_attempt_ms)
    }

    /// What is known about `peer`.
    pub fn get(&self, peer: &K) -> Option<&PeerInfo> {
        self.peers.get(peer)
    }

    /// Every peer, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &PeerInfo)> {
        self.peers.iter()
    }

    /// Number of peers in `state`.
    pub fn count(&self, state: PeerState) -> usize {
        self.peers
            .values()
            .filter(|info| info.state == state)
            .count()
    }

    /// Number of peers held.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests;
