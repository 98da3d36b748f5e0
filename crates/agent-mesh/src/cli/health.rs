//! `agent-mesh health --api URL [--ready]`: a probe for container health
//! checks, exit 0 when the node answers `/healthz` (or `/readyz`) with 200.
//!
//! Container images of the node have no shell and no `curl`; Docker's
//! `HEALTHCHECK` and Kubernetes exec probes run this instead.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

/// Flags of `agent-mesh health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Base URL of the node's API.
    #[arg(long, value_name = "URL", default_value = "https://127.0.0.1:8080")]
    pub api: String,
    /// How the node's HTTPS certificate is verified.
    #[command(flatten)]
    pub tls: super::api_client::TlsArgs,
    /// Ask `/readyz` (admitted and in step with the committee) instead of `/healthz` (loop alive).
    #[arg(long)]
    pub ready: bool,
    /// Give up on the request after this many milliseconds.
    #[arg(long, default_value_t = 3_000)]
    pub timeout_ms: u64,
}

/// Probes the node once; an error (exit 1) says what answered or why nothing did.
pub fn run(args: HealthArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let body = runtime.block_on(probe(&args))?;
    print!("{body}");
    Ok(())
}

/// The probed route's URL under `api`.
fn probe_url(api: &str, ready: bool) -> String {
    let route = if ready { "readyz" } else { "healthz" };
    format!("{}/{route}", api.trim_end_matches('/'))
}

async fn probe(args: &HealthArgs) -> anyhow::Result<String> {
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let client = super::api_client::async_client(&args.api, &args.tls, timeout, false)?;
    let url = probe_url(&args.api, args.ready);
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", body.trim());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_probe_asks_healthz_unless_readiness_is_wanted() {
        assert_eq!(probe_url("http://n:8080/", false), "http://n:8080/healthz");
        assert_eq!(probe_url("http://n:8080", true), "http://n:8080/readyz");
    }

    #[test]
    fn a_node_that_does_not_answer_is_unhealthy() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let args = HealthArgs {
            api: format!("http://127.0.0.1:{port}"),
            ready: false,
            timeout_ms: 500,
            tls: Default::default(),
        };
        let err = run(args).unwrap_err();
        assert!(format!("{err:#}").contains("/healthz"), "{err:#}");
    }
}
