//! `agent-mesh ca provision`: a CA, an admin and every node's identity in one
//! folder, in one idempotent step, for deployments (a Compose one-shot
//! service, a Kubernetes issuing Job, an operator preparing Swarm secrets).
//!
//! ```text
//! OUT/ca/      ca.key.pem (0600), ca.cert.pem, ca.pin     (kept if present)
//! OUT/admin/   node.key.pem, node.cert.pem                (roles admin,observer)
//! OUT/NAME/    node.key.pem, node.pub.pem, node.id, node.cert.pem
//! ```
//!
//! Whatever exists is kept: running it again after adding `--node` names
//! issues only the new identities, and a node's key never changes under it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use mesh_security::NodeIdentity;

use super::ca::{create_ca, issue_cert, IssueRequest, CA_CERT, CA_DAYS_DEFAULT};
use super::keygen::{write_identity, write_public_parts, KEY_FILE, NODE_ID_FILE, PUBLIC_KEY_FILE};
use mesh_security::keyfile::read_private_key;

/// File name of a member's certificate inside its folder.
pub const CERT_FILE: &str = "node.cert.pem";
/// Roles of the admin identity.
const ADMIN_ROLES: &str = "admin,observer";
/// Longest member name.
const NAME_LEN_MAX: usize = 63;

/// Flags of `agent-mesh ca provision`.
#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Folder for the CA, the admin and one sub-folder per node (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The mesh id; names the CA ("agent-mesh ID CA").
    #[arg(long, default_value = "mesh")]
    pub mesh_id: String,
    /// Nodes named node-1 .. node-N.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub nodes: usize,
    /// A node by name (letters, digits, '.', '_', '-'); repeat for more.
    #[arg(long = "node", value_name = "NAME")]
    pub names: Vec<String>,
    /// Roles of the nodes' certificates (comma-separated).
    #[arg(long, default_value = "committee,aggregator,trainer,observer")]
    pub roles: String,
    /// Validity of each certificate issued now, in days.
    #[arg(long, default_value_t = 90)]
    pub days: i64,
    /// A DNS name or IP address every node's HTTPS API is also reached by
    /// (a load balancer, say); repeat for more. Each node's certificate
    /// names the node itself and localhost, 127.0.0.1 and ::1 too.
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
}

/// Most nodes one call provisions.
pub const NODES_MAX: usize = 10_000;

/// Provisions everything `args` names that does not exist yet.
pub fn run(args: ProvisionArgs) -> anyhow::Result<()> {
    let names = member_names(&args)?;
    let ca_dir = args.out.join("ca");
    if ca_dir.join(CA_CERT).exists() {
        println!("CA kept: {}", ca_dir.display());
    } else {
        let name = format!("agent-mesh {} CA", args.mesh_id);
        let pin = create_ca(&ca_dir, &name, CA_DAYS_DEFAULT)?;
        println!("CA created: {} (pin {pin})", ca_dir.display());
    }
    anyhow::ensure!(args.days >= 1, "--days must be at least 1");
    let valid_s = args.days.saturating_mul(super::ca::DAY_S);
    let admin = IssueRequest {
        roles: ADMIN_ROLES,
        valid_s,
        hosts: &[],
    };
    provision_member(&ca_dir, &args.out.join("admin"), &admin)?;
    for name in &names {
        let mut hosts = vec![name.clone()];
        hosts.extend(args.hosts.iter().cloned());
        let node = IssueRequest {
            roles: &args.roles,
            valid_s,
            hosts: &hosts,
        };
        provision_member(&ca_dir, &args.out.join(name), &node)?;
    }
    Ok(())
}

/// The node names `args` asks for: node-1..node-N, then each `--node`.
fn member_names(args: &ProvisionArgs) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(
        args.nodes + args.names.len() <= NODES_MAX,
        "at most {NODES_MAX} nodes per call"
    );
    let mut names: Vec<String> = (1..=args.nodes).map(|i| format!("node-{i}")).collect();
    for name in &args.names {
        check_name(name)?;
        anyhow::ensure!(!names.contains(name), "node {name:?} is named twice");
        names.push(name.clone());
    }
    anyhow::ensure!(
        !names.is_empty(),
        "name the nodes: --nodes N or --node NAME"
    );
    Ok(names)
}

/// A name that is one plain folder, not the CA's or the admin's.
fn check_name(name: &str) -> anyhow::Result<()> {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    anyhow::ensure!(
        plain && !name.is_empty() && name.len() <= NAME_LEN_MAX && !name.starts_with('.'),
        "node name {name:?}: use 1-{NAME_LEN_MAX} letters, digits, '.', '_' or '-', not starting with '.'"
    );
    anyhow::ensure!(
        name != "ca" && name != "admin",
        "node name {name:?} is the CA's or the admin's folder"
    );
    Ok(())
}

/// Gives the member in `dir` a key and a certificate, each only if missing.
fn provision_member(ca_dir: &Path, dir: &Path, request: &IssueRequest<'_>) -> anyhow::Result<()> {
    let key_created = !dir.join(KEY_FILE).exists();
    if key_created {
        write_identity(dir, &NodeIdentity::generate())?;
    } else if !dir.join(NODE_ID_FILE).exists() || !dir.join(PUBLIC_KEY_FILE).exists() {
        // A key kept on its own (restored from a secret store): its public
        // parts follow from it.
        write_public_parts(dir, &read_private_key(&dir.join(KEY_FILE))?)?;
    }
    let cert = dir.join(CERT_FILE);
    let cert_created = !cert.exists();
    if cert_created {
        issue_cert(ca_dir, dir, request, &cert)?;
    }
    let id_path = dir.join(NODE_ID_FILE);
    let node_id = std::fs::read_to_string(&id_path)
        .with_context(|| format!("reading {}", id_path.display()))?;
    let what = match (key_created, cert_created) {
        (true, _) => "created",
        (false, true) => "certificate issued",
        (false, false) => "kept",
    };
    println!("{}: {what} ({})", dir.display(), node_id.trim());
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(out: &Path, nodes: usize, names: &[&str]) -> ProvisionArgs {
        ProvisionArgs {
            out: out.to_path_buf(),
            mesh_id: "t".into(),
            nodes,
            names: names.iter().map(|n| n.to_string()).collect(),
            roles: "committee,trainer".into(),
            days: 1,
            hosts: vec!["mesh.example".into()],
        }
    }

    #[test]
    fn a_second_run_keeps_every_key_and_adds_only_new_nodes() {
        let dir = tempfile::tempdir().unwrap();
        run(args(dir.path(), 2, &[])).unwrap();
        let key = std::fs::read(dir.path().join("node-1").join(KEY_FILE)).unwrap();
        let ca = std::fs::read(dir.path().join("ca").join(CA_CERT)).unwrap();
        run(args(dir.path(), 2, &["extra"])).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("node-1").join(KEY_FILE)).unwrap(),
            key
        );
        assert_eq!(
            std::fs::read(dir.path().join("ca").join(CA_CERT)).unwrap(),
            ca
        );
        for member in ["admin", "node-1", "node-2", "extra"] {
            assert!(dir.path().join(member).join(CERT_FILE).exists(), "{member}");
        }
    }

    #[test]
    fn a_node_certificate_names_the_node_the_extra_hosts_and_loopback() {
        let dir = tempfile::tempdir().unwrap();
        run(args(dir.path(), 1, &[])).unwrap();
        let pem = std::fs::read_to_string(dir.path().join("node-1").join(CERT_FILE)).unwrap();
        let der = mesh_security::ca::cert_from_pem(&pem).unwrap();
        let hosts = mesh_security::ca::CertInfo::parse(&der).unwrap().hosts;
        for host in ["node-1", "mesh.example", "localhost", "127.0.0.1", "::1"] {
            assert!(hosts.iter().any(|h| h == host), "{host} in {hosts:?}");
        }
    }

    #[test]
    fn a_key_kept_alone_gets_its_public_parts_back_and_keeps_its_identity() {
        let dir = tempfile::tempdir().unwrap();
        run(args(dir.path(), 1, &[])).unwrap();
        let member = dir.path().join("node-1");
        let id = std::fs::read_to_string(member.join(NODE_ID_FILE)).unwrap();
        for file in [NODE_ID_FILE, PUBLIC_KEY_FILE, CERT_FILE] {
            std::fs::remove_file(member.join(file)).unwrap();
        }
        run(args(dir.path(), 1, &[])).unwrap();
        assert_eq!(
            std::fs::read_to_string(member.join(NODE_ID_FILE)).unwrap(),
            id
        );
        assert!(member.join(CERT_FILE).exists());
    }

    #[test]
    fn names_that_escape_the_folder_or_collide_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../x", "a/b", "ca", "admin", ".hidden", ""] {
            let err = member_names(&args(dir.path(), 0, &[bad])).unwrap_err();
            assert!(err.to_string().contains("node name"), "{bad}: {err}");
        }
        assert!(member_names(&args(dir.path(), 1, &["node-1"])).is_err());
        assert!(member_names(&args(dir.path(), 0, &[])).is_err());
    }
}
