//! Standardization of table features and regression targets.
//!
//! Raw table columns (areas in the thousands beside ratios below 1) train
//! badly, so features are standardized `(x - mean) / std` per column before a
//! model sees them. The statistics are either the job's
//! ([`Normalization`] in its data schema) or fitted on the node's own
//! training data with [`fit`]; they never leave the node. Regression targets
//! are standardized the same way, and errors are reported back in the
//! target's own units.

use super::{DataError, Dataset};
use mesh_spec::schema::Normalization;

/// Statistics of `data`'s features (and target), per column.
pub fn fit(data: &Dataset) -> Normalization {
    let (n, f) = (data.len(), data.feature_count);
    let mut sum = vec![0f64; f];
    let mut sum_sq = vec![0f64; f];
    for r in 0..n {
        for (c, &v) in data.row(r).iter().enumerate() {
            sum[c] += f64::from(v);
            sum_sq[c] += f64::from(v) * f64::from(v);
        }
    }
    let (feature_mean, feature_std) = (0..f).map(|c| moments(sum[c], sum_sq[c], n)).unzip();
    let (target_mean, target_std) = if data.targets.is_empty() {
        (0.0, 1.0)
    } else {
        let s: f64 = data.targets.iter().map(|&t| f64::from(t)).sum();
        let s2: f64 = data
            .targets
            .iter()
            .map(|&t| f64::from(t) * f64::from(t))
            .sum();
        let (m, sd) = moments(s, s2, n);
        (m, if sd > 0.0 { sd } else { 1.0 })
    };
    Normalization {
        feature_mean,
        feature_std,
        target_mean,
        target_std,
    }
}

/// Mean and population standard deviation from a sum and a sum of squares.
fn moments(sum: f64, sum_sq: f64, n: usize) -> (f32, f32) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let mean = sum / n as f64;
    let var = (sum_sq / n as f64 - mean * mean).max(0.0);
    (mean as f32, var.sqrt() as f32)
}

/// `data` standardized with `norm`: features `(x - mean) / std` (a zero
/// deviation leaves the centred column as it is) and targets likewise.
pub fn apply(norm: &Normalization, data: &Dataset) -> Result<Dataset, DataError> {
    let f = data.feature_count;
    if norm.feature_mean.len() != f || norm.feature_std.len() != f {
        return Err(DataError::InvalidParameter(format!(
            "normalization is for {} features, the data has {f}",
            norm.feature_mean.len()
        )));
    }
    let scale: Vec<f32> = norm
        .feature_std
        .iter()
        .map(|&s| if s > 0.0 { 1.0 / s } else { 1.0 })
        .collect();
    let mut out = data.clone();
    for row in out.features.chunks_mut(f.max(1)) {
        for ((v, m), k) in row.iter_mut().zip(&norm.feature_mean).zip(&scale) {
            *v = (*v - m) * k;
        }
    }
    for t in &mut out.targets {
        *t = (*t - norm.target_mean) / norm.target_std;
    }
    out.needs_standardizing = false;
    if !out.targets.is_empty() {
        out.target_std = Some(norm.target_std * data.target_std.unwrap_or(1.0));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mesh_spec::schema::Task;

    fn table(rows: &[[f32; 2]], targets: &[f32]) -> Dataset {
        Dataset {
            features: rows.iter().flatten().copied().collect(),
            labels: vec![0; rows.len()],
            feature_count: 2,
            num_classes: 10,
            image_shape: None,
            targets: targets.to_vec(),
            task: Task::Regression { target: "y".into() },
            needs_standardizing: true,
            target_std: None,
        }
    }

    #[test]
    fn standardized_columns_have_zero_mean_and_unit_deviation() {
        let data = table(&[[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]], &[10.0, 20.0, 30.0]);
        let norm = fit(&data);
        assert_eq!(norm.feature_mean, [3.0, 5.0]);
        assert_eq!(norm.feature_std[1], 0.0);
        let out = apply(&norm, &data).unwrap();
        let col0: Vec<f32> = (0..3).map(|r| out.row(r)[0]).collect();
        assert!((col0.iter().sum::<f32>()).abs() < 1e-6);
        assert!((col0.iter().map(|v| v * v).sum::<f32>() / 3.0 - 1.0).abs() < 1e-5);
        assert_eq!(
            out.row(0)[1],
            0.0,
            "a constant column is centred, not divided by 0"
        );
        assert!((out.targets[0] + out.targets[2]).abs() < 1e-6);
        assert!(!out.needs_standardizing);
    }

    #[test]
    fn a_normalization_for_other_data_is_refused() {
        let data = table(&[[1.0, 2.0]], &[1.0]);
        let mut norm = fit(&data);
        norm.feature_mean.push(0.0);
        assert!(apply(&norm, &data).is_err());
    }
}
