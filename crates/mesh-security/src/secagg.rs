//! SecAgg+ secure aggregation (Bonawitz et al. 2017; Bell et al. 2020) as two
//! sans-I/O state machines: [`SecAggClient`] and [`SecAggAggregator`] take
//! messages and return messages; the round protocol carries them over any
//! transport (inside signed envelopes).
//!
//! ```text
//!  client u                                   aggregator
//!  advertise()  --Signed<AdvertiseKeys>-->    receive_advert()
//!                                             finish_advertising()
//!  share_keys() <--NeighbourKeys--------      (neighbours' signed keys)
//!               --Signed<ShareKeys>----->     receive_shares()
//!                                             finish_sharing()
//!  masked_input() <--SharesForClient----      (ciphertexts for u)
//!               --Signed<MaskedInput>--->     receive_masked_input()
//!                                             finish_masking()
//!  unmask()     <--UnmaskRequest--------      (survivors, dropped)
//!               --Signed<UnmaskShares>-->     receive_unmask()
//!                                             finish() -> sum
//! ```
//!
//! Each client makes two ephemeral X25519 key pairs per round (erased when
//! the round ends: forward secrecy), Shamir-shares its self-mask seed and its
//! mask secret key t-of-k among its graph neighbours, encrypting each share
//! with ChaCha20-Poly1305 under an X25519 + HKDF-SHA256 key. Its update is
//! clipped, quantized with stochastic rounding ([`quantize`]) and masked
//! modulo 2^m with its self mask and one pairwise mask per neighbour, all
//! expanded from seeds by ChaCha20 ([`prg`]). The aggregator removes self
//! masks of survivors and pairwise masks of dropped clients from the
//! reconstructed secrets; if any secret lacks `t` shares it fails with
//! [`SecAggError::NotEnoughShares`], never with a wrong sum. Reconstructed
//! secrets are checked against the client's commitment (self seed) or its
//! advertised public key (mask key). See [`params`] for the choice of modulus
//! and scale that keeps the sum from overflowing.
//!
//! Threat model: semi-honest aggregator, clients authenticated by their
//! long-term keys. The consistency-check round of the actively secure variant
//! (clients signing the survivor set) is not implemented.

mod aggregator;
pub mod bench;
mod client;
pub mod graph;
mod keys;
pub mod messages;
pub mod params;
pub mod prg;
pub mod quantize;
pub mod shamir;
pub mod sim;

pub use aggregator::{AggregateOutput, SecAggAggregator};
pub use client::SecAggClient;
pub use params::{ModulusBits, SecAggParams};

/// Why a SecAgg+ step failed. Errors about one client's message leave the
/// state machine usable (drop that message and go on); `NotEnoughShares`,
/// `TooFewClients` and `BadParams` end the round (retrying it needs a new
/// round with fresh keys).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecAggError {
    /// The parameters break an invariant of the protocol.
    #[error("invalid parameters: {0}")]
    BadParams(String),
    /// A message came in a step where it does not belong.
    #[error("unexpected message: {0}")]
    UnexpectedMessage(&'static str),
    /// A message names a client index outside the group or not allowed here.
    #[error("client {client} is not allowed here: {reason}")]
    UnknownClient {
        /// The client index.
        client: u32,
        /// Why.
        reason: &'static str,
    },
    /// A second message of the same kind from the same client.
    #[error("duplicate message from client {0}")]
    Duplicate(u32),
    /// A message's signature does not verify under the client's key.
    #[error("bad or missing signature on a message from client {client}")]
    BadSignature {
        /// The claimed sender.
        client: u32,
    },
    /// A public key is malformed or of low order.
    #[error("unusable key from client {client}")]
    BadKey {
        /// The key's owner.
        client: u32,
    },
    /// An encrypted share failed authentication or does not decode.
    #[error("share from client {from} rejected: {reason}")]
    ShareRejected {
        /// Sender of the share.
        from: u32,
        /// Why.
        reason: &'static str,
    },
    /// Bytes that do not decode, or a vector of the wrong length.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Too few clients are left at some step for the round to continue.
    #[error("only {alive} clients left at {stage}, {need} needed")]
    TooFewClients {
        /// The step.
        stage: &'static str,
        /// Clients still in the round.
        alive: usize,
        /// Clients needed.
        need: usize,
    },
    /// Fewer shares of a secret than the threshold: the sum cannot be unmasked.
    #[error("cannot unmask: {have} shares of client {client}'s {secret}, {need} needed (too many dropouts)")]
    NotEnoughShares {
        /// Whose secret.
        client: u32,
        /// Which secret ("self-mask seed" or "mask key").
        secret: &'static str,
        /// Shares received.
        have: usize,
        /// Threshold.
        need: usize,
    },
    /// A reconstructed secret does not match the client's commitment or key.
    #[error("reconstructed {secret} of client {client} does not match its commitment")]
    ReconstructionMismatch {
        /// Whose secret.
        client: u32,
        /// Which secret.
        secret: &'static str,
    },
}

#[cfg(test)]
mod tests;
