//! Unit tests with hand-computed values for every rule, and property tests.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

fn rows(values: &[&[f32]]) -> Vec<Vec<f32>> {
    values.iter().map(|r| r.to_vec()).collect()
}

fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32) {
    assert_eq!(actual.len(), expected.len());
    for (a, e) in actual.iter().zip(expected) {
        assert!(
            (a - e).abs() <= tolerance * (1.0 + e.abs()),
            "{actual:?} != {expected:?}"
        );
    }
}

#[test]
fn fedavg_weights_by_sample_count() {
    let u = rows(&[&[1.0, 2.0], &[3.0, 4.0], &[5.0, 0.0]]);
    assert_eq!(weighted_mean(&u, &[1.0, 1.0, 2.0]).unwrap(), vec![3.5, 1.5]);
}

#[test]
fn median_odd_and_even() {
    let u = rows(&[&[1.0, 9.0], &[2.0, 8.0], &[100.0, -5.0]]);
    assert_eq!(median(&u, 1).unwrap(), vec![2.0, 8.0]);
    let u = rows(&[&[1.0], &[2.0], &[3.0], &[10.0]]);
    assert_eq!(median(&u, 1).unwrap(), vec![2.5]);
}

#[test]
fn median_treats_nan_and_infinity_as_outliers() {
    let u = rows(&[&[1.0], &[2.0], &[3.0], &[f32::NAN], &[f32::NEG_INFINITY]]);
    assert_eq!(median(&u, 2).unwrap(), vec![2.0]);
}

#[test]
fn trimmed_mean_drops_extremes() {
    let u = rows(&[
        &[1.0, 0.0],
        &[2.0, 0.0],
        &[3.0, 0.0],
        &[100.0, 6.0],
        &[-50.0, 0.0],
    ]);
    assert_eq!(trimmed_mean(&u, 1).unwrap(), vec![2.0, 0.0]);
    assert_eq!(trimmed_mean(&u, 0).unwrap(), vec![11.2, 1.2]);
    // Trims above four take the selection path: 11 values, 5 dropped per side.
    let u: Vec<Vec<f32>> = [9.0, -4.0, 7.0, 1.0, 3.0, 100.0, 2.0, -8.0, 5.0, 6.0, 0.5]
        .iter()
        .map(|&x| vec![x])
        .collect();
    assert_eq!(trimmed_mean(&u, 5).unwrap(), vec![3.0]);
    assert_eq!(trimmed_mean(&u, 4).unwrap(), vec![(2.0 + 3.0 + 5.0) / 3.0]);
    // Ties at the trimming bounds: 1 1 1 | 1 2 2 | 2 2 2 with trim 3 keeps 1, 2, 2.
    let u: Vec<Vec<f32>> = [2.0, 1.0, 2.0, 1.0, 2.0, 2.0, 1.0, 2.0, 1.0]
        .iter()
        .map(|&x| vec![x])
        .collect();
    assert_eq!(trimmed_mean(&u, 3).unwrap(), vec![5.0 / 3.0]);
    let u: Vec<Vec<f32>> = [4.0; 5].iter().map(|&x| vec![x]).collect();
    assert_eq!(trimmed_mean(&u, 2).unwrap(), vec![4.0]);
}

#[test]
fn krum_and_multi_krum_by_hand() {
    // 1-D points 0, 1, 2, 3, 100 with f = 1: scores over n - f - 2 = 2 neighbours are
    // 5, 2, 2, 5, 97^2 + 98^2; the tie between 1 and 2 goes to the smaller vector.
    let u = rows(&[&[0.0], &[1.0], &[2.0], &[3.0], &[100.0]]);
    assert_eq!(krum_index(&u, 1).unwrap(), 1);
    assert_eq!(krum(&u, 1).unwrap(), vec![1.0]);
    // Multi-Krum averages the n - f = 4 best: 0, 1, 2, 3.
    assert_eq!(multi_krum(&u, 1, None).unwrap(), vec![1.5]);
    assert_eq!(multi_krum(&u, 1, Some(2)).unwrap(), vec![1.5]);
}

#[test]
fn bulyan_by_hand() {
    // Iterated Krum selects 2, 1, 3, 0, 4 (theta = 5); beta = 1 keeps the value closest
    // to the selection's median, 2, in each coordinate.
    let u = rows(&[
        &[0.0, 0.0],
        &[1.0, 0.0],
        &[2.0, 0.0],
        &[3.0, 0.0],
        &[4.0, 0.0],
        &[100.0, 0.0],
        &[-100.0, 0.0],
    ]);
    assert_eq!(bulyan(&u, 1).unwrap(), vec![2.0, 0.0]);
    // With f = 0 Bulyan is the plain mean.
    let u = rows(&[&[1.0], &[2.0], &[6.0]]);
    assert_eq!(bulyan(&u, 0).unwrap(), vec![3.0]);
}

#[test]
fn geometric_median_by_hand() {
    // In 1-D the geometric median of 0, 1, 10 is the median, 1.
    let u = rows(&[&[0.0], &[1.0], &[10.0]]);
    let params = WeiszfeldParams {
        iterations_max: 1000,
        tolerance: 1e-12,
        smoothing: 1e-9,
    };
    let z = geometric_median(&u, &[1.0; 3], 1, &params).unwrap();
    assert_close(&z, &[1.0], 1e-3);
    // The corners of a square have their centre as geometric median; a far outlier
    // with weight below one half moves it only a little.
    let u = rows(&[&[0.0, 0.0], &[2.0, 0.0], &[0.0, 2.0], &[2.0, 2.0]]);
    assert_close(
        &geometric_median(&u, &[1.0; 4], 1, &params).unwrap(),
        &[1.0, 1.0],
        1e-4,
    );
    let u = rows(&[
        &[0.0, 0.0],
        &[2.0, 0.0],
        &[0.0, 2.0],
        &[2.0, 2.0],
        &[1e6, 1e6],
    ]);
    let z = geometric_median(&u, &[1.0; 5], 2, &params).unwrap();
    assert!(z.iter().all(|&c| (0.0..=3.0).contains(&c)), "{z:?}");
}

#[test]
fn centered_clip_by_hand() {
    // ||(3, 4) - 0|| = 5 is clipped to radius 1: (0.6, 0.8); (0, 0.5) is inside.
    let u = rows(&[&[3.0, 4.0], &[0.0, 0.5]]);
    let params = CenteredClipParams {
        radius: 1.0,
        iterations: 1,
    };
    assert_close(
        &centered_clip(&u, &[0.0, 0.0], 0, &params).unwrap(),
        &[0.3, 0.65],
        1e-6,
    );
}

#[test]
fn nnm_and_bucketing_by_hand() {
    let u = rows(&[&[0.0], &[1.0], &[10.0]]);
    let mixed = nearest_neighbour_mixing(&u, 1).unwrap();
    assert_eq!(mixed, vec![vec![0.5], vec![0.5], vec![5.5]]);
    let u = rows(&[&[1.0], &[2.0], &[3.0], &[4.0], &[5.0]]);
    // Unit weights make each bucket's weight its size: two pairs and one single, and
    // size-weighted bucket means add up to the total 15.
    let (buckets, weights) = bucketing(&u, &[1.0; 5], 2, 7).unwrap();
    let mut sizes = weights.clone();
    sizes.sort_by(f32::total_cmp);
    assert_eq!(sizes, vec![1.0, 2.0, 2.0]);
    let total: f32 = buckets.iter().zip(&weights).map(|(b, &w)| b[0] * w).sum();
    assert_eq!(total, 15.0);
    let (_, weights) = bucketing(&u, &[1.0, 1.0, 1.0, 1.0, 10.0], 2, 7).unwrap();
    assert_eq!(weights.iter().sum::<f32>(), 14.0);
    assert_eq!(
        bucketing(&u, &[1.0; 5], 2, 7).unwrap().0,
        bucketing(&u, &[1.0; 5], 2, 7).unwrap().0
    );
}

#[test]
fn preconditions_are_typed_errors() {
    let u4 = rows(&[&[0.0], &[1.0], &[2.0], &[3.0]]);
    let err = krum(&u4, 1).unwrap_err();
    assert_eq!(
        err,
        AggregateError::TooFewUpdates {
            rule: "krum",
            n: 4,
            byzantine: 1,
            required: 5
        }
    );
    let u6 = rows(&[&[0.0], &[1.0], &[2.0], &[3.0], &[4.0], &[5.0]]);
    assert!(matches!(
        bulyan(&u6, 1),
        Err(AggregateError::TooFewUpdates { required: 7, .. })
    ));
    assert!(matches!(
        median(&u4, 2),
        Err(AggregateError::TooFewUpdates { required: 5, .. })
    ));
    let ragged = rows(&[&[0.0, 1.0], &[1.0]]);
    assert!(matches!(
        median(&ragged, 0),
        Err(AggregateError::DimensionMismatch { index: 1, .. })
    ));
    assert_eq!(
        weighted_mean(&u4, &[1.0]).unwrap_err(),
        AggregateError::WeightCount { n: 4, weights: 1 }
    );
    assert_eq!(
        weighted_mean(&u4, &[0.0; 4]).unwrap_err(),
        AggregateError::ZeroTotalWeight
    );
    assert!(matches!(
        weighted_mean(&u4, &[1.0, -1.0, 1.0, 1.0]),
        Err(AggregateError::InvalidWeight { index: 1, .. })
    ));
    let empty: Vec<Vec<f32>> = Vec::new();
    assert_eq!(median(&empty, 0).unwrap_err(), AggregateError::Empty);
    assert!(err.to_string().contains("n >= 5"), "{err}");
}

#[test]
fn rule_and_pre_names_round_trip() {
    for rule in Rule::all() {
        let parsed: Rule = rule.to_string().parse().unwrap();
        assert_eq!(parsed, rule);
        let parsed: Rule = format!("{rule:#}").parse().unwrap();
        assert_eq!(parsed, rule);
    }
    for pre in [
        PreAggregation::None,
        PreAggregation::Nnm,
        PreAggregation::Bucketing { bucket_size: 3 },
    ] {
        assert_eq!(format!("{pre:#}").parse::<PreAggregation>().unwrap(), pre);
    }
    assert_eq!(
        "bucketing".parse::<PreAggregation>().unwrap(),
        PreAggregation::Bucketing { bucket_size: 2 }
    );
    assert_eq!(
        "cclip:tau=5".parse::<Rule>().unwrap(),
        Rule::CenteredClip(CenteredClipParams {
            radius: 5.0,
            iterations: 3
        })
    );
    assert!("krum:tau=1".parse::<Rule>().is_err());
    assert!("bogus"
        .parse::<Rule>()
        .unwrap_err()
        .to_string()
        .contains("fedavg"));
}

#[test]
fn aggregator_keeps_cclip_centre_and_composes_pre() {
    let config = AggregatorConfig {
        rule: Rule::CenteredClip(CenteredClipParams {
            radius: 1.0,
            iterations: 1,
        }),
        pre: PreAggregation::None,
        byzantine_count: 0,
        seed: 1,
    };
    let mut agg = Aggregator::new(config);
    let u = rows(&[&[4.0], &[4.0]]);
    // From centre 0 each update is clipped to 1; the next call starts from 1.
    assert_eq!(agg.aggregate(&u, &[1.0, 1.0]).unwrap(), vec![1.0]);
    assert_eq!(agg.aggregate(&u, &[1.0, 1.0]).unwrap(), vec![2.0]);
    agg.reset();
    assert_eq!(agg.aggregate(&u, &[1.0, 1.0]).unwrap(), vec![1.0]);

    let u = rows(&[&[0.0], &[1.0], &[2.0], &[3.0], &[1000.0]]);
    let mut agg = Aggregator::new(AggregatorConfig {
        rule: Rule::Median,
        pre: PreAggregation::Nnm,
        byzantine_count: 1,
        seed: 0,
    });
    // NNM (keep 4): 1.5, 1.5, 1.5, 1.5, 251.5 -> median 1.5.
    assert_eq!(agg.aggregate(&u, &[1.0; 5]).unwrap(), vec![1.5]);
    let mut agg = Aggregator::new(AggregatorConfig {
        rule: Rule::Krum,
        pre: PreAggregation::Bucketing { bucket_size: 2 },
        byzantine_count: 1,
        seed: 0,
    });
    // 5 updates become 3 buckets; Krum with f = 1 needs 5.
    assert!(matches!(
        agg.aggregate(&u, &[1.0; 5]),
        Err(AggregateError::TooFewUpdates { n: 3, .. })
    ));
    assert!(matches!(
        agg.aggregate(&u, &[1.0; 4]),
        Err(AggregateError::WeightCount { .. })
    ));
}

#[test]
fn server_optimizers_by_hand() {
    let mut sgd = ServerOptimizer::sgd(2.0);
    let mut global = vec![1.0, 1.0];
    sgd.apply(&mut global, &[0.5, -1.0]).unwrap();
    assert_eq!(global, vec![2.0, -1.0]);

    let (lr, tau) = (0.01_f32, 1e-3_f32);
    let mut adam = ServerOptimizer::fedadam(lr);
    let mut yogi: ServerOptimizer = "fedyogi:lr=0.01".parse().unwrap();
    let (mut xa, mut xy) = (vec![0.0_f32], vec![0.0_f32]);
    adam.apply(&mut xa, &[1.0]).unwrap();
    yogi.apply(&mut xy, &[1.0]).unwrap();
    // m = 0.1; Adam v = 0.99 tau^2 + 0.01; Yogi v = tau^2 + 0.01 (since tau^2 < 1).
    let va = 0.99 * tau * tau + 0.01;
    let vy = tau * tau + 0.01;
    assert_close(&xa, &[lr * 0.1 / (va.sqrt() + tau)], 1e-6);
    assert_close(&xy, &[lr * 0.1 / (vy.sqrt() + tau)], 1e-6);
    assert!(adam.apply(&mut [0.0; 2], &[1.0, 1.0]).is_err());
    assert!(sgd.apply(&mut global, &[1.0]).is_err());
    assert_eq!(
        "fedadam".parse::<ServerOptimizer>().unwrap().to_string(),
        "fedadam"
    );
    assert!("fedadam:beta1=1.5".parse::<ServerOptimizer>().is_err());
}

/// `n` updates of dimension `d` with values in [-100, 100].
fn updates_strategy() -> impl Strategy<Value = Vec<Vec<f32>>> {
    (7_usize..12, 1_usize..6).prop_flat_map(|(n, d)| {
        prop::collection::vec(prop::collection::vec(-100.0_f32..100.0, d), n)
    })
}

/// Every rule that accepts n = 7, f = 1; the geometric median is iterated to
/// convergence so summation order cannot change where it stops.
fn all_rules_f1() -> Vec<Rule> {
    let tight = WeiszfeldParams {
        iterations_max: 2000,
        tolerance: 1e-14,
        smoothing: 1e-9,
    };
    Rule::all()
        .into_iter()
        .filter(|r| r.n_min(1) <= 7)
        .map(|r| {
            if let Rule::GeoMed(_) = r {
                Rule::GeoMed(tight)
            } else {
                r
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn rules_are_permutation_invariant(
        (u, permuted) in updates_strategy().prop_flat_map(|u| (Just(u.clone()), Just(u).prop_shuffle()))
    ) {
        let weights = vec![1.0_f32; u.len()];
        for rule in all_rules_f1() {
            let config = AggregatorConfig { rule, pre: PreAggregation::None, byzantine_count: 1, seed: 3 };
            let a = Aggregator::new(config).aggregate(&u, &weights).unwrap();
            let b = Aggregator::new(config).aggregate(&permuted, &weights).unwrap();
            for (x, y) in a.iter().zip(&b) {
                prop_assert!((x - y).abs() <= 1e-3 * (1.0 + x.abs()), "{rule}: {a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn trimmed_mean_without_trim_is_mean(u in updates_strategy()) {
        let mean = weighted_mean(&u, &vec![1.0; u.len()]).unwrap();
        let trimmed = trimmed_mean(&u, 0).unwrap();
        for (x, y) in mean.iter().zip(&trimmed) {
            prop_assert!((x - y).abs() <= 1e-4 * (1.0 + x.abs()));
        }
    }

    #[test]
    fn median_and_trimmed_mean_stay_in_honest_range(
        honest in updates_strategy(),
        f in 1_usize..7,
        outlier in prop_oneof![Just(f32::NAN), Just(f32::INFINITY), Just(-f32::INFINITY), -1e30_f32..1e30],
    ) {
        let d = honest[0].len();
        let mut all = honest.clone();
        for k in 0..f {
            let sign = if k % 2 == 0 { 1.0 } else { -1.0 };
            all.push(vec![sign * outlier; d]);
        }
        for out in [median(&all, f).unwrap(), trimmed_mean(&all, f).unwrap()] {
            for (j, &x) in out.iter().enumerate() {
                let lo = honest.iter().map(|h| h[j]).fold(f32::INFINITY, f32::min);
                let hi = honest.iter().map(|h| h[j]).fold(f32::NEG_INFINITY, f32::max);
                prop_assert!(x >= lo - 1e-3 && x <= hi + 1e-3, "{x} outside [{lo}, {hi}]");
            }
        }
    }

    #[test]
    fn krum_returns_one_of_its_inputs(u in updates_strategy(), f in 0_usize..3) {
        let chosen = krum(&u, f).unwrap();
        prop_assert!(u.contains(&chosen));
    }
}

#[test]
fn alternate_display_round_trips_rules_with_parameters() {
    for text in [
        "fedavg",
        "trimmed-mean:trim=2",
        "multi-krum:m=3",
        "geomed:iters=50,tol=0.001,nu=0.000001",
        "cclip:tau=2,iters=5",
    ] {
        let rule: Rule = text.parse().unwrap();
        let again: Rule = format!("{rule:#}").parse().unwrap();
        assert_eq!(again, rule, "{text} -> {rule:#}");
    }
}

/// Twelve updates of dimension 37 around 1.0, the sixth of which is `bad` in
/// coordinate 20 (`whole`: in every coordinate).
fn twelve_with_one_bad(bad: f32, whole: bool) -> Vec<Vec<f32>> {
    let mut u: Vec<Vec<f32>> = (0..12)
        .map(|i| {
            (0..37)
                .map(|j| 1.0 + ((i * 37 + j) % 11) as f32 * 0.01)
                .collect()
        })
        .collect();
    if whole {
        u[5].fill(bad);
    } else {
        u[5][20] = bad;
    }
    u
}

/// `u` without update `index`.
fn without(u: &[Vec<f32>], index: usize) -> Vec<Vec<f32>> {
    let mut rest = u.to_vec();
    rest.remove(index);
    rest
}

/// Every rule, with parameters that make a non-finite update visible: a centred
/// clipping radius larger than the updates and a geometric median run to convergence.
fn every_rule() -> Vec<Rule> {
    Rule::all()
        .into_iter()
        .map(|rule| match rule {
            Rule::CenteredClip(_) => Rule::CenteredClip(CenteredClipParams {
                radius: 100.0,
                iterations: 3,
            }),
            other => other,
        })
        .collect()
}

#[test]
fn every_rule_neutralises_or_rejects_a_non_finite_update() {
    let pres = [
        PreAggregation::None,
        PreAggregation::Nnm,
        PreAggregation::Bucketing { bucket_size: 1 },
    ];
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for whole in [false, true] {
            let u = twelve_with_one_bad(bad, whole);
            for rule in every_rule() {
                for pre in pres {
                    let config = AggregatorConfig {
                        rule,
                        pre,
                        byzantine_count: 2,
                        seed: 1,
                    };
                    let got = Aggregator::new(config).aggregate(&u, &[1.0; 12]);
                    let case = format!("{rule} after {pre} with {bad} (whole: {whole})");
                    match (rule, got) {
                        (Rule::FedAvg, Err(e)) => {
                            assert_eq!(e, AggregateError::NonFiniteUpdate { index: 5 }, "{case}")
                        }
                        (Rule::FedAvg, Ok(out)) => panic!("{case}: accepted, gave {out:?}"),
                        (_, Ok(out)) => {
                            assert!(
                                out.iter().all(|x| (0.9..1.2).contains(x)),
                                "{case}: {out:?}"
                            )
                        }
                        (_, Err(e)) => panic!("{case}: {e}"),
                    }
                }
            }
        }
    }
}

#[test]
fn centered_clip_with_a_non_finite_update_stays_finite() {
    let params = CenteredClipParams {
        radius: 100.0,
        iterations: 1,
    };
    for bad in [f32::NAN, f32::INFINITY] {
        let u = twelve_with_one_bad(bad, false);
        let out = centered_clip(&u, &[0.0; 37], 2, &params).unwrap();
        // The bad update moves nothing: the others, unclipped, give 11/12 of their mean.
        let honest = without(&u, 5);
        let mean = weighted_mean(&honest, &[1.0; 11]).unwrap();
        let expected: Vec<f32> = mean.iter().map(|m| m * 11.0 / 12.0).collect();
        assert_close(&out, &expected, 1e-6);
    }
    let err = centered_clip(
        &twelve_with_one_bad(0.0, false),
        &[f32::NAN; 37],
        2,
        &params,
    );
    assert!(matches!(
        err,
        Err(AggregateError::InvalidParameter { name: "center", .. })
    ));
}

#[test]
fn geometric_median_with_a_non_finite_update_stays_finite() {
    let params = WeiszfeldParams {
        iterations_max: 500,
        tolerance: 1e-12,
        smoothing: 1e-9,
    };
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let u = twelve_with_one_bad(bad, false);
        let out = geometric_median(&u, &[1.0; 12], 2, &params).unwrap();
        // The bad update is infinitely far: the median is that of the other eleven.
        let honest = without(&u, 5);
        let expected = geometric_median(&honest, &[1.0; 11], 2, &params).unwrap();
        assert_close(&out, &expected, 1e-5);
    }
    let all_bad = vec![vec![f32::NAN; 3]; 3];
    assert_eq!(
        geometric_median(&all_bad, &[1.0; 3], 1, &params).unwrap_err(),
        AggregateError::NonFiniteUpdate { index: 0 }
    );
}

#[test]
fn too_many_non_finite_updates_are_rejected_with_their_index() {
    // Three infinities among five: the median of that coordinate is infinite.
    let u = rows(&[
        &[1.0, 1.0],
        &[2.0, f32::INFINITY],
        &[3.0, f32::INFINITY],
        &[4.0, f32::INFINITY],
        &[5.0, 0.0],
    ]);
    assert_eq!(
        median(&u, 2).unwrap_err(),
        AggregateError::NonFiniteUpdate { index: 1 }
    );
    assert_eq!(
        trimmed_mean(&u, 2).unwrap_err(),
        AggregateError::NonFiniteUpdate { index: 1 }
    );
    assert_eq!(
        trimmed_mean(&u, 0).unwrap_err(),
        AggregateError::NonFiniteUpdate { index: 1 }
    );
    // A zero weight keeps a NaN out of FedAvg; a positive one is named.
    let u = rows(&[&[1.0], &[f32::NAN], &[3.0], &[f32::NAN]]);
    assert_eq!(weighted_mean(&u, &[1.0, 0.0, 1.0, 0.0]).unwrap(), vec![2.0]);
    assert_eq!(
        weighted_mean(&u, &[1.0, 0.0, 1.0, 1.0]).unwrap_err(),
        AggregateError::NonFiniteUpdate { index: 3 }
    );
}

/// Smoothed Weiszfeld written plainly in `f64`, the reference.
fn weiszfeld_reference(u: &[Vec<f32>], iterations: usize, nu: f64) -> Vec<f64> {
    let d = u[0].len();
    let n = u.len() as f64;
    let mut z: Vec<f64> = (0..d)
        .map(|j| u.iter().map(|r| f64::from(r[j])).sum::<f64>() / n)
        .collect();
    for _ in 0..iterations {
        let beta: Vec<f64> = u
            .iter()
            .map(|r| {
                let dist: f64 = r
                    .iter()
                    .zip(&z)
                    .map(|(&x, &c)| (f64::from(x) - c).powi(2))
                    .sum();
                1.0 / dist.sqrt().max(nu)
            })
            .collect();
        let total: f64 = beta.iter().sum();
        z = (0..d)
            .map(|j| {
                u.iter()
                    .zip(&beta)
                    .map(|(r, b)| b * f64::from(r[j]))
                    .sum::<f64>()
                    / total
            })
            .collect();
    }
    z
}

#[test]
fn geometric_median_matches_reference_weiszfeld() {
    let u = bench::synthetic_updates(15, 1000, 9);
    let params = WeiszfeldParams {
        iterations_max: 3,
        tolerance: 0.0,
        smoothing: 0.1,
    };
    let got = geometric_median(&u, &[1.0; 15], 3, &params).unwrap();
    let expected = weiszfeld_reference(&u, 3, 0.1);
    for (g, e) in got.iter().zip(&expected) {
        assert!(
            (f64::from(*g) - e).abs() <= 1e-5 * (1.0 + e.abs()),
            "{g} vs {e}"
        );
    }
}

#[test]
fn nnm_mixing_product_matches_means_of_neighbours() {
    // 13 updates of dimension 101: the product's full steps, a partial group of
    // outputs and the column tail all run.
    let u = bench::synthetic_updates(13, 101, 4);
    let f = 3;
    let mixed = nearest_neighbour_mixing(&u, f).unwrap();
    let dist = krum::pairwise_sq_distances(&u).unwrap();
    for (i, m) in mixed.iter().enumerate() {
        let mut order: Vec<usize> = (0..13).collect();
        order.sort_by(|&a, &b| {
            let key = |k: usize| if k == i { -1.0 } else { dist[i * 13 + k] };
            key(a).total_cmp(&key(b))
        });
        let expected = mean_of(&u, &order[..13 - f], 101);
        assert_close(m, &expected, 1e-6);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn gram_distances_match_naive_distances_with_offsets(
        u in updates_strategy(),
        offset in prop_oneof![Just(0.0_f32), -1e4_f32..1e4],
    ) {
        let shifted: Vec<Vec<f32>> = u.iter().map(|r| r.iter().map(|x| x * 1e-3 + offset).collect()).collect();
        let n = shifted.len();
        let got = krum::pairwise_sq_distances(&shifted).unwrap();
        for i in 0..n {
            for j in 0..n {
                let naive: f64 = shifted[i]
                    .iter()
                    .zip(&shifted[j])
                    .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                    .sum();
                prop_assert!((got[i * n + j] - naive).abs() <= 1e-4 * naive, "{} vs {naive}", got[i * n + j]);
            }
        }
    }
}
