//! `agent-mesh ca`: operate the mesh certificate authority on disk.
//!
//! A CA directory holds `ca.key.pem` (mode 0600), `ca.cert.pem`, `ca.pin`
//! (SHA-256 of the CA certificate, what nodes pin in their config),
//! `issued/<serial>.pem` (every certificate issued) and `revocations.jsonl`
//! (one CA-signed revocation entry per line, the form the consensus log
//! replicates). The work is done by `mesh_security::ca`; this is file glue.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use comfy_table::Table;
use mesh_security::ca::{
    ca_pin, cert_from_pem, CertError, CertInfo, CertVerifier, MeshCa, RevocationEntry,
    RevocationList, SignedRevocation,
};
use mesh_security::identity::public_key_from_pem;
use mesh_security::keyfile::{read_private_key, write_private_key};
use mesh_security::rbac::{authorize, Action, RoleSet};
use mesh_security::NodeIdentity;
use serde::{Deserialize, Serialize};

use super::keygen::PUBLIC_KEY_FILE;

/// The CA's private key file in a CA folder.
pub(crate) const CA_KEY: &str = "ca.key.pem";
/// The CA certificate file in a CA folder.
pub(crate) const CA_CERT: &str = "ca.cert.pem";
/// The CA pin file in a CA folder.
pub(crate) const CA_PIN: &str = "ca.pin";
const ISSUED: &str = "issued";
const REVOCATIONS: &str = "revocations.jsonl";
pub(crate) const DAY_S: i64 = 86_400;
/// Validity of a new CA certificate unless told otherwise, in days (ten years).
pub(crate) const CA_DAYS_DEFAULT: i64 = 3650;

/// Subcommands of `agent-mesh ca`.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a CA: key and self-signed certificate.
    Init(InitArgs),
    /// Issue a certificate binding a node's key, its roles and an expiry.
    Issue(IssueArgs),
    /// Issue a fresh certificate with the same key and roles.
    Renew(RenewArgs),
    /// Revoke a certificate (appends a CA-signed entry to revocations.jsonl).
    Revoke(RevokeArgs),
    /// Verify a certificate: pinned CA, validity, revocation, key, role.
    Verify(VerifyArgs),
    /// List issued certificates and their status.
    List(ListArgs),
    /// Create (or complete) a CA, an admin and node identities in one folder, for a deployment.
    Provision(super::provision::ProvisionArgs),
}

/// Flags of `agent-mesh ca init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory for the CA files (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Name of the CA (certificate common name).
    #[arg(long, default_value = "agent-mesh CA")]
    pub name: String,
    /// Validity of the CA certificate in days.
    #[arg(long, default_value_t = CA_DAYS_DEFAULT)]
    pub days: i64,
}

/// Flags of `agent-mesh ca issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The CA directory.
    #[arg(long, value_name = "DIR")]
    pub ca: PathBuf,
    /// The node's key directory (made by `agent-mesh keygen`); only its public key is read.
    #[arg(long, value_name = "DIR")]
    pub node: PathBuf,
    /// Roles to grant, comma-separated (admin, committee, aggregator, trainer, observer).
    #[arg(long)]
    pub roles: String,
    /// Validity in days.
    #[arg(long, default_value_t = 90)]
    pub days: i64,
    /// Validity in seconds instead of days (short-lived certificates, renewal drills).
    #[arg(long, value_name = "SECONDS", conflicts_with = "days")]
    pub valid_s: Option<i64>,
    /// Where to write the certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// A DNS name or IP address the node's HTTPS API is reached by; repeat
    /// for more. localhost, 127.0.0.1 and ::1 are always included.
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
}

/// Flags of `agent-mesh ca renew`.
#[derive(Debug, Args)]
pub struct RenewArgs {
    /// The CA directory.
    #[arg(long, value_name = "DIR")]
    pub ca: PathBuf,
    /// The certificate to renew (PEM).
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// Validity of the new certificate in days.
    #[arg(long, default_value_t = 90)]
    pub days: i64,
    /// Validity in seconds instead of days.
    #[arg(long, value_name = "SECONDS", conflicts_with = "days")]
    pub valid_s: Option<i64>,
    /// Where to write the new certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Flags of `agent-mesh ca revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The CA directory.
    #[arg(long, value_name = "DIR")]
    pub ca: PathBuf,
    /// The certificate to revoke (PEM).
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// Why (recorded in the entry; "key compromise", "superseded",
    /// "cessation of operation" and "misbehaviour" are also recorded as such
    /// in the mesh state).
    #[arg(long, default_value = "unspecified")]
    pub reason: String,
    /// Also commit the revocation to the mesh through this node's HTTP API,
    /// so that every node refuses the certificate, including nodes that
    /// cannot read this CA's revocations file.
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// Admin token for --api (`agent-mesh token`); also read from AGENT_MESH_TOKEN.
    #[arg(long, env = "AGENT_MESH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Flags of `agent-mesh ca verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The CA directory (its certificate, pin and revocations are used).
    #[arg(long, value_name = "DIR")]
    pub ca: PathBuf,
    /// The certificate to verify (PEM).
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// Pinned CA hash (hex); defaults to the CA directory's ca.pin.
    #[arg(long)]
    pub pin: Option<String>,
    /// Key directory of the peer presenting the certificate: its key must match.
    #[arg(long, value_name = "DIR")]
    pub node: Option<PathBuf>,
    /// Also require the role for this action (e.g. submit-update).
    #[arg(long)]
    pub action: Option<String>,
    /// Verify as of this Unix time instead of now.
    #[arg(long, value_name = "UNIX_S")]
    pub at: Option<i64>,
}

/// Flags of `agent-mesh ca list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The CA directory.
    #[arg(long, value_name = "DIR")]
    pub ca: PathBuf,
    /// Status as of this Unix time instead of now.
    #[arg(long, value_name = "UNIX_S")]
    pub at: Option<i64>,
}

/// Runs a CA subcommand.
pub fn run(cmd: CaCommand) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Init(args) => init(args),
        CaCommand::Issue(args) => issue(args),
        CaCommand::Renew(args) => renew(args),
        CaCommand::Revoke(args) => revoke(args),
        CaCommand::Verify(args) => verify(args),
        CaCommand::List(args) => list(args),
        CaCommand::Provision(args) => super::provision::run(args),
    }
}

fn now_unix_s() -> anyhow::Result<i64> {
    Ok(i64::try_from(
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
    )?)
}

fn random_serial() -> [u8; 16] {
    use rand::RngCore;
    let mut serial = [0u8; 16];
    rand::rng().fill_bytes(&mut serial);
    serial
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn read_cert(path: &Path) -> anyhow::Result<Vec<u8>> {
    cert_from_pem(&read_text(path)?).with_context(|| format!("certificate {}", path.display()))
}

fn load_ca(dir: &Path) -> anyhow::Result<MeshCa> {
    let key = read_private_key(&dir.join(CA_KEY))?;
    Ok(MeshCa::load(key, read_cert(&dir.join(CA_CERT))?)?)
}

fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn init(args: InitArgs) -> anyhow::Result<()> {
    let pin = create_ca(&args.out, &args.name, args.days)?;
    println!("CA {:?} created in {}", args.name, args.out.display());
    println!("pin (sha256 of the CA certificate): {pin}");
    Ok(())
}

/// Creates a CA named `name`, valid `days` days, in `out`; returns its pin (hex).
pub(crate) fn create_ca(out: &Path, name: &str, days: i64) -> anyhow::Result<String> {
    anyhow::ensure!(days >= 1, "--days must be at least 1");
    fs::create_dir_all(out.join(ISSUED)).with_context(|| format!("creating {}", out.display()))?;
    let now = now_unix_s()?;
    let ca = MeshCa::init(
        NodeIdentity::generate(),
        name,
        now - 60,
        now + days * DAY_S,
        random_serial(),
    )?;
    write_private_key(&out.join(CA_KEY), ca.identity())?;
    write_new(
        &out.join(CA_CERT),
        &mesh_security::ca::cert_to_pem(ca.cert_der())?,
    )?;
    let pin = hex::encode(ca_pin(ca.cert_der()));
    write_new(&out.join(CA_PIN), &format!("{pin}\n"))?;
    Ok(pin)
}

fn record_issued(ca_dir: &Path, serial: &[u8], pem: &str, out: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(ca_dir.join(ISSUED))?;
    write_new(
        &ca_dir
            .join(ISSUED)
            .join(format!("{}.pem", hex::encode(serial))),
        pem,
    )?;
    write_new(out, pem)
}

fn issue(args: IssueArgs) -> anyhow::Result<()> {
    let request = IssueRequest {
        roles: &args.roles,
        valid_s: validity_s(args.days, args.valid_s)?,
        hosts: &args.hosts,
    };
    let info = issue_cert(&args.ca, &args.node, &request, &args.out)?;
    println!(
        "issued {} to {} with roles [{}], valid until Unix time {}",
        hex::encode(&info.serial),
        info.node_id,
        info.roles,
        info.not_after_unix_s
    );
    Ok(())
}

/// `--valid-s` when given, else `--days`, in seconds; at least one second.
fn validity_s(days: i64, valid_s: Option<i64>) -> anyhow::Result<i64> {
    let seconds = match valid_s {
        Some(s) => s,
        None => {
            anyhow::ensure!(days >= 1, "--days must be at least 1");
            days.saturating_mul(DAY_S)
        }
    };
    anyhow::ensure!(seconds >= 1, "--valid-s must be at least 1");
    Ok(seconds)
}

/// What a new certificate grants.
pub(crate) struct IssueRequest<'a> {
    /// Roles, comma-separated.
    pub roles: &'a str,
    /// Validity in seconds from now.
    pub valid_s: i64,
    /// Host names for HTTPS beyond the loopback ones.
    pub hosts: &'a [String],
}

/// Issues the CA in `ca_dir` a certificate for the key in `node_dir` as
/// `request` says, written to `out`.
pub(crate) fn issue_cert(
    ca_dir: &Path,
    node_dir: &Path,
    request: &IssueRequest<'_>,
    out: &Path,
) -> anyhow::Result<CertInfo> {
    anyhow::ensure!(
        request.valid_s >= 1,
        "a certificate must be valid for a second at least"
    );
    let ca = load_ca(ca_dir)?;
    let roles = RoleSet::parse_list(request.roles)?;
    let node_key = public_key_from_pem(&read_text(&node_dir.join(PUBLIC_KEY_FILE))?)?;
    let now = now_unix_s()?;
    let validity = (now - 60, now.saturating_add(request.valid_s));
    let cert = ca.issue_for_hosts(&node_key, roles, validity, random_serial(), request.hosts)?;
    record_issued(ca_dir, &cert.serial, &cert.pem, out)?;
    Ok(CertInfo::parse(&cert.der)?)
}

fn renew(args: RenewArgs) -> anyhow::Result<()> {
    let valid_s = validity_s(args.days, args.valid_s)?;
    let ca = load_ca(&args.ca)?;
    let old = read_cert(&args.cert)?;
    let now = now_unix_s()?;
    let not_after = now.saturating_add(valid_s);
    let cert = ca.renew(&old, now - 60, not_after, random_serial())?;
    record_issued(&args.ca, &cert.serial, &cert.pem, &args.out)?;
    println!(
        "renewed as {}, valid until Unix time {not_after}",
        hex::encode(&cert.serial)
    );
    Ok(())
}

/// One line of revocations.jsonl: readable fields plus the signed entry.
#[derive(Debug, Serialize, Deserialize)]
struct RevocationLine {
    serial: String,
    node_id: String,
    revoked_at_unix_s: i64,
    reason: String,
    /// Hex of the postcard-encoded SignedRevocation (authoritative).
    signed: String,
}

fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    let ca = load_ca(&args.ca)?;
    let info = CertInfo::parse(&read_cert(&args.cert)?)?;
    let entry = RevocationEntry {
        serial: info.serial,
        node_id: info.node_id,
        revoked_at_unix_s: now_unix_s()?,
        reason: args.reason,
    };
    let signed = SignedRevocation::sign(ca.identity(), entry)?;
    let line = RevocationLine {
        serial: hex::encode(&signed.entry.serial),
        node_id: signed.entry.node_id.to_string(),
        revoked_at_unix_s: signed.entry.revoked_at_unix_s,
        reason: signed.entry.reason.clone(),
        signed: hex::encode(signed.to_bytes()?),
    };
    let text = serde_json::to_string(&line)?;
    let path = args.ca.join(REVOCATIONS);
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{text}").with_context(|| format!("writing {}", path.display()))?;
    println!("{text}");
    match args.api {
        Some(api) => publish_revocation(api, &args.ca, args.token, line.signed),
        None => Ok(()),
    }
}

/// Commits a signed revocation to the mesh through a node's API, whose
/// HTTPS certificate the same CA (`ca_dir`) signed.
fn publish_revocation(
    api: String,
    ca_dir: &Path,
    token: Option<String>,
    signed: String,
) -> anyhow::Result<()> {
    let Some(token) = token else {
        bail!("--api needs an admin token: --token or AGENT_MESH_TOKEN (make one with `agent-mesh token`)");
    };
    let api = super::job::ApiArgs {
        api,
        token,
        timeout_s: 30,
        tls: super::api_client::TlsArgs {
            ca: Some(ca_dir.to_path_buf()),
            client_cert: None,
        },
    };
    let body = serde_json::json!({ "signed": signed });
    let commit = super::job::json(&api, reqwest::Method::POST, "/v1/revocations", Some(body))
        .context("the revocation is in the CA's file but was not committed to the mesh")?;
    eprintln!(
        "committed to the mesh at index {}",
        commit["index"].as_u64().unwrap_or_default()
    );
    Ok(())
}

fn load_revocations(ca_dir: &Path, verifier: &CertVerifier) -> anyhow::Result<RevocationList> {
    let mut list = RevocationList::new();
    let path = ca_dir.join(REVOCATIONS);
    if !path.exists() {
        return Ok(list);
    }
    for signed in mesh_node::runtime::credentials::read_revocations(&path, verifier)? {
        list.insert(&signed, verifier.ca_key())
            .with_context(|| format!("{}", path.display()))?;
    }
    Ok(list)
}

fn parse_pin(text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(text.trim()).context("pin is not hex")?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("pin must be 32 bytes (64 hex digits)"))
}

fn parse_action(name: &str) -> anyhow::Result<Action> {
    let wanted = name.replace(['-', '_'], "").to_lowercase();
    match Action::ALL
        .into_iter()
        .find(|a| format!("{a:?}").to_lowercase() == wanted)
    {
        Some(action) => Ok(action),
        None => bail!("unknown action {name:?}; one of {:?}", Action::ALL),
    }
}

fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let pin = match &args.pin {
        Some(pin) => parse_pin(pin)?,
        None => parse_pin(&read_text(&args.ca.join(CA_PIN))?)?,
    };
    let verifier = CertVerifier::new(read_cert(&args.ca.join(CA_CERT))?, &pin)?;
    let revocations = load_revocations(&args.ca, &verifier)?;
    let peer_key = match &args.node {
        Some(dir) => Some(public_key_from_pem(&read_text(
            &dir.join(PUBLIC_KEY_FILE),
        )?)?),
        None => None,
    };
    let at = match args.at {
        Some(at) => at,
        None => now_unix_s()?,
    };
    let cert = verifier.verify(&read_cert(&args.cert)?, peer_key.as_ref(), at, &revocations)?;
    if let Some(action) = &args.action {
        authorize(&cert, parse_action(action)?)?;
    }
    println!(
        "ok: {} roles [{}] valid until {}",
        cert.info.node_id, cert.info.roles, cert.info.not_after_unix_s
    );
    Ok(())
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let verifier = CertVerifier::new(
        read_cert(&args.ca.join(CA_CERT))?,
        &parse_pin(&read_text(&args.ca.join(CA_PIN))?)?,
    )?;
    let revocations = load_revocations(&args.ca, &verifier)?;
    let at = match args.at {
        Some(at) => at,
        None => now_unix_s()?,
    };
    let mut paths: Vec<PathBuf> = fs::read_dir(args.ca.join(ISSUED))
        .with_context(|| format!("reading {}", args.ca.join(ISSUED).display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pem"))
        .collect();
    paths.sort();
    let mut table = Table::new();
    table.set_header(["serial", "node id", "roles", "not after (unix s)", "status"]);
    for path in paths {
        let der = read_cert(&path)?;
        let info = CertInfo::parse(&der)?;
        let status = match verifier.verify(&der, None, at, &revocations) {
            Ok(_) => "valid".to_string(),
            Err(CertError::Expired { .. }) => "expired".to_string(),
            Err(CertError::NotYetValid { .. }) => "not yet valid".to_string(),
            Err(CertError::Revoked { reason, .. }) => format!("revoked ({reason})"),
            Err(e) => format!("invalid: {e}"),
        };
        table.add_row([
            hex::encode(&info.serial),
            info.node_id.to_string(),
            info.roles.to_string(),
            info.not_after_unix_s.to_string(),
            status,
        ]);
    }
    println!("{table}");
    Ok(())
}
