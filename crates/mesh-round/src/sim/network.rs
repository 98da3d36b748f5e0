//! The simulated network: messages delivered after a seeded latency, lost
//! with a seeded probability or across a partition, and the schedule of
//! crashes and partitions. With a [`LinkModel`] each link keeps one seeded
//! latency and each node's uplink has a bandwidth; with a [`TrafficLog`]
//! every accepted message is recorded with its encoded size.

use std::collections::{BTreeMap, BTreeSet};

use mesh_consensus::command::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::faults::Faults;
use super::traffic::{LinkModel, TrafficLog, Transfer};
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
    seed: u64,
    /// Node indices by name (messages to other names are still carried and
    /// discarded on arrival, but not metered).
    index: BTreeMap<NodeId, u32>,
    links: LinkModel,
    /// When each node's uplink is free again, simulated µs.
    uplink_free_us: Vec<u64>,
    traffic: Option<TrafficLog>,
}

impl Network {
    /// A network between `nodes` with `faults`, seeded.
    pub fn new(faults: Faults, seed: u64, nodes: &[NodeId]) -> Self {
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
            seed,
            index: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i as u32))
                .collect(),
            links: LinkModel::default(),
            uplink_free_us: vec![0; nodes.len()],
            traffic: None,
        }
    }

    /// Sets how links behave from now on.
    pub fn set_links(&mut self, links: LinkModel) {
        self.links = links;
    }

    /// Records every message accepted from now on, up to `max`.
    pub fn record_traffic(&mut self, max: usize) {
        self.traffic = Some(TrafficLog::new(max));
    }

    /// Stops recording and returns the record (empty if none was kept).
    pub fn take_traffic(&mut self) -> TrafficLog {
        self.traffic.take().unwrap_or_default()
    }

    /// The fixed latency of the link `from` -> `to`: a seeded draw from the range.
    fn link_latency(&self, from: u32, to: u32) -> u64 {
        let (min, max) = (self.faults.latency_min_ms, self.faults.latency_max_ms);
        let span = max.saturating_sub(min).saturating_add(1);
        min + splitmix(self.seed ^ (u64::from(from) << 32 | u64::from(to))) % span
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
        let ends = (self.index.get(from).copied(), self.index.get(to).copied());
        let latency = match ends {
            (Some(f), Some(t)) if self.links.per_link_latency => self.link_latency(f, t),
            _ => self
                .rng
                .random_range(self.faults.latency_min_ms..=self.faults.latency_max_ms),
        };
        let metered = self.traffic.is_some() || self.links.uplink_mbps.is_some();
        let bytes = if metered { message.encoded_len() } else { 0 };
        // Leaves when the sender's uplink has sent everything queued before it.
        let mut departs_ms = now_ms;
        if let (Some(f), Some(mbps)) = (ends.0, self.links.uplink_mbps) {
            if mbps > 0.0 {
                let free = &mut self.uplink_free_us[f as usize];
                let departs_us = (*free).max(now_ms * 1_000) + self.links.serialization_us(bytes);
                *free = departs_us;
                departs_ms = departs_us.div_ceil(1_000);
            }
        }
        let arrives_ms = departs_ms + latency;
        if let (Some(log), (Some(f), Some(t))) = (self.traffic.as_mut(), ends) {
            log.push(Transfer {
                sent_ms: now_ms,
                arrives_ms,
                from: f,
                to: t,
                bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
                kind: message.kind(),
                blob_copy: message.blob_copy(),
            });
        }
        self.seq += 1;
        self.in_flight
            .insert((arrives_ms, self.seq), (from.clone(), to.clone(), message));
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

/// SplitMix64: a well-mixed 64-bit hash of `x`.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
