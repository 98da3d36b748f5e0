//! Every round message travels in a signed, versioned envelope of
//! mesh-security, and is checked before the engine sees it.
//!
//! ```text
//!   send:    RoundMessage ──encode_for(v)──► Envelope::seal(identity, mesh, ROUND_KIND, seq, now) ──► wire
//!   receive: wire ──► EnvelopeVerifier::open (size, version, mesh, signature, skew, replay)
//!                 ──► sender == the peer the link authenticated
//!                 ──► RBAC: the sender's certificate holds a role this kind needs
//!                 ──► RoundMessage::decode_for(v) ──► engine
//! ```
//!
//! `v` is the round message version: the sender's is the one it negotiated
//! with the receiver, the receiver's the one the request's protocol name says.
//!
//! A refusal is counted in `mesh_round_messages_refused_total{reason}` and
//! never reaches the engine. Sequence numbers start at the node's start time
//! in microseconds, so a restarted node's messages are newer than anything
//! its peers remember of it and are not taken for replays. Which selected
//! participant may send what in which round is the engine's check.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use mesh_consensus::command::NodeId;
use mesh_round::protocol::{node_name, RoundMessage, ROUND_VERSION_MAX};
use mesh_security::envelope::{
    Envelope, EnvelopeError, EnvelopeLimits, EnvelopeVerifier, MeshId, MessageKind,
};
use mesh_security::rbac::{required_roles, Action, Role};
use mesh_security::NodeIdentity;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The envelope kind of round messages.
pub const ROUND_KIND: MessageKind = MessageKind(0x524E);
/// Largest envelope accepted (the network layer's request limit).
pub const ROUND_ENVELOPE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Why a round message was refused (the label of the refusal counter).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The envelope failed a check: malformed, version, mesh, signature, skew or replay.
    #[error("{reason}: {detail}")]
    Envelope {
        /// The metric label.
        reason: &'static str,
        /// The verifier's message.
        detail: String,
    },
    /// Signed by someone other than the peer that sent it.
    #[error("signed by {signer}, sent by {peer}")]
    WrongSender {
        /// Who signed.
        signer: String,
        /// Who sent it.
        peer: String,
    },
    /// The sender's certificate holds no role this kind of message needs.
    #[error("{kind} messages need one of the roles [{required}]")]
    Role {
        /// The message kind.
        kind: &'static str,
        /// Roles any one of which would do.
        required: String,
    },
    /// The payload is not a round message.
    #[error("not a round message: {0}")]
    Malformed(String),
}

impl Refusal {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Envelope { reason, .. } => reason,
            Refusal::WrongSender { .. } => "wrong_sender",
            Refusal::Role { .. } => "role",
            Refusal::Malformed(_) => "malformed",
        }
    }
}

fn envelope_refusal(err: EnvelopeError) -> Refusal {
    let reason = match &err {
        EnvelopeError::TooLarge { .. } => "too_large",
        EnvelopeError::Malformed(_) => "malformed",
        EnvelopeError::UnsupportedVersion { .. } => "version",
        EnvelopeError::WrongMesh { .. } => "wrong_mesh",
        EnvelopeError::BadSignature(_) => "signature",
        EnvelopeError::ClockSkew { .. } => "clock_skew",
        EnvelopeError::Replay { .. } => "replay",
    };
    Refusal::Envelope {
        reason,
        detail: err.to_string(),
    }
}

/// The action whose roles may send this kind of message.
pub fn action_of(message: &RoundMessage) -> &'static [Action] {
    match message {
        RoundMessage::Plain { .. } => &[Action::SubmitUpdate],
        RoundMessage::SecAgg { .. } => &[Action::SubmitUpdate, Action::ProposeAggregate],
        RoundMessage::GroupResult { .. }
        | RoundMessage::GroupReport { .. }
        | RoundMessage::GroupFailed { .. }
        | RoundMessage::AggregateReport { .. } => &[Action::ProposeAggregate],
        RoundMessage::AggregateRequest { .. } => &[Action::CommitteeVote],
        RoundMessage::BlobRequest { .. }
        | RoundMessage::BlobReply { .. }
        | RoundMessage::BlobPartRequest { .. }
        | RoundMessage::BlobPart { .. } => &[Action::FetchModel],
    }
}

/// Signs outgoing round messages and checks incoming ones.
#[derive(Debug)]
pub struct RoundGate {
    identity: NodeIdentity,
    mesh: MeshId,
    next_seq: u64,
    verifier: EnvelopeVerifier,
    refused: Family<Vec<(String, String)>, Counter>,
}

impl RoundGate {
    /// A gate for `identity` in the mesh whose envelope id is `mesh`; the
    /// first sequence number is `first_seq`.
    pub fn new(identity: NodeIdentity, mesh: MeshId, first_seq: u64) -> Self {
        let limits = EnvelopeLimits {
            envelope_size_bytes_max: ROUND_ENVELOPE_BYTES_MAX,
            ..EnvelopeLimits::default()
        };
        Self {
            identity,
            mesh,
            next_seq: first_seq,
            verifier: EnvelopeVerifier::new(mesh, limits),
            refused: Family::default(),
        }
    }

    /// A gate whose sequence numbers start at the clock (microseconds).
    pub fn starting_now(identity: NodeIdentity, mesh: MeshId) -> Self {
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2));
        Self::new(identity, mesh, now_us)
    }

    /// Registers `mesh_round_messages_refused_total{reason}`.
    pub fn register(&self, registry: &mut Registry) {
        registry.sub_registry_with_prefix("mesh_round").register(
            "messages_refused",
            "Round messages refused before the engine saw them, by reason",
            self.refused.clone(),
        );
    }

    /// Refusals so far with this reason.
    pub fn refused(&self, reason: &str) -> u64 {
        self.refused
            .get_or_create(&vec![("reason".into(), reason.into())])
            .get()
    }

    /// The signed wire bytes of `message`, encoded for the newest round
    /// message version.
    pub fn seal(&mut self, message: &RoundMessage, now_ms: u64) -> Result<Vec<u8>, EnvelopeError> {
        self.seal_for(message, ROUND_VERSION_MAX, now_ms)
    }

    /// The signed wire bytes of `message`, encoded for round message `version`.
    pub fn seal_for(
        &mut self,
        message: &RoundMessage,
        version: u8,
        now_ms: u64,
    ) -> Result<Vec<u8>, EnvelopeError> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        Envelope::seal(
            &self.identity,
            self.mesh,
            ROUND_KIND,
            seq,
            now_ms,
            message.encode_for(version),
        )?
        .encode()
    }

    /// Checks bytes from `peer` (the node the link authenticated) whose
    /// certificate holds `roles`, read as the newest round message version;
    /// counts and returns any refusal.
    pub fn open(
        &mut self,
        peer: &NodeId,
        roles: &BTreeSet<Role>,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<RoundMessage, Refusal> {
        self.open_for(peer, roles, bytes, ROUND_VERSION_MAX, now_ms)
    }

    /// [`Self::open`] for bytes that came under round message `version`.
    pub fn open_for(
        &mut self,
        peer: &NodeId,
        roles: &BTreeSet<Role>,
        bytes: &[u8],
        version: u8,
        now_ms: u64,
    ) -> Result<RoundMessage, Refusal> {
        let outcome = self.check(peer, roles, bytes, version, now_ms);
        if let Err(refusal) = &outcome {
            self.refused
                .get_or_create(&vec![("reason".into(), refusal.reason().into())])
                .inc();
        }
        outcome
    }

    fn check(
        &mut self,
        peer: &NodeId,
        roles: &BTreeSet<Role>,
        bytes: &[u8],
        version: u8,
        now_ms: u64,
    ) -> Result<RoundMessage, Refusal> {
        let envelope = self
            .verifier
            .open(bytes, now_ms)
            .map_err(envelope_refusal)?;
        let signer = node_name(&envelope.header.sender);
        if signer != *peer || envelope.header.kind != ROUND_KIND {
            return Err(Refusal::WrongSender {
                signer: signer.0,
                peer: peer.0.clone(),
            });
        }
        let message = RoundMessage::decode_for(&envelope.payload, version)
            .map_err(|e| Refusal::Malformed(e.to_string()))?;
        let actions = action_of(&message);
        let allowed = actions
            .iter()
            .any(|a| required_roles(*a).iter().any(|r| roles.contains(&r)));
        if !allowed {
            let required: Vec<String> = actions
                .iter()
                .flat_map(|a| required_roles(*a).iter())
                .map(|r| r.name().to_string())
                .collect();
            return Err(Refusal::Role {
                kind: message.kind(),
                required: required.join(", "),
            });
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MESH: MeshId = MeshId([3; 16]);

    fn gate(seed: u8) -> (RoundGate, NodeId) {
        let identity = NodeIdentity::from_seed(&[seed; 32]);
        let name = node_name(&identity.node_id());
        (RoundGate::new(identity, MESH, 1), name)
    }

    fn blob_request() -> RoundMessage {
        RoundMessage::BlobRequest { hash: [1; 32] }
    }

    fn trainer() -> BTreeSet<Role> {
        [Role::Trainer].into()
    }

    #[test]
    fn a_signed_message_passes_once_and_its_replay_is_refused_and_counted() {
        let (mut alice, alice_name) = gate(1);
        let (mut bob, _) = gate(2);
        let bytes = alice.seal(&blob_request(), 10_000).unwrap();
        let opened = bob.open(&alice_name, &trainer(), &bytes, 10_000).unwrap();
        assert_eq!(opened, blob_request());
        let replay = bob
            .open(&alice_name, &trainer(), &bytes, 10_001)
            .unwrap_err();
        assert_eq!(replay.reason(), "replay");
        assert_eq!(bob.refused("replay"), 1);
    }

    #[test]
    fn a_forged_or_relayed_message_is_refused_and_counted() {
        let (mut alice, alice_name) = gate(1);
        let (mut bob, _) = gate(2);
        let (_, carol_name) = gate(3);
        let mut bytes = alice.seal(&blob_request(), 10_000).unwrap();
        // Sent over carol's link: not the signer.
        let relayed = bob
            .open(&carol_name, &trainer(), &bytes, 10_000)
            .unwrap_err();
        assert_eq!(relayed.reason(), "wrong_sender");
        // A flipped payload bit breaks the signature.
        let last = bytes.len() - 70;
        bytes[last] ^= 1;
        let forged = bob
            .open(&alice_name, &trainer(), &bytes, 10_000)
            .unwrap_err();
        assert!(
            matches!(forged.reason(), "signature" | "malformed"),
            "{forged}"
        );
        let garbage = bob.open(&alice_name, &trainer(), b"not an envelope", 10_000);
        assert_eq!(garbage.unwrap_err().reason(), "malformed");
        assert_eq!(bob.refused("wrong_sender"), 1);
    }

    #[test]
    fn a_sender_without_the_role_for_the_kind_is_refused() {
        let (mut alice, alice_name) = gate(1);
        let (mut bob, _) = gate(2);
        let report = RoundMessage::GroupFailed {
            key: mesh_round::protocol::RoundKey {
                job: "j".into(),
                round: 0,
                attempt: 0,
            },
            group: 0,
            missed: Vec::new(),
        };
        let bytes = alice.seal(&report, 10_000).unwrap();
        let refused = bob
            .open(&alice_name, &trainer(), &bytes, 10_000)
            .unwrap_err();
        assert_eq!(refused.reason(), "role");
        let bytes = alice.seal(&report, 10_000).unwrap();
        let aggregator: BTreeSet<Role> = [Role::Aggregator].into();
        assert!(bob.open(&alice_name, &aggregator, &bytes, 10_000).is_ok());
    }
}
