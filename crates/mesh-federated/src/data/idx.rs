//! Reader for the IDX format of the MNIST distribution.
//!
//! An IDX file is a big-endian `u32` magic number (`0x0000_08NN`: unsigned bytes,
//! `NN` dimensions), one big-endian `u32` per dimension, then the raw bytes. The
//! files may be gzip-compressed; compression is detected from the content, not
//! the name. Every size is checked before anything is allocated.

use super::{DataError, Dataset};
use flate2::read::GzDecoder;
use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Magic number of an IDX file of unsigned bytes with three dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with one dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// The largest IDX payload we accept (the full 60k MNIST is 47 MB).
pub const MAX_PAYLOAD_BYTES: u64 = 512 * 1024 * 1024;
/// The largest stored (gzip or raw) IDX file we read: a raw file of
/// [`MAX_PAYLOAD_BYTES`] plus its header, or a gzip file of it (deflate adds
/// at most 5 bytes per 64 KiB block to incompressible data).
pub const MAX_STORED_BYTES: u64 = MAX_PAYLOAD_BYTES + MAX_PAYLOAD_BYTES / 1024 + 1024;
/// Mean pixel value of MNIST (after scaling to `[0, 1]`).
pub const MNIST_MEAN: f32 = 0.1307;
/// Standard deviation of MNIST pixels (after scaling to `[0, 1]`).
pub const MNIST_STD: f32 = 0.3081;

/// A parsed IDX file: its dimensions and its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// Size of each dimension.
    pub dims: Vec<usize>,
    /// The data, `dims.iter().product()` bytes.
    pub data: Vec<u8>,
}

/// Reads an IDX file (gzip or raw) whose magic number must be `expected_magic`.
pub fn read_idx(path: &Path, expected_magic: u32) -> Result<IdxArray, DataError> {
    let name = path.display().to_string();
    parse_stored_idx(&read_stored(path)?, expected_magic, &name)
}

/// Parses IDX bytes as stored, gzip-compressed or raw; `name` is used in error messages.
pub fn parse_stored_idx(
    stored: &[u8],
    expected_magic: u32,
    name: &str,
) -> Result<IdxArray, DataError> {
    parse_idx(&decode_maybe_gzip(stored, name)?, expected_magic, name)
}

/// Parses IDX bytes already in memory; `name` is used in error messages.
pub fn parse_idx(bytes: &[u8], expected_magic: u32, name: &str) -> Result<IdxArray, DataError> {
    let truncated = |expected: u64| DataError::Truncated {
        path: name.to_string(),
        expected_bytes: expected,
        found_bytes: bytes.len() as u64,
    };
    let magic = read_u32(bytes, 0).ok_or_else(|| truncated(4))?;
    if magic != expected_magic {
        return Err(DataError::BadMagic {
            path: name.to_string(),
            found: magic,
            expected: expected_magic,
        });
    }
    let dim_count = (magic & 0xff) as usize;
    let header_bytes = 4 + 4 * dim_count;
    let mut dims = Vec::with_capacity(dim_count);
    let mut payload: u64 = 1;
    for i in 0..dim_count {
        let dim = read_u32(bytes, 4 + 4 * i).ok_or_else(|| truncated(header_bytes as u64))?;
        payload = payload.saturating_mul(u64::from(dim));
        dims.push(dim as usize);
    }
    if payload > MAX_PAYLOAD_BYTES {
        return Err(DataError::TooLarge {
            path: name.to_string(),
            announced_bytes: payload,
            limit_bytes: MAX_PAYLOAD_BYTES,
        });
    }
    let body = &bytes[header_bytes..];
    if (body.len() as u64) < payload {
        return Err(DataError::Truncated {
            path: name.to_string(),
            expected_bytes: payload,
            found_bytes: body.len() as u64,
        });
    }
    Ok(IdxArray {
        dims,
        data: body[..payload as usize].to_vec(),
    })
}

/// Parses a stored images file and its labels file (gzip or raw) into a
/// normalized [`Dataset`]; the names are used in error messages.
pub fn pair_from_stored(
    images: (&str, &[u8]),
    labels: (&str, &[u8]),
) -> Result<Dataset, DataError> {
    pair_rows_from_stored(images, labels, |_| Ok(None))
}

/// Like [`pair_from_stored`], keeping only the rows `pick` chooses from the
/// labels (all rows when it chooses `None`). Only kept rows are converted to
/// features, so a node that keeps a shard never holds the whole set as `f32`.
pub fn pair_rows_from_stored(
    (images_name, images): (&str, &[u8]),
    (labels_name, labels): (&str, &[u8]),
    pick: impl FnOnce(&[u8]) -> Result<Option<Vec<usize>>, DataError>,
) -> Result<Dataset, DataError> {
    let labels = parse_stored_idx(labels, LABELS_MAGIC, labels_name)?;
    check_labels(&labels)?;
    let rows = pick(&labels.data)?;
    let images = parse_stored_idx(images, IMAGES_MAGIC, images_name)?;
    images_rows_to_dataset(&images, &labels, rows.as_deref())
}

/// Classes of an IDX label file (digits).
pub const NUM_CLASSES: usize = 10;

fn check_labels(labels: &IdxArray) -> Result<(), DataError> {
    match labels
        .data
        .iter()
        .position(|&l| usize::from(l) >= NUM_CLASSES)
    {
        Some(index) => Err(DataError::BadLabel {
            index,
            label: labels.data[index],
            num_classes: NUM_CLASSES,
        }),
        None => Ok(()),
    }
}

/// Combines an images array `[n, h, w]` and a labels array `[n]` into a data set.
pub fn images_to_dataset(images: &IdxArray, labels: &IdxArray) -> Result<Dataset, DataError> {
    check_labels(labels)?;
    images_rows_to_dataset(images, labels, None)
}

/// The data set of the given rows (all rows for `None`) of an images array
/// `[n, h, w]` and its checked labels `[n]`.
fn images_rows_to_dataset(
    images: &IdxArray,
    labels: &IdxArray,
    rows: Option<&[usize]>,
) -> Result<Dataset, DataError> {
    let (n, h, w) = (images.dims[0], images.dims[1], images.dims[2]);
    if n != labels.dims[0] {
        return Err(DataError::CountMismatch {
            images: n,
            labels: labels.dims[0],
        });
    }
    let all: Vec<usize>;
    let rows = match rows {
        Some(rows) => rows,
        None => {
            all = (0..n).collect();
            &all
        }
    };
    let pixels = h * w;
    let mut features = Vec::with_capacity(rows.len() * pixels);
    let mut kept_labels = Vec::with_capacity(rows.len());
    for &row in rows {
        let (Some(image), Some(&label)) = (
            images.data.get(row * pixels..(row + 1) * pixels),
            labels.data.get(row),
        ) else {
            return Err(DataError::InvalidParameter(format!(
                "row {row} of a set of {n}"
            )));
        };
        features.extend(
            image
                .iter()
                .map(|&p| (f32::from(p) / 255.0 - MNIST_MEAN) / MNIST_STD),
        );
        kept_labels.push(label);
    }
    Ok(Dataset {
        features,
        labels: kept_labels,
        feature_count: pixels,
        num_classes: NUM_CLASSES,
        image_shape: Some([1, h, w]),
        targets: Vec::new(),
        task: super::numbered_classes(NUM_CLASSES),
        needs_standardizing: false,
        target_std: None,
    })
}

/// `dir/name.gz` if it exists, else `dir/name`.
pub fn find_file(dir: &Path, name: &str) -> PathBuf {
    let gz = dir.join(format!("{name}.gz"));
    if gz.exists() {
        gz
    } else {
        dir.join(name)
    }
}

/// Reads a whole stored file of at most [`MAX_STORED_BYTES`].
pub fn read_stored(path: &Path) -> Result<Vec<u8>, DataError> {
    let io_err = |source| DataError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .map_err(io_err)?
        .take(MAX_STORED_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(io_err)?;
    if raw.len() as u64 > MAX_STORED_BYTES {
        return Err(DataError::TooLarge {
            path: path.display().to_string(),
            announced_bytes: raw.len() as u64,
            limit_bytes: MAX_STORED_BYTES,
        });
    }
    Ok(raw)
}

/// Gunzips `stored` when it starts with the gzip magic bytes, else returns it.
/// Decompressed output is capped so a gzip bomb cannot exhaust memory.
fn decode_maybe_gzip<'a>(stored: &'a [u8], name: &str) -> Result<Cow<'a, [u8]>, DataError> {
    if !stored.starts_with(&[0x1f, 0x8b]) {
        return Ok(Cow::Borrowed(stored));
    }
    let cap = MAX_PAYLOAD_BYTES + 64;
    let mut out = Vec::new();
    GzDecoder::new(stored)
        .take(cap + 1)
        .read_to_end(&mut out)
        .map_err(|source| DataError::Io {
            path: name.to_string(),
            source,
        })?;
    if out.len() as u64 > cap {
        return Err(DataError::TooLarge {
            path: name.to_string(),
            announced_bytes: out.len() as u64,
            limit_bytes: cap,
        });
    }
    Ok(Cow::Owned(out))
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let b = bytes.get(offset..offset + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn parses_a_small_image_file() {
        let bytes = idx_bytes(IMAGES_MAGIC, &[2, 2, 2], &[0, 1, 2, 3, 4, 5, 6, 7]);
        let arr = parse_idx(&bytes, IMAGES_MAGIC, "x").unwrap();
        assert_eq!(arr.dims, vec![2, 2, 2]);
        assert_eq!(arr.data, vec![0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn wrong_magic_is_rejected() {
        let bytes = idx_bytes(LABELS_MAGIC, &[1], &[3]);
        let err = parse_idx(&bytes, IMAGES_MAGIC, "x").unwrap_err();
        assert!(matches!(err, DataError::BadMagic { found, .. } if found == LABELS_MAGIC));
    }

    #[test]
    fn truncated_body_and_header_are_rejected() {
        let bytes = idx_bytes(IMAGES_MAGIC, &[2, 2, 2], &[0, 1, 2]);
        let err = parse_idx(&bytes, IMAGES_MAGIC, "x").unwrap_err();
        assert!(matches!(
            err,
            DataError::Truncated {
                expected_bytes: 8,
                found_bytes: 3,
                ..
            }
        ));
        let err = parse_idx(&IMAGES_MAGIC.to_be_bytes()[..3], IMAGES_MAGIC, "x").unwrap_err();
        assert!(matches!(err, DataError::Truncated { .. }));
        let err = parse_idx(&idx_bytes(IMAGES_MAGIC, &[2], &[]), IMAGES_MAGIC, "x").unwrap_err();
        assert!(matches!(err, DataError::Truncated { .. }));
    }

    #[test]
    fn huge_header_is_rejected_without_allocating() {
        let bytes = idx_bytes(IMAGES_MAGIC, &[u32::MAX, u32::MAX, u32::MAX], &[]);
        let err = parse_idx(&bytes, IMAGES_MAGIC, "x").unwrap_err();
        assert!(matches!(err, DataError::TooLarge { .. }));
    }

    #[test]
    fn mismatched_counts_are_rejected() {
        let images = IdxArray {
            dims: vec![2, 1, 1],
            data: vec![0, 0],
        };
        let labels = IdxArray {
            dims: vec![3],
            data: vec![0, 1, 2],
        };
        let err = images_to_dataset(&images, &labels).unwrap_err();
        assert!(matches!(
            err,
            DataError::CountMismatch {
                images: 2,
                labels: 3
            }
        ));
    }

    #[test]
    fn out_of_range_label_is_rejected() {
        let images = IdxArray {
            dims: vec![1, 1, 1],
            data: vec![0],
        };
        let labels = IdxArray {
            dims: vec![1],
            data: vec![10],
        };
        assert!(matches!(
            images_to_dataset(&images, &labels),
            Err(DataError::BadLabel { label: 10, .. })
        ));
    }

    #[test]
    fn gzip_files_are_read_and_corrupt_gzip_is_an_error() {
        use flate2::{write::GzEncoder, Compression};
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.gz");
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(&idx_bytes(LABELS_MAGIC, &[2], &[7, 9]))
            .unwrap();
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        assert_eq!(read_idx(&path, LABELS_MAGIC).unwrap().data, vec![7, 9]);
        std::fs::write(&path, [0x1f, 0x8b, 0x08, 0x00, 0x01]).unwrap();
        assert!(matches!(
            read_idx(&path, LABELS_MAGIC),
            Err(DataError::Io { .. })
        ));
    }

    /// The I/O error used to be both in the message and the `source()`, so
    /// `{:#}` (how the CLI prints errors) said "No such file or directory" twice.
    #[test]
    fn regression_io_error_cause_printed_twice() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing-idx1-ubyte");
        let err = read_idx(&missing, LABELS_MAGIC).unwrap_err();
        let chain = format!(
            "{:#}",
            anyhow::Error::new(err).context("loading MNIST from builtin:mnist-10k")
        );
        let os_message = chain.rsplit(": ").next().unwrap();
        assert!(os_message.contains("os error"), "{chain}");
        assert_eq!(chain.matches(os_message).count(), 1, "{chain}");
        assert!(chain.contains("missing-idx1-ubyte"), "{chain}");
    }

    #[test]
    fn bundled_mnist_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist-10k");
        let mnist = crate::data::Mnist::load(&dir).unwrap();
        assert_eq!(mnist.train.len(), 8000);
        assert_eq!(mnist.test.len(), 2000);
        assert_eq!(mnist.train.feature_count, 784);
        assert!(mnist
            .train
            .class_counts()
            .iter()
            .all(|&c| (600..1000).contains(&c)));
    }
}
