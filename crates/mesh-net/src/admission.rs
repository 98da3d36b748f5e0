//! Admission control: a per-peer state machine that admits a connected peer
//! only after it presents a mesh certificate that verifies.
//!
//! ```text
//!   on_connected ──> AwaitingCertificate { deadline_ms, attempt: 1 }
//!                      | certificate verifies          -> Admitted { cert }
//!                      | certificate fails             -> Rejected(reason)       (ban)
//!                      | peer says it has none         -> Rejected(Missing)
//!                      | poll() from deadline_ms on,   -> AwaitingCertificate { deadline_ms
//!                      |   attempts left                    doubled, attempt + 1 } + Retry
//!                      | poll() from the last deadline -> Rejected(Timeout)
//!   Admitted ──> revocation learned                    -> Rejected(Revoked)      (ban)
//!            ──> poll() after the certificate expires  -> Rejected(Expired)      (ban)
//!            ──> new certificate (renewal) fails       -> Rejected(reason)       (ban)
//!   any ──> on_disconnected                            -> forgotten
//! ```
//!
//! The mesh is identified by its pinned CA: a certificate issued by any other
//! CA (a self-signed one included) is [`RejectReason::WrongMesh`]. Certificate
//! validity is checked at `now_ms / 1000` Unix seconds. Every rejection the
//! driver receives means "disconnect this peer"; until then
//! [`Admission::may_process`] refuses the peer's application messages.
//!
//! Slow is not hostile. A certificate exchange that does not finish by its
//! deadline is tried again ([`Retry`]: the driver sends the certificate again)
//! with a doubled deadline, up to [`AdmissionConfig::cert_attempts_max`]
//! attempts; a certificate that arrives late is still verified. Only a peer
//! that showed a certificate that fails verification is banned
//! ([`RejectReason::bans`]): a peer that timed out on every attempt is
//! disconnected and dialled again later with backoff, like any peer that went
//! down. Five nodes starting at once on two cores used to ban each other for
//! a minute because one exchange missed its first deadline.

use std::collections::BTreeMap;

use mesh_security::ca::{CertError, CertVerifier, RevocationList, SignedRevocation, VerifiedCert};
use mesh_security::NodeId;

/// Largest certificate (DER) accepted from a peer, in bytes.
pub const CERT_BYTES_MAX: usize = 16 * 1024;

/// Why a peer was refused. [`RejectReason::as_str`] is a stable label for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The peer answered that it has no certificate.
    Missing,
    /// No certificate arrived before the deadline.
    Timeout,
    /// The certificate is malformed, too large, or otherwise unusable.
    Invalid,
    /// The certificate was not issued by this mesh's pinned CA.
    WrongMesh,
    /// The certificate is for a different key than the peer's.
    KeyMismatch,
    /// The certificate (or the mesh CA's) validity period has ended.
    Expired,
    /// The certificate's validity period has not started yet.
    NotYetValid,
    /// The certificate has been revoked.
    Revoked,
}

impl RejectReason {
    /// Every reason, for pre-registering metric labels.
    pub const ALL: [RejectReason; 8] = [
        Self::Missing,
        Self::Timeout,
        Self::Invalid,
        Self::WrongMesh,
        Self::KeyMismatch,
        Self::Expired,
        Self::NotYetValid,
        Self::Revoked,
    ];

    /// The stable metric label (`reason="..."`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Timeout => "timeout",
            Self::Invalid => "invalid",
            Self::WrongMesh => "wrong_mesh",
            Self::KeyMismatch => "key_mismatch",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Revoked => "revoked",
        }
    }

    /// Whether a peer refused for this reason is banned: only when it showed
    /// a certificate that failed verification. A timeout (slow, not hostile)
    /// and a peer without a certificate are disconnected, not banned.
    pub fn bans(self) -> bool {
        !matches!(self, Self::Timeout | Self::Missing)
    }

    /// The reason a certificate verification error amounts to.
    pub fn from_cert_error(error: &CertError) -> Self {
        match error {
            CertError::WrongCa(_) | CertError::CaPinMismatch { .. } => Self::WrongMesh,
            CertError::Expired { .. } | CertError::CaOutsideValidity { .. } => Self::Expired,
            CertError::NotYetValid { .. } => Self::NotYetValid,
            CertError::Revoked { .. } => Self::Revoked,
            CertError::KeyMismatch { .. } => Self::KeyMismatch,
            CertError::Malformed(_)
            | CertError::UnsupportedAlgorithm(_)
            | CertError::Role(_)
            | CertError::BadRevocationSignature(_)
            | CertError::TooManyRevocations(_)
            | CertError::Build(_) => Self::Invalid,
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one connected peer stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdmissionState {
    /// Connected; its certificate should arrive before `deadline_ms`.
    AwaitingCertificate {
        /// When this attempt's wait ends, Unix milliseconds.
        deadline_ms: u64,
        /// Which attempt of the exchange this is, from 1.
        attempt: u32,
    },
    /// Its certificate verified.
    Admitted {
        /// The verified certificate.
        cert: VerifiedCert,
    },
    /// Refused; the driver disconnects and bans it.
    Rejected {
        /// Why.
        reason: RejectReason,
    },
}

/// The outcome of a certificate (or its absence) for one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The peer is admitted.
    Admitted,
    /// The peer is refused; `detail` says why in words (for logs).
    Rejected {
        /// The metric reason.
        reason: RejectReason,
        /// The verification error or other explanation.
        detail: String,
    },
}

/// A peer that was just refused: disconnect it, and ban it if
/// [`RejectReason::bans`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The peer.
    pub peer: NodeId,
    /// Why.
    pub reason: RejectReason,
}

/// A peer whose certificate exchange missed its deadline and is tried again:
/// send it this node's certificate again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// The peer.
    pub peer: NodeId,
    /// The attempt now starting, from 2.
    pub attempt: u32,
    /// When it ends, Unix milliseconds.
    pub deadline_ms: u64,
}

/// What [`Admission::poll`] found due.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// Exchanges to try again.
    pub retries: Vec<Retry>,
    /// Peers refused: disconnect them.
    pub rejections: Vec<Rejection>,
}

/// Admission limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// How long the first attempt of the certificate exchange may take; each
    /// further attempt may take twice as long as the one before.
    pub cert_timeout_ms: u64,
    /// Attempts of the exchange before a silent peer is disconnected (at least 1).
    pub cert_attempts_max: u32,
    /// Most peers tracked at once (connected, in any state).
    pub peers_max: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            cert_timeout_ms: 10_000,
            cert_attempts_max: 3,
            peers_max: 4_096,
        }
    }
}

impl AdmissionConfig {
    /// How long `attempt` (from 1) of the exchange may take: the first
    /// attempt's timeout, doubled per attempt before it (saturating).
    pub fn attempt_timeout_ms(&self, attempt: u32) -> u64 {
        let doublings = attempt.saturating_sub(1).min(32);
        self.cert_timeout_ms.saturating_mul(1u64 << doublings)
    }

    /// The longest a peer can wait for admission over every attempt.
    pub fn wait_total_ms(&self) -> u64 {
        (1..=self.cert_attempts_max.max(1))
            .map(|attempt| self.attempt_timeout_ms(attempt))
            .fold(0, u64::saturating_add)
    }
}

/// Why an admission input could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// The table of connected peers is full. Retrying helps once other peers disconnect;
    /// the driver should close this connection now.
    #[error("admission table is full ({peers_max} peers); close the connection and retry later")]
    Full {
        /// The configured limit.
        peers_max: usize,
    },
    /// The peer is not connected (never was, or already disconnected).
    /// Retrying does not help: the input is stale and should be dropped.
    #[error("peer {peer} is not connected; input dropped")]
    UnknownPeer {
        /// The peer.
        peer: NodeId,
    },
    /// A revocation entry is not signed by this mesh's CA. Retrying with the
    /// same entry never helps.
    #[error("revocation entry refused: {0}")]
    BadRevocation(CertError),
}

/// The admission state of every connected peer.
#[derive(Debug)]
pub struct Admission {
    verifier: CertVerifier,
    revocations: RevocationList,
    config: AdmissionConfig,
    peers: BTreeMap<NodeId, AdmissionState>,
}

fn unix_s(now_ms: u64) -> i64 {
    i64::try_from(now_ms / 1000).unwrap_or(i64::MAX)
}

impl Admission {
    /// Admission against the pinned CA in `verifier`, with an empty revocation list.
    pub fn new(verifier: CertVerifier, config: AdmissionConfig) -> Self {
        Self {
            verifier,
            revocations: RevocationList::new(),
            config,
            peers: BTreeMap::new(),
        }
    }

    /// The revocations learned so far.
    pub fn revocations(&self) -> &RevocationList {
        &self.revocations
    }

    /// A connection to `peer` opened at `now_ms`: wait for its certificate.
    /// A peer already waiting or admitted keeps its state (a second connection);
    /// a rejected one starts over.
    pub fn on_connected(&mut self, peer: NodeId, now_ms: u64) -> Result<(), AdmissionError> {
        let awaiting = AdmissionState::AwaitingCertificate {
            deadline_ms: now_ms.saturating_add(self.config.attempt_timeout_ms(1)),
            attempt: 1,
        };
        let full = self.peers.len() >= self.config.peers_max;
        match self.peers.get_mut(&peer) {
            Some(state @ AdmissionState::Rejected { .. }) => *state = awaiting,
            Some(_) => {}
            None if full => {
                return Err(AdmissionError::Full {
                    peers_max: self.config.peers_max,
                })
            }
            None => {
                self.peers.insert(peer, awaiting);
            }
        }
        Ok(())
    }

    /// `peer` presented `cert_der` at `now_ms`. A waiting peer is admitted or
    /// rejected, even past its deadline (late is slow, not hostile); an
    /// admitted peer is renewing, and a certificate that fails rejects it; a
    /// rejected peer stays rejected.
    pub fn on_certificate(
        &mut self,
        peer: NodeId,
        cert_der: &[u8],
        now_ms: u64,
    ) -> Result<Verdict, AdmissionError> {
        let state = self
            .peers
            .get(&peer)
            .ok_or(AdmissionError::UnknownPeer { peer })?;
        let verdict = match state {
            AdmissionState::Rejected { reason } => {
                return Ok(Verdict::Rejected {
                    reason: *reason,
                    detail: "already rejected".into(),
                })
            }
            _ => self.verify(peer, cert_der, now_ms),
        };
        Ok(self.settle(peer, verdict))
    }

    /// `peer` answered that it has no certificate: reject it.
    pub fn on_no_certificate(&mut self, peer: NodeId) -> Result<Verdict, AdmissionError> {
        if !self.peers.contains_key(&peer) {
            return Err(AdmissionError::UnknownPeer { peer });
        }
        let detail = "the peer presented no certificate".to_string();
        Ok(self.settle(peer, Err((RejectReason::Missing, detail))))
    }

    /// Whether `cert_der` would admit `peer` at `now_ms` (this node's own
    /// renewed certificate, say), without changing any state.
    pub fn check(&self, peer: NodeId, cert_der: &[u8], now_ms: u64) -> Result<(), String> {
        self.verify(peer, cert_der, now_ms)
            .map(|_| ())
            .map_err(|(reason, detail)| format!("{}: {detail}", reason.as_str()))
    }

    fn verify(
        &self,
        peer: NodeId,
        cert_der: &[u8],
        now_ms: u64,
    ) -> Result<VerifiedCert, (RejectReason, String)> {
        if cert_der.len() > CERT_BYTES_MAX {
            let detail = format!(
                "certificate of {} bytes exceeds {CERT_BYTES_MAX}",
                cert_der.len()
            );
            return Err((RejectReason::Invalid, detail));
        }
        let key = peer.verifying_key().map_err(|e| {
            let detail = format!("the peer id is not an Ed25519 key: {e}");
            (RejectReason::KeyMismatch, detail)
        })?;
        self.verifier
            .verify(cert_der, Some(&key), unix_s(now_ms), &self.revocations)
            .map_err(|e| (RejectReason::from_cert_error(&e), e.to_string()))
    }

    fn settle(
        &mut self,
        peer: NodeId,
        outcome: Result<VerifiedCert, (RejectReason, String)>,
    ) -> Verdict {
        let (state, verdict) = match outcome {
            Ok(cert) => (AdmissionState::Admitted { cert }, Verdict::Admitted),
            Err((reason, detail)) => (
                AdmissionState::Rejected { reason },
                Verdict::Rejected { reason, detail },
            ),
        };
        self.peers.insert(peer, state);
        verdict
    }

    /// Applies timers at `now_ms`: a waiting peer past its deadline is tried
    /// again ([`Due::retries`]) while it has attempts left, and rejected with
    /// [`RejectReason::Timeout`] after the last; an admitted peer whose
    /// certificate has expired is rejected with [`RejectReason::Expired`].
    pub fn poll(&mut self, now_ms: u64) -> Due {
        let now_s = unix_s(now_ms);
        let config = self.config;
        let mut due = Due::default();
        for (peer, state) in &mut self.peers {
            let reason = match state {
                AdmissionState::AwaitingCertificate {
                    deadline_ms,
                    attempt,
                } if now_ms >= *deadline_ms => {
                    if *attempt >= config.cert_attempts_max {
                        RejectReason::Timeout
                    } else {
                        *attempt += 1;
                        *deadline_ms = now_ms.saturating_add(config.attempt_timeout_ms(*attempt));
                        due.retries.push(Retry {
                            peer: *peer,
                            attempt: *attempt,
                            deadline_ms: *deadline_ms,
                        });
                        continue;
                    }
                }
                AdmissionState::Admitted { cert } if now_s > cert.info.not_after_unix_s => {
                    RejectReason::Expired
                }
                _ => continue,
            };
            *state = AdmissionState::Rejected { reason };
            due.rejections.push(Rejection {
                peer: *peer,
                reason,
            });
        }
        due
    }

    /// The earliest time [`Admission::poll`] can change something, if any.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.peers
            .values()
            .filter_map(|state| match state {
                AdmissionState::AwaitingCertificate { deadline_ms, .. } => Some(*deadline_ms),
                AdmissionState::Admitted { cert } => {
                    let after_s = u64::try_from(cert.info.not_after_unix_s).unwrap_or(0);
                    Some(after_s.saturating_add(1).saturating_mul(1000))
                }
                AdmissionState::Rejected { .. } => None,
            })
            .min()
    }

    /// Learns a revocation (after checking the CA signature) and rejects
    /// every admitted peer whose certificate it revokes: disconnect those.
    pub fn on_revocation(
        &mut self,
        revocation: &SignedRevocation,
    ) -> Result<Vec<Rejection>, AdmissionError> {
        self.revocations
            .insert(revocation, self.verifier.ca_key())
            .map_err(AdmissionError::BadRevocation)?;
        let serial = &revocation.entry.serial;
        let mut rejected = Vec::new();
        for (peer, state) in &mut self.peers {
            if matches!(state, AdmissionState::Admitted { cert } if &cert.info.serial == serial) {
                let reason = RejectReason::Revoked;
                *state = AdmissionState::Rejected { reason };
                rejected.push(Rejection {
                    peer: *peer,
                    reason,
                });
            }
        }
        Ok(rejected)
    }

    /// The connection to `peer` closed: forget it.
    pub fn on_disconnected(&mut self, peer: &NodeId) {
        self.peers.remove(peer);
    }

    /// Whether application messages from `peer` may be processed (only when admitted).
    pub fn may_process(&self, peer: &NodeId) -> bool {
        matches!(self.peers.get(peer), Some(AdmissionState::Admitted { .. }))
    }

    /// The state of `peer`, if connected.
    pub fn state(&self, peer: &NodeId) -> Option<&AdmissionState> {
        self.peers.get(peer)
    }

    /// The admitted peers and their certificates.
    pub fn admitted(&self) -> impl Iterator<Item = (&NodeId, &VerifiedCert)> {
        self.peers.iter().filter_map(|(peer, state)| match state {
            AdmissionState::Admitted { cert } => Some((peer, cert)),
            _ => None,
        })
    }

    /// Number of connected peers, in any state.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is connected.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests;
