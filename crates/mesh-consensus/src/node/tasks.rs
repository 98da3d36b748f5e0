//! The node's background tasks: the metrics watcher (which also compacts the
//! log by bytes), the certificate signer and the self-healing controller.
//! Each holds only a weak reference to the node, so dropping the node ends
//! them, and each stops when the node's stop signal fires.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::rt::watch::WatchReceiver;
use openraft::ServerState;
use tokio::sync::watch;

use super::{replacement, ConsensusNode, Inner};
use crate::committee;
use crate::metrics::gauge_value;
use crate::network::{self, RpcRequest};
use crate::types::MemberId;

/// Metrics refresh period.
const METRICS_TICK: Duration = Duration::from_millis(100);
/// A learner unreachable this many voter-down limits is removed from the membership.
const LEARNER_DOWN_FACTOR: u32 = 4;
/// Least time between two snapshot requests for compaction by bytes.
const SNAPSHOT_TRIGGER_GAP: Duration = Duration::from_secs(1);

/// Sleeps for `d` unless the stop signal fires first; `false` means stop.
pub(super) async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = stop.changed() => false,
        _ = tokio::time::sleep(d) => !*stop.borrow(),
    }
}

pub(super) async fn watch_metrics(weak: Weak<Inner>, mut stop: watch::Receiver<bool>) {
    let mut last_leader: Option<MemberId> = None;
    let mut last_trigger: Option<Instant> = None;
    while pause(&mut stop, METRICS_TICK).await {
        let Some(inner) = weak.upgrade() else { return };
        let (term, committed, leader_committed, applied, leader, state, vote_term) = {
            let rx = inner.raft.metrics();
            let m = rx.borrow_watched();
            let committed = m.local_committed.map_or(0, |l| l.index);
            (
                m.current_term,
                committed,
                m.cluster_committed.map_or(0, |l| l.index).max(committed),
                m.last_applied.map(|l| l.index),
                m.current_leader,
                m.state,
                m.vote.leader_id().term,
            )
        };
        if inner.guard.is_rejoining() {
            ConsensusNode::from_inner(inner.clone()).seal_when_caught_up(applied, vote_term);
        }
        let applied = applied.unwrap_or(0);
        let mx = &inner.metrics;
        mx.term.set(gauge_value(term));
        mx.commit_index.set(gauge_value(committed));
        mx.leader_commit_index.set(gauge_value(leader_committed));
        mx.last_applied.set(gauge_value(applied));
        // Behind the leader's commit index, not this node's own (see status.rs).
        mx.apply_lag
            .set(gauge_value(leader_committed.saturating_sub(applied)));
        mx.is_leader.set(i64::from(state == ServerState::Leader));
        mx.has_leader.set(i64::from(leader.is_some()));
        inner.log.set_flush_in_place(state != ServerState::Leader);
        if leader != last_leader {
            if leader.is_some() {
                mx.leader_changes.inc();
            }
            last_leader = leader;
        }
        mx.snapshots.set(gauge_value(inner.sm.snapshots_built()));
        if let Some((_, size)) = inner.sm.snapshot_info() {
            mx.snapshot_size_bytes.set(gauge_value(size));
        }
        let over = inner.sm.bytes_since_snapshot() > inner.config.snapshot_max_log_bytes;
        let quiet = last_trigger.is_none_or(|t| t.elapsed() >= SNAPSHOT_TRIGGER_GAP);
        if over && quiet {
            last_trigger = Some(Instant::now());
            let _ = inner.raft.trigger().snapshot().await;
        }
    }
}

pub(super) async fn sign_statements(weak: Weak<Inner>, mut stop: watch::Receiver<bool>) {
    let Some(mut applied) = weak.upgrade().map(|i| i.sm.watch_applied()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = applied.changed() => if r.is_err() { return },
        }
        applied.borrow_and_update();
        let Some(inner) = weak.upgrade() else { return };
        let node = ConsensusNode::from_inner(inner);
        let voters = node.voter_keys();
        let latest = voters
            .contains_key(&node.id())
            .then(|| node.inner.sm.latest_bundle_at(None))
            .flatten();
        if let Some((record, bundle)) = latest {
            let digest = crate::follow::bundle_digest(&bundle);
            node.keep_signed_bundle(record.index, digest, Arc::new(bundle));
            let signed = node.statement_for(&record, digest);
            node.accept_statement(signed.clone());
            let timeout = Duration::from_millis(node.inner.config.rpc_timeout_ms);
            for id in voters.keys().filter(|id| **id != node.id()) {
                let Some(route) = node.member_info(*id) else {
                    continue;
                };
                let transport = node.inner.transport.clone();
                let request = RpcRequest::Statement(signed.clone());
                let target = *id;
                node.spawn(async move {
                    let _ =
                        network::call(transport.as_ref(), target, &route, &request, timeout).await;
                });
            }
        }
        let gap = Duration::from_millis(node.inner.config.certificate_interval_ms);
        drop(node);
        if !pause(&mut stop, gap).await {
            return;
        }
    }
}

pub(super) async fn heal(weak: Weak<Inner>, mut stop: watch::Receiver<bool>) {
    let Some(limit) = weak
        .upgrade()
        .map(|i| Duration::from_millis(i.config.voter_down_limit_ms))
    else {
        return;
    };
    let tick = (limit / 4).max(Duration::from_millis(20));
    let mut leader_since: Option<Instant> = None;
    let mut down_since: BTreeMap<MemberId, Instant> = BTreeMap::new();
    while pause(&mut stop, tick).await {
        let Some(inner) = weak.upgrade() else { return };
        let node = ConsensusNode::from_inner(inner);
        let unhealthy = {
            let rx = node.inner.raft.metrics();
            let m = rx.borrow_watched();
            if m.state != ServerState::Leader {
                leader_since = None;
                down_since.clear();
                continue;
            }
            let since = *leader_since.get_or_insert_with(Instant::now);
            // A new leader first waits one full limit for acknowledgements.
            if since.elapsed() < limit {
                continue;
            }
            // One membership change at a time.
            if m.membership_config.log_id() != m.committed_membership_config.log_id() {
                continue;
            }
            let Some(heartbeat) = &m.heartbeat else {
                continue;
            };
            let me = node.id();
            m.membership_config
                .nodes()
                .map(|(id, _)| *id)
                .filter(|id| *id != me)
                .filter(|id| match heartbeat.get(id) {
                    Some(Some(t)) => openraft::Instant::elapsed(&**t) > limit,
                    _ => true,
                })
                .collect::<BTreeSet<MemberId>>()
        };
        let voters: BTreeSet<MemberId> = node.voter_keys().into_keys().collect();
        // Learners down for a long time are dropped so they stop pinning the log.
        down_since.retain(|id, _| unhealthy.contains(id));
        for id in &unhealthy {
            down_since.entry(*id).or_insert_with(Instant::now);
        }
        let dead: BTreeSet<MemberId> = down_since
            .iter()
            .filter(|(id, t)| !voters.contains(id) && t.elapsed() > limit * LEARNER_DOWN_FACTOR)
            .map(|(id, _)| *id)
            .collect();
        if !dead.is_empty() {
            tracing::warn!(?dead, "removing long-unreachable learners");
            if let Err(e) = node.remove_learners(dead).await {
                tracing::warn!(error = %e, "learner removal failed; will retry");
            }
            continue;
        }
        let candidates = node.candidates(&unhealthy);
        // Voters that are down, quarantined or revoked are replaced first.
        let next = if let Some(next) = replacement(&candidates) {
            tracing::warn!(
                ?unhealthy,
                ?next,
                "replacing unreachable, quarantined or revoked voters"
            );
            next
        } else {
            // Grow the committee when the mesh has grown (never shrink on
            // our own; removal is an operator's decision).
            let (desired, _) = committee::select_committee(&candidates);
            if desired.len() <= voters.len() {
                continue;
            }
            tracing::info!(?desired, "growing the committee with the mesh");
            desired
        };
        if let Err(e) = node.replace_voters(next).await {
            tracing::warn!(error = %e, "committee change failed; will retry");
        }
    }
}
