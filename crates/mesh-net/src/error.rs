//! The errors of the network layer's public API. Each variant says what went
//! wrong and whether retrying can help ([`NetError::is_retryable`]).

use libp2p::PeerId;

/// Why a network operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// The configuration cannot work (bad key, bad address, zero limit).
    /// Not retryable: fix the configuration.
    #[error("invalid network configuration: {0}")]
    Config(String),
    /// A transport could not be built or could not listen on an address.
    /// Not retryable with the same configuration.
    #[error("transport error: {0}")]
    Transport(String),
    /// A dial could not be started (bad address, banned peer, limits).
    /// Retrying may help once limits free up or the ban expires.
    #[error("cannot dial {addr}: {reason}")]
    Dial {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The peer has not been admitted (no verified certificate, or not
    /// connected). Retrying helps once it is connected and admitted.
    #[error("peer {0} is not admitted")]
    NotAdmitted(PeerId),
    /// The request got no response in time. Retrying may help; the remote
    /// may or may not have processed it.
    #[error("request to {0} timed out")]
    Timeout(PeerId),
    /// A payload exceeds the configured limit. Not retryable with the same payload.
    #[error("payload of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    TooLarge {
        /// Size of the payload.
        size_bytes: usize,
        /// Limit in force.
        limit_bytes: usize,
    },
    /// The remote answered with an error, or the transfer broke off
    /// (connection closed, stream reset, remote refused the size).
    /// Retrying may help if the remote's condition was transient.
    #[error("remote {peer} failed the request: {reason}")]
    Remote {
        /// The remote.
        peer: PeerId,
        /// What the remote said, or what broke.
        reason: String,
    },
    /// A bounded queue is full. Retrying later helps.
    #[error("network layer busy: {0} queue full; retry later")]
    Busy(&'static str),
    /// No admitted peer is subscribed to the topic yet. Retrying helps once
    /// peers have joined.
    #[error("no peers to publish to on topic {0}; retry once peers have joined")]
    NoPeers(String),
    /// The payload is not a valid signed envelope. Not retryable.
    #[error("invalid envelope: {0}")]
    InvalidEnvelope(String),
    /// A revocation is not signed by the mesh CA. Not retryable.
    #[error("revocation refused: {0}")]
    BadRevocation(String),
    /// Gossip refused the operation (topic limits, duplicate). Not retryable as is.
    #[error("gossip error: {0}")]
    Gossip(String),
    /// The network task has stopped (shut down or crashed). Not retryable:
    /// spawn a new network layer.
    #[error("the network task has stopped")]
    Stopped,
}

impl NetError {
    /// Whether trying the same operation again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Dial { .. }
                | Self::NotAdmitted(_)
                | Self::Timeout(_)
                | Self::Remote { .. }
                | Self::Busy(_)
                | Self::NoPeers(_)
        )
    }
}
