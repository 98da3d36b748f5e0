//! The `Synthetic(alpha, beta)` data set of FedProx (Li et al. 2020).
//!
//! Each device `k` has its own softmax-regression model and its own input
//! distribution: `u_k ~ N(0, alpha)`, `W_k, b_k ~ N(u_k, 1)`, `B_k ~ N(0, beta)`,
//! `v_k[j] ~ N(B_k, 1)`, `x ~ N(v_k, diag(j^-1.2))`, `y = argmax(W_k x + b_k)`.
//! `alpha` controls how much the models differ between devices, `beta` how much
//! the inputs do. Device sizes follow a log-normal law as in the paper's code.

use super::{DataError, Dataset};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Normal};

/// Input dimension used by FedProx.
pub const FEATURES: usize = 60;
/// Number of classes used by FedProx.
pub const CLASSES: usize = 10;

/// Parameters of the generator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticConfig {
    /// Variance of the per-device model mean (model heterogeneity).
    pub alpha: f64,
    /// Variance of the per-device input mean (feature heterogeneity).
    pub beta: f64,
    /// Number of devices.
    pub devices: usize,
    /// Median number of rows per device (sizes are log-normal around it).
    pub median_rows: usize,
    /// Seed of every random draw.
    pub seed: u64,
}

fn normal(mean: f64, std: f64) -> Result<Normal<f64>, DataError> {
    Normal::new(mean, std)
        .map_err(|e| DataError::InvalidParameter(format!("normal({mean}, {std}): {e}")))
}

/// Generates one data set per device.
pub fn generate(config: &SyntheticConfig) -> Result<Vec<Dataset>, DataError> {
    if !(config.alpha >= 0.0 && config.beta >= 0.0)
        || config.devices == 0
        || config.median_rows == 0
    {
        return Err(DataError::InvalidParameter(format!(
            "synthetic needs alpha >= 0, beta >= 0, devices > 0 and median_rows > 0, got {config:?}"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let sizes = LogNormal::new((config.median_rows as f64).ln(), 0.5)
        .map_err(|e| DataError::InvalidParameter(e.to_string()))?;
    let std_of_feature: Vec<f64> = (1..=FEATURES)
        .map(|j| (j as f64).powf(-1.2).sqrt())
        .collect();
    (0..config.devices)
        .map(|_| {
            let rows = (sizes.sample(&mut rng) as usize).clamp(10, 100 * config.median_rows);
            device(config, rows, &std_of_feature, &mut rng)
        })
        .collect()
}

fn device(
    config: &SyntheticConfig,
    rows: usize,
    std_of_feature: &[f64],
    rng: &mut ChaCha8Rng,
) -> Result<Dataset, DataError> {
    let u = normal(0.0, config.alpha.sqrt())?.sample(rng);
    let big_b = normal(0.0, config.beta.sqrt())?.sample(rng);
    let around_u = normal(u, 1.0)?;
    let weights: Vec<f64> = (0..CLASSES * FEATURES)
        .map(|_| around_u.sample(rng))
        .collect();
    let bias: Vec<f64> = (0..CLASSES).map(|_| around_u.sample(rng)).collect();
    let v_dist = normal(big_b, 1.0)?;
    let v: Vec<f64> = (0..FEATURES).map(|_| v_dist.sample(rng)).collect();
    let unit = normal(0.0, 1.0)?;
    let mut features = Vec::with_capacity(rows * FEATURES);
    let mut labels = Vec::with_capacity(rows);
    for _ in 0..rows {
        let x: Vec<f64> = (0..FEATURES)
            .map(|j| v[j] + std_of_feature[j] * unit.sample(rng))
            .collect();
        labels.push(argmax_class(&weights, &bias, &x));
        features.extend(x.iter().map(|&xi| xi as f32));
    }
    Ok(Dataset {
        features,
        labels,
        feature_count: FEATURES,
        num_classes: CLASSES,
        image_shape: None,
        targets: Vec::new(),
        task: super::numbered_classes(CLASSES),
        needs_standardizing: false,
        target_std: None,
    })
}

fn argmax_class(weights: &[f64], bias: &[f64], x: &[f64]) -> u8 {
    let mut best = (0usize, f64::NEG_INFINITY);
    for (c, b) in bias.iter().enumerate() {
        let row = &weights[c * FEATURES..(c + 1) * FEATURES];
        let logit = b + row.iter().zip(x).map(|(w, xi)| w * xi).sum::<f64>();
        if logit > best.1 {
            best = (c, logit);
        }
    }
    best.0 as u8
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(seed: u64) -> SyntheticConfig {
        SyntheticConfig {
            alpha: 1.0,
            beta: 1.0,
            devices: 5,
            median_rows: 50,
            seed,
        }
    }

    #[test]
    fn generates_devices_with_valid_rows_and_is_seeded() {
        let a = generate(&config(3)).unwrap();
        assert_eq!(a.len(), 5);
        for d in &a {
            assert_eq!(d.features.len(), d.len() * FEATURES);
            assert!(d.labels.iter().all(|&l| (l as usize) < CLASSES));
        }
        assert_eq!(a, generate(&config(3)).unwrap());
        assert_ne!(a, generate(&config(4)).unwrap());
    }

    #[test]
    fn rejects_bad_parameters() {
        let mut c = config(0);
        c.alpha = -1.0;
        assert!(generate(&c).is_err());
        c.alpha = 0.0;
        c.devices = 0;
        assert!(generate(&c).is_err());
    }
}
