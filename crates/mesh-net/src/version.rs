//! Mesh protocol versions: which versions a node speaks, how it tells its
//! peers, and which version two nodes use with each other.
//!
//! A mesh protocol version names one encoding of everything two nodes send
//! each other (round messages, envelopes, Raft frames, snapshots, blobs; the
//! table is in `docs/operations.md`, "Upgrades"). A build speaks a range of
//! them, newest [`PROTOCOL_VERSION_MAX`], oldest [`PROTOCOL_VERSION_MIN`]; an
//! operator may cap the newest (`[network] max_protocol_version`), as a node
//! of the previous release would speak. The range rides in identify's agent
//! version:
//!
//! ```text
//!   agent-mesh/0.1.0 (protocols 1-3)     this build, uncapped
//!   agent-mesh/0.1.0 (protocols 1-1)     this build, capped to version 1
//!   rust-libp2p/0.57.0                   a build from before versions: speaks 1
//!
//!   identify received ─► negotiate(ours, theirs) ─► Negotiated(highest common)
//!                                                 └► Incompatible (logged once per peer)
//! ```
//!
//! Until a peer's identify arrives its version is [`PeerVersion::Unknown`],
//! and senders use the oldest version both could speak ([`PeerVersion::usable`]):
//! every build speaks version 1, so that never loses a message. Everything here
//! is plain data without I/O; the driver records each peer's version in
//! [`PeerVersions`], which every [`crate::NetHandle`] reads.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use libp2p::PeerId;

/// The oldest mesh protocol version this build speaks.
pub const PROTOCOL_VERSION_MIN: u8 = 1;
/// The newest mesh protocol version this build speaks.
pub const PROTOCOL_VERSION_MAX: u8 = 3;

/// Why a version range was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// A cap outside what this build speaks.
    #[error(
        "protocol version {requested} is not one this build speaks \
         ({PROTOCOL_VERSION_MIN} to {PROTOCOL_VERSION_MAX})"
    )]
    Unsupported {
        /// The cap asked for.
        requested: u32,
    },
}

/// The versions one node speaks: every version from `min` to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VersionRange {
    min: u8,
    max: u8,
}

impl Default for VersionRange {
    /// Everything this build speaks.
    fn default() -> Self {
        Self {
            min: PROTOCOL_VERSION_MIN,
            max: PROTOCOL_VERSION_MAX,
        }
    }
}

impl std::fmt::Display for VersionRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

impl VersionRange {
    /// What this build speaks with its newest version capped at `max`;
    /// refused unless `max` is one this build speaks.
    pub fn capped(max: u32) -> Result<Self, VersionError> {
        let refused = VersionError::Unsupported { requested: max };
        let max = u8::try_from(max).map_err(|_| refused.clone())?;
        if !(PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION_MAX).contains(&max) {
            return Err(refused);
        }
        Ok(Self {
            min: PROTOCOL_VERSION_MIN,
            max,
        })
    }

    /// A range as another node declares it (`min` at most `max`, else `None`).
    pub fn new(min: u8, max: u8) -> Option<Self> {
        (min <= max).then_some(Self { min, max })
    }

    /// The oldest version in the range.
    pub fn min(&self) -> u8 {
        self.min
    }

    /// The newest version in the range.
    pub fn max(&self) -> u8 {
        self.max
    }

    /// Whether `version` is in the range.
    pub fn contains(&self, version: u8) -> bool {
        (self.min..=self.max).contains(&version)
    }

    /// The identify agent version that announces this range.
    pub fn agent_version(&self) -> String {
        format!(
            "agent-mesh/{} (protocols {}-{})",
            env!("CARGO_PKG_VERSION"),
            self.min,
            self.max
        )
    }

    /// The range a peer announced in its identify agent version. An agent
    /// version without one is a build from before protocol versions, which
    /// speaks version 1 only; a malformed range is `None`.
    pub fn from_agent_version(agent_version: &str) -> Option<Self> {
        let Some((_, tail)) = agent_version.split_once("(protocols ") else {
            return Some(Self { min: 1, max: 1 });
        };
        let (range, _) = tail.split_once(')')?;
        let (min, max) = range.split_once('-')?;
        Self::new(min.trim().parse().ok()?, max.trim().parse().ok()?)
    }
}

/// The newest version both ranges hold, or `None` when they share none.
pub fn negotiate(ours: VersionRange, theirs: VersionRange) -> Option<u8> {
    let newest = ours.max.min(theirs.max);
    let oldest = ours.min.max(theirs.min);
    (oldest <= newest).then_some(newest)
}

/// Which version this node uses with one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerVersion {
    /// The peer's identify has not arrived yet.
    Unknown,
    /// The newest version both speak.
    Negotiated(u8),
    /// The peer speaks `theirs`, which shares no version with this node.
    Incompatible {
        /// What the peer announced.
        theirs: VersionRange,
    },
}

impl PeerVersion {
    /// The version to encode for this peer: the negotiated one, the oldest
    /// this node speaks while the peer's range is unknown, `None` when the
    /// two share none (send nothing).
    pub fn usable(&self, ours: VersionRange) -> Option<u8> {
        match self {
            Self::Unknown => Some(ours.min),
            Self::Negotiated(version) => Some(*version),
            Self::Incompatible { .. } => None,
        }
    }
}

impl std::fmt::Display for PeerVersion {
    /// `2`, `unknown`, or `incompatible (speaks 3-4)`, as status shows it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown => f.write_str("unknown"),
            Self::Negotiated(version) => write!(f, "{version}"),
            Self::Incompatible { theirs } => write!(f, "incompatible (speaks {theirs})"),
        }
    }
}

/// Each peer's [`PeerVersion`], shared between the driver (which writes it
/// when a peer identifies) and the handles (which read it before encoding).
/// Holds at most `peers_max` peers; a peer not held is [`PeerVersion::Unknown`].
#[derive(Clone, Debug)]
pub struct PeerVersions {
    ours: VersionRange,
    peers_max: usize,
    peers: Arc<RwLock<HashMap<PeerId, PeerVersion>>>,
}

impl PeerVersions {
    /// A table for a node speaking `ours`, holding at most `peers_max` peers.
    pub fn new(ours: VersionRange, peers_max: usize) -> Self {
        Self {
            ours,
            peers_max: peers_max.max(1),
            peers: Arc::default(),
        }
    }

    /// The versions this node speaks.
    pub fn ours(&self) -> VersionRange {
        self.ours
    }

    /// The version used with `peer` now.
    pub fn get(&self, peer: &PeerId) -> PeerVersion {
        self.read()
            .get(peer)
            .copied()
            .unwrap_or(PeerVersion::Unknown)
    }

    /// `peer` identified with `agent_version`: records the version the two
    /// use and returns it, with whether it changed (the driver logs an
    /// incompatible peer only then, so once per peer and change).
    pub fn identified(&self, peer: PeerId, agent_version: &str) -> (PeerVersion, bool) {
        let version = match VersionRange::from_agent_version(agent_version) {
            Some(theirs) => match negotiate(self.ours, theirs) {
                Some(v) => PeerVersion::Negotiated(v),
                None => PeerVersion::Incompatible { theirs },
            },
            // A range this build cannot read is one it does not speak.
            None => PeerVersion::Incompatible {
                theirs: VersionRange { min: 0, max: 0 },
            },
        };
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        if peers.len() >= self.peers_max && !peers.contains_key(&peer) {
            // Full: forget the others rather than grow (they identify again
            // on their next connection, and meanwhile use the oldest version).
            peers.clear();
        }
        let before = peers.insert(peer, version);
        (version, before != Some(version))
    }

    /// `peer` left: forget its version (a restarted peer may speak others).
    pub fn forget(&self, peer: &PeerId) {
        self.peers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(peer);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<PeerId, PeerVersion>> {
        self.peers.read().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn range(min: u8, max: u8) -> VersionRange {
        VersionRange::new(min, max).unwrap()
    }

    #[test]
    fn the_newest_common_version_wins() {
        assert_eq!(negotiate(range(1, 2), range(1, 2)), Some(2));
        assert_eq!(negotiate(range(1, 2), range(1, 1)), Some(1));
        assert_eq!(negotiate(range(1, 1), range(1, 2)), Some(1));
        assert_eq!(negotiate(range(2, 3), range(1, 2)), Some(2));
        assert_eq!(negotiate(range(1, 2), range(3, 4)), None);
        assert_eq!(negotiate(range(3, 4), range(1, 2)), None);
    }

    #[test]
    fn a_cap_must_be_a_version_this_build_speaks() {
        assert_eq!(VersionRange::capped(1).unwrap(), range(1, 1));
        assert_eq!(
            VersionRange::capped(u32::from(PROTOCOL_VERSION_MAX)).unwrap(),
            VersionRange::default()
        );
        for bad in [0, 4, 256, u32::MAX] {
            let err = VersionRange::capped(bad).unwrap_err();
            assert!(err.to_string().contains("1 to 3"), "{err}");
        }
    }

    #[test]
    fn the_agent_version_carries_the_range_both_ways() {
        for r in [range(1, 1), range(1, 2), range(7, 9)] {
            assert_eq!(
                VersionRange::from_agent_version(&r.agent_version()),
                Some(r)
            );
        }
        // A build from before versions announces libp2p's default: version 1.
        assert_eq!(
            VersionRange::from_agent_version("rust-libp2p/0.57.0"),
            Some(range(1, 1))
        );
        for bad in [
            "agent-mesh/1 (protocols 2-1)",
            "agent-mesh/1 (protocols x-2)",
            "agent-mesh/1 (protocols 1-2",
            "agent-mesh/1 (protocols 1)",
        ] {
            assert_eq!(VersionRange::from_agent_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn peers_are_unknown_until_identified_then_negotiated_or_incompatible() {
        let table = PeerVersions::new(VersionRange::default(), 8);
        let (old, new, future) = (PeerId::random(), PeerId::random(), PeerId::random());
        assert_eq!(table.get(&old), PeerVersion::Unknown);
        assert_eq!(table.get(&old).usable(table.ours()), Some(1));

        assert_eq!(
            table.identified(old, &range(1, 1).agent_version()),
            (PeerVersion::Negotiated(1), true)
        );
        assert_eq!(
            table.identified(new, &range(1, 2).agent_version()),
            (PeerVersion::Negotiated(2), true)
        );
        let (future_version, changed) = table.identified(future, &range(4, 5).agent_version());
        assert!(changed);
        assert_eq!(future_version.usable(table.ours()), None);
        assert_eq!(future_version.to_string(), "incompatible (speaks 4-5)");
        // Identify again (a reconnection): nothing changed, nothing to log.
        assert!(!table.identified(future, &range(4, 5).agent_version()).1);

        table.forget(&new);
        assert_eq!(table.get(&new), PeerVersion::Unknown);
        assert_eq!(table.get(&old).to_string(), "1");
    }

    #[test]
    fn the_table_never_holds_more_than_its_bound() {
        let table = PeerVersions::new(VersionRange::default(), 3);
        for _ in 0..10 {
            table.identified(PeerId::random(), &range(1, 2).agent_version());
            assert!(table.read().len() <= 3);
        }
    }
}
