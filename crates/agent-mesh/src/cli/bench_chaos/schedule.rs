//! The seeded fault plan: which fault hits which node, when and for how long.
//!
//! Faults come one at a time (each healed, then a pause) so a majority of the
//! committee is always meant to be able to make progress; what is checked is
//! that nothing the mesh acknowledged is lost or reordered while they hit.

use std::fmt;

use rand::{Rng, SeedableRng};

/// A fault the harness can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL, then a restart after the hold time.
    Kill,
    /// SIGSTOP, then SIGCONT after the hold time.
    Pause,
    /// The node cut off from every other node (not from the clients).
    Isolate,
    /// Nodes split into two sides that cannot reach each other.
    Split,
    /// A share of the packets into the node dropped.
    Loss,
    /// The node's link limited in rate, so packets queue (delay) or drop.
    SlowLink,
    /// The node restarted with its wall clock moved by seconds.
    ClockSkew,
    /// The node's data disk filled up.
    DiskFull,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FaultKind; 8] = [
        Self::Kill,
        Self::Pause,
        Self::Isolate,
        Self::Split,
        Self::Loss,
        Self::SlowLink,
        Self::ClockSkew,
        Self::DiskFull,
    ];

    /// The kinds that need network namespaces (or root) to inject.
    pub fn needs_namespaces(self) -> bool {
        matches!(
            self,
            Self::Isolate | Self::Split | Self::Loss | Self::SlowLink | Self::DiskFull
        )
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kill => "kill -9",
            Self::Pause => "SIGSTOP",
            Self::Isolate => "isolate one node",
            Self::Split => "partition in two",
            Self::Loss => "packet loss",
            Self::SlowLink => "slow link",
            Self::ClockSkew => "clock skew",
            Self::DiskFull => "full disk",
        })
    }
}

/// One planned fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// What.
    pub kind: FaultKind,
    /// The node it hits (for a split: the nodes on the minority side).
    pub targets: Vec<usize>,
    /// How long it lasts before it is healed.
    pub hold_ms: u64,
    /// Pause after healing, before the next fault.
    pub settle_ms: u64,
    /// Per kind: loss in percent, clock offset in seconds (signed), else 0.
    pub amount: i64,
}

/// The planner: a seeded stream of faults of the enabled kinds.
pub struct Plan {
    rng: rand_chacha::ChaCha8Rng,
    kinds: Vec<FaultKind>,
    nodes: usize,
}

impl Plan {
    /// Faults of `kinds` over `nodes` nodes, drawn from `seed`.
    pub fn new(seed: u64, kinds: Vec<FaultKind>, nodes: usize) -> Self {
        Self {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            kinds,
            nodes,
        }
    }

    /// Stops planning faults of `kind` (one that could not be injected here).
    pub fn disable(&mut self, kind: FaultKind) {
        self.kinds.retain(|k| *k != kind);
    }

    /// The next fault; `None` when no kind is enabled or there are too few nodes.
    pub fn next_fault(&mut self) -> Option<Fault> {
        if self.kinds.is_empty() || self.nodes < 3 {
            return None;
        }
        let kind = self.kinds[self.rng.random_range(0..self.kinds.len())];
        let one = self.rng.random_range(0..self.nodes);
        let targets = match kind {
            // The minority side: fewer than half the nodes, at least one.
            FaultKind::Split => {
                let size = self.rng.random_range(1..=(self.nodes - 1) / 2);
                let mut all: Vec<usize> = (0..self.nodes).collect();
                for i in 0..size {
                    let j = self.rng.random_range(i..all.len());
                    all.swap(i, j);
                }
                let mut side = all[..size].to_vec();
                side.sort_unstable();
                side
            }
            _ => vec![one],
        };
        let amount = match kind {
            FaultKind::Loss => self.rng.random_range(10..=40),
            FaultKind::ClockSkew => {
                let seconds = self.rng.random_range(5..=90);
                if self.rng.random_bool(0.5) {
                    seconds
                } else {
                    -seconds
                }
            }
            _ => 0,
        };
        Some(Fault {
            kind,
            targets,
            hold_ms: self.rng.random_range(2_000..=10_000),
            settle_ms: self.rng.random_range(2_000..=6_000),
            amount,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_plans_the_same_faults() {
        let plan = |seed| {
            let mut p = Plan::new(seed, FaultKind::ALL.to_vec(), 5);
            (0..50).filter_map(|_| p.next_fault()).collect::<Vec<_>>()
        };
        assert_eq!(plan(7), plan(7));
        assert_ne!(plan(7), plan(8));
    }

    #[test]
    fn a_split_leaves_a_majority_and_every_kind_is_drawn() {
        let mut p = Plan::new(1, FaultKind::ALL.to_vec(), 5);
        let faults: Vec<Fault> = (0..400).filter_map(|_| p.next_fault()).collect();
        for kind in FaultKind::ALL {
            assert!(faults.iter().any(|f| f.kind == kind), "{kind} never drawn");
        }
        for f in &faults {
            assert!(!f.targets.is_empty() && f.targets.len() <= 2, "{f:?}");
            assert!(f.targets.iter().all(|&t| t < 5));
            assert!((2_000..=10_000).contains(&f.hold_ms));
        }
    }

    #[test]
    fn nothing_is_planned_without_kinds_or_with_too_few_nodes() {
        assert_eq!(Plan::new(1, vec![], 5).next_fault(), None);
        assert_eq!(Plan::new(1, vec![FaultKind::Kill], 2).next_fault(), None);
        let mut plan = Plan::new(1, vec![FaultKind::Kill], 5);
        plan.disable(FaultKind::Kill);
        assert_eq!(plan.next_fault(), None);
    }
}
