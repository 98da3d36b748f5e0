//! Unit tests of clipping, noise placement, the accountant's monotonicity and the
//! budget ledger (golden values live in `tests/dp_golden.rs`).
#![allow(clippy::unwrap_used)]

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;

#[test]
fn clipping_scales_down_and_reports_the_norm() {
    let mut u = vec![3.0_f32, 4.0];
    assert_eq!(clip_l2(&mut u, 1.0).unwrap(), 5.0);
    assert!((u[0] - 0.6).abs() < 1e-6 && (u[1] - 0.8).abs() < 1e-6);
    let mut small = vec![0.3_f32, 0.4];
    assert_eq!(clip_l2(&mut small, 1.0).unwrap(), 0.5);
    assert_eq!(small, vec![0.3, 0.4]);
    assert_eq!(
        clip_l2(&mut u, 0.0).unwrap_err(),
        PrivacyError::ClipNorm(0.0)
    );
    assert!(matches!(
        clip_l2(&mut [f32::NAN], 1.0),
        Err(PrivacyError::NonFiniteUpdate(_))
    ));
}

#[test]
fn noise_is_seeded_and_has_the_requested_spread() {
    let mut a = vec![0.0_f32; 20_000];
    let mut b = a.clone();
    add_gaussian_noise(&mut a, 2.0, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
    add_gaussian_noise(&mut b, 2.0, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
    assert_eq!(a, b);
    let var = a.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>() / a.len() as f64;
    // Sample variance of 20,000 draws is within 5% of 4 with overwhelming probability.
    assert!((var - 4.0).abs() < 0.2, "variance {var}");
    assert!(add_gaussian_noise(&mut a, -1.0, &mut ChaCha8Rng::seed_from_u64(5)).is_err());
}

#[test]
fn distributed_placement_splits_the_variance() {
    let central = GaussianMechanism::new(2.0, 1.5, NoisePlacement::Central).unwrap();
    assert_eq!(central.server_noise_std(), 3.0);
    assert_eq!(central.client_noise_std(10).unwrap(), 0.0);
    let distributed = GaussianMechanism::new(2.0, 1.5, NoisePlacement::Distributed).unwrap();
    assert_eq!(distributed.server_noise_std(), 0.0);
    let per_client = distributed.client_noise_std(9).unwrap();
    assert!((per_client - 1.0).abs() < 1e-12);
    // m clients' shares add up to the central variance.
    assert!((9.0 * per_client * per_client - 9.0).abs() < 1e-9);
    assert_eq!(
        distributed.client_noise_std(0),
        Err(PrivacyError::NoClients)
    );
    let mut u = vec![30.0_f32, 40.0];
    let norm = distributed
        .privatize_client(&mut u, 9, &mut ChaCha8Rng::seed_from_u64(1))
        .unwrap();
    assert_eq!(norm, 50.0);
    assert!(GaussianMechanism::new(1.0, 0.0, NoisePlacement::Central).is_err());
}

#[test]
fn q_one_matches_the_closed_form() {
    // Without subsampling RDP is alpha / (2 z^2) per step.
    let orders = [2.0, 4.5, 32.0];
    let rdp = rdp_poisson_gaussian(1.0, 2.0, &orders).unwrap();
    for (r, a) in rdp.iter().zip(orders) {
        assert!((r - a / 8.0).abs() < 1e-12);
    }
}

#[test]
fn epsilon_grows_with_steps_and_shrinks_with_noise() {
    let mut previous = 0.0;
    for steps in [1, 10, 100, 1000] {
        let eps = epsilon_for(0.05, 1.1, steps, 1e-5).unwrap();
        assert!(eps > previous, "steps {steps}: {eps} <= {previous}");
        previous = eps;
    }
    let mut previous = f64::INFINITY;
    for z in [0.6, 0.9, 1.5, 3.0, 10.0] {
        let eps = epsilon_for(0.05, z, 100, 1e-5).unwrap();
        assert!(eps < previous, "z {z}: {eps} >= {previous}");
        previous = eps;
    }
}

#[test]
fn accountant_rejects_out_of_range_inputs() {
    assert_eq!(
        epsilon_for(0.0, 1.0, 1, 1e-5),
        Err(PrivacyError::SamplingRate(0.0))
    );
    assert_eq!(
        epsilon_for(1.5, 1.0, 1, 1e-5),
        Err(PrivacyError::SamplingRate(1.5))
    );
    assert_eq!(
        epsilon_for(0.5, 0.0, 1, 1e-5),
        Err(PrivacyError::NoiseMultiplier(0.0))
    );
    assert_eq!(epsilon_for(0.5, 1.0, 1, 1.0), Err(PrivacyError::Delta(1.0)));
    assert!(RdpAccountant::with_orders(vec![1.0]).is_err());
    assert_eq!(epsilon_for(0.5, 1.0, 0, 1e-5).unwrap(), 0.0);
}

#[test]
fn noise_search_meets_the_target_tightly() {
    let (q, steps, delta) = (0.1, 200, 1e-5);
    for target in [1.0, 4.0, 10.0] {
        let z = noise_multiplier_for_epsilon(q, steps, delta, target).unwrap();
        assert!(epsilon_for(q, z, steps, delta).unwrap() <= target);
        assert!(epsilon_for(q, z * 0.999, steps, delta).unwrap() > target);
    }
    assert!(noise_multiplier_for_epsilon(q, steps, delta, 0.0).is_err());
}

#[test]
fn ledger_stops_before_the_round_that_would_exceed() {
    let round = GaussianEvent {
        sampling_rate: 1.0,
        noise_multiplier: 5.0,
        steps: 1,
    };
    // Budget between the epsilon of 3 and of 4 rounds.
    let eps3 = epsilon_for(1.0, 5.0, 3, 1e-5).unwrap();
    let eps4 = epsilon_for(1.0, 5.0, 4, 1e-5).unwrap();
    let mut ledger = PrivacyLedger::new(PrivacyBudget::new((eps3 + eps4) / 2.0, 1e-5).unwrap());
    for _ in 0..3 {
        assert!(!ledger.would_exceed(&round).unwrap());
        ledger.spend(&round).unwrap();
    }
    assert!(ledger.would_exceed(&round).unwrap());
    let err = ledger.spend(&round).unwrap_err();
    assert!(matches!(err, PrivacyError::BudgetExceeded { .. }), "{err}");
    assert_eq!(ledger.rounds(), 3);
    assert!((ledger.epsilon_spent().unwrap() - eps3).abs() < 1e-9);
    assert!(PrivacyBudget::new(-1.0, 1e-5).is_err());
}
