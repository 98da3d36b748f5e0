//! Named arrays and the job's parameter layout: the flat `f32` vector the
//! mesh aggregates, split into the named tensors a learner works with, and
//! gathered back with every check a reply needs (each name present, the
//! right shape, every value finite, nothing extra).

use mesh_federated::model::ParameterInfo;

/// Most tensors a layout may have.
pub const LAYOUT_TENSORS_MAX: usize = 100_000;
/// Longest tensor name, in bytes.
pub const TENSOR_NAME_BYTES_MAX: usize = 1_024;

/// One named tensor of `f32` values in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedArray {
    /// Module path, e.g. `fc.weight`.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub values: Vec<f32>,
}

/// How named arrays disagree with a layout. Each names the tensor.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LayoutError {
    /// A tensor of the layout is not in the arrays.
    #[error("parameter {name} is missing")]
    Missing {
        /// The tensor.
        name: String,
    },
    /// A tensor has another shape than the layout's.
    #[error("parameter {name} has shape {found:?}, the job's layout wants {expected:?}")]
    Shape {
        /// The tensor.
        name: String,
        /// Shape of the layout.
        expected: Vec<usize>,
        /// Shape given.
        found: Vec<usize>,
    },
    /// A value is NaN or infinite.
    #[error("parameter {name} has a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        /// The tensor.
        name: String,
        /// Index of the first bad value within the tensor.
        index: usize,
        /// The value.
        value: f32,
    },
    /// The arrays hold a tensor the layout does not have.
    #[error("parameter {name} is not in the job's layout")]
    Unexpected {
        /// The tensor.
        name: String,
    },
    /// A flat vector of the wrong length for the layout.
    #[error("parameter vector has {found} values, the layout has {expected}")]
    Count {
        /// Values of the layout.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// The layout itself is unusable.
    #[error("invalid layout: {0}")]
    Invalid(String),
}

/// Values of one tensor of `shape`, if the product does not overflow.
fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, d| n.checked_mul(*d))
}

/// Checks a layout: at least one tensor, names unique, non-empty and short,
/// no tensor without values, and a total that fits in memory arithmetic.
pub fn validate(layout: &[ParameterInfo]) -> Result<usize, LayoutError> {
    let invalid = |m: String| Err(LayoutError::Invalid(m));
    if layout.is_empty() || layout.len() > LAYOUT_TENSORS_MAX {
        return invalid(format!(
            "{} tensors; a layout has 1 to {LAYOUT_TENSORS_MAX}",
            layout.len()
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    let mut total = 0usize;
    for info in layout {
        if info.name.is_empty() || info.name.len() > TENSOR_NAME_BYTES_MAX {
            return invalid(format!("tensor name {:?} is empty or too long", info.name));
        }
        if !names.insert(info.name.as_str()) {
            return invalid(format!("tensor {} appears twice", info.name));
        }
        match element_count(&info.shape) {
            Some(0) | None => {
                return invalid(format!("tensor {} has shape {:?}", info.name, info.shape))
            }
            Some(n) => {
                total = total
                    .checked_add(n)
                    .ok_or(LayoutError::Invalid("too large".into()))?
            }
        }
    }
    Ok(total)
}

/// Values of the whole layout (0 for an invalid one).
pub fn parameter_count(layout: &[ParameterInfo]) -> usize {
    layout
        .iter()
        .map(|p| element_count(&p.shape).unwrap_or(0))
        .sum()
}

/// Splits a flat vector into the layout's named arrays, in layout order.
pub fn split(layout: &[ParameterInfo], flat: &[f32]) -> Result<Vec<NamedArray>, LayoutError> {
    let expected = parameter_count(layout);
    if flat.len() != expected {
        return Err(LayoutError::Count {
            expected,
            found: flat.len(),
        });
    }
    let mut rest = flat;
    let mut out = Vec::with_capacity(layout.len());
    for info in layout {
        let n = element_count(&info.shape).unwrap_or(0);
        let (values, tail) = rest.split_at(n);
        rest = tail;
        out.push(NamedArray {
            name: info.name.clone(),
            shape: info.shape.clone(),
            values: values.to_vec(),
        });
    }
    Ok(out)
}

/// Gathers named arrays into the layout's flat vector, checking that every
/// tensor is present with its shape and finite values and that there is
/// nothing else.
pub fn gather(layout: &[ParameterInfo], arrays: &[NamedArray]) -> Result<Vec<f32>, LayoutError> {
    if let Some(extra) = arrays
        .iter()
        .find(|a| !layout.iter().any(|p| p.name == a.name))
    {
        return Err(LayoutError::Unexpected {
            name: extra.name.clone(),
        });
    }
    let mut flat = Vec::with_capacity(parameter_count(layout));
    for info in layout {
        let array =
            arrays
                .iter()
                .find(|a| a.name == info.name)
                .ok_or_else(|| LayoutError::Missing {
                    name: info.name.clone(),
                })?;
        if array.shape != info.shape || Some(array.values.len()) != element_count(&info.shape) {
            return Err(LayoutError::Shape {
                name: info.name.clone(),
                expected: info.shape.clone(),
                found: array.shape.clone(),
            });
        }
        if let Some((index, value)) = array
            .values
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite())
        {
            return Err(LayoutError::NonFinite {
                name: info.name.clone(),
                index,
                value: *value,
            });
        }
        flat.extend_from_slice(&array.values);
    }
    Ok(flat)
}

/// The layout (names and shapes, in order) of named arrays.
pub fn describe(arrays: &[NamedArray]) -> Vec<ParameterInfo> {
    arrays
        .iter()
        .map(|a| ParameterInfo {
            name: a.name.clone(),
            shape: a.shape.clone(),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn layout() -> Vec<ParameterInfo> {
        vec![
            ParameterInfo {
                name: "fc.weight".into(),
                shape: vec![2, 3],
            },
            ParameterInfo {
                name: "fc.bias".into(),
                shape: vec![2],
            },
        ]
    }

    fn flat() -> Vec<f32> {
        (0..8).map(|i| i as f32).collect()
    }

    #[test]
    fn split_then_gather_is_the_identity() {
        let arrays = split(&layout(), &flat()).unwrap();
        assert_eq!(arrays[1].values, vec![6.0, 7.0]);
        assert_eq!(gather(&layout(), &arrays).unwrap(), flat());
        assert_eq!(describe(&arrays), layout());
    }

    #[test]
    fn gather_takes_the_layout_order_whatever_the_reply_order() {
        let mut arrays = split(&layout(), &flat()).unwrap();
        arrays.reverse();
        assert_eq!(gather(&layout(), &arrays).unwrap(), flat());
    }

    #[test]
    fn a_wrong_shape_names_the_parameter_and_both_shapes() {
        let mut arrays = split(&layout(), &flat()).unwrap();
        arrays[0].shape = vec![3, 2];
        let err = gather(&layout(), &arrays).unwrap_err();
        assert_eq!(
            err.to_string(),
            "parameter fc.weight has shape [3, 2], the job's layout wants [2, 3]"
        );
    }

    #[test]
    fn nan_missing_and_extra_tensors_are_refused_by_name() {
        let mut arrays = split(&layout(), &flat()).unwrap();
        arrays[1].values[1] = f32::NAN;
        assert!(matches!(
            gather(&layout(), &arrays),
            Err(LayoutError::NonFinite { ref name, index: 1, .. }) if name == "fc.bias"
        ));
        let missing = split(&layout(), &flat()).unwrap()[..1].to_vec();
        assert_eq!(
            gather(&layout(), &missing).unwrap_err(),
            LayoutError::Missing {
                name: "fc.bias".into()
            }
        );
        let mut extra = split(&layout(), &flat()).unwrap();
        extra.push(NamedArray {
            name: "head.weight".into(),
            shape: vec![1],
            values: vec![0.0],
        });
        assert!(matches!(
            gather(&layout(), &extra),
            Err(LayoutError::Unexpected { .. })
        ));
    }

    #[test]
    fn bad_layouts_and_flat_lengths_are_refused() {
        assert!(validate(&[]).is_err());
        let mut twice = layout();
        twice[1].name = "fc.weight".into();
        assert!(validate(&twice).is_err());
        let mut empty = layout();
        empty[0].shape = vec![0, 3];
        assert!(validate(&empty).is_err());
        assert_eq!(validate(&layout()).unwrap(), 8);
        assert_eq!(
            split(&layout(), &[0.0; 3]).unwrap_err(),
            LayoutError::Count {
                expected: 8,
                found: 3
            }
        );
    }
}
