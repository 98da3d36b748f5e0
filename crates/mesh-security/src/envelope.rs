//! Signed, versioned envelopes: the one wire type for every application message.
//!
//! An [`Envelope`] carries the protocol version, the mesh id, the sender's node
//! id, a message kind, a per-sender sequence number and timestamp, the payload,
//! and an Ed25519 signature by the sender over all of that (domain-separated).
//!
//! [`EnvelopeVerifier`] checks, in this order and each with its own error:
//! size limit, decoding, version, mesh id, signature, timestamp skew, replay.
//! The replay check runs last so that forged messages cannot advance a
//! sender's window. Replay protection is a sliding window of
//! [`REPLAY_WINDOW`] sequence numbers per sender (as in IPsec); the number of
//! senders tracked is bounded, and the least recently heard sender is forgotten
//! first. A forgotten sender's old messages are still refused by the skew check
//! once they are older than the allowed skew.
//!
//! Decoding never panics and never allocates more than the input: the byte
//! length is checked against the limit before postcard decodes, and postcard
//! borrows lengths from the input it has, so a forged length cannot make it
//! allocate more.

use std::collections::HashMap;

use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};

use crate::identity::{verify_signature, NodeId, NodeIdentity};

/// The envelope format version this build writes (and the newest it accepts).
pub const PROTOCOL_VERSION: u16 = 1;
/// The oldest envelope format version this build accepts. The envelope has
/// had one format so far; the next one will be written only once every node
/// of the previous release accepts it, and this stays one release behind
/// (`docs/operations.md`, "Upgrades").
pub const PROTOCOL_VERSION_MIN: u16 = 1;
/// How many sequence numbers behind the newest one are still accepted once.
pub const REPLAY_WINDOW: u64 = 1024;
/// Bytes of framing an envelope adds around its payload, at most (fields, signature).
pub const ENVELOPE_OVERHEAD_BYTES_MAX: usize = 2 + 16 + 32 + 3 + 10 + 10 + 5 + 64 + 8;

const SIGNING_DOMAIN: &[u8] = b"agent-mesh/envelope/v1\0";

/// A 16-byte mesh identifier: envelopes from another mesh are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MeshId(pub [u8; 16]);

/// What an envelope's payload is; the consumers define the values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MessageKind(pub u16);

/// Everything the signature covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeHeader {
    /// Envelope format version.
    pub version: u16,
    /// The mesh this message belongs to.
    pub mesh_id: MeshId,
    /// The signer.
    pub sender: NodeId,
    /// What the payload is.
    pub kind: MessageKind,
    /// Per-sender sequence number, strictly increasing for fresh messages.
    pub seq: u64,
    /// Sender's clock when signing, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// A signed message as it travels on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The signed header fields.
    pub header: EnvelopeHeader,
    /// The application payload.
    pub payload: Vec<u8>,
    /// Ed25519 signature over the domain, header and payload.
    pub signature: Signature,
}

/// Why an envelope was refused. None of these improve on retrying the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The encoded envelope or its payload exceeds the configured limit.
    #[error("envelope of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    TooLarge {
        /// Size seen.
        size_bytes: usize,
        /// Limit in force.
        limit_bytes: usize,
    },
    /// The bytes are not a well-formed envelope.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// The envelope's version is not one this build speaks.
    #[error("unsupported envelope version {got} (this build speaks {supported})")]
    UnsupportedVersion {
        /// Version in the envelope.
        got: u16,
        /// Version supported.
        supported: u16,
    },
    /// The envelope belongs to another mesh (or an unknown one).
    #[error("envelope is for mesh {got:?}, not this mesh {expected:?}")]
    WrongMesh {
        /// This node's mesh.
        expected: MeshId,
        /// The envelope's mesh.
        got: MeshId,
    },
    /// The signature does not verify under the sender's key.
    #[error("bad signature from {0}")]
    BadSignature(NodeId),
    /// The timestamp is further from the local clock than the allowed skew.
    #[error("timestamp {timestamp_ms} ms is more than {skew_ms} ms from local time {now_ms} ms")]
    ClockSkew {
        /// Envelope timestamp.
        timestamp_ms: u64,
        /// Local time.
        now_ms: u64,
        /// Allowed skew.
        skew_ms: u64,
    },
    /// The sequence number was seen already or is older than the window.
    #[error("replayed or too old: sequence {seq} from {sender}")]
    Replay {
        /// The sender.
        sender: NodeId,
        /// The refused sequence number.
        seq: u64,
    },
}

/// Limits applied when verifying envelopes.
#[derive(Clone, Debug)]
pub struct EnvelopeLimits {
    /// Largest encoded envelope accepted, in bytes.
    pub envelope_size_bytes_max: usize,
    /// Largest allowed difference between sender and local clock, in ms.
    pub clock_skew_ms_max: u64,
    /// How many senders' replay windows are remembered at most.
    pub tracked_senders_max: usize,
}

impl Default for EnvelopeLimits {
    fn default() -> Self {
        Self {
            envelope_size_bytes_max: 16 * 1024 * 1024,
            clock_skew_ms_max: 30_000,
            tracked_senders_max: 4096,
        }
    }
}

fn signing_bytes(header: &EnvelopeHeader, payload: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let mut out = Vec::with_capacity(SIGNING_DOMAIN.len() + 96 + payload.len());
    out.extend_from_slice(SIGNING_DOMAIN);
    let header_bytes =
        postcard::to_allocvec(header).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(payload);
    Ok(out)
}

impl Envelope {
    /// Signs `payload` as a message from `identity`.
    pub fn seal(
        identity: &NodeIdentity,
        mesh_id: MeshId,
        kind: MessageKind,
        seq: u64,
        timestamp_ms: u64,
        payload: Vec<u8>,
    ) -> Result<Self, EnvelopeError> {
        let header = EnvelopeHeader {
            version: PROTOCOL_VERSION,
            mesh_id,
            sender: identity.node_id(),
            kind,
            seq,
            timestamp_ms,
        };
        let signature = identity.sign(&signing_bytes(&header, &payload)?);
        Ok(Self {
            header,
            payload,
            signature,
        })
    }

    /// The wire encoding (postcard).
    pub fn encode(&self) -> Result<Vec<u8>, EnvelopeError> {
        postcard::to_allocvec(self).map_err(|e| EnvelopeError::Malformed(e.to_string()))
    }

    /// Decodes wire bytes, refusing anything over `size_bytes_max` before
    /// parsing. Never panics; allocates at most the input's length.
    pub fn decode(bytes: &[u8], size_bytes_max: usize) -> Result<Self, EnvelopeError> {
        if bytes.len() > size_bytes_max {
            return Err(EnvelopeError::TooLarge {
                size_bytes: bytes.len(),
                limit_bytes: size_bytes_max,
            });
        }
        let (envelope, rest) = postcard::take_from_bytes::<Envelope>(bytes)
            .map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(EnvelopeError::Malformed(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        Ok(envelope)
    }

    /// Checks the signature only (no mesh, skew or replay checks).
    pub fn verify_signature(&self) -> Result<(), EnvelopeError> {
        let sender = self.header.sender;
        let key = sender
            .verifying_key()
            .map_err(|_| EnvelopeError::BadSignature(sender))?;
        verify_signature(
            &key,
            &signing_bytes(&self.header, &self.payload)?,
            &self.signature,
        )
        .map_err(|_| EnvelopeError::BadSignature(sender))
    }
}

/// Sliding replay window of one sender: the newest sequence number seen and a
/// bitmap of the [`REPLAY_WINDOW`] numbers before it.
#[derive(Clone, Debug)]
struct ReplayWindow {
    newest_seq: u64,
    seen: [u64; (REPLAY_WINDOW / 64) as usize],
    last_heard_ms: u64,
}

impl ReplayWindow {
    fn new(seq: u64, now_ms: u64) -> Self {
        let mut window = Self {
            newest_seq: seq,
            seen: [0; (REPLAY_WINDOW / 64) as usize],
            last_heard_ms: now_ms,
        };
        window.mark(0);
        window
    }

    fn mark(&mut self, behind: u64) {
        self.seen[(behind / 64) as usize] |= 1 << (behind % 64);
    }

    fn is_marked(&self, behind: u64) -> bool {
        self.seen[(behind / 64) as usize] & (1 << (behind % 64)) != 0
    }

    /// Records `seq`; returns false if it is a replay or older than the window.
    fn accept(&mut self, seq: u64, now_ms: u64) -> bool {
        if seq > self.newest_seq {
            let shift = seq - self.newest_seq;
            self.shift(shift);
            self.newest_seq = seq;
            self.mark(0);
        } else {
            let behind = self.newest_seq - seq;
            if behind >= REPLAY_WINDOW || self.is_marked(behind) {
                return false;
            }
            self.mark(behind);
        }
        self.last_heard_ms = now_ms;
        true
    }

    /// Moves the bitmap `shift` positions further into the past.
    fn shift(&mut self, shift: u64) {
        if shift >= REPLAY_WINDOW {
            self.seen = [0; (REPLAY_WINDOW / 64) as usize];
            return;
        }
        let mut next = [0u64; (REPLAY_WINDOW / 64) as usize];
        for behind in 0..REPLAY_WINDOW - shift {
            if self.is_marked(behind) {
                let to = behind + shift;
                next[(to / 64) as usize] |= 1 << (to % 64);
            }
        }
        self.seen = next;
    }
}

/// Verifies incoming envelopes for one mesh and keeps per-sender replay state.
#[derive(Debug)]
pub struct EnvelopeVerifier {
    mesh_id: MeshId,
    limits: EnvelopeLimits,
    windows: HashMap<NodeId, ReplayWindow>,
}

impl EnvelopeVerifier {
    /// A verifier for `mesh_id` with the given limits.
    pub fn new(mesh_id: MeshId, limits: EnvelopeLimits) -> Self {
        Self {
            mesh_id,
            limits,
            windows: HashMap::new(),
        }
    }

    /// Decodes and fully verifies wire bytes received at local time `now_ms`.
    pub fn open(&mut self, bytes: &[u8], now_ms: u64) -> Result<Envelope, EnvelopeError> {
        let envelope = Envelope::decode(bytes, self.limits.envelope_size_bytes_max)?;
        self.verify(&envelope, now_ms)?;
        Ok(envelope)
    }

    /// Verifies a decoded envelope received at local time `now_ms`.
    pub fn verify(&mut self, envelope: &Envelope, now_ms: u64) -> Result<(), EnvelopeError> {
        let header = &envelope.header;
        if envelope.payload.len() > self.limits.envelope_size_bytes_max {
            return Err(EnvelopeError::TooLarge {
                size_bytes: envelope.payload.len(),
                limit_bytes: self.limits.envelope_size_bytes_max,
            });
        }
        if !(PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION).contains(&header.version) {
            return Err(EnvelopeError::UnsupportedVersion {
                got: header.version,
                supported: PROTOCOL_VERSION,
            });
        }
        if header.mesh_id != self.mesh_id {
            return Err(EnvelopeError::WrongMesh {
                expected: self.mesh_id,
                got: header.mesh_id,
            });
        }
        envelope.verify_signature()?;
        let skew_ms = self.limits.clock_skew_ms_max;
        if header.timestamp_ms.abs_diff(now_ms) > skew_ms {
            return Err(EnvelopeError::ClockSkew {
                timestamp_ms: header.timestamp_ms,
                now_ms,
                skew_ms,
            });
        }
        self.check_replay(header.sender, header.seq, now_ms)
    }

    fn check_replay(&mut self, sender: NodeId, seq: u64, now_ms: u64) -> Result<(), EnvelopeError> {
        if let Some(window) = self.windows.get_mut(&sender) {
            return if window.accept(seq, now_ms) {
                Ok(())
            } else {
                Err(EnvelopeError::Replay { sender, seq })
            };
        }
        if self.windows.len() >= self.limits.tracked_senders_max.max(1) {
            self.forget_least_recent();
        }
        self.windows.insert(sender, ReplayWindow::new(seq, now_ms));
        Ok(())
    }

    fn forget_least_recent(&mut self) {
        let oldest = self
            .windows
            .iter()
            .min_by_key(|(_, w)| w.last_heard_ms)
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.windows.remove(&id);
        }
    }

    /// How many senders' windows are held (never above the configured bound).
    pub fn tracked_senders(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests;
