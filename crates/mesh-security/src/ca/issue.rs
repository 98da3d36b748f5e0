//! Issuing and renewing certificates with `rcgen`, signed by `ed25519-dalek`.

use ed25519_dalek::VerifyingKey;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
    SigningKey, PKCS_ED25519,
};
use sha2::{Digest, Sha256};

use super::verify::{parse_cert, CertInfo};
use super::CertError;
use crate::identity::{NodeId, NodeIdentity};
use crate::rbac::RoleSet;

/// An Ed25519 public key as `rcgen` wants it.
struct PublicKey([u8; 32]);

impl PublicKeyData for PublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ED25519
    }
}

/// A node identity as an `rcgen` signer.
struct Signer<'a> {
    identity: &'a NodeIdentity,
    public: PublicKey,
}

impl<'a> Signer<'a> {
    fn new(identity: &'a NodeIdentity) -> Self {
        Self {
            identity,
            public: PublicKey(identity.verifying_key().to_bytes()),
        }
    }
}

impl PublicKeyData for Signer<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.public.der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ED25519
    }
}

impl SigningKey for Signer<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(self.identity.sign(msg).to_bytes().to_vec())
    }
}

/// A freshly issued certificate.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    /// DER encoding.
    pub der: Vec<u8>,
    /// PEM encoding.
    pub pem: String,
    /// Serial number bytes.
    pub serial: Vec<u8>,
}

/// The mesh CA: its key and self-signed certificate.
#[derive(Debug)]
pub struct MeshCa {
    identity: NodeIdentity,
    name: String,
    cert_der: Vec<u8>,
}

fn key_id(public: &[u8; 32]) -> KeyIdMethod {
    let spki = PublicKey(*public).subject_public_key_info();
    KeyIdMethod::PreSpecified(Sha256::digest(spki)[..20].to_vec())
}

fn datetime(unix_s: i64) -> Result<time::OffsetDateTime, CertError> {
    time::OffsetDateTime::from_unix_timestamp(unix_s).map_err(|e| CertError::Build(e.to_string()))
}

fn build_err(e: rcgen::Error) -> CertError {
    CertError::Build(e.to_string())
}

fn ca_params(name: &str, public: &[u8; 32]) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.key_identifier_method = key_id(public);
    params
}

impl MeshCa {
    /// Creates a CA named `name` with a self-signed certificate valid over
    /// `[not_before_unix_s, not_after_unix_s]`; `serial` must be unique.
    pub fn init(
        identity: NodeIdentity,
        name: &str,
        not_before_unix_s: i64,
        not_after_unix_s: i64,
        serial: [u8; 16],
    ) -> Result<Self, CertError> {
        let public = identity.verifying_key().to_bytes();
        let mut params = ca_params(name, &public);
        params.not_before = datetime(not_before_unix_s)?;
        params.not_after = datetime(not_after_unix_s)?;
        params.serial_number = Some(SerialNumber::from_slice(&positive(serial)));
        let cert = params
            .self_signed(&Signer::new(&identity))
            .map_err(build_err)?;
        Ok(Self {
            identity,
            name: name.to_string(),
            cert_der: cert.der().to_vec(),
        })
    }

    /// Loads a CA from its key and certificate, checking that they belong together.
    pub fn load(identity: NodeIdentity, cert_der: Vec<u8>) -> Result<Self, CertError> {
        let (name, key) = {
            let cert = parse_cert(&cert_der)?;
            let name = CertInfo::common_name(&cert)?;
            (name, CertInfo::ed25519_key(&cert)?)
        };
        if key != identity.verifying_key().to_bytes() {
            return Err(CertError::KeyMismatch {
                cert_node: CertInfo::node_id_of(&key).to_string(),
                peer_node: identity.node_id().to_string(),
            });
        }
        Ok(Self {
            identity,
            name,
            cert_der,
        })
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA's name (certificate common name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CA's signing identity.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// Issues a certificate for `node_key` with `roles`, valid over the
    /// given period, for HTTPS on the loopback names ([`LOOPBACK_HOSTS`]).
    pub fn issue(
        &self,
        node_key: &VerifyingKey,
        roles: RoleSet,
        not_before_unix_s: i64,
        not_after_unix_s: i64,
        serial: [u8; 16],
    ) -> Result<IssuedCert, CertError> {
        let validity = (not_before_unix_s, not_after_unix_s);
        self.issue_for_hosts(node_key, roles, validity, serial, &[])
    }

    /// [`MeshCa::issue`], the certificate also naming `hosts` (DNS names or
    /// IP addresses) so the node's HTTPS API verifies under those names.
    pub fn issue_for_hosts(
        &self,
        node_key: &VerifyingKey,
        roles: RoleSet,
        (not_before_unix_s, not_after_unix_s): (i64, i64),
        serial: [u8; 16],
        hosts: &[String],
    ) -> Result<IssuedCert, CertError> {
        if roles.is_empty() {
            return Err(CertError::Build(
                "a certificate needs at least one role".into(),
            ));
        }
        let node_id = NodeId::from_verifying_key(node_key);
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id.to_string());
        dn.push(DnType::OrganizationName, self.name.as_str());
        dn.push(DnType::OrganizationalUnitName, roles.to_string());
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = datetime(not_before_unix_s)?;
        params.not_after = datetime(not_after_unix_s)?;
        let serial = positive(serial);
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.key_identifier_method = key_id(&node_key.to_bytes());
        params.use_authority_key_identifier_extension = true;
        params.subject_alt_names = subject_alt_names(hosts)?;
        let cert = self.sign(&params, node_key)?;
        Ok(IssuedCert {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            serial: serial.to_vec(),
        })
    }

    /// `params` for `node_key`, signed by this CA.
    fn sign(
        &self,
        params: &CertificateParams,
        node_key: &VerifyingKey,
    ) -> Result<rcgen::Certificate, CertError> {
        let ca_public = self.identity.verifying_key().to_bytes();
        let issuer = Issuer::new(
            ca_params(&self.name, &ca_public),
            Signer::new(&self.identity),
        );
        params
            .signed_by(&PublicKey(node_key.to_bytes()), &issuer)
            .map_err(build_err)
    }

    /// Issues a new certificate with the same key and roles as `cert_der`
    /// (which must be one of this CA's) for a new validity period.
    pub fn renew(
        &self,
        cert_der: &[u8],
        not_before_unix_s: i64,
        not_after_unix_s: i64,
        serial: [u8; 16],
    ) -> Result<IssuedCert, CertError> {
        let info = CertInfo::parse(cert_der)?;
        super::verify::check_signed_by(cert_der, self.cert_der())?;
        let key = info
            .node_id
            .verifying_key()
            .map_err(|e| CertError::Malformed(e.to_string()))?;
        let validity = (not_before_unix_s, not_after_unix_s);
        self.issue_for_hosts(&key, info.roles, validity, serial, &info.hosts)
    }
}

/// The names every node certificate serves HTTPS for, whatever else it names.
pub const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Most host names one certificate carries.
pub const HOSTS_MAX: usize = 64;

/// [`LOOPBACK_HOSTS`] and `hosts`, without repeats, as subject alternative names.
fn subject_alt_names(hosts: &[String]) -> Result<Vec<SanType>, CertError> {
    let mut names: Vec<String> = LOOPBACK_HOSTS.iter().map(|h| (*h).to_string()).collect();
    for host in hosts {
        if !names.contains(host) {
            names.push(host.clone());
        }
    }
    if names.len() > HOSTS_MAX {
        return Err(CertError::Build(format!(
            "{} host names, at most {HOSTS_MAX}",
            names.len()
        )));
    }
    names.iter().map(|name| san(name)).collect()
}

fn san(name: &str) -> Result<SanType, CertError> {
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'*');
    if !valid {
        return Err(CertError::Build(format!(
            "{name:?} is neither an IP address nor a DNS name"
        )));
    }
    let dns = name
        .to_string()
        .try_into()
        .map_err(|e: rcgen::Error| CertError::Build(e.to_string()))?;
    Ok(SanType::DnsName(dns))
}

#[cfg(test)]
impl MeshCa {
    /// A certificate as builds before roles moved into the subject issued it:
    /// roles in the private extension [`super::ROLES_OID`], no host names.
    pub(super) fn issue_with_roles_extension(
        &self,
        node_key: &VerifyingKey,
        roles: RoleSet,
        (not_before_unix_s, not_after_unix_s): (i64, i64),
    ) -> Result<Vec<u8>, CertError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            NodeId::from_verifying_key(node_key).to_string(),
        );
        dn.push(DnType::OrganizationName, self.name.as_str());
        params.distinguished_name = dn;
        params.not_before = datetime(not_before_unix_s)?;
        params.not_after = datetime(not_after_unix_s)?;
        params.serial_number = Some(SerialNumber::from_slice(&positive([9; 16])));
        let text = roles.to_string();
        let mut der = vec![0x0c, text.len() as u8];
        der.extend_from_slice(text.as_bytes());
        params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            &super::ROLES_OID,
            der,
        )];
        Ok(self.sign(&params, node_key)?.der().to_vec())
    }
}

/// Serial numbers are positive DER integers: clear the top bit, and avoid a leading zero byte.
fn positive(mut serial: [u8; 16]) -> [u8; 16] {
    serial[0] = (serial[0] & 0x7f) | 0x40;
    serial
}
