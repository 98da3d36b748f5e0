//! What every role of a node shares while it reacts: the outbox of actions,
//! the blob cache, the blob fetches under way and the protocol counters.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use mesh_consensus::command::{Command, JobId, JobSpec, ModelHash, NodeId};
use mesh_consensus::MeshState;
use mesh_security::rbac::Role;
use mesh_security::NodeIdentity;

use super::messages::{RoundKey, RoundMessage};
use super::stats::ProtocolStats;
use super::worker::{CombineTask, TrainTask};
use crate::cache::{BlobCache, BlobId, CachePolicy};

/// Most blob fetches under way at once.
pub const FETCHES_MAX: usize = 256;

/// Bytes the blob cache holds unless configured otherwise (512 MiB).
pub const CACHE_CAPACITY_BYTES_DEFAULT: usize = 512 * 1024 * 1024;

/// What the driver shows the engine at each step.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    /// This node's copy of the committed state.
    pub state: &'a MeshState,
    /// The committee leader, if known.
    pub leader: Option<&'a NodeId>,
    /// Nodes reachable now (this one included), with their certificate roles.
    pub alive: &'a BTreeMap<NodeId, BTreeSet<Role>>,
    /// What reachable nodes declared as their zone (a `None` value: declared
    /// none, or the driver gave up waiting); a node missing from the map is
    /// not admitted yet. `None` when the driver does not gather zones, and
    /// nodes are then admitted without one at once.
    pub zones: Option<&'a BTreeMap<NodeId, Option<String>>>,
    /// Milliseconds since the Unix epoch (simulated time in the simulator).
    pub now_ms: u64,
}

/// Something the engine asks its driver to do.
#[derive(Clone, Debug)]
pub enum Action {
    /// Deliver a message to a node (best effort).
    Send {
        /// Recipient.
        to: NodeId,
        /// The message.
        message: RoundMessage,
    },
    /// Propose a command to the committee.
    Propose(Box<Command>),
    /// Build the job's initial model; answer with `on_initial`.
    BuildInitial {
        /// The job.
        job: JobId,
        /// Its spec.
        spec: Arc<JobSpec>,
        /// The job's starting weights (a safetensors file), when it
        /// fine-tunes from some.
        weights: Option<Arc<[u8]>>,
    },
    /// Train locally; answer with `on_trained`.
    Train(TrainTask),
    /// Combine group results; answer with `on_combined`.
    Combine(CombineTask),
}

/// Settings of the engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The mesh id (bound into every secure-aggregation session).
    pub mesh_id: String,
    /// Bytes the blob cache may hold.
    pub cache_capacity_bytes: usize,
    /// How the blob cache chooses what to evict.
    pub cache_policy: CachePolicy,
    /// How long a secure-aggregation key phase waits for stragglers, in ms.
    pub phase_timeout_ms: u64,
    /// How long before asking another holder for a blob, in ms.
    pub fetch_retry_ms: u64,
    /// How often unanswered reports and requests are sent again, in ms.
    pub retry_ms: u64,
    /// How long after a round's deadline the coordinator gives it up, in ms.
    pub abort_grace_ms: u64,
    /// Seed of this node's private randomness (DP noise, SecAgg keys). Take it
    /// from the OS outside simulations.
    pub seed: u64,
}

impl EngineConfig {
    /// Defaults for a mesh named `mesh_id` with private randomness `seed`.
    pub fn new(mesh_id: impl Into<String>, seed: u64) -> Self {
        Self {
            mesh_id: mesh_id.into(),
            cache_capacity_bytes: CACHE_CAPACITY_BYTES_DEFAULT,
            cache_policy: CachePolicy::Lru,
            phase_timeout_ms: 20_000,
            fetch_retry_ms: 2_000,
            retry_ms: 1_000,
            abort_grace_ms: 15_000,
            seed,
        }
    }
}

/// A blob this node wants, whom to ask, and who waits for it here.
#[derive(Clone, Debug)]
struct Fetch {
    /// Whom to ask, in order (cycled).
    holders: Vec<NodeId>,
    /// How many requests were sent (the next goes to `holders[next % len]`).
    next: usize,
    /// When the next request is due (`None`: at once).
    due_ms: Option<u64>,
    /// Whether the holder asked last already answered "not here" once.
    answered_empty: bool,
    /// Peers that asked this node for the blob meanwhile: they get it as
    /// soon as it arrives (at most [`WAITERS_MAX`]).
    waiters: Vec<NodeId>,
}

/// Most peers one wanted blob is owed to; more are told "not here" at once.
pub const WAITERS_MAX: usize = 16;

/// After a "not here" answer, the next request waits this fraction of the
/// fetch retry: the holder is alive and will likely start its own fetch as
/// soon as it sees the round.
const EMPTY_ANSWER_RETRY_DIVISOR: u64 = 8;

/// The shared parts of a node's engine.
#[derive(Debug)]
pub struct Shared {
    /// This node.
    pub me: NodeId,
    /// Its signing identity.
    pub identity: NodeIdentity,
    /// Settings.
    pub config: EngineConfig,
    /// Content-addressed blobs (models, group results).
    pub cache: BlobCache,
    /// Counters.
    pub stats: ProtocolStats,
    out: Vec<Action>,
    fetches: BTreeMap<ModelHash, Fetch>,
    /// Starting-weight files uploaded to this node, oldest first: served to
    /// peers like cached blobs, but never evicted by the cache.
    pinned: VecDeque<(ModelHash, Arc<[u8]>)>,
}

/// Most starting-weight files a node pins; pinning one more unpins the oldest.
pub const PINNED_MAX: usize = 8;

impl Shared {
    /// Shared state of node `me`.
    pub fn new(me: NodeId, identity: NodeIdentity, config: EngineConfig) -> Self {
        Self {
            cache: BlobCache::with_policy(config.cache_capacity_bytes, config.cache_policy),
            me,
            identity,
            config,
            stats: ProtocolStats::default(),
            out: Vec::new(),
            fetches: BTreeMap::new(),
            pinned: VecDeque::new(),
        }
    }

    /// Queues a message (never to this node itself: it is handled by the caller).
    pub fn send(&mut self, to: &NodeId, message: RoundMessage) {
        self.stats.count_sent(&message);
        self.out.push(Action::Send {
            to: to.clone(),
            message,
        });
    }

    /// Queues an action.
    pub fn push(&mut self, action: Action) {
        self.out.push(action);
    }

    /// Takes the queued actions.
    pub fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    /// A blob, if held (pinned or cached).
    pub fn blob(&mut self, hash: &ModelHash) -> Option<Arc<[u8]>> {
        match self.pinned.iter().find(|(h, _)| h == hash) {
            Some((_, bytes)) => Some(bytes.clone()),
            None => self.cache.get(&BlobId(*hash)),
        }
    }

    /// Holds `bytes` until unpinned or [`PINNED_MAX`] newer pins push it
    /// out; returns its hash and the hash it pushed out, if any.
    pub fn pin(&mut self, bytes: Arc<[u8]>) -> (ModelHash, Option<ModelHash>) {
        let hash = BlobId::of(&bytes).0;
        if self.pinned.iter().any(|(h, _)| *h == hash) {
            return (hash, None);
        }
        let dropped = if self.pinned.len() >= PINNED_MAX {
            self.pinned.pop_front().map(|(h, _)| h)
        } else {
            None
        };
        self.pinned.push_back((hash, bytes));
        (hash, dropped)
    }

    /// Stores a blob; returns its hash. Peers waiting for it get it.
    pub fn store(&mut self, bytes: Vec<u8>) -> Option<ModelHash> {
        let bytes: Arc<[u8]> = bytes.into();
        match self.cache.insert(Arc::clone(&bytes)) {
            Ok(id) => {
                self.arrived(id.0, &bytes);
                Some(id.0)
            }
            Err(err) => {
                tracing::warn!(%err, "blob not cached");
                None
            }
        }
    }

    /// Asks for `hash` from `holders` (in order) until it arrives.
    pub fn want(&mut self, hash: ModelHash, holders: Vec<NodeId>) {
        if self.cache.contains(&BlobId(hash)) || self.fetches.len() >= FETCHES_MAX {
            return;
        }
        let holders: Vec<NodeId> = holders.into_iter().filter(|h| *h != self.me).collect();
        if holders.is_empty() {
            return;
        }
        self.fetches.entry(hash).or_insert(Fetch {
            holders,
            next: 0,
            due_ms: None,
            answered_empty: false,
            waiters: Vec::new(),
        });
    }

    /// Sends due blob requests.
    pub fn poll_fetches(&mut self, now_ms: u64) {
        let retry = self.config.fetch_retry_ms;
        let mut due = Vec::new();
        for (hash, fetch) in &mut self.fetches {
            if fetch.due_ms.is_some_and(|t| now_ms < t) {
                continue;
            }
            let holder = fetch.holders[fetch.next % fetch.holders.len()].clone();
            fetch.next += 1;
            fetch.due_ms = Some(now_ms.saturating_add(retry));
            due.push((holder, *hash));
        }
        for (holder, hash) in due {
            self.send(&holder, RoundMessage::BlobRequest { hash });
        }
    }

    /// A peer asks for a blob: sent when held; owed when this node is
    /// fetching it too (sent on arrival, so fetchers serve on); otherwise
    /// answered "not here" (empty).
    pub fn on_blob_request(&mut self, from: &NodeId, hash: ModelHash) {
        if let Some(bytes) = self.blob(&hash) {
            let bytes = bytes.to_vec();
            self.send(from, RoundMessage::BlobReply { hash, bytes });
            return;
        }
        if let Some(fetch) = self.fetches.get_mut(&hash) {
            if fetch.waiters.contains(from) {
                return;
            }
            if fetch.waiters.len() < WAITERS_MAX {
                fetch.waiters.push(from.clone());
                return;
            }
        }
        let bytes = Vec::new();
        self.send(from, RoundMessage::BlobReply { hash, bytes });
    }

    /// A blob (or "not here") arrived from `from`: kept when it is one we
    /// want and its hash matches, then sent on to the peers waiting for it.
    pub fn on_blob(&mut self, from: &NodeId, hash: ModelHash, bytes: Vec<u8>, now_ms: u64) {
        if bytes.is_empty() {
            self.on_empty_answer(from, hash, now_ms);
            return;
        }
        if !self.fetches.contains_key(&hash) {
            return;
        }
        let bytes: Arc<[u8]> = bytes.into();
        match self.cache.insert_verified(BlobId(hash), Arc::clone(&bytes)) {
            Ok(_) => self.arrived(hash, &bytes),
            Err(err) => {
                self.stats.blobs_rejected += 1;
                tracing::debug!(%err, "blob refused");
            }
        }
    }

    /// "Not here" from the holder asked last: ask it once more soon (it is
    /// alive and likely about to fetch the blob itself), then move on to
    /// the next holder, again soon.
    fn on_empty_answer(&mut self, from: &NodeId, hash: ModelHash, now_ms: u64) {
        let Some(fetch) = self.fetches.get_mut(&hash) else {
            return;
        };
        let asked = fetch
            .next
            .checked_sub(1)
            .map(|i| &fetch.holders[i % fetch.holders.len()]);
        if asked != Some(from) {
            return;
        }
        if !fetch.answered_empty {
            fetch.next -= 1;
        }
        fetch.answered_empty = !fetch.answered_empty;
        let soon = self.config.fetch_retry_ms / EMPTY_ANSWER_RETRY_DIVISOR;
        fetch.due_ms = Some(now_ms.saturating_add(soon));
    }

    /// A blob is here: its fetch, if any, ends and the waiters get it.
    fn arrived(&mut self, hash: ModelHash, bytes: &[u8]) {
        let Some(fetch) = self.fetches.remove(&hash) else {
            return;
        };
        for waiter in fetch.waiters {
            let bytes = bytes.to_vec();
            self.send(&waiter, RoundMessage::BlobReply { hash, bytes });
        }
    }

    /// Forgets fetches no role needs any more; their waiters are told
    /// "not here" so they ask someone else.
    pub fn drop_fetches_except(&mut self, keep: &BTreeSet<ModelHash>) {
        let dropped: Vec<ModelHash> = self
            .fetches
            .keys()
            .filter(|h| !keep.contains(*h))
            .copied()
            .collect();
        for hash in dropped {
            let waiters = self
                .fetches
                .remove(&hash)
                .map(|f| f.waiters)
                .unwrap_or_default();
            for waiter in waiters {
                let bytes = Vec::new();
                self.send(&waiter, RoundMessage::BlobReply { hash, bytes });
            }
        }
    }

    /// This node's private seed for a purpose within a round.
    pub fn round_seed(&self, key: &RoundKey, purpose: &str) -> u64 {
        let mut h = blake3::Hasher::new();
        h.update(&self.config.seed.to_le_bytes());
        h.update(purpose.as_bytes());
        h.update(key.job.0.as_bytes());
        h.update(&key.round.to_le_bytes());
        h.update(&key.attempt.to_le_bytes());
        let mut out = [0u8; 8];
        out.copy_from_slice(&h.finalize().as_bytes()[..8]);
        u64::from_le_bytes(out)
    }

    /// The secure-aggregation session of a group: binds mesh, round, group and aggregator.
    pub fn session(&self, key: &RoundKey, group: u32, aggregator: &NodeId) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"agent-mesh/round/session/1\0");
        h.update(self.config.mesh_id.as_bytes());
        h.update(&[0]);
        h.update(key.job.0.as_bytes());
        h.update(&[0]);
        h.update(&key.round.to_le_bytes());
        h.update(&key.attempt.to_le_bytes());
        h.update(&group.to_le_bytes());
        h.update(aggregator.0.as_bytes());
        *h.finalize().as_bytes()
    }
}

/// The Ed25519 key a node id (a peer id inlining the key) names.
pub fn node_key(node: &NodeId) -> Option<ed25519_dalek::VerifyingKey> {
    let id: mesh_security::NodeId = node.0.parse().ok()?;
    id.verifying_key().ok()
}

/// The mesh's name for a node identity.
pub fn node_name(id: &mesh_security::NodeId) -> NodeId {
    NodeId(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(me: &str) -> Shared {
        let identity = NodeIdentity::from_seed(&[7; 32]);
        Shared::new(NodeId::from(me), identity, EngineConfig::new("m", 0))
    }

    /// The messages queued so far, as (recipient, request hash or reply bytes).
    fn sent(sh: &mut Shared) -> Vec<(NodeId, RoundMessage)> {
        sh.take()
            .into_iter()
            .filter_map(|a| match a {
                Action::Send { to, message } => Some((to, message)),
                _ => None,
            })
            .collect()
    }

    fn reply_len(message: &RoundMessage) -> Option<usize> {
        match message {
            RoundMessage::BlobReply { bytes, .. } => Some(bytes.len()),
            _ => None,
        }
    }

    #[test]
    fn a_node_fetching_a_blob_serves_it_on_to_those_who_asked_meanwhile() {
        let model = vec![5u8; 1000];
        let hash = BlobId::of(&model).0;
        let mut sh = shared("middle");
        sh.want(hash, vec![NodeId::from("source")]);
        sh.poll_fetches(0);
        assert_eq!(sent(&mut sh).len(), 1);
        for child in ["a", "b", "c"] {
            sh.on_blob_request(&NodeId::from(child), hash);
        }
        assert!(sent(&mut sh).is_empty(), "owed, not answered empty");
        sh.on_blob(&NodeId::from("source"), hash, model.clone(), 10);
        let replies = sent(&mut sh);
        assert_eq!(replies.len(), 3);
        assert!(replies.iter().all(|(_, m)| reply_len(m) == Some(1000)));
        // Held now: a later request is answered at once.
        sh.on_blob_request(&NodeId::from("d"), hash);
        assert_eq!(reply_len(&sent(&mut sh)[0].1), Some(1000));
    }

    #[test]
    fn a_node_neither_holding_nor_fetching_answers_not_here_and_waiters_are_bounded() {
        let mut sh = shared("idle");
        sh.on_blob_request(&NodeId::from("a"), [1; 32]);
        assert_eq!(reply_len(&sent(&mut sh)[0].1), Some(0));
        sh.want([2; 32], vec![NodeId::from("source")]);
        for i in 0..WAITERS_MAX + 3 {
            sh.on_blob_request(&NodeId::from(format!("peer-{i}").as_str()), [2; 32]);
        }
        let empty = sent(&mut sh)
            .iter()
            .filter(|(_, m)| reply_len(m) == Some(0))
            .count();
        assert_eq!(empty, 3);
        // Dropping the fetch tells the waiters to look elsewhere.
        sh.drop_fetches_except(&BTreeSet::new());
        assert_eq!(sent(&mut sh).len(), WAITERS_MAX);
    }

    #[test]
    fn not_here_asks_the_same_holder_once_more_soon_then_the_next() {
        let mut sh = shared("me");
        let (first, second) = (NodeId::from("first"), NodeId::from("second"));
        sh.want([3; 32], vec![first.clone(), second.clone()]);
        sh.poll_fetches(0);
        assert_eq!(sent(&mut sh)[0].0, first);
        let soon = sh.config.fetch_retry_ms / EMPTY_ANSWER_RETRY_DIVISOR;
        sh.on_blob(&first, [3; 32], Vec::new(), 10);
        sh.poll_fetches(10 + soon - 1);
        assert!(sent(&mut sh).is_empty());
        sh.poll_fetches(10 + soon);
        assert_eq!(sent(&mut sh)[0].0, first);
        sh.on_blob(&first, [3; 32], Vec::new(), 100);
        sh.poll_fetches(100 + soon);
        assert_eq!(sent(&mut sh)[0].0, second);
        // Silence waits the whole retry.
        sh.poll_fetches(100 + soon + 1);
        assert!(sent(&mut sh).is_empty());
        // A "not here" from someone not asked last changes nothing.
        sh.on_blob(&first, [3; 32], Vec::new(), 200);
        sh.poll_fetches(200 + soon);
        assert!(sent(&mut sh).is_empty());
    }

    #[test]
    fn a_blob_made_here_ends_its_fetch_and_feeds_its_waiters() {
        let model = vec![9u8; 64];
        let hash = BlobId::of(&model).0;
        let mut sh = shared("aggregator");
        sh.want(hash, vec![NodeId::from("other")]);
        sh.on_blob_request(&NodeId::from("child"), hash);
        assert_eq!(sh.store(model), Some(hash));
        let replies = sent(&mut sh);
        assert_eq!(replies.len(), 1);
        assert_eq!(reply_len(&replies[0].1), Some(64));
        sh.poll_fetches(0);
        assert!(sent(&mut sh).is_empty(), "the fetch ended");
    }
}
