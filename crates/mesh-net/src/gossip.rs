//! Gossip validation: the decision gossipsub asks for before it delivers or
//! forwards a message (manual validation mode). Sans-I/O: the driver passes
//! whether the forwarding peer is admitted and the current time.
//!
//! A message is accepted only when the peer that forwarded it is admitted,
//! its payload is a signed envelope of this mesh (version, mesh id,
//! signature, clock skew, replay window: [`EnvelopeVerifier`]) and its signer
//! has not been revoked. Rejected messages are neither delivered to the
//! application nor forwarded.

use std::collections::BTreeSet;

use mesh_security::envelope::{Envelope, EnvelopeError, EnvelopeLimits, EnvelopeVerifier, MeshId};
use mesh_security::NodeId;

/// Most revoked signers remembered (beyond it, the oldest revocations are
/// still enforced at admission, just not on relayed gossip).
pub const REVOKED_SENDERS_MAX: usize = 65_536;

/// Why a gossip message was refused. [`GossipReject::as_str`] is a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GossipReject {
    /// The forwarding peer is not admitted.
    NotAdmitted,
    /// The envelope exceeds the size limit.
    TooLarge,
    /// Not a well-formed envelope.
    Malformed,
    /// Unsupported envelope version.
    Version,
    /// An envelope of another mesh.
    WrongMesh,
    /// The signature does not verify.
    BadSignature,
    /// The timestamp is too far from local time.
    ClockSkew,
    /// Already seen, or older than the replay window.
    Replay,
    /// The signer's certificate has been revoked.
    RevokedSender,
}

impl GossipReject {
    /// The stable metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAdmitted => "not_admitted",
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::Version => "version",
            Self::WrongMesh => "wrong_mesh",
            Self::BadSignature => "bad_signature",
            Self::ClockSkew => "clock_skew",
            Self::Replay => "replay",
            Self::RevokedSender => "revoked_sender",
        }
    }

    /// Whether the message is merely not worth forwarding (ignored, no
    /// penalty) rather than proof of misbehaviour (rejected).
    pub fn is_benign(self) -> bool {
        matches!(self, Self::Replay | Self::ClockSkew | Self::NotAdmitted)
    }

    fn from_envelope_error(error: &EnvelopeError) -> Self {
        match error {
            EnvelopeError::TooLarge { .. } => Self::TooLarge,
            EnvelopeError::Malformed(_) => Self::Malformed,
            EnvelopeError::UnsupportedVersion { .. } => Self::Version,
            EnvelopeError::WrongMesh { .. } => Self::WrongMesh,
            EnvelopeError::BadSignature(_) => Self::BadSignature,
            EnvelopeError::ClockSkew { .. } => Self::ClockSkew,
            EnvelopeError::Replay { .. } => Self::Replay,
        }
    }
}

/// Verifies gossip for one mesh, with per-signer replay windows.
#[derive(Debug)]
pub struct GossipGate {
    verifier: EnvelopeVerifier,
    revoked: BTreeSet<NodeId>,
}

impl GossipGate {
    /// A gate for envelopes of `mesh_id` of at most `envelope_bytes_max` bytes.
    pub fn new(mesh_id: MeshId, envelope_bytes_max: usize) -> Self {
        let limits = EnvelopeLimits {
            envelope_size_bytes_max: envelope_bytes_max,
            ..EnvelopeLimits::default()
        };
        Self {
            verifier: EnvelopeVerifier::new(mesh_id, limits),
            revoked: BTreeSet::new(),
        }
    }

    /// Stops accepting envelopes signed by `node` (its certificate was revoked).
    pub fn revoke(&mut self, node: NodeId) {
        if self.revoked.len() >= REVOKED_SENDERS_MAX {
            self.revoked.pop_first();
        }
        self.revoked.insert(node);
    }

    /// Decides on one message received at `now_ms` from a forwarder that is
    /// (or is not) admitted; returns the verified envelope when accepted.
    pub fn check(
        &mut self,
        forwarder_admitted: bool,
        data: &[u8],
        now_ms: u64,
    ) -> Result<Envelope, GossipReject> {
        if !forwarder_admitted {
            return Err(GossipReject::NotAdmitted);
        }
        let envelope = self
            .verifier
            .open(data, now_ms)
            .map_err(|e| GossipReject::from_envelope_error(&e))?;
        if self.revoked.contains(&envelope.header.sender) {
            return Err(GossipReject::RevokedSender);
        }
        Ok(envelope)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use mesh_security::envelope::MessageKind;
    use mesh_security::NodeIdentity;

    use super::*;

    const MESH: MeshId = MeshId([3; 16]);

    fn sealed(identity: &NodeIdentity, mesh: MeshId, seq: u64) -> Vec<u8> {
        Envelope::seal(identity, mesh, MessageKind(1), seq, 1_000, b"hi".to_vec())
            .unwrap()
            .encode()
            .unwrap()
    }

    #[test]
    fn accepts_a_fresh_envelope_once() {
        let alice = NodeIdentity::from_seed(&[1; 32]);
        let mut gate = GossipGate::new(MESH, 1 << 20);
        let bytes = sealed(&alice, MESH, 1);
        assert_eq!(gate.check(true, &bytes, 1_000).unwrap().payload, b"hi");
        assert_eq!(gate.check(true, &bytes, 1_000), Err(GossipReject::Replay));
    }

    #[test]
    fn refuses_unadmitted_forwarders_other_meshes_garbage_and_revoked_signers() {
        let alice = NodeIdentity::from_seed(&[1; 32]);
        let mut gate = GossipGate::new(MESH, 1 << 20);
        let bytes = sealed(&alice, MESH, 1);
        assert_eq!(
            gate.check(false, &bytes, 1_000),
            Err(GossipReject::NotAdmitted)
        );
        let other = sealed(&alice, MeshId([4; 16]), 2);
        assert_eq!(
            gate.check(true, &other, 1_000),
            Err(GossipReject::WrongMesh)
        );
        assert_eq!(
            gate.check(true, &[1, 2, 3], 1_000),
            Err(GossipReject::Malformed)
        );
        gate.revoke(alice.node_id());
        assert_eq!(
            gate.check(true, &sealed(&alice, MESH, 3), 1_000),
            Err(GossipReject::RevokedSender)
        );
    }

    #[test]
    fn a_tampered_payload_fails_the_signature() {
        let alice = NodeIdentity::from_seed(&[1; 32]);
        let mut envelope =
            Envelope::seal(&alice, MESH, MessageKind(1), 1, 1_000, b"hi".to_vec()).unwrap();
        envelope.payload = b"ho".to_vec();
        let mut gate = GossipGate::new(MESH, 1 << 20);
        assert_eq!(
            gate.check(true, &envelope.encode().unwrap(), 1_000),
            Err(GossipReject::BadSignature)
        );
    }
}
