//! The faults a simulation injects, all drawn from the run's seed.

/// Network and node faults.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Smallest one-way message latency, ms.
    pub latency_min_ms: u64,
    /// Largest one-way message latency, ms.
    pub latency_max_ms: u64,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Node crashes over the run (each restarts after `down_ms`).
    pub crashes: u32,
    /// How long a crashed node stays down, ms.
    pub down_ms: u64,
    /// Network partitions over the run (a random minority cut off for `down_ms`).
    pub partitions: u32,
    /// Window in which crashes and partitions start, ms.
    pub window_ms: u64,
}

impl Default for Faults {
    /// A healthy LAN: 1-5 ms, nothing lost, nothing crashes.
    fn default() -> Self {
        Self {
            latency_min_ms: 1,
            latency_max_ms: 5,
            loss: 0.0,
            crashes: 0,
            down_ms: 5_000,
            partitions: 0,
            window_ms: 60_000,
        }
    }
}

impl Faults {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), String> {
        if self.latency_min_ms > self.latency_max_ms {
            return Err("latency minimum exceeds the maximum".into());
        }
        if !(0.0..1.0).contains(&self.loss) {
            return Err("message loss must be in [0, 1)".into());
        }
        Ok(())
    }
}
