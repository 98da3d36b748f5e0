//! `agent-mesh keygen --out DIR`: create a node's Ed25519 identity on disk.
//!
//! Writes `node.key.pem` (PKCS#8, mode 0600), `node.pub.pem` (SPKI, for the CA)
//! and `node.id` (the node id, which is the node's libp2p peer id).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use mesh_security::identity::public_key_to_pem;
use mesh_security::keyfile::write_private_key;
use mesh_security::NodeIdentity;

/// File name of a node's private key inside its key directory.
pub const KEY_FILE: &str = "node.key.pem";
/// File name of a node's public key inside its key directory.
pub const PUBLIC_KEY_FILE: &str = "node.pub.pem";
/// File name of a node's id inside its key directory.
pub const NODE_ID_FILE: &str = "node.id";

/// Flags of `agent-mesh keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Directory to write the key files into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Creates a fresh identity in `args.out`, refusing to overwrite one.
pub fn run(args: KeygenArgs) -> anyhow::Result<()> {
    let identity = NodeIdentity::generate();
    write_identity(&args.out, &identity)?;
    println!("node id: {}", identity.node_id());
    println!(
        "private key: {} (mode 0600)",
        args.out.join(KEY_FILE).display()
    );
    Ok(())
}

/// Writes the three key files of `identity` into `dir`.
pub fn write_identity(dir: &Path, identity: &NodeIdentity) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_private_key(&dir.join(KEY_FILE), identity)?;
    write_public_parts(dir, identity)
}

/// Writes the public key and node id files of `identity` into `dir`.
pub fn write_public_parts(dir: &Path, identity: &NodeIdentity) -> anyhow::Result<()> {
    let public = public_key_to_pem(&identity.verifying_key())?;
    let public_path = dir.join(PUBLIC_KEY_FILE);
    fs::write(&public_path, public)
        .with_context(|| format!("writing {}", public_path.display()))?;
    let id_path = dir.join(NODE_ID_FILE);
    fs::write(&id_path, format!("{}\n", identity.node_id()))
        .with_context(|| format!("writing {}", id_path.display()))?;
    Ok(())
}
