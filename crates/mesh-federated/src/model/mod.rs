//! Models and local training.
//!
//! Federated learning only needs a few things from a model, so the rest of the
//! system sees the small [`Model`] trait: parameters as one flat `f32` vector,
//! local SGD training (with FedProx's proximal term as an option), evaluation,
//! and safetensors files. [`build`] makes a seeded model from a job's
//! [`ModelSpec`] (the layer language of mesh-spec) and [`DataSchema`]; the
//! burn network behind it lives in [`network`] and [`burn_model`].

pub mod burn_model;
pub mod network;
pub mod store;

use crate::data::Dataset;
use burn::tensor::Device;
use burn_model::BurnModel;
pub use mesh_spec::model::{parameter_layout, ModelSpec, ParameterInfo, Preset};
use mesh_spec::schema::DataSchema;
use network::LayerNet;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;

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
    /// The data does not fit the model's input or task.
    #[error("the model was built for {model}, the data is {data}")]
    DataMismatch {
        /// The model's schema, in words.
        model: String,
        /// The data's schema, in words.
        data: String,
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
    /// The job's external learner process failed or answered badly (its
    /// message says which call, and which parameter or frame).
    #[error("{0}")]
    Learner(String),
    /// Starting weights (a safetensors file) that do not fit the model.
    #[error("starting weights: {0}")]
    Weights(String),
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

/// How well a model does on a data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean loss: cross-entropy, or the squared error of standardized targets.
    pub loss: f32,
    /// Fraction of rows classified correctly (0 for regression).
    pub accuracy: f32,
    /// Macro-averaged F1 over the classes present in labels or predictions
    /// (0 for regression).
    pub macro_f1: f32,
    /// Root mean squared error in the target's units (regression).
    pub rmse: Option<f32>,
    /// Coefficient of determination R^2 (regression).
    pub r2: Option<f32>,
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

/// Builds the model `spec` describes for data of `schema`, with parameters
/// drawn from `seed` (He-uniform weights, zero-mean uniform biases, unit
/// scales), on the CPU backend. An external learner's spec has no layers to
/// build here: the node's learner runtime builds it.
pub fn build(
    spec: &ModelSpec,
    schema: &DataSchema,
    seed: u64,
) -> Result<Box<dyn Model>, ModelError> {
    let plan = spec
        .plan(&schema.input, schema.task.outputs())
        .map_err(|e| ModelError::Unsupported {
            kind: spec.to_string(),
            reason: e.to_string(),
        })?;
    let device = Device::flex().autodiff();
    let network = LayerNet::new(&plan, schema.input.image(), &device);
    let layout = parameter_layout(&plan);
    let mut model = BurnModel::new(network, device, schema.clone(), layout)?;
    let initial = initial_values(&model.parameter_layout(), seed);
    model.set_parameters(&initial)?;
    Ok(Box::new(model))
}

/// The job's initial parameters for a layout: what [`build`] starts from, and
/// what an external learner's job starts from on every node.
pub fn initial_values(layout: &[ParameterInfo], seed: u64) -> Vec<f32> {
    let shapes: Vec<Vec<usize>> = layout.iter().map(|p| p.shape.clone()).collect();
    let mut values = initial_parameters(&shapes, seed);
    let mut offset = 0;
    for p in layout {
        let n: usize = p.shape.iter().product();
        let fill = match p.name.rsplit('.').next() {
            Some("gamma") => Some(1.0),
            Some("beta") => Some(0.0),
            _ => None,
        };
        if let Some(v) = fill {
            values[offset..offset + n].fill(v);
        }
        offset += n;
    }
    values
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
        let mut model = build(&ModelSpec::Preset(Preset::Cnn), &train.schema(), 7).unwrap();
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
            let mut model = build(&ModelSpec::Preset(Preset::Mlp), &train.schema(), seed).unwrap();
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
            let mut model =
                build(&ModelSpec::Preset(Preset::Logistic), &train.schema(), 1).unwrap();
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
        let shape = DataSchema {
            input: mesh_spec::schema::InputShape::Table { features: 60 },
            task: crate::data::numbered_classes(10),
            normalization: None,
        };
        let mut model = build(&ModelSpec::Preset(Preset::Logistic), &shape, 0).unwrap();
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
        assert!(build(&ModelSpec::Preset(Preset::Cnn), &shape, 0).is_err());
        assert!("resnet".parse::<ModelSpec>().is_err());
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
        let shape = DataSchema {
            input: mesh_spec::schema::InputShape::Image {
                channels: 1,
                height: 28,
                width: 28,
            },
            task: crate::data::numbered_classes(10),
            normalization: None,
        };
        let model = build(&ModelSpec::Preset(Preset::Cnn), &shape, 0).unwrap();
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
