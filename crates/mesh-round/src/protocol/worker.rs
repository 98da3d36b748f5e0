//! The heavy computations of a round, outside the state machines: building
//! the initial model, local training and combining group results. The
//! engine asks for them with [`super::Action`]s; a driver runs them (on a
//! blocking thread, or on the simulation's worker threads) and hands the
//! result back. All of it is deterministic for the task's seed.

use std::sync::Arc;

use mesh_consensus::command::{JobSpec, RoundMetrics};
use mesh_federated::aggregate::{Aggregator, AggregatorConfig, Rule};
use mesh_federated::attack::Attack;
use mesh_federated::data::{bind, Dataset};
use mesh_federated::model::{self, store, Model, TrainOptions};
use mesh_federated::model::{ModelError, TrainReport};
use mesh_spec::schema::Normalization;
use mesh_spec::{DataSchema, LearnerSpec, ModelSpec};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::blob::{GlobalModel, ServerState};
use super::messages::RoundKey;
use crate::job::JobSpecCheck;

/// Why a computation failed (the round goes on without this node's part).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The node has no data bound to the job's dataset name.
    #[error("this node holds no data for dataset {0:?}")]
    NoData(String),
    /// The job names an unknown model or rule.
    #[error("job spec: {0}")]
    Spec(String),
    /// The node's data does not match the job's schema; it does not take part.
    #[error("{0}")]
    Schema(String),
    /// Training, evaluation or aggregation failed.
    #[error("{0}")]
    Compute(String),
    /// The node's conduct is [`Conduct::Silent`]: it trains nothing.
    #[error("this node is silent: it sends no update")]
    Silent,
}

/// Train from `params` for one round.
#[derive(Clone, Debug)]
pub struct TrainTask {
    /// The round.
    pub key: RoundKey,
    /// The job.
    pub spec: Arc<JobSpec>,
    /// The global model the round starts from.
    pub params: Arc<Vec<f32>>,
    /// Seed of this node's shuffling in this round.
    pub seed: u64,
}

/// What local training produced.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainedUpdate {
    /// Local minus global parameters (before clipping and noise).
    pub delta: Vec<f32>,
    /// Rows trained on.
    pub samples: u64,
    /// Mean local loss.
    pub train_loss: f32,
}

/// Combine group results into the next global model.
#[derive(Clone, Debug)]
pub struct CombineTask {
    /// The round.
    pub key: RoundKey,
    /// The job.
    pub spec: Arc<JobSpec>,
    /// The global model the round started from, with its server state.
    pub start: Arc<GlobalModel>,
    /// Group mean updates with their contributor counts, in group order.
    pub inputs: Vec<(Arc<Vec<f32>>, u32)>,
    /// Digest of the inputs (echoed in the report).
    pub inputs_digest: [u8; 32],
}

/// The combined model and how it scores on this node's validation data.
#[derive(Clone, Debug, PartialEq)]
pub struct CombinedModel {
    /// New global model (parameters and server state).
    pub model: GlobalModel,
    /// Indices of the inputs that were outliers ([`crate::detect::outliers`]).
    pub outliers: Vec<u32>,
    /// Validation accuracy and loss.
    pub metrics: RoundMetrics,
}

/// How a node behaves as a participant (honest, or misbehaving for tests).
#[derive(Clone, Debug, PartialEq)]
pub enum Conduct {
    /// Follows the protocol.
    Honest,
    /// Shapes its update with this attack (it sees only its own update).
    Byzantine(Attack),
    /// Never finishes local training, so it never sends an update: a
    /// selected participant that misses every round's deadline.
    Silent,
}

/// Reads a node's validation rows when they are first needed.
pub type LoadValidation = dyn Fn() -> Result<Dataset, String> + Send + Sync;

/// Where a worker's validation rows are.
#[derive(Clone, Default)]
pub enum Validation {
    /// The node holds none: the models it combines are not scored.
    #[default]
    None,
    /// Held in memory; shared, read-only (simulated nodes hold one copy
    /// between them).
    Held(Arc<Dataset>),
    /// Read by this function when a model is first scored here, then held:
    /// only final aggregators score, so the other nodes never hold them.
    OnDemand(Arc<LoadValidation>),
}

impl std::fmt::Debug for Validation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Held(data) => write!(f, "Held({} rows)", data.len()),
            Self::OnDemand(_) => f.write_str("OnDemand"),
        }
    }
}

impl Validation {
    /// The rows in memory, if held.
    fn held(&self) -> Option<&Dataset> {
        match self {
            Self::Held(data) => Some(data),
            _ => None,
        }
    }

    /// The rows, read first if they are read on demand (`None` when the
    /// node holds none or they cannot be read now; the round goes on
    /// unscored).
    fn load(&mut self) -> Option<Arc<Dataset>> {
        if let Self::OnDemand(load) = self {
            match load() {
                Ok(data) => *self = Self::Held(Arc::new(data)),
                Err(err) => {
                    tracing::warn!(%err, "validation rows could not be read; the model goes unscored");
                    return None;
                }
            }
        }
        match self {
            Self::Held(data) => Some(data.clone()),
            _ => None,
        }
    }
}

/// One node's private data and models.
#[derive(Debug)]
pub struct LocalWorker {
    train: Option<Dataset>,
    validation: Validation,
    dataset: String,
    bound: Option<BoundData>,
    models: Vec<(ModelSpec, DataSchema, Box<dyn Model>)>,
    conduct: Conduct,
    learner: Option<LearnerFactory>,
    learner_models: Vec<(LearnerSpec, Box<dyn Model>)>,
}

/// Builds the model of a job whose model is an external learner's layout:
/// the node runtime hands its worker one over the node's `[learner]`
/// process, so such jobs train there (the learner holds the data).
pub struct LearnerFactory(pub Box<BuildLearnerModel>);

/// What a [`LearnerFactory`] runs.
pub type BuildLearnerModel = dyn Fn(&LearnerSpec) -> Result<Box<dyn Model>, ModelError> + Send;

impl std::fmt::Debug for LearnerFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LearnerFactory")
    }
}

/// The node's data as one job's schema sees it (classes in the job's order,
/// table features standardized).
#[derive(Debug)]
struct BoundData {
    schema: DataSchema,
    norm: Option<Normalization>,
    train: Option<Dataset>,
    /// Bound when a model is first scored here: only the nodes that
    /// evaluate (final aggregators) keep a bound copy.
    validation: Option<Dataset>,
}

impl LocalWorker {
    /// A worker holding `train` (private) and `validation` data, bound to the dataset name `dataset`.
    pub fn new(
        dataset: &str,
        train: Option<Dataset>,
        validation: Option<Dataset>,
        conduct: Conduct,
    ) -> Self {
        let validation = validation.map_or(Validation::None, |v| Validation::Held(Arc::new(v)));
        Self::with_validation(dataset, train, validation, conduct)
    }

    /// A worker like [`new`](Self::new) whose validation rows are shared with
    /// other workers (the simulator's nodes share one copy) or read on demand.
    pub fn with_validation(
        dataset: &str,
        mut train: Option<Dataset>,
        validation: Validation,
        conduct: Conduct,
    ) -> Self {
        if let (Conduct::Byzantine(attack), Some(data)) = (&conduct, train.as_mut()) {
            attack.poison(data);
        }
        Self {
            train,
            validation,
            dataset: dataset.to_owned(),
            bound: None,
            models: Vec::new(),
            conduct,
            learner: None,
            learner_models: Vec::new(),
        }
    }

    /// Trains and evaluates jobs whose model is a learner layout through
    /// models `factory` builds (the node's learner process).
    pub fn set_learner(&mut self, factory: LearnerFactory) {
        self.learner = Some(factory);
        self.learner_models.clear();
    }

    /// The learner model for `spec`, built once per layout.
    fn learner_model(&mut self, spec: &LearnerSpec) -> Result<&mut Box<dyn Model>, WorkerError> {
        let factory = self.learner.as_ref().ok_or_else(|| {
            WorkerError::NoData("a learner job, and this node has no [learner]".into())
        })?;
        let index = match self.learner_models.iter().position(|(s, _)| s == spec) {
            Some(i) => i,
            None => {
                let model = (factory.0)(spec).map_err(|e| WorkerError::Spec(e.to_string()))?;
                self.learner_models.push((spec.clone(), model));
                self.learner_models.len() - 1
            }
        };
        Ok(&mut self.learner_models[index].1)
    }

    /// Local training in the node's learner: no local data is needed, the
    /// learner's reply says how many examples it trained on.
    fn train_in_learner(
        &mut self,
        spec: &LearnerSpec,
        task: &TrainTask,
        options: &TrainOptions,
    ) -> Result<(Vec<f32>, TrainReport), WorkerError> {
        if task.spec.training.dataset != self.dataset {
            return Err(WorkerError::NoData(task.spec.training.dataset.clone()));
        }
        let model = self.learner_model(spec)?;
        train_delta(model.as_mut(), &task.params, &Dataset::no_rows(), options)
    }

    /// Round metrics from the node's learner; a node without one, or a
    /// learner that fails, reports none (aggregation does not wait on it).
    fn evaluate_in_learner(&mut self, spec: &LearnerSpec, params: &[f32]) -> RoundMetrics {
        if self.learner.is_none() {
            return NO_METRICS;
        }
        let evaluated = self
            .learner_model(spec)
            .and_then(|model| score(model.as_mut(), params, &Dataset::no_rows()));
        evaluated.unwrap_or_else(|err| {
            tracing::warn!(%err, "the learner could not evaluate the round's model");
            NO_METRICS
        })
    }

    /// Rows of private training data.
    pub fn train_rows(&self) -> usize {
        self.train.as_ref().map_or(0, Dataset::len)
    }

    /// The schema the job's models are built for: the job's own, else the
    /// schema of this node's data.
    fn schema(&self, spec: &JobSpec) -> Result<DataSchema, WorkerError> {
        if let Some(schema) = &spec.training.schema {
            return Ok(schema.clone());
        }
        if spec.training.dataset != self.dataset {
            return Err(WorkerError::NoData(spec.training.dataset.clone()));
        }
        self.train
            .as_ref()
            .or(self.validation.held())
            .map(Dataset::schema)
            .ok_or_else(|| WorkerError::NoData(spec.training.dataset.clone()))
    }

    /// This node's data bound to the job's schema; refuses data of another
    /// schema with the reason ("schema mismatch: 31 columns, job wants 30").
    fn bind(&mut self, spec: &JobSpec) -> Result<&mut BoundData, WorkerError> {
        if spec.training.dataset != self.dataset {
            return Err(WorkerError::NoData(spec.training.dataset.clone()));
        }
        let schema = self.schema(spec)?;
        if self.bound.as_ref().is_none_or(|b| b.schema != schema) {
            let raw = self
                .train
                .as_ref()
                .or(self.validation.held())
                .ok_or_else(|| WorkerError::NoData(self.dataset.clone()))?;
            let norm = bind::normalization_for(&schema, raw);
            let train = self
                .train
                .as_ref()
                .map(|d| bind_to(d, &schema, norm.as_ref()))
                .transpose()?;
            // Refused now if it does not fit, as the training data would be;
            // kept bound only once a model is scored here.
            if let Some(v) = self.validation.held() {
                bind_to(v, &schema, norm.as_ref())?;
            }
            self.bound = Some(BoundData {
                schema,
                norm,
                train,
                validation: None,
            });
        }
        self.bound
            .as_mut()
            .ok_or_else(|| WorkerError::Compute("bound data vanished".into()))
    }

    fn model(&mut self, spec: &JobSpec) -> Result<&mut Box<dyn Model>, WorkerError> {
        let schema = self.schema(spec)?;
        let position = self
            .models
            .iter()
            .position(|(m, s, _)| *m == spec.model && *s == schema);
        let index = match position {
            Some(i) => i,
            None => {
                let model = model::build(&spec.model, &schema, spec.training.seed)
                    .map_err(|e| WorkerError::Spec(e.to_string()))?;
                self.models.push((spec.model.clone(), schema, model));
                self.models.len() - 1
            }
        };
        Ok(&mut self.models[index].2)
    }

    /// The job's initial parameters, the same on every node: read from the
    /// job's starting weights (`weights`, a safetensors file) when it has
    /// them, else the model's seeded initialisation. A job with a schema
    /// needs no local data for it.
    pub fn initial(
        &mut self,
        spec: &JobSpec,
        weights: Option<&[u8]>,
    ) -> Result<Vec<f32>, WorkerError> {
        if let ModelSpec::Learner(learner) = &spec.model {
            return match weights {
                Some(bytes) => store::weights_for_layout(bytes, &learner.parameters)
                    .map_err(|e| WorkerError::Spec(e.to_string())),
                None => Ok(model::initial_values(
                    &learner.parameters,
                    spec.training.seed,
                )),
            };
        }
        let schema = self.schema(spec)?;
        let model = model::build(&spec.model, &schema, spec.training.seed)
            .map_err(|e| WorkerError::Spec(e.to_string()))?;
        match weights {
            Some(bytes) => store::weights_for_layout(bytes, &model.parameter_layout())
                .map_err(|e| WorkerError::Spec(e.to_string())),
            None => Ok(model.parameters()),
        }
    }

    /// Local training for one round.
    pub fn train(&mut self, task: &TrainTask) -> Result<TrainedUpdate, WorkerError> {
        if self.conduct == Conduct::Silent {
            return Err(WorkerError::Silent);
        }
        let t = &task.spec.training;
        let options = TrainOptions {
            epochs: t.epochs as usize,
            batch_size: t.batch_size as usize,
            learning_rate: t.learning_rate,
            proximal_mu: t.proximal_mu,
            seed: task.seed,
        };
        let (mut delta, report) = match &task.spec.model {
            ModelSpec::Learner(learner) => self.train_in_learner(learner, task, &options)?,
            _ => self.train_bound(task, &options)?,
        };
        if let Conduct::Byzantine(attack) = &self.conduct {
            let mut rng = ChaCha8Rng::seed_from_u64(task.seed ^ 0xB17E);
            delta = attack.craft(&delta, std::slice::from_ref(&delta), &mut rng);
        }
        Ok(TrainedUpdate {
            delta,
            samples: report.samples as u64,
            train_loss: report.mean_loss,
        })
    }

    fn train_bound(
        &mut self,
        task: &TrainTask,
        options: &TrainOptions,
    ) -> Result<(Vec<f32>, TrainReport), WorkerError> {
        let bound = self.bind(&task.spec)?;
        let data = bound
            .train
            .take()
            .ok_or_else(|| WorkerError::NoData(task.spec.training.dataset.clone()))?;
        let outcome = self.train_on(&data, task, options);
        if let Some(bound) = self.bound.as_mut() {
            bound.train = Some(data);
        }
        outcome
    }

    fn train_on(
        &mut self,
        data: &Dataset,
        task: &TrainTask,
        options: &TrainOptions,
    ) -> Result<(Vec<f32>, mesh_federated::model::TrainReport), WorkerError> {
        let model = self.model(&task.spec)?;
        train_delta(model.as_mut(), &task.params, data, options)
    }

    /// Combines group results with the job's robust rule, steps the model and evaluates it.
    pub fn combine(&mut self, task: &CombineTask) -> Result<CombinedModel, WorkerError> {
        let (model, outliers) = combine_params(task)?;
        let metrics = match &task.spec.model {
            ModelSpec::Learner(learner) => self.evaluate_in_learner(learner, &model.params),
            _ => self.evaluate_bound(&task.spec, &model.params)?,
        };
        Ok(CombinedModel {
            model,
            outliers,
            metrics: RoundMetrics {
                updates_count: task.inputs.iter().map(|(_, c)| *c).sum(),
                ..metrics
            },
        })
    }

    /// Scores `params` on this node's validation data bound to the job
    /// (no metrics when it holds none of the job's schema).
    fn evaluate_bound(
        &mut self,
        spec: &JobSpec,
        params: &[f32],
    ) -> Result<RoundMetrics, WorkerError> {
        let raw = self.validation.load();
        let validation = match self.bind(spec) {
            Ok(bound) => match (bound.validation.take(), raw) {
                (Some(bound), _) => Some(bound),
                (None, Some(raw)) => bind_to(&raw, &bound.schema, bound.norm.as_ref()).ok(),
                (None, None) => None,
            },
            Err(_) => None,
        };
        let Some(validation) = validation else {
            return Ok(NO_METRICS);
        };
        let outcome = self
            .model(spec)
            .and_then(|model| score(model.as_mut(), params, &validation));
        if let Some(bound) = self.bound.as_mut() {
            bound.validation = Some(validation);
        }
        outcome
    }
}

/// `data` bound to the job's `schema` with the job's normalization.
fn bind_to(
    data: &Dataset,
    schema: &DataSchema,
    norm: Option<&Normalization>,
) -> Result<Dataset, WorkerError> {
    bind::bind(data, schema, norm).map_err(|e| WorkerError::Schema(e.to_string()))
}

/// Metrics of a round whose model could not be scored here.
const NO_METRICS: RoundMetrics = RoundMetrics {
    accuracy: 0.0,
    loss: 0.0,
    updates_count: 0,
};

/// False for the metrics of a model a node could not score (it holds no
/// validation data, or none that fits the job), whatever their update count.
/// No evaluation gives a zero accuracy and a zero loss at once.
pub fn is_scored(metrics: &RoundMetrics) -> bool {
    (metrics.accuracy, metrics.loss) != (NO_METRICS.accuracy, NO_METRICS.loss)
}

/// Scores `params` on `data` as round metrics (accuracy in [0, 1]; a
/// non-finite loss reported as the largest finite one).
fn score(
    model: &mut dyn Model,
    params: &[f32],
    data: &Dataset,
) -> Result<RoundMetrics, WorkerError> {
    let compute = |e: ModelError| WorkerError::Compute(e.to_string());
    model.set_parameters(params).map_err(compute)?;
    let eval = model.evaluate(data).map_err(compute)?;
    let loss = if eval.loss.is_finite() {
        f64::from(eval.loss).max(0.0)
    } else {
        f64::MAX
    };
    Ok(RoundMetrics {
        accuracy: f64::from(eval.accuracy).clamp(0.0, 1.0),
        loss,
        updates_count: 0,
    })
}

/// Trains `model` from `start` on `data` and returns the update (trained
/// minus start) with the training report.
fn train_delta(
    model: &mut dyn Model,
    start: &[f32],
    data: &Dataset,
    options: &TrainOptions,
) -> Result<(Vec<f32>, TrainReport), WorkerError> {
    let compute = |e: ModelError| WorkerError::Compute(e.to_string());
    model.set_parameters(start).map_err(compute)?;
    let report = model.train(data, options).map_err(compute)?;
    let delta = model
        .parameters()
        .iter()
        .zip(start)
        .map(|(l, g)| l - g)
        .collect();
    Ok((delta, report))
}

/// The deterministic part of combining: the job's pre-aggregation and robust
/// rule over the group means (weighted by contributors), then the job's server
/// optimizer steps the model, resuming from the server state the start model
/// carries and handing the new state on in the result. Also returns the
/// indices of the inputs that were outliers relative to the rule's aggregate.
pub fn combine_params(task: &CombineTask) -> Result<(GlobalModel, Vec<u32>), WorkerError> {
    let job = task
        .spec
        .check()
        .map_err(|e| WorkerError::Spec(e.to_string()))?;
    let mut aggregator = Aggregator::new(AggregatorConfig {
        rule: job.rule,
        pre: job.pre,
        byzantine_count: job.byzantine_count,
        seed: task.spec.training.seed ^ u64::from(task.key.round),
    });
    let start = &task.start;
    if matches!(job.rule, Rule::CenteredClip(_)) {
        aggregator.restore_center(start.server.center.clone());
    }
    let updates: Vec<Vec<f32>> = task.inputs.iter().map(|(u, _)| u.to_vec()).collect();
    let weights: Vec<f32> = task.inputs.iter().map(|(_, c)| *c as f32).collect();
    let compute =
        |e: mesh_federated::aggregate::AggregateError| WorkerError::Compute(e.to_string());
    let aggregated = aggregator.aggregate(&updates, &weights).map_err(compute)?;
    if aggregated.len() != start.params.len() {
        return Err(WorkerError::Compute(format!(
            "aggregate has {} values, the model {}",
            aggregated.len(),
            start.params.len()
        )));
    }
    let mut optimizer = job.server_optimizer;
    let server = &start.server;
    optimizer
        .restore_moments(server.first_moment.clone(), server.second_moment.clone())
        .map_err(compute)?;
    let mut params = start.params.clone();
    optimizer.apply(&mut params, &aggregated).map_err(compute)?;
    let (first_moment, second_moment) = optimizer.moments();
    let model = GlobalModel {
        params,
        server: ServerState {
            first_moment: first_moment.to_vec(),
            second_moment: second_moment.to_vec(),
            center: aggregator.center().to_vec(),
        },
    };
    // Detection serves a job that declares Byzantine participants; a job
    // that tolerates none (f = 0) penalizes no one: honest inputs on small
    // or skewed data are often far from the mean, and nothing is to be found.
    let outliers = if job.byzantine_count > 0 {
        crate::detect::outliers(&updates, &aggregated)
    } else {
        Vec::new()
    };
    Ok((model, outliers))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicUsize, Ordering};

    use mesh_federated::data::partition::{Partition, Shard};
    use mesh_federated::data::{BuiltinSet, DataSource, LoadOptions};

    use super::*;

    /// One fiftieth of the built-in MNIST training rows and `test_rows` test rows.
    fn mnist(test_rows: usize) -> (Dataset, Dataset) {
        let options = LoadOptions {
            shard: Some(Shard {
                partition: Partition::Iid,
                shards: 50,
                shard: 0,
                seed: 1,
            }),
            test_rows_max: Some(test_rows),
            ..LoadOptions::default()
        };
        let loaded = DataSource::Builtin(BuiltinSet::Mnist10k)
            .load(&options)
            .unwrap();
        (loaded.train, loaded.test)
    }

    /// A plain one-participant MNIST job.
    fn spec() -> JobSpec {
        JobSpec {
            secagg: false,
            ..crate::protocol::plan::tests::job_spec(1, 1)
        }
    }

    /// Trains one round on `worker` and combines its update twice.
    fn train_and_combine_twice(worker: &mut LocalWorker) -> Vec<CombinedModel> {
        let spec = Arc::new(spec());
        let params = Arc::new(worker.initial(&spec, None).unwrap());
        let key = RoundKey {
            job: "job".into(),
            round: 0,
            attempt: 0,
        };
        let task = TrainTask {
            key: key.clone(),
            spec: spec.clone(),
            params: params.clone(),
            seed: 1,
        };
        let update = worker.train(&task).unwrap();
        let combine = CombineTask {
            key,
            spec,
            start: Arc::new(GlobalModel {
                params: params.to_vec(),
                server: ServerState::default(),
            }),
            inputs: vec![(Arc::new(update.delta), 1)],
            inputs_digest: [0; 32],
        };
        (0..2).map(|_| worker.combine(&combine).unwrap()).collect()
    }

    #[test]
    fn validation_rows_on_demand_are_read_once_when_a_model_is_first_scored() {
        let (train, test) = mnist(200);
        let reads = Arc::new(AtomicUsize::new(0));
        let counted = reads.clone();
        let load = move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(test.clone())
        };
        let validation = Validation::OnDemand(Arc::new(load));
        let mut worker =
            LocalWorker::with_validation("mnist", Some(train), validation, Conduct::Honest);
        worker.initial(&spec(), None).unwrap();
        assert_eq!(
            reads.load(Ordering::SeqCst),
            0,
            "not read to start or train"
        );
        let combined = train_and_combine_twice(&mut worker);
        assert_eq!(reads.load(Ordering::SeqCst), 1, "read once, then held");
        assert!(combined.iter().all(|c| is_scored(&c.metrics)));
        assert_eq!(combined[0].metrics, combined[1].metrics);
    }

    #[test]
    fn validation_rows_that_cannot_be_read_leave_the_model_unscored() {
        let (train, _) = mnist(10);
        let load = || Err("the files changed since the node started".to_string());
        let validation = Validation::OnDemand(Arc::new(load));
        let mut worker =
            LocalWorker::with_validation("mnist", Some(train), validation, Conduct::Honest);
        let combined = train_and_combine_twice(&mut worker);
        assert!(combined.iter().all(|c| !is_scored(&c.metrics)));
        assert_eq!(combined[0].metrics.updates_count, 1);
    }
}
