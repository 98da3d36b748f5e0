//! What the simulated network carries, and how its links behave when a
//! benchmark asks for more than the default LAN.
//!
//! [`LinkModel`] makes each link's latency a fixed, seeded draw from the
//! configured range (instead of one draw per message) and gives each node an
//! uplink of a fixed bandwidth: a message occupies its sender's uplink for
//! its encoded size divided by the bandwidth, messages leave one after
//! another, so a node that serves a large blob to many peers sends the last
//! copy late. Downlinks are not limited.
//!
//! [`TrafficLog`] records every message the network accepts (sender,
//! receiver, encoded size, send and arrival times); [`TrafficLog::summary`]
//! turns the record into per-node figures.

use std::collections::{BTreeMap, HashMap};

/// How the simulated links behave beyond the configured latency range.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkModel {
    /// Each (sender, receiver) link keeps one latency, a seeded draw from the
    /// configured range; otherwise every message draws its own.
    pub per_link_latency: bool,
    /// Each node's uplink bandwidth in Mbit/s; `None` is unlimited.
    pub uplink_mbps: Option<f64>,
}

impl LinkModel {
    /// Microseconds a message of `bytes` occupies an uplink (0 when unlimited).
    pub fn serialization_us(&self, bytes: usize) -> u64 {
        match self.uplink_mbps {
            // bits / (Mbit/s) = microseconds.
            Some(mbps) if mbps > 0.0 => (bytes as f64 * 8.0 / mbps).ceil() as u64,
            _ => 0,
        }
    }
}

/// One message the network accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// Simulated time it was sent, ms.
    pub sent_ms: u64,
    /// Simulated time it arrives, ms.
    pub arrives_ms: u64,
    /// Sender (node index).
    pub from: u32,
    /// Receiver (node index).
    pub to: u32,
    /// Encoded size on the wire (postcard), bytes.
    pub bytes: u32,
    /// What it is ([`RoundMessage::kind`](crate::protocol::RoundMessage::kind)).
    pub kind: &'static str,
    /// Whether it starts, and whether it ends, a copy of a blob
    /// ([`RoundMessage::blob_copy`](crate::protocol::RoundMessage::blob_copy)).
    pub blob_copy: (bool, bool),
}

/// The record of a run's messages, up to a bound.
#[derive(Debug, Clone, Default)]
pub struct TrafficLog {
    transfers: Vec<Transfer>,
    max: usize,
    /// Messages not recorded because the record was full.
    pub unrecorded: u64,
}

/// Per-node traffic figures of a run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TrafficSummary {
    /// Mean over nodes of messages sent plus received, per round.
    pub messages_per_node_per_round: f64,
    /// Mean over nodes of encoded bytes sent plus received, per round.
    pub bytes_per_node_per_round: f64,
    /// Bytes sent plus received by the busiest node in its busiest round.
    pub max_bytes_per_node_per_round: u64,
    /// Most distinct peers one node exchanged messages with within a
    /// sliding window of one round's length, over all nodes and times.
    pub peak_connections_per_node: usize,
    /// The node with that peak (index).
    pub peak_connections_node: usize,
    /// Median over nodes of each node's own peak.
    pub median_connections_per_node: usize,
    /// `bytes_per_node_per_round` by message kind.
    pub bytes_per_node_per_round_by_kind: BTreeMap<&'static str, f64>,
    /// Messages the node with the peak connections sent, by kind, over the run.
    pub peak_node_sent_by_kind: BTreeMap<&'static str, u64>,
    /// Messages the node with the peak connections received, by kind, over the run.
    pub peak_node_received_by_kind: BTreeMap<&'static str, u64>,
    /// Most blob copies (first parts, or whole blobs) one node sent in one round.
    pub max_blob_uploads_per_node_per_round: u64,
    /// Mean over rounds after the first of the time from the round's start
    /// (the previous commit) until the last node that fetched a blob in it
    /// held its first one whole (the round's start model), ms.
    pub model_spread_ms: f64,
    /// The longest such time of any round, ms.
    pub max_model_spread_ms: u64,
}

/// Blob copies and model spread, from the blob parts and replies of a run.
struct BlobSpread {
    max_uploads_per_node_per_round: u64,
    mean_spread_ms: f64,
    max_spread_ms: u64,
}

impl BlobSpread {
    /// Figures over `transfers` for rounds ending at `round_ends_ms`.
    fn of(transfers: &[Transfer], round_ends_ms: &[u64]) -> Self {
        let round_of = |t: u64| round_ends_ms.partition_point(|end| *end < t);
        let mut uploads: HashMap<(u32, usize), u64> = HashMap::new();
        // (round, node) -> first arrival of a blob in that round.
        let mut first: HashMap<(usize, u32), u64> = HashMap::new();
        for t in transfers {
            let (starts, ends) = t.blob_copy;
            if starts {
                *uploads.entry((t.from, round_of(t.sent_ms))).or_default() += 1;
            }
            if !ends {
                continue;
            }
            let slot = first
                .entry((round_of(t.arrives_ms), t.to))
                .or_insert(u64::MAX);
            *slot = (*slot).min(t.arrives_ms);
        }
        let mut spreads = Vec::new();
        for round in 1..round_ends_ms.len() {
            let start = round_ends_ms[round - 1];
            let last = first
                .iter()
                .filter(|((r, _), _)| *r == round)
                .map(|(_, at)| *at)
                .max();
            if let Some(last) = last {
                spreads.push(last.saturating_sub(start));
            }
        }
        let mean_spread_ms = if spreads.is_empty() {
            0.0
        } else {
            spreads.iter().sum::<u64>() as f64 / spreads.len() as f64
        };
        Self {
            max_uploads_per_node_per_round: uploads.values().copied().max().unwrap_or(0),
            mean_spread_ms,
            max_spread_ms: spreads.iter().copied().max().unwrap_or(0),
        }
    }
}

impl TrafficLog {
    /// An empty record keeping at most `max` transfers.
    pub fn new(max: usize) -> Self {
        Self {
            transfers: Vec::new(),
            max,
            unrecorded: 0,
        }
    }

    /// Records a transfer (counted as unrecorded when full).
    pub fn push(&mut self, transfer: Transfer) {
        if self.transfers.len() < self.max {
            self.transfers.push(transfer);
        } else {
            self.unrecorded += 1;
        }
    }

    /// The transfers, in the order they were sent.
    pub fn transfers(&self) -> &[Transfer] {
        &self.transfers
    }

    /// Figures for `nodes` nodes whose rounds committed at `round_ends_ms`
    /// (ascending; round k spans from the previous commit, or 0, to its
    /// own). A message counts for its sender when sent and for its receiver
    /// when it arrives. Totals include traffic after the last commit and
    /// are divided by the rounds committed; connections use a window of
    /// `window_ms` (at least 1 ms).
    pub fn summary(&self, nodes: usize, round_ends_ms: &[u64], window_ms: u64) -> TrafficSummary {
        let rounds = round_ends_ms.len().max(1) as f64;
        let window_ms = window_ms.max(1);
        let mut messages = vec![0u64; nodes];
        let mut bytes = vec![0u64; nodes];
        // Bytes per (node, round); rounds past the last commit are not counted.
        let mut per_round: HashMap<(u32, usize), u64> = HashMap::new();
        let round_of = |t: u64| round_ends_ms.partition_point(|end| *end < t);
        // (time, peer) contacts per node.
        let mut contacts: Vec<Vec<(u64, u32)>> = vec![Vec::new(); nodes];
        let mut by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
        for t in &self.transfers {
            if (t.from as usize) < nodes && (t.to as usize) < nodes {
                // Counted by sender and receiver, as the totals are.
                *by_kind.entry(t.kind).or_default() += 2 * u64::from(t.bytes);
            }
            for (node, peer, at) in [(t.from, t.to, t.sent_ms), (t.to, t.from, t.arrives_ms)] {
                let Some(slot) = messages.get_mut(node as usize) else {
                    continue;
                };
                *slot += 1;
                bytes[node as usize] += u64::from(t.bytes);
                let round = round_of(at);
                if round < round_ends_ms.len() {
                    *per_round.entry((node, round)).or_default() += u64::from(t.bytes);
                }
                contacts[node as usize].push((at, peer));
            }
        }
        let mut peaks: Vec<usize> = contacts
            .iter_mut()
            .map(|c| peak_distinct(c, window_ms))
            .collect();
        let (peak_node, peak) = peaks
            .iter()
            .copied()
            .enumerate()
            .max_by_key(|(i, p)| (*p, std::cmp::Reverse(*i)))
            .unwrap_or((0, 0));
        peaks.sort_unstable();
        let (mut sent, mut received) = (BTreeMap::new(), BTreeMap::new());
        for t in &self.transfers {
            if t.from as usize == peak_node {
                *sent.entry(t.kind).or_default() += 1;
            }
            if t.to as usize == peak_node {
                *received.entry(t.kind).or_default() += 1;
            }
        }
        let n = nodes.max(1) as f64;
        let spread = BlobSpread::of(&self.transfers, round_ends_ms);
        TrafficSummary {
            messages_per_node_per_round: messages.iter().sum::<u64>() as f64 / n / rounds,
            bytes_per_node_per_round: bytes.iter().sum::<u64>() as f64 / n / rounds,
            max_bytes_per_node_per_round: per_round.values().copied().max().unwrap_or(0),
            peak_connections_per_node: peak,
            peak_connections_node: peak_node,
            median_connections_per_node: peaks.get(peaks.len() / 2).copied().unwrap_or(0),
            bytes_per_node_per_round_by_kind: by_kind
                .into_iter()
                .map(|(k, b)| (k, b as f64 / n / rounds))
                .collect(),
            peak_node_sent_by_kind: sent,
            peak_node_received_by_kind: received,
            max_blob_uploads_per_node_per_round: spread.max_uploads_per_node_per_round,
            model_spread_ms: spread.mean_spread_ms,
            max_model_spread_ms: spread.max_spread_ms,
        }
    }
}

/// Most distinct peers among `contacts` falling in any window
/// `[t - window_ms + 1, t]`; sorts `contacts` by time.
fn peak_distinct(contacts: &mut [(u64, u32)], window_ms: u64) -> usize {
    contacts.sort_unstable();
    let mut counts: HashMap<u32, u32> = HashMap::new();
    let (mut start, mut peak) = (0, 0);
    for end in 0..contacts.len() {
        let (t, peer) = contacts[end];
        *counts.entry(peer).or_default() += 1;
        while contacts[start].0 + window_ms <= t {
            let old = contacts[start].1;
            if let Some(c) = counts.get_mut(&old) {
                *c -= 1;
                if *c == 0 {
                    counts.remove(&old);
                }
            }
            start += 1;
        }
        peak = peak.max(counts.len());
    }
    peak
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(sent_ms: u64, from: u32, to: u32, bytes: u32) -> Transfer {
        Transfer {
            sent_ms,
            arrives_ms: sent_ms + 10,
            from,
            to,
            bytes,
            kind: "blob_reply",
            blob_copy: (bytes >= 256, bytes >= 256),
        }
    }

    #[test]
    fn connections_count_distinct_peers_within_the_window() {
        let mut log = TrafficLog::new(100);
        // Node 0 talks to 1, 2, 3 early, and to 4 much later.
        for (t, to) in [(0, 1), (5, 2), (5, 1), (20, 3), (5_000, 4)] {
            log.push(transfer(t, 0, to, 100));
        }
        let s = log.summary(5, &[1_000, 6_000], 1_000);
        assert_eq!(s.peak_connections_per_node, 3);
        assert_eq!(s.peak_connections_node, 0);
        // Everyone else talked to node 0 alone.
        assert_eq!(s.median_connections_per_node, 1);
        // 5 messages, each counted by sender and receiver, over 5 nodes and 2 rounds.
        assert_eq!(s.messages_per_node_per_round, 1.0);
        assert_eq!(s.bytes_per_node_per_round, 100.0);
        // Node 0 sent 4 messages (400 bytes) in round 1.
        assert_eq!(s.max_bytes_per_node_per_round, 400);
        assert_eq!(s.bytes_per_node_per_round_by_kind["blob_reply"], 100.0);
        assert_eq!(s.peak_node_sent_by_kind["blob_reply"], 5);
        assert!(s.peak_node_received_by_kind.is_empty());
        // With a short window node 0 never holds three peers at once.
        let s = log.summary(5, &[1_000, 6_000], 10);
        assert_eq!(s.peak_connections_per_node, 2);
    }

    #[test]
    fn blob_copies_and_spread_count_non_empty_replies_per_round() {
        let mut log = TrafficLog::new(100);
        // Round 1 starts at 1,000: node 0 sends two copies, node 1 one,
        // and a "not here" that counts for nothing.
        log.push(transfer(1_100, 0, 1, 5_000));
        log.push(transfer(1_100, 0, 2, 5_000));
        log.push(transfer(1_200, 1, 3, 5_000));
        log.push(transfer(1_300, 4, 3, 40));
        let s = log.summary(5, &[1_000, 6_000], 1_000);
        assert_eq!(s.max_blob_uploads_per_node_per_round, 2);
        // The last first copy arrives at 1,210.
        assert_eq!(s.max_model_spread_ms, 210);
        assert_eq!(s.model_spread_ms, 210.0);
    }

    #[test]
    fn a_full_record_counts_what_it_left_out() {
        let mut log = TrafficLog::new(1);
        log.push(transfer(0, 0, 1, 1));
        log.push(transfer(1, 0, 1, 1));
        assert_eq!(log.transfers().len(), 1);
        assert_eq!(log.unrecorded, 1);
    }

    #[test]
    fn an_uplink_takes_bytes_over_bandwidth() {
        let links = LinkModel {
            per_link_latency: true,
            uplink_mbps: Some(100.0),
        };
        // 400 kB at 100 Mbit/s: 32 ms.
        assert_eq!(links.serialization_us(400_000), 32_000);
        assert_eq!(LinkModel::default().serialization_us(400_000), 0);
    }
}
