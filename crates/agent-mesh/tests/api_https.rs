//! The API over HTTPS and certificates renewed in place, on real node
//! processes: `scripts/deploy.sh` serves HTTPS that only the mesh CA
//! verifies (curl without it fails, `agent-mesh status --ca` works and shows
//! the zone), the CLI refuses to send a token over plain HTTP off loopback,
//! mutual TLS admits only mesh certificates, and a node whose certificate is
//! renewed keeps its connections, its job and its process, also after the
//! old certificate expired.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::mesh::{
    bin, http, job_view, mnist_dir, run_ok, skip_unless_ci, start_node, submit_job, wait_for, Mesh,
};

/// curl's exit code for a certificate it cannot verify.
const CURL_BAD_CERTIFICATE: i32 = 60;

fn curl_present() -> bool {
    Command::new("curl").arg("--version").output().is_ok()
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn deploy_script_serves_https_that_only_the_mesh_ca_verifies() {
    if !curl_present() {
        return skip_unless_ci("curl is not installed");
    }
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/deploy.sh");
    let base_port = (20_000 + std::process::id() % 20_000).to_string();
    let deploy = |args: &[&str]| {
        Command::new("bash")
            .arg(script)
            .args(args)
            .env("AGENT_MESH_BIN", bin())
            .env("AGENT_MESH_DEPLOY_DIR", dir.path())
            .env("AGENT_MESH_BASE_PORT", &base_port)
            .env("AGENT_MESH_WAIT_S", "90")
            .output()
            .unwrap()
    };
    let out = deploy(&["development", "3"]);
    let checked = std::panic::catch_unwind(|| check_deployed(dir.path(), &out));
    let stopped = deploy(&["stop"]);
    let urls = checked.unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert!(stopped.status.success(), "stop: {}", text(&stopped));
    assert!(!dir.path().join("pids").exists(), "stop forgets the PIDs");
    for url in urls {
        let out = curl(&["--insecure", &format!("{url}/healthz")]);
        assert!(!out.status.success(), "{url} still answers after stop");
    }
}

/// Checks the running development mesh; returns its API URLs.
fn check_deployed(dir: &Path, out: &Output) -> Vec<String> {
    assert!(out.status.success(), "{}", text(out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let urls: Vec<String> = stdout
        .lines()
        .filter_map(|l| {
            l.split_once(": https://")
                .map(|(_, rest)| format!("https://{rest}"))
        })
        .collect();
    assert_eq!(urls.len(), 3, "one https URL per node:\n{stdout}");
    let ca = dir.join("ca");
    let ca_cert = ca.join("ca.cert.pem");
    for url in &urls {
        let status = format!("{url}/v1/status");
        let refused = curl(&[&status]);
        assert_eq!(
            refused.status.code(),
            Some(CURL_BAD_CERTIFICATE),
            "curl without the CA must fail verification: {}",
            text(&refused)
        );
        let verified = curl(&["--cacert", ca_cert.to_str().unwrap(), &status]);
        assert!(verified.status.success(), "{}", text(&verified));
        assert!(
            text(&verified).contains("\"zone\":\"dev-"),
            "{}",
            text(&verified)
        );
        let shown = run_ok(&["status", "--api", url, "--ca", ca.to_str().unwrap()]);
        assert!(shown.contains("zone      dev-"), "{shown}");
    }
    // The committee records each member's zone, one zone per voter here.
    let consensus = format!("{}/v1/consensus", urls[0]);
    let zones = wait_for(
        "the committee to record three zones",
        Duration::from_secs(60),
        || {
            let out = curl(&["--cacert", ca_cert.to_str().unwrap(), &consensus]);
            let view: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let zones = view["member_zones"].as_object()?.clone();
            (zones.len() == 3).then_some(zones)
        },
    );
    let distinct: std::collections::BTreeSet<&str> =
        zones.values().filter_map(|z| z.as_str()).collect();
    assert_eq!(distinct.len(), 3, "{zones:?}");
    // Plain HTTP to an HTTPS port gets nowhere.
    let plain = urls[0].replacen("https://", "http://", 1);
    assert!(http("GET", &format!("{plain}/healthz"), None, "").is_none_or(|(s, _)| s != 200));
    urls
}

#[test]
fn the_cli_sends_no_token_over_plain_http_off_loopback() {
    // 192.0.2.1 (TEST-NET-1) is never dialled: the client refuses first.
    let out = Command::new(bin())
        .args([
            "job",
            "list",
            "--api",
            "http://192.0.2.1:8080",
            "--token",
            "t",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("refusing to send a token over plain HTTP"),
        "{}",
        text(&out)
    );
    let out = Command::new(bin())
        .args(["status", "--api", "https://127.0.0.1:9"])
        .env_remove("AGENT_MESH_CA")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("--ca"), "{}", text(&out));
}

/// The server certificate's expiry as curl prints it (`expire date: ...`).
fn served_expiry(url: &str, ca_cert: &Path, client: &Path) -> Option<String> {
    let out = curl(&[
        "--verbose",
        "--cacert",
        ca_cert.to_str().unwrap(),
        "--cert",
        client.join("node.cert.pem").to_str().unwrap(),
        "--key",
        client.join("node.key.pem").to_str().unwrap(),
        &format!("{url}/healthz"),
    ]);
    let all = text(&out);
    out.status.success().then_some(())?;
    all.lines().find_map(|l| {
        l.split_once("expire date: ")
            .map(|(_, d)| d.trim().to_string())
    })
}

/// Re-issues `node`'s certificate for `valid_s` seconds (in place, as an
/// operator's renewal job would: a new file renamed over the old one).
fn renew(mesh: &Mesh, node: &Path, valid_s: &str) {
    let fresh = node.join("node.cert.pem.new");
    let _ = std::fs::remove_file(&fresh);
    run_ok(&[
        "ca",
        "renew",
        "--ca",
        mesh.ca().to_str().unwrap(),
        "--cert",
        node.join("node.cert.pem").to_str().unwrap(),
        "--valid-s",
        valid_s,
        "--out",
        fresh.to_str().unwrap(),
    ]);
    std::fs::rename(&fresh, node.join("node.cert.pem")).unwrap();
}

fn hangup(pid: u32) {
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn mutual_tls_admits_only_mesh_certificates_and_a_renewal_is_served_at_once() {
    if !curl_present() {
        return skip_unless_ci("curl is not installed");
    }
    let mut mesh = Mesh::new(1);
    let dir = mesh.nodes[0].dir.clone();
    let config = std::fs::read_to_string(dir.join("node.toml")).unwrap();
    let config = config.replace("plain = true", "client_certs = \"required\"");
    std::fs::write(dir.join("node.toml"), config).unwrap();
    start_node(&mut mesh.nodes[0], None, &[]);
    let url = mesh.nodes[0].http_url.clone();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = mesh.ca();
    let ca_cert = ca.join("ca.cert.pem");
    let admin = mesh.root.path().join("admin");

    let anonymous = curl(&[
        "--cacert",
        ca_cert.to_str().unwrap(),
        &format!("{url}/healthz"),
    ]);
    assert!(
        !anonymous.status.success(),
        "no client certificate: {}",
        text(&anonymous)
    );
    let health = |client: Option<&Path>| {
        let mut command = Command::new(bin());
        command.args(["health", "--api", &url, "--ca", ca.to_str().unwrap()]);
        if let Some(client) = client {
            command.args(["--client-cert", client.to_str().unwrap()]);
        }
        command.output().unwrap()
    };
    assert!(!health(None).status.success());
    let admitted = health(Some(&admin));
    assert!(admitted.status.success(), "{}", text(&admitted));

    let before = wait_for("the served certificate", Duration::from_secs(20), || {
        served_expiry(&url, &ca_cert, &admin)
    });
    renew(&mesh, &dir, "200000");
    hangup(mesh.nodes[0].pid().unwrap());
    let after = wait_for(
        "the renewed certificate to be served",
        Duration::from_secs(30),
        || served_expiry(&url, &ca_cert, &admin).filter(|e| *e != before),
    );
    assert_ne!(before, after);
    assert!(mesh.nodes[0].is_running(), "renewal without a restart");
}

const JOB: &str = "renewed";

fn submit_long_job(mesh: &Mesh, token: &str) {
    let spec = serde_json::json!({
        "job": JOB,
        "spec": {
            "model": "mlp", "rounds": 200, "participants_per_round": 3,
            "rule_name": "fedavg", "byzantine_count": 0, "secagg": false, "dp_budget": null,
            "training": {
                "dataset": "mnist", "epochs": 1, "batch_size": 64, "learning_rate": 0.1,
                "seed": 3, "round_deadline_ms": 30000, "group_size": 3, "clip_norm": 20.0,
                "noise_multiplier": 0.0, "sampling_rate": 1.0
            }
        }
    });
    submit_job(&mesh.nodes[0].http_url, token, &spec);
}

/// True when a round that started after `after_ms` committed with `peer` in it.
fn trained_after(view: &serde_json::Value, peer: &str, after_ms: u64) -> bool {
    let deadline_ms = 30_000;
    let rounds = view["detail"]["rounds"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    rounds.iter().any(|r| {
        let started = r["deadline_unix_ms"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(deadline_ms);
        let completed = !r["completion"].is_null();
        let member = r["participants"]
            .as_array()
            .is_some_and(|p| p.iter().any(|n| n.as_str() == Some(peer)));
        started > after_ms && completed && member
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_renewed_certificate_keeps_the_node_admitted_past_the_old_expiry_without_a_restart() {
    const RENEWED: usize = 2;
    // Time enough for the mesh and its first round (3-4 s on 2 cores), and
    // the test's length: it waits past this expiry.
    const FIRST_VALID_S: u64 = 25;
    let mut mesh = Mesh::new(3);
    let dir = mesh.nodes[RENEWED].dir.clone();
    let issued_ms = now_ms();
    renew(&mesh, &dir, &FIRST_VALID_S.to_string());
    let expiry_ms = issued_ms + FIRST_VALID_S * 1_000 + 1_000;
    let data = mnist_dir();
    let mut boot = None::<String>;
    for i in 0..3 {
        let shard = format!("{i}/3");
        let env = [
            ("AGENT_MESH_DATA", data.as_str()),
            ("AGENT_MESH_DATA_SHARD", shard.as_str()),
        ];
        start_node(&mut mesh.nodes[i], boot.as_deref(), &env);
        boot.get_or_insert_with(|| mesh.nodes[0].listen[0].clone());
    }
    mesh.wait_full_mesh();
    assert!(
        now_ms() < expiry_ms,
        "the mesh formed after the first certificate expired"
    );
    let token = mesh.admin_token();
    submit_long_job(&mesh, &token);
    let api = mesh.nodes[0].http_url.clone();
    wait_for("the job's first round", Duration::from_secs(120), || {
        let view = job_view(&api, &token, JOB)?;
        (view["rounds_completed"].as_u64()? >= 1).then_some(())
    });
    let first_round_ms = now_ms();
    eprintln!(
        "first round done {} ms before the first certificate expires",
        expiry_ms.saturating_sub(first_round_ms)
    );
    assert!(
        first_round_ms < expiry_ms,
        "the first round ended after the first certificate expired"
    );

    let pid = mesh.nodes[RENEWED].pid().unwrap();
    renew(&mesh, &dir, "86400");
    hangup(pid);
    let peer = mesh.nodes[RENEWED].peer_id.clone();
    let waited = Duration::from_millis(expiry_ms.saturating_sub(now_ms()) + 120_000);
    wait_for(
        "a round after the old expiry with the renewed node",
        waited,
        || {
            let view = job_view(&api, &token, JOB)?;
            trained_after(&view, &peer, expiry_ms).then_some(())
        },
    );
    for i in [0, 1] {
        assert!(
            mesh.nodes[i].admitted() >= 2,
            "node {i} dropped the renewed node"
        );
    }
    assert!(
        mesh.nodes[RENEWED].is_running(),
        "renewal without a restart"
    );
    assert_eq!(mesh.nodes[RENEWED].pid().unwrap(), pid);
    let view = job_view(&api, &token, JOB).unwrap();
    let running =
        ["RoundRunning", "WaitingForRound"].contains(&view["status"].as_str().unwrap_or(""));
    assert!(running, "the job went on through the renewal: {view}");
    let cancel = format!("{api}/v1/jobs/{JOB}/cancel");
    let (status, body) = http("POST", &cancel, Some(&token), "").unwrap();
    assert_eq!(status, 200, "{body}");
}
