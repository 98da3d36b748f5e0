//! Models and local training.
//!
//! Federated learning only needs a few things from a model, so the rest of the
//! system sees the small [`Model`] trait: parameters as one flat `f32` vector,
//! local SGD training (with FedProx's proximal term as an option), evaluation,
//! and safetensors files. [`ModelKind::build`] makes a seeded model; the burn
//! networks behind it live in [`network`] and [`burn_model`].

pub mod burn_model;
pub mod network;
pub mod store;

use crate::data::Dataset;
use burn::tensor::Device;
use burn_model::BurnModel;
use network::{Cnn, Logistic, Mlp, Network};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::str::FromStr;

/// Errors from models. `Diverged` may go away with a smaller learning rate;
/// the others need different input.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A flat parameter vector of the wrong length.
    #[error("parameter vector has {found} values, the model has {expected}")]
    ParameterCount {
        /// Parameters of the model.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// A parameter is NaN or infinite.
    #[error("parameter {index} is not finite")]
    NonFinite {
        /// Index of the first bad value.
        index: usize,
    },
    /// The data does not fit the model's input or output size.
    #[error("data has {data_features} features and {data_classes} classes, the model takes {model_features} and {model_classes}")]
    DataMismatch {
        /// Model input size.
        model_features: usize,
        /// Model output size.
        model_classes: usize,
        /// Data feature count.
        data_features: usize,
        /// Data class count.
        data_classes: usize,
    },
    /// Training produced a non-finite loss (try a smaller learning rate).
    #[error("training diverged (loss {loss}); try a smaller learning rate")]
    Diverged {
        /// The loss seen.
        loss: f32,
    },
    /// A training option is out of range.
    #[error("invalid training option: {0}")]
    InvalidOption(String),
    /// The model kind cannot take this data (e.g. a CNN on non-image rows).
    #[error("model {kind} cannot take this data: {reason}")]
    Unsupported {
        /// The model kind.
        kind: String,
        /// Why.
        reason: String,
    },
    /// The tensor backend failed.
    #[error("tensor backend error: {0}")]
    Backend(String),
    /// A model file could not be read or written, or is malformed.
    #[error("model file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// Options of one local training run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainOptions {
    /// Passes over the local data.
    pub epochs: usize,
    /// Rows per SGD step.
    pub batch_size: usize,
    /// SGD step size.
    pub learning_rate: f32,
    /// FedProx proximal coefficient `mu` (0 = plain FedAvg local training).
    pub proximal_mu: f32,
    /// Seed of the shuffling order.
    pub seed: u64,
}

impl TrainOptions {
    /// Checks that every option is in range.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: &str| Err(ModelError::InvalidOption(m.to_string()));
        if self.epochs == 0 || self.epochs > 1000 {
            return bad("epochs must be in 1..=1000");
        }
        if self.batch_size == 0 {
            return bad("batch size must be at least 1");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad("learning rate must be positive");
        }
        if !(self.proximal_mu >= 0.0 && self.proximal_mu.is_finite()) {
            return bad("proximal mu must be >= 0");
        }
        Ok(())
    }
}

/// What a training run did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainReport {
    /// SGD steps taken.
    pub steps: usize,
    /// Mean training loss over all steps.
    pub mean_loss: f32,
    /// Rows of local data.
    pub samples: usize,
}

/// Loss and accuracy on a data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f32,
    /// Fraction of rows classified correctly.
    pub accuracy: f32,
    /// Rows evaluated.
    pub samples: usize,
}

/// What federated learning needs from a model.
pub trait Model: Send + fmt::Debug {
    /// Number of parameters (length of the flat vector).
    fn parameter_count(&self) -> usize;
    /// All parameters as one flat vector.
    fn parameters(&self) -> Vec<f32>;
    /// Replaces all parameters.
    fn set_parameters(&mut self, parameters: &[f32]) -> Result<(), ModelError>;
    /// Trains on local data.
    fn train(&mut self, data: &Dataset, options: &TrainOptions) -> Result<TrainReport, ModelError>;
    /// Evaluates on a data set.
    fn evaluate(&self, data: &Dataset) -> Result<Evaluation, ModelError>;
    /// Names and shapes of the parameter tensors, in flat-vector order.
    fn parameter_layout(&self) -> Vec<ParameterInfo>;
}

/// One parameter tensor of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterInfo {
    /// Module path, e.g. `conv1.weight`.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<usize>,
}

/// The models Agent Mesh can train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Multinomial logistic regression.
    Logistic,
    /// Two-hidden-layer perceptron.
    Mlp,
    /// Small CNN with two conv layers (image data only).
    Cnn,
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModelKind::Logistic => "logistic",
            ModelKind::Mlp => "mlp",
            ModelKind::Cnn => "cnn",
        })
    }
}

impl FromStr for ModelKind {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "logistic" | "logreg" => Ok(ModelKind::Logistic),
            "mlp" => Ok(ModelKind::Mlp),
            "cnn" => Ok(ModelKind::Cnn),
            _ => Err(ModelError::InvalidOption(format!(
                "unknown model {s:?}; expected logistic, mlp or cnn"
            ))),
        }
    }
}

/// Input and output sizes a model is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    /// Features per row.
    pub feature_count: usize,
    /// Number of classes.
    pub num_classes: usize,
    /// `[height, width]` for image data.
    pub image_shape: Option<[usize; 2]>,
}

impl ModelShape {
    /// The shape of a data set.
    pub fn of(data: &Dataset) -> Self {
        Self {
            feature_count: data.feature_count,
            num_classes: data.num_classes,
            image_shape: data.image_shape,
        }
    }
}

impl ModelKind {
    /// Builds a model with parameters drawn from `seed` (He-uniform weights, zero-mean
    /// uniform biases), on the CPU backend.
    pub fn build(&self, shape: ModelShape, seed: u64) -> Result<Box<dyn Model>, ModelError> {
        let device = Device::flex().autodiff();
        let (f, c) = (shape.feature_count, shape.num_classes);
        match self {
            ModelKind::Logistic => seeded(Logistic::new(f, c, &device), device, shape, seed),
            ModelKind::Mlp => seeded(Mlp::new(f, c, &device), device, shape, seed),
            ModelKind::Cnn => {
                let [h, w] = shape
                    .image_shape
                    .filter(|[h, w]| h * w == f && *h >= 12 && *w >= 12)
                    .ok_or_else(|| ModelError::Unsupported {
                        kind: self.to_string(),
                        reason: "needs single-channel images of at least 12x12".into(),
                    })?;
                seeded(Cnn::new(h, w, c, &device), device, shape, seed)
            }
        }
    }
}

fn seeded<N: Network>(
    network: N,
    device: Device,
    shape: ModelShape,
    seed: u64,
) -> Result<Box<dyn Model>, ModelError> {
    let mut model = BurnModel::new(network, device, shape.feature_count, shape.num_classes)?;
    let shapes: Vec<Vec<usize>> = model
        .parameter_layout()
        .into_iter()
        .map(|p| p.shape)
        .collect();
    let initial = initial_parameters(&shapes, seed);
    model.set_parameters(&initial)?;
    Ok(Box::new(model))
}

/// He-uniform initial values for parameters of the given shapes.
///
/// Linear weights are `[inputs, outputs]` (burn's layout) and conv weights
/// `[out, in, kh, kw]`; a bias takes the fan-in of the weight before it.
pub fn initial_parameters(shapes: &[Vec<usize>], seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(shapes.iter().map(|s| s.iter().product::<usize>()).sum());
    let mut fan_in = 1usize;
    for shape in shapes {
        let n: usize = shape.iter().product();
        let bound = match shape.len() {
            2 => {
                fan_in = shape[0];
                (6.0 / fan_in as f64).sqrt()
            }
            4 => {
                fan_in = shape[1..].iter().product();
                (6.0 / fan_in as f64).sqrt()
            }
            _ => 1.0 / (fan_in.max(1) as f64).sqrt(),
        };
        out.extend((0..n).map(|_| rng.random_range(-bound..=bound) as f32));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::data::Mnist;
    use std::path::Path;

    fn mnist() -> Mnist {
        Mnist::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist-10k")).unwrap()
    }

    fn options(seed: u64) -> TrainOptions {
        TrainOptions {
            epochs: 1,
            batch_size: 32,
            learning_rate: 0.05,
            proximal_mu: 0.0,
            seed,
        }
    }

    #[test]
    fn cnn_learns_mnist_in_one_epoch_on_a_subset() {
        let m = mnist();
        let train = m.train.subset(&(0..2000).collect::<Vec<_>>());
        let mut model = ModelKind::Cnn.build(ModelShape::of(&train), 7).unwrap();
        let before = model.evaluate(&m.test).unwrap();
        let report = model.train(&train, &options(1)).unwrap();
        let after = model.evaluate(&m.test).unwrap();
        assert_eq!(report.steps, 2000usize.div_ceil(32));
        assert!(
            before.accuracy < 0.3,
            "untrained accuracy {}",
            before.accuracy
        );
        assert!(after.accuracy > 0.85, "trained accuracy {}", after.accuracy);
        assert!(after.loss < before.loss);
    }

    #[test]
    fn same_seed_same_parameters_after_training() {
        let m = mnist();
        let train = m.train.subset(&(0..300).collect::<Vec<_>>());
        let run = |seed| {
            let mut model = ModelKind::Mlp.build(ModelShape::of(&train), seed).unwrap();
            model.train(&train, &options(seed)).unwrap();
            model.parameters()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn proximal_term_keeps_parameters_near_the_start() {
        let m = mnist();
        let train = m.train.subset(&(0..500).collect::<Vec<_>>());
        let distance = |mu| {
            let mut model = ModelKind::Logistic
                .build(ModelShape::of(&train), 1)
                .unwrap();
            let start = model.parameters();
            model
                .train(
                    &train,
                    &TrainOptions {
                        proximal_mu: mu,
                        ..options(1)
                    },
                )
                .unwrap();
            let end = model.parameters();
            start
                .iter()
                .zip(&end)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f32>()
                .sqrt()
        };
        assert!(distance(5.0) < 0.7 * distance(0.0));
    }

    #[test]
    fn bad_parameters_and_options_are_rejected() {
        let shape = ModelShape {
            feature_count: 60,
            num_classes: 10,
            image_shape: None,
        };
        let mut model = ModelKind::Logistic.build(shape, 0).unwrap();
        assert_eq!(model.parameter_count(), 610);
        assert!(matches!(
            model.set_parameters(&[0.0; 3]),
            Err(ModelError::ParameterCount {
                expected: 610,
                found: 3
            })
        ));
        let mut bad = vec![0.0; 610];
        bad[5] = f32::NAN;
        assert!(matches!(
            model.set_parameters(&bad),
            Err(ModelError::NonFinite { index: 5 })
        ));
        assert!(ModelKind::Cnn.build(shape, 0).is_err());
        assert!("resnet".parse::<ModelKind>().is_err());
        assert!(TrainOptions {
            batch_size: 0,
            ..options(0)
        }
        .validate()
        .is_err());
        assert!(TrainOptions {
            learning_rate: f32::NAN,
            ..options(0)
        }
        .validate()
        .is_err());
    }

    #[test]
    fn parameter_layout_names_every_tensor() {
        let shape = ModelShape {
            feature_count: 784,
            num_classes: 10,
            image_shape: Some([28, 28]),
        };
        let model = ModelKind::Cnn.build(shape, 0).unwrap();
        let layout = model.parameter_layout();
        let total: usize = layout
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum();
        assert_eq!(total, model.parameter_count());
        assert!(
            layout.iter().any(|p| p.name == "conv1.weight"),
            "{layout:?}"
        );
    }
}
