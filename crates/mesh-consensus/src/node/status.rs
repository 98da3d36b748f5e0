//! What `GET /v1/consensus` shows of a committee member, and how far it is
//! from the leader.
//!
//! The apply lag is measured against the leader's commit index, not this
//! node's own: openraft's *cluster-committed* index, which every append the
//! leader sends (heartbeats included) carries. A follower cut off from the
//! leader stops hearing it, so the lag alone cannot tell it is behind; the
//! time since the leader was last heard (`leader_contact_ms_ago`) does. On a
//! follower or learner that is the time since it last accepted an append; on
//! the leader, since a quorum of voters last acknowledged it.
//!
//! Member ids are 64-bit hashes, and JSON tools read numbers as doubles that
//! round above 2^53, so every id is also given as a decimal string
//! (`member_str`, `voters_str`, ...), and `member_peers` maps each member's id
//! to its peer id.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::rt::watch::WatchReceiver;
use openraft::{Instant as _, ServerState};
use serde::Serialize;

use super::{lock, ConsensusNode};
use crate::types::MemberId;

/// Index and size of a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotStatus {
    /// Last log index it covers.
    pub index: u64,
    /// Its size, in bytes.
    pub size_bytes: u64,
}

/// What `GET /v1/consensus` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConsensusStatus {
    /// This node.
    pub member: MemberId,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    /// The leader this node knows of.
    pub leader: Option<MemberId>,
    /// Current term.
    pub term: u64,
    /// Highest index this node knows committed and has in its log.
    pub commit_index: Option<u64>,
    /// Highest applied index.
    pub last_applied: Option<u64>,
    /// The leader's commit index as this node last heard it (openraft's
    /// cluster-committed index; on the leader, its own).
    pub leader_commit_index: Option<u64>,
    /// Entries the leader has committed that this node has not applied yet.
    pub apply_lag: u64,
    /// Milliseconds since this node last heard from the leader (see the
    /// module docs); `None` if it never has in this process.
    pub leader_contact_ms_ago: Option<u64>,
    /// Current voters.
    pub voters: Vec<MemberId>,
    /// Current learners (non-voters).
    pub learners: Vec<MemberId>,
    /// `member` as a decimal string.
    pub member_str: String,
    /// `leader` as a decimal string.
    pub leader_str: Option<String>,
    /// `voters` as decimal strings.
    pub voters_str: Vec<String>,
    /// `learners` as decimal strings.
    pub learners_str: Vec<String>,
    /// Every member (voters and learners): member id as a decimal string ->
    /// peer id.
    pub member_peers: BTreeMap<String, String>,
    /// Members that declared a zone: member id as a decimal string -> zone.
    pub member_zones: BTreeMap<String, String>,
    /// The current snapshot.
    pub last_snapshot: Option<SnapshotStatus>,
    /// State hash of the applied state (hex).
    pub state_hash: String,
    /// Entries in the local log.
    pub log_entries: usize,
    /// Snapshots received from a leader and installed since this node started.
    pub snapshots_installed: u64,
    /// Whether this node lost Raft state it had acknowledged and is rejoining
    /// (it votes and counts toward commits only once caught up; see `rejoin.rs`).
    pub rejoining: bool,
}

impl ConsensusStatus {
    /// Whether this node is in the membership it knows, as a voter or learner.
    pub fn is_member(&self) -> bool {
        self.voters.contains(&self.member) || self.learners.contains(&self.member)
    }
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn id_strings(ids: &[MemberId]) -> Vec<String> {
    ids.iter().map(|id| id.0.to_string()).collect()
}

impl ConsensusNode {
    /// A snapshot of the node's consensus state.
    pub fn status(&self) -> ConsensusStatus {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let voters: Vec<MemberId> = membership.voter_ids().collect();
        let learners: Vec<MemberId> = membership.learner_ids().collect();
        let member_peers = membership
            .nodes()
            .map(|(id, info)| (id.0.to_string(), info.node_id.clone()))
            .collect();
        let member_zones = membership
            .nodes()
            .filter_map(|(id, info)| Some((id.0.to_string(), info.zone.clone()?)))
            .collect();
        let commit_index = m.local_committed.map(|l| l.index);
        let last_applied = m.last_applied.map(|l| l.index);
        let leader_commit_index = m.cluster_committed.map(|l| l.index).max(commit_index);
        let leader_contact_ms_ago = match m.state {
            ServerState::Leader if voters.len() <= 1 => Some(0),
            ServerState::Leader => m.last_quorum_acked.as_ref().map(|t| ms(t.elapsed())),
            _ => lock(&self.inner.leader_contact).map(|t| ms(t.elapsed())),
        };
        let status = ConsensusStatus {
            member: self.inner.id,
            role: role.to_owned(),
            leader: m.current_leader,
            term: m.current_term,
            commit_index,
            last_applied,
            leader_commit_index,
            apply_lag: leader_commit_index
                .unwrap_or(0)
                .saturating_sub(last_applied.unwrap_or(0)),
            leader_contact_ms_ago,
            member_str: self.inner.id.0.to_string(),
            leader_str: m.current_leader.map(|id| id.0.to_string()),
            voters_str: id_strings(&voters),
            learners_str: id_strings(&learners),
            voters,
            learners,
            member_peers,
            member_zones,
            ..ConsensusStatus::default()
        };
        drop(m);
        ConsensusStatus {
            last_snapshot: self
                .inner
                .sm
                .snapshot_info()
                .map(|(index, size_bytes)| SnapshotStatus { index, size_bytes }),
            state_hash: self.inner.sm.read(|s| s.state_hash().to_string()),
            log_entries: self.inner.log.len_entries(),
            snapshots_installed: self.inner.sm.snapshots_installed(),
            rejoining: self.inner.guard.is_rejoining(),
            ..status
        }
    }
}
