//! Counters of the round protocol, kept by each node's engine and exported
//! as metrics by the node process and summed by the simulator.

use std::collections::BTreeMap;

use super::messages::RoundMessage;

/// What one node's engine did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProtocolStats {
    /// Messages queued for sending, by kind.
    pub sent_messages: BTreeMap<&'static str, u64>,
    /// Encoded bytes queued for sending.
    pub sent_bytes: u64,
    /// Messages received, by kind.
    pub received_messages: BTreeMap<&'static str, u64>,
    /// Updates that made it into a group result.
    pub updates_accepted: u64,
    /// Updates that arrived after their group closed.
    pub updates_late: u64,
    /// Updates or SecAgg steps refused (bad signature, unknown sender, malformed).
    pub updates_invalid: u64,
    /// Updates a robust rule set aside (reported by final aggregators).
    pub updates_rejected_by_rule: u64,
    /// Participants that dropped out of a group before the unmasking.
    pub dropouts: u64,
    /// Blobs whose bytes did not match their hash.
    pub blobs_rejected: u64,
    /// Group results this node produced.
    pub groups_aggregated: u64,
    /// Groups that failed (too few clients left).
    pub groups_failed: u64,
    /// Local training runs.
    pub trainings: u64,
    /// Combinations computed as a final aggregator.
    pub combinations: u64,
    /// Commands proposed as coordinator.
    pub proposals: u64,
    /// Jobs this node was selected for but declined: its data did not
    /// match the job's schema.
    pub schema_mismatches: u64,
}

impl ProtocolStats {
    /// Counts a message about to be sent.
    pub fn count_sent(&mut self, message: &RoundMessage) {
        *self.sent_messages.entry(message.kind()).or_default() += 1;
        self.sent_bytes += message.encoded_len() as u64;
    }

    /// Counts a received message.
    pub fn count_received(&mut self, message: &RoundMessage) {
        *self.received_messages.entry(message.kind()).or_default() += 1;
    }

    /// Total messages sent.
    pub fn messages_sent(&self) -> u64 {
        self.sent_messages.values().sum()
    }

    /// Adds another node's counters to these.
    pub fn add(&mut self, other: &ProtocolStats) {
        for (k, v) in &other.sent_messages {
            *self.sent_messages.entry(k).or_default() += v;
        }
        for (k, v) in &other.received_messages {
            *self.received_messages.entry(k).or_default() += v;
        }
        self.sent_bytes += other.sent_bytes;
        self.updates_accepted += other.updates_accepted;
        self.updates_late += other.updates_late;
        self.updates_invalid += other.updates_invalid;
        self.updates_rejected_by_rule += other.updates_rejected_by_rule;
        self.dropouts += other.dropouts;
        self.blobs_rejected += other.blobs_rejected;
        self.groups_aggregated += other.groups_aggregated;
        self.groups_failed += other.groups_failed;
        self.trainings += other.trainings;
        self.combinations += other.combinations;
        self.proposals += other.proposals;
        self.schema_mismatches += other.schema_mismatches;
    }
}
