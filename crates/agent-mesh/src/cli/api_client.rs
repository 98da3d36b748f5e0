//! How the CLI reaches a node's API: HTTPS verified against the mesh CA
//! alone (no public roots), an optional client certificate for mutual TLS,
//! and no bearer token over plain HTTP to anything but loopback.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use clap::Args;
use mesh_node::api::tls::{read_certificates, read_private_key};
use rustls::{ClientConfig, RootCertStore};

/// The CA certificate's file name inside a CA folder.
const CA_CERT_FILE: &str = "ca.cert.pem";
/// The pin's file name inside a CA folder.
const CA_PIN_FILE: &str = "ca.pin";

/// TLS flags shared by every command that talks to a node's API.
#[derive(Clone, Debug, Default, Args)]
pub struct TlsArgs {
    /// The mesh CA that signed the node's HTTPS certificate: a CA folder
    /// (its ca.cert.pem is checked against its ca.pin) or a PEM file.
    /// Needed for https:// URLs; no other authority is trusted.
    #[arg(long = "ca", env = "AGENT_MESH_CA", value_name = "PATH")]
    pub ca: Option<PathBuf>,
    /// Show this identity's certificate to the node (mutual TLS): a folder
    /// with node.key.pem and node.cert.pem, as `agent-mesh ca provision` makes.
    #[arg(long, env = "AGENT_MESH_CLIENT_CERT", value_name = "DIR")]
    pub client_cert: Option<PathBuf>,
}

/// True when `url`'s host is a loopback address or `localhost`.
fn is_loopback(url: &reqwest::Url) -> bool {
    url.host_str()
        .is_some_and(mesh_node::config::host_is_loopback)
}

/// Parses `api` and checks it may carry a token when `sends_token`:
/// https anywhere, plain http only to loopback.
pub fn check_url(api: &str, sends_token: bool) -> anyhow::Result<reqwest::Url> {
    let url = reqwest::Url::parse(api).with_context(|| format!("bad API URL {api:?}"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if !sends_token || is_loopback(&url) => Ok(url),
        "http" => bail!(
            "refusing to send a token over plain HTTP to {}: use https:// \
             (nodes serve HTTPS unless plain HTTP on loopback is configured)",
            url.host_str().unwrap_or_default()
        ),
        other => bail!("API URL {api:?}: scheme {other:?}, expected https or http"),
    }
}

/// The CA certificate at `path` (a CA folder, pin-checked, or a PEM file).
fn ca_roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let file = if path.is_dir() {
        path.join(CA_CERT_FILE)
    } else {
        path.to_path_buf()
    };
    let certs = read_certificates(&file)?;
    if path.is_dir() && path.join(CA_PIN_FILE).exists() {
        let pin_path = path.join(CA_PIN_FILE);
        let pin = std::fs::read_to_string(&pin_path)
            .with_context(|| format!("reading {}", pin_path.display()))?;
        let actual = hex::encode(mesh_security::ca::ca_pin(&certs[0]));
        ensure!(
            pin.trim().eq_ignore_ascii_case(&actual),
            "{} does not match the pin in {}: not this mesh's CA",
            file.display(),
            pin_path.display()
        );
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .with_context(|| format!("CA certificate {}", file.display()))?;
    }
    Ok(roots)
}

/// The rustls client settings for `tls`: the mesh CA as the only root, and
/// the client certificate when one is named.
fn client_config(tls: &TlsArgs) -> anyhow::Result<ClientConfig> {
    let Some(ca) = &tls.ca else {
        bail!(
            "an https:// API is verified against the mesh CA: give --ca CA_DIR \
             (or set AGENT_MESH_CA)"
        );
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(ca_roots(ca)?);
    let config = match &tls.client_cert {
        None => builder.with_no_client_auth(),
        Some(dir) => {
            let chain = read_certificates(&dir.join("node.cert.pem"))?;
            let key = read_private_key(&dir.join("node.key.pem"))?;
            builder
                .with_client_auth_cert(chain, key)
                .with_context(|| format!("client certificate in {}", dir.display()))?
        }
    };
    Ok(config)
}

/// An async client for `api`, checked as [`check_url`] says.
pub fn async_client(
    api: &str,
    tls: &TlsArgs,
    timeout: Duration,
    sends_token: bool,
) -> anyhow::Result<reqwest::Client> {
    let url = check_url(api, sends_token)?;
    let mut builder = reqwest::Client::builder().timeout(timeout);
    if url.scheme() == "https" {
        builder = builder.use_preconfigured_tls(client_config(tls)?);
    }
    builder.build().context("building the HTTP client")
}

/// A blocking client for `api`, checked as [`check_url`] says.
pub fn blocking_client(
    api: &str,
    tls: &TlsArgs,
    timeout: Duration,
    sends_token: bool,
) -> anyhow::Result<reqwest::blocking::Client> {
    let url = check_url(api, sends_token)?;
    let mut builder = reqwest::blocking::Client::builder().timeout(timeout);
    if url.scheme() == "https" {
        builder = builder.use_preconfigured_tls(client_config(tls)?);
    }
    builder.build().context("building the HTTP client")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_token_goes_over_plain_http_only_to_loopback() {
        for ok in [
            "https://10.0.0.1:8080",
            "http://127.0.0.1:8080",
            "http://[::1]:80",
            "http://localhost:8080",
        ] {
            assert!(check_url(ok, true).is_ok(), "{ok}");
        }
        for refused in [
            "http://10.0.0.1:8080",
            "http://node-1:8080",
            "http://[2001:db8::1]:1",
        ] {
            let err = check_url(refused, true).unwrap_err().to_string();
            assert!(err.contains("plain HTTP"), "{refused}: {err}");
            assert!(
                check_url(refused, false).is_ok(),
                "{refused} without a token"
            );
        }
        assert!(check_url("ftp://x", false).is_err());
        assert!(check_url("not a url", false).is_err());
    }

    #[test]
    fn https_needs_the_mesh_ca_and_the_pin_must_match() {
        let err = blocking_client(
            "https://127.0.0.1:1",
            &TlsArgs::default(),
            Duration::from_secs(1),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--ca"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        crate::cli::ca::create_ca(&ca, "test CA", 1).unwrap();
        let tls = TlsArgs {
            ca: Some(ca.clone()),
            client_cert: None,
        };
        assert!(blocking_client("https://127.0.0.1:1", &tls, Duration::from_secs(1), true).is_ok());
        std::fs::write(ca.join(CA_PIN_FILE), "00".repeat(32)).unwrap();
        let err = client_config(&tls).unwrap_err().to_string();
        assert!(err.contains("pin"), "{err}");
    }
}
