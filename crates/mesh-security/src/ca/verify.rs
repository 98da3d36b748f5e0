//! Verifying node certificates against the pinned mesh CA with `x509-parser`.

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;

use super::revoke::RevocationList;
use super::{CertError, ED25519_OID_STR, ROLES_OID_STR};
use crate::identity::{verify_signature, NodeId};
use crate::rbac::{authorize, Action, HasRoles, RoleSet};

/// The pin of a CA certificate: SHA-256 of its DER encoding.
pub fn ca_pin(ca_cert_der: &[u8]) -> [u8; 32] {
    Sha256::digest(ca_cert_der).into()
}

pub(super) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CertError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(cert)
}

/// What a certificate says, read without verifying it (for listings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number bytes.
    pub serial: Vec<u8>,
    /// The node the certificate is for (from its key).
    pub node_id: NodeId,
    /// Roles granted.
    pub roles: RoleSet,
    /// Start of validity, Unix seconds.
    pub not_before_unix_s: i64,
    /// End of validity, Unix seconds.
    pub not_after_unix_s: i64,
    /// Host names and IP addresses the certificate may serve HTTPS for
    /// (its subject alternative names), as text.
    pub hosts: Vec<String>,
}

impl CertInfo {
    /// Reads a node certificate's fields, checking its shape but not its signature.
    pub fn parse(der: &[u8]) -> Result<Self, CertError> {
        let cert = parse_cert(der)?;
        Self::from_cert(&cert)
    }

    fn from_cert(cert: &X509Certificate<'_>) -> Result<Self, CertError> {
        let key = Self::ed25519_key(cert)?;
        let node_id = Self::node_id_of(&key);
        if Self::common_name(cert)? != node_id.to_string() {
            return Err(CertError::Malformed(
                "common name is not the node id of the key".into(),
            ));
        }
        let validity = cert.validity();
        Ok(Self {
            serial: cert.raw_serial().to_vec(),
            node_id,
            roles: roles_of(cert)?,
            not_before_unix_s: validity.not_before.timestamp(),
            not_after_unix_s: validity.not_after.timestamp(),
            hosts: hosts_of(cert),
        })
    }

    pub(super) fn node_id_of(key: &[u8; 32]) -> NodeId {
        match VerifyingKey::from_bytes(key) {
            Ok(k) => NodeId::from_verifying_key(&k),
            Err(_) => NodeId::from_verifying_key(&VerifyingKey::default()),
        }
    }

    pub(super) fn ed25519_key(cert: &X509Certificate<'_>) -> Result<[u8; 32], CertError> {
        let spki = cert.public_key();
        let oid = spki.algorithm.algorithm.to_id_string();
        if oid != ED25519_OID_STR {
            return Err(CertError::UnsupportedAlgorithm(oid));
        }
        let bytes: [u8; 32] = spki
            .subject_public_key
            .data
            .as_ref()
            .try_into()
            .map_err(|_| CertError::Malformed("Ed25519 key is not 32 bytes".into()))?;
        VerifyingKey::from_bytes(&bytes).map_err(|e| CertError::Malformed(e.to_string()))?;
        Ok(bytes)
    }

    pub(super) fn common_name(cert: &X509Certificate<'_>) -> Result<String, CertError> {
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .ok_or_else(|| CertError::Malformed("no common name".into()))?;
        cn.as_str()
            .map(str::to_string)
            .map_err(|e| CertError::Malformed(e.to_string()))
    }
}

/// The DNS names and IP addresses among a certificate's subject alternative names.
fn hosts_of(cert: &X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(names)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_string()),
            GeneralName::IPAddress(bytes) => ip_text(bytes),
            _ => None,
        })
        .collect()
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}

/// The roles: the subject's organizational unit, or in a certificate issued
/// before roles moved there, the private roles extension.
fn roles_of(cert: &X509Certificate<'_>) -> Result<RoleSet, CertError> {
    let unit = cert.subject().iter_organizational_unit().next();
    if let Some(unit) = unit {
        let text = unit
            .as_str()
            .map_err(|e| CertError::Malformed(format!("organizational unit: {e}")))?;
        return Ok(RoleSet::parse_list(text)?);
    }
    let ext = cert
        .iter_extensions()
        .find(|e| e.oid.to_id_string() == ROLES_OID_STR)
        .ok_or_else(|| CertError::Malformed("no roles extension".into()))?;
    let value = ext.value;
    let text = match value {
        [0x0c, len, rest @ ..] if usize::from(*len) == rest.len() && *len < 0x80 => rest,
        _ => {
            return Err(CertError::Malformed(
                "roles extension is not a short UTF8String".into(),
            ))
        }
    };
    let text = std::str::from_utf8(text).map_err(|e| CertError::Malformed(e.to_string()))?;
    Ok(RoleSet::parse_list(text)?)
}

/// Checks that `cert_der` was issued by the CA certificate `ca_der`: issuer
/// name equals the CA's subject and the CA's Ed25519 signature verifies.
pub(super) fn check_signed_by(cert_der: &[u8], ca_der: &[u8]) -> Result<(), CertError> {
    let cert = parse_cert(cert_der)?;
    let ca = parse_cert(ca_der)?;
    let sig_oid = cert.signature_algorithm.algorithm.to_id_string();
    if sig_oid != ED25519_OID_STR {
        return Err(CertError::UnsupportedAlgorithm(sig_oid));
    }
    if cert.issuer().as_raw() != ca.subject().as_raw() {
        return Err(CertError::WrongCa(format!(
            "issuer is {}, the CA is {}",
            cert.issuer(),
            ca.subject()
        )));
    }
    let ca_key = VerifyingKey::from_bytes(&CertInfo::ed25519_key(&ca)?)
        .map_err(|e| CertError::Malformed(e.to_string()))?;
    let signature = Signature::from_slice(&cert.signature_value.data)
        .map_err(|_| CertError::WrongCa("signature is not an Ed25519 signature".into()))?;
    verify_signature(&ca_key, cert.tbs_certificate.as_ref(), &signature)
        .map_err(|_| CertError::WrongCa("CA signature does not verify".into()))
}

/// A certificate that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedCert {
    /// What the certificate says.
    pub info: CertInfo,
}

impl HasRoles for VerifiedCert {
    fn roles(&self) -> RoleSet {
        self.info.roles
    }
}

/// Verifies node certificates against one pinned CA certificate.
#[derive(Clone, Debug)]
pub struct CertVerifier {
    ca_der: Vec<u8>,
    ca_key: VerifyingKey,
    ca_validity_unix_s: (i64, i64),
}

impl CertVerifier {
    /// Accepts `ca_der` as the trust anchor only if its SHA-256 equals `pin`.
    pub fn new(ca_der: Vec<u8>, pin: &[u8; 32]) -> Result<Self, CertError> {
        let got = ca_pin(&ca_der);
        if &got != pin {
            return Err(CertError::CaPinMismatch {
                pinned: hex::encode(pin),
                got: hex::encode(got),
            });
        }
        check_signed_by(&ca_der, &ca_der)?;
        let (ca_key, ca_validity_unix_s) = {
            let ca = parse_cert(&ca_der)?;
            let key = VerifyingKey::from_bytes(&CertInfo::ed25519_key(&ca)?)
                .map_err(|e| CertError::Malformed(e.to_string()))?;
            let validity = ca.validity();
            (
                key,
                (
                    validity.not_before.timestamp(),
                    validity.not_after.timestamp(),
                ),
            )
        };
        Ok(Self {
            ca_der,
            ca_key,
            ca_validity_unix_s,
        })
    }

    /// The CA's public key (revocation entries are signed with it).
    pub fn ca_key(&self) -> &VerifyingKey {
        &self.ca_key
    }

    /// The certificate's and then the CA's validity period at `now_unix_s`.
    fn check_validity(&self, info: &CertInfo, now_unix_s: i64) -> Result<(), CertError> {
        if now_unix_s > info.not_after_unix_s {
            return Err(CertError::Expired {
                not_after_unix_s: info.not_after_unix_s,
                now_unix_s,
            });
        }
        if now_unix_s < info.not_before_unix_s {
            return Err(CertError::NotYetValid {
                not_before_unix_s: info.not_before_unix_s,
                now_unix_s,
            });
        }
        let (ca_from, ca_until) = self.ca_validity_unix_s;
        if now_unix_s < ca_from || now_unix_s > ca_until {
            return Err(CertError::CaOutsideValidity {
                now_unix_s,
                not_before_unix_s: ca_from,
                not_after_unix_s: ca_until,
            });
        }
        Ok(())
    }

    /// Verifies chain, validity at `now_unix_s`, revocation and, when given,
    /// that the certificate's key is `peer_key`.
    pub fn verify(
        &self,
        cert_der: &[u8],
        peer_key: Option<&VerifyingKey>,
        now_unix_s: i64,
        revocations: &RevocationList,
    ) -> Result<VerifiedCert, CertError> {
        check_signed_by(cert_der, &self.ca_der)?;
        let info = CertInfo::parse(cert_der)?;
        self.check_validity(&info, now_unix_s)?;
        if let Some(entry) = revocations.get(&info.serial) {
            return Err(CertError::Revoked {
                serial: hex::encode(&info.serial),
                reason: entry.reason.clone(),
            });
        }
        if let Some(key) = peer_key {
            if key.to_bytes() != *info.node_id.as_bytes() {
                return Err(CertError::KeyMismatch {
                    cert_node: info.node_id.to_string(),
                    peer_node: NodeId::from_verifying_key(key).to_string(),
                });
            }
        }
        Ok(VerifiedCert { info })
    }

    /// [`CertVerifier::verify`], then [`authorize`] for `action`.
    pub fn verify_for(
        &self,
        cert_der: &[u8],
        peer_key: &VerifyingKey,
        now_unix_s: i64,
        revocations: &RevocationList,
        action: Action,
    ) -> Result<VerifiedCert, CertError> {
        let cert = self.verify(cert_der, Some(peer_key), now_unix_s, revocations)?;
        authorize(&cert, action)?;
        Ok(cert)
    }
}
