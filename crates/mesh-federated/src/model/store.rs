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
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| file_error(path, e))?;
    let mut flat = Vec::with_capacity(model.parameter_count());
    for info in model.parameter_layout() {
        let view = tensors
            .tensor(&info.name)
            .map_err(|_| file_error(path, format!("missing tensor {}", info.name)))?;
        if view.dtype() != Dtype::F32 || view.shape() != info.shape.as_slice() {
            return Err(file_error(
                path,
                format!(
                    "tensor {} is {:?} {:?}, the model needs F32 {:?}",
                    info.name,
                    view.dtype(),
                    view.shape(),
                    info.shape
                ),
            ));
        }
        flat.extend(
            view.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
    }
    model.set_parameters(&flat)
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
}
