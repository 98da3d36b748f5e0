//! Reputation: committed evidence lowers a node's score; a score below
//! [`QUARANTINE_BELOW_SCORE`] quarantines it (it is not selected for rounds).
//!
//! Only nodes with evidence against them have an entry; everyone else holds
//! [`INITIAL_SCORE`]. Quarantine is derived from the score, so the two can
//! never disagree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{EvidenceKind, NodeId};

/// Score of a node with no evidence against it.
pub const INITIAL_SCORE: u32 = 1000;
/// A node whose score falls below this is quarantined.
pub const QUARANTINE_BELOW_SCORE: u32 = 500;

/// How much one piece of evidence of this kind lowers the score.
pub fn penalty(kind: EvidenceKind) -> u32 {
    match kind {
        EvidenceKind::Equivocation | EvidenceKind::StateHashMismatch => 600,
        EvidenceKind::AggregatorDisagreement => 200,
        EvidenceKind::AnomalousUpdate => 125,
        EvidenceKind::MissedDeadline => 10,
    }
}

/// Scores of nodes with evidence against them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reputation {
    scores: BTreeMap<NodeId, u32>,
}

impl Reputation {
    /// The node's current score.
    pub fn score(&self, node: &NodeId) -> u32 {
        self.scores.get(node).copied().unwrap_or(INITIAL_SCORE)
    }

    /// Nodes with evidence against them and their scores, by node id.
    pub fn scores(&self) -> impl Iterator<Item = (&NodeId, u32)> {
        self.scores.iter().map(|(node, score)| (node, *score))
    }

    /// Whether the node is quarantined.
    pub fn is_quarantined(&self, node: &NodeId) -> bool {
        self.score(node) < QUARANTINE_BELOW_SCORE
    }

    /// Quarantined nodes, in id order.
    pub fn quarantined(&self) -> impl Iterator<Item = &NodeId> {
        self.scores
            .iter()
            .filter(|(_, s)| **s < QUARANTINE_BELOW_SCORE)
            .map(|(n, _)| n)
    }

    /// Lowers the node's score for one piece of evidence; returns the new score.
    pub(crate) fn record(&mut self, node: &NodeId, kind: EvidenceKind) -> u32 {
        let score = self.score(node).saturating_sub(penalty(kind));
        self.scores.insert(node.clone(), score);
        score
    }

    /// Restores the node's initial score, lifting any quarantine.
    pub(crate) fn reset(&mut self, node: &NodeId) {
        self.scores.remove(node);
    }

    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        match self.scores.iter().find(|(_, s)| **s > INITIAL_SCORE) {
            Some((n, s)) => Err(format!("node {n} has score {s} above the initial score")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_lowers_score_until_quarantine() {
        let mut r = Reputation::default();
        let n = NodeId::from("n");
        assert_eq!(r.score(&n), INITIAL_SCORE);
        assert_eq!(r.record(&n, EvidenceKind::AnomalousUpdate), 875);
        assert!(!r.is_quarantined(&n));
        r.record(&n, EvidenceKind::Equivocation);
        assert!(r.is_quarantined(&n));
        assert_eq!(r.quarantined().count(), 1);
        r.reset(&n);
        assert!(!r.is_quarantined(&n));
    }

    #[test]
    fn score_saturates_at_zero() {
        let mut r = Reputation::default();
        let n = NodeId::from("n");
        for _ in 0..5 {
            r.record(&n, EvidenceKind::Equivocation);
        }
        assert_eq!(r.score(&n), 0);
    }
}
