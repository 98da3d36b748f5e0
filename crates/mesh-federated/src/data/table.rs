//! Tables: CSV (the `csv` crate) and Parquet (Apache `parquet`, record API).
//!
//! A table has a header of column names; one column is the label (a class
//! name, text or integer) or, for regression, the numeric target; every other
//! column (or the ones [`TableOptions::features`] names) is a numeric feature.
//! Errors name the file and, where there is one, the row and the column; the
//! row is the file's line for CSV (the header is line 1) and the record index
//! from 1 for Parquet. Nothing is read past [`TableOptions::max_bytes`].
//!
//! Classes are mapped to indices in one documented, deterministic order
//! ([`class_order`]): numerically when every label is an integer, otherwise
//! by the labels' text (byte order). A node whose job names the classes maps
//! its labels to the job's order instead.

use std::fs::File;
use std::path::Path;

use parquet::basic::Type as PhysicalType;
use parquet::column::page::Page;
use parquet::file::reader::{ChunkReader, FileReader, SerializedFileReader};
use parquet::record::Field;

use super::{DataError, Dataset};
use mesh_spec::schema::Task;

/// Largest table file read by default (1 GiB).
pub const MAX_TABLE_BYTES: u64 = 1 << 30;

/// What to do with an empty or `NA` cell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissingValues {
    /// Refuse the file, naming the row and column.
    #[default]
    Refuse,
    /// Fill with the column's mean over the file's present values.
    FillMean,
    /// Fill with zero.
    FillZero,
}

impl std::str::FromStr for MissingValues {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "refuse" => Ok(MissingValues::Refuse),
            "mean" => Ok(MissingValues::FillMean),
            "zero" => Ok(MissingValues::FillZero),
            other => Err(DataError::InvalidParameter(format!(
                "missing-value rule {other:?}: expected refuse, mean or zero"
            ))),
        }
    }
}

/// How to read a table.
#[derive(Clone, Debug, PartialEq)]
pub struct TableOptions {
    /// The label (or target) column.
    pub label: String,
    /// The feature columns; empty means every column but the label.
    pub features: Vec<String>,
    /// Read the label as a numeric regression target.
    pub regression: bool,
    /// What to do with missing cells.
    pub missing: MissingValues,
    /// Largest file read.
    pub max_bytes: u64,
}

impl Default for TableOptions {
    fn default() -> Self {
        Self {
            label: "label".into(),
            features: Vec::new(),
            regression: false,
            missing: MissingValues::Refuse,
            max_bytes: MAX_TABLE_BYTES,
        }
    }
}

/// A table as read: numeric features (NaN where missing, before filling)
/// and the label column as text or numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// The file, for messages.
    pub path: String,
    /// Names of the feature columns, in order.
    pub feature_names: Vec<String>,
    /// Row-major features.
    pub features: Vec<f32>,
    /// Label text per row (classification).
    pub labels: Vec<String>,
    /// Target per row (regression).
    pub targets: Vec<f32>,
    /// Name of the label column.
    pub label_name: String,
}

impl Table {
    /// Rows read.
    pub fn len(&self) -> usize {
        self.labels.len().max(self.targets.len())
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The table as a data set; `classes` (for classification) gives each
    /// label's index, usually [`class_order`] over every file of the set.
    pub fn into_dataset(self, classes: &[String]) -> Result<Dataset, DataError> {
        let feature_count = self.feature_names.len();
        let (labels, num_classes, task) = if self.labels.is_empty() && !self.targets.is_empty() {
            let task = Task::Regression {
                target: self.label_name.clone(),
            };
            (deciles(&self.targets), 10, task)
        } else {
            let mut labels = Vec::with_capacity(self.labels.len());
            for (i, l) in self.labels.iter().enumerate() {
                let index = classes.iter().position(|c| c == l).ok_or_else(|| {
                    malformed(
                        &self.path,
                        Some(i + 1),
                        Some(&self.label_name),
                        format!(
                            "label {l:?} is not one of the classes ({})",
                            classes.join(", ")
                        ),
                    )
                })?;
                labels.push(u8::try_from(index).map_err(|_| {
                    DataError::InvalidParameter(format!("{} classes, at most 256", classes.len()))
                })?);
            }
            let task = Task::Classification {
                classes: classes.to_vec(),
            };
            (labels, classes.len(), task)
        };
        Ok(Dataset {
            features: self.features,
            labels,
            feature_count,
            num_classes,
            image_shape: None,
            targets: self.targets,
            task,
            needs_standardizing: true,
            target_std: None,
        })
    }
}

/// Each target's decile among `targets` (0..10), for partitioning by skew.
fn deciles(targets: &[f32]) -> Vec<u8> {
    let mut sorted = targets.to_vec();
    sorted.sort_by(f32::total_cmp);
    targets
        .iter()
        .map(|t| {
            let below = sorted.partition_point(|s| s < t);
            ((below * 10) / sorted.len().max(1)).min(9) as u8
        })
        .collect()
}

/// The distinct `labels` in the documented order: numeric when every label
/// is an integer, else by text.
pub fn class_order<'a>(labels: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut classes: Vec<String> = labels.into_iter().cloned().collect();
    classes.sort();
    classes.dedup();
    if classes.iter().all(|c| c.trim().parse::<i64>().is_ok()) {
        classes.sort_by_key(|c| c.trim().parse::<i64>().unwrap_or(0));
    }
    classes
}

fn malformed(path: &str, row: Option<usize>, column: Option<&str>, reason: String) -> DataError {
    let place = match (row, column) {
        (Some(r), Some(c)) => format!("{path}: row {r}, column {c:?}"),
        (Some(r), None) => format!("{path}: row {r}"),
        (None, Some(c)) => format!("{path}: column {c:?}"),
        (None, None) => path.to_string(),
    };
    DataError::Malformed { place, reason }
}

fn checked_size(path: &Path, max_bytes: u64) -> Result<File, DataError> {
    let io = |source| DataError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > max_bytes {
        return Err(DataError::TooLarge {
            path: path.display().to_string(),
            announced_bytes: size,
            limit_bytes: max_bytes,
        });
    }
    Ok(file)
}

/// Which columns are features and which is the label, by header position.
struct Columns {
    features: Vec<usize>,
    label: usize,
}

fn pick_columns(
    path: &str,
    header: &[String],
    options: &TableOptions,
) -> Result<Columns, DataError> {
    let position = |name: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| {
            malformed(
                path,
                None,
                Some(name),
                format!("no such column (columns: {})", header.join(", ")),
            )
        })
    };
    let label = position(&options.label)?;
    let features = if options.features.is_empty() {
        (0..header.len()).filter(|&i| i != label).collect()
    } else {
        options
            .features
            .iter()
            .map(|f| position(f))
            .collect::<Result<_, _>>()?
    };
    if Vec::<usize>::is_empty(&features) {
        return Err(malformed(
            path,
            None,
            None,
            "no feature columns besides the label".into(),
        ));
    }
    Ok(Columns { features, label })
}

/// A cell as a number; `None` for a missing one (empty, `NA`, `NaN`, `null`).
fn parse_cell(text: &str) -> Result<Option<f32>, String> {
    let t = text.trim();
    if t.is_empty() || ["na", "nan", "null", "none"].contains(&t.to_ascii_lowercase().as_str()) {
        return Ok(None);
    }
    match t.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(Some(v)),
        Ok(_) => Err(format!("{t:?} is not a finite number")),
        Err(_) => Err(format!("{t:?} is not a number")),
    }
}

/// Reads a CSV file with a header row.
pub fn read_csv(path: &Path, options: &TableOptions) -> Result<Table, DataError> {
    let file = checked_size(path, options.max_bytes)?;
    parse_csv(file, &path.display().to_string(), options)
}

/// Parses CSV text from `input` (at most `options.max_bytes` of it) as
/// [`read_csv`] does; `name` names the source in errors.
pub fn parse_csv(
    input: impl std::io::Read,
    name: &str,
    options: &TableOptions,
) -> Result<Table, DataError> {
    let name = name.to_string();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(input.take(options.max_bytes));
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(&name, e))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if header.iter().all(String::is_empty) {
        return Err(malformed(
            &name,
            None,
            None,
            "empty file: no header row".into(),
        ));
    }
    let columns = pick_columns(&name, &header, options)?;
    let mut table = empty_table(&name, &header, &columns);
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(&name, e))?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        for &c in &columns.features {
            let value = parse_cell(&record[c])
                .map_err(|reason| malformed(&name, Some(line), Some(&header[c]), reason))?;
            table.features.push(value.unwrap_or(f32::NAN));
        }
        push_label(&mut table, &record[columns.label], options.regression)
            .map_err(|reason| malformed(&name, Some(line), Some(&header[columns.label]), reason))?;
    }
    finish(table, options)
}

fn csv_error(path: &str, e: csv::Error) -> DataError {
    let line = e.position().map(|p| p.line() as usize);
    let reason = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields where the header has {expected_len} (a ragged row)"),
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".into(),
        csv::ErrorKind::Io(io) => io.to_string(),
        _ => e.to_string(),
    };
    malformed(path, line, None, reason)
}

fn empty_table(path: &str, header: &[String], columns: &Columns) -> Table {
    Table {
        path: path.to_string(),
        feature_names: columns
            .features
            .iter()
            .map(|&c| header[c].clone())
            .collect(),
        features: Vec::new(),
        labels: Vec::new(),
        targets: Vec::new(),
        label_name: header[columns.label].clone(),
    }
}

fn push_label(table: &mut Table, text: &str, regression: bool) -> Result<(), String> {
    if regression {
        let target = parse_cell(text)?.ok_or("the target is missing")?;
        table.targets.push(target);
    } else {
        let label = text.trim();
        if label.is_empty() {
            return Err("the label is missing".into());
        }
        table.labels.push(label.to_string());
    }
    Ok(())
}

/// Checks the table has rows and fills or refuses missing cells.
fn finish(mut table: Table, options: &TableOptions) -> Result<Table, DataError> {
    if table.is_empty() {
        return Err(malformed(
            &table.path,
            None,
            None,
            "no data rows after the header".into(),
        ));
    }
    let f = table.feature_names.len();
    let means = column_means(&table.features, f);
    for (i, v) in table.features.iter_mut().enumerate() {
        if !v.is_nan() {
            continue;
        }
        let (row, col) = (i / f, i % f);
        *v = match options.missing {
            MissingValues::Refuse => {
                return Err(malformed(
                    &table.path,
                    Some(row + 1),
                    Some(&table.feature_names[col]),
                    "missing value (set a missing-value rule to fill it: mean or zero)".into(),
                ))
            }
            MissingValues::FillMean => means[col],
            MissingValues::FillZero => 0.0,
        };
    }
    Ok(table)
}

fn column_means(features: &[f32], f: usize) -> Vec<f32> {
    let mut sums = vec![(0f64, 0usize); f];
    for row in features.chunks(f.max(1)) {
        for (s, v) in sums.iter_mut().zip(row) {
            if !v.is_nan() {
                s.0 += f64::from(*v);
                s.1 += 1;
            }
        }
    }
    sums.iter()
        .map(|(s, n)| {
            if *n == 0 {
                0.0
            } else {
                (*s / *n as f64) as f32
            }
        })
        .collect()
}

/// Reads a Parquet file: feature columns of numeric type (INT32, INT64,
/// FLOAT, DOUBLE, BOOLEAN), the label of numeric or UTF-8 type.
///
/// The `parquet` crate panics on some malformed files (fuzzing found column
/// chunks with negative offsets: "column start and length should not be
/// negative"); such a panic is this file's error, not the node's.
pub fn read_parquet(path: &Path, options: &TableOptions) -> Result<Table, DataError> {
    let file = checked_size(path, options.max_bytes)?;
    parse_parquet(file, &path.display().to_string(), options)
}

/// Parses a Parquet file held by `input` (a file, or its bytes in memory) as
/// [`read_parquet`] does, the crate's panics included; `name` names it in errors.
pub fn parse_parquet<R: ChunkReader + 'static>(
    input: R,
    name: &str,
    options: &TableOptions,
) -> Result<Table, DataError> {
    let guarded = std::panic::AssertUnwindSafe(|| parse_parquet_unguarded(input, name, options));
    std::panic::catch_unwind(guarded).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let reason = format!("not a readable Parquet file: the reader failed on it ({what})");
        Err(malformed(name, None, None, reason))
    })
}

/// Refuses a dictionary page that claims more values than its bytes can
/// hold: the parquet crate sizes the decoded dictionary from the claim, and
/// fuzzing found a 7 KB file that made it fill 3 GB. Reads every page once
/// (a dictionary page may come anywhere in a damaged column chunk).
fn check_dictionaries<R: ChunkReader + 'static>(
    reader: &SerializedFileReader<R>,
    name: &str,
) -> Result<(), DataError> {
    let bad = |e: parquet::errors::ParquetError| malformed(name, None, None, e.to_string());
    for g in 0..reader.metadata().num_row_groups() {
        let group = reader.get_row_group(g).map_err(bad)?;
        for c in 0..group.num_columns() {
            let descr = group.metadata().column(c).column_descr_ptr();
            let min_bits = min_value_bits(descr.physical_type(), descr.type_length());
            let mut pages = group.get_column_page_reader(c).map_err(bad)?;
            while let Some(page) = pages.get_next_page().map_err(bad)? {
                let Page::DictionaryPage {
                    buf, num_values, ..
                } = page
                else {
                    continue;
                };
                if u64::from(num_values) * min_bits > buf.len() as u64 * 8 {
                    let reason = format!(
                        "a dictionary page claims {num_values} values in {} bytes",
                        buf.len()
                    );
                    return Err(malformed(name, None, Some(descr.name()), reason));
                }
            }
        }
    }
    Ok(())
}

/// The fewest bits one PLAIN-encoded value of a physical type takes.
fn min_value_bits(physical: PhysicalType, type_length: i32) -> u64 {
    match physical {
        PhysicalType::BOOLEAN => 1,
        PhysicalType::INT32 | PhysicalType::FLOAT | PhysicalType::BYTE_ARRAY => 32,
        PhysicalType::INT64 | PhysicalType::DOUBLE => 64,
        PhysicalType::INT96 => 96,
        PhysicalType::FIXED_LEN_BYTE_ARRAY => u64::try_from(type_length).unwrap_or(0).max(1) * 8,
    }
}

fn parse_parquet_unguarded<R: ChunkReader + 'static>(
    input: R,
    name: &str,
    options: &TableOptions,
) -> Result<Table, DataError> {
    let name = name.to_string();
    let reader = SerializedFileReader::new(input).map_err(|e| {
        malformed(
            &name,
            None,
            None,
            format!("not a readable Parquet file: {e}"),
        )
    })?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let header: Vec<String> = schema
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let columns = pick_columns(&name, &header, options)?;
    for &c in &columns.features {
        let physical = schema.column(c).physical_type();
        if !is_numeric(physical) {
            return Err(malformed(&name, None, Some(&header[c]), format!("type {physical} is not numeric; feature columns must be INT32, INT64, FLOAT, DOUBLE or BOOLEAN")));
        }
    }
    let rows = reader.metadata().file_metadata().num_rows();
    let cells = u64::try_from(rows)
        .unwrap_or(u64::MAX)
        .saturating_mul(header.len() as u64);
    if cells.saturating_mul(4) > options.max_bytes {
        return Err(DataError::TooLarge {
            path: name,
            announced_bytes: cells.saturating_mul(4),
            limit_bytes: options.max_bytes,
        });
    }
    check_dictionaries(&reader, &name)?;
    let mut table = empty_table(&name, &header, &columns);
    let iter = reader
        .get_row_iter(None)
        .map_err(|e| malformed(&name, None, None, e.to_string()))?;
    for (r, row) in iter.enumerate() {
        let row = row.map_err(|e| malformed(&name, Some(r + 1), None, e.to_string()))?;
        let fields: Vec<&Field> = row.get_column_iter().map(|(_, f)| f).collect();
        for &c in &columns.features {
            let value = field_number(fields.get(c).copied())
                .map_err(|reason| malformed(&name, Some(r + 1), Some(&header[c]), reason))?;
            table.features.push(value.unwrap_or(f32::NAN));
        }
        let label = field_text(fields.get(columns.label).copied());
        push_label(&mut table, &label, options.regression).map_err(|reason| {
            malformed(&name, Some(r + 1), Some(&header[columns.label]), reason)
        })?;
    }
    finish(table, options)
}

fn is_numeric(t: PhysicalType) -> bool {
    matches!(
        t,
        PhysicalType::INT32
            | PhysicalType::INT64
            | PhysicalType::FLOAT
            | PhysicalType::DOUBLE
            | PhysicalType::BOOLEAN
    )
}

fn field_number(field: Option<&Field>) -> Result<Option<f32>, String> {
    let value = match field {
        None | Some(Field::Null) => return Ok(None),
        Some(Field::Bool(b)) => f32::from(u8::from(*b)),
        Some(Field::Byte(v)) => f32::from(*v),
        Some(Field::Short(v)) => f32::from(*v),
        Some(Field::Int(v)) => *v as f32,
        Some(Field::Long(v)) => *v as f32,
        Some(Field::UByte(v)) => f32::from(*v),
        Some(Field::UShort(v)) => f32::from(*v),
        Some(Field::UInt(v)) => *v as f32,
        Some(Field::ULong(v)) => *v as f32,
        Some(Field::Float(v)) => *v,
        Some(Field::Double(v)) => *v as f32,
        Some(other) => return Err(format!("{other} is not a number")),
    };
    if value.is_finite() {
        Ok(Some(value))
    } else {
        Ok(None)
    }
}

fn field_text(field: Option<&Field>) -> String {
    match field {
        None | Some(Field::Null) => String::new(),
        Some(Field::Str(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Writes `table` as a Parquet file (DOUBLE features; the label as UTF-8
/// text, or DOUBLE for regression), so tools and tests can make Parquet
/// shards of the mesh's own tables.
pub fn write_parquet(table: &Table, path: &Path) -> Result<(), DataError> {
    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use std::sync::Arc;

    let err = |e: parquet::errors::ParquetError| {
        malformed(&path.display().to_string(), None, None, e.to_string())
    };
    let regression = table.labels.is_empty();
    let mut message = String::from("message table {\n");
    for name in &table.feature_names {
        message.push_str(&format!("  REQUIRED DOUBLE {};\n", quote_name(name)));
    }
    let label_type = if regression { "DOUBLE" } else { "BYTE_ARRAY" };
    let annotation = if regression { "" } else { " (UTF8)" };
    message.push_str(&format!(
        "  REQUIRED {label_type} {}{annotation};\n}}",
        quote_name(&table.label_name)
    ));
    let schema = Arc::new(parse_message_type(&message).map_err(err)?);
    let file = File::create(path).map_err(|source| DataError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut writer =
        SerializedFileWriter::new(file, schema, Arc::new(WriterProperties::builder().build()))
            .map_err(err)?;
    let mut group = writer.next_row_group().map_err(err)?;
    let f = table.feature_names.len();
    for c in 0..f {
        let column: Vec<f64> = table
            .features
            .chunks(f)
            .map(|row| f64::from(row[c]))
            .collect();
        let mut w = group.next_column().map_err(err)?.ok_or_else(|| {
            DataError::InvalidParameter("parquet schema has too few columns".into())
        })?;
        w.typed::<DoubleType>()
            .write_batch(&column, None, None)
            .map_err(err)?;
        w.close().map_err(err)?;
    }
    let mut w = group
        .next_column()
        .map_err(err)?
        .ok_or_else(|| DataError::InvalidParameter("parquet schema has no label column".into()))?;
    if regression {
        let column: Vec<f64> = table.targets.iter().map(|&t| f64::from(t)).collect();
        w.typed::<DoubleType>()
            .write_batch(&column, None, None)
            .map_err(err)?;
    } else {
        let column: Vec<ByteArray> = table
            .labels
            .iter()
            .map(|l| ByteArray::from(l.as_str()))
            .collect();
        w.typed::<ByteArrayType>()
            .write_batch(&column, None, None)
            .map_err(err)?;
    }
    w.close().map_err(err)?;
    group.close().map_err(err)?;
    writer.close().map_err(err)?;
    Ok(())
}

/// Column names as the Parquet schema parser takes them (letters, digits, `_`).
fn quote_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn csv_file(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        path
    }

    fn read(text: &str) -> Result<Table, DataError> {
        let dir = tempfile::tempdir().unwrap();
        read_csv(&csv_file(&dir, "t.csv", text), &TableOptions::default())
    }

    #[test]
    fn a_csv_table_reads_features_and_labels() {
        let t = read("a,b,label\n1,2,cat\n3,4.5,dog\n").unwrap();
        assert_eq!(t.feature_names, ["a", "b"]);
        assert_eq!(t.features, [1.0, 2.0, 3.0, 4.5]);
        let classes = class_order(&t.labels);
        assert_eq!(classes, ["cat", "dog"]);
        let d = t.into_dataset(&classes).unwrap();
        assert_eq!(d.labels, [0, 1]);
        assert_eq!(
            d.schema().to_string(),
            "2 columns, classification into 2 classes"
        );
    }

    #[test]
    fn integer_classes_sort_by_number_not_text() {
        let t = read("x,label\n1,10\n2,9\n3,2\n").unwrap();
        assert_eq!(class_order(&t.labels), ["2", "9", "10"]);
    }

    #[test]
    fn bad_cells_name_the_file_row_and_column() {
        let err = read("a,b,label\n1,2,0\n3,oops,1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("t.csv: row 3, column \"b\": \"oops\" is not a number"),
            "{err}"
        );
        let err = read("a,b,label\n1,2,0\n3,1\n").unwrap_err().to_string();
        assert!(err.contains("row 3") && err.contains("ragged"), "{err}");
        let err = read("").unwrap_err().to_string();
        assert!(err.contains("empty file"), "{err}");
        let err = read("a,label\n").unwrap_err().to_string();
        assert!(err.contains("no data rows"), "{err}");
        let err = read("a,b\n1,2\n").unwrap_err().to_string();
        assert!(err.contains("column \"label\": no such column"), "{err}");
        let err = read("a,b,label\n1,,0\n").unwrap_err().to_string();
        assert!(err.contains("row 1, column \"b\": missing value"), "{err}");
    }

    #[test]
    fn missing_values_are_filled_by_the_configured_rule() {
        let dir = tempfile::tempdir().unwrap();
        let path = csv_file(&dir, "t.csv", "a,label\n1,0\nNA,1\n3,0\n");
        let options = TableOptions {
            missing: MissingValues::FillMean,
            ..TableOptions::default()
        };
        assert_eq!(read_csv(&path, &options).unwrap().features, [1.0, 2.0, 3.0]);
    }

    #[test]
    fn a_file_over_the_limit_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.csv");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(10 * (1 << 30)).unwrap();
        let err = read_csv(&path, &TableOptions::default()).unwrap_err();
        assert!(matches!(err, DataError::TooLarge { .. }), "{err}");
        let err = read_parquet(&path, &TableOptions::default()).unwrap_err();
        assert!(matches!(err, DataError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn regression_targets_are_numbers_with_deciles_for_partitioning() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from("x,target\n");
        for i in 0..20 {
            text.push_str(&format!("{i},{}\n", i * 10));
        }
        let options = TableOptions {
            label: "target".into(),
            regression: true,
            ..TableOptions::default()
        };
        let t = read_csv(&csv_file(&dir, "r.csv", &text), &options).unwrap();
        let d = t.into_dataset(&[]).unwrap();
        assert!(d.is_regression());
        assert_eq!(d.targets[19], 190.0);
        assert_eq!((d.labels[0], d.labels[19]), (0, 9));
    }

    #[test]
    fn parquet_round_trips_and_wrong_types_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let t = read("a,b,label\n1,2,cat\n3,4.5,dog\n").unwrap();
        let path = dir.path().join("t.parquet");
        write_parquet(&t, &path).unwrap();
        let back = read_parquet(&path, &TableOptions::default()).unwrap();
        assert_eq!(back.features, t.features);
        assert_eq!(back.labels, t.labels);
        // The label column is text: as a feature it is the wrong type.
        let options = TableOptions {
            label: "a".into(),
            ..TableOptions::default()
        };
        let err = read_parquet(&path, &options).unwrap_err().to_string();
        assert!(
            err.contains("column \"label\": type BYTE_ARRAY is not numeric"),
            "{err}"
        );
        let junk = csv_file(&dir, "junk.parquet", "not parquet at all");
        let err = read_parquet(&junk, &TableOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a readable Parquet file"), "{err}");
    }

    /// Found by fuzzing: a file whose column chunk has a negative offset
    /// made the parquet crate panic when it reached the column. The input is
    /// made here: a valid file whose first column's dictionary page offset
    /// (4, right after the magic; zigzag varint 0x08 after a field header
    /// 0x26 in the footer's thrift) is patched to -4 (0x07).
    #[test]
    fn a_parquet_file_the_reader_panics_on_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let csv = csv_file(&dir, "t.csv", "a,label\n1,x\n2,y\n1,x\n");
        let table = read_csv(&csv, &TableOptions::default()).unwrap();
        let path = dir.path().join("negative-column-offset.parquet");
        write_parquet(&table, &path).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let footer_len =
            u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap());
        let footer_start = bytes.len() - 8 - footer_len as usize;
        let at = bytes[footer_start..]
            .windows(2)
            .position(|w| w == [0x26, 0x08])
            .expect("the first column's dictionary page offset in the footer")
            + footer_start;
        bytes[at + 1] = 0x07;
        std::fs::write(&path, &bytes).unwrap();
        let err = read_parquet(&path, &TableOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not a readable Parquet file: the reader failed"),
            "{err}"
        );
        assert!(err.contains("should not be negative"), "{err}");
        assert!(err.contains("negative-column-offset.parquet"), "{err}");
    }

    /// Found by fuzzing: a 7 KB file whose dictionary page claims hundreds
    /// of millions of values made the parquet crate fill 3 GB decoding it.
    #[test]
    fn a_dictionary_page_claiming_more_values_than_its_bytes_is_refused() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus/parquet/regression-dictionary-claims-too-many-values");
        let err = read_parquet(&file, &TableOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("a dictionary page claims"), "{err}");
    }

    proptest! {
        #[test]
        fn arbitrary_csv_text_never_panics(text in "[a-c0-9,.\\n\"NA -]{0,200}") {
            let _ = read(&text);
        }

        #[test]
        fn arbitrary_parquet_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("p.parquet");
            std::fs::write(&path, &bytes).unwrap();
            let _ = read_parquet(&path, &TableOptions::default());
        }
    }
}
