//! The roles a node takes in a federated round.
//!
//! * [`participant`]: trains the global model on the node's private data and
//!   returns its update (clipped and noised when differential privacy is on), or
//!   a crafted one when the node is Byzantine.
//! * [`aggregation`]: combines the updates of one round with a robust rule,
//!   adds central DP noise, steps the server optimizer and keeps the privacy ledger.

pub mod aggregation;
pub mod participant;

/// Derives an independent seed for `(base, a, b)` (SplitMix64 finalizer), so that
/// each node and round draws from its own stream and results do not depend on the
/// order in which nodes run.
pub fn derive_seed(base: u64, a: u64, b: u64) -> u64 {
    let mut z =
        base ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
