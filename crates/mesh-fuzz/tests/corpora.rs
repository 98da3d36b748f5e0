//! Replays every committed corpus file (`fuzz/corpus/<target>/`) through its
//! target: inputs the fuzzer kept, and any that once crashed a decoder, must
//! keep decoding (or failing) without a panic. Also checks that every target
//! has a corpus and a cargo-fuzz entry point.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};

use mesh_fuzz::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_file_goes_through_its_decoder_without_a_panic() {
    for (name, target) in TARGETS {
        let files = corpus_files(name);
        assert!(!files.is_empty(), "target {name} has no corpus");
        for file in files {
            target(&std::fs::read(&file).unwrap());
        }
    }
}

/// The seeds reach past decoding: a follower takes the whole state and the
/// delta (so mutations of them exercise every check a follower runs).
#[test]
fn the_state_answer_seeds_pass_every_check_a_follower_runs() {
    let dir = fuzz_dir().join("corpus").join("state_answer");
    for (seed, index) in [("whole", 1), ("delta", 3)] {
        let bytes = std::fs::read(dir.join(seed)).unwrap();
        assert_eq!(mesh_fuzz::follow_state_answer(&bytes), Ok(index), "{seed}");
    }
    // Any signed byte (the unsigned leader name comes last).
    let mut tampered = std::fs::read(dir.join("delta")).unwrap();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 1;
    assert!(mesh_fuzz::follow_state_answer(&tampered).is_err());
}

#[test]
fn every_target_has_a_cargo_fuzz_entry_point() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        let source = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&source)
            .unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        assert!(
            text.contains(&format!("mesh_fuzz::{}", function_of(name))),
            "{name}"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} in fuzz/Cargo.toml"
        );
    }
}

/// The harness function a target calls (the snapshot one has a longer name).
fn function_of(target: &str) -> &str {
    match target {
        "snapshot" => "snapshot_bytes",
        other => other,
    }
}

/// The blob-part seeds are the parts a holder sends: each is kept (after
/// the true part 0), and a flipped bit in one is refused.
#[test]
fn the_blob_part_seeds_are_kept_and_a_flipped_bit_is_refused() {
    use mesh_round::protocol::transfer::{Download, Outboard, PART_BYTES};
    let blob = mesh_fuzz::part_target_blob();
    let hash = Outboard::of(blob).hash();
    let size = blob.len() as u64;
    let dir = fuzz_dir().join("corpus").join("blob_part");
    let seed = |part: u32| std::fs::read(dir.join(format!("part_{part}"))).unwrap()[1..].to_vec();
    let mut download = Download::new(hash, 4 * PART_BYTES);
    for part in 0..3 {
        assert_eq!(download.accept(part, size, seed(part)), Ok(vec![part]));
    }
    assert_eq!(download.assemble().unwrap().unwrap(), blob);
    let mut forged = seed(1);
    forged[100] ^= 1;
    let mut download = Download::new(hash, 4 * PART_BYTES);
    assert_eq!(download.accept(0, size, seed(0)), Ok(vec![0]));
    assert!(download.accept(1, size, forged).is_err());
}
