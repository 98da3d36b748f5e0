//! Inner loops shared by the aggregation rules: squared distances, weighted sums and
//! the column-blocked transpose that per-coordinate rules (median, trimmed mean, Bulyan)
//! run on.
//!
//! The loops are written so the compiler vectorizes them: fixed-width lane
//! accumulators, no bounds checks in the hot path, no allocation per coordinate.

/// Number of `f32` lanes the distance kernel accumulates in parallel.
const LANES: usize = 16;

/// Columns per tile in the column-blocked transpose. With n = 100 a tile is 25 KiB.
pub(crate) const TILE_COLUMNS: usize = 64;

/// Columns per block when accumulating weighted sums (the `f64` accumulator stays in L1).
const SUM_BLOCK_COLUMNS: usize = 2048;

/// Squared Euclidean distance between `a` and `b` (equal lengths), accumulated in `f32`
/// lanes. Callers keep slices short (a few thousand values) and add the partial
/// results in `f64`.
pub(crate) fn sq_dist_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0_f32; LANES];
    let chunks_a = a.chunks_exact(LANES);
    let chunks_b = b.chunks_exact(LANES);
    let (tail_a, tail_b) = (chunks_a.remainder(), chunks_b.remainder());
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for k in 0..LANES {
            let t = ca[k] - cb[k];
            acc[k] += t * t;
        }
    }
    let mut total: f32 = acc.iter().sum();
    for (x, y) in tail_a.iter().zip(tail_b) {
        let t = x - y;
        total += t * t;
    }
    total
}

/// Squared Euclidean distance between two full-length vectors, summed in `f64` over
/// blocks so long vectors keep their precision.
pub(crate) fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    const BLOCK: usize = 4096;
    a.chunks(BLOCK)
        .zip(b.chunks(BLOCK))
        .map(|(x, y)| f64::from(sq_dist_f32(x, y)))
        .sum()
}

/// Writes `sum_i coefficients[i] * rows[i]` into `out`, column-blocked with `f64`
/// accumulators. All rows have `out.len()` values; `coefficients.len() == rows.len()`.
///
/// Rows are consumed four at a time: their products are combined in `f32` and added
/// to the `f64` accumulator once, which quarters the accumulator traffic.
pub(crate) fn weighted_sum_into<U: AsRef<[f32]>>(
    rows: &[U],
    coefficients: &[f64],
    out: &mut [f32],
) {
    debug_assert_eq!(rows.len(), coefficients.len());
    let d = out.len();
    let mut acc = vec![0.0_f64; SUM_BLOCK_COLUMNS.min(d)];
    let mut start = 0;
    while start < d {
        let end = (start + SUM_BLOCK_COLUMNS).min(d);
        let acc = &mut acc[..end - start];
        acc.fill(0.0);
        let mut quads = rows.chunks_exact(4).zip(coefficients.chunks_exact(4));
        for (r, c) in quads.by_ref() {
            let (r0, r1, r2, r3) = (
                &r[0].as_ref()[start..end],
                &r[1].as_ref()[start..end],
                &r[2].as_ref()[start..end],
                &r[3].as_ref()[start..end],
            );
            let (c0, c1, c2, c3) = (c[0] as f32, c[1] as f32, c[2] as f32, c[3] as f32);
            for ((((a, &x0), &x1), &x2), &x3) in acc.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
                *a += f64::from(c0 * x0 + c1 * x1 + c2 * x2 + c3 * x3);
            }
        }
        let tail = rows.len() - rows.len() % 4;
        for (row, &c) in rows[tail..].iter().zip(&coefficients[tail..]) {
            for (a, &x) in acc.iter_mut().zip(&row.as_ref()[start..end]) {
                *a += c * f64::from(x);
            }
        }
        for (o, &a) in out[start..end].iter_mut().zip(acc.iter()) {
            *o = a as f32;
        }
        start = end;
    }
}

/// Maps an `f32` to an `i32` whose integer order is the IEEE-754 total order
/// (the transform behind [`f32::total_cmp`]). NaNs sort beyond the infinities, so
/// order-based rules treat them as extreme outliers.
#[inline]
pub(crate) fn to_key(x: f32) -> i32 {
    let bits = x.to_bits() as i32;
    bits ^ (((bits >> 31) as u32) >> 1) as i32
}

/// Inverse of [`to_key`] (the transform is an involution).
#[inline]
pub(crate) fn from_key(key: i32) -> f32 {
    let bits = key ^ (((key >> 31) as u32) >> 1) as i32;
    f32::from_bits(bits as u32)
}

/// Column-blocked per-coordinate reduction.
///
/// For every coordinate `j`, gathers the `n` values `rows[i][j]` as order keys (see
/// [`to_key`]) into a contiguous scratch column and writes `reduce(column)` to
/// `out[j]`. Tiles of [`TILE_COLUMNS`] columns are transposed at once, so the
/// reduction works on small contiguous arrays and nothing is allocated per coordinate.
/// `reduce` may reorder the column freely.
pub(crate) fn reduce_columns<U, F>(rows: &[U], out: &mut [f32], mut reduce: F)
where
    U: AsRef<[f32]>,
    F: FnMut(&mut [i32]) -> f32,
{
    let n = rows.len();
    let d = out.len();
    let mut tile = vec![0_i32; n * TILE_COLUMNS];
    let mut start = 0;
    while start < d {
        let width = TILE_COLUMNS.min(d - start);
        for (i, row) in rows.iter().enumerate() {
            let row = &row.as_ref()[start..start + width];
            for (j, &x) in row.iter().enumerate() {
                tile[j * n + i] = to_key(x);
            }
        }
        for (j, o) in out[start..start + width].iter_mut().enumerate() {
            *o = reduce(&mut tile[j * n..(j + 1) * n]);
        }
        start += width;
    }
}

/// Lexicographic IEEE-754 total order on vectors: the tie-breaker that keeps
/// selection rules independent of the order their inputs arrive in.
pub(crate) fn lex_cmp(a: &[f32], b: &[f32]) -> std::cmp::Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.total_cmp(y))
        .find(|o| o.is_ne())
        .unwrap_or_else(|| a.len().cmp(&b.len()))
}

/// Sum of the values behind `keys`, in `f64`.
#[inline]
pub(crate) fn key_sum(keys: &[i32]) -> f64 {
    keys.iter().map(|&k| f64::from(from_key(k))).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_matches_total_order() {
        let values = [
            f32::NEG_INFINITY,
            -3.5,
            -0.0,
            0.0,
            1e-30,
            2.0,
            f32::INFINITY,
        ];
        for w in values.windows(2) {
            assert!(to_key(w[0]) < to_key(w[1]), "{} < {}", w[0], w[1]);
        }
        for &v in &values {
            assert_eq!(from_key(to_key(v)).to_bits(), v.to_bits());
        }
        assert!(to_key(f32::NAN) > to_key(f32::INFINITY));
    }

    #[test]
    fn distance_and_weighted_sum_by_hand() {
        let a: Vec<f32> = (0..37).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..37).map(|i| i as f32 + 2.0).collect();
        assert_eq!(sq_dist(&a, &b), 37.0 * 4.0);
        let mut out = vec![0.0; 3];
        weighted_sum_into(
            &[vec![1.0, 2.0, 3.0], vec![10.0, 20.0, 30.0]],
            &[0.5, 0.25],
            &mut out,
        );
        assert_eq!(out, vec![3.0, 6.0, 9.0]);
    }

    #[test]
    fn reduce_columns_sees_every_column_once() {
        let rows: Vec<Vec<f32>> = (0..3)
            .map(|i| (0..150).map(|j| (i * 1000 + j) as f32).collect())
            .collect();
        let mut out = vec![0.0; 150];
        reduce_columns(&rows, &mut out, |col| key_sum(col) as f32);
        for (j, &o) in out.iter().enumerate() {
            assert_eq!(o, (3 * j + 3000) as f32);
        }
    }
}
