//! A member that lost Raft state it had acknowledged rejoins the committee
//! as a learner; it never votes or acknowledges appends with what is left.
//!
//! Why: Raft's safety rests on a voter never forgetting its vote or an entry
//! it acknowledged. A voter whose store was removed, replaced by an old copy,
//! or cut short could vote twice in a term, vote for a candidate that lacks
//! entries committed with its help, or, having forgotten its term, accept a
//! deposed leader's appends and let it "commit" entries that conflict with
//! committed ones. openraft lets an empty voter do all of that (an empty log
//! cannot win an election, but it can grant votes and acknowledge appends).
//! Its leader also never gives up on such a follower: the follower's answers
//! say it lacks entries it had matched, which openraft does not expect, and
//! it sent the same append again in a busy loop.
//!
//! How a node knows: the seal (`store/seal.rs`) names the store the node's
//! state lives in. At open:
//!
//! ```text
//!   seal              store                       standing
//!   none              any (new, or older build)   Sealed: write a seal naming it
//!   names this store  (same incarnation)          what the seal says
//!   names another     removed, replaced, or new   Rejoining (no grant)
//!   unreadable        any                         Rejoining (no grant)
//! ```
//!
//! Damage inside a store (a bad write-ahead record followed by good ones, a
//! redb file redb cannot read) stops the node with `StoreError::Damaged`;
//! `agent-mesh node --reset-raft-state` moves the folder aside and the next
//! start finds a new store under an old seal: Rejoining.
//!
//! The rejoin, between the member M and the leader L of term T:
//!
//! ```text
//!   M (Rejoining, no grant): refuses votes, pre-votes, appends and snapshot
//!      chunks with RemoteFailure::Rejoining; starts no election
//!   L: its client sees the refusal ──► removes M from the membership
//!      (change committed at index R) ──► RejoinGrant { term T, leader L, removed_at R } ──► M
//!   M: writes the grant into its seal, then accepts appends and snapshots
//!      from term T on (never from a deposed leader of an earlier term),
//!      still refuses votes
//!   L: adds M back as a learner; M catches up by log or snapshot
//!   M: once it has applied R under a vote of term >= T ──► Sealed: votes
//!      again, and the controller may make it a voter again
//! ```
//!
//! Why that is enough: once R is committed, every leader of a later term
//! holds R, so its membership counts M as a voter only if it was promoted
//! again through a normal change, after catching up. Leaders of earlier
//! terms are refused. Leader L's own stale view of what M had matched is
//! dropped with M's removal (a member added back starts with fresh
//! replication progress). Until M holds R it casts no vote, so no election
//! depends on what it forgot. A second loss while rejoining drops the grant
//! and starts over.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use openraft::rt::watch::WatchReceiver;
use openraft::ServerState;
use tokio::sync::watch;

use super::{tasks::pause, ConsensusNode, Inner};
use crate::error::{ConsensusError, StoreError};
use crate::network::{self, RemoteFailure, RpcRequest, RpcResponse};
use crate::store::seal::{self, Seal, Standing};
use crate::store::Incarnation;
use crate::types::{MemberId, MemberInfo, RejoinGrant, TypeConfig};

/// How often the leader looks at members that refused as rejoining.
const REJOIN_TICK: Duration = Duration::from_millis(250);
/// Most rejoining members remembered between two looks.
const REJOIN_PENDING_MAX: usize = 64;
/// RPC timeouts after a grant during which the member's refusals are
/// ignored (they were sent before the grant reached it).
const GRANT_QUIET_RPC_TIMEOUTS: u32 = 3;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The standing at open, from the seal as read and the store as opened, and
/// why the state counts as lost (`None` when it does not). See the module docs.
pub(crate) fn standing_at_open(
    seal: Result<Option<Seal>, String>,
    store: Incarnation,
) -> (Standing, Option<String>) {
    match seal {
        Ok(None) => (Standing::Sealed, None),
        Ok(Some(seal)) if seal.incarnation == store.id => (seal.standing, None),
        Ok(Some(seal)) => {
            let what = if store.created {
                "was removed (a new, empty store was created in its place)"
            } else {
                "was replaced by another store"
            };
            let why = format!(
                "the raft store this node sealed (incarnation {:032x}) {what}",
                seal.incarnation
            );
            (Standing::Rejoining { grant: None }, Some(why))
        }
        Err(reason) => (
            Standing::Rejoining { grant: None },
            Some(format!("the seal cannot be read: {reason}")),
        ),
    }
}

/// Whether a node of `standing` hands `request` to its Raft core.
pub(crate) fn admits(standing: &Standing, request: &RpcRequest) -> bool {
    let Standing::Rejoining { grant } = standing else {
        return true;
    };
    let from_term = |term: u64| grant.is_some_and(|g| term >= g.term);
    match request {
        RpcRequest::Vote(_) | RpcRequest::PreVote(_) => false,
        RpcRequest::Append(req) => from_term(req.vote.leader_id().term),
        RpcRequest::SnapshotChunk(chunk) => from_term(chunk.vote.leader_id().term),
        RpcRequest::Forward(_) | RpcRequest::Statement(_) | RpcRequest::RejoinGrant(_) => true,
    }
}

/// This node's standing, kept in step with its seal.
pub(crate) struct Guard {
    seal_path: PathBuf,
    incarnation: u128,
    standing: Mutex<Standing>,
}

impl Guard {
    /// Reads the seal beside `data_dir`, decides the standing for the store
    /// opened there, and writes the seal; also returns why the state counts
    /// as lost, if it does.
    pub(crate) fn open(
        data_dir: &Path,
        store: Incarnation,
    ) -> Result<(Self, Option<String>), ConsensusError> {
        let seal_path = seal::seal_path(data_dir);
        let (standing, lost) = standing_at_open(seal::read(&seal_path), store);
        let guard = Self {
            seal_path,
            incarnation: store.id,
            standing: Mutex::new(standing.clone()),
        };
        guard.write(standing)?;
        Ok((guard, lost))
    }

    fn write(&self, standing: Standing) -> Result<(), ConsensusError> {
        let seal = Seal {
            incarnation: self.incarnation,
            standing,
        };
        seal::write(&self.seal_path, &seal).map_err(|e| {
            ConsensusError::Store(StoreError::Open(format!(
                "{}: {e}",
                self.seal_path.display()
            )))
        })
    }

    /// Whether the node is rejoining (see the module docs).
    pub(crate) fn is_rejoining(&self) -> bool {
        matches!(*lock(&self.standing), Standing::Rejoining { .. })
    }

    /// Whether `request` may go to the Raft core now.
    pub(crate) fn admits(&self, request: &RpcRequest) -> bool {
        admits(&lock(&self.standing), request)
    }

    /// Takes a leader's grant sent by `from`: written to the seal before it
    /// counts. A grant of an earlier term than the one held is ignored.
    pub(crate) fn accept_grant(&self, from: MemberId, grant: RejoinGrant) -> Result<(), String> {
        if from != grant.leader {
            return Err(format!(
                "a rejoin grant is taken from the leader that made it ({}), not from {from}",
                grant.leader
            ));
        }
        let mut standing = lock(&self.standing);
        let newer = match &*standing {
            Standing::Sealed => false,
            Standing::Rejoining { grant: held } => held.is_none_or(|h| grant.term > h.term),
        };
        if newer {
            let next = Standing::Rejoining { grant: Some(grant) };
            self.write(next.clone()).map_err(|e| e.to_string())?;
            *standing = next;
        }
        Ok(())
    }

    /// Seals the store once the node has applied its grant's removal entry
    /// under a vote of the grant's term or later; `true` when it did.
    pub(crate) fn try_seal(
        &self,
        applied_index: Option<u64>,
        vote_term: u64,
    ) -> Result<bool, ConsensusError> {
        let mut standing = lock(&self.standing);
        let Standing::Rejoining { grant: Some(grant) } = &*standing else {
            return Ok(false);
        };
        if applied_index.is_none_or(|i| i < grant.removed_at) || vote_term < grant.term {
            return Ok(false);
        }
        self.write(Standing::Sealed)?;
        *standing = Standing::Sealed;
        Ok(true)
    }
}

/// Members that answered the leader's RPCs with [`RemoteFailure::Rejoining`]
/// since the last look, with the record that routes to them (bounded).
#[derive(Default)]
pub struct RejoinRequests {
    pending: Mutex<BTreeMap<MemberId, MemberInfo>>,
}

impl RejoinRequests {
    /// Records that `member`, reached as `route`, refused as rejoining.
    pub(crate) fn report(&self, member: MemberId, route: &MemberInfo) {
        let mut pending = lock(&self.pending);
        if pending.len() < REJOIN_PENDING_MAX || pending.contains_key(&member) {
            pending.insert(member, route.clone());
        }
    }

    fn take(&self) -> BTreeMap<MemberId, MemberInfo> {
        std::mem::take(&mut *lock(&self.pending))
    }
}

/// The leader's side: removes each member that refused as rejoining, grants
/// it the rejoin and adds it back as a learner.
pub(super) async fn grant_rejoins(weak: Weak<Inner>, mut stop: watch::Receiver<bool>) {
    // Members granted lately: refusals sent before the grant reached them
    // are no reason to remove them again.
    let mut granted: BTreeMap<MemberId, Instant> = BTreeMap::new();
    while pause(&mut stop, REJOIN_TICK).await {
        let Some(inner) = weak.upgrade() else { return };
        let quiet = Duration::from_millis(inner.config.rpc_timeout_ms) * GRANT_QUIET_RPC_TIMEOUTS;
        granted.retain(|_, at| at.elapsed() < quiet);
        let pending: Vec<(MemberId, MemberInfo)> = inner
            .rejoins
            .take()
            .into_iter()
            .filter(|(member, _)| !granted.contains_key(member))
            .collect();
        let node = ConsensusNode::from_inner(inner);
        // Not the leader, or a membership change under way: the member
        // refuses the next RPC too and is reported again.
        if pending.is_empty() || !node.is_settled_leader() {
            continue;
        }
        for (member, route) in pending {
            match node.grant_rejoin(member, route).await {
                Ok(()) => {
                    granted.insert(member, Instant::now());
                    tracing::warn!(%member, "a member that lost its raft state was removed and rejoins as a learner");
                }
                Err(e) => {
                    tracing::warn!(%member, error = %e, "rejoin not granted yet; retried when the member refuses again");
                }
            }
        }
    }
}

impl ConsensusNode {
    /// Whether this node leads with no membership change under way.
    fn is_settled_leader(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        m.state == ServerState::Leader
            && m.membership_config.log_id() == m.committed_membership_config.log_id()
    }

    /// Removes `member`, sends it the grant, and adds it back as a learner.
    async fn grant_rejoin(
        &self,
        member: MemberId,
        route: MemberInfo,
    ) -> Result<(), ConsensusError> {
        let limit = Duration::from_millis(self.inner.config.propose_timeout_ms);
        let timed_out = || ConsensusError::Timeout {
            timeout_ms: self.inner.config.propose_timeout_ms,
        };
        tokio::time::timeout(limit, self.remove_member(member))
            .await
            .map_err(|_| timed_out())??;
        // Added back, it starts from nothing: what it matched before is moot.
        self.inner.backoffs.forget(member);
        let timeout = Duration::from_millis(self.inner.config.rpc_timeout_ms);
        let grant = self.rejoin_grant(member, timeout).await?;
        let request = RpcRequest::RejoinGrant(grant);
        let transport = self.inner.transport.as_ref();
        match network::call(transport, member, &route, &request, timeout).await {
            Ok(RpcResponse::Ack) => {}
            Ok(other) => return Err(ConsensusError::Forward(format!("grant answered {other:?}"))),
            Err(e) => return Err(ConsensusError::Forward(e.to_string())),
        }
        self.inner.metrics.rejoins_granted.inc();
        tokio::time::timeout(limit, self.add_learner(route, false))
            .await
            .map_err(|_| timed_out())?
    }

    /// Removes `member` from the membership (voter or learner); nothing to
    /// do if it is not a member.
    async fn remove_member(&self, member: MemberId) -> Result<(), ConsensusError> {
        let (voters, is_member) = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow_watched();
            let membership = m.membership_config.membership();
            let voters: std::collections::BTreeSet<MemberId> = membership.voter_ids().collect();
            (voters, membership.get_node(&member).is_some())
        };
        if !is_member {
            return Ok(());
        }
        if !voters.contains(&member) {
            return self.remove_learners([member].into()).await;
        }
        let rest: std::collections::BTreeSet<MemberId> =
            voters.into_iter().filter(|v| *v != member).collect();
        if rest.is_empty() {
            return Err(ConsensusError::Refused(
                "the only voter cannot be removed".into(),
            ));
        }
        self.replace_voters(rest).await
    }

    /// The grant for `member`, once the committed membership no longer has
    /// it (waiting up to `timeout` for the metrics to show the removal), if
    /// this node still leads.
    async fn rejoin_grant(
        &self,
        member: MemberId,
        timeout: Duration,
    ) -> Result<RejoinGrant, ConsensusError> {
        let without = |m: &openraft::RaftMetrics<TypeConfig>| {
            m.committed_membership_config
                .membership()
                .get_node(&member)
                .is_none()
        };
        let m = self
            .inner
            .raft
            .wait(Some(timeout))
            .metrics(without, "the removal of a rejoining member")
            .await
            .map_err(|e| ConsensusError::Membership(e.to_string()))?;
        if m.state != ServerState::Leader {
            return Err(ConsensusError::Membership(
                "this node stopped leading before the grant".into(),
            ));
        }
        let committed = &m.committed_membership_config;
        Ok(RejoinGrant {
            term: m.vote.leader_id().term,
            leader: self.inner.id,
            removed_at: committed.log_id().as_ref().map_or(0, |l| l.index),
        })
    }

    /// The member's side of a grant (see [`Guard::accept_grant`]).
    pub(super) fn accept_grant(&self, from: MemberId, grant: RejoinGrant) -> RpcResponse {
        match self.inner.guard.accept_grant(from, grant) {
            Ok(()) => {
                tracing::info!(leader = %grant.leader, term = grant.term, removed_at = grant.removed_at, "rejoin granted: catching up as a learner");
                RpcResponse::Ack
            }
            Err(reason) => RpcResponse::Failed(RemoteFailure::Refused(reason)),
        }
    }

    /// Seals the store once the rejoin is complete, and lets the node stand
    /// for election again (called by the metrics watcher).
    pub(super) fn seal_when_caught_up(&self, applied_index: Option<u64>, vote_term: u64) {
        match self.inner.guard.try_seal(applied_index, vote_term) {
            Ok(true) => {
                self.inner.raft.runtime_config().elect(true);
                self.inner.metrics.rejoining.set(0);
                tracing::info!("caught up after losing raft state: the store is sealed and the node votes again");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot seal the caught-up store; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::types::Vote;
    use openraft::raft::{AppendEntriesRequest, VoteRequest};

    fn store(id: u128, created: bool) -> Incarnation {
        Incarnation { id, created }
    }

    fn sealed(id: u128) -> Result<Option<Seal>, String> {
        Ok(Some(Seal {
            incarnation: id,
            standing: Standing::Sealed,
        }))
    }

    #[test]
    fn a_store_wiped_or_replaced_after_use_is_detected_at_open() {
        // A new node, and a node from before seals existed: nothing lost.
        assert_eq!(
            standing_at_open(Ok(None), store(1, true)),
            (Standing::Sealed, None)
        );
        assert_eq!(
            standing_at_open(sealed(1), store(1, false)).0,
            Standing::Sealed
        );
        // Its raft folder was removed: a new store under the old seal.
        let (standing, why) = standing_at_open(sealed(1), store(2, true));
        assert_eq!(standing, Standing::Rejoining { grant: None });
        assert!(why.unwrap().contains("removed"));
        // Replaced by a copy of another (or an older) store.
        let (standing, why) = standing_at_open(sealed(1), store(3, false));
        assert_eq!(standing, Standing::Rejoining { grant: None });
        assert!(why.unwrap().contains("replaced"));
        // A damaged seal proves nothing: assume the worst.
        let (standing, _) = standing_at_open(Err("damaged".into()), store(1, false));
        assert_eq!(standing, Standing::Rejoining { grant: None });
    }

    fn append(term: u64) -> RpcRequest {
        RpcRequest::Append(AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(term, MemberId(1)),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        })
    }

    fn vote(term: u64) -> RpcRequest {
        RpcRequest::Vote(VoteRequest::new(Vote::new(term, MemberId(1)), None))
    }

    #[test]
    fn a_node_that_lost_state_neither_votes_nor_acknowledges_before_its_grant() {
        let lost = Standing::Rejoining { grant: None };
        assert!(!admits(&lost, &vote(9)));
        assert!(!admits(&lost, &append(9)));
        let granted = Standing::Rejoining {
            grant: Some(RejoinGrant {
                term: 5,
                leader: MemberId(1),
                removed_at: 30,
            }),
        };
        assert!(
            admits(&granted, &append(5)),
            "the granting leader's appends"
        );
        assert!(admits(&granted, &append(6)), "a later leader's appends");
        assert!(!admits(&granted, &append(4)), "never a deposed leader's");
        assert!(!admits(&granted, &vote(6)), "no vote before it is sealed");
        assert!(admits(&Standing::Sealed, &vote(1)));
    }

    #[test]
    fn a_grant_is_taken_from_its_leader_only_and_sealing_waits_for_the_removal_entry() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("raft");
        seal::write(
            &seal::seal_path(&data_dir),
            &Seal {
                incarnation: 1,
                standing: Standing::Sealed,
            },
        )
        .unwrap();
        let (guard, lost) = Guard::open(&data_dir, store(2, true)).unwrap();
        assert!(lost.is_some() && guard.is_rejoining());
        let grant = RejoinGrant {
            term: 5,
            leader: MemberId(1),
            removed_at: 30,
        };
        assert!(
            guard.accept_grant(MemberId(2), grant).is_err(),
            "not from its leader"
        );
        guard.accept_grant(MemberId(1), grant).unwrap();
        // The grant is in the seal: a restart keeps it.
        let (reopened, lost) = Guard::open(&data_dir, store(2, false)).unwrap();
        assert!(lost.is_none());
        assert!(reopened.admits(&append(5)));
        assert!(
            !reopened.try_seal(Some(29), 5).unwrap(),
            "removal entry not applied"
        );
        assert!(
            !reopened.try_seal(Some(30), 4).unwrap(),
            "vote older than the grant"
        );
        assert!(reopened.try_seal(Some(30), 5).unwrap());
        assert!(!reopened.is_rejoining());
        let (after, _) = Guard::open(&data_dir, store(2, false)).unwrap();
        assert!(!after.is_rejoining(), "sealed on disk");
    }
}
