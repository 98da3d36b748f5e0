//! Parameters of one SecAgg+ round, shared by every client and the aggregator.
//!
//! # Modulus and scale
//! Updates are clipped to L2 norm `clip_norm`, so every coordinate lies in
//! `[-clip_norm, clip_norm]`. Quantization multiplies by `scale` and rounds
//! stochastically to an integer `q` with `|q| <= q_max`, where
//! `q_max = floor((2^(m-1) - 1) / n)` (values are also clamped to it). The
//! sum of `n` such values therefore lies in `[-(2^(m-1) - 1), 2^(m-1) - 1]`
//! and is recovered exactly from its residue modulo `2^m` read as a signed
//! m-bit number: the sum of `n` clipped updates cannot overflow. The scale is
//! `scale = (q_max - 1) / clip_norm`, one step of headroom for the rounding.
//! Modulo 2^64, `q_max` is further capped at 2^52 so that the scaling is
//! exact in f64 arithmetic (more bits would be noise).
//! With m = 32, n = 100 and clip 1 the step is 1/scale ~ 4.7e-8; the
//! dequantized sum differs from the float sum of the clipped updates by less
//! than `n / scale` per coordinate.

use std::sync::Arc;

use ed25519_dalek::VerifyingKey;

use super::graph::Graph;

/// Quantized magnitudes stay at or below 2^52 so that `x * scale` is computed
/// in f64 to within half a step (this only binds modulo 2^64).
const Q_MAX_F64_EXACT: i64 = 1 << 52;
use super::SecAggError;

/// The ring the masked values live in: integers modulo 2^32 or 2^64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModulusBits {
    /// Modulo 2^32: 4 bytes per coordinate on the wire (as much as f32).
    B32,
    /// Modulo 2^64: 8 bytes per coordinate, for very large groups or precision.
    B64,
}

impl ModulusBits {
    /// Number of bits m.
    pub fn bits(self) -> u32 {
        match self {
            ModulusBits::B32 => 32,
            ModulusBits::B64 => 64,
        }
    }

    /// Bytes per coordinate on the wire.
    pub fn word_bytes(self) -> usize {
        (self.bits() / 8) as usize
    }

    /// Bit mask of the ring: 2^m - 1.
    pub fn mask(self) -> u64 {
        match self {
            ModulusBits::B32 => u64::from(u32::MAX),
            ModulusBits::B64 => u64::MAX,
        }
    }
}

/// Everything the parties of one round must agree on.
#[derive(Clone, Debug)]
pub struct SecAggParams {
    /// 32 bytes binding all derived keys and signatures to this round
    /// (e.g. a hash of mesh id, job, round number and group).
    pub session: [u8; 32],
    /// The clients' long-term Ed25519 keys, by client index.
    pub participants: Arc<Vec<VerifyingKey>>,
    /// Length of every update vector.
    pub dimension: usize,
    /// Shares needed to reconstruct a client's secrets.
    pub threshold: usize,
    /// L2 norm every update is clipped to.
    pub clip_norm: f64,
    /// The ring of masked values.
    pub modulus: ModulusBits,
    /// Who shares keys with whom.
    pub graph: Arc<Graph>,
}

impl SecAggParams {
    /// Parameters with the default graph for the group size and the default
    /// threshold (a strict majority of each neighbourhood).
    pub fn new(
        session: [u8; 32],
        participants: Vec<VerifyingKey>,
        dimension: usize,
        clip_norm: f64,
        modulus: ModulusBits,
        graph_seed: [u8; 32],
    ) -> Result<Self, SecAggError> {
        let n = u32::try_from(participants.len())
            .map_err(|_| SecAggError::BadParams("too many participants".into()))?;
        let graph = Graph::for_group(n, graph_seed);
        let threshold = graph.min_degree() / 2 + 1;
        let params = Self {
            session,
            participants: Arc::new(participants),
            dimension,
            threshold,
            clip_norm,
            modulus,
            graph: Arc::new(graph),
        };
        params.validate()?;
        Ok(params)
    }

    /// The same parameters with another threshold (checked).
    pub fn with_threshold(mut self, threshold: usize) -> Result<Self, SecAggError> {
        self.threshold = threshold;
        self.validate()?;
        Ok(self)
    }

    /// Checks the invariants the protocol relies on.
    pub fn validate(&self) -> Result<(), SecAggError> {
        let n = self.participants.len();
        let k = self.graph.min_degree();
        if n < 2 || self.graph.len() != n {
            return Err(SecAggError::BadParams(format!(
                "need at least 2 clients and a graph over them, have {n}"
            )));
        }
        // A strict majority of each neighbourhood: an aggregator can never
        // collect both kinds of shares of one client from honest clients.
        if 2 * self.threshold <= k || self.threshold > k {
            return Err(SecAggError::BadParams(format!(
                "threshold {} must be in ({}, {k}]",
                self.threshold,
                k / 2
            )));
        }
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0) || self.dimension == 0 {
            return Err(SecAggError::BadParams(
                "clip norm must be positive and dimension nonzero".into(),
            ));
        }
        if self.q_max() < 2 {
            return Err(SecAggError::BadParams(format!(
                "{n} clients do not fit modulo 2^{}",
                self.modulus.bits()
            )));
        }
        Ok(())
    }

    /// Number of clients n.
    pub fn num_clients(&self) -> usize {
        self.participants.len()
    }

    /// Largest magnitude of one quantized coordinate:
    /// min(floor((2^(m-1) - 1) / n), 2^52).
    pub fn q_max(&self) -> i64 {
        let half = (1u64 << (self.modulus.bits() - 1)) - 1;
        let fits = (half / self.participants.len().max(1) as u64) as i64;
        fits.min(Q_MAX_F64_EXACT)
    }

    /// Quantization scale: (q_max - 1) / clip_norm.
    pub fn scale(&self) -> f64 {
        (self.q_max() - 1) as f64 / self.clip_norm
    }

    /// Largest error of the dequantized sum per coordinate, against the sum
    /// of the clipped float updates of `contributors` clients: under one
    /// quantization step per client (1.5 steps allowing for the rounding of
    /// `x * scale` itself), plus f64 rounding of the sums.
    pub fn sum_error_bound(&self, contributors: usize) -> f64 {
        let n = contributors as f64;
        1.5 * n / self.scale() + 8.0 * n * self.clip_norm * f64::EPSILON
    }

    /// Bytes of a masked vector on the wire.
    pub fn masked_bytes(&self) -> usize {
        self.dimension * self.modulus.word_bytes()
    }
}
