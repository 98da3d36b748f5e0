//! One function per decoder that takes bytes from outside the process, each
//! of which must return (an error is fine) and never panic, whatever the
//! bytes. The cargo-fuzz targets in `fuzz/fuzz_targets/` call these, and
//! `tests/corpora.rs` replays every committed corpus file through them, so a
//! crash the fuzzer once found stays fixed.
//!
//! Decoders that take a path get the bytes through the parsing function
//! behind it (tables, configs, write-ahead files), in memory.

use mesh_consensus::command::Command;
use mesh_consensus::network::{RpcRequest, RpcResponse};
use mesh_consensus::snapshot;
use mesh_federated::data::idx::{parse_stored_idx, IMAGES_MAGIC};
use mesh_federated::data::table::{parse_csv, parse_parquet, TableOptions};
use mesh_federated::model::store::check_weights;
use mesh_round::protocol::blob::decode_model;
use mesh_round::protocol::RoundMessage;
use mesh_security::envelope::Envelope;

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
    ("learner_message", learner_message),
    ("cert_exchange", cert_exchange),
    ("config", config),
    ("wal", wal),
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
