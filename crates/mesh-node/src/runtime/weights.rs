//! Starting weights uploaded to this node (`POST /v1/models`): pinned in the
//! round engine, so peers can fetch them by hash when a job fine-tunes from
//! them, and kept on disk under `<data_dir>/models/`, so a restart loses none.
//!
//! The engine pins at most [`PINNED_MAX`] files; pinning one more unpins and
//! deletes the oldest. A job names the file by hash (`initial_model`), and
//! `POST /v1/jobs` is only accepted on a node that holds the file, after the
//! file was checked against the job's model tensor by tensor.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mesh_consensus::command::{JobSpec, ModelHash};
use mesh_federated::model::store::{check_weights, read_weights_file, weights_for_layout};
use mesh_round::protocol::{NodeEngine, PINNED_MAX};

/// The folder of `data_dir` that holds uploaded starting weights.
pub fn weights_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("models")
}

fn file_of(dir: &Path, hash: &ModelHash) -> PathBuf {
    dir.join(format!("{}.safetensors", hex::encode(hash)))
}

/// Pins every starting-weights file kept in `dir` (oldest first). A file that
/// is no longer valid is skipped with a warning and left for the operator.
pub fn load_pinned(engine: &mut NodeEngine, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    files.sort();
    for (_, path) in files.into_iter().rev().take(PINNED_MAX).rev() {
        match read_weights_file(&path) {
            Ok(bytes) => {
                engine.pin(bytes.into());
            }
            Err(err) => tracing::warn!(path = %path.display(), %err, "starting weights not loaded"),
        }
    }
}

/// Pins checked `bytes` and writes them to `dir` (atomically: a crash never
/// leaves half a file); deletes the file the pin pushed out. Returns the hash.
pub fn pin(engine: &mut NodeEngine, dir: &Path, bytes: Arc<[u8]>) -> Result<ModelHash, String> {
    check_weights(&bytes).map_err(|e| e.to_string())?;
    let hash = mesh_round::cache::BlobId::of(&bytes).0;
    let path = file_of(dir, &hash);
    if !path.exists() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let (_, dropped) = engine.pin(bytes);
    if let Some(old) = dropped {
        let _ = std::fs::remove_file(file_of(dir, &old));
        tracing::info!(hash = %hex::encode(old), "older starting weights unpinned");
    }
    Ok(hash)
}

/// Why `spec`'s starting weights cannot be submitted here, if they cannot:
/// this node must hold the file, and the file must fit the job's model
/// (checked when the model's shapes are known without local data).
pub fn check_job(engine: &mut NodeEngine, spec: &JobSpec) -> Result<(), String> {
    let Some(start) = &spec.initial_model else {
        return Ok(());
    };
    let bytes = engine.held(&start.hash).ok_or_else(|| {
        format!(
            "this node holds no starting weights {}; upload the file here first (POST /v1/models) and submit the job to the same node",
            start.hash_hex()
        )
    })?;
    match spec.model.layout(spec.training.schema.as_ref()) {
        Ok(layout) => weights_for_layout(&bytes, &layout)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        // Shapes from local data only: each node checks at round 0.
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mesh_federated::model::store::save_layout;
    use mesh_federated::model::ParameterInfo;
    use mesh_round::protocol::EngineConfig;
    use mesh_security::NodeIdentity;

    fn engine() -> NodeEngine {
        let identity = NodeIdentity::from_seed(&[3; 32]);
        let me = mesh_round::protocol::node_name(&identity.node_id());
        NodeEngine::new(me, identity, EngineConfig::new("m", 0))
    }

    fn weights(dir: &Path, value: f32) -> Arc<[u8]> {
        let path = dir.join("w.safetensors");
        let layout = [ParameterInfo {
            name: "w".into(),
            shape: vec![1],
        }];
        save_layout(&layout, &[value], &path, Default::default()).unwrap();
        std::fs::read(&path).unwrap().into()
    }

    #[test]
    fn pinned_weights_survive_a_restart_and_the_oldest_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = weights_dir(dir.path());
        let mut first = engine();
        let mut hashes = Vec::new();
        for i in 0..=PINNED_MAX {
            hashes.push(pin(&mut first, &store, weights(dir.path(), i as f32)).unwrap());
        }
        assert!(
            first.held(&hashes[0]).is_none(),
            "the oldest should have been unpinned"
        );
        assert!(!file_of(&store, &hashes[0]).exists());
        let mut restarted = engine();
        load_pinned(&mut restarted, &store);
        assert!(hashes[1..].iter().all(|h| restarted.held(h).is_some()));
        assert!(pin(&mut restarted, &store, b"junk".to_vec().into()).is_err());
    }
}
