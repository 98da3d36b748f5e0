//! Throughput measurement of the aggregation rules, shared by
//! `agent-mesh bench aggregators` and the criterion benches.
//!
//! Throughput is reported as input bytes (`n * d * 4`) per second of one
//! [`Aggregator::aggregate`] call, on one thread. Next to the wall time the thread's
//! CPU time is measured where the OS reports it (Linux): on a machine shared with
//! other work, the wall time also counts the time the thread waited for a core.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{AggregateError, Aggregator, AggregatorConfig, PreAggregation, Rule};

/// One measured (rule, n, d) point.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    /// The rule with its parameters (`{:#}` form, e.g. `trimmed-mean:trim=2`),
    /// after its pre-aggregation step unless that is `none` (`nnm+trimmed-mean`).
    pub rule: String,
    /// Number of updates.
    pub n: usize,
    /// Dimension of each update.
    pub d: usize,
    /// Byzantine count the rule was configured with.
    pub byzantine: usize,
    /// Median wall time of one aggregation over the repetitions.
    pub time_median: Duration,
    /// Median CPU time of the measuring thread per aggregation, where known.
    pub cpu_time_median: Option<Duration>,
    /// Input throughput `n * d * 4 / time_median`, in GB/s (1 GB = 1e9 bytes).
    pub input_gb_per_s: f64,
}

/// CPU time the calling thread has run, from `/proc/thread-self/schedstat`
/// (`None` where that file does not exist or does not parse).
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// The median of `times` (non-empty).
fn median_of(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// `n` pseudo-random updates of dimension `d`, uniform in `[-1, 1)`, from `seed`.
pub fn synthetic_updates(n: usize, d: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..d).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect())
        .collect()
}

/// The Byzantine count used for benchmarking at `n`: `n / 10`, lowered so every rule
/// (Bulyan needs `n >= 4f + 3`) accepts it.
pub fn byzantine_for(n: usize) -> usize {
    (n / 10).min(n.saturating_sub(3) / 4)
}

/// Times `repetitions` (at least 1) calls of `pre` then `rule` on `updates` with
/// equal weights.
pub fn measure(
    rule: Rule,
    pre: PreAggregation,
    updates: &[Vec<f32>],
    repetitions: usize,
) -> Result<BenchResult, AggregateError> {
    let (n, d) = super::check_shape(updates)?;
    let byzantine = byzantine_for(n);
    let config = AggregatorConfig {
        rule,
        pre,
        byzantine_count: byzantine,
        seed: 0,
    };
    let mut aggregator = Aggregator::new(config);
    let weights = vec![1.0_f32; n];
    let mut times = Vec::with_capacity(repetitions.max(1));
    let mut cpu_times = Vec::with_capacity(repetitions.max(1));
    for _ in 0..repetitions.max(1) {
        let (start, cpu_start) = (Instant::now(), thread_cpu_time());
        let out = aggregator.aggregate(updates, &weights)?;
        times.push(start.elapsed());
        if let (Some(before), Some(after)) = (cpu_start, thread_cpu_time()) {
            cpu_times.push(after.saturating_sub(before));
        }
        std::hint::black_box(out);
    }
    let cpu_time_median = (cpu_times.len() == times.len()).then(|| median_of(cpu_times));
    let time_median = median_of(times);
    let bytes = (n * d * std::mem::size_of::<f32>()) as f64;
    let input_gb_per_s = bytes / time_median.as_secs_f64().max(1e-12) / 1e9;
    let rule = match pre {
        PreAggregation::None => format!("{rule:#}"),
        pre => format!("{pre:#}+{rule:#}"),
    };
    Ok(BenchResult {
        rule,
        n,
        d,
        byzantine,
        time_median,
        cpu_time_median,
        input_gb_per_s,
    })
}

/// Measures every rule in `rules`, after `pre`, at every `(n, d)` in the cross
/// product of `ns` and `ds`, generating the inputs once per `(n, d)` from `seed`.
/// Rules that cannot run at some `n` (e.g. Bulyan below `n = 4f + 3`) are skipped
/// there.
pub fn run(
    rules: &[Rule],
    pre: PreAggregation,
    ns: &[usize],
    ds: &[usize],
    repetitions: usize,
    seed: u64,
) -> Result<Vec<BenchResult>, AggregateError> {
    let mut results = Vec::with_capacity(rules.len() * ns.len() * ds.len());
    for &n in ns {
        for &d in ds {
            let updates = synthetic_updates(n, d, seed);
            let inputs = pre.output_count(n);
            for &rule in rules.iter().filter(|r| r.n_min(byzantine_for(n)) <= inputs) {
                results.push(measure(rule, pre, &updates, repetitions)?);
            }
        }
    }
    Ok(results)
}
