//! Builds the API's [`NodeSnapshot`] from the runtime's parts, readiness
//! included.
//!
//! A node is ready when it is admitted to the mesh (or alone by design) and,
//! if it runs the committee protocol, when it can serve the committed state
//! truthfully: it is in the membership it knows, it knows a leader and heard
//! from it within `health.leader_contact_ms_max`, and it is at most
//! `health.apply_lag_entries_max` entries behind the leader's commit index.

use mesh_consensus::ConsensusStatus;
use mesh_net::{PeerInfo, PeerStatus, PeerVersion};

use super::{now_ms, Runtime};
use crate::api::{NodeSnapshot, PeerView, StatusView};
use crate::config::HealthConfig;

fn state_name(state: PeerStatus) -> &'static str {
    match state {
        PeerStatus::Known => "known",
        PeerStatus::Dialing => "dialing",
        PeerStatus::Connected => "connected",
        PeerStatus::Admitted => "admitted",
        PeerStatus::Down => "down",
        PeerStatus::Banned => "banned",
    }
}

fn peer_view(peer: &PeerInfo, now_ms: u64, version: PeerVersion) -> PeerView {
    PeerView {
        peer_id: peer.peer.to_string(),
        addresses: peer.addresses.iter().map(ToString::to_string).collect(),
        state: state_name(peer.state).into(),
        rtt_ms: peer.rtt_ms.map(|ms| ms as f64),
        last_seen_ms_ago: peer.last_seen_ms.map(|t| now_ms.saturating_sub(t)),
        connection: peer.connection.map(|kind| kind.as_str().to_string()),
        protocol_version: version.to_string(),
    }
}

/// Why a committee member cannot serve the committed state truthfully now,
/// if it cannot (see the module docs).
pub(super) fn consensus_unready(status: &ConsensusStatus, health: &HealthConfig) -> Option<String> {
    if status.voters.is_empty() {
        return Some("the committee has not formed yet".into());
    }
    if !status.is_member() {
        let me = &status.member_str;
        return Some(format!(
            "not in the committee membership it knows (member {me}); waiting to be added"
        ));
    }
    if status.leader.is_none() {
        return Some(
            "no committee leader known (an election is running or a majority is unreachable)"
                .into(),
        );
    }
    let limit_ms = health.leader_contact_ms_max;
    match status.leader_contact_ms_ago {
        Some(ago_ms) if ago_ms <= limit_ms => {}
        Some(ago_ms) => {
            return Some(format!(
                "has not heard from the leader for {ago_ms} ms (limit {limit_ms} ms)"
            ))
        }
        None => return Some("has not heard from the leader yet".into()),
    }
    let (lag, limit) = (status.apply_lag, health.apply_lag_entries_max);
    (lag > limit).then(|| format!("{lag} entries behind the leader's commit index (limit {limit})"))
}

/// The node as the API shows it now.
pub(super) fn snapshot(
    runtime: &Runtime,
    peers: &[PeerInfo],
    consensus: Option<ConsensusStatus>,
) -> NodeSnapshot {
    let now = now_ms();
    let admitted = peers
        .iter()
        .filter(|p| p.state == PeerStatus::Admitted)
        .count();
    let connected = peers
        .iter()
        .filter(|p| matches!(p.state, PeerStatus::Admitted | PeerStatus::Connected))
        .count();
    let alone_by_design = runtime.config.network.bootstrap.is_empty()
        && consensus.as_ref().is_some_and(|s| s.leader.is_some());
    let unready = if admitted > 0 || alone_by_design {
        let health = &runtime.config.health;
        consensus
            .as_ref()
            .and_then(|status| consensus_unready(status, health))
    } else {
        Some("no admitted peer yet".to_string())
    };
    NodeSnapshot {
        ready: unready.is_none(),
        not_ready_reason: unready.unwrap_or_default(),
        status: StatusView {
            node_id: runtime.net.local_peer_id().to_string(),
            mesh_id: runtime.config.mesh_id.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            roles: runtime
                .creds
                .roles
                .iter()
                .map(|r| r.name().to_string())
                .collect(),
            zone: runtime.config.zone.clone(),
            uptime_s: runtime.started.elapsed().as_secs(),
            listen_addrs: runtime.listen_addrs.clone(),
            peers_connected: connected,
            peers_admitted: admitted,
            reachability: runtime.net.reachability().as_str().to_string(),
            protocol_versions: runtime.net.protocol_versions().to_string(),
            followed_index: runtime
                .following
                .as_ref()
                .and_then(|f| f.held())
                .map(|f| f.certified.index()),
        },
        peers: peers
            .iter()
            .map(|p| peer_view(p, now, runtime.net.peer_version(&p.peer)))
            .collect(),
        consensus: consensus.and_then(|s| serde_json::to_value(s).ok()),
        jobs: Vec::new(),
        reputation: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use mesh_consensus::MemberId;

    use super::*;

    fn healthy() -> ConsensusStatus {
        ConsensusStatus {
            member: MemberId(7),
            member_str: "7".into(),
            role: "follower".into(),
            leader: Some(MemberId(1)),
            voters: vec![MemberId(1), MemberId(7), MemberId(9)],
            leader_contact_ms_ago: Some(40),
            apply_lag: 3,
            ..ConsensusStatus::default()
        }
    }

    fn reason(status: &ConsensusStatus) -> String {
        consensus_unready(status, &HealthConfig::default()).unwrap_or_default()
    }

    #[test]
    fn a_member_that_hears_the_leader_and_keeps_up_is_ready() {
        assert_eq!(
            consensus_unready(&healthy(), &HealthConfig::default()),
            None
        );
        let mut learner = healthy();
        learner.voters.retain(|v| *v != MemberId(7));
        learner.learners = vec![MemberId(7)];
        assert_eq!(consensus_unready(&learner, &HealthConfig::default()), None);
    }

    /// Regression: `/readyz` said ready while the node was behind the
    /// committee, outside the membership it believed, or cut off from the
    /// leader.
    #[test]
    fn readiness_is_false_behind_outside_or_cut_off() {
        let mut behind = healthy();
        behind.apply_lag = HealthConfig::default().apply_lag_entries_max + 1;
        assert!(reason(&behind).contains("behind the leader's commit index"));

        let mut outside = healthy();
        outside.voters.retain(|v| *v != MemberId(7));
        assert!(reason(&outside).contains("not in the committee membership"));

        let mut cut_off = healthy();
        cut_off.leader_contact_ms_ago = Some(HealthConfig::default().leader_contact_ms_max + 1);
        assert!(reason(&cut_off).contains("has not heard from the leader"));
        cut_off.leader_contact_ms_ago = None;
        assert!(reason(&cut_off).contains("not heard from the leader yet"));

        let mut leaderless = healthy();
        leaderless.leader = None;
        assert!(reason(&leaderless).contains("no committee leader"));

        let unformed = ConsensusStatus::default();
        assert!(reason(&unformed).contains("has not formed"));
    }
}
