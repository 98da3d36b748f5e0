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

/// A blob this node wants, and whom to ask.
#[derive(Clone, Debug)]
struct Fetch {
    holders: Vec<NodeId>,
    next: usize,
    last_ms: Option<u64>,
}

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

    /// Stores a blob; returns its hash.
    pub fn store(&mut self, bytes: Vec<u8>) -> Option<ModelHash> {
        match self.cache.insert(bytes) {
            Ok(id) => Some(id.0),
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
            last_ms: None,
        });
    }

    /// Sends due blob requests.
    pub fn poll_fetches(&mut self, now_ms: u64) {
        let retry = self.config.fetch_retry_ms;
        let mut due = Vec::new();
        for (hash, fetch) in &mut self.fetches {
            if fetch.last_ms.is_some_and(|t| now_ms < t + retry) {
                continue;
            }
            let holder = fetch.holders[fetch.next % fetch.holders.len()].clone();
            fetch.next += 1;
            fetch.last_ms = Some(now_ms);
            due.push((holder, *hash));
        }
        for (holder, hash) in due {
            self.send(&holder, RoundMessage::BlobRequest { hash });
        }
    }

    /// A blob arrived: kept when it is one we want and its hash matches.
    pub fn on_blob(&mut self, hash: ModelHash, bytes: Vec<u8>) {
        if bytes.is_empty() || !self.fetches.contains_key(&hash) {
            return;
        }
        match self.cache.insert_verified(BlobId(hash), bytes) {
            Ok(_) => {
                self.fetches.remove(&hash);
            }
            Err(err) => {
                self.stats.blobs_rejected += 1;
                tracing::debug!(%err, "blob refused");
            }
        }
    }

    /// Forgets fetches no role needs any more.
    pub fn drop_fetches_except(&mut self, keep: &BTreeSet<ModelHash>) {
        self.fetches.retain(|h, _| keep.contains(h));
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
