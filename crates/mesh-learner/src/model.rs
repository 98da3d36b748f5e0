//! [`LearnerModel`]: mesh-federated's [`Model`] trait over a supervised
//! learner, for a job whose model is the learner's. The node's round code
//! treats it like any other model: it sets the global parameters, trains,
//! reads the trained parameters back, evaluates. The data argument is not
//! used: the learner holds its own data, and the sample count of its reply
//! is the update's weight.

use mesh_federated::data::Dataset;
use mesh_federated::model::{
    initial_values, Evaluation, Model, ModelError, ParameterInfo, TrainOptions, TrainReport,
};
use serde_json::{Map, Value};

use crate::layout;
use crate::reply::finite_metric;
use crate::supervisor::{lock, SharedLearner};

/// Seed of the parameters a model holds before the first `set_parameters`
/// (the round code always sets the global model before training).
const PLACEHOLDER_SEED: u64 = 0;

/// A model whose training and evaluation run in the user's learner.
pub struct LearnerModel {
    learner: SharedLearner,
    layout: Vec<ParameterInfo>,
    parameters: Vec<f32>,
}

impl std::fmt::Debug for LearnerModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LearnerModel")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

/// The fit config a learner receives for `options`.
pub fn fit_config(options: &TrainOptions) -> Map<String, Value> {
    let mut config = Map::new();
    config.insert("epochs".into(), options.epochs.into());
    config.insert("batch_size".into(), options.batch_size.into());
    config.insert(
        "learning_rate".into(),
        f64::from(options.learning_rate).into(),
    );
    config.insert("proximal_mu".into(), f64::from(options.proximal_mu).into());
    config.insert("seed".into(), options.seed.into());
    config
}

impl LearnerModel {
    /// A model with the job's `layout` that trains through `learner`.
    pub fn new(learner: SharedLearner, layout: Vec<ParameterInfo>) -> Result<Self, ModelError> {
        layout::validate(&layout)
            .map_err(|e| ModelError::InvalidOption(format!("learner model: {e}")))?;
        Ok(Self {
            learner,
            parameters: initial_values(&layout, PLACEHOLDER_SEED),
            layout,
        })
    }
}

fn backend(err: crate::LearnerError) -> ModelError {
    ModelError::Learner(err.to_string())
}

impl Model for LearnerModel {
    fn parameter_count(&self) -> usize {
        self.parameters.len()
    }

    fn parameters(&self) -> Vec<f32> {
        self.parameters.clone()
    }

    fn set_parameters(&mut self, parameters: &[f32]) -> Result<(), ModelError> {
        if parameters.len() != self.parameters.len() {
            return Err(ModelError::ParameterCount {
                expected: self.parameters.len(),
                found: parameters.len(),
            });
        }
        if let Some(index) = parameters.iter().position(|v| !v.is_finite()) {
            return Err(ModelError::NonFinite { index });
        }
        self.parameters.copy_from_slice(parameters);
        Ok(())
    }

    fn train(
        &mut self,
        _data: &Dataset,
        options: &TrainOptions,
    ) -> Result<TrainReport, ModelError> {
        options.validate()?;
        let outcome = lock(&self.learner)
            .fit(&self.layout, &self.parameters, fit_config(options))
            .map_err(backend)?;
        self.parameters = outcome.parameters.clone();
        let steps = finite_metric(&outcome.metrics, "steps").map_or(0, |s| s.max(0.0) as usize);
        Ok(TrainReport {
            steps,
            mean_loss: outcome.loss().unwrap_or(0.0) as f32,
            samples: usize::try_from(outcome.num_examples).unwrap_or(usize::MAX),
        })
    }

    fn evaluate(&self, _data: &Dataset) -> Result<Evaluation, ModelError> {
        let outcome = lock(&self.learner)
            .evaluate(&self.layout, &self.parameters, Map::new())
            .map_err(backend)?;
        let fraction =
            |name| finite_metric(&outcome.metrics, name).filter(|v| (0.0..=1.0).contains(v));
        let number = |name| finite_metric(&outcome.metrics, name).map(|v| v as f32);
        Ok(Evaluation {
            loss: outcome.loss as f32,
            accuracy: outcome.accuracy().unwrap_or(0.0) as f32,
            macro_f1: fraction("macro_f1").unwrap_or(0.0) as f32,
            rmse: number("rmse"),
            r2: number("r2"),
            samples: usize::try_from(outcome.num_examples).unwrap_or(usize::MAX),
        })
    }

    fn parameter_layout(&self) -> Vec<ParameterInfo> {
        self.layout.clone()
    }
}
