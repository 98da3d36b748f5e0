//! Data sets and how they are split across nodes.
//!
//! * [`idx`]: the standard MNIST IDX file format (gzip or raw).
//! * [`table`]: CSV and Parquet tables (feature columns and a label or target).
//! * [`images`]: image folders in the `root/<class>/<file>` layout (PNG, JPEG).
//! * [`normalize`]: feature (and regression target) standardization.
//! * [`source`]: where a data set comes from: the MNIST subset built into the
//!   binary (`builtin:mnist-10k`) or a folder of IDX files, tables or images.
//! * [`synthetic`]: the FedProx `Synthetic(alpha, beta)` generator.
//! * [`partition`]: IID, Dirichlet label skew, McMahan shards and quantity skew.
//!
//! A [`Dataset`] is a dense matrix of features (row-major, `f32`) and one class
//! label (or regression target) per row. It is what models train and evaluate on.

pub mod bind;
pub mod idx;
pub mod images;
pub mod normalize;
pub mod partition;
pub mod source;
pub mod synthetic;
pub mod table;

pub use mesh_spec::schema::Normalization;
pub use source::{BuiltinSet, DataSource, LoadOptions, LoadedData, LoadedMnist};

use mesh_spec::schema::{DataSchema, InputShape, Task};

use std::path::Path;

/// Errors from loading or generating data. None of them is fixed by retrying:
/// the input file or the parameters must change.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened, read or gunzipped. The cause is the
    /// error's `source()` only, not part of this message, so a chain printed
    /// cause by cause (`{:#}`) names it once.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file does not start with the expected IDX magic number.
    #[error("{path}: wrong IDX magic number 0x{found:08x}, expected 0x{expected:08x} (is this the right file?)")]
    BadMagic {
        /// The file.
        path: String,
        /// Magic number found.
        found: u32,
        /// Magic number expected.
        expected: u32,
    },
    /// The file ends before the data its header announces.
    #[error(
        "{path}: truncated: header announces {expected_bytes} data bytes, file has {found_bytes}"
    )]
    Truncated {
        /// The file.
        path: String,
        /// Bytes announced by the header.
        expected_bytes: u64,
        /// Bytes present.
        found_bytes: u64,
    },
    /// The file is larger than any data set we accept.
    #[error("{path}: {announced_bytes} bytes, over the limit of {limit_bytes}")]
    TooLarge {
        /// The file.
        path: String,
        /// Bytes announced by the header, stored or decompressed.
        announced_bytes: u64,
        /// The limit.
        limit_bytes: u64,
    },
    /// Image and label files disagree on the number of records.
    #[error(
        "{images} images but {labels} labels: the image and label files do not belong together"
    )]
    CountMismatch {
        /// Number of images.
        images: usize,
        /// Number of labels.
        labels: usize,
    },
    /// A label is outside `0..num_classes`.
    #[error("label {label} at record {index} is outside 0..{num_classes}")]
    BadLabel {
        /// Record index.
        index: usize,
        /// The label.
        label: u8,
        /// Number of classes.
        num_classes: usize,
    },
    /// A cell, row or file of a table or image folder that cannot be used.
    /// `place` names the file and, where known, the row and column.
    #[error("{place}: {reason}")]
    Malformed {
        /// `file`, `file: row 12, column "age"`, ...
        place: String,
        /// What is wrong.
        reason: String,
    },
    /// A `builtin:NAME` data source names no set built into this binary.
    #[error("no built-in data set {name:?} (built in: {known})")]
    UnknownBuiltin {
        /// The name asked for.
        name: String,
        /// The names built in, comma-separated.
        known: String,
    },
    /// Parameters out of range (partitioning or generation).
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
}

/// A labelled data set: `len()` rows of `feature_count` features each.
///
/// For classification `labels` holds each row's class. For regression
/// `targets` holds each row's target and `labels` the target's decile
/// (`num_classes` = 10), which only partitioning by label skew uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Row-major features, `len() * feature_count` values.
    pub features: Vec<f32>,
    /// One label per row, in `0..num_classes`.
    pub labels: Vec<u8>,
    /// Number of features per row.
    pub feature_count: usize,
    /// Number of classes (deciles for regression).
    pub num_classes: usize,
    /// `[channels, height, width]` when the features are an image.
    pub image_shape: Option<[usize; 3]>,
    /// Regression targets, one per row; empty for classification.
    pub targets: Vec<f32>,
    /// What the rows predict: class names, or the target's name.
    pub task: Task,
    /// True when the features are raw table columns that training should
    /// standardize (images and IDX digits come scaled already).
    pub needs_standardizing: bool,
    /// The standard deviation regression targets were divided by when they
    /// were standardized, so errors can be told in the target's units.
    pub target_std: Option<f32>,
}

/// Class names `"0"`, `"1"`, ... for `n` classes.
pub fn numbered_classes(n: usize) -> Task {
    Task::Classification {
        classes: (0..n).map(|c| c.to_string()).collect(),
    }
}

impl Dataset {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the data set has no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The features of row `index`.
    pub fn row(&self, index: usize) -> &[f32] {
        let start = index * self.feature_count;
        &self.features[start..start + self.feature_count]
    }

    /// A new data set holding the given rows, in the given order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut features = Vec::with_capacity(indices.len() * self.feature_count);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            features.extend_from_slice(self.row(i));
            labels.push(self.labels[i]);
        }
        let targets = if self.targets.is_empty() {
            Vec::new()
        } else {
            indices.iter().map(|&i| self.targets[i]).collect()
        };
        Dataset {
            features,
            labels,
            targets,
            task: self.task.clone(),
            ..self.empty_like()
        }
    }

    /// A data set with no rows, features or classes: the data argument of
    /// a model that holds its own data (an external learner).
    pub fn no_rows() -> Dataset {
        Dataset {
            features: Vec::new(),
            labels: Vec::new(),
            feature_count: 0,
            num_classes: 0,
            image_shape: None,
            targets: Vec::new(),
            task: numbered_classes(0),
            needs_standardizing: false,
            target_std: None,
        }
    }

    /// A data set with no rows and this one's shape and task.
    pub fn empty_like(&self) -> Dataset {
        Dataset {
            features: Vec::new(),
            labels: Vec::new(),
            feature_count: self.feature_count,
            num_classes: self.num_classes,
            image_shape: self.image_shape,
            targets: Vec::new(),
            task: self.task.clone(),
            needs_standardizing: self.needs_standardizing,
            target_std: self.target_std,
        }
    }

    /// True for a regression data set.
    pub fn is_regression(&self) -> bool {
        self.task.is_regression()
    }

    /// The schema of this data: input shape and task.
    pub fn schema(&self) -> DataSchema {
        let input = match self.image_shape {
            Some([c, h, w]) => InputShape::Image {
                channels: c as u32,
                height: h as u32,
                width: w as u32,
            },
            None => InputShape::Table {
                features: u32::try_from(self.feature_count).unwrap_or(u32::MAX),
            },
        };
        DataSchema {
            input,
            task: self.task.clone(),
            normalization: None,
        }
    }

    /// Number of rows of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

/// The MNIST train and test sets of a folder holding the four standard IDX files.
#[derive(Debug, Clone)]
pub struct Mnist {
    /// Training set.
    pub train: Dataset,
    /// Test set.
    pub test: Dataset,
}

impl Mnist {
    /// Loads `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]` and the
    /// `t10k-` pair from `dir`. Pixels are scaled to `[0, 1]` and then normalized
    /// with the usual MNIST mean and standard deviation.
    pub fn load(dir: &Path) -> Result<Mnist, DataError> {
        DataSource::Dir(dir.to_owned())
            .load_mnist()
            .map(|loaded| loaded.mnist)
    }

    /// Parses the four files of an MNIST set as stored (gzip or raw), each a
    /// `(name, bytes)` pair in [`source::MNIST_FILE_STEMS`] order.
    pub fn from_stored(files: [(&str, &[u8]); 4]) -> Result<Mnist, DataError> {
        let [train_images, train_labels, test_images, test_labels] = files;
        Ok(Mnist {
            train: idx::pair_from_stored(train_images, train_labels)?,
            test: idx::pair_from_stored(test_images, test_labels)?,
        })
    }
}
