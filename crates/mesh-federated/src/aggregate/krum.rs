//! Krum and Multi-Krum (Blanchard et al. 2017), and the pairwise distance matrix they
//! (and Bulyan and NNM) share.

use super::{check_shape, finite_or_error, gram, kernels, mean_of, require_n, AggregateError};

/// Symmetric `n x n` matrix of squared Euclidean distances, row-major, with NaN
/// replaced by `+inf` (a NaN or infinite update is infinitely far from everything).
///
/// Cost `O(n^2 d)`, as one blocked matrix product of the updates (see the `gram`
/// module): distances that the product's cancellation could have made imprecise are
/// recomputed directly, so each is within about 1e-4 of its exact value.
pub fn pairwise_sq_distances<U: AsRef<[f32]>>(updates: &[U]) -> Result<Vec<f64>, AggregateError> {
    check_shape(updates)?;
    Ok(gram::pairwise(updates).sq)
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
/// Preconditions: `n >= 2f + 3` updates of equal non-zero dimension. An update
/// holding a NaN or an infinity is infinitely far from the others and never
/// selected while at most `f` updates are such; past that the call may fail with
/// [`AggregateError::NonFiniteUpdate`].
pub fn krum<U: AsRef<[f32]>>(updates: &[U], byzantine: usize) -> Result<Vec<f32>, AggregateError> {
    let index = krum_index(updates, byzantine)?;
    finite_or_error(updates, updates[index].as_ref().to_vec())
}

/// Multi-Krum: the mean of the `selected` updates with the lowest Krum scores
/// (scores computed once, as in ByzFL); `selected = None` means `n - f`.
///
/// Preconditions: `n >= 2f + 3` updates of equal non-zero dimension and
/// `1 <= selected <= n`. Updates holding a NaN or an infinity score infinitely
/// badly; if one is among the selected the call fails with
/// [`AggregateError::NonFiniteUpdate`].
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
    finite_or_error(updates, mean_of(updates, chosen, d))
}
