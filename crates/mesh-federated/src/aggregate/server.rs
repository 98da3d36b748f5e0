//! Server optimizers that apply an aggregated update (a pseudo-gradient pointing
//! downhill: the mean of local-minus-global deltas) to the global model: plain server
//! SGD with a server learning rate, and FedAdam / FedYogi (Reddi et al. 2021,
//! "Adaptive Federated Optimization", Algorithm 2).

use std::fmt;
use std::str::FromStr;

use super::spec::{ParseSpecError, Spec};
use super::AggregateError;

/// Which update rule a [`ServerOptimizer`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerOptimizerKind {
    /// `x += lr * delta` (with `lr = 1` this is plain FedAvg).
    Sgd,
    /// FedAdam: `v = b2 v + (1 - b2) delta^2`.
    Adam,
    /// FedYogi: `v = v - (1 - b2) delta^2 sign(v - delta^2)`.
    Yogi,
}

/// A stateful server optimizer. Parse with [`FromStr`]: `sgd`, `fedadam`, `fedyogi`,
/// optionally with `:lr=..,beta1=..,beta2=..,tau=..`.
///
/// Adaptive variants keep first and second moments `m`, `v` (allocated on the first
/// [`apply`](ServerOptimizer::apply), `v` starting at `tau^2`) and update
/// `x += lr * m / (sqrt(v) + tau)` without bias correction, as in the paper.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerOptimizer {
    kind: ServerOptimizerKind,
    /// Server learning rate `eta`.
    pub learning_rate: f32,
    /// First-moment decay `beta1`.
    pub beta1: f32,
    /// Second-moment decay `beta2`.
    pub beta2: f32,
    /// Adaptivity `tau` (the denominator's offset).
    pub tau: f32,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl ServerOptimizer {
    fn with_kind(kind: ServerOptimizerKind, learning_rate: f32) -> Self {
        Self {
            kind,
            learning_rate,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
            m: Vec::new(),
            v: Vec::new(),
        }
    }

    /// Plain server SGD with learning rate `learning_rate` (1.0 reproduces FedAvg).
    pub fn sgd(learning_rate: f32) -> Self {
        Self::with_kind(ServerOptimizerKind::Sgd, learning_rate)
    }

    /// FedAdam with `beta1 = 0.9`, `beta2 = 0.99`, `tau = 1e-3`.
    pub fn fedadam(learning_rate: f32) -> Self {
        Self::with_kind(ServerOptimizerKind::Adam, learning_rate)
    }

    /// FedYogi with `beta1 = 0.9`, `beta2 = 0.99`, `tau = 1e-3`.
    pub fn fedyogi(learning_rate: f32) -> Self {
        Self::with_kind(ServerOptimizerKind::Yogi, learning_rate)
    }

    /// The update rule.
    pub fn kind(&self) -> ServerOptimizerKind {
        self.kind
    }

    /// Forgets the moments (the next `apply` starts afresh).
    pub fn reset(&mut self) {
        self.m.clear();
        self.v.clear();
    }

    /// The first and second moments (empty before the first adaptive step), so
    /// another node can resume this optimizer from a committed model.
    pub fn moments(&self) -> (&[f32], &[f32]) {
        (&self.m, &self.v)
    }

    /// Resumes from moments that [`moments`](Self::moments) returned; both empty
    /// starts afresh. Fails if their lengths differ.
    pub fn restore_moments(&mut self, m: Vec<f32>, v: Vec<f32>) -> Result<(), AggregateError> {
        if m.len() != v.len() {
            return Err(AggregateError::DimensionMismatch {
                index: 1,
                expected: m.len(),
                found: v.len(),
            });
        }
        (self.m, self.v) = (m, v);
        Ok(())
    }

    /// Applies the aggregated update to `global` in place.
    ///
    /// Fails if the lengths differ, or if a dimension different from the previous
    /// call's reaches an adaptive optimizer (call [`reset`](Self::reset) first).
    pub fn apply(&mut self, global: &mut [f32], aggregated: &[f32]) -> Result<(), AggregateError> {
        let d = global.len();
        if aggregated.len() != d {
            return Err(AggregateError::DimensionMismatch {
                index: 0,
                expected: d,
                found: aggregated.len(),
            });
        }
        let lr = self.learning_rate;
        if self.kind == ServerOptimizerKind::Sgd {
            global
                .iter_mut()
                .zip(aggregated)
                .for_each(|(x, &g)| *x += lr * g);
            return Ok(());
        }
        if self.m.is_empty() {
            self.m = vec![0.0; d];
            self.v = vec![self.tau * self.tau; d];
        }
        if self.m.len() != d {
            return Err(AggregateError::DimensionMismatch {
                index: 0,
                expected: self.m.len(),
                found: d,
            });
        }
        let (b1, b2, tau, yogi) = (
            self.beta1,
            self.beta2,
            self.tau,
            self.kind == ServerOptimizerKind::Yogi,
        );
        for (((x, &g), m), v) in global
            .iter_mut()
            .zip(aggregated)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            *m = b1 * *m + (1.0 - b1) * g;
            let g2 = g * g;
            *v = if yogi {
                *v - (1.0 - b2) * g2 * (*v - g2).signum()
            } else {
                b2 * *v + (1.0 - b2) * g2
            };
            *x += lr * *m / (v.max(0.0).sqrt() + tau);
        }
        Ok(())
    }
}

impl fmt::Display for ServerOptimizer {
    /// Writes the name; the alternate form (`{:#}`) adds the hyper-parameters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.kind {
            ServerOptimizerKind::Sgd => "sgd",
            ServerOptimizerKind::Adam => "fedadam",
            ServerOptimizerKind::Yogi => "fedyogi",
        };
        f.write_str(name)?;
        if f.alternate() {
            write!(f, ":lr={}", self.learning_rate)?;
            if self.kind != ServerOptimizerKind::Sgd {
                write!(
                    f,
                    ",beta1={},beta2={},tau={}",
                    self.beta1, self.beta2, self.tau
                )?;
            }
        }
        Ok(())
    }
}

impl FromStr for ServerOptimizer {
    type Err = ParseSpecError;

    /// Defaults: `sgd` lr 1.0; `fedadam`/`fedyogi` lr 0.01.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut spec = Spec::parse(text)?;
        let mut opt = match spec.name.as_str() {
            "sgd" => Self::sgd(1.0),
            "fedadam" | "adam" => Self::fedadam(0.01),
            "fedyogi" | "yogi" => Self::fedyogi(0.01),
            _ => {
                return Err(ParseSpecError::UnknownName {
                    kind: "server optimizer",
                    name: spec.name,
                    expected: "sgd, fedadam, fedyogi",
                })
            }
        };
        let positive = |v: &f32| v.is_finite() && *v > 0.0;
        let unit = |v: &f32| (0.0..1.0).contains(v);
        opt.learning_rate = spec
            .take_checked("lr", positive, "must be finite and > 0")?
            .unwrap_or(opt.learning_rate);
        if opt.kind != ServerOptimizerKind::Sgd {
            opt.beta1 = spec
                .take_checked("beta1", unit, "must be in [0, 1)")?
                .unwrap_or(opt.beta1);
            opt.beta2 = spec
                .take_checked("beta2", unit, "must be in [0, 1)")?
                .unwrap_or(opt.beta2);
            opt.tau = spec
                .take_checked("tau", positive, "must be finite and > 0")?
                .unwrap_or(opt.tau);
        }
        spec.finish("lr (all); beta1, beta2, tau (fedadam, fedyogi)")?;
        Ok(opt)
    }
}
