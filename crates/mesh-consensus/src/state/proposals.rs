//! Retried proposals commit once.
//!
//! A proposer that times out, or loses its leader mid-write, cannot tell
//! whether its entry committed, so it sends the same entry again. Every
//! proposal from [`crate::ConsensusNode::propose`] is wrapped in
//! [`crate::Command::Once`] with the proposer's session (unique per process
//! start) and a sequence number; this table remembers where each committed,
//! and a second copy is applied as a no-op that points at the first.
//!
//! Bounded: at most [`SEQS_PER_SESSION_MAX`] numbers per session and
//! [`SESSIONS_MAX`] sessions. A session forgets its lowest numbers first and
//! keeps the lowest number it still knows as a floor: a copy below the floor
//! is refused rather than applied a second time. The session least recently
//! used (by log index, so every node evicts the same one) goes first.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ApplyError;

/// Most sequence numbers remembered per session.
pub const SEQS_PER_SESSION_MAX: usize = 4096;
/// Most sessions remembered.
pub const SESSIONS_MAX: usize = 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    /// Log index of the session's latest proposal (eviction order).
    last_index: u64,
    /// Sequence number -> log index where it committed.
    committed: BTreeMap<u64, u64>,
    /// Numbers below this one were forgotten.
    floor: u64,
}

/// Where each remembered proposal committed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposals {
    sessions: BTreeMap<u64, Session>,
}

impl Proposals {
    /// The index where `(session, seq)` already committed; `Ok(None)` for a
    /// new proposal; an error for one too old to tell.
    pub fn committed_at(&self, session: u64, seq: u64) -> Result<Option<u64>, ApplyError> {
        let Some(s) = self.sessions.get(&session) else {
            return Ok(None);
        };
        if let Some(index) = s.committed.get(&seq) {
            return Ok(Some(*index));
        }
        if seq < s.floor {
            return Err(ApplyError::Invalid(format!(
                "proposal {seq} of session {session:016x} is older than the {SEQS_PER_SESSION_MAX} this state remembers; it may have committed already"
            )));
        }
        Ok(None)
    }

    /// Records that `(session, seq)` committed at `index`.
    pub fn record(&mut self, session: u64, seq: u64, index: u64) {
        if !self.sessions.contains_key(&session) && self.sessions.len() >= SESSIONS_MAX {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(id, s)| (s.last_index, **id))
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.sessions.remove(&oldest);
            }
        }
        let s = self.sessions.entry(session).or_default();
        s.last_index = index;
        s.committed.insert(seq, index);
        while s.committed.len() > SEQS_PER_SESSION_MAX {
            if let Some((lowest, _)) = s.committed.pop_first() {
                s.floor = s.floor.max(lowest + 1);
            }
        }
    }

    /// Sessions remembered.
    pub fn sessions_len(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_recorded_proposal_is_found_and_a_new_one_is_not() {
        let mut p = Proposals::default();
        assert_eq!(p.committed_at(1, 0).unwrap(), None);
        p.record(1, 0, 10);
        assert_eq!(p.committed_at(1, 0).unwrap(), Some(10));
        assert_eq!(p.committed_at(1, 1).unwrap(), None);
        assert_eq!(p.committed_at(2, 0).unwrap(), None);
    }

    #[test]
    fn forgotten_numbers_are_refused_not_reapplied() {
        let mut p = Proposals::default();
        for seq in 0..=SEQS_PER_SESSION_MAX as u64 {
            p.record(7, seq, 100 + seq);
        }
        assert!(p.committed_at(7, 0).is_err(), "seq 0 was forgotten");
        assert_eq!(p.committed_at(7, 1).unwrap(), Some(101));
        assert_eq!(
            p.committed_at(7, SEQS_PER_SESSION_MAX as u64 + 1).unwrap(),
            None
        );
    }

    #[test]
    fn the_least_recently_used_session_is_evicted() {
        let mut p = Proposals::default();
        for session in 0..SESSIONS_MAX as u64 {
            p.record(session, 0, 1 + session);
        }
        p.record(0, 1, 5_000); // session 0 used again, so session 1 is the oldest
        p.record(99_999, 0, 5_001);
        assert_eq!(p.sessions_len(), SESSIONS_MAX);
        assert_eq!(p.committed_at(1, 0).unwrap(), None);
        assert_eq!(p.committed_at(0, 0).unwrap(), Some(1));
    }
}
