//! Writes valid seed inputs into `fuzz/corpus/` (run by hand when a format
//! changes: `cargo test -p mesh-fuzz --test seeds -- --ignored`): libFuzzer
//! mutates from them, and the corpus replay test runs them on every build.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;

use mesh_consensus::command::{Command, NodeId};
use mesh_consensus::follow::StateDelta;
use mesh_federated::data::table::{read_csv, write_parquet, TableOptions};
use mesh_federated::model::store::save_layout;
use mesh_federated::model::ParameterInfo;
use mesh_node::runtime::forward::ForwardedWrite;
use mesh_node::runtime::state_follow::{StateAnswer, StateBody};
use mesh_round::protocol::blob::encode_params;
use mesh_round::protocol::RoundMessage;
use mesh_security::envelope::{Envelope, MessageKind};
use mesh_security::NodeIdentity;

fn put(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_seed_corpora() {
    for (target, _) in mesh_fuzz::TARGETS {
        put(target, "empty", b"");
    }
    let identity = NodeIdentity::from_seed(&[7; 32]);
    let mesh = mesh_net::config::envelope_mesh_id("dev");
    let sealed = Envelope::seal(&identity, mesh, MessageKind(1), 1, 1, b"hello".to_vec()).unwrap();
    put("envelope", "sealed", &sealed.encode().unwrap());
    let message = RoundMessage::BlobRequest { hash: [3; 32] };
    put("round_message", "blob_request", &message.encode());
    let command = Command::Put {
        key: "k".into(),
        value: "v".into(),
    };
    put("command", "put", &command.encode());
    put(
        "snapshot",
        "empty_state",
        &mesh_consensus::snapshot::encode(&mesh_consensus::MeshState::new()),
    );
    put("model_blob", "params", &encode_params(&[1.0, -2.0, 0.5]));
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.safetensors");
    let layout = [ParameterInfo {
        name: "output.weight".into(),
        shape: vec![2, 2],
    }];
    save_layout(&layout, &[1.0, 2.0, 3.0, 4.0], &weights, Default::default()).unwrap();
    put("weights", "two_by_two", &std::fs::read(&weights).unwrap());
    let csv = std::fs::read_to_string(repo("data/breast-cancer/train.csv")).unwrap();
    let head: Vec<&str> = csv.lines().take(6).collect();
    put(
        "csv",
        "breast_cancer_head",
        (head.join("\n") + "\n").as_bytes(),
    );
    std::fs::write(dir.path().join("t.csv"), head.join("\n") + "\n").unwrap();
    let table = read_csv(&dir.path().join("t.csv"), &TableOptions::default()).unwrap();
    write_parquet(&table, &dir.path().join("t.parquet")).unwrap();
    put(
        "parquet",
        "breast_cancer_head",
        &std::fs::read(dir.path().join("t.parquet")).unwrap(),
    );
    // IDX: magic 0x0803, 1 image of 2x2 pixels.
    let idx = [
        0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 0, 64, 128, 255,
    ];
    put("idx", "one_2x2_image", &idx);
    // The documented config file, every section of it.
    let docs = std::fs::read_to_string(repo("docs/operations.md")).unwrap();
    let config = docs
        .split("```")
        .find(|block| block.contains("[consensus]"))
        .unwrap()
        .trim_start_matches("toml")
        .as_bytes()
        .to_vec();
    put("config", "node", &config);
    put("token", "shape", b"v1.eyJhIjoxfQ.c2ln");
    put("wal", "one_voter", &committee_wal());
    put_state_answers();
    put_forwarded();
    put_blob_parts();
}

/// Every part of [`mesh_fuzz::part_target_blob`] as its holder sends it,
/// behind the byte that picks the part.
fn put_blob_parts() {
    use mesh_round::protocol::transfer::{encode_part, Outboard};
    let blob = mesh_fuzz::part_target_blob();
    let outboard = Outboard::of(blob);
    for part in 0..3u8 {
        let mut seed = vec![part];
        seed.extend(encode_part(blob, &outboard, u32::from(part)).unwrap());
        put("blob_part", &format!("part_{part}"), &seed);
    }
}

/// A whole state and a delta of two writes, each of which a follower of
/// `mesh_fuzz::followed_start` takes.
fn put_state_answers() {
    let leader = Some(mesh_fuzz::follow_voter().node_id().to_string());
    let whole = StateAnswer {
        body: StateBody::Whole(mesh_fuzz::followed_start()),
        leader: leader.clone(),
    };
    put("state_answer", "whole", &whole.encode());
    let mut state = mesh_consensus::MeshState::new();
    let commands: Vec<(u64, Command)> = (2..=3u8)
        .map(|index| {
            let put = Command::Put {
                key: vec![b'k', index],
                value: vec![index],
            };
            state.apply(u64::from(index), &put).unwrap();
            (u64::from(index), put)
        })
        .collect();
    let certified = mesh_fuzz::certify_by_follow_voter(&state, 3);
    let voters = mesh_consensus::follow::bundle_voters(&certified.bundle).unwrap();
    let delta = StateAnswer {
        body: StateBody::Delta(StateDelta {
            certificate: certified.certificate,
            voters,
            commands,
        }),
        leader,
    };
    put("state_answer", "delta", &delta.encode());
}

/// A forwarded write and a decline by the node the target names as sender.
fn put_forwarded() {
    let write = ForwardedWrite {
        token: "v1.eyJhIjoxfQ.c2ln".into(),
        command: Command::Put {
            key: "k".into(),
            value: "v".into(),
        },
    };
    put(
        "forwarded",
        "write",
        &postcard::to_allocvec(&write).unwrap(),
    );
    let decline = Command::DeclineJob {
        job: "job-1".into(),
        node: NodeId("fuzz-node".into()),
        reason: "no data of this kind".into(),
    };
    put(
        "forwarded",
        "decline",
        &postcard::to_allocvec(&decline).unwrap(),
    );
}

/// The write-ahead file of a one-voter committee that committed a few
/// writes, up to the end of its records (the rest of the sized file is zeros).
fn committee_wal() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let committee = mesh_consensus::bench::LocalCommittee::start(dir.path(), 1, 0, |_| {})
            .await
            .unwrap();
        let leader = committee
            .wait_leader(std::time::Duration::from_secs(30))
            .await
            .unwrap();
        for i in 0..3u8 {
            let put = Command::Put {
                key: vec![b'k', i],
                value: vec![i; 4],
            };
            committee.nodes[&leader].propose(put).await.unwrap();
        }
        committee.shutdown().await;
    });
    let wal = find_wal(dir.path()).expect("a write-ahead file under the committee's folder");
    let bytes = std::fs::read(wal).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes[..end].to_vec()
}

fn find_wal(dir: &Path) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        if path.is_dir() {
            if let Some(found) = find_wal(&path) {
                return Some(found);
            }
        } else if path.extension().is_some_and(|e| e == "wal") {
            return Some(path);
        }
    }
    None
}
