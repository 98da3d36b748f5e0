//! Nearest-neighbour mixing (Allouah et al. 2023, "Fixing by Mixing"), a
//! pre-aggregation step that composes with any rule.

use super::{check_shape, gram, kernels, mean_of, require_n, simd, AggregateError};

/// Replaces each update `x_i` by the mean of its `n - f` nearest updates (itself
/// included; ties broken by the updates' contents, so the result does not depend
/// on the order the updates arrived in). Returns `n` mixed updates.
///
/// The distances are one blocked matrix product and the `n` means another (`M X`
/// with `M_ij = 1 / (n - f)` for the neighbours `j` of `i`), both at the CPU's SIMD
/// width; the means are accumulated in `f32`. An update holding a NaN or an infinity
/// is infinitely far from the others, so it is nobody's neighbour while at most `f`
/// updates are such; its own mixed update is not finite, and the rule that follows
/// treats it as the outlier it is.
///
/// Preconditions: `n >= f + 1` updates of equal non-zero dimension.
pub fn nearest_neighbour_mixing<U: AsRef<[f32]>>(
    updates: &[U],
    byzantine: usize,
) -> Result<Vec<Vec<f32>>, AggregateError> {
    let (n, d) = check_shape(updates)?;
    require_n("nnm", n, byzantine, byzantine + 1)?;
    let keep = n - byzantine;
    let pairwise = gram::pairwise(updates);
    let neighbours: Vec<Vec<usize>> = (0..n)
        .map(|i| nearest(updates, &pairwise.sq[i * n..(i + 1) * n], i, keep))
        .collect();
    if pairwise.non_finite.contains(&true) {
        // A zero weight times a NaN is NaN: mix each update from its own set.
        return Ok(neighbours
            .iter()
            .map(|set| mean_of(updates, set, d))
            .collect());
    }
    let weight = 1.0 / keep as f32;
    let mut mixing = vec![0.0_f32; n * n];
    for (i, set) in neighbours.iter().enumerate() {
        for &j in set {
            mixing[i * n + j] = weight;
        }
    }
    let rows: Vec<&[f32]> = updates.iter().map(AsRef::as_ref).collect();
    let mut mixed = vec![vec![0.0_f32; d]; n];
    simd::mix_rows(&rows, &mixing, &mut mixed);
    Ok(mixed)
}

/// The `keep` updates nearest to update `i` (itself first), given its row of
/// squared distances.
fn nearest<U: AsRef<[f32]>>(updates: &[U], row: &[f64], i: usize, keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..updates.len()).collect();
    order.sort_by(|&a, &b| {
        let (da, db) = (
            if a == i { -1.0 } else { row[a] },
            if b == i { -1.0 } else { row[b] },
        );
        da.total_cmp(&db)
            .then_with(|| kernels::lex_cmp(updates[a].as_ref(), updates[b].as_ref()))
            .then(a.cmp(&b))
    });
    order.truncate(keep);
    order
}
