//! The federated-learning engine of Agent Mesh.
//!
//! Everything here is I/O-free apart from reading data sets and saving models:
//! the mesh node drives these pieces over the network.
//!
//! * [`data`]: MNIST IDX loader, the FedProx `Synthetic(alpha, beta)` generator, partitioners.
//! * [`model`]: the [`model::Model`] trait (flat parameters, local training, evaluation) and
//!   its burn implementations (logistic regression, MLP, small CNN).
//! * [`aggregate`]: robust aggregation rules and pre-aggregation.
//! * [`attack`]: Byzantine attacks used to test robustness.
//! * [`privacy`]: clipping, Gaussian noise and the RDP accountant.

pub mod aggregate;
pub mod attack;
pub mod data;
pub mod model;
pub mod privacy;
