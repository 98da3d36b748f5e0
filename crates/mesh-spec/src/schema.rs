//! The data schema a job binds: what every participant's data must look like.
//!
//! A job names a schema, not a file: the input (a table of `features` numeric
//! columns, or images of `channels x height x width`) and the task
//! (classification into named classes, or regression of one target). Each node
//! loads its own private data, derives that data's schema, and takes part only
//! when the two [`DataSchema::check_matches`]; otherwise it refuses and says why
//! ("31 columns, job wants 30").
//!
//! In JSON:
//! ```json
//! {"input": {"table": {"features": 30}},
//!  "task": {"classification": {"classes": ["0", "1"]}}}
//! {"input": {"image": {"channels": 1, "height": 8, "width": 8}},
//!  "task": {"classification": {"classes": ["0", "1", "2"]}}}
//! {"input": {"table": {"features": 10}}, "task": {"regression": {"target": "target"}}}
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;

/// Most features of a table row (and pixels of an image) a schema may declare.
pub const MAX_FEATURES: u64 = 1 << 22;
/// Most classes of a classification task (labels are stored as one byte).
pub const MAX_CLASSES: usize = 256;
/// Largest image side a schema may declare, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 4096;

/// What a job's data looks like.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSchema {
    /// The shape of one input row.
    pub input: InputShape,
    /// What is predicted.
    pub task: Task,
    /// Standardization every node applies to table features (and a
    /// regression target). `None`: each node standardizes with statistics
    /// of its own training data, which never leave it.
    #[serde(default)]
    pub normalization: Option<Normalization>,
}

/// Feature (and target) standardization: `(x - mean) / std` per column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Mean of each feature column.
    pub feature_mean: Vec<f32>,
    /// Standard deviation of each feature column (a zero is taken as 1).
    pub feature_std: Vec<f32>,
    /// Mean of the regression target (0 for classification).
    #[serde(default)]
    pub target_mean: f32,
    /// Standard deviation of the regression target (1 for classification).
    #[serde(default = "unit")]
    pub target_std: f32,
}

fn unit() -> f32 {
    1.0
}

/// The shape of one input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputShape {
    /// A row of numeric feature columns.
    Table {
        /// Number of feature columns.
        features: u32,
    },
    /// An image, stored row-major as `channels x height x width` values.
    Image {
        /// 1 (grayscale) or 3 (RGB).
        channels: u32,
        /// Rows of pixels.
        height: u32,
        /// Columns of pixels.
        width: u32,
    },
}

/// What a model predicts from an input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// One of several classes; `classes[i]` is the name of class index `i`.
    Classification {
        /// Class names in index order (the order every node maps labels in).
        classes: Vec<String>,
    },
    /// One real-valued target.
    Regression {
        /// Name of the target column.
        target: String,
    },
}

/// How every [`SchemaError::Mismatch`] message starts, so a driver that only
/// sees the message (a round engine) can tell a mismatch from other failures.
pub const SCHEMA_MISMATCH_PREFIX: &str = "schema mismatch: ";

/// A schema that is out of range, or data that does not match a job's schema.
/// Not retryable: the job or the data must change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The schema itself is out of range.
    #[error("invalid schema: {0}")]
    Invalid(String),
    /// The node's data does not match the job's schema.
    #[error("schema mismatch: {0}")]
    Mismatch(String),
}

impl InputShape {
    /// Values per input row (`channels * height * width` for images).
    pub fn feature_count(&self) -> usize {
        match *self {
            InputShape::Table { features } => features as usize,
            InputShape::Image {
                channels,
                height,
                width,
            } => channels as usize * height as usize * width as usize,
        }
    }

    /// `[channels, height, width]` for images.
    pub fn image(&self) -> Option<[usize; 3]> {
        match *self {
            InputShape::Table { .. } => None,
            InputShape::Image {
                channels,
                height,
                width,
            } => Some([channels as usize, height as usize, width as usize]),
        }
    }
}

impl fmt::Display for InputShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputShape::Table { features } => write!(f, "{features} columns"),
            InputShape::Image {
                channels,
                height,
                width,
            } => write!(f, "{channels}x{height}x{width} images"),
        }
    }
}

impl Task {
    /// Output units of a model for this task: the classes, or 1.
    pub fn outputs(&self) -> usize {
        match self {
            Task::Classification { classes } => classes.len(),
            Task::Regression { .. } => 1,
        }
    }

    /// True for regression.
    pub fn is_regression(&self) -> bool {
        matches!(self, Task::Regression { .. })
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Task::Classification { classes } => {
                write!(f, "classification into {} classes", classes.len())
            }
            Task::Regression { target } => write!(f, "regression of {target:?}"),
        }
    }
}

impl fmt::Display for DataSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {}", self.input, self.task)
    }
}

impl DataSchema {
    /// Checks every field is in range.
    pub fn validate(&self) -> Result<(), SchemaError> {
        let invalid = |m: String| Err(SchemaError::Invalid(m));
        match self.input {
            InputShape::Table { features } => {
                if features == 0 || u64::from(features) > MAX_FEATURES {
                    return invalid(format!("features must be in 1..={MAX_FEATURES}"));
                }
            }
            InputShape::Image {
                channels,
                height,
                width,
            } => {
                if channels != 1 && channels != 3 {
                    return invalid(format!("channels must be 1 or 3, got {channels}"));
                }
                if !(1..=MAX_IMAGE_SIDE).contains(&height) || !(1..=MAX_IMAGE_SIDE).contains(&width)
                {
                    return invalid(format!("image sides must be in 1..={MAX_IMAGE_SIDE}"));
                }
                if self.input.feature_count() as u64 > MAX_FEATURES {
                    return invalid(format!("an image may hold at most {MAX_FEATURES} values"));
                }
            }
        }
        if let Task::Classification { classes } = &self.task {
            if !(2..=MAX_CLASSES).contains(&classes.len()) {
                return invalid(format!(
                    "a classification task needs 2..={MAX_CLASSES} classes, got {}",
                    classes.len()
                ));
            }
        }
        if let Some(n) = &self.normalization {
            let features = self.input.feature_count();
            if n.feature_mean.len() != features || n.feature_std.len() != features {
                return invalid(format!(
                    "normalization has {} means and {} deviations for {features} features",
                    n.feature_mean.len(),
                    n.feature_std.len()
                ));
            }
            let all = n.feature_mean.iter().chain(&n.feature_std);
            let finite = all
                .chain([&n.target_mean, &n.target_std])
                .all(|v| v.is_finite());
            if !finite || n.target_std <= 0.0 || n.feature_std.iter().any(|s| *s < 0.0) {
                return invalid("normalization values must be finite, deviations positive".into());
            }
        }
        Ok(())
    }

    /// Whether data of schema `local` (a node's own) can take part in a job of
    /// this schema. The message says what differs, in the data's words
    /// ("31 columns, job wants 30").
    pub fn check_matches(&self, local: &DataSchema) -> Result<(), SchemaError> {
        let mismatch = |m: String| Err(SchemaError::Mismatch(m));
        if self.input != local.input {
            return mismatch(format!("{}, job wants {}", local.input, self.input));
        }
        match (&self.task, &local.task) {
            (Task::Classification { classes: job }, Task::Classification { classes: own }) => {
                match own.iter().find(|c| !job.contains(c)) {
                    Some(extra) => mismatch(format!(
                        "label {extra:?} is not a class of the job ({})",
                        job.join(", ")
                    )),
                    None => Ok(()),
                }
            }
            (Task::Regression { .. }, Task::Regression { .. }) => Ok(()),
            (job, own) => mismatch(format!("data is for {own}, job wants {job}")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn table(features: u32, classes: &[&str]) -> DataSchema {
        DataSchema {
            input: InputShape::Table { features },
            task: Task::Classification {
                classes: classes.iter().map(|c| c.to_string()).collect(),
            },
            normalization: None,
        }
    }

    #[test]
    fn a_column_count_mismatch_names_both_counts() {
        let job = table(30, &["0", "1"]);
        let err = job.check_matches(&table(31, &["0", "1"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "schema mismatch: 31 columns, job wants 30 columns"
        );
    }

    #[test]
    fn a_node_may_hold_a_subset_of_the_classes_but_no_other() {
        let job = table(4, &["a", "b", "c"]);
        assert!(job.check_matches(&table(4, &["a", "c"])).is_ok());
        let err = job.check_matches(&table(4, &["a", "z"])).unwrap_err();
        assert!(err.to_string().contains("\"z\""), "{err}");
    }

    #[test]
    fn regression_and_classification_do_not_mix() {
        let job = DataSchema {
            input: InputShape::Table { features: 4 },
            task: Task::Regression { target: "y".into() },
            normalization: None,
        };
        let err = job.check_matches(&table(4, &["a", "b"])).unwrap_err();
        assert!(err.to_string().contains("regression"), "{err}");
    }

    #[test]
    fn out_of_range_schemas_are_invalid() {
        assert!(table(0, &["a", "b"]).validate().is_err());
        assert!(table(3, &["a"]).validate().is_err());
        let image = DataSchema {
            input: InputShape::Image {
                channels: 2,
                height: 8,
                width: 8,
            },
            task: table(1, &["a", "b"]).task,
            normalization: None,
        };
        assert!(image.validate().is_err());
        assert!(table(3, &["a", "b"]).validate().is_ok());
    }

    #[test]
    fn json_and_postcard_round_trip() {
        let schema = DataSchema {
            input: InputShape::Image {
                channels: 3,
                height: 32,
                width: 32,
            },
            task: Task::Classification {
                classes: vec!["cat".into(), "dog".into()],
            },
            normalization: Some(Normalization {
                feature_mean: vec![0.5; 3 * 32 * 32],
                feature_std: vec![0.25; 3 * 32 * 32],
                target_mean: 0.0,
                target_std: 1.0,
            }),
        };
        assert!(schema.validate().is_ok());
        let json = serde_json::to_string(&schema).unwrap();
        assert_eq!(serde_json::from_str::<DataSchema>(&json).unwrap(), schema);
        let bytes = postcard::to_allocvec(&schema).unwrap();
        assert_eq!(postcard::from_bytes::<DataSchema>(&bytes).unwrap(), schema);
    }
}
