//! Update-level Byzantine attacks used to test robust aggregation (ByzFL's set):
//! sign flipping, label flipping (the poisoning happens in the local data, see
//! [`flip_label`]), Gaussian noise, ALIE ("A Little Is Enough", Baruch et al. 2019),
//! IPM (inner-product manipulation, Xie et al. 2020) and mimic (Karimireddy et al.
//! 2022).
//!
//! Omniscient attacks (ALIE, IPM, mimic) see the honest updates of the round; every
//! random choice comes from the caller's seeded RNG.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::aggregate::spec::Spec;
use crate::aggregate::ParseSpecError;

/// A Byzantine attack. Parse with [`FromStr`] from `name` or `name:key=value`:
///
/// | name | parameter (default) |
/// |---|---|
/// | `none` | |
/// | `sign-flip` | `scale` (1): sends `-scale * own` |
/// | `label-flip` | trains on flipped labels, sends its update unchanged |
/// | `gaussian` | `std` (200): sends `N(0, std^2)` per coordinate |
/// | `alie` | `z` (from n and f, see [`alie_z`]): sends `mean - z * std` of the honest updates |
/// | `ipm` | `epsilon` (0.5): sends `-epsilon * mean` of the honest updates |
/// | `mimic` | `target` (0): copies honest update `target` |
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attack {
    /// Honest behaviour.
    None,
    /// Sends its own update negated and scaled.
    SignFlip {
        /// Factor applied to the negated update.
        scale: f32,
    },
    /// Trains on labels mapped by [`flip_label`]; the update itself is not changed.
    LabelFlip,
    /// Sends pure Gaussian noise.
    Gaussian {
        /// Standard deviation per coordinate.
        std: f32,
    },
    /// A Little Is Enough: the honest coordinate-wise mean minus `z` standard deviations.
    Alie {
        /// Number of standard deviations; `None` means [`alie_z`] (see [`Attack::resolve`]).
        z: Option<f32>,
    },
    /// Inner-product manipulation: the honest mean scaled by `-epsilon`.
    Ipm {
        /// Scale of the negated honest mean.
        epsilon: f32,
    },
    /// Copies one honest node's update.
    Mimic {
        /// Index (modulo the number of honest updates) of the node copied.
        target: usize,
    },
}

impl Attack {
    /// The accepted attack names.
    pub const NAMES: [&'static str; 7] = [
        "none",
        "sign-flip",
        "label-flip",
        "gaussian",
        "alie",
        "ipm",
        "mimic",
    ];

    /// The attack's name (as accepted by [`FromStr`]).
    pub fn name(&self) -> &'static str {
        match self {
            Attack::None => "none",
            Attack::SignFlip { .. } => "sign-flip",
            Attack::LabelFlip => "label-flip",
            Attack::Gaussian { .. } => "gaussian",
            Attack::Alie { .. } => "alie",
            Attack::Ipm { .. } => "ipm",
            Attack::Mimic { .. } => "mimic",
        }
    }

    /// Whether the Byzantine nodes train on flipped labels ([`flip_label`]).
    pub fn poisons_labels(&self) -> bool {
        matches!(self, Attack::LabelFlip)
    }

    /// Flips every label of a Byzantine node's data when this attack poisons labels.
    pub fn poison(&self, data: &mut crate::data::Dataset) {
        if self.poisons_labels() {
            let classes = data.num_classes as u8;
            data.labels
                .iter_mut()
                .for_each(|l| *l = flip_label(*l, classes));
        }
    }

    /// Fills in defaults that depend on the population: ALIE's `z` from `nodes` (n)
    /// and `byzantine` (f) by [`alie_z`]. Other attacks are returned unchanged.
    pub fn resolve(self, nodes: usize, byzantine: usize) -> Attack {
        match self {
            Attack::Alie { z: None } => Attack::Alie {
                z: Some(alie_z(nodes, byzantine)),
            },
            other => other,
        }
    }

    /// The update a Byzantine node sends, given its honestly computed update `own`
    /// and the round's `honest` updates (all of `own`'s dimension).
    ///
    /// Omniscient attacks fall back to `own` when `honest` is empty. An ALIE whose
    /// `z` was not [resolved](Attack::resolve) uses `alie_z(honest.len() + 1, 1)`.
    pub fn craft<R: Rng + ?Sized>(
        &self,
        own: &[f32],
        honest: &[Vec<f32>],
        rng: &mut R,
    ) -> Vec<f32> {
        match *self {
            Attack::None | Attack::LabelFlip => own.to_vec(),
            Attack::SignFlip { scale } => own.iter().map(|&x| -scale * x).collect(),
            Attack::Gaussian { std } => match Normal::new(0.0_f32, std) {
                Ok(normal) => (0..own.len()).map(|_| normal.sample(rng)).collect(),
                Err(_) => own.to_vec(),
            },
            _ if honest.is_empty() => own.to_vec(),
            Attack::Alie { z } => {
                let z = z.unwrap_or_else(|| alie_z(honest.len() + 1, 1));
                let (mean, std) = mean_and_std(honest, own.len());
                mean.iter().zip(&std).map(|(&m, &s)| m - z * s).collect()
            }
            Attack::Ipm { epsilon } => mean_and_std(honest, own.len())
                .0
                .iter()
                .map(|&m| -epsilon * m)
                .collect(),
            Attack::Mimic { target } => honest[target % honest.len()].clone(),
        }
    }
}

/// Maps `label` to `num_classes - 1 - label` (label flipping). Precondition:
/// `label < num_classes`; out-of-range labels map to 0.
pub fn flip_label(label: u8, num_classes: u8) -> u8 {
    debug_assert!(
        label < num_classes,
        "label {label} out of range for {num_classes} classes"
    );
    num_classes.saturating_sub(1).saturating_sub(label)
}

/// ALIE's default `z` for `nodes` (n) and `byzantine` (f) from Baruch et al. 2019:
/// with `s = floor(n/2 + 1) - f` supporters needed, `z = Phi^{-1}((n - s) / n)`.
/// For n = 10, f = 2 this is about 0.253.
pub fn alie_z(nodes: usize, byzantine: usize) -> f32 {
    let n = nodes.max(1) as f64;
    let s = (nodes / 2 + 1) as f64 - byzantine as f64;
    let p = ((n - s) / n).clamp(1e-6, 1.0 - 1e-6);
    inverse_normal_cdf(p) as f32
}

/// `Phi^{-1}(p)` for `p` in (0, 1) by bisection on `Phi(x) = erfc(-x / sqrt 2) / 2`.
fn inverse_normal_cdf(p: f64) -> f64 {
    let (mut lo, mut hi) = (-10.0_f64, 10.0_f64);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if 0.5 * libm::erfc(-mid / std::f64::consts::SQRT_2) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// Coordinate-wise mean and population standard deviation of `rows` (non-empty, each of length `d`).
fn mean_and_std(rows: &[Vec<f32>], d: usize) -> (Vec<f32>, Vec<f32>) {
    let n = rows.len() as f64;
    let mut sum = vec![0.0_f64; d];
    let mut sum_sq = vec![0.0_f64; d];
    for row in rows {
        for ((s, q), &x) in sum.iter_mut().zip(&mut sum_sq).zip(row) {
            *s += f64::from(x);
            *q += f64::from(x) * f64::from(x);
        }
    }
    let mean: Vec<f32> = sum.iter().map(|&s| (s / n) as f32).collect();
    let std = sum
        .iter()
        .zip(&sum_sq)
        .map(|(&s, &q)| (q / n - (s / n) * (s / n)).max(0.0).sqrt() as f32)
        .collect();
    (mean, std)
}

impl fmt::Display for Attack {
    /// Writes the name; the alternate form (`{:#}`) adds the parameter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        if !f.alternate() {
            return Ok(());
        }
        match self {
            Attack::SignFlip { scale } => write!(f, ":scale={scale}"),
            Attack::Gaussian { std } => write!(f, ":std={std}"),
            Attack::Alie { z: Some(z) } => write!(f, ":z={z}"),
            Attack::Ipm { epsilon } => write!(f, ":epsilon={epsilon}"),
            Attack::Mimic { target } => write!(f, ":target={target}"),
            _ => Ok(()),
        }
    }
}

impl FromStr for Attack {
    type Err = ParseSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut spec = Spec::parse(text)?;
        let finite = |v: &f32| v.is_finite();
        let positive = |v: &f32| v.is_finite() && *v > 0.0;
        let (attack, accepted) = match spec.name.as_str() {
            "none" => (Attack::None, "none"),
            "sign-flip" | "signflip" => {
                let scale = spec.take_checked("scale", positive, "must be finite and > 0")?;
                (
                    Attack::SignFlip {
                        scale: scale.unwrap_or(1.0),
                    },
                    "scale",
                )
            }
            "label-flip" | "labelflip" => (Attack::LabelFlip, "none"),
            "gaussian" => {
                let std = spec.take_checked("std", positive, "must be finite and > 0")?;
                (
                    Attack::Gaussian {
                        std: std.unwrap_or(200.0),
                    },
                    "std",
                )
            }
            "alie" => (
                Attack::Alie {
                    z: spec.take_checked("z", finite, "must be finite")?,
                },
                "z",
            ),
            "ipm" => {
                let eps = spec.take_checked("epsilon", finite, "must be finite")?;
                (
                    Attack::Ipm {
                        epsilon: eps.unwrap_or(0.5),
                    },
                    "epsilon",
                )
            }
            "mimic" => (
                Attack::Mimic {
                    target: spec.take("target")?.unwrap_or(0),
                },
                "target",
            ),
            _ => {
                return Err(ParseSpecError::UnknownName {
                    kind: "attack",
                    name: spec.name,
                    expected: "none, sign-flip, label-flip, gaussian, alie, ipm, mimic",
                })
            }
        };
        spec.finish(accepted)?;
        Ok(attack)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(9)
    }

    fn honest() -> Vec<Vec<f32>> {
        vec![vec![1.0, 0.0], vec![3.0, 2.0], vec![5.0, 4.0]]
    }

    #[test]
    fn sign_flip_label_flip_and_none_by_hand() {
        let own = [1.0, -2.0];
        assert_eq!(
            Attack::SignFlip { scale: 3.0 }.craft(&own, &honest(), &mut rng()),
            vec![-3.0, 6.0]
        );
        assert_eq!(
            Attack::LabelFlip.craft(&own, &honest(), &mut rng()),
            own.to_vec()
        );
        assert_eq!(
            Attack::None.craft(&own, &honest(), &mut rng()),
            own.to_vec()
        );
        assert!(Attack::LabelFlip.poisons_labels() && !Attack::None.poisons_labels());
        assert_eq!(flip_label(0, 10), 9);
        assert_eq!(flip_label(7, 10), 2);
    }

    #[test]
    fn omniscient_attacks_by_hand() {
        let own = [0.0, 0.0];
        // Honest mean (3, 2); population std sqrt(8/3) in both coordinates.
        let std = (8.0_f32 / 3.0).sqrt();
        let alie = Attack::Alie { z: Some(1.5) }.craft(&own, &honest(), &mut rng());
        assert!(
            (alie[0] - (3.0 - 1.5 * std)).abs() < 1e-5
                && (alie[1] - (2.0 - 1.5 * std)).abs() < 1e-5
        );
        assert_eq!(
            Attack::Ipm { epsilon: 0.5 }.craft(&own, &honest(), &mut rng()),
            vec![-1.5, -1.0]
        );
        assert_eq!(
            Attack::Mimic { target: 4 }.craft(&own, &honest(), &mut rng()),
            vec![3.0, 2.0]
        );
        assert_eq!(
            Attack::Ipm { epsilon: 0.5 }.craft(&own, &[], &mut rng()),
            own.to_vec()
        );
    }

    #[test]
    fn gaussian_is_seeded_noise_of_the_right_spread() {
        let own = vec![0.0_f32; 10_000];
        let attack = Attack::Gaussian { std: 3.0 };
        let a = attack.craft(&own, &[], &mut rng());
        assert_eq!(a, attack.craft(&own, &[], &mut rng()));
        let var = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / a.len() as f64;
        assert!((var - 9.0).abs() < 0.9, "variance {var}");
    }

    #[test]
    fn alie_default_z_follows_the_paper() {
        // n = 10, f = 2: s = 4, z = Phi^{-1}(0.6) = 0.2533.
        assert!((alie_z(10, 2) - 0.2533).abs() < 1e-3);
        // n = 50, f = 12: s = 14, z = Phi^{-1}(0.72) = 0.5828.
        assert!((alie_z(50, 12) - 0.5828).abs() < 1e-3);
        assert_eq!(
            Attack::Alie { z: None }.resolve(10, 2),
            Attack::Alie {
                z: Some(alie_z(10, 2))
            }
        );
    }

    #[test]
    fn names_round_trip_and_bad_specs_fail() {
        for name in Attack::NAMES {
            let attack: Attack = name.parse().unwrap();
            assert_eq!(attack.to_string(), name);
            assert_eq!(format!("{attack:#}").parse::<Attack>().unwrap(), attack);
        }
        assert_eq!(
            "sign-flip:scale=4".parse::<Attack>().unwrap(),
            Attack::SignFlip { scale: 4.0 }
        );
        assert!("gaussian:std=-1".parse::<Attack>().is_err());
        assert!("ipm:scale=1".parse::<Attack>().is_err());
        assert!("flood"
            .parse::<Attack>()
            .unwrap_err()
            .to_string()
            .contains("sign-flip"));
    }
}
