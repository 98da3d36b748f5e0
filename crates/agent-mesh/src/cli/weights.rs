//! Starting weights from a file: a safetensors file a job fine-tunes from
//! (`sim --init`, `job submit --init`), read with a size bound and checked
//! before anything is sent or run.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use mesh_federated::model::store::{check_weights, WEIGHTS_BYTES_MAX};

/// Reads and checks a starting-weights file: at most
/// [`WEIGHTS_BYTES_MAX`] bytes, a safetensors file of `F32` tensors.
pub fn read_weights_file(path: &Path) -> anyhow::Result<Arc<[u8]>> {
    let size_bytes = std::fs::metadata(path)
        .with_context(|| format!("--init {}", path.display()))?
        .len();
    if size_bytes > WEIGHTS_BYTES_MAX as u64 {
        anyhow::bail!(
            "--init {}: {size_bytes} bytes is over the {WEIGHTS_BYTES_MAX}-byte limit of starting weights",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("--init {}", path.display()))?;
    check_weights(&bytes).with_context(|| format!("--init {}", path.display()))?;
    Ok(bytes.into())
}
