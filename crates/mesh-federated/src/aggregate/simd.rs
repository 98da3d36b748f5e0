//! Streaming kernels at the CPU's SIMD width: weighted sums of rows, squared
//! distances of rows to a point, and the finiteness scan.
//!
//! The binary is built for generic x86-64; each kernel is a [`pulp::WithSimd`] that
//! [`pulp::Arch`] runs once at the widest instruction set the CPU has (AVX-512,
//! AVX2 + FMA, or scalar), chosen at run time and without `unsafe`. Helpers called
//! inside a kernel are `#[inline(always)]` so they are compiled for that set too.
//!
//! Accumulation keeps the precision of the scalar code it replaced: sums of rows
//! use `f32` lanes with a compensation term (a TwoSum error, so about 48 significant
//! bits), and squared distances add at most a few thousand positive `f32` terms per
//! lane before the partial sums move to `f64`.

use pulp::{Arch, Simd, WithSimd};

/// Columns per block of [`weighted_sum_into`]: the compensated accumulator (two
/// `f32` arrays, 8 KiB) stays in L1 while the rows stream past.
const SUM_BLOCK_COLUMNS: usize = 1024;

/// Columns per block of [`sq_dists_to`]: the point's block (8 KiB) stays in L1 while
/// every row's block streams past, and a lane adds at most 2048 / lanes terms in `f32`.
const DIST_BLOCK_COLUMNS: usize = 2048;

/// `s + e = a + b` exactly (Knuth's TwoSum); adds `e` to `lo` and returns `s`.
#[inline(always)]
fn two_sum<S: Simd>(simd: S, a: S::f32s, b: S::f32s, lo: &mut S::f32s) -> S::f32s {
    let s = simd.add_f32s(a, b);
    let b_virtual = simd.sub_f32s(s, a);
    let a_virtual = simd.sub_f32s(s, b_virtual);
    let error = simd.add_f32s(simd.sub_f32s(a, a_virtual), simd.sub_f32s(b, b_virtual));
    *lo = simd.add_f32s(*lo, error);
    s
}

/// Scalar [`two_sum`] for the columns past the last full vector.
#[inline(always)]
fn two_sum_scalar(a: f32, b: f32, lo: &mut f32) -> f32 {
    let s = a + b;
    let b_virtual = s - a;
    let a_virtual = s - b_virtual;
    *lo += (a - a_virtual) + (b - b_virtual);
    s
}

/// Writes `sum_i coefficients[i] * rows[i]` into `out`. All rows have `out.len()`
/// values and `coefficients.len() == rows.len()`. Rows whose coefficient is zero are
/// skipped, so a zero-weight row cannot bring a NaN into the sum. When all the other
/// coefficients are equal (a mean), the rows are summed and the sum scaled once, so
/// `(1 + 2 + 3 + 100 - 50) / 5` is `11.2`, not `11.200001`.
pub(crate) fn weighted_sum_into<U: AsRef<[f32]>>(
    rows: &[U],
    coefficients: &[f64],
    out: &mut [f32],
) {
    debug_assert_eq!(rows.len(), coefficients.len());
    let (rows, coefficients): (Vec<&[f32]>, Vec<f64>) = rows
        .iter()
        .zip(coefficients)
        .filter(|(_, &c)| c != 0.0)
        .map(|(r, &c)| (r.as_ref(), c))
        .unzip();
    let common = coefficients
        .first()
        .copied()
        .filter(|&c| coefficients.iter().all(|&x| x == c));
    let (coefficients, scale): (Vec<f32>, f64) = match common {
        Some(c) => (vec![1.0; coefficients.len()], c),
        None => (coefficients.iter().map(|&c| c as f32).collect(), 1.0),
    };
    Arch::new().dispatch(WeightedSum {
        rows: &rows,
        coefficients: &coefficients,
        scale,
        out,
    });
}

struct WeightedSum<'a> {
    rows: &'a [&'a [f32]],
    coefficients: &'a [f32],
    /// Factor applied to every output value, in `f64`.
    scale: f64,
    out: &'a mut [f32],
}

impl WithSimd for WeightedSum<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let d = self.out.len();
        let mut hi = vec![0.0_f32; SUM_BLOCK_COLUMNS.min(d)];
        let mut lo = hi.clone();
        let mut start = 0;
        while start < d {
            let end = (start + SUM_BLOCK_COLUMNS).min(d);
            let (hi, lo) = (&mut hi[..end - start], &mut lo[..end - start]);
            hi.fill(0.0);
            lo.fill(0.0);
            let mut quads = self
                .rows
                .chunks_exact(4)
                .zip(self.coefficients.chunks_exact(4));
            for (r, c) in quads.by_ref() {
                let block = [0, 1, 2, 3].map(|k| &r[k][start..end]);
                accumulate4(simd, block, [c[0], c[1], c[2], c[3]], hi, lo);
            }
            let done = self.rows.len() - self.rows.len() % 4;
            for (r, &c) in self.rows[done..].iter().zip(&self.coefficients[done..]) {
                accumulate1(simd, &r[start..end], c, hi, lo);
            }
            let sums = hi.iter().zip(lo.iter());
            for (o, (&h, &l)) in self.out[start..end].iter_mut().zip(sums) {
                *o = ((f64::from(h) + f64::from(l)) * self.scale) as f32;
            }
            start = end;
        }
    }
}

/// `hi + lo += c[0] x[0] + c[1] x[1] + c[2] x[2] + c[3] x[3]` (equal lengths).
#[inline(always)]
fn accumulate4<S: Simd>(simd: S, x: [&[f32]; 4], c: [f32; 4], hi: &mut [f32], lo: &mut [f32]) {
    let (hi_v, hi_t) = S::as_mut_simd_f32s(hi);
    let (lo_v, lo_t) = S::as_mut_simd_f32s(lo);
    let [(x0, t0), (x1, t1), (x2, t2), (x3, t3)] = x.map(S::as_simd_f32s);
    let cv = [
        simd.splat_f32s(c[0]),
        simd.splat_f32s(c[1]),
        simd.splat_f32s(c[2]),
        simd.splat_f32s(c[3]),
    ];
    let lanes = hi_v.iter_mut().zip(lo_v.iter_mut());
    for ((((h, l), &a0), &a1), (&a2, &a3)) in lanes.zip(x0).zip(x1).zip(x2.iter().zip(x3)) {
        let p = simd.mul_f32s(cv[0], a0);
        let p = simd.mul_add_e_f32s(cv[1], a1, p);
        let p = simd.mul_add_e_f32s(cv[2], a2, p);
        let p = simd.mul_add_e_f32s(cv[3], a3, p);
        *h = two_sum(simd, *h, p, l);
    }
    let tails = hi_t.iter_mut().zip(lo_t.iter_mut());
    for ((((h, l), &a0), &a1), (&a2, &a3)) in tails.zip(t0).zip(t1).zip(t2.iter().zip(t3)) {
        let p = c[0] * a0 + c[1] * a1 + c[2] * a2 + c[3] * a3;
        *h = two_sum_scalar(*h, p, l);
    }
}

/// `hi + lo += c x` (equal lengths).
#[inline(always)]
fn accumulate1<S: Simd>(simd: S, x: &[f32], c: f32, hi: &mut [f32], lo: &mut [f32]) {
    let (hi_v, hi_t) = S::as_mut_simd_f32s(hi);
    let (lo_v, lo_t) = S::as_mut_simd_f32s(lo);
    let (x_v, x_t) = S::as_simd_f32s(x);
    let cv = simd.splat_f32s(c);
    for ((h, l), &a) in hi_v.iter_mut().zip(lo_v.iter_mut()).zip(x_v) {
        *h = two_sum(simd, *h, simd.mul_f32s(cv, a), l);
    }
    for ((h, l), &a) in hi_t.iter_mut().zip(lo_t.iter_mut()).zip(x_t) {
        *h = two_sum_scalar(*h, c * a, l);
    }
}

/// Squared Euclidean distance of each row to `point` (all of `point.len()` values).
///
/// Column-blocked so `point` is read from memory once. A row whose `f32` partial sums
/// overflow (values beyond about 1e19) is recomputed in `f64`, so only a NaN or an
/// infinity in the inputs gives a non-finite distance.
pub(crate) fn sq_dists_to<U: AsRef<[f32]>>(rows: &[U], point: &[f32]) -> Vec<f64> {
    let rows: Vec<&[f32]> = rows.iter().map(AsRef::as_ref).collect();
    let mut out = Arch::new().dispatch(DistancesTo { rows: &rows, point });
    for (o, row) in out.iter_mut().zip(&rows) {
        if !o.is_finite() {
            *o = sq_dist_f64(row, point);
        }
    }
    out
}

/// Squared Euclidean distance between `a` and `b` (equal lengths); see [`sq_dists_to`].
pub(crate) fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    sq_dists_to(&[a], b)[0]
}

/// Squared distance accumulated in `f64` one value at a time: slow, but exact to
/// `f64` rounding for every finite input.
pub(crate) fn sq_dist_f64(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let t = f64::from(x) - f64::from(y);
            t * t
        })
        .sum()
}

struct DistancesTo<'a> {
    rows: &'a [&'a [f32]],
    point: &'a [f32],
}

impl WithSimd for DistancesTo<'_> {
    type Output = Vec<f64>;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Vec<f64> {
        let d = self.point.len();
        let mut out = vec![0.0_f64; self.rows.len()];
        let mut start = 0;
        while start < d {
            let end = (start + DIST_BLOCK_COLUMNS).min(d);
            let point = &self.point[start..end];
            for (o, row) in out.iter_mut().zip(self.rows) {
                *o += f64::from(sq_dist_block(simd, &row[start..end], point));
            }
            start = end;
        }
        out
    }
}

/// Squared distance of two short slices (equal lengths) in `f32` lanes.
#[inline(always)]
fn sq_dist_block<S: Simd>(simd: S, a: &[f32], b: &[f32]) -> f32 {
    let (a_v, a_t) = S::as_simd_f32s(a);
    let (b_v, b_t) = S::as_simd_f32s(b);
    let zero = simd.splat_f32s(0.0);
    let mut acc = [zero; 4];
    let (a4, a_rest) = a_v.split_at(a_v.len() - a_v.len() % 4);
    let (b4, b_rest) = b_v.split_at(a4.len());
    for (x, y) in a4.chunks_exact(4).zip(b4.chunks_exact(4)) {
        for k in 0..4 {
            let t = simd.sub_f32s(x[k], y[k]);
            acc[k] = simd.mul_add_e_f32s(t, t, acc[k]);
        }
    }
    for (&x, &y) in a_rest.iter().zip(b_rest) {
        let t = simd.sub_f32s(x, y);
        acc[0] = simd.mul_add_e_f32s(t, t, acc[0]);
    }
    let acc = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
    let tail: f32 = a_t.iter().zip(b_t).map(|(x, y)| (x - y) * (x - y)).sum();
    simd.reduce_sum_f32s(acc) + tail
}

/// Rows of the output of [`mix_rows`] computed together: each input vector loaded is
/// used by this many multiply-adds.
const MIX_ROWS: usize = 4;

/// Columns per panel of [`mix_rows`]: the panel of 100 inputs (100 KiB) stays in L2
/// while every group of outputs is computed from it.
const MIX_PANEL_COLUMNS: usize = 256;

/// Writes `outs[o] = sum_i mixing[o * rows.len() + i] * rows[i]` for every output
/// (a dense matrix product `M X`, accumulated in `f32`). All rows and outputs have
/// one length; `mixing.len() == outs.len() * rows.len()`. Zero entries of `mixing`
/// are multiplied like any other, so every row must be finite.
pub(crate) fn mix_rows(rows: &[&[f32]], mixing: &[f32], outs: &mut [Vec<f32>]) {
    debug_assert_eq!(mixing.len(), outs.len() * rows.len());
    Arch::new().dispatch(MixRows { rows, mixing, outs });
}

struct MixRows<'a> {
    rows: &'a [&'a [f32]],
    mixing: &'a [f32],
    outs: &'a mut [Vec<f32>],
}

impl WithSimd for MixRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let n_in = self.rows.len();
        let lanes = std::mem::size_of::<S::f32s>() / std::mem::size_of::<f32>();
        let d = self.outs.first().map_or(0, Vec::len);
        // Two vectors of columns per step; the columns past the last step one at a time.
        let step = 2 * lanes;
        let full = d - d % step;
        let mut panel = 0;
        while panel < full {
            let panel_end = (panel + MIX_PANEL_COLUMNS.max(step)).min(full);
            for (group, outs) in self.outs.chunks_mut(MIX_ROWS).enumerate() {
                let mixing = &self.mixing[group * MIX_ROWS * n_in..][..outs.len() * n_in];
                for start in (panel..panel_end).step_by(step) {
                    if outs.len() == MIX_ROWS {
                        mix_step::<S, MIX_ROWS>(simd, self.rows, mixing, outs, start, lanes);
                    } else {
                        for (o, out) in outs.chunks_mut(1).enumerate() {
                            let m = &mixing[o * n_in..(o + 1) * n_in];
                            mix_step::<S, 1>(simd, self.rows, m, out, start, lanes);
                        }
                    }
                }
            }
            panel = panel_end;
        }
        for (o, out) in self.outs.iter_mut().enumerate() {
            let weights = &self.mixing[o * n_in..(o + 1) * n_in];
            for (j, x) in out[full..].iter_mut().enumerate() {
                *x = weights
                    .iter()
                    .zip(self.rows)
                    .map(|(&m, r)| m * r[full + j])
                    .sum();
            }
        }
    }
}

/// One step of [`MixRows`]: columns `start..start + 2 lanes` of `R` outputs, over
/// every input row.
#[inline(always)]
fn mix_step<S: Simd, const R: usize>(
    simd: S,
    rows: &[&[f32]],
    mixing: &[f32],
    outs: &mut [Vec<f32>],
    start: usize,
    lanes: usize,
) {
    let n_in = rows.len();
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; 2]; R];
    for (i, row) in rows.iter().enumerate() {
        let (x, _) = S::as_simd_f32s(&row[start..start + 2 * lanes]);
        let (x0, x1) = (x[0], x[1]);
        for (o, acc_o) in acc.iter_mut().enumerate() {
            let m = simd.splat_f32s(mixing[o * n_in + i]);
            acc_o[0] = simd.mul_add_e_f32s(m, x0, acc_o[0]);
            acc_o[1] = simd.mul_add_e_f32s(m, x1, acc_o[1]);
        }
    }
    for (out, acc_o) in outs.iter_mut().zip(&acc) {
        let (dst, _) = S::as_mut_simd_f32s(&mut out[start..start + 2 * lanes]);
        dst[0] = acc_o[0];
        dst[1] = acc_o[1];
    }
}

/// Whether every value of `x` is finite (neither NaN nor infinite).
pub(crate) fn all_finite(x: &[f32]) -> bool {
    Arch::new().dispatch(AllFinite { x })
}

struct AllFinite<'a> {
    x: &'a [f32],
}

impl WithSimd for AllFinite<'_> {
    type Output = bool;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> bool {
        // x * 0 is 0 for finite x and NaN otherwise; NaN survives the sum.
        let (x_v, x_t) = S::as_simd_f32s(self.x);
        let zero = simd.splat_f32s(0.0);
        let mut acc = zero;
        for &x in x_v {
            acc = simd.mul_add_e_f32s(x, zero, acc);
        }
        let acc = simd.reduce_sum_f32s(acc);
        acc == 0.0 && x_t.iter().all(|x| x.is_finite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values with every length class: full vectors, a partial block and a tail.
    fn ramp(len: usize, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919) % 113) as f32 * scale - 40.0)
            .collect()
    }

    #[test]
    fn weighted_sum_matches_f64_reference() {
        for d in [1, 15, 17, 1024, 3000] {
            let rows: Vec<Vec<f32>> = (0..7).map(|r| ramp(d, 0.5 + r as f32)).collect();
            let coefficients = [0.1, 0.2, 0.0, 0.3, 0.15, 0.05, 0.2];
            let mut out = vec![0.0; d];
            weighted_sum_into(&rows, &coefficients, &mut out);
            for (j, &o) in out.iter().enumerate() {
                let expected: f64 = rows
                    .iter()
                    .zip(&coefficients)
                    .map(|(r, &c)| c * f64::from(r[j]))
                    .sum();
                assert!((f64::from(o) - expected).abs() <= 1e-5 * (1.0 + expected.abs()));
            }
        }
    }

    #[test]
    fn kernels_agree_at_every_width() {
        let data: Vec<Vec<f32>> = (0..9).map(|r| ramp(1000 + 37, 0.1 + r as f32)).collect();
        let rows: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
        let coefficients = [0.5_f32, -1.0, 0.25, 2.0, 0.0, 1.5, -0.75, 0.125, 3.0];
        let mixing: Vec<f32> = (0..5 * 9).map(|k| (k % 7) as f32 * 0.1).collect();
        let d = data[0].len();
        let mut sums = vec![vec![0.0_f32; d]; 4];
        let mut mixes = vec![vec![vec![0.0_f32; d]; 5]; 4];
        let mut dists = Vec::new();
        for (k, (sum, mix)) in sums.iter_mut().zip(mixes.iter_mut()).enumerate() {
            let sum_kernel = WeightedSum {
                rows: &rows,
                coefficients: &coefficients,
                scale: 1.0,
                out: sum,
            };
            let mix_kernel = MixRows {
                rows: &rows,
                mixing: &mixing,
                outs: mix,
            };
            let dist_kernel = DistancesTo {
                rows: &rows,
                point: rows[2],
            };
            match k {
                0 => {
                    sum_kernel.with_simd(pulp::Scalar);
                    mix_kernel.with_simd(pulp::Scalar);
                    dists.push(dist_kernel.with_simd(pulp::Scalar));
                }
                1 => {
                    sum_kernel.with_simd(pulp::Scalar256b);
                    mix_kernel.with_simd(pulp::Scalar256b);
                    dists.push(dist_kernel.with_simd(pulp::Scalar256b));
                }
                2 => {
                    sum_kernel.with_simd(pulp::Scalar512b);
                    mix_kernel.with_simd(pulp::Scalar512b);
                    dists.push(dist_kernel.with_simd(pulp::Scalar512b));
                }
                _ => {
                    Arch::new().dispatch(sum_kernel);
                    Arch::new().dispatch(mix_kernel);
                    dists.push(Arch::new().dispatch(dist_kernel));
                }
            }
        }
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * (1.0 + b.abs());
        for j in 0..d {
            let sum: f64 = rows
                .iter()
                .zip(&coefficients)
                .map(|(r, &c)| f64::from(c) * f64::from(r[j]))
                .sum();
            for o in 0..5 {
                let expected: f64 = (0..9)
                    .map(|i| f64::from(mixing[o * 9 + i]) * f64::from(rows[i][j]))
                    .sum();
                for (width, mix) in mixes.iter().enumerate() {
                    assert!(
                        close(f64::from(mix[o][j]), expected),
                        "mix {o} {j} #{width}"
                    );
                }
            }
            for s in &sums {
                assert!(close(f64::from(s[j]), sum), "sum {j}: {} vs {sum}", s[j]);
            }
        }
        for (i, row) in rows.iter().enumerate() {
            let expected = sq_dist_f64(row, rows[2]);
            for dist in &dists {
                assert!(
                    close(dist[i], expected),
                    "distance {i}: {} vs {expected}",
                    dist[i]
                );
            }
        }
    }

    #[test]
    fn weighted_sum_skips_zero_coefficients() {
        let rows = vec![vec![1.0, 2.0], vec![f32::NAN, f32::INFINITY]];
        let mut out = vec![0.0; 2];
        weighted_sum_into(&rows, &[1.0, 0.0], &mut out);
        assert_eq!(out, vec![1.0, 2.0]);
    }

    #[test]
    fn distances_match_f64_reference_and_survive_overflow() {
        for d in [1, 16, 33, 2048, 5000] {
            let point = ramp(d, 0.25);
            let rows: Vec<Vec<f32>> = (0..5).map(|r| ramp(d, 0.3 * r as f32)).collect();
            for (got, row) in sq_dists_to(&rows, &point).iter().zip(&rows) {
                let expected = sq_dist_f64(row, &point);
                assert!((got - expected).abs() <= 1e-5 * (1.0 + expected));
            }
        }
        let (huge, zeros) = (vec![3e30_f32; 40], vec![0.0_f32; 40]);
        let distance = sq_dist(&huge, &zeros);
        assert!(distance.is_finite() && distance > 3e62, "{distance}");
        assert_eq!(distance, sq_dist_f64(&huge, &zeros));
        assert!(sq_dist(&[f32::NAN, 0.0], &[0.0, 0.0]).is_nan());
    }

    #[test]
    fn finiteness_scan_finds_nan_and_infinity_anywhere() {
        let mut x = vec![1.0_f32; 100];
        assert!(all_finite(&x));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, 50, 99] {
                x[at] = bad;
                assert!(!all_finite(&x), "{bad} at {at}");
                x[at] = 1.0;
            }
        }
        assert!(all_finite(&[f32::MAX, f32::MIN]));
    }
}
