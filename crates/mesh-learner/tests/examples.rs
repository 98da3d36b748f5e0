//! The repository's Python learner examples, run as a node would run them:
//! three learners, each on its own shard of the bundled MNIST subset, train
//! a few rounds of FedAvg through `LearnerModel` from the mesh's seeded
//! start. The numpy example needs only numpy; the PyTorch one is skipped,
//! with the reason printed, where `import torch` fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::{python_config, python_imports, repo_root};
use mesh_federated::data::Dataset;
use mesh_federated::model::{initial_values, Model, TrainOptions};
use mesh_learner::{LearnerModel, SupervisedLearner};

const NODES: usize = 3;

fn no_data() -> Dataset {
    Dataset::no_rows()
}

/// Runs `rounds` of FedAvg over [`NODES`] learners of `script`; returns the
/// accuracy after each round (evaluated by the first learner).
fn federate(script: PathBuf, rounds: u32, learning_rate: f32) -> Vec<f32> {
    let learners: Vec<_> = (0..NODES)
        .map(|i| {
            let mut config = python_config(script.clone(), &[]);
            config
                .env
                .insert("LEARNER_SHARD".into(), format!("{i}/{NODES}"));
            SupervisedLearner::new(config).shared()
        })
        .collect();
    let layout = mesh_learner::layout::describe(
        &mesh_learner::supervisor::lock(&learners[0])
            .layout()
            .unwrap(),
    );
    let mut models: Vec<LearnerModel> = learners
        .iter()
        .map(|l| LearnerModel::new(l.clone(), layout.clone()).unwrap())
        .collect();
    let mut global = initial_values(&layout, 7);
    let mut accuracies = Vec::new();
    for round in 0..rounds {
        let mut sum = vec![0f64; global.len()];
        let mut total = 0f64;
        for model in &mut models {
            model.set_parameters(&global).unwrap();
            let options = TrainOptions {
                epochs: 1,
                batch_size: 32,
                learning_rate,
                proximal_mu: 0.0,
                seed: u64::from(round),
            };
            let report = model.train(&no_data(), &options).unwrap();
            let weight = report.samples as f64;
            for (s, v) in sum.iter_mut().zip(model.parameters()) {
                *s += weight * f64::from(v);
            }
            total += weight;
        }
        global = sum.iter().map(|s| (s / total) as f32).collect();
        models[0].set_parameters(&global).unwrap();
        let eval = models[0].evaluate(&no_data()).unwrap();
        eprintln!(
            "round {round}: accuracy {:.4}, loss {:.4}",
            eval.accuracy, eval.loss
        );
        accuracies.push(eval.accuracy);
    }
    accuracies
}

#[test]
fn numpy_softmax_example_learns_mnist_in_three_federated_rounds() {
    let script = repo_root().join("examples/python-learner-numpy/mnist_softmax.py");
    let accuracies = federate(script, 3, 0.1);
    let last = accuracies[accuracies.len() - 1];
    assert!(last >= 0.87, "accuracy after 3 rounds: {accuracies:?}");
}

#[test]
fn torch_mlp_example_learns_mnist_when_torch_is_installed() {
    if let Err(reason) = python_imports("torch") {
        eprintln!(
            "SKIPPED: the PyTorch example needs torch ({reason}); pip install torch to run it"
        );
        return;
    }
    let script = repo_root().join("examples/python-learner-torch/mnist_mlp.py");
    let accuracies = federate(script, 3, 0.05);
    let last = accuracies[accuracies.len() - 1];
    assert!(last >= 0.82, "accuracy after 3 rounds: {accuracies:?}");
}
