//! Rényi-DP accounting of the Poisson-subsampled Gaussian mechanism (Mironov, Talwar
//! and Zhang 2019), computed as Google's `dp-accounting` `RdpAccountant` does:
//! integer orders by the binomial expansion, fractional orders by the two-sided
//! series of Sec. 3.3 of arXiv:1908.10530, and conversion to (epsilon, delta) with
//! the improved bound of Balle et al. 2020 (Prop. 12 of arXiv:2004.00010), minimized
//! over the orders. Golden values from that library are checked in under
//! `tests/golden/`.

use super::PrivacyError;

/// Fractional-order series terms summed at most (as in `dp-accounting`).
const FRAC_TERMS_MAX: usize = 1000;

/// Bisection steps of the noise search.
const BISECTION_STEPS_MAX: usize = 100;

/// Largest noise multiplier [`noise_multiplier_for_epsilon`] tries.
const NOISE_MULTIPLIER_MAX: f64 = 1e6;

/// `dp-accounting`'s default orders: 1.1, 1.2, ..., 10.9, then 11..=63, 128, 256, 512, 1024.
pub fn default_orders() -> Vec<f64> {
    let fractional = (1..100).map(|x| 1.0 + f64::from(x) / 10.0);
    let integer = (11..64).chain([128, 256, 512, 1024]).map(f64::from);
    fractional.chain(integer).collect()
}

/// `log(exp(x) + exp(y))` without overflow.
fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    if a == f64::NEG_INFINITY {
        return b;
    }
    (a - b).exp().ln_1p() + b
}

/// `log(|C(n, k)|)` through the log-gamma function (also for fractional `n`).
fn log_comb(n: f64, k: f64) -> f64 {
    libm::lgamma(n + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(n - k + 1.0)
}

/// `log(erfc(x))`, accurate also where `erfc` underflows (large `x`).
fn log_erfc(x: f64) -> f64 {
    let r = libm::erfc(x);
    if r > 1e-300 {
        return r.ln();
    }
    // Laurent series of log(erfc(x)) at infinity (as in dp-accounting's fallback).
    let x2 = x * x;
    -std::f64::consts::PI.ln() / 2.0 - x.ln() - x2 - 0.5 / x2 + 0.625 / (x2 * x2)
        - 37.0 / 24.0 / (x2 * x2 * x2)
        + 353.0 / 64.0 / (x2 * x2 * x2 * x2)
}

/// `log(A_alpha)` for integer `alpha`, `0 < q < 1`.
fn log_a_int(q: f64, sigma: f64, alpha: u32) -> f64 {
    let log1mq = (-q).ln_1p();
    let alpha_f = f64::from(alpha);
    (0..=alpha).fold(f64::NEG_INFINITY, |log_a, i| {
        let i = f64::from(i);
        let log_coef = log_comb(alpha_f, i) + i * q.ln() + (alpha_f - i) * log1mq;
        log_add(log_a, log_coef + (i * i - i) / (2.0 * sigma * sigma))
    })
}

/// `log(A_alpha)` for fractional `alpha`, `0 < q < 1`; `+inf` (order excluded) when
/// the series does not converge within [`FRAC_TERMS_MAX`] terms.
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let log1mq = (-q).ln_1p();
    let (mut last_s0, mut last_s1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let sqrt2_sigma = std::f64::consts::SQRT_2 * sigma;
    for i in 0..FRAC_TERMS_MAX {
        let i = i as f64;
        let log_coef = log_comb(alpha, i);
        let j = alpha - i;
        let log_t0 = log_coef + i * q.ln() + j * log1mq;
        let log_t1 = log_coef + j * q.ln() + i * log1mq;
        let log_e0 = 0.5_f64.ln() + log_erfc((i - z0) / sqrt2_sigma);
        let log_e1 = 0.5_f64.ln() + log_erfc((z0 - j) / sqrt2_sigma);
        let log_s0 = log_t0 + (i * i - i) / (2.0 * sigma * sigma) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
        log_a0 = log_add(log_a0, log_s0);
        log_a1 = log_add(log_a1, log_s1);
        let total = log_add(log_a0, log_a1);
        if log_s0 < last_s0 && log_s1 < last_s1 && log_s0.max(log_s1) < total - 30.0 {
            return total;
        }
        last_s0 = log_s0;
        last_s1 = log_s1;
    }
    f64::INFINITY
}

/// RDP of one step at order `alpha` (> 1).
fn rdp_one_order(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    let log_a = if alpha.fract() == 0.0 && alpha <= f64::from(u32::MAX) {
        log_a_int(q, sigma, alpha as u32)
    } else {
        log_a_frac(q, sigma, alpha)
    };
    log_a / (alpha - 1.0)
}

fn check_q_z(q: f64, noise_multiplier: f64) -> Result<(), PrivacyError> {
    if !(q > 0.0 && q <= 1.0) {
        return Err(PrivacyError::SamplingRate(q));
    }
    if !(noise_multiplier.is_finite() && noise_multiplier > 0.0) {
        return Err(PrivacyError::NoiseMultiplier(noise_multiplier));
    }
    Ok(())
}

fn check_orders(orders: &[f64]) -> Result<(), PrivacyError> {
    if orders.is_empty() || orders.iter().any(|&a| !(a.is_finite() && a > 1.0)) {
        return Err(PrivacyError::Orders(format!("{orders:?}")));
    }
    Ok(())
}

/// RDP at each of `orders` of one step of the Gaussian mechanism with noise
/// multiplier `noise_multiplier` applied to a Poisson sample with rate `q`.
pub fn rdp_poisson_gaussian(
    q: f64,
    noise_multiplier: f64,
    orders: &[f64],
) -> Result<Vec<f64>, PrivacyError> {
    check_q_z(q, noise_multiplier)?;
    check_orders(orders)?;
    Ok(orders
        .iter()
        .map(|&alpha| rdp_one_order(q, noise_multiplier, alpha))
        .collect())
}

/// Smallest epsilon over the orders for the given `delta`, with the order attaining
/// it: `eps = rdp + log1p(-1/a) - log(delta a) / (a - 1)` (orders `a > 1.01`), and
/// `eps = 0` where `delta^2 + expm1(-rdp) > 0`.
pub fn epsilon_from_rdp(
    orders: &[f64],
    rdp: &[f64],
    delta: f64,
) -> Result<(f64, f64), PrivacyError> {
    if !(delta > 0.0 && delta < 1.0) {
        return Err(PrivacyError::Delta(delta));
    }
    check_orders(orders)?;
    if orders.len() != rdp.len() {
        return Err(PrivacyError::Orders(format!(
            "{} orders but {} RDP values",
            orders.len(),
            rdp.len()
        )));
    }
    let mut best = (f64::INFINITY, orders[0]);
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = if r < 0.0 || delta * delta + (-r).exp_m1() > 0.0 {
            0.0
        } else if a > 1.01 {
            r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
        } else {
            f64::INFINITY
        };
        if eps < best.0 {
            best = (eps, a);
        }
    }
    Ok((best.0.max(0.0), best.1))
}

/// `steps` compositions of the Poisson-subsampled Gaussian mechanism.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaussianEvent {
    /// Poisson sampling rate `q` in `(0, 1]` (1 = every client every round).
    pub sampling_rate: f64,
    /// Noise multiplier `z` (noise std divided by the L2 sensitivity).
    pub noise_multiplier: f64,
    /// Number of compositions.
    pub steps: u64,
}

/// Accumulates RDP over a fixed list of orders.
#[derive(Debug, Clone, PartialEq)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        let orders = default_orders();
        let rdp = vec![0.0; orders.len()];
        Self { orders, rdp }
    }
}

impl RdpAccountant {
    /// An accountant over [`default_orders`] with nothing spent.
    pub fn new() -> Self {
        Self::default()
    }

    /// An accountant over `orders` (each finite and > 1) with nothing spent.
    pub fn with_orders(orders: Vec<f64>) -> Result<Self, PrivacyError> {
        check_orders(&orders)?;
        let rdp = vec![0.0; orders.len()];
        Ok(Self { orders, rdp })
    }

    /// The orders.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// RDP spent at each order.
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// RDP at each order after additionally composing `event` (self is unchanged).
    pub fn rdp_with(&self, event: &GaussianEvent) -> Result<Vec<f64>, PrivacyError> {
        let step = rdp_poisson_gaussian(event.sampling_rate, event.noise_multiplier, &self.orders)?;
        Ok(self
            .rdp
            .iter()
            .zip(step)
            .map(|(&r, s)| r + event.steps as f64 * s)
            .collect())
    }

    /// Composes `event`.
    pub fn compose(&mut self, event: &GaussianEvent) -> Result<(), PrivacyError> {
        self.rdp = self.rdp_with(event)?;
        Ok(())
    }

    /// Epsilon spent so far at `delta`.
    pub fn epsilon(&self, delta: f64) -> Result<f64, PrivacyError> {
        Ok(epsilon_from_rdp(&self.orders, &self.rdp, delta)?.0)
    }
}

/// Epsilon of `steps` compositions of the Poisson-subsampled Gaussian mechanism with
/// rate `q` and noise multiplier `z`, at `delta`, over the default orders.
pub fn epsilon_for(
    q: f64,
    noise_multiplier: f64,
    steps: u64,
    delta: f64,
) -> Result<f64, PrivacyError> {
    let mut accountant = RdpAccountant::new();
    accountant.compose(&GaussianEvent {
        sampling_rate: q,
        noise_multiplier,
        steps,
    })?;
    accountant.epsilon(delta)
}

/// Smallest noise multiplier (to relative precision 1e-6) for which `steps`
/// compositions at rate `q` spend at most `target_epsilon` at `delta`, by bisection.
/// The returned multiplier always meets the target.
pub fn noise_multiplier_for_epsilon(
    q: f64,
    steps: u64,
    delta: f64,
    target_epsilon: f64,
) -> Result<f64, PrivacyError> {
    if !(target_epsilon.is_finite() && target_epsilon > 0.0) {
        return Err(PrivacyError::Epsilon(target_epsilon));
    }
    let meets = |z: f64| epsilon_for(q, z, steps, delta).map(|eps| eps <= target_epsilon);
    let mut hi = 1.0;
    while !meets(hi)? {
        hi *= 2.0;
        if hi > NOISE_MULTIPLIER_MAX {
            return Err(PrivacyError::TargetUnreachable {
                target: target_epsilon,
                bound: NOISE_MULTIPLIER_MAX,
                q,
                steps,
                delta,
            });
        }
    }
    let mut lo = 0.0;
    for _ in 0..BISECTION_STEPS_MAX {
        if hi - lo <= 1e-6 * hi {
            break;
        }
        let mid = (lo + hi) / 2.0;
        if meets(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}
