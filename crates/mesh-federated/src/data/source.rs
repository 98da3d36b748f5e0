//! Where a data set comes from: a set built into the binary or a folder of files.
//!
//! A folder holds one of (checked in this order):
//! * `train.csv` / `train.parquet` and `test.csv` / `test.parquet`: tables
//!   ([`super::table`]);
//! * `train/` and `test/` image folders in the `<class>/<file>` layout
//!   ([`super::images`]);
//! * the four MNIST IDX files.
//!
//! A [`DataSource`] is written `builtin:NAME` for a set compiled into the
//! binary (today only `builtin:mnist-10k`, the bundled 10,000-digit MNIST
//! subset, about 1.6 MB of gzip) or as a path for a folder of IDX files. The
//! command line (`--data`) and the node config (`[data] dir`) share this one
//! parser, so both accept the same spellings.
//!
//! Loading a source also hashes it: the SHA-256 of its four files as stored
//! (gzip or raw), concatenated in [`MNIST_FILE_STEMS`] order. The built-in set
//! and a folder holding the same files give the same digest, so a report says
//! which data it ran on wherever the binary was started. From a shell:
//! `cat train-images* train-labels* t10k-images* t10k-labels* | sha256sum`.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use super::images::{self, ImageOptions};
use super::partition::Shard;
use super::table::{self, TableOptions};
use super::{idx, DataError, Dataset, Mnist};

/// What marks a data source as a set built into the binary.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// The four files of an MNIST set (without `.gz`), in the order they are
/// parsed and hashed.
pub const MNIST_FILE_STEMS: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// The bytes of one file of `data/mnist-10k`, embedded at compile time.
/// `crates/mesh-federated/data/mnist-10k` links to the repository's
/// `data/mnist-10k`, so the files are inside the crate when it is packaged.
macro_rules! mnist_10k_file {
    ($stem:literal) => {
        (
            concat!("builtin:mnist-10k/", $stem, ".gz"),
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/data/mnist-10k/",
                $stem,
                ".gz"
            ))
            .as_slice(),
        )
    };
}

/// A data set compiled into the binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BuiltinSet {
    /// `data/mnist-10k`: 8,000 training and 2,000 test digits of MNIST.
    Mnist10k,
}

impl BuiltinSet {
    /// Every built-in set.
    pub const ALL: [BuiltinSet; 1] = [BuiltinSet::Mnist10k];

    /// The name after `builtin:`.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinSet::Mnist10k => "mnist-10k",
        }
    }

    /// The set's files as `(name for messages, gzip bytes)`, in
    /// [`MNIST_FILE_STEMS`] order.
    pub fn files(self) -> [(&'static str, &'static [u8]); 4] {
        match self {
            BuiltinSet::Mnist10k => [
                mnist_10k_file!("train-images-idx3-ubyte"),
                mnist_10k_file!("train-labels-idx1-ubyte"),
                mnist_10k_file!("t10k-images-idx3-ubyte"),
                mnist_10k_file!("t10k-labels-idx1-ubyte"),
            ],
        }
    }

    fn from_name(name: &str) -> Result<BuiltinSet, DataError> {
        Self::ALL
            .into_iter()
            .find(|set| set.name() == name)
            .ok_or_else(|| DataError::UnknownBuiltin {
                name: name.to_owned(),
                known: Self::ALL.map(BuiltinSet::name).join(", "),
            })
    }
}

/// One file as stored: its name for messages and its bytes (gzip or raw).
type StoredFile = (String, Cow<'static, [u8]>);

/// Where an MNIST set is read from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DataSource {
    /// A set compiled into the binary, written `builtin:NAME`.
    Builtin(BuiltinSet),
    /// A folder with `train-*` and `t10k-*` IDX files (gzip or raw).
    Dir(PathBuf),
}

impl Default for DataSource {
    /// The bundled MNIST subset, which needs no files at run time.
    fn default() -> Self {
        DataSource::Builtin(BuiltinSet::Mnist10k)
    }
}

/// An MNIST set and the digest of the files it was parsed from.
#[derive(Debug, Clone)]
pub struct LoadedMnist {
    /// The train and test sets.
    pub mnist: Mnist,
    /// Lower-case hex SHA-256 of the four stored files, concatenated in
    /// [`MNIST_FILE_STEMS`] order.
    pub sha256_hex: String,
}

/// How to read whatever a folder holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadOptions {
    /// For tables: the label column, regression or not, missing values.
    pub table: TableOptions,
    /// For image folders: channels and size.
    pub images: ImageOptions,
    /// Keep only this shard of the training rows (all rows when none). With
    /// IDX files only the kept rows are ever converted to features.
    pub shard: Option<Shard>,
    /// Keep at most this many test rows, the first ones (all when none).
    pub test_rows_max: Option<usize>,
}

/// What kind of files a data set was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    /// MNIST IDX files.
    Idx,
    /// CSV or Parquet tables.
    Table,
    /// Image folders.
    Images,
}

/// A train and test set and the digest of the files they were read from.
#[derive(Debug, Clone)]
pub struct LoadedData {
    /// Training rows.
    pub train: Dataset,
    /// Test rows (same schema, same class order).
    pub test: Dataset,
    /// Lower-case hex SHA-256 of the files as stored, in reading order.
    pub sha256_hex: String,
    /// What the files were.
    pub kind: DataKind,
}

impl DataSource {
    /// Reads a train and test set of any supported kind (see the module docs).
    pub fn load(&self, options: &LoadOptions) -> Result<LoadedData, DataError> {
        let DataSource::Dir(dir) = self else {
            return self.load_idx(options);
        };
        if let (Some(train), Some(test)) = (table_file(dir, "train"), table_file(dir, "test")) {
            return load_tables(&train, &test, &options.table)?.keep_rows(options);
        }
        if dir.join("train").is_dir() && dir.join("test").is_dir() {
            return load_images(dir, &options.images)?.keep_rows(options);
        }
        self.load_idx(options)
    }

    fn load_idx(&self, options: &LoadOptions) -> Result<LoadedData, DataError> {
        let loaded = self.load_mnist_rows(options)?;
        Ok(LoadedData {
            train: loaded.mnist.train,
            test: loaded.mnist.test,
            sha256_hex: loaded.sha256_hex,
            kind: DataKind::Idx,
        })
    }

    /// Reads (or takes from the binary) the four files, hashes them and parses them.
    pub fn load_mnist(&self) -> Result<LoadedMnist, DataError> {
        self.load_mnist_rows(&LoadOptions::default())
    }

    /// [`Self::load_mnist`] keeping the rows `options` asks for.
    fn load_mnist_rows(&self, options: &LoadOptions) -> Result<LoadedMnist, DataError> {
        let files = self.stored_files()?;
        let mut hasher = Sha256::new();
        for (_, bytes) in &files {
            hasher.update(bytes);
        }
        let sha256_hex = format!("{:x}", hasher.finalize());
        let [train_images, train_labels, test_images, test_labels] = files
            .each_ref()
            .map(|(name, bytes)| (&name[..], &bytes[..]));
        let train = idx::pair_rows_from_stored(train_images, train_labels, |labels| {
            options
                .shard
                .map(|shard| shard.rows(labels, idx::NUM_CLASSES))
                .transpose()
        })?;
        let test = idx::pair_rows_from_stored(test_images, test_labels, |labels| {
            Ok(options
                .test_rows_max
                .map(|max| first_rows(labels.len(), max)))
        })?;
        let mnist = Mnist { train, test };
        Ok(LoadedMnist { mnist, sha256_hex })
    }

    /// The four files as `(name for messages, bytes as stored)`.
    fn stored_files(&self) -> Result<[StoredFile; 4], DataError> {
        match self {
            DataSource::Builtin(set) => Ok(set
                .files()
                .map(|(name, bytes)| (name.to_owned(), Cow::Borrowed(bytes)))),
            DataSource::Dir(dir) => {
                let paths = MNIST_FILE_STEMS.map(|stem| idx::find_file(dir, stem));
                let [a, b, c, d] = paths.each_ref().map(|path| {
                    idx::read_stored(path)
                        .map(|bytes| (path.display().to_string(), Cow::Owned(bytes)))
                });
                Ok([a?, b?, c?, d?])
            }
        }
    }
}

impl LoadedData {
    /// Keeps the training shard and the test rows `options` asks for.
    fn keep_rows(mut self, options: &LoadOptions) -> Result<Self, DataError> {
        if let Some(shard) = options.shard {
            let rows = shard.rows(&self.train.labels, self.train.num_classes)?;
            self.train = self.train.subset(&rows);
        }
        if let Some(max) = options.test_rows_max {
            self.test = self.test.subset(&first_rows(self.test.len(), max));
        }
        Ok(self)
    }
}

/// The first `max` of `len` row indices.
fn first_rows(len: usize, max: usize) -> Vec<usize> {
    (0..len.min(max)).collect()
}

/// `dir/stem.csv` or `dir/stem.parquet`, whichever exists.
fn table_file(dir: &std::path::Path, stem: &str) -> Option<PathBuf> {
    ["csv", "parquet"]
        .iter()
        .map(|ext| dir.join(format!("{stem}.{ext}")))
        .find(|p| p.is_file())
}

fn read_table(path: &std::path::Path, options: &TableOptions) -> Result<table::Table, DataError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => table::read_parquet(path, options),
        _ => table::read_csv(path, options),
    }
}

fn hash_files(paths: &[PathBuf]) -> Result<String, DataError> {
    let mut hasher = Sha256::new();
    for path in paths {
        let bytes = std::fs::read(path).map_err(|source| DataError::Io {
            path: path.display().to_string(),
            source,
        })?;
        hasher.update(&bytes);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

fn load_tables(
    train: &std::path::Path,
    test: &std::path::Path,
    options: &TableOptions,
) -> Result<LoadedData, DataError> {
    let (train_table, test_table) = (read_table(train, options)?, read_table(test, options)?);
    if train_table.feature_names != test_table.feature_names {
        return Err(DataError::Malformed {
            place: test.display().to_string(),
            reason: format!(
                "columns {:?} differ from the training file's {:?}",
                test_table.feature_names, train_table.feature_names
            ),
        });
    }
    let classes = table::class_order(train_table.labels.iter().chain(&test_table.labels));
    Ok(LoadedData {
        train: train_table.into_dataset(&classes)?,
        test: test_table.into_dataset(&classes)?,
        sha256_hex: hash_files(&[train.to_owned(), test.to_owned()])?,
        kind: DataKind::Table,
    })
}

fn load_images(dir: &std::path::Path, options: &ImageOptions) -> Result<LoadedData, DataError> {
    let (train_dir, test_dir) = (dir.join("train"), dir.join("test"));
    let mut classes = images::class_folders(&train_dir)?;
    for extra in images::class_folders(&test_dir)? {
        if !classes.contains(&extra) {
            classes.push(extra);
        }
    }
    let options = ImageOptions {
        classes: Some(options.classes.clone().unwrap_or(classes)),
        ..options.clone()
    };
    let train = images::read_folder(&train_dir, &options)?;
    let [c, h, w] = train.image_shape.unwrap_or([1, 1, 1]);
    let test_options = ImageOptions {
        channels: Some(c),
        size: Some([h, w]),
        ..options
    };
    let test = images::read_folder(&test_dir, &test_options)?;
    let mut files = Vec::new();
    for root in [&train_dir, &test_dir] {
        collect_files(root, &mut files)?;
    }
    Ok(LoadedData {
        train,
        test,
        sha256_hex: hash_files(&files)?,
        kind: DataKind::Images,
    })
}

/// Every file under `dir`, in name order, one level of class folders deep.
fn collect_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let io = |source| DataError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

impl FromStr for DataSource {
    type Err = DataError;

    /// `builtin:NAME` names a built-in set; anything else non-empty is a folder.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(name) = text.strip_prefix(BUILTIN_PREFIX) {
            return BuiltinSet::from_name(name).map(DataSource::Builtin);
        }
        if text.is_empty() {
            return Err(DataError::InvalidParameter(format!(
                "empty data source: expected {BUILTIN_PREFIX}NAME or a folder"
            )));
        }
        Ok(DataSource::Dir(PathBuf::from(text)))
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Builtin(set) => write!(f, "{BUILTIN_PREFIX}{}", set.name()),
            DataSource::Dir(dir) => write!(f, "{}", dir.display()),
        }
    }
}

impl TryFrom<String> for DataSource {
    type Error = DataError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<DataSource> for String {
    fn from(source: DataSource) -> String {
        source.to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::path::Path;

    fn bundled_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist-10k")
    }

    /// `cat` of the four files in `data/mnist-10k` piped to `sha256sum`.
    const MNIST_10K_SHA256: &str =
        "f041027efc5af71e58b66d0dfc399b8e2fd7a43ffe01d5f55cc9569d1ce5b95a";

    #[test]
    fn embedded_set_equals_the_set_loaded_from_data_mnist_10k() {
        let embedded = DataSource::Builtin(BuiltinSet::Mnist10k)
            .load_mnist()
            .unwrap();
        let from_dir = DataSource::Dir(bundled_dir()).load_mnist().unwrap();
        assert_eq!(embedded.mnist.train, from_dir.mnist.train);
        assert_eq!(embedded.mnist.test, from_dir.mnist.test);
        assert_eq!(embedded.mnist.train.len(), 8000);
        assert_eq!(embedded.mnist.test.len(), 2000);
        assert_eq!(embedded.sha256_hex, MNIST_10K_SHA256);
        assert_eq!(from_dir.sha256_hex, MNIST_10K_SHA256);
    }

    #[test]
    fn a_shard_loaded_alone_equals_the_same_shard_cut_from_the_whole_set() {
        let shard = Shard {
            partition: crate::data::partition::Partition::Dirichlet { alpha: 0.5 },
            shards: 40,
            shard: 7,
            seed: 11,
        };
        let options = LoadOptions {
            shard: Some(shard),
            test_rows_max: Some(300),
            ..LoadOptions::default()
        };
        let source = DataSource::Builtin(BuiltinSet::Mnist10k);
        let kept = source.load(&options).unwrap();
        let whole = source.load(&LoadOptions::default()).unwrap();
        let rows = shard
            .rows(&whole.train.labels, whole.train.num_classes)
            .unwrap();
        assert!(!rows.is_empty());
        assert_eq!(kept.train, whole.train.subset(&rows));
        let first: Vec<usize> = (0..300).collect();
        assert_eq!(kept.test, whole.test.subset(&first));
        assert_eq!(kept.sha256_hex, whole.sha256_hex);
        let beyond = LoadOptions {
            shard: Some(Shard { shard: 40, ..shard }),
            ..LoadOptions::default()
        };
        let err = source.load(&beyond).unwrap_err().to_string();
        assert!(err.contains("no shard 40 of 40"), "{err}");
    }

    #[test]
    fn sources_parse_and_print_back() {
        let builtin: DataSource = "builtin:mnist-10k".parse().unwrap();
        assert_eq!(builtin, DataSource::default());
        assert_eq!(builtin.to_string(), "builtin:mnist-10k");
        let dir: DataSource = "data/mnist-10k".parse().unwrap();
        assert_eq!(dir, DataSource::Dir(PathBuf::from("data/mnist-10k")));
        assert_eq!(dir.to_string(), "data/mnist-10k");
        let err = "builtin:cifar".parse::<DataSource>().unwrap_err();
        assert!(matches!(err, DataError::UnknownBuiltin { .. }));
        assert!(err.to_string().contains("mnist-10k"), "{err}");
        assert!("".parse::<DataSource>().is_err());
    }

    #[test]
    fn sources_round_trip_through_serde_as_strings() {
        for text in ["builtin:mnist-10k", "/srv/mnist"] {
            let source: DataSource = serde_json::from_str(&format!("{text:?}")).unwrap();
            assert_eq!(serde_json::to_string(&source).unwrap(), format!("{text:?}"));
        }
        assert!(serde_json::from_str::<DataSource>("\"builtin:nope\"").is_err());
    }

    #[test]
    fn a_missing_folder_names_the_file_it_could_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let err = DataSource::Dir(dir.path().to_owned())
            .load_mnist()
            .unwrap_err();
        assert!(matches!(err, DataError::Io { .. }), "{err}");
        assert!(err.to_string().contains("train-images-idx3-ubyte"), "{err}");
    }
}
