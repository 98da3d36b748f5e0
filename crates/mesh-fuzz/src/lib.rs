//! One function per decoder that takes bytes from outside the process, each
//! of which must return (an error is fine) and never panic, whatever the
//! bytes. The cargo-fuzz targets in `fuzz/fuzz_targets/` call these, and
//! `tests/corpora.rs` replays every committed corpus file through them, so a
//! crash the fuzzer once found stays fixed.
//!
//! Decoders that take a path get the bytes through the parsing function
//! behind it (tables, configs, write-ahead files), in memory.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use mesh_consensus::certificate::{CommitCertificate, CommitStatement, SignedStatement};
use mesh_consensus::command::{Command, NodeId};
use mesh_consensus::follow::{bundle_digest, CertifiedState, StateBundle, StateFollower, Trust};
use mesh_consensus::network::{RpcRequest, RpcResponse};
use mesh_consensus::snapshot;
use mesh_consensus::{MemberId, MeshState};
use mesh_federated::data::idx::{parse_stored_idx, IMAGES_MAGIC};
use mesh_federated::data::table::{parse_csv, parse_parquet, TableOptions};
use mesh_federated::model::store::check_weights;
use mesh_node::runtime::state_follow::{StateAnswer, StateBody};
use mesh_round::protocol::blob::decode_model;
use mesh_round::protocol::transfer::{encode_part, Download, Outboard, PART_BYTES};
use mesh_round::protocol::RoundMessage;
use mesh_security::envelope::Envelope;
use mesh_security::NodeIdentity;

/// Largest envelope a node accepts from a peer, as the round gate bounds it.
const ENVELOPE_BYTES_MAX: usize = 1 << 20;
/// Largest snapshot the fuzzer decodes (the bound stops huge allocations).
const SNAPSHOT_BYTES_MAX: usize = 1 << 20;

/// A fuzz target: a name (its corpus folder) and the function it runs.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    ("envelope", envelope),
    ("round_message", round_message),
    ("raft_rpc", raft_rpc),
    ("command", command),
    ("snapshot", snapshot_bytes),
    ("commit_certificate", commit_certificate),
    ("certificate", certificate),
    ("token", token),
    ("idx", idx),
    ("csv", csv),
    ("parquet", parquet),
    ("weights", weights),
    ("model_blob", model_blob),
    ("blob_part", blob_part),
    ("learner_message", learner_message),
    ("cert_exchange", cert_exchange),
    ("config", config),
    ("wal", wal),
    ("state_answer", state_answer),
    ("forwarded", forwarded),
];

/// A signed envelope (gossip, round messages).
pub fn envelope(data: &[u8]) {
    let _ = Envelope::decode(data, ENVELOPE_BYTES_MAX);
}

/// A round protocol message (inside an envelope).
pub fn round_message(data: &[u8]) {
    let _ = RoundMessage::decode(data);
}

/// A Raft RPC frame, as a request and as a response.
pub fn raft_rpc(data: &[u8]) {
    let _ = RpcRequest::decode(data);
    let _ = RpcResponse::decode(data);
}

/// A committed log entry's command.
pub fn command(data: &[u8]) {
    if let Ok(command) = Command::decode(data) {
        let _ = command.validate();
    }
}

/// A state-machine snapshot sent by a leader.
pub fn snapshot_bytes(data: &[u8]) {
    let _ = snapshot::decode_bounded(data, SNAPSHOT_BYTES_MAX);
}

/// A gossiped commit certificate.
pub fn commit_certificate(data: &[u8]) {
    let _ = mesh_consensus::certificate::CommitCertificate::decode(data);
}

/// An X.509 certificate (DER) a peer presents.
pub fn certificate(data: &[u8]) {
    let _ = mesh_security::ca::CertInfo::parse(data);
}

/// An admin token from an HTTP header.
pub fn token(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = mesh_security::token::AdminToken::decode(text);
    }
}

/// An IDX file, plain or gzipped.
pub fn idx(data: &[u8]) {
    let _ = parse_stored_idx(data, IMAGES_MAGIC, "fuzz.idx");
}

/// A CSV table.
pub fn csv(data: &[u8]) {
    let _ = parse_csv(data, "train.csv", &TableOptions::default());
}

/// A Raft store's write-ahead file, and the same bytes as one record body
/// (mutated records never pass their checksum, so bodies are fuzzed apart).
pub fn wal(data: &[u8]) {
    let _ = mesh_consensus::store::decode_wal_file(data);
    let _ = mesh_consensus::store::decode_wal_batch(data);
}

/// A Parquet table.
pub fn parquet(data: &[u8]) {
    let bytes = bytes::Bytes::copy_from_slice(data);
    let _ = parse_parquet(bytes, "train.parquet", &TableOptions::default());
}

/// Starting weights uploaded to `POST /v1/models`.
pub fn weights(data: &[u8]) {
    let _ = check_weights(data);
}

/// A model or group-result blob fetched from a peer.
pub fn model_blob(data: &[u8]) {
    let _ = decode_model(data);
}

/// The blob whose parts [`blob_part`] checks: two parts and a bit, so part
/// 0 carries the size proof, part 1 is whole and part 2 is short.
pub fn part_target_blob() -> &'static [u8] {
    static BLOB: OnceLock<Vec<u8>> = OnceLock::new();
    BLOB.get_or_init(|| {
        let size = 2 * PART_BYTES as usize + 1000;
        (0..size)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8)
            .collect()
    })
}

/// One part of a blob fetched from a peer, checked against the blob's hash
/// as a download does: the first byte picks the part (0 to 3, 3 being past
/// the end), the rest is what the holder sent. Part 0 must come first, so
/// parts 1 to 3 are tried after the true part 0.
pub fn blob_part(data: &[u8]) {
    static TRUTH: OnceLock<(Outboard, Vec<u8>)> = OnceLock::new();
    let Some((pick, encoded)) = data.split_first() else {
        return;
    };
    let blob = part_target_blob();
    let (outboard, part_zero) = TRUTH.get_or_init(|| {
        let outboard = Outboard::of(blob);
        let zero = encode_part(blob, &outboard, 0).unwrap_or_default();
        (outboard, zero)
    });
    let size = blob.len() as u64;
    let mut download = Download::new(outboard.hash(), 4 * PART_BYTES);
    let part = u32::from(*pick % 4);
    if part > 0 && download.accept(0, size, part_zero.clone()).is_err() {
        return;
    }
    let _ = download.accept(part, size, encoded.to_vec());
    if let Some(Ok(bytes)) = download.assemble() {
        assert_eq!(bytes, blob, "an assembled blob is the blob");
    }
}

/// A learner's reply, and a request (what the learner side decodes).
pub fn learner_message(data: &[u8]) {
    let _ = mesh_learner::message::decode_reply(data);
    let _ = mesh_learner::message::decode_request(data);
}

/// The certificate exchange message of admission.
pub fn cert_exchange(data: &[u8]) {
    let _ = mesh_net::cert_exchange::CertMessage::decode(data);
}

/// A node's TOML config file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("node.toml");
    if let Ok(config) = mesh_node::config::NodeConfig::from_toml(text, path) {
        let _ = config.validate();
    }
}

/// The mesh the followed state of [`state_answer`] belongs to.
pub const FOLLOW_MESH: &str = "fuzz";

/// The one voter that certifies [`followed_start`].
pub fn follow_voter() -> NodeIdentity {
    NodeIdentity::from_seed(&[9; 32])
}

/// `state` at `index` (term 1), certified by [`follow_voter`] alone.
pub fn certify_by_follow_voter(state: &MeshState, index: u64) -> CertifiedState {
    let voter = follow_voter();
    let public_key = voter.verifying_key().to_bytes();
    let bundle = StateBundle {
        index,
        term: 1,
        voters: [(MemberId::from_public_key(&public_key), public_key)].into(),
        snapshot: snapshot::encode(state),
    }
    .encode();
    let statement = CommitStatement {
        mesh_id: FOLLOW_MESH.into(),
        index,
        term: 1,
        entry_hash: [0; 32],
        state_hash: state.state_hash(),
        state_digest: bundle_digest(&bundle),
    };
    let signed = SignedStatement::sign(statement.clone(), &voter);
    CertifiedState {
        certificate: CommitCertificate {
            statement,
            signatures: vec![(signed.signer, signed.signature)],
        },
        bundle: Arc::new(bundle),
    }
}

/// An empty state at index 1, certified by [`follow_voter`]: what a
/// follower holds before a delta from a peer arrives.
pub fn followed_start() -> CertifiedState {
    static START: OnceLock<CertifiedState> = OnceLock::new();
    START
        .get_or_init(|| certify_by_follow_voter(&MeshState::new(), 1))
        .clone()
}

/// A peer's answer to a state request, verified as a follower holding
/// [`followed_start`] verifies it (whole or as a delta); and the same bytes
/// as a state request.
pub fn state_answer(data: &[u8]) {
    let _ = mesh_node::runtime::state_follow::answer(data, None, None, |_, _| None);
    let _ = follow_state_answer(data);
}

/// What a follower of [`followed_start`] makes of `data` as a peer's state
/// answer: the index it now holds, or why it refused the answer.
pub fn follow_state_answer(data: &[u8]) -> Result<u64, String> {
    let answer = StateAnswer::decode(data)?;
    let keys: BTreeSet<[u8; 32]> = [follow_voter().verifying_key().to_bytes()].into();
    let trust = Trust::Committee {
        keys: &keys,
        voters_min: 1,
    };
    let mut follower = StateFollower::new(FOLLOW_MESH);
    let followed = match answer.body {
        StateBody::Whole(certified) => follower.accept(certified, trust),
        StateBody::Delta(delta) => follower
            .accept(followed_start(), trust)
            .and_then(|_| follower.accept_delta(delta, Trust::HeldVoters)),
    };
    followed.map_err(|e| e.to_string())
}

/// A write forwarded to a committee member, and a follower's decline, as the
/// member decodes them from a trainer.
pub fn forwarded(data: &[u8]) {
    let _ = mesh_node::runtime::forward::decode_request(data);
    let sender = NodeId("fuzz-node".into());
    let _ = mesh_node::runtime::forward::decode_decline(data, &sender, true);
}
