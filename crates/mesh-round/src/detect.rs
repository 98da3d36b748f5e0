//! Detection: which inputs of a round's combination were outliers, scored by
//! the final aggregators from what they combine.
//!
//! ```text
//!   inputs x_1..x_n (updates, or group means with secure aggregation)
//!   robust aggregate a  (the job's rule over the inputs)
//!   d_i = ||x_i - a||_2            distance of each input to the aggregate
//!   outlier  <=>  d_i > OUTLIER_FACTOR * median(d)  and  d_i > ABSOLUTE_FLOOR
//! ```
//!
//! Why the distance to the robust aggregate: the rule is built to land among
//! the honest inputs, so an input far from it (sign-flipped, scaled, random)
//! is far from the honest ones; the median distance sets the scale, so the
//! test adapts to how spread honest updates are (non-IID data spreads them).
//! Inputs shaped to stay within the honest spread (ALIE) are not flagged:
//! they are also the ones the rule cannot tell apart.
//!
//! The score is deterministic (f64 sums in input order), so two final
//! aggregators that agree on the model also agree on the outliers, and the
//! coordinator commits only what they agree on. One flag lowers a node's
//! reputation a little (`penalty(AnomalousUpdate)`); a node is quarantined
//! only when it stays an outlier round after round.

/// An input this many times farther from the aggregate than the median input is an outlier.
pub const OUTLIER_FACTOR: f64 = 3.0;
/// Distances at or below this (L2, in parameter units) are never outliers,
/// so a round where every input is nearly identical flags nothing.
pub const ABSOLUTE_FLOOR: f64 = 1e-6;
/// Fewest inputs for a median to mean anything.
pub const INPUTS_MIN: usize = 3;

/// Indices of the inputs that are outliers relative to `aggregate` (empty
/// with fewer than [`INPUTS_MIN`] inputs). Inputs of another length than the
/// aggregate are outliers.
pub fn outliers<U: AsRef<[f32]>>(inputs: &[U], aggregate: &[f32]) -> Vec<u32> {
    if inputs.len() < INPUTS_MIN {
        return Vec::new();
    }
    let distances: Vec<f64> = inputs
        .iter()
        .map(|x| distance(x.as_ref(), aggregate))
        .collect();
    let mut sorted: Vec<f64> = distances
        .iter()
        .copied()
        .filter(|d| d.is_finite())
        .collect();
    sorted.sort_by(f64::total_cmp);
    let Some(&median) = sorted.get(sorted.len() / 2) else {
        return Vec::new();
    };
    let bound = (OUTLIER_FACTOR * median).max(ABSOLUTE_FLOOR);
    distances
        .iter()
        .enumerate()
        .filter(|(_, d)| !d.is_finite() || **d > bound)
        .map(|(i, _)| i as u32)
        .collect()
}

fn distance(x: &[f32], a: &[f32]) -> f64 {
    if x.len() != a.len() {
        return f64::INFINITY;
    }
    x.iter()
        .zip(a)
        .map(|(&x, &a)| {
            let d = f64::from(x) - f64::from(a);
            d * d
        })
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sign_flipped_input_stands_out_and_honest_spread_does_not() {
        let honest: Vec<Vec<f32>> = (0..8)
            .map(|i| vec![1.0 + 0.1 * i as f32, 2.0 - 0.05 * i as f32, 0.5])
            .collect();
        let aggregate = vec![1.35, 1.8, 0.5];
        let mut inputs = honest.clone();
        inputs.push(vec![-4.0, -8.0, -2.0]);
        assert_eq!(outliers(&inputs, &aggregate), vec![8]);
        assert!(outliers(&honest, &aggregate).is_empty());
    }

    #[test]
    fn identical_inputs_and_tiny_rounds_flag_nothing() {
        let same = vec![vec![1.0_f32; 4]; 5];
        assert!(outliers(&same, &[1.0; 4]).is_empty());
        let two = vec![vec![0.0_f32; 2], vec![100.0; 2]];
        assert!(outliers(&two, &[0.0; 2]).is_empty());
    }

    #[test]
    fn a_wrong_length_or_non_finite_input_is_an_outlier() {
        let inputs = vec![
            vec![1.0_f32, 1.0],
            vec![1.1, 0.9],
            vec![0.9, 1.1],
            vec![1.0],
            vec![f32::NAN, 1.0],
        ];
        assert_eq!(outliers(&inputs, &[1.0, 1.0]), vec![3, 4]);
    }
}
