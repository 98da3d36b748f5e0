//! Certificate renewal without a restart: when the node's certificate file
//! changes (checked every few seconds) or the process gets `SIGHUP`, the
//! node reads it again, checks it against its key and the pinned CA, and
//! then presents it everywhere at once:
//!
//! ```text
//!   node.cert.pem changed / SIGHUP ──► read + verify (key, CA, validity, roles unchanged)
//!        ├─► network: the new certificate to every admitted peer (their admission
//!        │   follows its validity; connections and the running job stay)
//!        └─► HTTPS API: served from the next handshake on
//! ```
//!
//! A certificate that does not load or verify is logged and ignored: the
//! node keeps the one it has, and tries again when the file changes again.

use std::time::SystemTime;

use mesh_security::ca::CertInfo;

use super::{credentials, Runtime};

/// The certificate file is checked for changes every this many ticks.
pub const CERT_CHECK_TICKS: u64 = 8;

impl Runtime {
    /// Reloads the certificate when its file changed since the last look.
    pub(super) async fn reload_certificate_if_changed(&mut self) {
        let modified = std::fs::metadata(&self.config.identity.cert)
            .and_then(|m| m.modified())
            .ok();
        if modified.is_none() || modified == self.cert_modified {
            return;
        }
        let first_look = self.cert_modified.is_none();
        self.cert_modified = modified;
        if !first_look {
            self.reload_certificate("the certificate file changed")
                .await;
        }
    }

    /// Reads, verifies and presents the certificate file again.
    pub(super) async fn reload_certificate(&mut self, why: &str) {
        match self.renewed_certificate() {
            Ok(Some(der)) => self.present_certificate(der, why).await,
            Ok(None) => tracing::debug!(why, "certificate unchanged"),
            Err(err) => {
                tracing::warn!(why, %err, "renewed certificate not taken; keeping the current one")
            }
        }
    }

    /// The certificate in the file when it differs from the current one
    /// and verifies for this node now, with the same roles.
    fn renewed_certificate(&self) -> Result<Option<Vec<u8>>, String> {
        let path = &self.config.identity.cert;
        let der = credentials::read_cert(path, "node certificate").map_err(|e| e.to_string())?;
        if der == self.creds.cert_der {
            return Ok(None);
        }
        let roles = credentials::check_node_cert(&der, &self.creds.verifier, &self.creds.identity)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if roles != self.creds.roles {
            return Err(format!(
                "{} grants [{roles}], this node runs with [{}]: a change of roles needs a restart",
                path.display(),
                self.creds.roles
            ));
        }
        Ok(Some(der))
    }

    async fn present_certificate(&mut self, der: Vec<u8>, why: &str) {
        let info = CertInfo::parse(&der).ok();
        match self.net.renew_certificate(der.clone()).await {
            Ok(peers) => {
                self.creds.cert_der = der;
                if let Some(tls) = &self.api_tls {
                    if let Err(err) = tls.reload() {
                        tracing::warn!(%err, "HTTPS keeps serving the previous certificate");
                    }
                }
                tracing::info!(
                    why,
                    peers,
                    serial = info
                        .as_ref()
                        .map(|i| hex::encode(&i.serial))
                        .unwrap_or_default(),
                    not_after_unix_s = info.map(|i| i.not_after_unix_s).unwrap_or_default(),
                    "certificate renewed without a restart"
                );
            }
            Err(err) => tracing::warn!(%err, "renewed certificate not taken by the network layer"),
        }
    }
}

/// When the certificate file was last seen modified (none: not looked yet).
pub type CertModified = Option<SystemTime>;
