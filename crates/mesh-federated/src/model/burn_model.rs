//! [`BurnModel`]: the planned [`LayerNet`] behind the crate's [`Model`] trait.
//!
//! The model keeps its parameters twice: inside the burn module (for the
//! forward/backward pass) and as one flat `f32` vector (what federated learning
//! exchanges). Local training runs plain mini-batch SGD on the flat vector, which
//! makes FedProx's proximal term exact (`g + mu (w - w_global)`) and keeps every
//! update step deterministic given the seed.

use super::network::LayerNet;
use super::{Evaluation, Model, ModelError, ParameterInfo, TrainOptions, TrainReport};
use crate::data::Dataset;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLoss;
use burn::tensor::Gradients;
use burn::tensor::{Device, Int, Tensor, TensorData};
use mesh_spec::schema::DataSchema;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Rows per forward pass during evaluation.
const EVAL_BATCH_ROWS: usize = 500;

/// A planned network with flat-parameter access.
#[derive(Debug)]
pub struct BurnModel {
    network: LayerNet,
    device: Device,
    flat: Vec<f32>,
    schema: DataSchema,
    layout: Vec<ParameterInfo>,
}

impl BurnModel {
    /// Wraps `network` (already on `device`, an autodiff device), keeping its
    /// parameters; `layout` names them (it must match the network's tensors).
    pub fn new(
        network: LayerNet,
        device: Device,
        schema: DataSchema,
        layout: Vec<ParameterInfo>,
    ) -> Result<Self, ModelError> {
        let mut collector = FlatCollector::values(0);
        network.visit(&mut collector);
        let flat = collector.finish()?;
        let declared: usize = layout
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum();
        if declared != flat.len() {
            return Err(ModelError::Backend(format!(
                "layout declares {declared} parameters, the network has {}",
                flat.len()
            )));
        }
        Ok(Self {
            network,
            device,
            flat,
            schema,
            layout,
        })
    }

    /// The parameter names and shapes, in the order of the flat vector.
    pub fn parameter_layout(&self) -> Vec<ParameterInfo> {
        self.layout.clone()
    }

    fn outputs(&self) -> usize {
        self.schema.task.outputs()
    }

    fn check_data(&self, data: &Dataset) -> Result<(), ModelError> {
        let fits = data.feature_count == self.schema.input.feature_count()
            && data.is_regression() == self.schema.task.is_regression()
            && (data.is_regression() || data.num_classes <= self.outputs());
        if !fits {
            return Err(ModelError::DataMismatch {
                model: self.schema.to_string(),
                data: data.schema().to_string(),
            });
        }
        Ok(())
    }

    fn features(&self, data: &Dataset, rows: &[usize]) -> Tensor<2> {
        let f = data.feature_count;
        let mut features = Vec::with_capacity(rows.len() * f);
        for &r in rows {
            features.extend_from_slice(data.row(r));
        }
        Tensor::from_data(TensorData::new(features, [rows.len(), f]), &self.device)
    }

    /// The batch loss: cross-entropy of class logits, or the mean squared
    /// error of (standardized) regression targets.
    fn loss(&self, data: &Dataset, rows: &[usize], rng: &mut ChaCha8Rng) -> Tensor<1> {
        let output = self.network.forward(self.features(data, rows), Some(rng));
        if data.is_regression() {
            let targets: Vec<f32> = rows.iter().map(|&r| data.targets[r]).collect();
            let y = Tensor::from_data(TensorData::new(targets, [rows.len(), 1]), &self.device);
            let diff = output - y;
            (diff.clone() * diff).mean()
        } else {
            let labels: Vec<i64> = rows.iter().map(|&r| i64::from(data.labels[r])).collect();
            let y: Tensor<1, Int> =
                Tensor::from_data(TensorData::new(labels, [rows.len()]), &self.device);
            CrossEntropyLoss::new(None, &self.device).forward(output, y)
        }
    }

    /// One SGD step on a batch; returns the batch loss.
    fn step(
        &mut self,
        data: &Dataset,
        rows: &[usize],
        options: &TrainOptions,
        anchor: &[f32],
        rng: &mut ChaCha8Rng,
    ) -> Result<f32, ModelError> {
        let loss = self.loss(data, rows, rng);
        let loss_value = scalar(&loss)?;
        if !loss_value.is_finite() {
            return Err(ModelError::Diverged { loss: loss_value });
        }
        let grads = loss.backward();
        let mut collector = FlatCollector::gradients(&grads, self.flat.len());
        self.network.visit(&mut collector);
        let gradient = collector.finish()?;
        let (lr, mu) = (options.learning_rate, options.proximal_mu);
        for ((w, g), w0) in self.flat.iter_mut().zip(&gradient).zip(anchor) {
            *w -= lr * (g + mu * (*w - w0));
        }
        self.push_flat();
        Ok(loss_value)
    }

    /// Copies the flat vector into the burn module.
    fn push_flat(&mut self) {
        let mut mapper = Assigner {
            flat: &self.flat,
            offset: 0,
            device: self.device.clone(),
        };
        self.network = self.network.clone().map(&mut mapper);
    }

    /// Every row's output, `outputs()` values per row, in evaluation mode.
    fn predict(&self, data: &Dataset) -> Result<Vec<f32>, ModelError> {
        let network = self.network.valid();
        let rows: Vec<usize> = (0..data.len()).collect();
        let mut out = Vec::with_capacity(data.len() * self.outputs());
        for chunk in rows.chunks(EVAL_BATCH_ROWS) {
            let x = self.features(data, chunk);
            out.extend(to_vec(network.forward(x.inner(), None).into_data())?);
        }
        Ok(out)
    }
}

impl Model for BurnModel {
    fn parameter_count(&self) -> usize {
        self.flat.len()
    }

    fn parameters(&self) -> Vec<f32> {
        self.flat.clone()
    }

    fn set_parameters(&mut self, parameters: &[f32]) -> Result<(), ModelError> {
        let expected = self.flat.len();
        if parameters.len() != expected {
            return Err(ModelError::ParameterCount {
                expected,
                found: parameters.len(),
            });
        }
        if let Some(index) = parameters.iter().position(|p| !p.is_finite()) {
            return Err(ModelError::NonFinite { index });
        }
        self.flat = parameters.to_vec();
        self.push_flat();
        Ok(())
    }

    fn train(&mut self, data: &Dataset, options: &TrainOptions) -> Result<TrainReport, ModelError> {
        self.check_data(data)?;
        options.validate()?;
        let anchor = self.flat.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        let mut dropout_rng = ChaCha8Rng::seed_from_u64(options.seed ^ 0xD20F);
        let mut order: Vec<usize> = (0..data.len()).collect();
        let (mut loss_sum, mut steps) = (0.0f64, 0usize);
        for _ in 0..options.epochs {
            order.shuffle(&mut rng);
            for rows in order.chunks(options.batch_size) {
                loss_sum += f64::from(self.step(data, rows, options, &anchor, &mut dropout_rng)?);
                steps += 1;
            }
        }
        Ok(TrainReport {
            steps,
            mean_loss: if steps == 0 {
                0.0
            } else {
                (loss_sum / steps as f64) as f32
            },
            samples: data.len(),
        })
    }

    fn evaluate(&self, data: &Dataset) -> Result<Evaluation, ModelError> {
        self.check_data(data)?;
        let outputs = self.predict(data)?;
        if data.is_regression() {
            return Ok(regression_metrics(data, &outputs));
        }
        Ok(classification_metrics(data, &outputs, self.outputs()))
    }

    fn parameter_layout(&self) -> Vec<ParameterInfo> {
        BurnModel::parameter_layout(self)
    }
}

/// Loss, accuracy and macro F1 of class logits.
fn classification_metrics(data: &Dataset, logits: &[f32], classes: usize) -> Evaluation {
    let mut loss_sum = 0.0f64;
    let mut confusion = vec![[0usize; 3]; classes]; // true positives, predicted, actual
    for (r, row) in logits.chunks(classes).enumerate() {
        let label = usize::from(data.labels[r]);
        let (loss, predicted) = cross_entropy(row, label);
        loss_sum += loss;
        confusion[predicted][1] += 1;
        confusion[label][2] += 1;
        if predicted == label {
            confusion[label][0] += 1;
        }
    }
    let correct: usize = confusion.iter().map(|c| c[0]).sum();
    let present: Vec<f64> = confusion
        .iter()
        .filter(|[_, p, a]| p + a > 0)
        .map(|[tp, p, a]| 2.0 * *tp as f64 / (p + a) as f64)
        .collect();
    let n = data.len().max(1) as f64;
    Evaluation {
        loss: (loss_sum / n) as f32,
        accuracy: (correct as f64 / n) as f32,
        macro_f1: (present.iter().sum::<f64>() / present.len().max(1) as f64) as f32,
        rmse: None,
        r2: None,
        samples: data.len(),
    }
}

/// Loss (standardized units), RMSE (target units) and R^2 of predictions.
fn regression_metrics(data: &Dataset, predictions: &[f32]) -> Evaluation {
    let n = data.len().max(1) as f64;
    let mean = data.targets.iter().map(|&t| f64::from(t)).sum::<f64>() / n;
    let (mut ss_res, mut ss_tot) = (0.0f64, 0.0f64);
    for (&p, &t) in predictions.iter().zip(&data.targets) {
        ss_res += (f64::from(p) - f64::from(t)).powi(2);
        ss_tot += (f64::from(t) - mean).powi(2);
    }
    let mse = ss_res / n;
    Evaluation {
        loss: mse as f32,
        accuracy: 0.0,
        macro_f1: 0.0,
        rmse: Some((mse.sqrt() * f64::from(data.target_std.unwrap_or(1.0))) as f32),
        r2: Some(if ss_tot > 0.0 {
            1.0 - ss_res / ss_tot
        } else {
            0.0
        } as f32),
        samples: data.len(),
    }
}

/// Softmax cross-entropy of one row of logits, and the arg-max class.
fn cross_entropy(logits: &[f32], label: usize) -> (f64, usize) {
    let mut predicted = 0;
    for (c, &v) in logits.iter().enumerate() {
        if v > logits[predicted] {
            predicted = c;
        }
    }
    let max = f64::from(logits[predicted]);
    let log_sum = logits
        .iter()
        .map(|&v| (f64::from(v) - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    (log_sum - f64::from(logits[label]), predicted)
}

fn to_vec(data: TensorData) -> Result<Vec<f32>, ModelError> {
    data.try_to_vec::<f32>()
        .map_err(|e| ModelError::Backend(format!("{e:?}")))
}

fn scalar(t: &Tensor<1>) -> Result<f32, ModelError> {
    to_vec(t.to_data())?
        .first()
        .copied()
        .ok_or_else(|| ModelError::Backend("empty loss tensor".into()))
}

/// Replaces every float parameter with the next slice of a flat vector.
struct Assigner<'a> {
    flat: &'a [f32],
    offset: usize,
    device: Device,
}

impl ModuleMapper for Assigner<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|tensor| {
            let shape = tensor.shape();
            let n = shape.num_elements();
            let values = self.flat[self.offset..self.offset + n].to_vec();
            self.offset += n;
            Tensor::from_data(TensorData::new(values, shape), &self.device).require_grad()
        })
    }
}

/// Collects every float parameter, or its gradient when `grads` is given, into
/// one flat vector in visiting order.
struct FlatCollector<'a> {
    grads: Option<&'a Gradients>,
    out: Vec<f32>,
    error: Option<ModelError>,
}

impl<'a> FlatCollector<'a> {
    fn values(capacity: usize) -> Self {
        Self {
            grads: None,
            out: Vec::with_capacity(capacity),
            error: None,
        }
    }

    fn gradients(grads: &'a Gradients, capacity: usize) -> Self {
        Self {
            grads: Some(grads),
            ..Self::values(capacity)
        }
    }

    fn finish(self) -> Result<Vec<f32>, ModelError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.out),
        }
    }
}

impl ModuleVisitor for FlatCollector<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let Some(grads) = self.grads else {
            match to_vec(value.into_data()) {
                Ok(v) => self.out.extend_from_slice(&v),
                Err(e) => self.error = Some(e),
            }
            return;
        };
        let n = value.shape().num_elements();
        match value.grad(grads).map(|g| to_vec(g.into_data())) {
            Some(Ok(g)) if g.len() == n => self.out.extend_from_slice(&g),
            Some(Err(e)) => self.error = Some(e),
            // A parameter that did not take part in the loss has a zero gradient.
            _ => self.out.extend(std::iter::repeat_n(0.0, n)),
        }
    }
}
