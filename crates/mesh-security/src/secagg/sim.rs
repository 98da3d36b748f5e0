//! An in-memory driver for one SecAgg+ round: every message is encoded to
//! bytes and decoded again (bounded), clients drop out where a plan says,
//! and the time each party spends and the bytes each client sends are
//! recorded. Tests and the benchmark use it; the round protocol has its own
//! driver over the network.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::messages::{decode, encode};
use super::{AggregateOutput, SecAggAggregator, SecAggClient, SecAggError, SecAggParams};
use crate::identity::NodeIdentity;

/// Which clients vanish, and when.
#[derive(Clone, Debug, Default)]
pub struct DropoutPlan {
    /// Never advertise keys.
    pub before_advertising: BTreeSet<u32>,
    /// Advertise, then send no shares.
    pub before_sharing: BTreeSet<u32>,
    /// Share keys, then send no masked input.
    pub before_masking: BTreeSet<u32>,
    /// Send a masked input, then never answer the unmask request.
    pub after_masking: BTreeSet<u32>,
}

/// What a simulated round produced and cost.
#[derive(Debug)]
pub struct RoundReport {
    /// The aggregator's result, or why it failed.
    pub output: Result<AggregateOutput, SecAggError>,
    /// Total time spent inside client calls, all clients together.
    pub client_time: Duration,
    /// Number of clients that did any work.
    pub active_clients: usize,
    /// Total time spent inside aggregator calls.
    pub aggregator_time: Duration,
    /// Bytes sent by all clients together (encoded messages).
    pub client_bytes: usize,
}

/// The seed the simulation gives client `index` in a round seeded with `seed`.
pub fn client_seed(seed: u64, index: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..8].copy_from_slice(&seed.to_le_bytes());
    out[8..12].copy_from_slice(&index.to_le_bytes());
    out
}

/// Largest message the simulation decodes, in bytes.
const MESSAGE_BYTES_MAX: usize = 1 << 30;

fn wire<T: Serialize + DeserializeOwned>(
    message: &T,
    bytes_sent: &mut usize,
) -> Result<T, SecAggError> {
    let bytes = encode(message)?;
    *bytes_sent += bytes.len();
    decode(&bytes, MESSAGE_BYTES_MAX)
}

struct Timer {
    clients: Duration,
    aggregator: Duration,
    bytes: usize,
}

impl Timer {
    fn client<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.clients += start.elapsed();
        out
    }

    fn aggregator<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.aggregator += start.elapsed();
        out
    }
}

/// Runs one round with `identities[i]` as client `i` and `updates[i]` as its
/// update, dropping clients per `plan`; all randomness comes from `seed`.
pub fn run_round(
    params: &SecAggParams,
    identities: &[NodeIdentity],
    updates: &[Vec<f32>],
    plan: &DropoutPlan,
    seed: u64,
) -> Result<RoundReport, SecAggError> {
    if updates.len() != params.num_clients() {
        return Err(SecAggError::BadParams("one update per client".into()));
    }
    run_round_with(
        params,
        identities,
        &|u| updates[u as usize].clone(),
        plan,
        seed,
    )
}

/// [`run_round`] with updates made on demand (outside the timed calls), so
/// large rounds need not hold every update in memory at once.
pub fn run_round_with(
    params: &SecAggParams,
    identities: &[NodeIdentity],
    updates: &dyn Fn(u32) -> Vec<f32>,
    plan: &DropoutPlan,
    seed: u64,
) -> Result<RoundReport, SecAggError> {
    let n = params.num_clients();
    if identities.len() != n {
        return Err(SecAggError::BadParams(
            "one identity and one update per client".into(),
        ));
    }
    let mut t = Timer {
        clients: Duration::ZERO,
        aggregator: Duration::ZERO,
        bytes: 0,
    };
    let mut clients = Vec::with_capacity(n);
    for (i, id) in identities.iter().enumerate() {
        clients.push(SecAggClient::new(
            params.clone(),
            i as u32,
            id.clone(),
            client_seed(seed, i as u32),
        )?);
    }
    let mut agg = SecAggAggregator::new(params.clone())?;
    let active_clients = n - plan.before_advertising.len();
    let output = drive(&mut t, &mut clients, &mut agg, updates, plan);
    Ok(RoundReport {
        output,
        client_time: t.clients,
        active_clients,
        aggregator_time: t.aggregator,
        client_bytes: t.bytes,
    })
}

fn drive(
    t: &mut Timer,
    clients: &mut [SecAggClient],
    agg: &mut SecAggAggregator,
    updates: &dyn Fn(u32) -> Vec<f32>,
    plan: &DropoutPlan,
) -> Result<AggregateOutput, SecAggError> {
    for c in clients
        .iter_mut()
        .filter(|c| !plan.before_advertising.contains(&c.index()))
    {
        let msg = t.client(|| c.advertise())?;
        let msg = wire(&msg, &mut t.bytes)?;
        t.aggregator(|| agg.receive_advert(msg))?;
    }
    let inbox = t.aggregator(|| agg.finish_advertising())?;
    for (u, keys) in inbox {
        if plan.before_sharing.contains(&u) {
            continue;
        }
        let keys = wire(&keys, &mut 0)?;
        let c = &mut clients[u as usize];
        let msg = t.client(|| c.share_keys(&keys))?;
        let msg = wire(&msg, &mut t.bytes)?;
        t.aggregator(|| agg.receive_shares(msg))?;
    }
    let inbox = t.aggregator(|| agg.finish_sharing())?;
    let mut masked = Vec::new();
    for (u, shares) in inbox {
        if plan.before_masking.contains(&u) {
            continue;
        }
        let shares = wire(&shares, &mut 0)?;
        let update = updates(u);
        let c = &mut clients[u as usize];
        let msg = t.client(|| c.masked_input(&shares, &update))?;
        let msg = wire(&msg, &mut t.bytes)?;
        t.aggregator(|| agg.receive_masked_input(msg))?;
        masked.push(u);
    }
    let request = t.aggregator(|| agg.finish_masking())?;
    for u in masked
        .into_iter()
        .filter(|u| !plan.after_masking.contains(u))
    {
        let request = wire(&request, &mut 0)?;
        let c = &mut clients[u as usize];
        let msg = t.client(|| c.unmask(&request))?;
        let msg = wire(&msg, &mut t.bytes)?;
        t.aggregator(|| agg.receive_unmask(msg))?;
    }
    t.aggregator(|| agg.finish())
}
