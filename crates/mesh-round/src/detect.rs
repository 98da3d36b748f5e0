//! Detection: which inputs of a round's combination were outliers, scored by
//! the final aggregators from what they combine.
//!
//! ```text
//!   inputs x_1..x_n (updates, or group means with secure aggregation)
//!   robust aggregate a  (the job's rule over the inputs)
//!   d_i = ||x_i - a||_2         c_i = cos(x_i, a)
//!   far:       d_i > median(d) + MAD_FACTOR * mad(d)  and  d_i > DISTANCE_RATIO_MIN * median(d)
//!   turned:    c_i < median(c) - MAD_FACTOR * mad(c)  and  c_i < COSINE_RATIO_MAX * median(c)
//!   outlier  <=>  far or turned (and d_i > ABSOLUTE_FLOOR)
//! ```
//!
//! Why these two: the rule is built to land among the honest inputs, so an
//! input far from it (scaled, random) or pointing away from it (sign-flipped)
//! is unlike the honest ones. Measured on MNIST with an MLP, a sign-flipped
//! update is only 1.2-1.5x farther from the trimmed mean than honest updates
//! are (local SGD noise dominates both), but its cosine with the aggregate is
//! negative or near zero while honest cosines cluster at 0.4-0.65. The median
//! and the median absolute deviation (mad) set the scale, so the test adapts
//! to how spread honest inputs are (non-IID data spreads them) and a minority
//! of attackers cannot move it; the ratio to the median keeps an ordinary
//! member of a tight cluster from being flagged for a tiny difference.
//! Inputs shaped to stay within the honest spread (ALIE) are not flagged:
//! they are also the ones the rule cannot tell apart.
//!
//! Only jobs that declare Byzantine participants (`byzantine_count > 0`) are
//! scored: with f = 0 the operator expects none, and honest inputs of small or
//! skewed data sets are often far from the mean (ten nodes of 45 breast-cancer
//! rows each put one honest node past the thresholds in most rounds).
//!
//! The score is deterministic (f64 sums in input order), so two final
//! aggregators that agree on the model also agree on the outliers, and the
//! coordinator commits only what they agree on. One flag lowers a node's
//! reputation a little (`penalty(AnomalousUpdate)`); a node is quarantined
//! only when it stays an outlier round after round.

/// An outlier lies this many median absolute deviations beyond the median.
pub const MAD_FACTOR: f64 = 5.0;
/// A far input is also at least this many times the median distance.
pub const DISTANCE_RATIO_MIN: f64 = 1.5;
/// A turned input's cosine is also below this fraction of the median cosine.
pub const COSINE_RATIO_MAX: f64 = 0.6;
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
    let scores: Vec<(f64, f64)> = inputs
        .iter()
        .map(|x| distance_and_cosine(x.as_ref(), aggregate))
        .collect();
    let distances: Vec<f64> = scores.iter().map(|s| s.0).collect();
    let cosines: Vec<f64> = scores.iter().map(|s| s.1).collect();
    let (Some((d_median, d_spread)), Some((c_median, c_spread))) =
        (center_and_spread(&distances), center_and_spread(&cosines))
    else {
        return Vec::new();
    };
    let far = (d_median + MAD_FACTOR * d_spread).max(DISTANCE_RATIO_MIN * d_median);
    let turned = (c_median - MAD_FACTOR * c_spread).min(COSINE_RATIO_MAX * c_median);
    scores
        .iter()
        .enumerate()
        .filter(|(_, (d, c))| {
            !d.is_finite() || !c.is_finite() || (*d > ABSOLUTE_FLOOR && (*d > far || *c < turned))
        })
        .map(|(i, _)| i as u32)
        .collect()
}

/// Median and median absolute deviation of the finite values.
fn center_and_spread(values: &[f64]) -> Option<(f64, f64)> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let median = median_of(finite.clone())?;
    let spread = median_of(finite.iter().map(|v| (v - median).abs()).collect())?;
    Some((median, spread))
}

fn median_of(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// L2 distance and cosine similarity of `x` to `a` (infinite and NaN for
/// another length; cosine 0 when either is zero).
fn distance_and_cosine(x: &[f32], a: &[f32]) -> (f64, f64) {
    if x.len() != a.len() {
        return (f64::INFINITY, f64::NAN);
    }
    let (mut dd, mut xa, mut xx, mut aa) = (0.0_f64, 0.0_f64, 0.0_f64, 0.0_f64);
    for (&x, &a) in x.iter().zip(a) {
        let (x, a) = (f64::from(x), f64::from(a));
        dd += (x - a) * (x - a);
        xa += x * a;
        xx += x * x;
        aa += a * a;
    }
    let norms = (xx * aa).sqrt();
    let cosine = if norms > 0.0 { xa / norms } else { 0.0 };
    (dd.sqrt(), cosine)
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

    /// Sign-flipped updates no farther from the aggregate than honest ones
    /// (local noise dominates) still point away from it.
    #[test]
    fn a_sign_flipped_input_of_ordinary_length_is_caught_by_its_direction() {
        let signal = [1.0_f32, 1.0, 0.0, 0.0];
        let noise = |i: usize| {
            let s = if i.is_multiple_of(2) { 1.0 } else { -1.0 };
            [0.0, 0.0, 1.2 * s, 0.9 * s + 0.05 * i as f32]
        };
        let mut inputs: Vec<Vec<f32>> = (0..6)
            .map(|i| signal.iter().zip(noise(i)).map(|(a, b)| a + b).collect())
            .collect();
        let flipped: Vec<f32> = inputs[0].iter().map(|v| -v).collect();
        inputs.push(flipped);
        assert_eq!(outliers(&inputs, &signal), vec![6]);
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
