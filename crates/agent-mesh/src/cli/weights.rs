//! Starting weights from a file: a safetensors file a job fine-tunes from
//! (`sim --init`, `job submit --init`), read with a size bound and checked
//! before anything is sent or run.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use mesh_federated::model::store::read_weights_file;

/// Reads and checks the file of `--init` (see [`read_weights_file`]).
pub fn read_init_file(path: &Path) -> anyhow::Result<Arc<[u8]>> {
    let bytes = read_weights_file(path).context("--init")?;
    Ok(bytes.into())
}
