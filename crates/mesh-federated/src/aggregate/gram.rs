//! Pairwise squared distances of `n` updates as one matrix product: the Gram matrix
//! `G = A A^T` of the centered updates `a_i = x_i - c` gives
//! `||x_i - x_j||^2 = G_ii + G_jj - 2 G_ij`.
//!
//! ```text
//!   updates ──► centre c: the update closest to the others on a sample of columns
//!      │
//!      ▼  for each chunk of 512 columns
//!   centred chunk (n x 512, in L2) ──► register-blocked A A^T, upper triangle only,
//!      │                               f32 lanes (AVX-512 / AVX2 / scalar at run time)
//!      ▼
//!   G += chunk product, in f64
//!      │
//!      ▼
//!   d_ij = G_ii + G_jj - 2 G_ij, re-computed directly where it lost precision
//! ```
//!
//! The expansion cancels when two updates are much closer to each other than to the
//! centre. Centering on an update inside the honest cluster keeps that rare, and a
//! distance smaller than `(G_ii + G_jj) / 8` (where the `f32` error of the chunk
//! products could exceed about 1e-4 of it) is recomputed as `sum (x_i - x_j)^2`, which
//! has no cancellation. An update with a NaN or an infinity is infinitely far from
//! every other; one whose finite values overflow `f32` squares is handled exactly.
//!
//! Only the upper triangle is computed (half the multiply-adds of a general matrix
//! product), in a safe kernel: the `gemm` crate's entry point is `unsafe`, which
//! this workspace forbids.

use pulp::{Arch, Simd, WithSimd};

use super::{kernels, simd};

/// Columns per chunk: the centred chunk of 100 updates (200 KiB) stays in L2 and a
/// lane adds at most 512 / lanes products in `f32` before the sum moves to `f64`.
const CHUNK_COLUMNS: usize = 512;

/// Columns of the block of updates each kernel call handles (the block of rows
/// is 4 on 32-register instruction sets and 2 on 16-register ones).
const BLOCK_COLUMNS: usize = 4;

/// A Gram distance below this fraction of `G_ii + G_jj` is recomputed directly.
const RECHECK_FRACTION: f64 = 1.0 / 8.0;

/// Columns sampled to choose the centre: stripes of this many adjacent columns...
const SAMPLE_STRIPE_COLUMNS: usize = 64;

/// ...this many stripes, spread evenly over the dimension.
const SAMPLE_STRIPES: usize = 32;

/// Squared distances of `n` updates and which updates hold a NaN or an infinity.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pairwise {
    /// Row-major `n x n` squared distances; NaN is replaced by `+inf`.
    pub(crate) sq: Vec<f64>,
    /// `non_finite[i]`: update `i` holds a NaN or an infinity.
    pub(crate) non_finite: Vec<bool>,
}

/// Pairwise squared distances of `rows` (at least one, all of one non-zero length).
pub(crate) fn pairwise<U: AsRef<[f32]>>(rows: &[U]) -> Pairwise {
    let rows: Vec<&[f32]> = rows.iter().map(AsRef::as_ref).collect();
    let center = choose_center(&rows).map(|c| rows[c]);
    let gram = Arch::new().dispatch(CenteredGram {
        rows: &rows,
        center,
    });
    distances_from_gram(&rows, &gram)
}

/// Turns the upper triangle of the centred Gram matrix into distances, recomputing
/// those that lost precision and those of updates whose Gram entries are not finite.
fn distances_from_gram(rows: &[&[f32]], gram: &[f64]) -> Pairwise {
    let n = rows.len();
    let norm = |i: usize| gram[i * n + i];
    let suspect: Vec<bool> = (0..n).map(|i| !norm(i).is_finite()).collect();
    let non_finite: Vec<bool> = (0..n)
        .map(|i| suspect[i] && !simd::all_finite(rows[i]))
        .collect();
    let mut sq = vec![0.0_f64; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let v = if non_finite[i] || non_finite[j] {
                f64::INFINITY
            } else if suspect[i] || suspect[j] {
                simd::sq_dist(rows[i], rows[j])
            } else {
                let scale = norm(i) + norm(j);
                let v = scale - 2.0 * gram[i * n + j];
                if v >= RECHECK_FRACTION * scale {
                    v
                } else {
                    simd::sq_dist(rows[i], rows[j])
                }
            };
            let v = if v.is_nan() { f64::INFINITY } else { v };
            sq[i * n + j] = v;
            sq[j * n + i] = v;
        }
    }
    Pairwise { sq, non_finite }
}

/// Index of the update closest to the others on a sample of columns (the sum of
/// its squared sample distances to the nearest half), among the updates that are
/// entirely finite; `None` if none is. Ties go to the lexicographically smallest
/// update, so the centre, and with it every rounding, does not depend on the
/// order the updates arrived in.
fn choose_center(rows: &[&[f32]]) -> Option<usize> {
    let n = rows.len();
    let sample: Vec<Vec<f32>> = rows.iter().map(|r| sample_columns(r)).collect();
    let mut dist = vec![0.0_f64; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let v = simd::sq_dist(&sample[i], &sample[j]);
            let v = if v.is_nan() { f64::INFINITY } else { v };
            dist[i * n + j] = v;
            dist[j * n + i] = v;
        }
    }
    let nearest = n / 2;
    let mut row = Vec::with_capacity(n);
    let scores: Vec<f64> = (0..n)
        .map(|i| {
            row.clear();
            row.extend((0..n).filter(|&j| j != i).map(|j| dist[i * n + j]));
            row.sort_unstable_by(f64::total_cmp);
            row[..nearest.min(row.len())].iter().sum()
        })
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        scores[a]
            .total_cmp(&scores[b])
            .then_with(|| kernels::lex_cmp(rows[a], rows[b]))
            .then(a.cmp(&b))
    });
    order.into_iter().find(|&i| simd::all_finite(rows[i]))
}

/// The sampled columns of `row`: all of them when it is short, else
/// [`SAMPLE_STRIPES`] stripes of [`SAMPLE_STRIPE_COLUMNS`] spread evenly.
fn sample_columns(row: &[f32]) -> Vec<f32> {
    let d = row.len();
    if d <= SAMPLE_STRIPES * SAMPLE_STRIPE_COLUMNS {
        return row.to_vec();
    }
    let step = (d - SAMPLE_STRIPE_COLUMNS) / (SAMPLE_STRIPES - 1);
    (0..SAMPLE_STRIPES)
        .flat_map(|s| &row[s * step..s * step + SAMPLE_STRIPE_COLUMNS])
        .copied()
        .collect()
}

/// Upper triangle (with the diagonal) of `(X - c)(X - c)^T`, row-major `n x n`, `f64`.
struct CenteredGram<'a> {
    rows: &'a [&'a [f32]],
    center: Option<&'a [f32]>,
}

impl WithSimd for CenteredGram<'_> {
    type Output = Vec<f64>;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Vec<f64> {
        if S::REGISTER_COUNT >= 32 {
            centered_gram::<S, 4>(simd, self.rows, self.center)
        } else {
            centered_gram::<S, 2>(simd, self.rows, self.center)
        }
    }
}

/// [`CenteredGram`] with register blocks of `R` x [`BLOCK_COLUMNS`] updates.
#[inline(always)]
fn centered_gram<S: Simd, const R: usize>(
    simd: S,
    rows: &[&[f32]],
    center: Option<&[f32]>,
) -> Vec<f64> {
    let n = rows.len();
    let d = rows.first().map_or(0, |r| r.len());
    let lanes = std::mem::size_of::<S::f32s>() / std::mem::size_of::<f32>();
    let n_padded = n.div_ceil(BLOCK_COLUMNS) * BLOCK_COLUMNS;
    // Padding updates stay zero and add nothing.
    let mut chunk = vec![0.0_f32; n_padded * CHUNK_COLUMNS];
    let mut gram = vec![0.0_f64; n * n];
    let mut start = 0;
    while start < d {
        let end = (start + CHUNK_COLUMNS).min(d);
        let width = (end - start).div_ceil(lanes) * lanes;
        for (i, row) in rows.iter().enumerate() {
            let dst = &mut chunk[i * CHUNK_COLUMNS..i * CHUNK_COLUMNS + width];
            center_into(&row[start..end], center.map(|c| &c[start..end]), dst);
        }
        for bi in (0..n).step_by(R) {
            for bj in (bi - bi % BLOCK_COLUMNS..n).step_by(BLOCK_COLUMNS) {
                let dots = dot_block::<S, R>(simd, &chunk, bi, bj, width);
                for (r, dots_r) in dots.iter().enumerate() {
                    for (c, &dot) in dots_r.iter().enumerate() {
                        let (i, j) = (bi + r, bj + c);
                        if i <= j && j < n {
                            gram[i * n + j] += f64::from(dot);
                        }
                    }
                }
            }
        }
        start = end;
    }
    gram
}

/// Writes `x - c` (or `x`) into the first `x.len()` values of `dst` and zeros the rest.
#[inline(always)]
fn center_into(x: &[f32], c: Option<&[f32]>, dst: &mut [f32]) {
    let (head, tail) = dst.split_at_mut(x.len());
    match c {
        Some(c) => {
            for ((o, &a), &b) in head.iter_mut().zip(x).zip(c) {
                *o = a - b;
            }
        }
        None => head.copy_from_slice(x),
    }
    tail.fill(0.0);
}

/// Dot products of the centred updates `bi..bi + R` with `bj..bj + 4` over the first
/// `width` columns of the chunk (a multiple of the lane count).
#[inline(always)]
fn dot_block<S: Simd, const R: usize>(
    simd: S,
    chunk: &[f32],
    bi: usize,
    bj: usize,
    width: usize,
) -> [[f32; BLOCK_COLUMNS]; R] {
    let mut a: [&[S::f32s]; R] = [&[]; R];
    for (r, a_r) in a.iter_mut().enumerate() {
        *a_r = chunk_row::<S>(chunk, bi + r, width);
    }
    let mut b: [&[S::f32s]; BLOCK_COLUMNS] = [&[]; BLOCK_COLUMNS];
    for (c, b_c) in b.iter_mut().enumerate() {
        *b_c = chunk_row::<S>(chunk, bj + c, width);
    }
    let steps = a[0].len();
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; BLOCK_COLUMNS]; R];
    for t in 0..steps {
        let mut bv = [zero; BLOCK_COLUMNS];
        for (v, b_c) in bv.iter_mut().zip(&b) {
            *v = b_c[t];
        }
        for (acc_r, a_r) in acc.iter_mut().zip(&a) {
            let av = a_r[t];
            for (acc_rc, &bv_c) in acc_r.iter_mut().zip(&bv) {
                *acc_rc = simd.mul_add_e_f32s(av, bv_c, *acc_rc);
            }
        }
    }
    let mut dots = [[0.0_f32; BLOCK_COLUMNS]; R];
    for (dots_r, acc_r) in dots.iter_mut().zip(&acc) {
        for (dot, &v) in dots_r.iter_mut().zip(acc_r) {
            *dot = simd.reduce_sum_f32s(v);
        }
    }
    dots
}

/// The first `width` columns of centred update `i` of the chunk, as vectors.
#[inline(always)]
fn chunk_row<S: Simd>(chunk: &[f32], i: usize, width: usize) -> &[S::f32s] {
    S::as_simd_f32s(&chunk[i * CHUNK_COLUMNS..i * CHUNK_COLUMNS + width]).0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Direct distances in `f64`, the reference.
    fn naive(rows: &[Vec<f32>]) -> Vec<f64> {
        let n = rows.len();
        let mut out = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                out[i * n + j] = simd::sq_dist_f64(&rows[i], &rows[j]);
            }
        }
        out
    }

    fn assert_matches_naive(rows: &[Vec<f32>], relative: f64) {
        let got = pairwise(rows).sq;
        for (k, (g, e)) in got.iter().zip(naive(rows)).enumerate() {
            assert!(
                (g - e).abs() <= relative * e,
                "pair {k}: gram {g} vs naive {e}"
            );
        }
    }

    fn pseudo_random(n: usize, d: usize, seed: u32) -> Vec<Vec<f32>> {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                (0..d)
                    .map(|_| (kernels::xorshift32(&mut state) % 20_000) as f32 / 10_000.0 - 1.0)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn gram_distances_match_naive_distances() {
        for (n, d) in [(1, 3), (2, 1), (5, 17), (7, 511), (13, 513), (30, 5000)] {
            assert_matches_naive(&pseudo_random(n, d, n as u32 + 7), 1e-5);
        }
    }

    #[test]
    fn gram_kernel_is_the_same_at_every_width() {
        // 1, 8 and 16 lanes (emulated; 2 x 4 register blocks) and the CPU's own.
        let data = pseudo_random(11, 1100, 5);
        let rows: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
        let kernel = || CenteredGram {
            rows: &rows,
            center: Some(rows[3]),
        };
        let grams = [
            kernel().with_simd(pulp::Scalar),
            kernel().with_simd(pulp::Scalar256b),
            kernel().with_simd(pulp::Scalar512b),
            Arch::new().dispatch(kernel()),
        ];
        for gram in &grams {
            let got = distances_from_gram(&rows, gram).sq;
            for (g, e) in got.iter().zip(naive(&data)) {
                assert!((g - e).abs() <= 1e-5 * e, "{g} vs {e}");
            }
        }
    }

    #[test]
    fn gram_distances_keep_precision_for_large_norm_vectors() {
        // A common offset of 1e4 on every coordinate and per-update noise of 1e-2:
        // ||x||^2 is 1e8 d while the distances are 1e-4 d, far below f32's 1e-7.
        let (n, d) = (12, 3000);
        let mut rows = pseudo_random(n, d, 3);
        for row in &mut rows {
            for x in row.iter_mut() {
                *x = 1e4 + *x * 1e-2;
            }
        }
        assert_matches_naive(&rows, 1e-4);
        // A far outlier must not cost the cluster's distances their precision.
        rows.push(vec![-3e4; d]);
        assert_matches_naive(&rows, 1e-4);
    }

    #[test]
    fn gram_distances_of_identical_and_overflowing_updates() {
        let rows = vec![
            vec![2.5_f32; 700],
            vec![2.5; 700],
            vec![1e20; 700],
            vec![1e20; 700],
        ];
        let got = pairwise(&rows);
        assert_eq!(got.sq[1], 0.0);
        assert_eq!(got.sq[2 * 4 + 3], 0.0);
        let expected = simd::sq_dist_f64(&rows[0], &rows[2]);
        assert!((got.sq[2] - expected).abs() <= 1e-9 * expected);
        assert_eq!(got.non_finite, vec![false; 4]);
    }

    #[test]
    fn non_finite_updates_are_infinitely_far() {
        let mut rows = pseudo_random(6, 600, 11);
        rows[2][599] = f32::NAN;
        rows[4][0] = f32::NEG_INFINITY;
        let got = pairwise(&rows);
        assert_eq!(got.non_finite, vec![false, false, true, false, true, false]);
        for j in 0..6 {
            if j != 2 {
                assert_eq!(got.sq[2 * 6 + j], f64::INFINITY);
                assert_eq!(got.sq[j * 6 + 2], f64::INFINITY);
            }
        }
        let e = simd::sq_dist_f64(&rows[0], &rows[1]);
        assert!((got.sq[1] - e).abs() <= 1e-5 * e);
    }
}
