//! Scalar helpers shared by the aggregation rules: the IEEE-754 total-order keys, the
//! column-blocked transpose that per-coordinate selection runs on (Bulyan, and the
//! median and trimmed mean beyond the sorting network's size), and the lexicographic
//! tie-breaker. The SIMD kernels live in `simd`, `gram` and `sortnet`.

/// Columns per tile in the column-blocked transpose. With n = 100 a tile is 25 KiB.
pub(crate) const TILE_COLUMNS: usize = 64;

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

/// Next value of a xorshift32 generator: cheap reproducible test data.
#[cfg(test)]
pub(crate) fn xorshift32(state: &mut u32) -> u32 {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    *state
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
