//! The in-process driver: a whole federation in one process, nodes trained in
//! parallel on worker threads, deterministic for a seed.
//!
//! [`Simulation`] owns one [`Participant`] per node (each with its private shard
//! of the training set, possibly Byzantine) and one [`RoundAggregator`]. Each
//! [`Simulation::run_round`] selects participants, trains them from the current
//! global model, lets Byzantine nodes craft their updates, aggregates, and
//! evaluates the new global model on the held-out test set.

use crate::round::aggregation::{AggregationError, DpState, RoundAggregator};
use crate::round::derive_seed;
use crate::round::participant::{Behaviour, LocalUpdate, Participant, ParticipantError};
use mesh_federated::aggregate::{AggregatorConfig, PreAggregation, Rule, ServerOptimizer};
use mesh_federated::attack::Attack;
use mesh_federated::data::partition::Partition;
use mesh_federated::data::{DataError, Dataset};
use mesh_federated::model::{Model, ModelError, ModelKind, ModelShape, TrainOptions};
use mesh_federated::privacy::{
    noise_multiplier_for_epsilon, GaussianEvent, GaussianMechanism, NoisePlacement, PrivacyBudget,
    PrivacyError, PrivacyLedger,
};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// Errors of a simulation. Configuration errors name the flag to change.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Partitioning the data failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Building or evaluating a model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A participant failed.
    #[error(transparent)]
    Participant(#[from] ParticipantError),
    /// Aggregation failed.
    #[error(transparent)]
    Aggregation(#[from] AggregationError),
    /// Privacy accounting failed.
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
}

/// How much noise differential privacy adds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoiseLevel {
    /// A fixed noise multiplier `z`.
    Multiplier(f64),
    /// The smallest `z` that keeps all rounds within this epsilon.
    TargetEpsilon(f64),
}

/// Client-level differential privacy settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpConfig {
    /// L2 clipping norm of each update.
    pub clip_norm: f32,
    /// Noise level.
    pub noise: NoiseLevel,
    /// Where the noise is added.
    pub placement: NoisePlacement,
    /// Delta of the (epsilon, delta) guarantee.
    pub delta: f64,
    /// The job stops before the round that would spend more than this.
    pub epsilon_budget: Option<f64>,
}

/// Everything a simulation run depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Rounds to run.
    pub rounds: u64,
    /// Nodes taking part in each round (sampled uniformly, seeded).
    pub participants_per_round: usize,
    /// Local training options (the seed is derived per node and round).
    pub local: TrainOptions,
    /// The model.
    pub model: ModelKind,
    /// How the training set is split across nodes.
    pub partition: Partition,
    /// The aggregation rule.
    pub rule: Rule,
    /// Pre-aggregation before the rule.
    pub pre: PreAggregation,
    /// The server optimizer.
    pub server: ServerOptimizer,
    /// Byzantine nodes (also the `f` robust rules tolerate).
    pub byzantine: usize,
    /// What Byzantine nodes do.
    pub attack: Attack,
    /// Differential privacy, if any.
    pub dp: Option<DpConfig>,
    /// Worker threads training nodes in parallel.
    pub threads: usize,
    /// Seed of every random choice.
    pub seed: u64,
}

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RoundReport {
    /// Round number, from 1.
    pub round: u64,
    /// Accuracy of the new global model on the test set.
    pub test_accuracy: f32,
    /// Loss of the new global model on the test set.
    pub test_loss: f32,
    /// Mean local training loss of the participants.
    pub train_loss: f32,
    /// Epsilon spent so far (0 without DP).
    pub epsilon: f64,
    /// Wall-clock time of the round.
    pub duration_ms: u64,
    /// Nodes that took part.
    pub participants: usize,
}

/// An in-process federation.
#[derive(Debug)]
pub struct Simulation {
    config: SimConfig,
    participants: Vec<Participant>,
    aggregator: RoundAggregator,
    evaluator: Box<dyn Model>,
    global: Vec<f32>,
    test: Dataset,
    round: u64,
}

impl SimConfig {
    /// Checks the configuration before anything is built.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |m: String| Err(SimError::Config(m));
        if self.nodes == 0 {
            return bad("--nodes must be at least 1".into());
        }
        if self.participants_per_round == 0 || self.participants_per_round > self.nodes {
            return bad(format!(
                "--participants must be in 1..={} (the number of nodes)",
                self.nodes
            ));
        }
        if self.byzantine >= self.nodes {
            return bad(format!(
                "--byzantine {} must be below --nodes {}",
                self.byzantine, self.nodes
            ));
        }
        if self.rounds == 0 {
            return bad("--rounds must be at least 1".into());
        }
        if self.threads == 0 {
            return bad("--threads must be at least 1".into());
        }
        let n_min = self.rule.n_min(self.byzantine);
        let seen = self.pre.output_count(self.participants_per_round);
        if seen < n_min {
            return bad(format!(
                "rule {} needs at least {n_min} inputs to tolerate {} Byzantine nodes, but each round gives it {seen}; add nodes or choose another rule",
                self.rule, self.byzantine
            ));
        }
        self.local.validate()?;
        Ok(())
    }
}

impl Simulation {
    /// Builds the federation: partitions `train` across nodes, picks the Byzantine
    /// nodes, builds every node's model from the same seeded initial parameters.
    pub fn new(config: SimConfig, train: &Dataset, test: Dataset) -> Result<Self, SimError> {
        config.validate()?;
        let shape = ModelShape::of(train);
        let evaluator = config.model.build(shape, config.seed)?;
        let global = evaluator.parameters();
        let shards =
            config
                .partition
                .split(&train.labels, train.num_classes, config.nodes, config.seed)?;
        let byzantine = pick_byzantine(config.nodes, config.byzantine, config.seed);
        let attack = config
            .attack
            .resolve(config.participants_per_round, config.byzantine);
        let mut participants = Vec::with_capacity(config.nodes);
        for (node, rows) in shards.iter().enumerate() {
            let behaviour = if byzantine.contains(&node) {
                Behaviour::Byzantine(attack)
            } else {
                Behaviour::Honest
            };
            let model = config.model.build(shape, config.seed)?;
            participants.push(Participant::new(node, train.subset(rows), model, behaviour));
        }
        let aggregator = RoundAggregator::new(
            AggregatorConfig {
                rule: config.rule,
                pre: config.pre,
                byzantine_count: config.byzantine,
                seed: config.seed,
            },
            config.server.clone(),
            dp_state(&config)?,
        )?;
        Ok(Self {
            config,
            participants,
            aggregator,
            evaluator,
            global,
            test,
            round: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The noise multiplier in use (after solving a target epsilon), if DP is on.
    pub fn noise_multiplier(&self) -> Option<f64> {
        self.aggregator.dp().map(|s| s.mechanism.noise_multiplier())
    }

    /// The current global model.
    pub fn global_model(&self) -> &dyn Model {
        self.evaluator.as_ref()
    }

    /// Rounds completed.
    pub fn rounds_done(&self) -> u64 {
        self.round
    }

    /// Nodes that are Byzantine.
    pub fn byzantine_nodes(&self) -> Vec<usize> {
        self.participants
            .iter()
            .filter(|p| matches!(p.behaviour(), Behaviour::Byzantine(_)))
            .map(Participant::node)
            .collect()
    }

    /// Runs the next round. Returns `None`, running nothing, when all rounds are done
    /// or the next round would exceed the privacy budget.
    pub fn run_round(&mut self) -> Result<Option<RoundReport>, SimError> {
        if self.round >= self.config.rounds || self.aggregator.budget_exhausted()? {
            return Ok(None);
        }
        let started = Instant::now();
        let round = self.round + 1;
        let selected = self.select_participants(round);
        let updates = self.train_selected(&selected, round)?;
        let train_loss = updates.iter().map(|u| u.train_loss).sum::<f32>() / updates.len() as f32;
        let updates = self.apply_attacks(updates, round);
        let participants = updates.len();
        let epsilon = self
            .aggregator
            .aggregate(&mut self.global, updates, round)?;
        self.evaluator.set_parameters(&self.global)?;
        let evaluation = self.evaluator.evaluate(&self.test)?;
        self.round = round;
        Ok(Some(RoundReport {
            round,
            test_accuracy: evaluation.accuracy,
            test_loss: evaluation.loss,
            train_loss,
            epsilon,
            duration_ms: started.elapsed().as_millis() as u64,
            participants,
        }))
    }

    fn select_participants(&self, round: u64) -> Vec<usize> {
        let mut nodes: Vec<usize> = (0..self.config.nodes).collect();
        if self.config.participants_per_round < self.config.nodes {
            let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(self.config.seed, round, 2 << 32));
            nodes.shuffle(&mut rng);
            nodes.truncate(self.config.participants_per_round);
            nodes.sort_unstable();
        }
        nodes
    }

    /// Trains the selected nodes on worker threads; updates come back in node order.
    fn train_selected(
        &mut self,
        selected: &[usize],
        round: u64,
    ) -> Result<Vec<LocalUpdate>, SimError> {
        let mechanism = self.aggregator.dp().map(|s| s.mechanism);
        let client_dp = mechanism
            .filter(|m| m.placement() == NoisePlacement::Distributed)
            .map(|m| (m, selected.len()));
        let (global, options) = (&self.global, &self.config.local);
        let mut chosen: Vec<&mut Participant> = self
            .participants
            .iter_mut()
            .filter(|p| selected.binary_search(&p.node()).is_ok())
            .collect();
        let client_dp = client_dp.as_ref().map(|(m, k)| (m, *k));
        let updates = crate::parallel::map_in_threads(&mut chosen, self.config.threads, |p| {
            p.local_round(global, options, round, client_dp)
        });
        let updates = updates.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(updates)
    }

    /// Lets the round's Byzantine participants replace their updates. Honest
    /// updates are copied for the attackers to see only when there are attackers.
    fn apply_attacks(&self, updates: Vec<LocalUpdate>, round: u64) -> Vec<LocalUpdate> {
        let is_honest =
            |u: &LocalUpdate| matches!(self.participants[u.node].behaviour(), Behaviour::Honest);
        if updates.iter().all(is_honest) {
            return updates;
        }
        let honest: Vec<Vec<f32>> = updates
            .iter()
            .filter(|u| is_honest(u))
            .map(|u| u.delta.clone())
            .collect();
        updates
            .into_iter()
            .map(|u| self.participants[u.node].craft(u, &honest, round, self.config.seed))
            .collect()
    }
}

fn pick_byzantine(nodes: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..nodes).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(derive_seed(
        seed,
        3 << 32,
        0,
    )));
    order.truncate(count);
    order
}

/// Builds the DP state: solves the noise multiplier for a target epsilon, and
/// sets up the ledger with the budget (or an unbounded one).
fn dp_state(config: &SimConfig) -> Result<Option<DpState>, SimError> {
    let Some(dp) = config.dp else { return Ok(None) };
    let sampling_rate = config.participants_per_round as f64 / config.nodes as f64;
    let (noise_multiplier, budget) = match dp.noise {
        NoiseLevel::Multiplier(z) => (z, dp.epsilon_budget),
        NoiseLevel::TargetEpsilon(eps) => (
            noise_multiplier_for_epsilon(sampling_rate, config.rounds, dp.delta, eps)?,
            Some(dp.epsilon_budget.unwrap_or(eps)),
        ),
    };
    let mechanism = GaussianMechanism::new(dp.clip_norm, noise_multiplier, dp.placement)?;
    let budget = PrivacyBudget::new(budget.unwrap_or(f64::MAX), dp.delta)?;
    Ok(Some(DpState {
        mechanism,
        round_event: GaussianEvent {
            sampling_rate,
            noise_multiplier,
            steps: 1,
        },
        ledger: PrivacyLedger::new(budget),
    }))
}
