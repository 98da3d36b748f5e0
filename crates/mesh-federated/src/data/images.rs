//! Image folders in the common `root/<class>/<file>` layout (PNG and JPEG,
//! decoded by the `image` crate).
//!
//! Every subfolder of `root` is a class, named by the folder; its files are
//! that class's images. Classes are ordered like table labels
//! ([`super::table::class_order`]): numerically when every name is an
//! integer, else by name. Images are converted to grayscale or RGB, resized
//! to one shape (the job's, or the first image's), scaled to `[0, 1]` and
//! stored channel-first (`[channels, height, width]`), the layout of a
//! convolution's input. Files are read in name order, so a folder always
//! gives the same data set.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageReader};

use super::table::class_order;
use super::{DataError, Dataset};
use mesh_spec::schema::Task;

/// Most images read from one folder.
pub const MAX_IMAGES: usize = 1_000_000;
/// Largest image file read.
pub const MAX_IMAGE_FILE_BYTES: u64 = 64 << 20;

/// How to read an image folder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageOptions {
    /// 1 (grayscale) or 3 (RGB); `None` takes the first image's.
    pub channels: Option<usize>,
    /// `[height, width]` every image is resized to; `None` takes the first image's.
    pub size: Option<[usize; 2]>,
    /// The classes in index order; `None` takes the folder names in the
    /// documented order.
    pub classes: Option<Vec<String>>,
}

/// The class folders of `root`, by name.
pub fn class_folders(root: &Path) -> Result<Vec<String>, DataError> {
    let mut names = Vec::new();
    for entry in read_dir(root)? {
        if entry.is_dir() {
            if let Some(name) = entry.file_name().and_then(|n| n.to_str()) {
                names.push(name.to_string());
            }
        }
    }
    if names.is_empty() {
        return Err(DataError::Malformed {
            place: root.display().to_string(),
            reason: "no class folders: expected root/<class>/<image files>".into(),
        });
    }
    Ok(class_order(&names))
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io = |source| DataError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut paths = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    paths.sort();
    Ok(paths)
}

/// Reads every image of `root/<class>/`.
pub fn read_folder(root: &Path, options: &ImageOptions) -> Result<Dataset, DataError> {
    let classes = match &options.classes {
        Some(c) => c.clone(),
        None => class_folders(root)?,
    };
    let mut shape: Option<[usize; 3]> = options
        .size
        .zip(options.channels)
        .map(|([h, w], c)| [c, h, w]);
    let (mut features, mut labels) = (Vec::new(), Vec::new());
    for (index, class) in classes.iter().enumerate() {
        let folder = root.join(class);
        if !folder.is_dir() {
            continue;
        }
        for path in read_dir(&folder)? {
            if !path.is_file() || !is_image(&path) {
                continue;
            }
            if labels.len() >= MAX_IMAGES {
                return Err(DataError::TooLarge {
                    path: root.display().to_string(),
                    announced_bytes: labels.len() as u64,
                    limit_bytes: MAX_IMAGES as u64,
                });
            }
            let image = decode(&path)?;
            let [c, h, w] = *shape.get_or_insert_with(|| first_shape(&image, options));
            features.extend(pixels(&image, c, h, w));
            labels.push(u8::try_from(index).map_err(|_| {
                DataError::InvalidParameter(format!("{} classes, at most 256", classes.len()))
            })?);
        }
    }
    let Some([c, h, w]) = shape.filter(|_| !labels.is_empty()) else {
        return Err(DataError::Malformed {
            place: root.display().to_string(),
            reason: "no PNG or JPEG images in the class folders".into(),
        });
    };
    Ok(Dataset {
        features,
        labels,
        feature_count: c * h * w,
        num_classes: classes.len(),
        image_shape: Some([c, h, w]),
        targets: Vec::new(),
        task: Task::Classification { classes },
        needs_standardizing: false,
        target_std: None,
    })
}

fn is_image(path: &Path) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    matches!(ext.as_str(), "png" | "jpg" | "jpeg")
}

fn decode(path: &Path) -> Result<DynamicImage, DataError> {
    let bad = |reason: String| DataError::Malformed {
        place: path.display().to_string(),
        reason,
    };
    let size = std::fs::metadata(path)
        .map_err(|source| DataError::Io {
            path: path.display().to_string(),
            source,
        })?
        .len();
    if size > MAX_IMAGE_FILE_BYTES {
        return Err(DataError::TooLarge {
            path: path.display().to_string(),
            announced_bytes: size,
            limit_bytes: MAX_IMAGE_FILE_BYTES,
        });
    }
    let mut reader = ImageReader::open(path)
        .map_err(|e| bad(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_IMAGE_FILE_BYTES * 4);
    limits.max_image_width = Some(16_384);
    limits.max_image_height = Some(16_384);
    reader.limits(limits);
    reader
        .decode()
        .map_err(|e| bad(format!("cannot decode image: {e}")))
}

fn first_shape(image: &DynamicImage, options: &ImageOptions) -> [usize; 3] {
    let channels = options
        .channels
        .unwrap_or(if image.color().has_color() { 3 } else { 1 });
    let [h, w] = options
        .size
        .unwrap_or([image.height() as usize, image.width() as usize]);
    [channels, h, w]
}

/// The image as `c x h x w` values in `[0, 1]`, channel-first.
fn pixels(image: &DynamicImage, c: usize, h: usize, w: usize) -> Vec<f32> {
    let resized = if (image.height() as usize, image.width() as usize) == (h, w) {
        image.clone()
    } else {
        image.resize_exact(w as u32, h as u32, FilterType::Triangle)
    };
    if c == 1 {
        return resized
            .to_luma8()
            .pixels()
            .map(|p| f32::from(p.0[0]) / 255.0)
            .collect();
    }
    let rgb = resized.to_rgb8();
    let mut out = vec![0.0; 3 * h * w];
    for (i, p) in rgb.pixels().enumerate() {
        for ch in 0..3 {
            out[ch * h * w + i] = f32::from(p.0[ch]) / 255.0;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write_png(path: &Path, value: u8, size: u32) {
        let img = image::GrayImage::from_pixel(size, size, image::Luma([value]));
        img.save(path).unwrap();
    }

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (class, value) in [("10", 200u8), ("2", 50)] {
            std::fs::create_dir(dir.path().join(class)).unwrap();
            write_png(&dir.path().join(class).join("a.png"), value, 4);
            write_png(&dir.path().join(class).join("b.png"), value, 8);
        }
        dir
    }

    #[test]
    fn class_folders_become_labels_in_numeric_order_and_images_are_resized() {
        let dir = folder();
        let data = read_folder(dir.path(), &ImageOptions::default()).unwrap();
        assert_eq!(
            data.task,
            Task::Classification {
                classes: vec!["2".into(), "10".into()]
            }
        );
        assert_eq!(data.image_shape, Some([1, 4, 4]));
        assert_eq!(data.labels, [0, 0, 1, 1]);
        assert!((data.row(0)[0] - 50.0 / 255.0).abs() < 1e-6);
        assert!(
            (data.row(3)[5] - 200.0 / 255.0).abs() < 0.01,
            "resized 8x8 to 4x4"
        );
        let rgb = read_folder(
            dir.path(),
            &ImageOptions {
                channels: Some(3),
                size: Some([6, 6]),
                classes: None,
            },
        )
        .unwrap();
        assert_eq!(rgb.feature_count, 3 * 36);
    }

    #[test]
    fn a_corrupt_png_names_the_file() {
        let dir = folder();
        let bad = dir.path().join("2").join("c.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\n garbage").unwrap();
        let err = read_folder(dir.path(), &ImageOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.png") && err.contains("cannot decode"),
            "{err}"
        );
    }

    #[test]
    fn a_folder_without_classes_or_images_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_folder(dir.path(), &ImageOptions::default())
            .unwrap_err()
            .to_string()
            .contains("no class folders"));
        std::fs::create_dir(dir.path().join("a")).unwrap();
        assert!(read_folder(dir.path(), &ImageOptions::default())
            .unwrap_err()
            .to_string()
            .contains("no PNG"));
    }
}
