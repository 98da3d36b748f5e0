//! [`BurnModel`]: any burn [`Network`] behind the crate's [`Model`] trait.
//!
//! The model keeps its parameters twice: inside the burn module (for the
//! forward/backward pass) and as one flat `f32` vector (what federated learning
//! exchanges). Local training runs plain mini-batch SGD on the flat vector, which
//! makes FedProx's proximal term exact (`g + mu (w - w_global)`) and keeps every
//! update step deterministic given the seed.

use super::network::Network;
use super::{Evaluation, Model, ModelError, ParameterInfo, TrainOptions, TrainReport};
use crate::data::Dataset;
use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLoss;
use burn::tensor::Gradients;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Rows per forward pass during evaluation.
const EVAL_BATCH_ROWS: usize = 500;

/// A burn network with flat-parameter access.
#[derive(Debug)]
pub struct BurnModel<N: Network> {
    network: N,
    device: Device,
    flat: Vec<f32>,
    feature_count: usize,
    num_classes: usize,
}

impl<N: Network> BurnModel<N> {
    /// Wraps `network` (already on `device`, an autodiff device), keeping its parameters.
    pub fn new(
        network: N,
        device: Device,
        feature_count: usize,
        num_classes: usize,
    ) -> Result<Self, ModelError> {
        let mut collector = FlatCollector::values(0);
        network.visit(&mut collector);
        let flat = collector.finish()?;
        Ok(Self {
            network,
            device,
            flat,
            feature_count,
            num_classes,
        })
    }

    /// The parameter names and shapes, in the order of the flat vector.
    pub fn parameter_layout(&self) -> Vec<ParameterInfo> {
        let mut visitor = LayoutCollector::default();
        self.network.visit(&mut visitor);
        visitor.layout
    }

    fn check_data(&self, data: &Dataset) -> Result<(), ModelError> {
        if data.feature_count != self.feature_count || data.num_classes > self.num_classes {
            return Err(ModelError::DataMismatch {
                model_features: self.feature_count,
                model_classes: self.num_classes,
                data_features: data.feature_count,
                data_classes: data.num_classes,
            });
        }
        Ok(())
    }

    fn batch_tensors(&self, data: &Dataset, rows: &[usize]) -> (Tensor<2>, Tensor<1, Int>) {
        let mut features = Vec::with_capacity(rows.len() * self.feature_count);
        let mut labels = Vec::with_capacity(rows.len());
        for &r in rows {
            features.extend_from_slice(data.row(r));
            labels.push(i64::from(data.labels[r]));
        }
        let x = Tensor::from_data(
            TensorData::new(features, [rows.len(), self.feature_count]),
            &self.device,
        );
        let y = Tensor::from_data(TensorData::new(labels, [rows.len()]), &self.device);
        (x, y)
    }

    /// One SGD step on a batch; returns the batch loss.
    fn step(
        &mut self,
        data: &Dataset,
        rows: &[usize],
        options: &TrainOptions,
        anchor: &[f32],
    ) -> Result<f32, ModelError> {
        let (x, y) = self.batch_tensors(data, rows);
        let loss = CrossEntropyLoss::new(None, &self.device).forward(self.network.forward(x), y);
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
}

impl<N: Network> Model for BurnModel<N> {
    fn parameter_count(&self) -> usize {
        self.flat.len()
    }

    fn parameters(&self) -> Vec<f32> {
        self.flat.clone()
    }

    fn set_parameters(&mut self, parameters: &[f32]) -> Result<(), ModelError> {
        let expected = self.network.num_params();
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
        let mut order: Vec<usize> = (0..data.len()).collect();
        let (mut loss_sum, mut steps) = (0.0f64, 0usize);
        for _ in 0..options.epochs {
            order.shuffle(&mut rng);
            for rows in order.chunks(options.batch_size) {
                loss_sum += f64::from(self.step(data, rows, options, &anchor)?);
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
        let network = self.network.valid();
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        let rows: Vec<usize> = (0..data.len()).collect();
        for chunk in rows.chunks(EVAL_BATCH_ROWS) {
            let (x, _) = self.batch_tensors(data, chunk);
            let logits = to_vec(network.forward(x.inner()).into_data())?;
            for (i, &r) in chunk.iter().enumerate() {
                let row = &logits[i * self.num_classes..(i + 1) * self.num_classes];
                let (loss, predicted) = cross_entropy(row, usize::from(data.labels[r]));
                loss_sum += loss;
                correct += usize::from(predicted == usize::from(data.labels[r]));
            }
        }
        let n = data.len().max(1) as f64;
        Ok(Evaluation {
            loss: (loss_sum / n) as f32,
            accuracy: (correct as f64 / n) as f32,
            samples: data.len(),
        })
    }

    fn parameter_layout(&self) -> Vec<ParameterInfo> {
        BurnModel::parameter_layout(self)
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

/// Collects parameter names (module paths, from the visitor's enter/exit calls) and shapes.
#[derive(Default)]
struct LayoutCollector {
    path: Vec<String>,
    layout: Vec<ParameterInfo>,
}

impl ModuleVisitor for LayoutCollector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.layout.push(ParameterInfo {
            name: self.path.join("."),
            shape: param.val().shape().dims::<D>().to_vec(),
        });
    }
}
