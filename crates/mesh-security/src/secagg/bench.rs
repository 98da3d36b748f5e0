//! The SecAgg+ benchmark behind `agent-mesh bench secagg`: one full round per
//! (n, d) with the in-memory driver, reporting client time, aggregator time
//! and bytes each client sends against the plain f32 update.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::sim::{run_round_with, DropoutPlan};
use super::{ModulusBits, SecAggError, SecAggParams};
use crate::identity::NodeIdentity;

/// Group sizes of the standard table.
pub const DEFAULT_CLIENTS: [usize; 3] = [10, 100, 500];
/// Update lengths of the standard table.
pub const DEFAULT_DIMENSIONS: [usize; 2] = [100_000, 1_000_000];

/// One measured configuration.
#[derive(Clone, Debug)]
pub struct BenchRow {
    /// Clients in the group.
    pub clients: usize,
    /// Update length.
    pub dimension: usize,
    /// Graph degree (neighbours per client).
    pub degree: usize,
    /// Shamir threshold.
    pub threshold: usize,
    /// Mean time one client spends in its four steps.
    pub client_time: Duration,
    /// Time the aggregator spends on the whole round.
    pub aggregator_time: Duration,
    /// Mean bytes one client sends.
    pub bytes_per_client: usize,
    /// `bytes_per_client` divided by the plain f32 update (4 * d bytes).
    pub bytes_ratio: f64,
}

/// Runs one round for `clients` x `dimension` with seeded random updates.
pub fn bench(
    clients: usize,
    dimension: usize,
    modulus: ModulusBits,
    seed: u64,
) -> Result<BenchRow, SecAggError> {
    let identities: Vec<NodeIdentity> = (0..clients)
        .map(|i| {
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&(i as u64).to_le_bytes());
            s[8..16].copy_from_slice(&seed.to_le_bytes());
            NodeIdentity::from_seed(&s)
        })
        .collect();
    let keys = identities.iter().map(NodeIdentity::verifying_key).collect();
    let mut session = [0u8; 32];
    session[..8].copy_from_slice(&seed.to_le_bytes());
    let params = SecAggParams::new(session, keys, dimension, 1.0, modulus, session)?;
    let update = |u: u32| -> Vec<f32> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ u64::from(u).rotate_left(32));
        let scale = 1.0 / (dimension as f32).sqrt();
        (0..dimension)
            .map(|_| rng.random_range(-scale..scale))
            .collect()
    };
    let report = run_round_with(&params, &identities, &update, &DropoutPlan::default(), seed)?;
    report.output?;
    let active = report.active_clients.max(1);
    let bytes_per_client = report.client_bytes / active;
    Ok(BenchRow {
        clients,
        dimension,
        degree: params.graph.min_degree(),
        threshold: params.threshold,
        client_time: report.client_time / active as u32,
        aggregator_time: report.aggregator_time,
        bytes_per_client,
        bytes_ratio: bytes_per_client as f64 / (4 * dimension) as f64,
    })
}
