//! Nodes without the committee follow the committed state without the Raft
//! log ([`mesh_consensus::follow`]), and every node serves the newest
//! certified state it holds to those that ask.
//!
//! ```text
//!   follower                                   any peer (committee or follower)
//!     hears a certificate gossiped (index i), or nothing for REFRESH_MS
//!     ── state/1 request: postcard(u64 index held, 0 for none) ──►
//!                                              newest CertifiedState it holds,
//!     ◄── postcard(StateAnswer) ──               if newer than the index asked:
//!                                              the commands since that index
//!                                              (a committee member whose log
//!                                              holds them) or the whole state;
//!                                              and the leader as it knows it
//!     StateFollower::accept / accept_delta: digest, certificate, trusted signers
//! ```
//!
//! The leader a peer names is not certified (voters may disagree on it for a
//! moment, so it cannot be signed with the state); it is taken only when it
//! is one of the verified state's voters, and serves to route the round
//! reports that go to the leader.
//!
//! One fetch is in flight at a time, at most one every [`FETCH_GAP_MS`].
//! Once a follower holds a state, every other fetch goes to a committee
//! member (one per follower, which answers with a delta); the others rotate over the admitted
//! peers whose connections this node holds (its `target_peers`, committee
//! members and followers alike), so the committee is not the source of
//! every copy and no other connection is kept in use by the fetches. A peer that holds nothing newer answers with an
//! error and the next tick asks another; once the committee member has
//! answered, the follower is current and waits [`REFRESH_MS`] (or a
//! gossiped certificate) before it asks again.
//! Whose signatures count ([`Trust`]): the voters of the state already held;
//! for the first state, or after states newer than the held one failed that
//! check for [`REANCHOR_MS`] (the committee moved on beyond what the held
//! voters vouch for), peers the network layer admitted with the committee
//! role (their certificates chain to the mesh CA), for a voter set of at
//! least three once three committee members are known.

use std::collections::BTreeSet;
use std::str::FromStr;

use mesh_consensus::command::NodeId;
use mesh_consensus::follow::{
    CertifiedState, FollowError, FollowedState, StateDelta, StateFollower, Trust,
    CERTIFIED_STATE_BYTES_MAX,
};
use mesh_consensus::MemberId;
use mesh_net::{NetError, NetHandle, PeerId};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// The request-response protocol name of state fetches.
pub const STATE_PROTOCOL: &str = "state/1";
/// Least time between two fetches, in ms.
pub const FETCH_GAP_MS: u64 = 200;
/// A follower fetches after this long without a newer state even when no
/// certificate was heard (gossip can be lost), in ms.
pub const REFRESH_MS: u64 = 5_000;
/// How long newer states must fail the held voters' check before the
/// follower anchors in the committee members it knows again, in ms.
pub const REANCHOR_MS: u64 = 30_000;
/// Fewest voters a state anchored in known committee members may have
/// (fewer when fewer committee members are known).
pub const ANCHOR_VOTERS_MIN: usize = 3;
/// Most commands a delta carries; a follower further behind gets the whole state.
pub const DELTA_COMMANDS_MAX: usize = 4_096;

/// One finished fetch.
#[derive(Debug)]
pub struct Fetched {
    /// Who answered.
    pub peer: PeerId,
    /// The answer's bytes, or why there was none.
    pub outcome: Result<Vec<u8>, String>,
    /// The peer could not be reached or did not answer in time (rather
    /// than answering with an error, such as "nothing newer").
    pub unreachable: bool,
}

/// A newer state, whole or as the commands since the asker's index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StateBody {
    /// The newest certified state the peer holds.
    Whole(CertifiedState),
    /// The commands from the asker's index to the newest certified one.
    Delta(StateDelta),
}

/// What a peer answers to a state request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateAnswer {
    /// The newer state.
    pub body: StateBody,
    /// The committee leader's peer id, as the peer knows it.
    pub leader: Option<String>,
}

impl StateAnswer {
    /// Encodes for the wire (postcard).
    pub fn encode(&self) -> Vec<u8> {
        // Plain data; postcard cannot fail on it.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes wire bytes, refusing oversized input.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > CERTIFIED_STATE_BYTES_MAX {
            return Err(format!(
                "state answer of {} bytes, at most {CERTIFIED_STATE_BYTES_MAX}",
                bytes.len()
            ));
        }
        postcard::from_bytes(bytes).map_err(|e| format!("malformed state answer: {e}"))
    }
}

/// The answer to a state request: the newest certified state `held`, if it
/// is newer than the index the asker holds (`payload`), with `leader`; as a
/// delta when the asker holds a state and `delta` can make one from its
/// index to the held one.
pub fn answer(
    payload: &[u8],
    held: Option<CertifiedState>,
    leader: Option<String>,
    delta: impl FnOnce(u64, &CertifiedState) -> Option<StateDelta>,
) -> Result<Vec<u8>, String> {
    let asked_index: u64 =
        postcard::from_bytes(payload).map_err(|e| format!("malformed state request: {e}"))?;
    match held {
        Some(certified) if certified.index() > asked_index => {
            let delta = (asked_index > 0)
                .then(|| delta(asked_index, &certified))
                .flatten();
            let body = match delta {
                Some(delta) => StateBody::Delta(delta),
                None => StateBody::Whole(certified),
            };
            Ok(StateAnswer { body, leader }.encode())
        }
        Some(certified) => Err(format!(
            "nothing newer than index {asked_index} here (holds {})",
            certified.index()
        )),
        None => Err("no certified state held here".into()),
    }
}

struct FollowMetrics {
    index: Gauge,
    accepted: Counter,
    deltas: Counter,
    refused: Counter,
    bytes: Counter,
}

/// A follower's fetching: when to ask, whom, and what came back.
pub struct StateFollowing {
    follower: StateFollower,
    /// The committee leader, as the peer that served the held state named it.
    leader: Option<NodeId>,
    /// The newest certified index heard of.
    heard: u64,
    in_flight: bool,
    last_fetch_ms: u64,
    /// When this node last knew it was current: a newer state accepted,
    /// or the committee member asked answered.
    last_current_ms: u64,
    /// Since when newer states have failed the held voters' check.
    untrusted_since_ms: Option<u64>,
    /// Which admitted peer the next fetch goes to (rotating).
    next_target: usize,
    /// Committee fetches that got no answer: the next goes to the next
    /// committee member in this node's order.
    committee_misses: usize,
    /// The committee member the fetch in flight went to, if it did.
    committee_asked: Option<PeerId>,
    results: mpsc::Sender<Fetched>,
    metrics: FollowMetrics,
}

impl StateFollowing {
    /// A follower of mesh `mesh_id` whose fetches come back on the returned
    /// receiver; `rotation` spreads first targets over nodes.
    pub fn new(
        mesh_id: &str,
        rotation: usize,
        registry: &mut Registry,
    ) -> (Self, mpsc::Receiver<Fetched>) {
        let (results, rx) = mpsc::channel(1);
        let metrics = FollowMetrics {
            index: Gauge::default(),
            accepted: Counter::default(),
            deltas: Counter::default(),
            refused: Counter::default(),
            bytes: Counter::default(),
        };
        registry.register(
            "mesh_state_followed_index",
            "Log index of the committed state this node follows without the Raft log",
            metrics.index.clone(),
        );
        registry.register(
            "mesh_state_follow_accepted",
            "Certified states fetched from peers and verified",
            metrics.accepted.clone(),
        );
        registry.register(
            "mesh_state_follow_deltas",
            "Certified states reached by applying the commands since the held index",
            metrics.deltas.clone(),
        );
        registry.register(
            "mesh_state_follow_answer_bytes",
            "Bytes of the state answers this node received from peers",
            metrics.bytes.clone(),
        );
        registry.register(
            "mesh_state_follow_refused",
            "Certified states fetched from peers and refused (stale, forged or malformed)",
            metrics.refused.clone(),
        );
        let following = Self {
            follower: StateFollower::new(mesh_id),
            leader: None,
            heard: 0,
            in_flight: false,
            last_fetch_ms: 0,
            last_current_ms: 0,
            untrusted_since_ms: None,
            next_target: rotation,
            committee_misses: 0,
            committee_asked: None,
            results,
            metrics,
        };
        (following, rx)
    }

    /// The state held, if any.
    pub fn held(&self) -> Option<&FollowedState> {
        self.follower.held()
    }

    /// The committee leader, as the peer that served the held state named it.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader.clone()
    }

    /// A certificate at `index` was gossiped.
    pub fn heard(&mut self, index: u64) {
        self.heard = self.heard.max(index);
    }

    /// Whether a fetch is due at `now_ms` (see [`Self::fetch_if_due`]).
    pub fn due(&self, now_ms: u64) -> bool {
        let behind = self.follower.wants(self.heard) && self.heard > 0;
        let quiet = now_ms.saturating_sub(self.last_current_ms) >= REFRESH_MS;
        let missing = self.follower.index().is_none();
        !self.in_flight
            && now_ms.saturating_sub(self.last_fetch_ms) >= FETCH_GAP_MS
            && (behind || quiet || missing)
    }

    /// The peer the next fetch goes to: once this node holds a state, every
    /// other fetch goes to a committee member, which can answer with a
    /// delta: the first of `committee` (in this node's order) until one
    /// fails to answer, then the next; the rest rotate over `peers`, so the
    /// committee is not the source of every copy.
    fn next_target(&mut self, peers: &[PeerId], committee: &[PeerId]) -> Option<PeerId> {
        let turn = self.next_target;
        self.next_target = self.next_target.wrapping_add(1);
        let from_committee = self.follower.held().is_some() && turn.is_multiple_of(2);
        self.committee_asked = None;
        if from_committee && !committee.is_empty() {
            let member = committee[self.committee_misses % committee.len()];
            self.committee_asked = Some(member);
            return Some(member);
        }
        (!peers.is_empty()).then(|| peers[(turn / 2) % peers.len()])
    }

    /// Asks a peer for a newer state, when one is due: `peers` are the
    /// admitted peers this node holds connections to, `committee` the
    /// admitted peers with the committee role (both sorted).
    pub fn fetch_if_due(
        &mut self,
        net: &NetHandle,
        peers: &[PeerId],
        committee: &[PeerId],
        now_ms: u64,
    ) {
        if !self.due(now_ms) {
            return;
        }
        let Some(peer) = self.next_target(peers, committee) else {
            return;
        };
        self.in_flight = true;
        self.last_fetch_ms = now_ms;
        let held = self.follower.index().unwrap_or(0);
        // A u64 always serializes.
        let payload = postcard::to_allocvec(&held).unwrap_or_default();
        let (net, results) = (net.clone(), self.results.clone());
        tokio::spawn(async move {
            let answer = net.request(peer, STATE_PROTOCOL, payload).await;
            let unreachable =
                matches!(answer, Err(NetError::NotAdmitted(_) | NetError::Timeout(_)));
            let outcome = answer.map_err(|e| e.to_string());
            let fetched = Fetched {
                peer,
                outcome,
                unreachable,
            };
            let _ = results.send(fetched).await;
        });
    }

    /// Whose signatures count now (see the module docs).
    fn trust<'a>(&self, committee_keys: &'a BTreeSet<[u8; 32]>, now_ms: u64) -> Trust<'a> {
        let lost = self
            .untrusted_since_ms
            .is_some_and(|since| now_ms.saturating_sub(since) >= REANCHOR_MS);
        if self.follower.held().is_some() && !lost {
            return Trust::HeldVoters;
        }
        Trust::Committee {
            keys: committee_keys,
            voters_min: committee_keys.len().clamp(1, ANCHOR_VOTERS_MIN),
        }
    }

    /// A fetch came back: verified and held when newer. `committee_keys` are
    /// the public keys of the admitted peers with the committee role.
    pub fn on_fetched(
        &mut self,
        fetched: Fetched,
        committee_keys: &BTreeSet<[u8; 32]>,
        now_ms: u64,
    ) -> Result<u64, String> {
        self.in_flight = false;
        if self.committee_asked == Some(fetched.peer) {
            if fetched.unreachable {
                self.committee_misses = self.committee_misses.wrapping_add(1);
            } else {
                // A committee member answered: this node is current (or
                // gets the newer state now), so the next refresh is due
                // REFRESH_MS from now. Counting only newer states made an
                // idle follower ask every FETCH_GAP_MS, forever.
                self.last_current_ms = now_ms;
            }
        }
        let bytes = fetched.outcome?;
        self.metrics.bytes.inc_by(bytes.len() as u64);
        let answer = match StateAnswer::decode(&bytes) {
            Ok(answer) => answer,
            Err(err) => {
                self.metrics.refused.inc();
                return Err(format!("from {}: {err}", fetched.peer));
            }
        };
        let trust = self.trust(committee_keys, now_ms);
        let accepted = match answer.body {
            StateBody::Whole(certified) => self.follower.accept(certified, trust),
            StateBody::Delta(delta) => {
                let accepted = self.follower.accept_delta(delta, trust);
                if accepted.is_ok() {
                    self.metrics.deltas.inc();
                }
                accepted
            }
        };
        match accepted {
            Ok(index) => {
                self.untrusted_since_ms = None;
                self.leader = answer.leader.filter(|l| self.is_voter(l)).map(NodeId);
                self.last_current_ms = now_ms;
                self.metrics.accepted.inc();
                self.metrics
                    .index
                    .set(i64::try_from(index).unwrap_or(i64::MAX));
                Ok(index)
            }
            Err(err) => {
                if !matches!(err, FollowError::Stale { .. }) {
                    self.metrics.refused.inc();
                }
                if matches!(
                    (&err, trust),
                    (FollowError::Untrusted { .. }, Trust::HeldVoters)
                ) {
                    self.untrusted_since_ms.get_or_insert(now_ms);
                }
                Err(format!("from {}: {err}", fetched.peer))
            }
        }
    }

    /// Whether the peer id `peer` is a voter of the held state.
    fn is_voter(&self, peer: &str) -> bool {
        let key = PeerId::from_str(peer)
            .ok()
            .and_then(|p| mesh_net::ids::node_id(&p))
            .map(|node| *node.as_bytes());
        let voters = self.follower.held().map(|h| &h.voters);
        match (key, voters) {
            (Some(key), Some(voters)) => voters.get(&MemberId::from_public_key(&key)) == Some(&key),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_request_is_answered_only_with_a_newer_state() {
        use mesh_consensus::certificate::{CommitCertificate, CommitStatement};
        let asked = |index: u64| postcard::to_allocvec(&index).unwrap();
        let held = CertifiedState {
            certificate: CommitCertificate {
                statement: CommitStatement {
                    mesh_id: "m".into(),
                    index: 9,
                    term: 2,
                    entry_hash: [1; 32],
                    state_hash: mesh_consensus::StateHash([2; 32]),
                    state_digest: [3; 32],
                },
                signatures: Vec::new(),
            },
            bundle: std::sync::Arc::new(vec![4; 10]),
        };
        let leader = Some("leader".to_string());
        let no_delta = |_: u64, _: &CertifiedState| None;
        let answered = answer(&asked(7), Some(held.clone()), leader.clone(), no_delta).unwrap();
        let expected = StateAnswer {
            body: StateBody::Whole(held.clone()),
            leader: leader.clone(),
        };
        assert_eq!(StateAnswer::decode(&answered).unwrap(), expected);
        // A member whose log holds the commands since index 7 sends those.
        let delta = StateDelta {
            certificate: held.certificate.clone(),
            voters: Default::default(),
            commands: Vec::new(),
        };
        let from_log = |after: u64, _: &CertifiedState| (after == 7).then(|| delta.clone());
        let answered = answer(&asked(7), Some(held.clone()), leader.clone(), from_log).unwrap();
        let got = StateAnswer::decode(&answered).unwrap();
        assert_eq!(got.body, StateBody::Delta(delta.clone()));
        // One that holds no state asks for the whole state.
        let answered = answer(&asked(0), Some(held.clone()), leader, from_log).unwrap();
        let got = StateAnswer::decode(&answered).unwrap();
        assert_eq!(got.body, StateBody::Whole(held.clone()));
        let err = answer(&asked(9), Some(held), None, no_delta).unwrap_err();
        assert!(err.contains("nothing newer than index 9"), "{err}");
        let err = answer(&asked(0), None, None, no_delta).unwrap_err();
        assert!(err.contains("no certified state"), "{err}");
        let err = answer(&[0xff; 11], None, None, no_delta).unwrap_err();
        assert!(err.contains("malformed"), "{err}");
    }
}
