//! What each node says about itself to the mesh: that it is up (the
//! announcement is its heartbeat, see [`super::presence`]) and its zone
//! (failure domain), gossiped in a signed envelope so the committee leader
//! can admit it with that zone, spread voters across zones and pick final
//! aggregators from different zones.
//!
//! ```text
//!   node: [zone] in config ── on start, every ANNOUNCE_GAP_MS for a while after
//!         a peer joins, and every ANNOUNCE_EVERY_MS ──► topic members/announce/1
//!   every node: verified envelope ──► RoundDriver::zone_declared (sender -> zone), bounded
//!                                 ──► RoundDriver::heard_from (sender alive for a while)
//!   leader: AddMember { zone } once the node is reachable and has spoken
//!           (or after ZONE_WAIT_MS without a word)
//! ```
//!
//! The zone is the node's own word, trusted as much as its certificate: it
//! only steers placement, never what a node may do.

use mesh_security::envelope::MessageKind;
use serde::{Deserialize, Serialize};

/// Gossip topic of member announcements.
pub const ANNOUNCE_TOPIC: &str = "agent-mesh/members/announce/1";
/// Envelope kind of a member announcement.
pub const ANNOUNCE_KIND: MessageKind = MessageKind(0x0112);
/// Largest announcement envelope decoded.
pub const ANNOUNCE_ENVELOPE_BYTES_MAX: usize = 1024;
/// Longest zone name.
pub const ZONE_BYTES_MAX: usize = 64;
/// How long a node waits to hear an admitted peer's zone before it counts
/// the peer as zoneless (an older node that never says), for membership.
pub const ZONE_WAIT_MS: u64 = 5_000;
/// Most nodes whose announcement is remembered (beyond it, a new node is
/// admitted without a zone).
pub const DECLARED_MAX: usize = 100_000;
/// Least time between two announcements caused by joining peers.
pub const ANNOUNCE_GAP_MS: u64 = 2_000;
/// After a peer joins, announcements go out every [`ANNOUNCE_GAP_MS`] for
/// this long: a peer's subscription to the topic reaches this node a little
/// after the peer itself, and one announcement may find it not yet there.
pub const ANNOUNCE_EAGER_MS: u64 = 10_000;
/// An announcement goes out at least this often; it is also the node's
/// heartbeat (see [`super::presence`]).
pub const ANNOUNCE_EVERY_MS: u64 = 10_000;

/// One node's announcement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// Its failure domain, if it declared one.
    pub zone: Option<String>,
}

/// Whether `zone` is a usable zone name: 1 to [`ZONE_BYTES_MAX`] bytes of
/// letters, digits, '.', '_' or '-'.
pub fn check_zone(zone: &str) -> Result<(), String> {
    let plain = zone
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if zone.is_empty() || zone.len() > ZONE_BYTES_MAX || !plain {
        return Err(format!(
            "zone {zone:?}: use 1-{ZONE_BYTES_MAX} letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

impl Announcement {
    /// The wire bytes (JSON: small, and readable in a capture).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and checks an announcement's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let info: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if let Some(zone) = &info.zone {
            check_zone(zone)?;
        }
        Ok(info)
    }
}

/// When this node announces itself again.
#[derive(Debug, Default)]
pub struct Announcements {
    announced_ms: Option<u64>,
    /// Until when announcements go out every [`ANNOUNCE_GAP_MS`].
    eager_until_ms: u64,
    /// A peer joined, and the eager period has not been set from it yet.
    peers_joined: bool,
}

impl Announcements {
    /// A peer was admitted: announce again soon, so it hears this node too.
    pub fn peer_joined(&mut self) {
        self.peers_joined = true;
    }

    /// Whether to announce at `now_ms`; true marks it done.
    pub fn announce_due(&mut self, now_ms: u64) -> bool {
        if self.peers_joined {
            self.peers_joined = false;
            self.eager_until_ms = now_ms + ANNOUNCE_EAGER_MS;
        }
        let due = match self.announced_ms {
            None => true,
            Some(at) => {
                let since = now_ms.saturating_sub(at);
                let eager = now_ms <= self.eager_until_ms;
                since >= ANNOUNCE_EVERY_MS || (eager && since >= ANNOUNCE_GAP_MS)
            }
        };
        if due {
            self.announced_ms = Some(now_ms);
        }
        due
    }

    /// Forgets the announcement time, so the next check announces (a
    /// publish that found no gossip peers yet).
    pub fn announce_failed(&mut self) {
        self.announced_ms = None;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn announcements_round_trip_and_bad_zones_are_refused() {
        let info = Announcement {
            zone: Some("eu-west-1a".into()),
        };
        assert_eq!(Announcement::decode(&info.encode()).unwrap(), info);
        let none = Announcement { zone: None };
        assert_eq!(Announcement::decode(&none.encode()).unwrap(), none);
        for bad in [
            r#"{"zone":""}"#,
            r#"{"zone":"a b"}"#,
            r#"{"zone":7}"#,
            "not json",
        ] {
            assert!(Announcement::decode(bad.as_bytes()).is_err(), "{bad}");
        }
        let long = format!(r#"{{"zone":"{}"}}"#, "z".repeat(ZONE_BYTES_MAX + 1));
        assert!(Announcement::decode(long.as_bytes()).is_err());
    }

    #[test]
    fn a_node_announces_at_start_after_joins_and_periodically() {
        let mut infos = Announcements::default();
        assert!(infos.announce_due(1_000));
        assert!(!infos.announce_due(1_500));
        infos.peer_joined();
        assert!(!infos.announce_due(2_000), "joins wait for the gap");
        assert!(infos.announce_due(3_000));
        // Every gap for a while after the join, then only periodically.
        assert!(infos.announce_due(5_000));
        let mut at = 5_000;
        while at + ANNOUNCE_GAP_MS <= 2_000 + ANNOUNCE_EAGER_MS {
            at += ANNOUNCE_GAP_MS;
            assert!(infos.announce_due(at), "eager at {at}");
        }
        assert!(!infos.announce_due(at + ANNOUNCE_GAP_MS));
        assert!(infos.announce_due(at + ANNOUNCE_EVERY_MS));
        infos.announce_failed();
        assert!(infos.announce_due(3_000 + ANNOUNCE_EVERY_MS + 1));
    }
}
