//! The in-process federation end to end on a small slice of the bundled MNIST:
//! determinism, robustness against an attack, DP budget enforcement, bad configs.

#![allow(clippy::unwrap_used, missing_docs)]

use mesh_federated::aggregate::{PreAggregation, Rule, ServerOptimizer};
use mesh_federated::attack::Attack;
use mesh_federated::data::partition::Partition;
use mesh_federated::data::{Dataset, Mnist};
use mesh_federated::model::{ModelKind, TrainOptions};
use mesh_federated::privacy::NoisePlacement;
use mesh_node::sim::{DpConfig, NoiseLevel, RoundReport, SimConfig, SimError, Simulation};
use std::path::Path;

fn data() -> (Dataset, Dataset) {
    let m =
        Mnist::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist-10k")).unwrap();
    let train = m.train.subset(&(0..2000).collect::<Vec<_>>());
    let test = m.test.subset(&(0..500).collect::<Vec<_>>());
    (train, test)
}

fn config() -> SimConfig {
    SimConfig {
        nodes: 8,
        rounds: 3,
        participants_per_round: 8,
        local: TrainOptions {
            epochs: 1,
            batch_size: 32,
            learning_rate: 0.1,
            proximal_mu: 0.0,
            seed: 1,
        },
        model: ModelKind::Logistic,
        partition: Partition::Iid,
        rule: Rule::FedAvg,
        pre: PreAggregation::None,
        server: ServerOptimizer::sgd(1.0),
        byzantine: 0,
        attack: Attack::None,
        dp: None,
        threads: 2,
        seed: 7,
    }
}

fn run(config: SimConfig) -> Result<Vec<RoundReport>, SimError> {
    let (train, test) = data();
    let mut sim = Simulation::new(config, &train, test)?;
    let mut reports = Vec::new();
    while let Some(r) = sim.run_round()? {
        reports.push(r);
    }
    Ok(reports)
}

fn accuracies(reports: &[RoundReport]) -> Vec<f32> {
    reports.iter().map(|r| r.test_accuracy).collect()
}

#[test]
fn fedavg_learns_and_same_seed_gives_same_result() {
    let a = run(config()).unwrap();
    assert_eq!(a.len(), 3);
    assert!(a[2].test_accuracy > 0.8, "accuracy {}", a[2].test_accuracy);
    assert_eq!(accuracies(&a), accuracies(&run(config()).unwrap()));
    let single_thread = run(SimConfig {
        threads: 1,
        ..config()
    })
    .unwrap();
    assert_eq!(
        accuracies(&a),
        accuracies(&single_thread),
        "result depends on threading"
    );
    let other_seed = run(SimConfig {
        seed: 8,
        ..config()
    })
    .unwrap();
    assert_ne!(accuracies(&a), accuracies(&other_seed));
}

#[test]
fn robust_rule_survives_sign_flip_that_breaks_fedavg() {
    let attacked = |rule| SimConfig {
        byzantine: 3,
        attack: Attack::SignFlip { scale: 10.0 },
        rule,
        ..config()
    };
    let fedavg = run(attacked(Rule::FedAvg)).unwrap();
    let median = run(attacked(Rule::Median)).unwrap();
    assert!(
        median[2].test_accuracy > 0.75,
        "median {}",
        median[2].test_accuracy
    );
    assert!(
        fedavg[2].test_accuracy < median[2].test_accuracy - 0.2,
        "fedavg {}",
        fedavg[2].test_accuracy
    );
}

#[test]
fn privacy_budget_stops_before_the_round_that_would_exceed_it() {
    let dp = DpConfig {
        clip_norm: 1.0,
        noise: NoiseLevel::Multiplier(1.0),
        placement: NoisePlacement::Central,
        delta: 1e-5,
        epsilon_budget: Some(9.0),
    };
    let reports = run(SimConfig {
        rounds: 50,
        dp: Some(dp),
        ..config()
    })
    .unwrap();
    assert!(
        !reports.is_empty() && reports.len() < 50,
        "ran {} rounds",
        reports.len()
    );
    assert!(reports.iter().all(|r| r.epsilon <= 9.0));
    assert!(reports.windows(2).all(|w| w[1].epsilon > w[0].epsilon));
}

#[test]
fn target_epsilon_is_met_with_distributed_noise_and_a_robust_rule() {
    let dp = DpConfig {
        clip_norm: 1.0,
        noise: NoiseLevel::TargetEpsilon(5.0),
        placement: NoisePlacement::Distributed,
        delta: 1e-5,
        epsilon_budget: None,
    };
    let reports = run(SimConfig {
        dp: Some(dp),
        rule: Rule::Median,
        ..config()
    })
    .unwrap();
    assert_eq!(reports.len(), 3);
    let spent = reports[2].epsilon;
    assert!(spent <= 5.0 && spent > 4.0, "spent {spent}");
}

#[test]
fn inconsistent_configurations_are_refused_with_the_flag_to_change() {
    let err = run(SimConfig {
        byzantine: 3,
        rule: Rule::Krum,
        ..config()
    })
    .unwrap_err();
    assert!(err.to_string().contains("krum"), "{err}");
    let err = run(SimConfig {
        participants_per_round: 9,
        ..config()
    })
    .unwrap_err();
    assert!(err.to_string().contains("--participants"), "{err}");
    let central_median = DpConfig {
        clip_norm: 1.0,
        noise: NoiseLevel::Multiplier(1.0),
        placement: NoisePlacement::Central,
        delta: 1e-5,
        epsilon_budget: None,
    };
    let err = run(SimConfig {
        dp: Some(central_median),
        rule: Rule::Median,
        ..config()
    })
    .unwrap_err();
    assert!(err.to_string().contains("fedavg"), "{err}");
}

#[test]
fn partial_participation_samples_the_requested_number_of_nodes() {
    let reports = run(SimConfig {
        participants_per_round: 3,
        ..config()
    })
    .unwrap();
    assert!(reports.iter().all(|r| r.participants == 3));
}
