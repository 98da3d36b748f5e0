//! Builds the API's [`NodeSnapshot`] from the runtime's parts.

use mesh_consensus::ConsensusStatus;
use mesh_net::{PeerInfo, PeerStatus};

use super::{now_ms, Runtime};
use crate::api::{NodeSnapshot, PeerView, StatusView};

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

fn peer_view(peer: &PeerInfo, now_ms: u64) -> PeerView {
    PeerView {
        peer_id: peer.peer.to_string(),
        addresses: peer.addresses.iter().map(ToString::to_string).collect(),
        state: state_name(peer.state).into(),
        rtt_ms: peer.rtt_ms.map(|ms| ms as f64),
        last_seen_ms_ago: peer.last_seen_ms.map(|t| now_ms.saturating_sub(t)),
    }
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
    let (ready, not_ready_reason) = if admitted > 0 || alone_by_design {
        (true, String::new())
    } else {
        (false, "no admitted peer yet".to_string())
    };
    NodeSnapshot {
        ready,
        not_ready_reason,
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
            uptime_s: runtime.started.elapsed().as_secs(),
            listen_addrs: runtime.listen_addrs.clone(),
            peers_connected: connected,
            peers_admitted: admitted,
        },
        peers: peers.iter().map(|p| peer_view(p, now)).collect(),
        consensus: consensus.and_then(|s| serde_json::to_value(s).ok()),
        jobs: Vec::new(),
        reputation: Vec::new(),
    }
}
