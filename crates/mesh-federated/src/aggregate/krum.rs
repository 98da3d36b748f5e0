//! Krum and Multi-Krum (Blanchard et al. 2017), and the pairwise distance matrix they
//! (and Bulyan and NNM) share.

use super::{check_shape, kernels, mean_of, require_n, AggregateError};

/// Columns per block when accumulating pairwise distances: with n = 100 the block's
/// rows (200 KiB) stay in L2 while all n^2 / 2 pairs are visited.
const DISTANCE_BLOCK_COLUMNS: usize = 512;

/// Symmetric `n x n` matrix of squared Euclidean distances, row-major, with NaN
/// replaced by `+inf` (a NaN or infinite update is infinitely far from everything).
///
/// Cost `O(n^2 d)`; the inner loop is [`kernels::sq_dist_f32`] over column blocks.
pub fn pairwise_sq_distances<U: AsRef<[f32]>>(updates: &[U]) -> Result<Vec<f64>, AggregateError> {
    let (n, d) = check_shape(updates)?;
    let mut dist = vec![0.0_f64; n * n];
    let mut start = 0;
    while start < d {
        let end = (start + DISTANCE_BLOCK_COLUMNS).min(d);
        for i in 0..n {
            let a = &updates[i].as_ref()[start..end];
            for j in i + 1..n {
                let b = &updates[j].as_ref()[start..end];
                dist[i * n + j] += f64::from(kernels::sq_dist_f32(a, b));
            }
        }
        start = end;
    }
    for i in 0..n {
        for j in i + 1..n {
            let v = dist[i * n + j];
            let v = if v.is_nan() { f64::INFINITY } else { v };
            dist[i * n + j] = v;
            dist[j * n + i] = v;
        }
    }
    Ok(dist)
}

/// Krum score of each update among the updates in `members` (indices into the
/// `n x n` matrix `dist`): the sum of squared distances to its `neighbours` closest
/// other members. `neighbours < members.len()`.
pub(crate) fn scores(dist: &[f64], n: usize, members: &[usize], neighbours: usize) -> Vec<f64> {
    debug_assert!(neighbours < members.len());
    let mut row = Vec::with_capacity(members.len());
    members
        .iter()
        .map(|&i| {
            row.clear();
            row.extend(
                members
                    .iter()
                    .filter(|&&j| j != i)
                    .map(|&j| dist[i * n + j]),
            );
            if neighbours == 0 {
                return 0.0;
            }
            let (closest, &mut nth, _) = row.select_nth_unstable_by(neighbours - 1, f64::total_cmp);
            closest.iter().sum::<f64>() + nth
        })
        .collect()
}

/// Indices of `members` ordered by ascending score; ties are broken by the updates'
/// contents ([`kernels::lex_cmp`]), then by index, so the choice does not depend on
/// the order the updates arrived in.
pub(crate) fn rank_by_score<U: AsRef<[f32]>>(
    updates: &[U],
    members: &[usize],
    scores: &[f64],
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|&a, &b| {
        let (ia, ib) = (members[a], members[b]);
        scores[a]
            .total_cmp(&scores[b])
            .then_with(|| kernels::lex_cmp(updates[ia].as_ref(), updates[ib].as_ref()))
            .then(ia.cmp(&ib))
    });
    order.into_iter().map(|k| members[k]).collect()
}

/// Index of the update Krum selects: the one with the smallest sum of squared
/// distances to its `n - f - 2` nearest neighbours (ties: the lexicographically
/// smallest update, then the smallest index).
///
/// Preconditions: `n >= 2f + 3` updates of equal non-zero dimension.
pub fn krum_index<U: AsRef<[f32]>>(
    updates: &[U],
    byzantine: usize,
) -> Result<usize, AggregateError> {
    let n = updates.len();
    require_n("krum", n, byzantine, 2 * byzantine + 3)?;
    let dist = pairwise_sq_distances(updates)?;
    let members: Vec<usize> = (0..n).collect();
    let s = scores(&dist, n, &members, n - byzantine - 2);
    Ok(rank_by_score(updates, &members, &s)[0])
}

/// Krum: returns a copy of the update selected by [`krum_index`].
///
/// Preconditions: `n >= 2f + 3` updates of equal non-zero dimension.
pub fn krum<U: AsRef<[f32]>>(updates: &[U], byzantine: usize) -> Result<Vec<f32>, AggregateError> {
    let index = krum_index(updates, byzantine)?;
    Ok(updates[index].as_ref().to_vec())
}

/// Multi-Krum: the mean of the `selected` updates with the lowest Krum scores
/// (scores computed once, as in ByzFL); `selected = None` means `n - f`.
///
/// Preconditions: `n >= 2f + 3` updates of equal non-zero dimension and
/// `1 <= selected <= n`.
pub fn multi_krum<U: AsRef<[f32]>>(
    updates: &[U],
    byzantine: usize,
    selected: Option<usize>,
) -> Result<Vec<f32>, AggregateError> {
    let n = updates.len();
    require_n("multi-krum", n, byzantine, 2 * byzantine + 3)?;
    let (_, d) = check_shape(updates)?;
    let m = selected.unwrap_or(n - byzantine);
    if m == 0 || m > n {
        return Err(AggregateError::InvalidParameter {
            name: "selected",
            value: m.to_string(),
            reason: "Multi-Krum must select between 1 and n updates",
        });
    }
    let dist = pairwise_sq_distances(updates)?;
    let members: Vec<usize> = (0..n).collect();
    let s = scores(&dist, n, &members, n - byzantine - 2);
    let chosen = &rank_by_score(updates, &members, &s)[..m];
    Ok(mean_of(updates, chosen, d))
}
