//! The monitoring files in `deploy/monitoring/` against the real thing:
//! `promtool` checks the alert rules and runs their unit tests; a real
//! Prometheus server, configured from `prometheus.yml`, scrapes three
//! `agent-mesh node` processes while they run a short DP training job, and
//! then every query of the Grafana dashboard returns at least one series and
//! every alert rule loads and evaluates without error.
//!
//! Needs `promtool` and `prometheus` (Debian package `prometheus`); without
//! them the tests say `skipped:` and pass, unless `CI` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::mesh::{
    http, skip_unless_ci, start_mnist_mesh_with, wait_for, wait_for_described, Mesh,
};

const NODES: usize = 3;
const JOB: &str = "monitoring";
const ROUNDS: u64 = 2;
/// Bounds each wait for the job, far above its usual half a minute.
const JOB_LIMIT: Duration = Duration::from_secs(240);
/// Bounds the wait for Prometheus to hold data for every query.
const QUERY_LIMIT: Duration = Duration::from_secs(120);
/// What the dashboard's Grafana variables stand for in the queries sent here.
const GRAFANA_VARIABLES: [(&str, &str); 5] = [
    ("$__rate_interval", "30s"),
    ("$__interval", "15s"),
    ("$__range", "5m"),
    ("${instance}", ".*"),
    ("$instance", ".*"),
];

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/monitoring")
}

/// The path of `name` on PATH, or `None` after saying why the test is
/// skipped (a panic when `CI` is set: CI must install the tool).
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let why = format!("{name} not found (Debian: apt-get install prometheus)");
        skip_unless_ci(&why);
    }
    found
}

fn assert_success(what: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The alert names declared in alerts.yml, in file order.
fn alert_names() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring_dir().join("alerts.yml")).unwrap();
    let names: Vec<String> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_string())
        .collect();
    assert!(!names.is_empty(), "no alert in alerts.yml");
    names
}

fn dashboard() -> serde_json::Value {
    let path = monitoring_dir().join("grafana/dashboards/agent-mesh-dashboard.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every panel target's expression, with its panel title, Grafana
/// variables replaced by the values a Grafana would send.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let mut expr = target["expr"].as_str().unwrap().to_string();
            for (variable, value) in GRAFANA_VARIABLES {
                expr = expr.replace(variable, value);
            }
            assert!(!expr.contains('$'), "unknown variable left in {expr}");
            queries.push((panel["title"].as_str().unwrap().to_string(), expr));
        }
    }
    queries
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let dir = monitoring_dir();
    let check = Command::new(&promtool)
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let text = assert_success("promtool check rules", &check);
    let count = alert_names().len();
    assert!(
        text.contains(&format!("SUCCESS: {count} rules found")),
        "{text}"
    );
    let tests = Command::new(&promtool)
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_success("promtool test rules", &tests);
    // Every alert is tested, firing and quiet.
    let test_text = std::fs::read_to_string(dir.join("alerts.test.yml")).unwrap();
    for name in alert_names() {
        let cases: Vec<&str> = test_text
            .split("- eval_time:")
            .filter(|case| case.contains(&format!("alertname: {name}\n")))
            .collect();
        assert!(
            cases.iter().any(|c| c.contains("exp_alerts: []")),
            "{name} has no test where it stays quiet"
        );
        assert!(
            cases.iter().any(|c| c.contains("exp_labels:")),
            "{name} has no test where it fires"
        );
    }
    // The Compose configuration is valid once its rule file is where it says.
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(&config, prometheus_config(&[], 15, None)).unwrap();
    let out = Command::new(&promtool)
        .args(["check", "config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_success("promtool check config", &out);
}

#[test]
fn the_dashboard_and_grafana_provisioning_agree() {
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().unwrap();
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            "Mesh overview",
            "Committee",
            "Rounds and accuracy",
            "Network",
            "Security events"
        ]
    );
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids repeat");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{panel}");
        assert!(!panel["targets"].as_array().unwrap().is_empty(), "{panel}");
    }
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let ds = variables
        .iter()
        .find(|v| v["name"] == "DS_PROMETHEUS")
        .expect("a DS_PROMETHEUS variable");
    assert_eq!(ds["type"], "datasource");
    let provisioning = monitoring_dir().join("grafana/provisioning");
    let datasource =
        std::fs::read_to_string(provisioning.join("datasources/prometheus.yml")).unwrap();
    let uid = ds["current"]["value"].as_str().unwrap();
    assert!(
        datasource.contains(&format!("uid: {uid}\n")),
        "the provisioned data source is not uid {uid}:\n{datasource}"
    );
    let dashboards =
        std::fs::read_to_string(provisioning.join("dashboards/agent-mesh.yml")).unwrap();
    assert!(dashboards.contains("type: file"), "{dashboards}");
}

/// prometheus.yml with its targets replaced by `targets` (left as they
/// are when empty), its intervals set to `interval_s`, and its rule file
/// taken from this checkout.
fn prometheus_config(targets: &[String], interval_s: u32, ca_cert: Option<&Path>) -> String {
    let dir = monitoring_dir();
    let mut text = std::fs::read_to_string(dir.join("prometheus.yml")).unwrap();
    let alerts = dir.join("alerts.yml").canonicalize().unwrap();
    let mut replace = |from: &str, to: &str| {
        assert_eq!(text.matches(from).count(), 1, "{from:?} in prometheus.yml");
        text = text.replace(from, to);
    };
    replace(
        "  - /etc/prometheus/alerts.yml",
        &format!("  - {}", alerts.display()),
    );
    replace(
        "scrape_interval: 15s",
        &format!("scrape_interval: {interval_s}s"),
    );
    replace(
        "scrape_timeout: 10s",
        &format!("scrape_timeout: {interval_s}s"),
    );
    replace(
        "evaluation_interval: 15s",
        &format!("evaluation_interval: {interval_s}s"),
    );
    if let Some(ca) = ca_cert {
        replace(
            "ca_file: /etc/agent-mesh/identities/ca/ca.cert.pem",
            &format!("ca_file: {}", ca.display()),
        );
    }
    if !targets.is_empty() {
        let listed: Vec<String> = targets.iter().map(|t| format!("          - {t}")).collect();
        let compose: Vec<String> = (1..=NODES)
            .map(|i| format!("          - node-{i}:8080"))
            .collect();
        replace(&compose.join("\n"), &listed.join("\n"));
    }
    text
}

/// A Prometheus server on loopback, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(binary: &Path, targets: &[String], ca_cert: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, prometheus_config(targets, 1, Some(ca_cert))).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path().join("prometheus.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        wait_for_described(
            Duration::from_secs(60),
            || {
                let (status, _) = http("GET", &format!("{}/-/ready", server.url), None, "")?;
                (status == 200).then_some(())
            },
            || format!("Prometheus to be ready\n{}", server.log_tail()),
        );
        server
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The `data` of a successful API answer to `GET /api/v1/{path}`.
    fn api(&self, path: &str) -> Option<serde_json::Value> {
        let body = get_http10(&self.url, &format!("/api/v1/{path}"))?;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        (json["status"] == "success").then(|| json["data"].clone())
    }

    /// The series an instant query returns (empty on any error).
    fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        self.api(&format!("query?query={}", percent_encode(expr)))
            .and_then(|data| data["result"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The value of the single series `expr` returns, if there is one.
    fn value(&self, expr: &str) -> Option<f64> {
        match self.query(expr).as_slice() {
            [series] => series["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a 200 answer to `GET path` from `base` (`http://host:port`).
/// HTTP/1.0, so that the server sends a large body whole rather than in
/// chunks (the mesh harness's client reads unchunked bodies only).
fn get_http10(base: &str, path: &str) -> Option<String> {
    let host = base.strip_prefix("http://")?;
    let mut stream = TcpStream::connect(host).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?;
    (status == "200").then(|| body.to_string())
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Submits a small DP job with the CLI (which solves the noise for the
/// budget), retrying while the committee is still forming.
fn submit(mesh: &Mesh, token: &str) {
    let api = mesh.nodes[0].http_url.clone();
    let ca = mesh.ca();
    let participants = NODES.to_string();
    let rounds = ROUNDS.to_string();
    let args = [
        "job",
        "submit",
        "--api",
        &api,
        "--ca",
        ca.to_str().unwrap(),
        "--token",
        token,
        "--id",
        JOB,
        "--model",
        "logistic",
        "--rounds",
        &rounds,
        "--participants",
        &participants,
        "--population",
        &participants,
        "--epochs",
        "1",
        "--lr",
        "0.1",
        "--dp-epsilon",
        "8",
        "--deadline-s",
        "120",
    ];
    wait_for("the job to be accepted", Duration::from_secs(120), || {
        let out = Command::new(common::mesh::bin()).args(args).output().ok()?;
        if out.status.success() {
            return Some(());
        }
        eprintln!("submit: {}", String::from_utf8_lossy(&out.stderr));
        None
    });
}

fn wait_completed(mesh: &Mesh, token: &str) -> serde_json::Value {
    let view = || {
        let url = format!("{}/v1/jobs/{JOB}", mesh.nodes[0].http_url);
        let (status, body) = http("GET", &url, Some(token), "")?;
        (status == 200).then(|| serde_json::from_str::<serde_json::Value>(&body).ok())?
    };
    wait_for_described(
        JOB_LIMIT,
        || view().filter(|v| v["status"] == "Completed"),
        || {
            let logs: Vec<String> = mesh.nodes.iter().map(|n| n.log_tail()).collect();
            format!("job {JOB} to complete: {:?}\n{}", view(), logs.join("\n"))
        },
    )
}

/// Polls every query until each returns a series; panics naming the ones
/// that never did.
fn wait_every_query_has_data(prometheus: &Prometheus, queries: &[(String, String)]) {
    let started = Instant::now();
    let mut missing: Vec<&(String, String)> = queries.iter().collect();
    while !missing.is_empty() && started.elapsed() < QUERY_LIMIT {
        missing.retain(|(_, expr)| prometheus.query(expr).is_empty());
        if !missing.is_empty() {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let report: Vec<String> = missing
        .iter()
        .map(|(panel, expr)| format!("{panel}: {expr}"))
        .collect();
    assert!(
        report.is_empty(),
        "{} dashboard queries returned no series after {QUERY_LIMIT:?}:\n{}\n{}",
        report.len(),
        report.join("\n"),
        prometheus.log_tail()
    );
}

/// Waits until Prometheus has evaluated every rule of alerts.yml with no error.
fn wait_rules_healthy(prometheus: &Prometheus) {
    let want: BTreeSet<String> = alert_names().into_iter().collect();
    let last = std::cell::RefCell::new(String::new());
    let healthy = || {
        let data = prometheus.api("rules")?;
        let rules: Vec<&serde_json::Value> = data["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        let loaded: BTreeSet<String> = rules
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect();
        let unhealthy: Vec<String> = rules
            .iter()
            .filter(|r| r["health"] != "ok")
            .map(|r| format!("{} {} {}", r["name"], r["health"], r["lastError"]))
            .collect();
        *last.borrow_mut() = format!("loaded {loaded:?}; unhealthy {unhealthy:?}");
        (loaded == want && unhealthy.is_empty()).then_some(())
    };
    wait_for_described(Duration::from_secs(60), healthy, || {
        format!(
            "every alert rule of alerts.yml to evaluate without error: {}",
            last.borrow()
        )
    });
}

#[test]
fn prometheus_scrapes_a_mesh_and_every_dashboard_query_has_data() {
    let Some(binary) = tool("prometheus") else {
        return;
    };
    let started = Instant::now();
    // The nodes serve HTTPS, as deployed; Prometheus verifies them with the mesh CA.
    let mesh = start_mnist_mesh_with(NODES, &[("AGENT_MESH_HTTP_PLAIN", "false")]);
    let ca_cert = mesh.ca().join("ca.cert.pem");
    let targets: Vec<String> = mesh
        .nodes
        .iter()
        .map(|n| n.http_url.trim_start_matches("https://").to_string())
        .collect();
    let prometheus = Prometheus::start(&binary, &targets, &ca_cert);
    wait_for(
        "Prometheus to scrape every node",
        Duration::from_secs(60),
        || {
            let up = prometheus.value("sum(up{job=\"agent-mesh\"})")?;
            (up == NODES as f64).then_some(())
        },
    );
    let token = mesh.admin_token();
    submit(&mesh, &token);
    let job = wait_completed(&mesh, &token);
    assert_eq!(job["rounds_completed"], ROUNDS, "{job}");
    eprintln!("mesh up and job done in {:?}", started.elapsed());

    // The metrics this directory added moved: readiness, leadership, the
    // job's accuracy and privacy budget (under `mesh_job`, as relabelled),
    // and the blob cache's lookups.
    let checks = [
        ("sum(mesh_node_ready)", NODES as f64),
        ("max(consensus_has_leader)", 1.0),
        (
            &*format!("max(mesh_round_epsilon_budget{{mesh_job=\"{JOB}\"}})"),
            8.0,
        ),
    ];
    for (expr, want) in checks {
        wait_for_described(
            Duration::from_secs(60),
            || (prometheus.value(expr)? == want).then_some(()),
            || format!("{expr} to be {want}: {:?}", prometheus.query(expr)),
        );
    }
    // The last round's accuracy, as the job view reports it, once
    // Prometheus has scraped the state after that round.
    let reported = job["accuracy"].as_f64().unwrap();
    let accuracy_expr = format!("max(mesh_round_accuracy{{mesh_job=\"{JOB}\"}})");
    wait_for_described(
        Duration::from_secs(60),
        || ((prometheus.value(&accuracy_expr)? - reported).abs() < 1e-9).then_some(()),
        || {
            let seen = prometheus.query(&accuracy_expr);
            format!("{accuracy_expr} to be {reported}: {seen:?}")
        },
    );
    let lookups = "sum(mesh_round_cache_hits_total) + sum(mesh_round_cache_misses_total)";
    wait_for(
        "blob cache lookups to be counted",
        Duration::from_secs(60),
        || (prometheus.value(lookups)? > 0.0).then_some(()),
    );

    let dashboard = dashboard();
    let queries = dashboard_queries(&dashboard);
    wait_every_query_has_data(&prometheus, &queries);
    // The node variable lists every node.
    let nodes = prometheus.query("mesh_node_ready");
    assert_eq!(nodes.len(), NODES, "{nodes:?}");

    wait_rules_healthy(&prometheus);
    eprintln!(
        "{} dashboard queries and {} alert rules checked in {:?}",
        queries.len(),
        alert_names().len(),
        started.elapsed()
    );
}
