//! The simulated network: messages delivered after a seeded latency, lost
//! with a seeded probability or across a partition, and the schedule of
//! crashes and partitions.

use std::collections::{BTreeMap, BTreeSet};

use mesh_consensus::command::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::faults::Faults;
use crate::protocol::RoundMessage;

/// Most messages in flight; beyond it new ones are dropped (counted).
pub const IN_FLIGHT_MAX: usize = 1_000_000;

/// A scheduled fault.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Node goes down (`false`) or comes back (`true`).
    Node(usize, bool),
    /// A partition isolates nodes chosen then (`true`) or heals (`false`).
    Partition(bool),
}

/// The in-memory network.
pub struct Network {
    faults: Faults,
    rng: ChaCha8Rng,
    in_flight: BTreeMap<(u64, u64), (NodeId, NodeId, RoundMessage)>,
    seq: u64,
    dropped: u64,
    schedule: Vec<(u64, Fault)>,
    isolated: BTreeSet<NodeId>,
    partition_size: usize,
}

impl Network {
    /// A network with `faults`, seeded.
    pub fn new(faults: Faults, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4E37);
        let mut schedule = Vec::new();
        let window = faults.window_ms.max(1);
        for _ in 0..faults.crashes {
            let at = rng.random_range(1_000..window + 1_000);
            let node = rng.random_range(0..usize::MAX);
            schedule.push((at, Fault::Node(node, false)));
            schedule.push((at + faults.down_ms, Fault::Node(node, true)));
        }
        for _ in 0..faults.partitions {
            let at = rng.random_range(1_000..window + 1_000);
            schedule.push((at, Fault::Partition(true)));
            schedule.push((at + faults.down_ms, Fault::Partition(false)));
        }
        schedule.sort_by_key(|(t, _)| *t);
        Self {
            faults,
            rng,
            in_flight: BTreeMap::new(),
            seq: 0,
            dropped: 0,
            schedule,
            isolated: BTreeSet::new(),
            partition_size: 0,
        }
    }

    /// A latency drawn from the configured range.
    pub fn latency(&mut self, rng: &mut ChaCha8Rng) -> u64 {
        rng.random_range(self.faults.latency_min_ms..=self.faults.latency_max_ms)
    }

    /// Sends `message`; it may be lost.
    pub fn send(&mut self, from: &NodeId, to: &NodeId, message: RoundMessage, now_ms: u64) {
        let cut = self.isolated.contains(from) != self.isolated.contains(to);
        let lost = self.faults.loss > 0.0 && self.rng.random_bool(self.faults.loss);
        if cut || lost || self.in_flight.len() >= IN_FLIGHT_MAX {
            self.dropped += 1;
            return;
        }
        let latency = self
            .rng
            .random_range(self.faults.latency_min_ms..=self.faults.latency_max_ms);
        self.seq += 1;
        self.in_flight.insert(
            (now_ms + latency, self.seq),
            (from.clone(), to.clone(), message),
        );
    }

    /// Messages due by `now_ms`, in delivery order.
    pub fn due(&mut self, now_ms: u64) -> Vec<(NodeId, NodeId, RoundMessage)> {
        let later = self.in_flight.split_off(&(now_ms + 1, 0));
        let due = std::mem::replace(&mut self.in_flight, later);
        due.into_values()
            .filter(|(from, to, _)| {
                let cut = self.isolated.contains(from) != self.isolated.contains(to);
                if cut {
                    self.dropped += 1;
                }
                !cut
            })
            .collect()
    }

    /// Messages dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Node crash and restart events due by `now_ms` (node index, up);
    /// partitions are applied to the network here.
    pub fn faults_due(
        &mut self,
        now_ms: u64,
        names: &[NodeId],
        rng: &mut ChaCha8Rng,
    ) -> Vec<(usize, bool)> {
        let mut out = Vec::new();
        while self.schedule.first().is_some_and(|(t, _)| *t <= now_ms) {
            let (_, fault) = self.schedule.remove(0);
            match fault {
                Fault::Node(node, up) => out.push((node % names.len().max(1), up)),
                Fault::Partition(true) => {
                    self.partition_size = (names.len().saturating_sub(1) / 2).max(1);
                    let mut order: Vec<&NodeId> = names.iter().collect();
                    for i in (1..order.len()).rev() {
                        order.swap(i, rng.random_range(0..=i));
                    }
                    self.isolated = order
                        .into_iter()
                        .take(self.partition_size)
                        .cloned()
                        .collect();
                }
                Fault::Partition(false) => self.isolated.clear(),
            }
        }
        out
    }
}
