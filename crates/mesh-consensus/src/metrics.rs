//! Prometheus metrics of the consensus node (prometheus-client), registered
//! under the `consensus` prefix of the registry the node runtime passes in.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The consensus node's metrics (cheap to clone; clones share values).
#[derive(Clone)]
pub struct ConsensusMetrics {
    /// Current Raft term.
    pub term: Gauge,
    /// Highest committed log index.
    pub commit_index: Gauge,
    /// Highest applied log index.
    pub last_applied: Gauge,
    /// The leader's commit index as this node last heard it.
    pub leader_commit_index: Gauge,
    /// Entries the leader has committed that this node has not applied yet.
    pub apply_lag: Gauge,
    /// 1 on the leader, 0 elsewhere.
    pub is_leader: Gauge,
    /// 1 while this node knows a current leader, 0 during elections.
    pub has_leader: Gauge,
    /// Times this node saw the leader change.
    pub leader_changes: Counter,
    /// Seconds from propose to applied receipt, as the proposer saw it.
    pub proposal_latency_seconds: Histogram,
    /// Snapshots this node built.
    pub snapshots: Gauge,
    /// Size of the current snapshot, in bytes.
    pub snapshot_size_bytes: Gauge,
    /// Commit certificates this node assembled or verified.
    pub certificates: Counter,
    /// Evidence this node proposed.
    pub evidence: Counter,
    /// RPCs to a member delayed because it kept failing or refusing (see `backoff.rs`).
    pub replication_backoffs: Counter,
    /// Raft RPCs this node refused because it lost state and is rejoining.
    pub rejoin_refusals: Counter,
    /// Members this node, as leader, removed and granted a rejoin.
    pub rejoins_granted: Counter,
    /// 1 while this node is rejoining after losing Raft state, 0 otherwise.
    pub rejoining: Gauge,
}

impl ConsensusMetrics {
    /// Creates the metrics and registers them under `consensus_` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            term: Gauge::default(),
            commit_index: Gauge::default(),
            last_applied: Gauge::default(),
            leader_commit_index: Gauge::default(),
            apply_lag: Gauge::default(),
            is_leader: Gauge::default(),
            has_leader: Gauge::default(),
            leader_changes: Counter::default(),
            // 100 us .. ~3.3 s
            proposal_latency_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            snapshots: Gauge::default(),
            snapshot_size_bytes: Gauge::default(),
            certificates: Counter::default(),
            evidence: Counter::default(),
            replication_backoffs: Counter::default(),
            rejoin_refusals: Counter::default(),
            rejoins_granted: Counter::default(),
            rejoining: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("consensus");
        r.register("term", "Current Raft term", m.term.clone());
        r.register(
            "commit_index",
            "Highest committed log index",
            m.commit_index.clone(),
        );
        r.register(
            "last_applied",
            "Highest applied log index",
            m.last_applied.clone(),
        );
        r.register(
            "leader_commit_index",
            "The leader's commit index as this node last heard it",
            m.leader_commit_index.clone(),
        );
        r.register(
            "apply_lag",
            "Entries the leader has committed that this node has not applied yet",
            m.apply_lag.clone(),
        );
        r.register(
            "is_leader",
            "1 if this node leads the committee",
            m.is_leader.clone(),
        );
        r.register(
            "has_leader",
            "1 while this node knows a current leader",
            m.has_leader.clone(),
        );
        r.register(
            "leader_changes",
            "Leader changes seen",
            m.leader_changes.clone(),
        );
        r.register(
            "proposal_latency_seconds",
            "Time from propose to applied receipt",
            m.proposal_latency_seconds.clone(),
        );
        r.register(
            "snapshots",
            "Snapshots built by this node",
            m.snapshots.clone(),
        );
        r.register(
            "snapshot_size_bytes",
            "Size of the current snapshot",
            m.snapshot_size_bytes.clone(),
        );
        r.register(
            "certificates",
            "Commit certificates assembled or verified",
            m.certificates.clone(),
        );
        r.register(
            "evidence",
            "Evidence proposed by this node",
            m.evidence.clone(),
        );
        r.register(
            "replication_backoffs",
            "RPCs to a member delayed because it kept failing or refusing the same append",
            m.replication_backoffs.clone(),
        );
        r.register(
            "rejoin_refusals",
            "Raft RPCs refused because this node lost state and is rejoining",
            m.rejoin_refusals.clone(),
        );
        r.register(
            "rejoins_granted",
            "Members that lost raft state, removed and granted a rejoin by this node as leader",
            m.rejoins_granted.clone(),
        );
        r.register(
            "rejoining",
            "1 while this node is rejoining after losing raft state",
            m.rejoining.clone(),
        );
        m
    }
}

/// Saturating conversion for gauges.
pub(crate) fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
