//! Nearest-neighbour mixing (Allouah et al. 2023, "Fixing by Mixing"), a
//! pre-aggregation step that composes with any rule.

use super::krum::pairwise_sq_distances;
use super::{check_shape, kernels, mean_of, require_n, AggregateError};

/// Replaces each update `x_i` by the mean of its `n - f` nearest updates (itself
/// included; ties broken by the updates' contents, so the result does not depend
/// on the order the updates arrived in). Returns `n` mixed updates.
///
/// Preconditions: `n >= f + 1` updates of equal non-zero dimension.
pub fn nearest_neighbour_mixing<U: AsRef<[f32]>>(
    updates: &[U],
    byzantine: usize,
) -> Result<Vec<Vec<f32>>, AggregateError> {
    let (n, d) = check_shape(updates)?;
    require_n("nnm", n, byzantine, byzantine + 1)?;
    let keep = n - byzantine;
    let dist = pairwise_sq_distances(updates)?;
    let mut order: Vec<usize> = Vec::with_capacity(n);
    let mixed = (0..n)
        .map(|i| {
            order.clear();
            order.extend(0..n);
            let row = &dist[i * n..(i + 1) * n];
            // The point itself is at distance 0 and comes first.
            order.sort_by(|&a, &b| {
                let (da, db) = (
                    if a == i { -1.0 } else { row[a] },
                    if b == i { -1.0 } else { row[b] },
                );
                da.total_cmp(&db)
                    .then_with(|| kernels::lex_cmp(updates[a].as_ref(), updates[b].as_ref()))
                    .then(a.cmp(&b))
            });
            mean_of(updates, &order[..keep], d)
        })
        .collect();
    Ok(mixed)
}
