//! The node's key, certificate and trust anchor, loaded and cross-checked at start.

use std::path::{Path, PathBuf};

use mesh_security::ca::{cert_from_pem, CertError, CertVerifier, RevocationList, SignedRevocation};
use mesh_security::keyfile::{read_private_key, KeyFileError};
use mesh_security::rbac::RoleSet;
use mesh_security::NodeIdentity;

use crate::config::{ConfigError, NodeConfig};

/// Why the node's credentials cannot be used. Fix the files and start again.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The private key file is missing, unreadable or too open.
    #[error("node key: {0}")]
    Key(#[from] KeyFileError),
    /// A certificate file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CA pin is missing or malformed.
    #[error(transparent)]
    Pin(#[from] ConfigError),
    /// A revocations file line is malformed or not signed by the CA.
    #[error("{path}:{line}: {message}")]
    Revocations {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The CA or node certificate is invalid, or not this node's.
    #[error("{what}: {source}")]
    Cert {
        /// Which certificate.
        what: &'static str,
        /// What is wrong.
        source: CertError,
    },
}

/// Largest revocations file read.
pub const REVOCATIONS_FILE_BYTES_MAX: u64 = 16 << 20;

/// Reads a `revocations.jsonl` (one JSON object per line with the hex of a
/// CA-signed revocation in `signed`) and checks every entry's CA signature.
pub fn read_revocations(
    path: &Path,
    verifier: &CertVerifier,
) -> Result<Vec<SignedRevocation>, CredentialsError> {
    let read_err = |source| CredentialsError::Read {
        path: path.to_owned(),
        source,
    };
    let size_bytes = std::fs::metadata(path).map_err(read_err)?.len();
    if size_bytes > REVOCATIONS_FILE_BYTES_MAX {
        let message = format!("{size_bytes} bytes, the limit is {REVOCATIONS_FILE_BYTES_MAX}");
        return Err(read_err(std::io::Error::other(message)));
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = |message: String| CredentialsError::Revocations {
            path: path.to_owned(),
            line: i + 1,
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let signed_hex = value["signed"]
            .as_str()
            .ok_or_else(|| bad("no \"signed\" field".into()))?;
        let bytes = hex::decode(signed_hex).map_err(|e| bad(e.to_string()))?;
        let signed = SignedRevocation::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
        signed
            .verify(verifier.ca_key())
            .map_err(|e| bad(e.to_string()))?;
        out.push(signed);
    }
    Ok(out)
}

/// What the node proves itself with and whom it trusts.
#[derive(Clone)]
pub struct Credentials {
    /// The node's key.
    pub identity: NodeIdentity,
    /// Its certificate (DER).
    pub cert_der: Vec<u8>,
    /// The pinned mesh CA.
    pub verifier: CertVerifier,
    /// The roles its certificate grants.
    pub roles: RoleSet,
}

pub(super) fn read_cert(path: &Path, what: &'static str) -> Result<Vec<u8>, CredentialsError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
        path: path.to_owned(),
        source,
    })?;
    cert_from_pem(&text).map_err(|source| CredentialsError::Cert { what, source })
}

impl Credentials {
    /// Loads the files the config names and checks the node certificate
    /// against the pinned CA and the node's own key, so a node with the wrong
    /// files fails at start with a clear message instead of being refused by
    /// every peer.
    pub fn load(config: &NodeConfig) -> Result<Self, CredentialsError> {
        let identity = read_private_key(&config.identity.key)?;
        let cert_der = read_cert(&config.identity.cert, NODE_CERT)?;
        let ca_der = read_cert(&config.identity.ca_cert, "CA certificate")?;
        let pin = config.ca_pin_bytes()?;
        let verifier =
            CertVerifier::new(ca_der, &pin).map_err(|source| CredentialsError::Cert {
                what: "CA certificate",
                source,
            })?;
        let roles = check_node_cert(&cert_der, &verifier, &identity)?;
        Ok(Self {
            identity,
            cert_der,
            verifier,
            roles,
        })
    }
}

const NODE_CERT: &str = "node certificate";

/// Checks the node certificate `cert_der` against the pinned CA of
/// `verifier` and `identity`'s key, now; returns the roles it grants.
pub(super) fn check_node_cert(
    cert_der: &[u8],
    verifier: &CertVerifier,
    identity: &NodeIdentity,
) -> Result<RoleSet, CredentialsError> {
    let now_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    verifier
        .verify(
            cert_der,
            Some(&identity.verifying_key()),
            now_unix_s,
            &RevocationList::new(),
        )
        .map(|verified| verified.info.roles)
        .map_err(|source| CredentialsError::Cert {
            what: NODE_CERT,
            source,
        })
}
