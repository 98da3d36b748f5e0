//! Who shares keys with whom: the SecAgg+ neighbourhood graph.
//!
//! Small groups use the complete graph (original SecAgg). Larger groups use a
//! random k-regular graph with k = O(log n) (Bell et al. 2020): a Harary graph
//! (each node joined to its k/2 nearest nodes on each side of a ring) over a
//! random permutation of the clients, drawn from a seed all parties share, so
//! every client and the aggregator compute the same graph. Each client then
//! does O(log n) key agreements and mask expansions instead of O(n).

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Multiplier c in the degree k = c * ceil(log2 n) used for large groups.
pub const DEGREE_LOG_FACTOR: u32 = 3;

/// The degree [`Graph::for_group`] picks for `n` clients: n - 1 (complete)
/// when that is no larger than the logarithmic degree, else the even number
/// at or above `DEGREE_LOG_FACTOR * ceil(log2 n)`.
pub fn default_degree(n: u32) -> u32 {
    if n <= 1 {
        return 0;
    }
    let log2_ceil = u32::BITS - (n - 1).leading_zeros();
    let k = DEGREE_LOG_FACTOR * log2_ceil;
    let k = k + (k % 2);
    if k >= n - 1 {
        n - 1
    } else {
        k
    }
}

/// An undirected neighbourhood graph over clients `0..n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Graph {
    neighbours: Vec<Vec<u32>>,
}

impl Graph {
    /// The complete graph on `n` clients.
    pub fn complete(n: u32) -> Self {
        let neighbours = (0..n)
            .map(|u| (0..n).filter(|&v| v != u).collect())
            .collect();
        Self { neighbours }
    }

    /// A random Harary graph of even `degree` (< n - 1) on `n` clients,
    /// permuted by a ChaCha20 RNG seeded with `seed`.
    ///
    /// Panics if `degree` is odd or not below `n` (a caller bug).
    pub fn random_regular(n: u32, degree: u32, seed: [u8; 32]) -> Self {
        assert!(
            degree.is_multiple_of(2) && degree < n,
            "degree must be even and below n"
        );
        let mut ring: Vec<u32> = (0..n).collect();
        ring.shuffle(&mut ChaCha20Rng::from_seed(seed));
        let n_usize = n as usize;
        let half = (degree / 2) as usize;
        let mut neighbours = vec![Vec::with_capacity(degree as usize); n_usize];
        for (pos, &u) in ring.iter().enumerate() {
            for step in 1..=half {
                let right = ring[(pos + step) % n_usize];
                let left = ring[(pos + n_usize - step) % n_usize];
                neighbours[u as usize].push(right);
                neighbours[u as usize].push(left);
            }
        }
        for list in &mut neighbours {
            list.sort_unstable();
            list.dedup();
        }
        Self { neighbours }
    }

    /// The graph for a group of `n`: complete when small, else random regular.
    pub fn for_group(n: u32, seed: [u8; 32]) -> Self {
        let degree = default_degree(n);
        if degree + 1 >= n {
            Self::complete(n)
        } else {
            Self::random_regular(n, degree, seed)
        }
    }

    /// Number of clients.
    pub fn len(&self) -> usize {
        self.neighbours.len()
    }

    /// Whether the graph has no clients.
    pub fn is_empty(&self) -> bool {
        self.neighbours.is_empty()
    }

    /// The neighbours of `u`, sorted (empty for an unknown client).
    pub fn neighbours(&self, u: u32) -> &[u32] {
        self.neighbours.get(u as usize).map_or(&[], Vec::as_slice)
    }

    /// Whether `u` and `v` are neighbours.
    pub fn are_neighbours(&self, u: u32, v: u32) -> bool {
        self.neighbours(u).binary_search(&v).is_ok()
    }

    /// The smallest degree of any client.
    pub fn min_degree(&self) -> usize {
        self.neighbours.iter().map(Vec::len).min().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_groups_are_complete_and_large_ones_logarithmic() {
        assert_eq!(default_degree(10), 9);
        assert_eq!(default_degree(100), 22);
        assert_eq!(default_degree(500), 28);
        assert_eq!(Graph::for_group(10, [0; 32]), Graph::complete(10));
    }

    #[test]
    fn random_regular_graphs_are_regular_symmetric_and_seeded() {
        for n in [24u32, 100, 500] {
            let k = default_degree(n);
            let g = Graph::for_group(n, [7; 32]);
            for u in 0..n {
                assert_eq!(g.neighbours(u).len(), k as usize, "n={n} u={u}");
                assert!(!g.are_neighbours(u, u));
                for &v in g.neighbours(u) {
                    assert!(g.are_neighbours(v, u), "symmetric");
                }
            }
            assert_eq!(g, Graph::for_group(n, [7; 32]));
            assert_ne!(g, Graph::for_group(n, [8; 32]));
        }
    }
}
