//! Backoff of the leader's RPCs to a member that keeps failing or keeps
//! refusing the same append, so a broken follower costs the leader a few
//! calls a second instead of a busy loop.
//!
//! openraft retries replication by itself, at once: a follower that answers
//! every append with a conflict at a place it had matched before (its log
//! went back, which openraft does not expect) was sent the same append
//! again about 35,000 times a second. The delay therefore lives in our
//! network layer, per member, shared by every client openraft makes for it:
//!
//! ```text
//!   answer                               → stuck count
//!   success (or partial success)         → 0
//!   transport error, refusal, timeout    → +1
//!   conflict at or after the last one    → +1   (no progress: the same search again)
//!   conflict before the last one         → unchanged (the log search moving back)
//!
//!   next RPC to the member waits backoff_delay_ms(stuck):
//!     0 below BACKOFF_AFTER_STUCK, then BACKOFF_BASE_MS doubling per step, at most BACKOFF_MAX_MS
//! ```
//!
//! Votes are never delayed: an election must not wait on a member that
//! failed as a follower.
//!
//! The same answers show a member whose log went back: a conflict at or
//! below the index it matched under the same leader term means it lost entries it
//! had acknowledged (its store removed together with its seal, or a node of
//! a build without seals). [`Backoffs::record`] says so, and the leader then
//! removes and re-adds it as for a member that refuses as rejoining
//! (`node/rejoin.rs`), so its replication starts again from nothing instead
//! of stalling.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use crate::types::MemberId;

/// Stuck answers in a row after which RPCs to the member are delayed.
pub const BACKOFF_AFTER_STUCK: u32 = 3;
/// The first delay, in milliseconds.
pub const BACKOFF_BASE_MS: u64 = 10;
/// The longest delay, in milliseconds: a broken member gets at most about
/// one RPC a second from each of the leader's replication and heartbeat streams.
pub const BACKOFF_MAX_MS: u64 = 1_000;
/// Most members tracked; more than any committee has (entries of members
/// that answer are dropped first when it is reached).
pub const BACKOFF_MEMBERS_MAX: usize = 1_024;

/// The delay before the next RPC to a member after `stuck` stuck answers in a row.
pub fn backoff_delay_ms(stuck: u32) -> u64 {
    let Some(steps) = stuck.checked_sub(BACKOFF_AFTER_STUCK) else {
        return 0;
    };
    BACKOFF_BASE_MS
        .checked_shl(steps)
        .filter(|d| *d <= BACKOFF_MAX_MS)
        .unwrap_or(BACKOFF_MAX_MS)
}

/// How an RPC to a member ended, as the backoff counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The member accepted it.
    Success,
    /// The member's log matches this leader's up to `index`.
    Matched {
        /// Term of the leader that sent the append.
        term: u64,
        /// The last index matched (`None`: an empty log).
        index: Option<u64>,
    },
    /// It failed or was refused.
    Failure,
    /// The member's log does not match at the index before the entries sent.
    Conflict {
        /// Term of the leader that sent the append.
        term: u64,
        /// Index of the previous log id of the refused append (`None`: the start).
        prev_index: Option<u64>,
    },
}

#[derive(Clone, Copy, Debug, Default)]
struct MemberState {
    stuck: u32,
    last_conflict: Option<Option<u64>>,
    /// The highest index the member matched under a leader of this term.
    matched: Option<(u64, u64)>,
}

/// The stuck counts of every member this node sends RPCs to.
#[derive(Debug, Default)]
pub struct Backoffs {
    members: Mutex<BTreeMap<MemberId, MemberState>>,
    /// RPCs delayed by the backoff.
    delayed: Counter,
}

impl Backoffs {
    /// Backoffs that count delayed RPCs in `delayed`.
    pub fn new(delayed: Counter) -> Self {
        Self {
            members: Mutex::new(BTreeMap::new()),
            delayed,
        }
    }

    fn members(&self) -> std::sync::MutexGuard<'_, BTreeMap<MemberId, MemberState>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records how an RPC to `member` ended; `true` when the answer shows
    /// that the member's log went back to before what it matched under the
    /// same leader term: it lost entries it had acknowledged (a store
    /// removed with its seal, or a node from before seals). Within one
    /// term nothing else shortens a follower's log below what that term's
    /// leader matched.
    pub fn record(&self, member: MemberId, outcome: Outcome) -> bool {
        let mut members = self.members();
        if members.len() >= BACKOFF_MEMBERS_MAX && !members.contains_key(&member) {
            members.retain(|_, s| s.stuck > 0);
            if members.len() >= BACKOFF_MEMBERS_MAX {
                return false;
            }
        }
        let state = members.entry(member).or_default();
        match outcome {
            Outcome::Success => {
                state.stuck = 0;
                state.last_conflict = None;
            }
            Outcome::Matched { term, index } => {
                state.stuck = 0;
                state.last_conflict = None;
                let held = state.matched.filter(|(t, _)| *t == term).map(|(_, i)| i);
                if let Some(index) = index.filter(|i| held.is_none_or(|h| *i > h)) {
                    state.matched = Some((term, index));
                }
            }
            Outcome::Failure => state.stuck = state.stuck.saturating_add(1),
            Outcome::Conflict { term, prev_index } => {
                if state.last_conflict.is_some_and(|last| prev_index >= last) {
                    state.stuck = state.stuck.saturating_add(1);
                }
                state.last_conflict = Some(prev_index);
                let matched = state.matched.filter(|(t, _)| *t == term);
                // A member that matched index m holds it: an append after
                // it (prev_index = m) or before it cannot conflict.
                return matched.is_some_and(|(_, m)| prev_index.is_none_or(|p| p <= m));
            }
        }
        false
    }

    /// Forgets what `member` matched and its stuck count: it was removed
    /// from the membership, and added back it starts from nothing.
    pub fn forget(&self, member: MemberId) {
        self.members().remove(&member);
    }

    /// The delay due before the next RPC to `member`; a non-zero one is counted.
    pub fn delay(&self, member: MemberId) -> Duration {
        let stuck = self.members().get(&member).map_or(0, |s| s.stuck);
        let delay_ms = backoff_delay_ms(stuck);
        if delay_ms > 0 {
            self.delayed.inc();
        }
        Duration::from_millis(delay_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_starts_after_three_stuck_answers_doubles_and_is_capped() {
        let delays: Vec<u64> = (0..12).map(backoff_delay_ms).collect();
        assert_eq!(
            delays,
            [0, 0, 0, 10, 20, 40, 80, 160, 320, 640, 1_000, 1_000]
        );
        assert_eq!(backoff_delay_ms(u32::MAX), BACKOFF_MAX_MS);
    }

    #[test]
    fn a_leader_spinning_on_a_follower_that_lost_its_log_backs_off() {
        let delayed = Counter::default();
        let backoffs = Backoffs::new(delayed.clone());
        let follower = MemberId(2);
        let conflict = |prev| Outcome::Conflict {
            term: 1,
            prev_index: Some(prev),
        };
        // The log search moving back is progress: no delay.
        for prev in [100, 50, 25, 12] {
            backoffs.record(follower, conflict(prev));
            assert_eq!(backoffs.delay(follower), Duration::ZERO);
        }
        // The same append refused again and again: the delay grows to the cap.
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            backoffs.record(follower, conflict(12));
            let delay = backoffs.delay(follower);
            assert!(delay >= last);
            last = delay;
        }
        assert_eq!(last, Duration::from_millis(BACKOFF_MAX_MS));
        assert!(delayed.get() > 0, "delayed calls are counted");
        // Another member is not affected; a success clears the delay.
        assert_eq!(backoffs.delay(MemberId(3)), Duration::ZERO);
        backoffs.record(follower, Outcome::Success);
        assert_eq!(backoffs.delay(follower), Duration::ZERO);
        for _ in 0..BACKOFF_AFTER_STUCK {
            backoffs.record(follower, Outcome::Failure);
        }
        assert_eq!(
            backoffs.delay(follower),
            Duration::from_millis(BACKOFF_BASE_MS)
        );
    }

    #[test]
    fn a_conflict_at_or_below_what_the_member_matched_in_the_same_term_is_a_lost_log() {
        let backoffs = Backoffs::default();
        let member = MemberId(4);
        let matched = |term, index| Outcome::Matched {
            term,
            index: Some(index),
        };
        let conflict = |term, prev| Outcome::Conflict {
            term,
            prev_index: Some(prev),
        };
        assert!(!backoffs.record(member, matched(3, 40)));
        assert!(!backoffs.record(member, matched(3, 30)), "an older answer");
        assert!(
            !backoffs.record(member, conflict(3, 41)),
            "after what it matched: normal"
        );
        assert!(
            backoffs.record(member, conflict(3, 40)),
            "at what it matched: lost"
        );
        assert!(
            backoffs.record(member, conflict(3, 39)),
            "below it: the log went back"
        );
        // Under a later leader term an earlier match proves nothing (a newer
        // leader may have truncated entries that were never committed).
        assert!(!backoffs.record(member, conflict(5, 10)));
        // Removed and added back, it starts from nothing.
        assert!(!backoffs.record(member, matched(5, 20)));
        backoffs.forget(member);
        assert!(!backoffs.record(member, conflict(5, 3)));
    }
}
