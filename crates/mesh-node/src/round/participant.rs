//! The participant (trainer) role: local training on private data.

use super::derive_seed;
use mesh_federated::attack::Attack;
use mesh_federated::data::Dataset;
use mesh_federated::model::{Model, ModelError, TrainOptions};
use mesh_federated::privacy::{GaussianMechanism, PrivacyError};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Errors of the participant role.
#[derive(Debug, thiserror::Error)]
pub enum ParticipantError {
    /// Local training failed.
    #[error("node {node}: local training failed")]
    Model {
        /// The node.
        node: usize,
        /// The cause.
        source: ModelError,
    },
    /// Clipping or noising failed.
    #[error("node {node}: clipping or noising its update failed")]
    Privacy {
        /// The node.
        node: usize,
        /// The cause.
        source: PrivacyError,
    },
}

/// How a node behaves.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// Follows the protocol.
    Honest,
    /// Byzantine: sends updates shaped by this attack.
    Byzantine(Attack),
}

/// The update a participant sends for one round.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalUpdate {
    /// Sender.
    pub node: usize,
    /// Model delta (local minus global).
    pub delta: Vec<f32>,
    /// Rows of local data (FedAvg weight).
    pub samples: usize,
    /// Mean local training loss.
    pub train_loss: f32,
}

/// A node's trainer: its private data, its model and its behaviour.
#[derive(Debug)]
pub struct Participant {
    node: usize,
    data: Dataset,
    model: Box<dyn Model>,
    behaviour: Behaviour,
}

impl Participant {
    /// A participant with its own private `data`. A Byzantine node whose attack
    /// poisons labels has its labels flipped here, once.
    pub fn new(
        node: usize,
        mut data: Dataset,
        model: Box<dyn Model>,
        behaviour: Behaviour,
    ) -> Self {
        if let Behaviour::Byzantine(attack) = &behaviour {
            attack.poison(&mut data);
        }
        Self {
            node,
            data,
            model,
            behaviour,
        }
    }

    /// The node index.
    pub fn node(&self) -> usize {
        self.node
    }

    /// The node's behaviour.
    pub fn behaviour(&self) -> &Behaviour {
        &self.behaviour
    }

    /// Trains from `global` for one round and returns the update. With `dp`, the
    /// update is clipped and this node's share of the noise is added (`participants`
    /// nodes share the round).
    pub fn local_round(
        &mut self,
        global: &[f32],
        options: &TrainOptions,
        round: u64,
        dp: Option<(&GaussianMechanism, usize)>,
    ) -> Result<LocalUpdate, ParticipantError> {
        let node = self.node;
        let model_err = |source| ParticipantError::Model { node, source };
        self.model.set_parameters(global).map_err(model_err)?;
        let seed = derive_seed(options.seed, round, node as u64);
        let report = self
            .model
            .train(&self.data, &TrainOptions { seed, ..*options })
            .map_err(model_err)?;
        let mut delta: Vec<f32> = self
            .model
            .parameters()
            .iter()
            .zip(global)
            .map(|(l, g)| l - g)
            .collect();
        if let Some((mechanism, participants)) = dp {
            let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, 1, 0));
            mechanism
                .privatize_client(&mut delta, participants, &mut rng)
                .map_err(|source| ParticipantError::Privacy { node, source })?;
        }
        Ok(LocalUpdate {
            node,
            delta,
            samples: self.data.len(),
            train_loss: report.mean_loss,
        })
    }

    /// A Byzantine node's final update, crafted once the honest updates of the round
    /// are known (omniscient attacker, the strongest model). Honest nodes keep theirs.
    pub fn craft(
        &self,
        own: LocalUpdate,
        honest: &[Vec<f32>],
        round: u64,
        seed: u64,
    ) -> LocalUpdate {
        match &self.behaviour {
            Behaviour::Honest => own,
            Behaviour::Byzantine(attack) => {
                let mut rng =
                    ChaCha8Rng::seed_from_u64(derive_seed(seed, round, 1 << 32 | self.node as u64));
                let delta = attack.craft(&own.delta, honest, &mut rng);
                LocalUpdate { delta, ..own }
            }
        }
    }
}
