//! Saving and loading model parameters as safetensors files.
//!
//! Each parameter tensor is stored under its module path (`conv1.weight`, ...)
//! in little-endian `f32`, so PyTorch's `safetensors.torch.load_file` reads the
//! file directly. The model kind and free-form metadata go in the header.

use super::{Model, ModelError, ParameterInfo};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// Largest model file we read.
pub const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

fn file_error(path: &Path, reason: impl ToString) -> ModelError {
    ModelError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Writes the model's parameters (and `metadata`) to `path`, atomically: the file
/// is written beside the target and renamed, so a crash never leaves half a file.
pub fn save(
    model: &dyn Model,
    path: &Path,
    metadata: HashMap<String, String>,
) -> Result<(), ModelError> {
    save_layout(
        &model.parameter_layout(),
        &model.parameters(),
        path,
        metadata,
    )
}

/// Writes flat parameters under the names and shapes of `layout` (what
/// [`save`] does for a model; also for an external learner's parameters,
/// which have no model on this side).
pub fn save_layout(
    layout: &[ParameterInfo],
    flat: &[f32],
    path: &Path,
    metadata: HashMap<String, String>,
) -> Result<(), ModelError> {
    let expected: usize = layout
        .iter()
        .map(|p| p.shape.iter().product::<usize>())
        .sum();
    if expected != flat.len() {
        return Err(ModelError::ParameterCount {
            expected,
            found: flat.len(),
        });
    }
    let mut offset = 0;
    let mut buffers = Vec::with_capacity(layout.len());
    for info in layout {
        let n: usize = info.shape.iter().product();
        let bytes: Vec<u8> = flat[offset..offset + n]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        offset += n;
        buffers.push((info.name.clone(), info.shape.clone(), bytes));
    }
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| file_error(path, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let serialized =
        safetensors::serialize(views, Some(metadata)).map_err(|e| file_error(path, e))?;
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, serialized).map_err(|e| file_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_error(path, e))
}

/// Reads parameters from `path` into `model`; every tensor of the model must be
/// present with the same shape and dtype `F32`.
pub fn load_into(model: &mut dyn Model, path: &Path) -> Result<(), ModelError> {
    let size = std::fs::metadata(path)
        .map_err(|e| file_error(path, e))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(file_error(
            path,
            format!("{size} bytes is over the {MAX_FILE_BYTES}-byte limit"),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
    let flat =
        flat_for_layout(&bytes, &model.parameter_layout()).map_err(|e| file_error(path, e))?;
    model.set_parameters(&flat)
}

/// Largest starting-weights file a job may fine-tune from: it travels whole
/// in one round message between nodes.
pub const WEIGHTS_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Reads a starting-weights file: refused unread when over
/// [`WEIGHTS_BYTES_MAX`], then checked as [`check_weights`] does.
pub fn read_weights_file(path: &Path) -> Result<Vec<u8>, ModelError> {
    let size = std::fs::metadata(path)
        .map_err(|e| file_error(path, e))?
        .len();
    if size > WEIGHTS_BYTES_MAX as u64 {
        return Err(file_error(
            path,
            format!("{size} bytes is over the {WEIGHTS_BYTES_MAX}-byte limit of starting weights"),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
    check_weights(&bytes).map_err(|e| file_error(path, e))?;
    Ok(bytes)
}

/// Checks that `bytes` are a safetensors file a job can start from (at most
/// [`WEIGHTS_BYTES_MAX`], every tensor `F32`); returns its parameter count.
pub fn check_weights(bytes: &[u8]) -> Result<usize, ModelError> {
    let weights = |m: String| ModelError::Weights(m);
    if bytes.len() > WEIGHTS_BYTES_MAX {
        return Err(weights(format!(
            "{} bytes is over the {WEIGHTS_BYTES_MAX}-byte limit",
            bytes.len()
        )));
    }
    let tensors = SafeTensors::deserialize(bytes)
        .map_err(|e| weights(format!("not a safetensors file: {e}")))?;
    let mut count = 0usize;
    for (name, view) in tensors.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(weights(format!(
                "tensor {name} is {:?}; the mesh trains F32 (convert it, e.g. tensor.float())",
                view.dtype()
            )));
        }
        count = count.saturating_add(view.shape().iter().product::<usize>());
    }
    Ok(count)
}

/// The flat parameters of `layout` read from the safetensors file `bytes`:
/// the file must hold exactly the layout's tensors, each `F32`, of its shape,
/// with finite values (the error names the first tensor that does not fit).
pub fn weights_for_layout(bytes: &[u8], layout: &[ParameterInfo]) -> Result<Vec<f32>, ModelError> {
    check_weights(bytes)?;
    flat_for_layout(bytes, layout).map_err(ModelError::Weights)
}

fn flat_for_layout(bytes: &[u8], layout: &[ParameterInfo]) -> Result<Vec<f32>, String> {
    let tensors =
        SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let wanted: std::collections::BTreeSet<&str> = layout.iter().map(|p| p.name.as_str()).collect();
    let mut names = tensors.names();
    names.sort_unstable();
    if let Some(extra) = names.into_iter().find(|n| !wanted.contains(n)) {
        return Err(format!(
            "tensor {extra} is not in the model, whose tensors are {}",
            names_of(layout)
        ));
    }
    let mut flat = Vec::new();
    for info in layout {
        let view = tensors.tensor(&info.name).map_err(|_| {
            format!(
                "missing tensor {} (the model's tensors are {})",
                info.name,
                names_of(layout)
            )
        })?;
        if view.dtype() != Dtype::F32 || view.shape() != info.shape.as_slice() {
            return Err(format!(
                "tensor {} is {:?} {:?}, the model needs F32 {:?}",
                info.name,
                view.dtype(),
                view.shape(),
                info.shape
            ));
        }
        let start = flat.len();
        flat.extend(
            view.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        if let Some(i) = flat[start..].iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "tensor {} holds a non-finite value at {i}",
                info.name
            ));
        }
    }
    Ok(flat)
}

/// The first few tensor names of `layout`, for an error message.
fn names_of(layout: &[ParameterInfo]) -> String {
    const SHOWN: usize = 8;
    let mut names: Vec<&str> = layout.iter().take(SHOWN).map(|p| p.name.as_str()).collect();
    if layout.len() > SHOWN {
        names.push("...");
    }
    names.join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::{build, ModelSpec, Preset};
    use mesh_spec::schema::{DataSchema, InputShape};

    fn shape() -> DataSchema {
        DataSchema {
            input: InputShape::Image {
                channels: 1,
                height: 28,
                width: 28,
            },
            task: crate::data::numbered_classes(10),
            normalization: None,
        }
    }

    fn preset(p: Preset, seed: u64) -> Box<dyn Model> {
        build(&ModelSpec::Preset(p), &shape(), seed).unwrap()
    }

    #[test]
    fn save_then_load_round_trips_every_model() {
        let dir = tempfile::tempdir().unwrap();
        for kind in [Preset::Logistic, Preset::Mlp, Preset::Cnn] {
            let path = dir.path().join(format!("{kind}.safetensors"));
            let a = preset(kind, 1);
            save(
                a.as_ref(),
                &path,
                HashMap::from([("model".into(), kind.to_string())]),
            )
            .unwrap();
            let mut b = preset(kind, 2);
            assert_ne!(a.parameters(), b.parameters());
            load_into(b.as_mut(), &path).unwrap();
            assert_eq!(a.parameters(), b.parameters());
        }
    }

    #[test]
    fn wrong_model_and_corrupt_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        save(preset(Preset::Logistic, 1).as_ref(), &path, HashMap::new()).unwrap();
        let mut cnn = preset(Preset::Cnn, 1);
        assert!(matches!(
            load_into(cnn.as_mut(), &path),
            Err(ModelError::File { .. })
        ));
        std::fs::write(&path, b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage").unwrap();
        let mut lr = preset(Preset::Logistic, 1);
        assert!(matches!(
            load_into(lr.as_mut(), &path),
            Err(ModelError::File { .. })
        ));
    }

    #[test]
    fn starting_weights_must_match_the_layout_tensor_by_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let model = preset(Preset::Logistic, 1);
        save(model.as_ref(), &path, HashMap::new()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let layout = model.parameter_layout();
        assert_eq!(check_weights(&bytes).unwrap(), model.parameter_count());
        assert_eq!(
            weights_for_layout(&bytes, &layout).unwrap(),
            model.parameters()
        );

        let mlp = preset(Preset::Mlp, 1);
        let err = weights_for_layout(&bytes, &mlp.parameter_layout()).unwrap_err();
        assert!(err.to_string().contains("starting weights:"), "{err}");
        let renamed: Vec<ParameterInfo> = layout
            .iter()
            .map(|p| ParameterInfo {
                name: format!("x.{}", p.name),
                shape: p.shape.clone(),
            })
            .collect();
        let err = weights_for_layout(&bytes, &renamed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not in the model"), "{err}");
        assert!(check_weights(b"junk")
            .unwrap_err()
            .to_string()
            .contains("not a safetensors"));
    }

    #[test]
    fn non_finite_or_non_f32_weights_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan.safetensors");
        let layout = vec![ParameterInfo {
            name: "w".into(),
            shape: vec![2],
        }];
        save_layout(&layout, &[1.0, f32::NAN], &path, HashMap::new()).unwrap();
        let err = weights_for_layout(&std::fs::read(&path).unwrap(), &layout).unwrap_err();
        assert!(err.to_string().contains("non-finite"), "{err}");
        let half = TensorView::new(Dtype::F16, vec![2], &[0u8; 4]).unwrap();
        let bytes = safetensors::serialize([("w".to_string(), half)], None).unwrap();
        let err = check_weights(&bytes).unwrap_err().to_string();
        assert!(err.contains("F16"), "{err}");
    }
}
