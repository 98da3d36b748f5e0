//! HTTPS for the API (rustls, ring): the node presents a certificate from
//! the mesh CA, by default its own mesh certificate and key, and may ask
//! clients for theirs (mutual TLS against the same CA).
//!
//! ```text
//!   accept ──► caps (server.rs) ──► TLS handshake (bounded by the header timeout) ──► hyper
//!                                      │ certificate: ReloadingCert, swapped in place by reload()
//!                                      └ client certificate: off | optional | required (mesh CA)
//! ```
//!
//! The certificate is read through a resolver that [`ApiTls::reload`] swaps
//! in place, so a renewed certificate is served from the next handshake on,
//! with no restart and no connection dropped.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::{ClientCerts, NodeConfig};

/// Why HTTPS could not be set up. Fix the files or config and start (or reload) again.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or holds no PEM of its kind.
    #[error("cannot read {what} from {path}: {message}")]
    Read {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the certificate, key or client CA.
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The files HTTPS is served from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first (PEM, one or more files in order).
    pub chain: Vec<PathBuf>,
    /// The leaf's private key (PKCS#8 PEM).
    pub key: PathBuf,
    /// The CA that signs client certificates (PEM).
    pub client_ca: PathBuf,
}

impl TlsFiles {
    /// The files `config` names: `http.tls_cert`/`tls_key`, or else the
    /// node's own certificate followed by the CA's, and the node's key.
    pub fn of(config: &NodeConfig) -> Self {
        let identity = &config.identity;
        match (&config.http.tls_cert, &config.http.tls_key) {
            (Some(cert), Some(key)) => Self {
                chain: vec![cert.clone()],
                key: key.clone(),
                client_ca: identity.ca_cert.clone(),
            },
            _ => Self {
                chain: vec![identity.cert.clone(), identity.ca_cert.clone()],
                key: identity.key.clone(),
                client_ca: identity.ca_cert.clone(),
            },
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_err(what: &'static str, path: &Path, message: impl ToString) -> TlsError {
    TlsError::Read {
        what,
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Every certificate in the PEM file at `path` (at least one).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_err("certificates", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err("certificates", path, e))?;
    if certs.is_empty() {
        return Err(read_err("certificates", path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

/// The private key in the PEM file at `path`.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| read_err("a private key", path, e))
}

fn certified_key(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let mut chain = Vec::new();
    for path in &files.chain {
        chain.extend(read_certificates(path)?);
    }
    let key = read_private_key(&files.key)?;
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Setup(format!("key {}: {e}", files.key.display())))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| TlsError::Setup(format!("certificate and key do not match: {e}")))?;
    Ok(certified)
}

/// The served certificate, replaced in place on reload.
#[derive(Debug)]
struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// The API's TLS acceptor and the certificate it serves.
#[derive(Clone)]
pub struct ApiTls {
    acceptor: TlsAcceptor,
    cert: Arc<ReloadingCert>,
    files: TlsFiles,
}

impl std::fmt::Debug for ApiTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTls")
            .field("files", &self.files)
            .finish()
    }
}

impl ApiTls {
    /// Reads `files` and builds the acceptor; `client_certs` says whether
    /// clients must show a certificate from the CA in `files.client_ca`.
    pub fn new(files: TlsFiles, client_certs: ClientCerts) -> Result<Self, TlsError> {
        let cert = Arc::new(ReloadingCert {
            current: RwLock::new(Arc::new(certified_key(&files)?)),
        });
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let builder = match client_certs {
            ClientCerts::Off => builder.with_no_client_auth(),
            mode => builder.with_client_cert_verifier(client_verifier(&files.client_ca, mode)?),
        };
        let mut config = builder.with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert,
            files,
        })
    }

    /// The acceptor for new connections.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the certificate and key again (after a renewal); the old ones
    /// stay in use if the new ones do not load.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(certified_key(&self.files)?);
        *self.cert.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// The leaf certificate served now (DER).
    pub fn leaf_der(&self) -> Vec<u8> {
        let current = self.cert.current.read().unwrap_or_else(|p| p.into_inner());
        current.cert.first().map(|c| c.to_vec()).unwrap_or_default()
    }
}

fn client_verifier(
    ca: &Path,
    mode: ClientCerts,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(ca)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Setup(format!("client CA {}: {e}", ca.display())))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = if mode == ClientCerts::Optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder
        .build()
        .map_err(|e| TlsError::Setup(format!("client certificate verifier: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mesh_security::ca::{cert_to_pem, MeshCa};
    use mesh_security::rbac::{Role, RoleSet};
    use mesh_security::NodeIdentity;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const T0: i64 = 1_700_000_000;

    /// A CA, and a node key and certificate valid `days` days, as files.
    fn files(dir: &Path, ca: &MeshCa, days: i64, serial: u8) -> TlsFiles {
        let node = NodeIdentity::from_seed(&[7; 32]);
        let roles = RoleSet::of(&[Role::Trainer]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let cert = ca
            .issue(
                &node.verifying_key(),
                roles,
                T0,
                now + days * 86_400,
                [serial; 16],
            )
            .unwrap();
        std::fs::write(dir.join("node.cert.pem"), &cert.pem).unwrap();
        std::fs::write(
            dir.join("node.key.pem"),
            node.to_pkcs8_pem().unwrap().as_bytes(),
        )
        .unwrap();
        std::fs::write(dir.join("ca.cert.pem"), cert_to_pem(ca.cert_der()).unwrap()).unwrap();
        TlsFiles {
            chain: vec![dir.join("node.cert.pem"), dir.join("ca.cert.pem")],
            key: dir.join("node.key.pem"),
            client_ca: dir.join("ca.cert.pem"),
        }
    }

    fn ca() -> MeshCa {
        let identity = NodeIdentity::from_seed(&[9; 32]);
        MeshCa::init(identity, "test CA", T0, T0 + 3_650 * 86_400, [1; 16]).unwrap()
    }

    /// One TLS handshake over an in-memory pipe, the client trusting `ca`
    /// only; returns the leaf certificate the server showed.
    async fn handshake(tls: &ApiTls, ca: &MeshCa, name: &str) -> Result<Vec<u8>, String> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca.cert_der().to_vec()))
            .unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = tls.acceptor().clone();
        let server = tokio::spawn(async move {
            let mut stream = acceptor
                .accept(server_io)
                .await
                .map_err(|e| e.to_string())?;
            stream.write_all(b"ok").await.map_err(|e| e.to_string())?;
            stream.shutdown().await.map_err(|e| e.to_string())
        });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = ServerName::try_from(name.to_string()).unwrap();
        let mut stream = connector
            .connect(name, client_io)
            .await
            .map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        stream
            .read_to_end(&mut got)
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(got, b"ok");
        server.await.unwrap()?;
        let (_, session) = stream.get_ref();
        Ok(session.peer_certificates().unwrap()[0].to_vec())
    }

    #[tokio::test]
    async fn the_api_serves_its_mesh_certificate_and_a_reload_swaps_it_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca();
        let tls = ApiTls::new(files(dir.path(), &ca, 1, 2), ClientCerts::Off).unwrap();
        let first = handshake(&tls, &ca, "localhost").await.unwrap();
        assert_eq!(first, tls.leaf_der());
        let wrong_name = handshake(&tls, &ca, "elsewhere.example").await;
        assert!(wrong_name.is_err(), "a name the certificate does not carry");
        files(dir.path(), &ca, 30, 3);
        tls.reload().unwrap();
        let second = handshake(&tls, &ca, "127.0.0.1").await.unwrap();
        assert_ne!(first, second, "the renewed certificate is served");
        std::fs::write(dir.path().join("node.key.pem"), "not a key").unwrap();
        assert!(tls.reload().is_err());
        assert_eq!(handshake(&tls, &ca, "localhost").await.unwrap(), second);
    }

    #[test]
    fn a_missing_or_foreign_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = files(dir.path(), &ca(), 1, 2);
        files.key = dir.path().join("missing.pem");
        let err = ApiTls::new(files.clone(), ClientCerts::Off).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let other = NodeIdentity::from_seed(&[8; 32]);
        files.key = dir.path().join("other.pem");
        std::fs::write(&files.key, other.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
        let err = ApiTls::new(files, ClientCerts::Required).unwrap_err();
        assert!(err.to_string().contains("do not match"), "{err}");
    }
}
