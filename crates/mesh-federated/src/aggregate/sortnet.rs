//! Per-coordinate order statistics (median, trimmed mean) through a sorting network
//! run across SIMD lanes: lane `k` of the vectors holds coordinate `k` of a tile of
//! columns, and each comparator is one `min` and one `max` on whole vectors, so all
//! the tile's columns are sorted at once, without a branch or a transpose.
//!
//! The network is Batcher's merge exchange (Knuth, TAOCP vol. 3, 5.2.2, Algorithm M),
//! defined for any `n`: 1,077 comparators for `n = 100`. Values are compared as
//! IEEE-754 total-order keys ([`kernels::to_key`](super::kernels::to_key)), so NaNs
//! and infinities sort to the ends as extreme outliers.

use pulp::{Arch, Simd, WithSimd};

/// Largest number of updates sorted by the network; beyond it the network's
/// `n log^2 n` comparators and its `n`-vector working set stop paying off, and the
/// rules select per coordinate instead.
pub(crate) const NETWORK_N_MAX: usize = 256;

/// Vectors of adjacent columns each comparator handles: with `n = 100` and AVX-512
/// the working set is 100 x 4 x 64 B = 25 KiB, inside L1.
const GROUP_VECTORS: usize = 4;

/// Which order statistic to take of each column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Statistic {
    /// The median; for even `n` the mean of the two middle values.
    Median,
    /// The mean of the values left after dropping `trim` from each end (`n > 2 trim`).
    TrimmedMean {
        /// Values dropped per end.
        trim: usize,
    },
}

/// Comparators `(i, j)`, `i < j`, of Batcher's merge-exchange network for `n` values.
pub(crate) fn merge_exchange(n: usize) -> Vec<(u16, u16)> {
    debug_assert!(n <= usize::from(u16::MAX));
    let mut pairs = Vec::new();
    if n < 2 {
        return pairs;
    }
    let t = usize::BITS - (n - 1).leading_zeros();
    let mut p = 1_usize << (t - 1);
    while p > 0 {
        let (mut q, mut r, mut d) = (1_usize << (t - 1), 0, p);
        loop {
            for i in 0..n - d {
                if i & p == r {
                    pairs.push((i as u16, (i + d) as u16));
                }
            }
            if q == p {
                break;
            }
            (d, q, r) = (q - p, q / 2, p);
        }
        p /= 2;
    }
    pairs
}

/// `network` without the comparators that cannot change the statistic: working back
/// from the end, a comparator between two wires that nothing touches afterwards and
/// whose final positions play the same part (both trimmed low, both kept, ...) only
/// reorders values within that part. For `n = 100` this drops about a fifth.
fn pruned(network: Vec<(u16, u16)>, n: usize, statistic: Statistic) -> Vec<(u16, u16)> {
    let part = |i: usize| match statistic {
        Statistic::Median => {
            let (low, high) = ((n - 1) / 2, n / 2);
            if i < low {
                0
            } else if i > high {
                n
            } else {
                1 + i - low
            }
        }
        Statistic::TrimmedMean { trim } => usize::from(i >= trim) + usize::from(i >= n - trim),
    };
    let mut touched = vec![false; n];
    let mut kept: Vec<(u16, u16)> = network
        .into_iter()
        .rev()
        .filter(|&(a, b)| {
            let (a, b) = (usize::from(a), usize::from(b));
            if !touched[a] && !touched[b] && part(a) == part(b) {
                return false;
            }
            touched[a] = true;
            touched[b] = true;
            true
        })
        .collect();
    kept.reverse();
    kept
}

/// Writes the statistic of each column of `rows` (at most [`NETWORK_N_MAX`], all of
/// `out.len()` values) to `out`.
pub(crate) fn per_coordinate(rows: &[&[f32]], statistic: Statistic, out: &mut [f32]) {
    debug_assert!(rows.len() <= NETWORK_N_MAX);
    if let Statistic::TrimmedMean { trim } = statistic {
        debug_assert!(rows.len() > 2 * trim);
    }
    let network = pruned(merge_exchange(rows.len()), rows.len(), statistic);
    Arch::new().dispatch(SortColumns {
        rows,
        network: &network,
        statistic,
        out,
    });
}

struct SortColumns<'a> {
    rows: &'a [&'a [f32]],
    network: &'a [(u16, u16)],
    statistic: Statistic,
    out: &'a mut [f32],
}

impl WithSimd for SortColumns<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let n = self.rows.len();
        let lanes = std::mem::size_of::<S::f32s>() / std::mem::size_of::<f32>();
        let tile_columns = GROUP_VECTORS * lanes;
        let mut keys = vec![simd.splat_i32s(0); n * GROUP_VECTORS];
        let d = self.out.len();
        let mut start = 0;
        while start < d {
            let end = (start + tile_columns).min(d);
            for (i, row) in self.rows.iter().enumerate() {
                let dst = &mut keys[i * GROUP_VECTORS..(i + 1) * GROUP_VECTORS];
                for (g, key) in dst.iter_mut().enumerate() {
                    *key = to_keys(simd, load(simd, row, start + g * lanes, end, lanes));
                }
            }
            sort_tile(simd, self.network, &mut keys);
            for g in 0..GROUP_VECTORS {
                let from = start + g * lanes;
                if from >= end {
                    break;
                }
                let value = reduce(simd, &keys, g, n, self.statistic);
                store(
                    simd,
                    &mut self.out[from..end.min(from + lanes)],
                    value,
                    lanes,
                );
            }
            start = end;
        }
    }
}

/// The vector of `row[from..from + lanes]`, zero-filled past `end` (or all zero).
#[inline(always)]
fn load<S: Simd>(simd: S, row: &[f32], from: usize, end: usize, lanes: usize) -> S::f32s {
    if from + lanes <= end {
        S::as_simd_f32s(&row[from..from + lanes]).0[0]
    } else if from < end {
        simd.partial_load_f32s(&row[from..end])
    } else {
        simd.splat_f32s(0.0)
    }
}

/// Writes `value` to `dst` (`dst.len() <= lanes`).
#[inline(always)]
fn store<S: Simd>(simd: S, dst: &mut [f32], value: S::f32s, lanes: usize) {
    if dst.len() == lanes {
        S::as_mut_simd_f32s(dst).0[0] = value;
    } else {
        simd.partial_store_f32s(dst, value);
    }
}

/// Lane-wise [`kernels::to_key`](super::kernels::to_key): flips the magnitude bits of
/// negative values so signed integer order is the IEEE-754 total order. It is its own
/// inverse, so it also turns keys back into values.
#[inline(always)]
fn to_keys<S: Simd>(simd: S, x: S::f32s) -> S::i32s {
    let bits = simd.transmute_i32s_f32s(x);
    let negative = simd.less_than_i32s(bits, simd.splat_i32s(0));
    let flipped = simd.xor_i32s(bits, simd.splat_i32s(i32::MAX));
    simd.select_i32s(negative, flipped, bits)
}

/// Inverse of [`to_keys`].
#[inline(always)]
fn from_keys<S: Simd>(simd: S, keys: S::i32s) -> S::f32s {
    let negative = simd.less_than_i32s(keys, simd.splat_i32s(0));
    let flipped = simd.xor_i32s(keys, simd.splat_i32s(i32::MAX));
    simd.transmute_f32s_i32s(simd.select_i32s(negative, flipped, keys))
}

/// Runs the network over a tile: `keys[i * GROUP_VECTORS + g]` is vector `g` of row `i`.
#[inline(always)]
fn sort_tile<S: Simd>(simd: S, network: &[(u16, u16)], keys: &mut [S::i32s]) {
    for &(a, b) in network {
        let (a, b) = (
            usize::from(a) * GROUP_VECTORS,
            usize::from(b) * GROUP_VECTORS,
        );
        let (low, high) = keys.split_at_mut(b);
        let (x, y) = (&mut low[a..a + GROUP_VECTORS], &mut high[..GROUP_VECTORS]);
        for (x, y) in x.iter_mut().zip(y.iter_mut()) {
            let (p, q) = (*x, *y);
            *x = simd.min_i32s(p, q);
            *y = simd.max_i32s(p, q);
        }
    }
}

/// The statistic of vector `g` of a sorted tile of `n` rows.
#[inline(always)]
fn reduce<S: Simd>(simd: S, keys: &[S::i32s], g: usize, n: usize, statistic: Statistic) -> S::f32s {
    match statistic {
        Statistic::Median if n % 2 == 1 => from_keys(simd, keys[n / 2 * GROUP_VECTORS + g]),
        Statistic::Median => {
            // Halving first cannot overflow; for normal values it is exact, so the
            // sum is the correctly rounded midpoint.
            let half = simd.splat_f32s(0.5);
            let lower = from_keys(simd, keys[(n / 2 - 1) * GROUP_VECTORS + g]);
            let upper = from_keys(simd, keys[n / 2 * GROUP_VECTORS + g]);
            simd.mul_add_e_f32s(lower, half, simd.mul_f32s(upper, half))
        }
        Statistic::TrimmedMean { trim } => {
            let mut hi = simd.splat_f32s(0.0);
            let mut lo = hi;
            let kept_rows = &keys[trim * GROUP_VECTORS..(n - trim) * GROUP_VECTORS];
            for row in kept_rows.chunks_exact(GROUP_VECTORS) {
                let x = from_keys(simd, row[g]);
                let s = simd.add_f32s(hi, x);
                let b_virtual = simd.sub_f32s(s, hi);
                let a_virtual = simd.sub_f32s(s, b_virtual);
                let error =
                    simd.add_f32s(simd.sub_f32s(hi, a_virtual), simd.sub_f32s(x, b_virtual));
                lo = simd.add_f32s(lo, error);
                hi = s;
            }
            let kept = simd.splat_f32s((n - 2 * trim) as f32);
            simd.div_f32s(simd.add_f32s(hi, lo), kept)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::kernels::{to_key, xorshift32};
    use crate::aggregate::median::column_median;
    use crate::aggregate::trimmed_mean::column_trimmed_mean;

    /// Runs the kernel at 1, 8 and 16 lanes (emulated) and at the CPU's width.
    fn sort_columns_at_every_width(
        rows: &[&[f32]],
        statistic: Statistic,
        d: usize,
    ) -> Vec<Vec<f32>> {
        let network = pruned(merge_exchange(rows.len()), rows.len(), statistic);
        let mut outs = vec![vec![0.0_f32; d]; 4];
        fn kernel<'a>(
            rows: &'a [&'a [f32]],
            network: &'a [(u16, u16)],
            statistic: Statistic,
            out: &'a mut [f32],
        ) -> SortColumns<'a> {
            SortColumns {
                rows,
                network,
                statistic,
                out,
            }
        }
        let [o1, o8, o16, native] = &mut outs[..] else {
            unreachable!()
        };
        kernel(rows, &network, statistic, o1).with_simd(pulp::Scalar);
        kernel(rows, &network, statistic, o8).with_simd(pulp::Scalar256b);
        kernel(rows, &network, statistic, o16).with_simd(pulp::Scalar512b);
        Arch::new().dispatch(kernel(rows, &network, statistic, native));
        outs
    }

    #[test]
    fn sorted_columns_match_selection_reference() {
        let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 1.0];
        let mut state = 0x9e37_79b9_u32;
        for n in [1, 2, 3, 4, 7, 12, 33, 100, 101, NETWORK_N_MAX] {
            let d = 67;
            let data: Vec<Vec<f32>> = (0..n)
                .map(|_| {
                    (0..d)
                        .map(|_| {
                            let value = xorshift32(&mut state);
                            match value % 16 {
                                0 => specials[(value >> 8) as usize % specials.len()],
                                1..=4 => (value % 5) as f32, // ties
                                _ => (value % 100_000) as f32 / 1000.0 - 50.0,
                            }
                        })
                        .collect()
                })
                .collect();
            let rows: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
            let mut statistics = vec![Statistic::Median];
            statistics.extend([1, 3, (n - 1) / 2].map(|trim| Statistic::TrimmedMean { trim }));
            for statistic in statistics {
                if let Statistic::TrimmedMean { trim } = statistic {
                    if n <= 2 * trim || trim == 0 {
                        continue;
                    }
                }
                for (width, out) in sort_columns_at_every_width(&rows, statistic, d)
                    .iter()
                    .enumerate()
                {
                    for (j, &got) in out.iter().enumerate() {
                        let mut column: Vec<i32> = rows.iter().map(|r| to_key(r[j])).collect();
                        let expected = match statistic {
                            Statistic::Median => column_median(&mut column),
                            Statistic::TrimmedMean { trim } => {
                                column_trimmed_mean(&mut column, trim)
                            }
                        };
                        // A kept infinity may come out as NaN (the compensation
                        // subtracts it from itself): non-finite either way.
                        let same = (!got.is_finite() && !expected.is_finite())
                            || got == expected
                            || (got - expected).abs() <= 1e-5 * (1.0 + expected.abs());
                        assert!(
                            same,
                            "n {n} {statistic:?} width #{width} column {j}: {got} vs {expected}"
                        );
                    }
                }
            }
        }
    }

    /// Applies the network to scalars.
    fn run(network: &[(u16, u16)], v: &mut [u32]) {
        for &(a, b) in network {
            let (a, b) = (usize::from(a), usize::from(b));
            if v[a] > v[b] {
                v.swap(a, b);
            }
        }
    }

    #[test]
    fn merge_exchange_sorts_every_zero_one_input() {
        // The 0-1 principle: a comparator network that sorts all 2^n sequences of
        // zeros and ones sorts every input.
        for n in 0..=14_usize {
            let network = merge_exchange(n);
            for bits in 0..1_u32 << n {
                let mut v: Vec<u32> = (0..n).map(|i| (bits >> i) & 1).collect();
                run(&network, &mut v);
                assert!(
                    v.windows(2).all(|w| w[0] <= w[1]),
                    "n = {n}, input {bits:b}"
                );
            }
        }
    }

    #[test]
    fn merge_exchange_sorts_large_inputs() {
        let mut state = 0x2545_f491_u32;
        for n in [15, 31, 64, 100, 101, 200, NETWORK_N_MAX] {
            let network = merge_exchange(n);
            assert!(network.iter().all(|&(a, b)| a < b && usize::from(b) < n));
            for _ in 0..50 {
                let mut v: Vec<u32> = (0..n).map(|_| xorshift32(&mut state) % 1000).collect();
                let mut expected = v.clone();
                expected.sort_unstable();
                run(&network, &mut v);
                assert_eq!(v, expected, "n = {n}");
            }
        }
        assert_eq!(merge_exchange(100).len(), 1077);
    }

    #[test]
    fn keys_round_trip_and_order_like_total_cmp() {
        let values = [
            f32::NEG_INFINITY,
            -2.0,
            -0.0,
            0.0,
            1e-40,
            3.0,
            f32::INFINITY,
            f32::NAN,
        ];
        let simd = pulp::Scalar;
        for w in values.windows(2) {
            let (a, b) = (to_keys(simd, w[0]), to_keys(simd, w[1]));
            assert!(a < b, "{} < {}", w[0], w[1]);
        }
        for &v in &values {
            assert_eq!(from_keys(simd, to_keys(simd, v)).to_bits(), v.to_bits());
        }
    }
}
