//! Signed revocation entries and the bounded list of revoked serials.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::{CertError, REVOCATIONS_MAX};
use crate::identity::{verify_signature, NodeId, NodeIdentity};

const REVOCATION_DOMAIN: &[u8] = b"agent-mesh/revocation/v1\0";
/// Longest reason text kept in an entry, in bytes.
pub const REASON_BYTES_MAX: usize = 256;

/// Largest encoded entry accepted by [`SignedRevocation::from_bytes`].
pub const ENCODED_BYTES_MAX: usize = 1024;

/// One revocation: which certificate, whose, when and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationEntry {
    /// Serial number of the revoked certificate.
    pub serial: Vec<u8>,
    /// The node the certificate was for.
    pub node_id: NodeId,
    /// When it was revoked, Unix seconds.
    pub revoked_at_unix_s: i64,
    /// Why (free text, at most [`REASON_BYTES_MAX`] bytes).
    pub reason: String,
}

/// A revocation entry signed by the CA key: what the consensus log replicates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRevocation {
    /// The entry.
    pub entry: RevocationEntry,
    /// The CA's Ed25519 signature over the entry.
    pub signature: Signature,
}

fn signing_bytes(entry: &RevocationEntry) -> Result<Vec<u8>, CertError> {
    let mut out = REVOCATION_DOMAIN.to_vec();
    out.extend(postcard::to_allocvec(entry).map_err(|e| CertError::Malformed(e.to_string()))?);
    Ok(out)
}

impl SignedRevocation {
    /// Signs `entry` with the CA identity (reason truncated to the limit).
    pub fn sign(ca: &NodeIdentity, mut entry: RevocationEntry) -> Result<Self, CertError> {
        truncate_utf8(&mut entry.reason, REASON_BYTES_MAX);
        let signature = ca.sign(&signing_bytes(&entry)?);
        Ok(Self { entry, signature })
    }

    /// The wire encoding (postcard), as the consensus log stores it.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CertError> {
        postcard::to_allocvec(self).map_err(|e| CertError::Malformed(e.to_string()))
    }

    /// Decodes [`SignedRevocation::to_bytes`] output (does not verify).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CertError> {
        if bytes.len() > ENCODED_BYTES_MAX {
            return Err(CertError::Malformed(format!(
                "revocation entry of {} bytes",
                bytes.len()
            )));
        }
        let (value, rest) =
            postcard::take_from_bytes(bytes).map_err(|e| CertError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CertError::Malformed(
                "trailing bytes after revocation entry".into(),
            ));
        }
        Ok(value)
    }

    /// Checks the CA signature.
    pub fn verify(&self, ca_key: &VerifyingKey) -> Result<(), CertError> {
        verify_signature(ca_key, &signing_bytes(&self.entry)?, &self.signature)
            .map_err(|_| CertError::BadRevocationSignature(hex::encode(&self.entry.serial)))
    }
}

fn truncate_utf8(text: &mut String, bytes_max: usize) {
    if text.len() <= bytes_max {
        return;
    }
    let mut cut = bytes_max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
}

/// Verified revocations by serial number, at most [`REVOCATIONS_MAX`].
#[derive(Clone, Debug, Default)]
pub struct RevocationList {
    entries: BTreeMap<Vec<u8>, RevocationEntry>,
}

impl RevocationList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry after checking it is signed by `ca_key`.
    pub fn insert(
        &mut self,
        revocation: &SignedRevocation,
        ca_key: &VerifyingKey,
    ) -> Result<(), CertError> {
        revocation.verify(ca_key)?;
        if self.entries.len() >= REVOCATIONS_MAX
            && !self.entries.contains_key(&revocation.entry.serial)
        {
            return Err(CertError::TooManyRevocations(REVOCATIONS_MAX));
        }
        self.entries
            .insert(revocation.entry.serial.clone(), revocation.entry.clone());
        Ok(())
    }

    /// The entry revoking `serial`, if any.
    pub fn get(&self, serial: &[u8]) -> Option<&RevocationEntry> {
        self.entries.get(serial)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
