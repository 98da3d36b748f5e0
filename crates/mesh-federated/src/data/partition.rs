//! Splitting one data set across nodes, the way federated-learning papers do.
//!
//! Every partitioner is seeded and returns, per node, the row indices it owns.
//! Each row goes to exactly one node.
//!
//! | name | what it models |
//! |---|---|
//! | `iid` | uniform random split, equal sizes |
//! | `dirichlet:ALPHA` | label skew: each class is spread over nodes with proportions from Dir(alpha) (small alpha = more skew) |
//! | `shards` | McMahan et al. 2017: rows sorted by label, cut into 2 shards per node, 2 random shards each |
//! | `quantity:ALPHA` | quantity skew: node sizes from Dir(alpha), contents IID |

use super::DataError;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};
use std::fmt;
use std::str::FromStr;

/// Bound on Dirichlet re-draws when a draw leaves some node with too few rows.
const MAX_DIRICHLET_DRAWS: usize = 1000;

/// How rows are split across nodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Partition {
    /// Uniform random split.
    Iid,
    /// Label skew with concentration `alpha`.
    Dirichlet {
        /// Dirichlet concentration (> 0).
        alpha: f64,
    },
    /// Two label-sorted shards per node.
    Shards,
    /// Quantity skew with concentration `alpha`.
    Quantity {
        /// Dirichlet concentration (> 0).
        alpha: f64,
    },
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partition::Iid => write!(f, "iid"),
            Partition::Dirichlet { alpha } => write!(f, "dirichlet:{alpha}"),
            Partition::Shards => write!(f, "shards"),
            Partition::Quantity { alpha } => write!(f, "quantity:{alpha}"),
        }
    }
}

impl FromStr for Partition {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let alpha = || -> Result<f64, DataError> {
            let a: f64 = arg.unwrap_or("0.5").parse().map_err(|_| {
                DataError::InvalidParameter(format!("partition {s:?}: alpha must be a number"))
            })?;
            if !(a > 0.0 && a.is_finite()) {
                return Err(DataError::InvalidParameter(format!(
                    "partition {s:?}: alpha must be positive"
                )));
            }
            Ok(a)
        };
        match name {
            "iid" => Ok(Partition::Iid),
            "dirichlet" => Ok(Partition::Dirichlet { alpha: alpha()? }),
            "shards" => Ok(Partition::Shards),
            "quantity" => Ok(Partition::Quantity { alpha: alpha()? }),
            _ => Err(DataError::InvalidParameter(format!(
                "unknown partition {s:?}; expected iid, dirichlet[:ALPHA], shards or quantity[:ALPHA]"
            ))),
        }
    }
}

impl Partition {
    /// Splits rows with the given `labels` across `nodes` nodes.
    pub fn split(
        &self,
        labels: &[u8],
        num_classes: usize,
        nodes: usize,
        seed: u64,
    ) -> Result<Vec<Vec<usize>>, DataError> {
        if nodes == 0 || nodes > labels.len() {
            return Err(DataError::InvalidParameter(format!(
                "cannot split {} rows across {nodes} nodes",
                labels.len()
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        match *self {
            Partition::Iid => Ok(iid(labels.len(), nodes, &mut rng)),
            Partition::Dirichlet { alpha } => {
                dirichlet(labels, num_classes, nodes, alpha, &mut rng)
            }
            Partition::Shards => shards(labels, nodes, &mut rng),
            Partition::Quantity { alpha } => quantity(labels.len(), nodes, alpha, &mut rng),
        }
    }
}

/// One node's share of a split: shard `shard` of `shards`, split by
/// `partition` with `seed`. Every node that splits the same rows with the
/// same values gets the same shards, so nodes agree without talking.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shard {
    /// How rows are split.
    pub partition: Partition,
    /// Shards in all (nodes sharing the set).
    pub shards: usize,
    /// This node's shard, below `shards`.
    pub shard: usize,
    /// Seed of the split.
    pub seed: u64,
}

impl Shard {
    /// The rows of this shard, for a set with these `labels`.
    pub fn rows(&self, labels: &[u8], num_classes: usize) -> Result<Vec<usize>, DataError> {
        if self.shard >= self.shards {
            return Err(DataError::InvalidParameter(format!(
                "no shard {} of {}",
                self.shard, self.shards
            )));
        }
        let mut all = self
            .partition
            .split(labels, num_classes, self.shards, self.seed)?;
        Ok(std::mem::take(&mut all[self.shard]))
    }
}

fn iid(rows: usize, nodes: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..rows).collect();
    order.shuffle(rng);
    (0..nodes)
        .map(|k| order[k * rows / nodes..(k + 1) * rows / nodes].to_vec())
        .collect()
}

fn dirichlet_draw(alpha: f64, k: usize, rng: &mut ChaCha8Rng) -> Result<Vec<f64>, DataError> {
    let gamma = Gamma::new(alpha, 1.0)
        .map_err(|e| DataError::InvalidParameter(format!("dirichlet alpha {alpha}: {e}")))?;
    let mut draw: Vec<f64> = (0..k).map(|_| gamma.sample(rng).max(1e-300)).collect();
    let total: f64 = draw.iter().sum();
    draw.iter_mut().for_each(|p| *p /= total);
    Ok(draw)
}

/// Cuts `items` into consecutive pieces with the given proportions.
fn cut_by_proportions(items: &[usize], proportions: &[f64]) -> Vec<Vec<usize>> {
    let mut out = Vec::with_capacity(proportions.len());
    let mut cumulative = 0.0;
    let mut start = 0;
    for (i, p) in proportions.iter().enumerate() {
        cumulative += p;
        let end = if i + 1 == proportions.len() {
            items.len()
        } else {
            ((cumulative * items.len() as f64).round() as usize).clamp(start, items.len())
        };
        out.push(items[start..end].to_vec());
        start = end;
    }
    out
}

fn dirichlet(
    labels: &[u8],
    num_classes: usize,
    nodes: usize,
    alpha: f64,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Vec<usize>>, DataError> {
    let min_rows = (labels.len() / nodes / 10).clamp(1, 10);
    for _ in 0..MAX_DIRICHLET_DRAWS {
        let mut parts = vec![Vec::new(); nodes];
        for class in 0..num_classes {
            let mut rows: Vec<usize> = (0..labels.len())
                .filter(|&i| usize::from(labels[i]) == class)
                .collect();
            rows.shuffle(rng);
            let proportions = dirichlet_draw(alpha, nodes, rng)?;
            for (part, piece) in parts
                .iter_mut()
                .zip(cut_by_proportions(&rows, &proportions))
            {
                part.extend(piece);
            }
        }
        if parts.iter().all(|p| p.len() >= min_rows) {
            parts.iter_mut().for_each(|p| p.shuffle(rng));
            return Ok(parts);
        }
    }
    Err(DataError::InvalidParameter(format!(
        "dirichlet:{alpha} left a node with fewer than {min_rows} rows after {MAX_DIRICHLET_DRAWS} draws; use a larger alpha or fewer nodes"
    )))
}

fn shards(labels: &[u8], nodes: usize, rng: &mut ChaCha8Rng) -> Result<Vec<Vec<usize>>, DataError> {
    const SHARDS_PER_NODE: usize = 2;
    let shard_count = nodes * SHARDS_PER_NODE;
    if shard_count > labels.len() {
        return Err(DataError::InvalidParameter(format!(
            "shards: {} rows are too few for {shard_count} shards",
            labels.len()
        )));
    }
    let mut sorted: Vec<usize> = (0..labels.len()).collect();
    sorted.sort_by_key(|&i| (labels[i], i));
    let mut shard_ids: Vec<usize> = (0..shard_count).collect();
    shard_ids.shuffle(rng);
    let len = labels.len();
    let parts = shard_ids
        .chunks(SHARDS_PER_NODE)
        .map(|ids| {
            ids.iter()
                .flat_map(|&s| sorted[s * len / shard_count..(s + 1) * len / shard_count].to_vec())
                .collect()
        })
        .collect();
    Ok(parts)
}

fn quantity(
    rows: usize,
    nodes: usize,
    alpha: f64,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Vec<usize>>, DataError> {
    let mut order: Vec<usize> = (0..rows).collect();
    order.shuffle(rng);
    // Every node gets at least one row; the rest is split by Dir(alpha).
    let (base, rest) = order.split_at(nodes);
    let proportions = dirichlet_draw(alpha, nodes, rng)?;
    let mut parts = cut_by_proportions(rest, &proportions);
    for (part, &first) in parts.iter_mut().zip(base) {
        part.push(first);
    }
    Ok(parts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 10) as u8).collect()
    }

    fn assert_is_partition(parts: &[Vec<usize>], rows: usize) {
        let mut all: Vec<usize> = parts.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..rows).collect::<Vec<_>>());
    }

    #[test]
    fn every_partitioner_assigns_each_row_once_and_is_seeded() {
        let l = labels(1000);
        for p in ["iid", "dirichlet:0.3", "shards", "quantity:1.0"] {
            let part: Partition = p.parse().unwrap();
            let a = part.split(&l, 10, 10, 7).unwrap();
            assert_eq!(a.len(), 10);
            assert_is_partition(&a, 1000);
            assert_eq!(
                a,
                part.split(&l, 10, 10, 7).unwrap(),
                "{p} not deterministic"
            );
            assert_ne!(
                a,
                part.split(&l, 10, 10, 8).unwrap(),
                "{p} ignores the seed"
            );
        }
    }

    #[test]
    fn iid_sizes_are_equal() {
        let parts = Partition::Iid.split(&labels(1000), 10, 10, 1).unwrap();
        assert!(parts.iter().all(|p| p.len() == 100));
    }

    #[test]
    fn shards_give_each_node_at_most_two_labels() {
        let l = labels(1000);
        let parts = Partition::Shards.split(&l, 10, 10, 3).unwrap();
        for p in parts {
            let mut seen: Vec<u8> = p.iter().map(|&i| l[i]).collect();
            seen.sort_unstable();
            seen.dedup();
            assert!(seen.len() <= 2, "node has labels {seen:?}");
        }
    }

    #[test]
    fn small_alpha_dirichlet_is_skewed() {
        let l = labels(2000);
        let parts = Partition::Dirichlet { alpha: 0.1 }
            .split(&l, 10, 10, 5)
            .unwrap();
        // With alpha=0.1 most nodes are dominated by few classes.
        let dominated = parts
            .iter()
            .filter(|p| {
                let mut counts = [0usize; 10];
                p.iter().for_each(|&i| counts[l[i] as usize] += 1);
                counts.iter().max().copied().unwrap_or(0) * 2 > p.len()
            })
            .count();
        assert!(
            dominated >= 3,
            "only {dominated} nodes dominated by one class"
        );
    }

    #[test]
    fn bad_parameters_are_clear_errors() {
        assert!("dirichlet:-1".parse::<Partition>().is_err());
        assert!("dirichlet:abc".parse::<Partition>().is_err());
        assert!("nope".parse::<Partition>().is_err());
        assert!(Partition::Iid.split(&labels(5), 10, 6, 0).is_err());
        assert!(Partition::Iid.split(&labels(5), 10, 0, 0).is_err());
    }
}
