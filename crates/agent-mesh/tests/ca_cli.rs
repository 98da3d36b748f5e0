//! `agent-mesh keygen` and `agent-mesh ca` run as processes: the CA round-trips
//! on disk, and each kind of bad certificate is refused with its own message.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

fn agent_mesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agent-mesh"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = agent_mesh(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = agent_mesh(args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    [base, extra].concat()
}

fn now_unix_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn keygen_writes_a_private_key_and_the_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node");
    let stdout = ok(&["keygen", "--out", s(&node)]);
    let id = std::fs::read_to_string(node.join("node.id")).unwrap();
    assert!(
        id.trim().starts_with("12D3KooW"),
        "an Ed25519 libp2p peer id: {id}"
    );
    assert!(stdout.contains(id.trim()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(node.join("node.key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(fails(&["keygen", "--out", s(&node)]).contains("already exists"));
}

#[test]
fn ca_round_trip_on_disk_with_each_rejection() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, node, other) = (
        dir.path().join("ca"),
        dir.path().join("node"),
        dir.path().join("other"),
    );
    let cert = dir.path().join("node.cert.pem");
    ok(&["keygen", "--out", s(&node)]);
    ok(&["keygen", "--out", s(&other)]);
    assert!(ok(&["ca", "init", "--out", s(&ca), "--name", "test CA"]).contains("pin"));
    ok(&[
        "ca",
        "issue",
        "--ca",
        s(&ca),
        "--node",
        s(&node),
        "--roles",
        "trainer,observer",
        "--days",
        "30",
        "--out",
        s(&cert),
    ]);

    let verify = ["ca", "verify", "--ca", s(&ca), "--cert", s(&cert)];
    assert!(ok(&with(
        &verify,
        &["--node", s(&node), "--action", "submit-update"]
    ))
    .contains("trainer,observer"));
    assert!(fails(&with(&verify, &["--action", "submit-job"])).contains("admin"));
    assert!(fails(&with(&verify, &["--node", s(&other)])).contains("certificate key belongs to"));
    let later = (now_unix_s() + 40 * 86_400).to_string();
    assert!(fails(&with(&verify, &["--at", &later])).contains("expired"));
    assert!(fails(&with(&verify, &["--at", "1000"])).contains("not valid before"));
    assert!(
        fails(&with(&verify, &["--pin", &"00".repeat(32)])).contains("does not match the pinned")
    );

    let ca2 = dir.path().join("ca2");
    ok(&["ca", "init", "--out", s(&ca2), "--name", "test CA"]);
    assert!(
        fails(&["ca", "verify", "--ca", s(&ca2), "--cert", s(&cert)])
            .contains("not issued by this mesh CA")
    );

    let renewed = dir.path().join("renewed.pem");
    ok(&[
        "ca",
        "renew",
        "--ca",
        s(&ca),
        "--cert",
        s(&cert),
        "--days",
        "60",
        "--out",
        s(&renewed),
    ]);
    let listing = ok(&["ca", "list", "--ca", s(&ca)]);
    assert_eq!(listing.matches("valid").count(), 2, "{listing}");

    assert!(ok(&[
        "ca",
        "revoke",
        "--ca",
        s(&ca),
        "--cert",
        s(&cert),
        "--reason",
        "key leaked"
    ])
    .contains("key leaked"));
    assert!(fails(&verify).contains("revoked"));
    ok(&[
        "ca",
        "verify",
        "--ca",
        s(&ca),
        "--cert",
        s(&renewed),
        "--node",
        s(&node),
    ]);
    let listing = ok(&["ca", "list", "--ca", s(&ca)]);
    assert!(listing.contains("revoked (key leaked)"), "{listing}");
}

#[cfg(unix)]
#[test]
fn a_readable_ca_key_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (ca, node) = (dir.path().join("ca"), dir.path().join("node"));
    ok(&["ca", "init", "--out", s(&ca)]);
    ok(&["keygen", "--out", s(&node)]);
    std::fs::set_permissions(
        ca.join("ca.key.pem"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = dir.path().join("c.pem");
    let err = fails(&[
        "ca",
        "issue",
        "--ca",
        s(&ca),
        "--node",
        s(&node),
        "--roles",
        "trainer",
        "--out",
        s(&out),
    ]);
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn bench_secagg_prints_a_row_per_configuration() {
    let stdout = ok(&["bench", "secagg", "--n", "5,12", "--d", "100"]);
    for needle in ["bytes/client", "x plain f32", "| 5 ", "| 12 "] {
        assert!(stdout.contains(needle), "{needle} missing from\n{stdout}");
    }
}
