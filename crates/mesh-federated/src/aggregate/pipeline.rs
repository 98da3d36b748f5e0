//! The single entry point the simulator and the node call: [`Aggregator`], built from
//! an [`AggregatorConfig`] naming a [`Rule`] and a [`PreAggregation`] step.

use std::fmt;
use std::str::FromStr;

use super::spec::{ParseSpecError, Spec};
use super::{
    bucketing, bulyan, centered_clip, check_shape, first_non_finite, geometric_median, krum,
    median, multi_krum, nearest_neighbour_mixing, trimmed_mean, weighted_mean, AggregateError,
    CenteredClipParams, WeiszfeldParams,
};

/// An aggregation rule. Parse with [`FromStr`] from `name` or `name:key=value,...`:
///
/// | name | parameters |
/// |---|---|
/// | `fedavg` | |
/// | `median` | |
/// | `trimmed-mean` | `trim` (per side; default: the Byzantine count f) |
/// | `krum` | |
/// | `multi-krum` | `m` (updates averaged; default n - f) |
/// | `bulyan` | |
/// | `geomed` | `iters`, `tol`, `nu` (see [`WeiszfeldParams`]) |
/// | `cclip` | `tau`, `iters` (see [`CenteredClipParams`]) |
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// Weighted FedAvg ([`weighted_mean`]); uses the weights.
    FedAvg,
    /// Coordinate-wise median ([`median`]).
    Median,
    /// Coordinate-wise trimmed mean ([`trimmed_mean`]).
    TrimmedMean {
        /// Values trimmed per side; `None` means the Byzantine count.
        trim: Option<usize>,
    },
    /// Krum ([`krum`]).
    Krum,
    /// Multi-Krum ([`multi_krum`]).
    MultiKrum {
        /// Updates averaged; `None` means `n - f`.
        selected: Option<usize>,
    },
    /// Bulyan ([`bulyan`]).
    Bulyan,
    /// Geometric median by smoothed Weiszfeld ([`geometric_median`]); uses the weights.
    GeoMed(WeiszfeldParams),
    /// Centered clipping ([`centered_clip`]) around the previous aggregate.
    CenteredClip(CenteredClipParams),
}

impl Rule {
    /// The accepted rule names, in a stable order.
    pub const NAMES: [&'static str; 8] = [
        "fedavg",
        "median",
        "trimmed-mean",
        "krum",
        "multi-krum",
        "bulyan",
        "geomed",
        "cclip",
    ];

    /// Every rule with default parameters, in the order of [`Rule::NAMES`].
    pub fn all() -> Vec<Rule> {
        vec![
            Rule::FedAvg,
            Rule::Median,
            Rule::TrimmedMean { trim: None },
            Rule::Krum,
            Rule::MultiKrum { selected: None },
            Rule::Bulyan,
            Rule::GeoMed(WeiszfeldParams::default()),
            Rule::CenteredClip(CenteredClipParams::default()),
        ]
    }

    /// The rule's name (as accepted by [`FromStr`]).
    pub fn name(&self) -> &'static str {
        match self {
            Rule::FedAvg => "fedavg",
            Rule::Median => "median",
            Rule::TrimmedMean { .. } => "trimmed-mean",
            Rule::Krum => "krum",
            Rule::MultiKrum { .. } => "multi-krum",
            Rule::Bulyan => "bulyan",
            Rule::GeoMed(_) => "geomed",
            Rule::CenteredClip(_) => "cclip",
        }
    }

    /// The smallest number of inputs this rule accepts with `byzantine` Byzantine ones.
    pub fn n_min(&self, byzantine: usize) -> usize {
        match self {
            Rule::FedAvg => 1,
            Rule::Median | Rule::GeoMed(_) | Rule::CenteredClip(_) => 2 * byzantine + 1,
            Rule::TrimmedMean { trim } => 2 * trim.unwrap_or(byzantine) + 1,
            Rule::Krum | Rule::MultiKrum { .. } => 2 * byzantine + 3,
            Rule::Bulyan => 4 * byzantine + 3,
        }
    }
}

impl fmt::Display for Rule {
    /// Writes the name; the alternate form (`{:#}`) adds non-default parameters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        if !f.alternate() {
            return Ok(());
        }
        match self {
            Rule::TrimmedMean { trim: Some(t) } => write!(f, ":trim={t}"),
            Rule::MultiKrum { selected: Some(m) } => write!(f, ":m={m}"),
            Rule::GeoMed(p) => write!(
                f,
                ":iters={},tol={},nu={}",
                p.iterations_max, p.tolerance, p.smoothing
            ),
            Rule::CenteredClip(p) => write!(f, ":tau={},iters={}", p.radius, p.iterations),
            _ => Ok(()),
        }
    }
}

const RULE_NAMES: &str = "fedavg, median, trimmed-mean, krum, multi-krum, bulyan, geomed, cclip";

impl FromStr for Rule {
    type Err = ParseSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut spec = Spec::parse(text)?;
        let (rule, accepted) = match spec.name.as_str() {
            "fedavg" => (Rule::FedAvg, ""),
            "median" => (Rule::Median, ""),
            "trimmed-mean" | "trimmed_mean" | "trmean" => (
                Rule::TrimmedMean {
                    trim: spec.take("trim")?,
                },
                "trim",
            ),
            "krum" => (Rule::Krum, ""),
            "multi-krum" | "multikrum" => {
                let m = spec.take_checked("m", |m: &usize| *m >= 1, "must be at least 1")?;
                (Rule::MultiKrum { selected: m }, "m")
            }
            "bulyan" => (Rule::Bulyan, ""),
            "geomed" | "rfa" => (Rule::GeoMed(parse_weiszfeld(&mut spec)?), "iters, tol, nu"),
            "cclip" | "centered-clip" => {
                (Rule::CenteredClip(parse_cclip(&mut spec)?), "tau, iters")
            }
            _ => {
                return Err(ParseSpecError::UnknownName {
                    kind: "aggregation rule",
                    name: spec.name,
                    expected: RULE_NAMES,
                })
            }
        };
        spec.finish(if accepted.is_empty() {
            "none"
        } else {
            accepted
        })?;
        Ok(rule)
    }
}

fn parse_weiszfeld(spec: &mut Spec<'_>) -> Result<WeiszfeldParams, ParseSpecError> {
    let d = WeiszfeldParams::default();
    Ok(WeiszfeldParams {
        iterations_max: spec
            .take_checked(
                "iters",
                |i: &usize| (1..=10_000).contains(i),
                "must be in 1..=10000",
            )?
            .unwrap_or(d.iterations_max),
        tolerance: spec
            .take_checked(
                "tol",
                |t: &f64| t.is_finite() && *t >= 0.0,
                "must be finite and >= 0",
            )?
            .unwrap_or(d.tolerance),
        smoothing: spec
            .take_checked("nu", |v: &f64| v.is_finite() && *v > 0.0, "must be > 0")?
            .unwrap_or(d.smoothing),
    })
}

fn parse_cclip(spec: &mut Spec<'_>) -> Result<CenteredClipParams, ParseSpecError> {
    let d = CenteredClipParams::default();
    Ok(CenteredClipParams {
        radius: spec
            .take_checked("tau", |t: &f32| t.is_finite() && *t > 0.0, "must be > 0")?
            .unwrap_or(d.radius),
        iterations: spec
            .take_checked(
                "iters",
                |i: &usize| (1..=1000).contains(i),
                "must be in 1..=1000",
            )?
            .unwrap_or(d.iterations),
    })
}

/// A pre-aggregation step applied before the rule. Parse with [`FromStr`]:
/// `none`, `nnm`, `bucketing` or `bucketing:size=S`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreAggregation {
    /// Pass the updates through unchanged.
    #[default]
    None,
    /// Nearest-neighbour mixing ([`nearest_neighbour_mixing`]).
    Nnm,
    /// Seeded bucketing ([`bucketing`]).
    Bucketing {
        /// Updates per bucket (default 2).
        bucket_size: usize,
    },
}

impl PreAggregation {
    /// Number of inputs the rule sees after this step, given `n` updates.
    pub fn output_count(&self, n: usize) -> usize {
        match self {
            PreAggregation::None | PreAggregation::Nnm => n,
            PreAggregation::Bucketing { bucket_size } => n.div_ceil((*bucket_size).max(1)),
        }
    }
}

impl fmt::Display for PreAggregation {
    /// Writes the name; the alternate form (`{:#}`) adds the bucket size.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreAggregation::None => f.write_str("none"),
            PreAggregation::Nnm => f.write_str("nnm"),
            PreAggregation::Bucketing { bucket_size } if f.alternate() => {
                write!(f, "bucketing:size={bucket_size}")
            }
            PreAggregation::Bucketing { .. } => f.write_str("bucketing"),
        }
    }
}

impl FromStr for PreAggregation {
    type Err = ParseSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut spec = Spec::parse(text)?;
        let pre = match spec.name.as_str() {
            "none" => PreAggregation::None,
            "nnm" => PreAggregation::Nnm,
            "bucketing" => {
                let size = spec.take_checked("size", |s: &usize| *s >= 1, "must be at least 1")?;
                PreAggregation::Bucketing {
                    bucket_size: size.unwrap_or(2),
                }
            }
            _ => {
                return Err(ParseSpecError::UnknownName {
                    kind: "pre-aggregation",
                    name: spec.name,
                    expected: "none, nnm, bucketing",
                })
            }
        };
        spec.finish("size (bucketing only)")?;
        Ok(pre)
    }
}

/// Configuration of an [`Aggregator`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AggregatorConfig {
    /// The aggregation rule.
    pub rule: Rule,
    /// The pre-aggregation step.
    pub pre: PreAggregation,
    /// Number of Byzantine updates `f` to tolerate.
    pub byzantine_count: usize,
    /// Seed of every random choice (bucketing's permutations).
    pub seed: u64,
}

/// Stateful aggregation pipeline: pre-aggregation then rule. It keeps the centre of
/// centered clipping (the previous aggregate) and a call counter that varies
/// bucketing's permutation from round to round, deterministically from the seed.
#[derive(Debug, Clone)]
pub struct Aggregator {
    config: AggregatorConfig,
    calls: u64,
    center: Vec<f32>,
}

impl Aggregator {
    /// Creates an aggregator; nothing is validated until the first call, since the
    /// rules' preconditions depend on `n`.
    pub fn new(config: AggregatorConfig) -> Self {
        Self {
            config,
            calls: 0,
            center: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AggregatorConfig {
        &self.config
    }

    /// The centered-clipping centre (the previous aggregate; empty before the
    /// first call or for other rules), so another node can resume from it.
    pub fn center(&self) -> &[f32] {
        &self.center
    }

    /// Resumes centered clipping around `center` (empty: around zero).
    pub fn restore_center(&mut self, center: Vec<f32>) {
        self.center = center;
    }

    /// Forgets the centered-clipping centre and the call counter.
    pub fn reset(&mut self) {
        self.calls = 0;
        self.center.clear();
    }

    /// Aggregates `updates` (model deltas, local minus global) with `weights` (sample
    /// counts; used by FedAvg and the geometric median, ignored by the others).
    ///
    /// Fails when the updates are empty or ragged, `weights.len() != updates.len()`,
    /// the rule's precondition on `n` (after pre-aggregation) and `f` is violated, or
    /// a NaN or an infinity would reach the aggregate
    /// ([`AggregateError::NonFiniteUpdate`] names an update of `updates`, also after
    /// bucketing).
    pub fn aggregate(
        &mut self,
        updates: &[Vec<f32>],
        weights: &[f32],
    ) -> Result<Vec<f32>, AggregateError> {
        let (n, d) = check_shape(updates)?;
        if weights.len() != n {
            return Err(AggregateError::WeightCount {
                n,
                weights: weights.len(),
            });
        }
        let round = self.calls;
        self.calls += 1;
        let f = self.config.byzantine_count;
        let result = match self.config.pre {
            PreAggregation::None => self.apply_rule(updates, weights, d),
            PreAggregation::Nnm => {
                let mixed = nearest_neighbour_mixing(updates, f)?;
                self.apply_rule(&mixed, weights, d)
            }
            PreAggregation::Bucketing { bucket_size } => {
                let seed =
                    self.config.seed ^ round.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let (buckets, bucket_weights) = bucketing(updates, weights, bucket_size, seed)?;
                self.apply_rule(&buckets, &bucket_weights, d)
                    .map_err(|e| match e {
                        // The rule names a bucket; name an update instead.
                        AggregateError::NonFiniteUpdate { .. } => first_non_finite(updates)
                            .map_or(e, |index| AggregateError::NonFiniteUpdate { index }),
                        other => other,
                    })
            }
        }?;
        if matches!(self.config.rule, Rule::CenteredClip(_)) {
            self.center.clone_from(&result);
        }
        Ok(result)
    }

    fn apply_rule<U: AsRef<[f32]>>(
        &mut self,
        updates: &[U],
        weights: &[f32],
        d: usize,
    ) -> Result<Vec<f32>, AggregateError> {
        let f = self.config.byzantine_count;
        match self.config.rule {
            Rule::FedAvg => weighted_mean(updates, weights),
            Rule::Median => median(updates, f),
            Rule::TrimmedMean { trim } => trimmed_mean(updates, trim.unwrap_or(f)),
            Rule::Krum => krum(updates, f),
            Rule::MultiKrum { selected } => multi_krum(updates, f, selected),
            Rule::Bulyan => bulyan(updates, f),
            Rule::GeoMed(params) => geometric_median(updates, weights, f, &params),
            Rule::CenteredClip(params) => {
                if self.center.len() != d {
                    self.center = vec![0.0; d];
                }
                centered_clip(updates, &self.center, f, &params)
            }
        }
    }
}
