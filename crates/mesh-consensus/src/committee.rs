//! Who votes: the committee size for a mesh size, the deterministic choice of
//! voters among healthy admitted candidates spread across zones, and the
//! replacement of unreachable voters (the decision half of self-healing; the
//! node's controller acts on it with a joint-consensus membership change).
//!
//! Sizes (voters for `n` eligible nodes):
//!
//! | eligible nodes | voters | failures tolerated |
//! |---|---|---|
//! | 1–2   | 1 | 0 (two voters would halt on either failure and tolerate none) |
//! | 3–6   | 3 | 1 |
//! | 7–49  | 5 | 2 |
//! | 50+   | 7 | 3 |
//!
//! The committee stays small because every commit waits for a majority of
//! voters; beyond 7 the latency grows and the fault tolerance is already more
//! than a mesh of a thousand nodes across a handful of zones needs. Everyone
//! else is a learner: it replicates the log and can be promoted at once.
//!
//! Choice order: current voters first (stability: no churn while they are
//! healthy), then lower Raft id; and at each step the zone with the fewest
//! chosen voters so far goes first, so voters spread across failure domains.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::MemberId;

/// A node that may vote, as the controller sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Its Raft id.
    pub id: MemberId,
    /// Failure domain it declared (`None` counts as one zone of its own kind).
    pub zone: Option<String>,
    /// Reachable recently (the leader's last acknowledgement is within the limit).
    pub healthy: bool,
    /// Admitted and not quarantined.
    pub eligible: bool,
    /// A voter now.
    pub voter: bool,
}

/// Voters for a mesh with `eligible` healthy admitted nodes (see the table above).
pub fn committee_size(eligible: usize) -> usize {
    match eligible {
        0 => 0,
        1..=2 => 1,
        3..=6 => 3,
        7..=49 => 5,
        _ => 7,
    }
}

fn usable(c: &Candidate) -> bool {
    c.healthy && c.eligible
}

/// Picks up to `size` voters from `candidates` (usable ones only), current
/// voters first, spread across zones. Deterministic.
pub fn pick(candidates: &[Candidate], size: usize) -> BTreeSet<MemberId> {
    let mut pool: Vec<&Candidate> = candidates.iter().filter(|c| usable(c)).collect();
    pool.sort_by_key(|c| (!c.voter, c.id));
    let mut per_zone: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    let mut chosen = BTreeSet::new();
    while chosen.len() < size && !pool.is_empty() {
        // The first candidate (in preference order) of a least-used zone.
        let least = pool
            .iter()
            .map(|c| per_zone.get(&c.zone.as_deref()).copied().unwrap_or(0))
            .min()
            .unwrap_or(0);
        let pos = pool
            .iter()
            .position(|c| per_zone.get(&c.zone.as_deref()).copied().unwrap_or(0) == least)
            .unwrap_or(0);
        let c = pool.remove(pos);
        *per_zone.entry(c.zone.as_deref()).or_default() += 1;
        chosen.insert(c.id);
    }
    chosen
}

/// The committee for these candidates: voters by [`committee_size`] and
/// [`pick`]; every other eligible candidate is a learner.
pub fn select_committee(candidates: &[Candidate]) -> (BTreeSet<MemberId>, BTreeSet<MemberId>) {
    let size = committee_size(candidates.iter().filter(|c| usable(c)).count());
    let voters = pick(candidates, size);
    let learners = candidates
        .iter()
        .filter(|c| c.eligible && !voters.contains(&c.id))
        .map(|c| c.id)
        .collect();
    (voters, learners)
}

/// The voter set that replaces unhealthy voters by the best usable
/// non-voters, keeping the committee size; `None` if every voter is healthy
/// or no replacement is available.
pub fn replace_unhealthy(candidates: &[Candidate]) -> Option<BTreeSet<MemberId>> {
    let current: Vec<&Candidate> = candidates.iter().filter(|c| c.voter).collect();
    if current.iter().all(|c| usable(c)) {
        return None;
    }
    let size = current.len();
    let next = pick(candidates, size);
    let healthy_now = current.iter().filter(|c| usable(c)).count();
    // Only change when it adds a healthy voter; shrinking would lower tolerance.
    (next.len() > healthy_now).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u64, zone: &str, voter: bool) -> Candidate {
        Candidate {
            id: MemberId(id),
            zone: Some(zone.into()),
            healthy: true,
            eligible: true,
            voter,
        }
    }

    #[test]
    fn sizes_follow_the_table() {
        assert_eq!(committee_size(1), 1);
        assert_eq!(committee_size(2), 1);
        assert_eq!(committee_size(4), 3);
        assert_eq!(committee_size(7), 5);
        assert_eq!(committee_size(1000), 7);
    }

    #[test]
    fn voters_spread_across_zones() {
        let cands = vec![
            c(1, "a", false),
            c(2, "a", false),
            c(3, "a", false),
            c(4, "b", false),
            c(5, "c", false),
        ];
        let (voters, learners) = select_committee(&cands);
        assert_eq!(voters, [1, 4, 5].into_iter().map(MemberId).collect());
        assert_eq!(learners.len(), 2);
    }

    #[test]
    fn current_voters_are_kept_while_healthy() {
        let cands = vec![
            c(1, "a", false),
            c(2, "b", true),
            c(3, "c", true),
            c(4, "a", true),
        ];
        let (voters, _) = select_committee(&cands);
        assert_eq!(voters, [2, 3, 4].into_iter().map(MemberId).collect());
        assert_eq!(replace_unhealthy(&cands), None);
    }

    #[test]
    fn unhealthy_voter_is_replaced_by_best_learner() {
        let mut cands = vec![
            c(1, "a", true),
            c(2, "b", true),
            c(3, "c", true),
            c(4, "a", false),
            c(5, "c", false),
        ];
        cands[2].healthy = false;
        let next = replace_unhealthy(&cands).expect("a replacement");
        assert_eq!(next, [1, 2, 5].into_iter().map(MemberId).collect());
        // No usable spare: nothing changes.
        let mut lonely = cands[..3].to_vec();
        lonely[2].healthy = false;
        assert_eq!(replace_unhealthy(&lonely), None);
    }
}
