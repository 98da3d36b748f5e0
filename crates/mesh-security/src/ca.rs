//! The mesh certificate authority: issue, renew and revoke X.509 node
//! certificates, and verify them against a pinned CA.
//!
//! Certificates are Ed25519 throughout and made with `rcgen`; the signing is
//! done by `ed25519-dalek` through [`rcgen::SigningKey`], so no second crypto
//! library is involved. A node certificate binds:
//! - the node's Ed25519 public key (SubjectPublicKeyInfo) and its node id
//!   (subject common name, the libp2p peer id of that key),
//! - its roles (the subject's organizational unit, such as
//!   `trainer,observer`; certificates issued before kept them in a private
//!   extension, [`ROLES_OID`], which is still read),
//! - the host names its HTTPS API may be reached by (subject alternative names),
//! - a validity period.
//!
//! Revocation is a [`SignedRevocation`] entry signed by the CA key, meant to be
//! replicated through the consensus log; a [`RevocationList`] holds the
//! verified entries. [`CertVerifier`] checks, each failure with its own
//! [`CertError`]: the CA certificate against the pinned SHA-256, the chain
//! (issuer name and CA signature), validity period, revocation, and that the
//! certificate's key is the peer's key.

mod issue;
mod revoke;
mod verify;

pub use issue::{IssuedCert, MeshCa, HOSTS_MAX, LOOPBACK_HOSTS};
pub use revoke::{
    RevocationEntry, RevocationList, SignedRevocation, ENCODED_BYTES_MAX as REVOCATION_BYTES_MAX,
    REASON_BYTES_MAX,
};
pub use verify::{ca_pin, CertInfo, CertVerifier, VerifiedCert};

use pem_rfc7468::{self as pem, LineEnding};

use crate::rbac::RbacError;

/// Largest PEM certificate accepted, in bytes.
pub const CERT_PEM_BYTES_MAX: usize = 64 * 1024;

/// Encodes a DER certificate as PEM ("CERTIFICATE").
pub fn cert_to_pem(der: &[u8]) -> Result<String, CertError> {
    pem::encode_string("CERTIFICATE", LineEnding::LF, der)
        .map_err(|e| CertError::Malformed(e.to_string()))
}

/// Decodes a PEM certificate to DER, refusing other labels and oversized input.
pub fn cert_from_pem(text: &str) -> Result<Vec<u8>, CertError> {
    if text.len() > CERT_PEM_BYTES_MAX {
        return Err(CertError::Malformed(format!(
            "PEM of {} bytes is too large",
            text.len()
        )));
    }
    let (label, der) =
        pem::decode_vec(text.trim().as_bytes()).map_err(|e| CertError::Malformed(e.to_string()))?;
    if label != "CERTIFICATE" {
        return Err(CertError::Malformed(format!(
            "PEM label {label}, expected CERTIFICATE"
        )));
    }
    Ok(der)
}

/// Object identifier of the roles extension that certificates issued
/// before roles moved into the subject carried (under the 2.25 UUID arc).
/// It is read, never written: arcs above 2^31 are malformed to Go's X.509
/// parser, so Prometheus, the kubelet and other Go clients refused the HTTPS
/// certificates that carried it.
pub const ROLES_OID: [u64; 3] = [2, 25, 9_124_862_317_559_015_231];
/// The same OID as a dotted string, for comparisons with parsed certificates.
pub const ROLES_OID_STR: &str = "2.25.9124862317559015231";
/// Object identifier of Ed25519 (RFC 8410).
pub const ED25519_OID_STR: &str = "1.3.101.112";
/// Revocation entries held at most by a [`RevocationList`].
pub const REVOCATIONS_MAX: usize = 1_000_000;

/// Why a certificate operation or verification failed. Retrying with the
/// same inputs never helps; each variant says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The CA certificate's SHA-256 is not the pinned one.
    #[error("CA certificate hash {got} does not match the pinned hash {pinned}")]
    CaPinMismatch {
        /// Pinned hash (hex).
        pinned: String,
        /// Hash of the presented CA certificate (hex).
        got: String,
    },
    /// The bytes are not a well-formed certificate of the expected shape.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// The certificate uses an algorithm other than Ed25519.
    #[error("unsupported algorithm {0} (only Ed25519 is accepted)")]
    UnsupportedAlgorithm(String),
    /// The CA certificate itself is not valid at `now_unix_s`.
    #[error("the CA certificate is valid from {not_before_unix_s} to {not_after_unix_s}, not at {now_unix_s}")]
    CaOutsideValidity {
        /// Time of the check.
        now_unix_s: i64,
        /// Start of the CA's validity.
        not_before_unix_s: i64,
        /// End of the CA's validity.
        not_after_unix_s: i64,
    },
    /// The certificate was not issued by the pinned CA (issuer or signature).
    #[error("certificate was not issued by this mesh CA: {0}")]
    WrongCa(String),
    /// The certificate's validity ended before `now_unix_s`.
    #[error("certificate expired at {not_after_unix_s} (now {now_unix_s}); renew it")]
    Expired {
        /// End of validity.
        not_after_unix_s: i64,
        /// Time of the check.
        now_unix_s: i64,
    },
    /// The certificate's validity starts after `now_unix_s`.
    #[error("certificate is not valid before {not_before_unix_s} (now {now_unix_s})")]
    NotYetValid {
        /// Start of validity.
        not_before_unix_s: i64,
        /// Time of the check.
        now_unix_s: i64,
    },
    /// The certificate's serial number has been revoked.
    #[error("certificate {serial} was revoked: {reason}")]
    Revoked {
        /// Serial number (hex).
        serial: String,
        /// Reason recorded in the revocation entry.
        reason: String,
    },
    /// The certificate's key is not the key the peer presented.
    #[error("certificate key belongs to {cert_node}, but the peer is {peer_node}")]
    KeyMismatch {
        /// Node id in the certificate.
        cert_node: String,
        /// Node id of the peer's key.
        peer_node: String,
    },
    /// The certificate grants no role, or lacks the one needed.
    #[error(transparent)]
    Role(#[from] RbacError),
    /// A revocation entry's signature is not the CA's.
    #[error("revocation entry for {0} is not signed by the mesh CA")]
    BadRevocationSignature(String),
    /// The revocation list is full.
    #[error("revocation list is full ({0} entries)")]
    TooManyRevocations(usize),
    /// Issuing failed inside the certificate builder.
    #[error("cannot build certificate: {0}")]
    Build(String),
}

#[cfg(test)]
mod tests;
