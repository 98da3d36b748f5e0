//! `agent-mesh token`: sign a short-lived admin token for the HTTP API.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use mesh_security::ca::cert_from_pem;
use mesh_security::keyfile::read_private_key;
use mesh_security::token::AdminToken;

use super::keygen::KEY_FILE;

/// Flags of `agent-mesh token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Key directory of the admin (from `agent-mesh keygen`), holding node.key.pem.
    #[arg(long, value_name = "DIR")]
    pub key: PathBuf,
    /// The admin's certificate (PEM), issued with the admin role.
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// The mesh the token is for (the nodes' mesh_id).
    #[arg(long)]
    pub mesh_id: String,
    /// Lifetime in seconds (at most one day).
    #[arg(long, default_value_t = 3_600)]
    pub ttl_s: i64,
}

/// Makes a signed admin token for `mesh_id` and prints it.
pub fn make_token(args: &TokenArgs) -> anyhow::Result<String> {
    let identity = read_private_key(&args.key.join(KEY_FILE))?;
    let pem = std::fs::read_to_string(&args.cert)
        .with_context(|| format!("reading {}", args.cert.display()))?;
    let cert_der = cert_from_pem(&pem)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("system clock is before 1970")?
        .as_secs() as i64;
    let token = AdminToken::sign(&identity, cert_der, &args.mesh_id, now, args.ttl_s)?;
    Ok(token.encode()?)
}

/// Prints a token for `Authorization: Bearer <token>`.
pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    println!("{}", make_token(&args)?);
    Ok(())
}
