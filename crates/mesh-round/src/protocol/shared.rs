//! What every role of a node shares while it reacts: the outbox of actions,
//! the blob cache, the blob fetches under way and the protocol counters.
//!
//! Blobs travel in verified parts ([`super::transfer`]); each fetch
//! ([`super::fetch`]) asks one holder at a time. This node serves what it
//! holds: a cached or pinned blob part by part (its tree hashes computed
//! once and kept for the last [`OUTBOARDS_MAX`] blobs served), a blob it is
//! still fetching from the parts it has, owing the others until they come.
//! A peer speaking round messages before version 3 asks for and gets whole
//! blobs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use mesh_consensus::command::{Command, JobId, JobSpec, ModelHash, NodeId};
use mesh_consensus::MeshState;
use mesh_security::rbac::Role;
use mesh_security::NodeIdentity;

use super::fetch::{Ask, Fetch, PartArrival, Waiter};
use super::messages::{RoundKey, RoundMessage};
use super::stats::ProtocolStats;
use super::transfer::{encode_part, Outboard, TransferError};
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

/// Blobs whose tree hashes a node keeps to serve parts (each 0.4% of its blob).
pub const OUTBOARDS_MAX: usize = 16;

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
    /// Tree hashes of the blobs served last, newest last.
    outboards: VecDeque<Outboard>,
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
            outboards: VecDeque::new(),
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
        let limit_bytes = self.cache.capacity_bytes() as u64;
        self.fetches
            .entry(hash)
            .or_insert_with(|| Fetch::new(hash, holders, limit_bytes));
    }

    /// Sends due part requests.
    pub fn poll_fetches(&mut self, now_ms: u64) {
        let retry = self.config.fetch_retry_ms;
        let asks: Vec<_> = self
            .fetches
            .iter_mut()
            .filter_map(|(hash, fetch)| Some((*hash, fetch.poll(now_ms, retry)?)))
            .collect();
        for (hash, ask) in asks {
            self.send_ask(hash, ask);
        }
    }

    fn send_ask(&mut self, hash: ModelHash, ask: Ask) {
        for part in ask.parts {
            self.send(&ask.to, RoundMessage::BlobPartRequest { hash, part });
        }
    }

    /// A peer of round message version 3 or later asks for part `part`:
    /// sent when held (as a blob, or a part of one being fetched); owed when
    /// this node is fetching the blob; otherwise answered "not here" (no
    /// bytes, size 0). A part past the end gets no bytes and the size.
    pub fn on_part_request(&mut self, from: &NodeId, hash: ModelHash, part: u32) {
        if let Some(bytes) = self.blob(&hash) {
            self.send_part(from, hash, &bytes, part);
            return;
        }
        if let Some(fetch) = self.fetches.get_mut(&hash) {
            if let Some(message) = part_from(hash, fetch, part) {
                self.send(from, message);
                return;
            }
            if fetch.owe(Waiter::Part(from.clone(), part)) {
                return;
            }
        }
        self.send(from, part_message(hash, part, 0, Vec::new()));
    }

    /// A peer of an older round message version asks for a whole blob:
    /// sent when held, owed when this node is fetching it, otherwise
    /// answered "not here" (empty).
    pub fn on_blob_request(&mut self, from: &NodeId, hash: ModelHash) {
        if let Some(bytes) = self.blob(&hash) {
            let bytes = bytes.to_vec();
            self.send(from, RoundMessage::BlobReply { hash, bytes });
            return;
        }
        let owed = self
            .fetches
            .get_mut(&hash)
            .is_some_and(|f| f.owe(Waiter::Whole(from.clone())));
        if !owed {
            let bytes = Vec::new();
            self.send(from, RoundMessage::BlobReply { hash, bytes });
        }
    }

    /// A whole blob (or "not here") arrived from `from`, a peer of an
    /// older round message version: kept when it is one we want and its
    /// hash matches, then sent on to the peers waiting for it.
    pub fn on_blob(&mut self, from: &NodeId, hash: ModelHash, bytes: Vec<u8>, now_ms: u64) {
        let soon = self.config.fetch_retry_ms / EMPTY_ANSWER_RETRY_DIVISOR;
        let Some(fetch) = self.fetches.get_mut(&hash) else {
            return;
        };
        if bytes.is_empty() {
            fetch.on_empty(from, now_ms, soon);
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

    /// Part `part` of a blob (or "not here") arrived from `from`: kept when
    /// it verifies against the hash, sent on to the peers owed it, and the
    /// next parts asked for; the blob is cached once every part is here.
    pub fn on_part(
        &mut self,
        from: &NodeId,
        hash: ModelHash,
        part: u32,
        size_bytes: u64,
        encoded: Vec<u8>,
        now_ms: u64,
    ) {
        let retry = self.config.fetch_retry_ms;
        let soon = retry / EMPTY_ANSWER_RETRY_DIVISOR;
        let Some(fetch) = self.fetches.get_mut(&hash) else {
            return;
        };
        match (encoded.is_empty(), size_bytes) {
            (true, 0) => return fetch.on_empty(from, now_ms, soon),
            (true, _) => return fetch.on_past_end(from, part, now_ms, soon),
            _ => {}
        }
        match fetch.on_part(from, (part, size_bytes), encoded, (now_ms, retry)) {
            PartArrival::Kept { waiters, .. } => {
                let complete = fetch.download().is_complete();
                let answers: Vec<_> = waiters
                    .into_iter()
                    .filter_map(|(peer, p)| Some((peer, part_from(hash, fetch, p)?)))
                    .collect();
                let ask = if complete {
                    None
                } else {
                    fetch.ask(now_ms, retry)
                };
                for (peer, message) in answers {
                    self.send(&peer, message);
                }
                if complete {
                    self.finish(hash);
                }
                if let Some(ask) = ask {
                    self.send_ask(hash, ask);
                }
            }
            PartArrival::Ignored => {}
            PartArrival::Refused(err) => {
                self.stats.blobs_rejected += 1;
                tracing::debug!(%err, %from, "blob part refused");
            }
        }
    }

    /// Every part of `hash` is here: the blob is assembled and cached, and
    /// its fetch ends.
    fn finish(&mut self, hash: ModelHash) {
        let assembled = self
            .fetches
            .get(&hash)
            .and_then(|f| f.download().assemble());
        let cached = match assembled {
            Some(Ok(bytes)) => {
                let bytes: Arc<[u8]> = bytes.into();
                self.cache
                    .insert_verified(BlobId(hash), Arc::clone(&bytes))
                    .map(|_| bytes)
                    .map_err(|e| e.to_string())
            }
            Some(Err(err)) => Err(err.to_string()),
            None => return,
        };
        match cached {
            Ok(bytes) => self.arrived(hash, &bytes),
            Err(err) => {
                self.stats.blobs_rejected += 1;
                tracing::warn!(%err, "fetched blob not cached");
                self.end_fetch(hash);
            }
        }
    }

    /// A blob is here: its fetch, if any, ends and the waiters get it.
    fn arrived(&mut self, hash: ModelHash, bytes: &Arc<[u8]>) {
        self.end_fetch_with(hash, Some(bytes));
    }

    /// Ends the fetch of `hash`; its waiters are told "not here" so they
    /// ask someone else.
    fn end_fetch(&mut self, hash: ModelHash) {
        self.end_fetch_with(hash, None);
    }

    /// Ends the fetch of `hash` and answers its waiters: from `held` when
    /// the blob is here, "not here" otherwise.
    fn end_fetch_with(&mut self, hash: ModelHash, held: Option<&Arc<[u8]>>) {
        let waiters = self
            .fetches
            .remove(&hash)
            .map(Fetch::into_waiters)
            .unwrap_or_default();
        for waiter in waiters {
            match (waiter, held) {
                (Waiter::Whole(peer), _) => {
                    let bytes = held.map(|b| b.to_vec()).unwrap_or_default();
                    self.send(&peer, RoundMessage::BlobReply { hash, bytes });
                }
                (Waiter::Part(peer, part), Some(bytes)) => {
                    self.send_part(&peer, hash, bytes, part);
                }
                (Waiter::Part(peer, part), None) => {
                    self.send(&peer, part_message(hash, part, 0, Vec::new()));
                }
            }
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
            self.end_fetch(hash);
        }
    }

    /// Sends part `part` of the held blob `bytes` ("not here" when it has
    /// no such part or does not match its hash).
    fn send_part(&mut self, to: &NodeId, hash: ModelHash, bytes: &[u8], part: u32) {
        let (size_bytes, encoded) = match self.encode_held(hash, bytes, part) {
            Ok(encoded) => (bytes.len() as u64, encoded),
            Err(TransferError::NoSuchPart { size_bytes, .. }) => (size_bytes, Vec::new()),
            Err(err) => {
                tracing::warn!(%err, "blob part not served");
                (0, Vec::new())
            }
        };
        self.send(to, part_message(hash, part, size_bytes, encoded));
    }

    fn encode_held(
        &mut self,
        hash: ModelHash,
        bytes: &[u8],
        part: u32,
    ) -> Result<Vec<u8>, TransferError> {
        let outboard = self
            .outboards
            .iter()
            .position(|o| o.hash() == hash)
            .and_then(|i| self.outboards.remove(i))
            .unwrap_or_else(|| Outboard::of(bytes));
        let encoded = encode_part(bytes, &outboard, part);
        self.outboards.push_back(outboard);
        if self.outboards.len() > OUTBOARDS_MAX {
            self.outboards.pop_front();
        }
        encoded
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

/// Part `part` from a fetch under way: its bytes when held, "past the end"
/// when the proven size shows there is no such part, `None` otherwise.
fn part_from(hash: ModelHash, fetch: &Fetch, part: u32) -> Option<RoundMessage> {
    let download = fetch.download();
    let size_bytes = download.size_bytes()?;
    let encoded = match download.part(part) {
        Some(encoded) => encoded.to_vec(),
        None if download.is_past_end(part) => Vec::new(),
        None => return None,
    };
    Some(part_message(hash, part, size_bytes, encoded))
}

/// A part message (no bytes: "not here" with size 0, "past the end" with the blob's size).
fn part_message(hash: ModelHash, part: u32, size_bytes: u64, encoded: Vec<u8>) -> RoundMessage {
    RoundMessage::BlobPart {
        hash,
        part,
        size_bytes,
        encoded,
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
    use crate::protocol::fetch::{PARTS_IN_FLIGHT, WAITERS_MAX};
    use crate::protocol::transfer::PART_BYTES;

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

    /// The encoded bytes of a part message (`None` for other messages).
    fn part_len(message: &RoundMessage) -> Option<usize> {
        match message {
            RoundMessage::BlobPart { encoded, .. } => Some(encoded.len()),
            _ => None,
        }
    }

    /// A model of `parts` parts and its hash.
    fn model(parts: u64) -> (Vec<u8>, ModelHash) {
        let bytes: Vec<u8> = (0..parts * PART_BYTES - 3)
            .map(|i| (i % 251) as u8)
            .collect();
        let hash = BlobId::of(&bytes).0;
        (bytes, hash)
    }

    /// What a holder of `bytes` answers to the part requests in `asks`:
    /// (part, size, bytes), no bytes for a part past the end.
    fn answers(bytes: &[u8], asks: &[(NodeId, RoundMessage)]) -> Vec<(u32, u64, Vec<u8>)> {
        let outboard = Outboard::of(bytes);
        let size = bytes.len() as u64;
        asks.iter()
            .filter_map(|(_, m)| match m {
                RoundMessage::BlobPartRequest { part, .. } => Some(*part),
                _ => None,
            })
            .map(|p| {
                (
                    p,
                    size,
                    encode_part(bytes, &outboard, p).unwrap_or_default(),
                )
            })
            .collect()
    }

    fn requested_parts(messages: &[(NodeId, RoundMessage)]) -> Vec<(String, u32)> {
        messages
            .iter()
            .filter_map(|(to, m)| match m {
                RoundMessage::BlobPartRequest { part, .. } => Some((to.0.clone(), *part)),
                _ => None,
            })
            .collect()
    }

    fn asked_of(holder: &str, parts: &[u32]) -> Vec<(String, u32)> {
        parts.iter().map(|p| (holder.to_string(), *p)).collect()
    }

    /// Feeds `answers` from `holder` to `sh` at `now_ms`.
    fn deliver(
        sh: &mut Shared,
        holder: &NodeId,
        hash: ModelHash,
        answers: Vec<(u32, u64, Vec<u8>)>,
        now_ms: u64,
    ) {
        for (part, size, encoded) in answers {
            sh.on_part(holder, hash, part, size, encoded, now_ms);
        }
    }

    #[test]
    fn a_node_fetching_a_blob_serves_each_part_on_as_it_arrives() {
        let (bytes, hash) = model(2);
        let source = NodeId::from("source");
        let mut sh = shared("middle");
        sh.want(hash, vec![source.clone()]);
        sh.poll_fetches(0);
        let asks = sent(&mut sh);
        assert_eq!(requested_parts(&asks), asked_of("source", &[0, 1]));
        for child in ["a", "b", "c"] {
            sh.on_part_request(&NodeId::from(child), hash, 0);
        }
        sh.on_part_request(&NodeId::from("a"), hash, 1);
        assert!(sent(&mut sh).is_empty(), "owed, not answered empty");
        let mut answers = answers(&bytes, &asks);
        let rest = answers.split_off(1);
        deliver(&mut sh, &source, hash, answers, 10);
        let out = sent(&mut sh);
        let served = out
            .iter()
            .filter(|(_, m)| part_len(m).is_some_and(|n| n > 0));
        assert_eq!(served.count(), 3, "each child got part 0: {out:?}");
        assert!(requested_parts(&out).is_empty(), "part 1 is still asked");
        // Part 0 is held: a later request for it is answered at once.
        sh.on_part_request(&NodeId::from("d"), hash, 0);
        assert!(part_len(&sent(&mut sh)[0].1).is_some_and(|n| n > 0));
        deliver(&mut sh, &source, hash, rest, 20);
        let out = sent(&mut sh);
        assert_eq!(out.len(), 1, "part 1 to the child that asked: {out:?}");
        assert!(matches!(out[0].1, RoundMessage::BlobPart { part: 1, .. }));
        assert_eq!(sh.blob(&hash).as_deref(), Some(&bytes[..]), "cached whole");
    }

    #[test]
    fn a_download_that_loses_its_holder_resumes_from_the_next_with_the_parts_it_has() {
        let (bytes, hash) = model(3);
        let (first, second) = (NodeId::from("first"), NodeId::from("second"));
        let mut sh = shared("me");
        sh.want(hash, vec![first.clone(), second.clone()]);
        sh.poll_fetches(0);
        let asks = sent(&mut sh);
        assert_eq!(requested_parts(&asks), asked_of("first", &[0, 1]));
        // Parts 0 and 1 come, and part 2 is asked; then the first holder falls silent.
        deliver(&mut sh, &first, hash, answers(&bytes, &asks), 20);
        assert_eq!(requested_parts(&sent(&mut sh)), asked_of("first", &[2]));
        let retry = sh.config.fetch_retry_ms;
        sh.poll_fetches(20 + retry - 1);
        assert!(sent(&mut sh).is_empty());
        sh.poll_fetches(20 + retry);
        let resumed = sent(&mut sh);
        assert_eq!(requested_parts(&resumed), asked_of("second", &[2]));
        let answers = answers(&bytes, &resumed);
        deliver(&mut sh, &second, hash, answers, 30 + retry);
        assert_eq!(sh.blob(&hash).as_deref(), Some(&bytes[..]));
        assert_eq!(sh.stats.blobs_rejected, 0);
    }

    #[test]
    fn a_node_neither_holding_nor_fetching_answers_not_here_and_waiters_are_bounded() {
        let mut sh = shared("idle");
        sh.on_part_request(&NodeId::from("a"), [1; 32], 0);
        assert_eq!(part_len(&sent(&mut sh)[0].1), Some(0));
        sh.want([2; 32], vec![NodeId::from("source")]);
        let owed_max = WAITERS_MAX * PARTS_IN_FLIGHT;
        for i in 0..owed_max + 3 {
            sh.on_part_request(&NodeId::from(format!("peer-{i}").as_str()), [2; 32], 0);
        }
        let empty = sent(&mut sh)
            .iter()
            .filter(|(_, m)| part_len(m) == Some(0))
            .count();
        assert_eq!(empty, 3);
        // Dropping the fetch tells the waiters to look elsewhere.
        sh.drop_fetches_except(&BTreeSet::new());
        assert_eq!(sent(&mut sh).len(), owed_max);
    }

    #[test]
    fn not_here_asks_the_same_holder_once_more_soon_then_the_next() {
        let mut sh = shared("me");
        let (first, second) = (NodeId::from("first"), NodeId::from("second"));
        sh.want([3; 32], vec![first.clone(), second.clone()]);
        sh.poll_fetches(0);
        assert_eq!(sent(&mut sh)[0].0, first);
        let soon = sh.config.fetch_retry_ms / EMPTY_ANSWER_RETRY_DIVISOR;
        sh.on_part(&first, [3; 32], 0, 0, Vec::new(), 10);
        sh.poll_fetches(10 + soon - 1);
        assert!(sent(&mut sh).is_empty());
        sh.poll_fetches(10 + soon);
        assert_eq!(sent(&mut sh)[0].0, first);
        sh.on_part(&first, [3; 32], 0, 0, Vec::new(), 100);
        sh.poll_fetches(100 + soon);
        assert_eq!(sent(&mut sh)[0].0, second);
        // Silence waits the whole retry.
        sh.poll_fetches(100 + soon + 1);
        assert!(sent(&mut sh).is_empty());
        // A "not here" from someone not asked now changes nothing.
        sh.on_part(&first, [3; 32], 0, 0, Vec::new(), 200);
        sh.poll_fetches(200 + soon);
        assert!(sent(&mut sh).is_empty());
    }

    #[test]
    fn a_blob_made_here_ends_its_fetch_and_feeds_its_waiters() {
        let (bytes, hash) = model(1);
        let mut sh = shared("aggregator");
        sh.want(hash, vec![NodeId::from("other")]);
        sh.on_part_request(&NodeId::from("child"), hash, 0);
        sh.on_blob_request(&NodeId::from("older"), hash);
        assert_eq!(sh.store(bytes.clone()), Some(hash));
        let replies = sent(&mut sh);
        assert_eq!(replies.len(), 2);
        assert!(part_len(&replies[0].1).is_some_and(|n| n > bytes.len()));
        assert!(matches!(&replies[1].1, RoundMessage::BlobReply { bytes: b, .. } if *b == bytes));
        sh.poll_fetches(0);
        assert!(sent(&mut sh).is_empty(), "the fetch ended");
    }

    #[test]
    fn an_older_peer_gets_and_gives_whole_blobs() {
        let (bytes, hash) = model(2);
        let older = NodeId::from("older");
        let mut sh = shared("me");
        sh.want(hash, vec![older.clone()]);
        sh.poll_fetches(0);
        sent(&mut sh);
        sh.on_blob(&older, hash, bytes.clone(), 10);
        assert_eq!(sh.blob(&hash).as_deref(), Some(&bytes[..]));
        sh.on_blob_request(&older, hash);
        assert!(
            matches!(&sent(&mut sh)[0].1, RoundMessage::BlobReply { bytes: b, .. } if *b == bytes)
        );
    }
}
