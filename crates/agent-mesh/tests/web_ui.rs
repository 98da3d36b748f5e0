//! The web view (`GET /ui`) of a real mesh, loaded in headless Chromium: a
//! three-node mesh trains a short MNIST job to completion, then the page is
//! opened on one node with an observer-only token handed over the way a
//! user's link would (a `#token=` fragment the page moves into the tab's
//! session storage). After its script ran, the DOM must show the committee
//! leader `/v1/consensus` reports, every voter, and the finished job with an
//! accuracy curve of one point per round whose values are the committed
//! metrics; the browser must log nothing to the console (no script error, no
//! Content-Security-Policy violation), and no section may show an error.
//!
//! Needs Chromium (Debian: `apt-get install chromium`); without it the test
//! is skipped, unless `CI` is set, where it fails. `AGENT_MESH_UI_SCREENSHOT=
//! PATH` also saves a 1280x900 screenshot of the page (docs/ui.png is one).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mesh::{
    make_member, run_ok, skip_unless_ci, start_mnist_mesh, submit_job, wait_for,
    wait_for_described, Mesh, MESH_ID,
};

const NODES: usize = 3;
const ROUNDS: u64 = 3;
const JOB: &str = "mnist-web-view";
/// Far above the job's usual time (about 20 s), well inside the runner's limit.
const JOB_LIMIT: Duration = Duration::from_secs(240);
/// Longest one Chromium run may take before it is killed and the test fails.
const BROWSER_LIMIT: Duration = Duration::from_secs(90);
/// Virtual time the page gets: long enough for two refreshes (every 4 s).
const VIRTUAL_TIME_MS: u32 = 9_000;
/// Sections of the page, each with its own error line.
const SECTIONS: usize = 6;

/// The Chromium binary, if one is installed.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let names = [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ];
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A token for a member that may only observe (no admin role).
fn observer_token(mesh: &Mesh) -> String {
    let root = mesh.root.path();
    make_member(root, &mesh.ca(), "viewer", "observer");
    let viewer = root.join("viewer");
    let cert = viewer.join("node.cert.pem");
    run_ok(&[
        "token",
        "--key",
        viewer.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--mesh-id",
        MESH_ID,
    ])
    .trim()
    .to_string()
}

fn submit(mesh: &Mesh, token: &str) {
    let spec = serde_json::json!({
        "job": JOB,
        "spec": {
            "model": "mlp", "rounds": ROUNDS, "participants_per_round": NODES,
            "rule_name": "fedavg", "byzantine_count": 0, "secagg": false, "dp_budget": null,
            "training": {
                "dataset": "mnist", "epochs": 1, "batch_size": 32, "learning_rate": 0.1, "seed": 7,
                "round_deadline_ms": 60000, "group_size": NODES, "clip_norm": 20.0,
                "noise_multiplier": 0.0, "sampling_rate": 1.0
            }
        }
    });
    submit_job(&mesh.nodes[0].http_url, token, &spec);
}

fn job_view(mesh: &Mesh, token: &str) -> Option<serde_json::Value> {
    common::mesh::job_view(&mesh.nodes[0].http_url, token, JOB)
}

fn wait_completed(mesh: &Mesh, token: &str) -> serde_json::Value {
    let check = || job_view(mesh, token).filter(|v| v["status"] == "Completed");
    wait_for_described(JOB_LIMIT, check, || {
        let view = job_view(mesh, token).unwrap_or_default();
        format!(
            "job {JOB} to complete: {view}\n{}",
            mesh.nodes[0].log_tail()
        )
    })
}

/// The leader's peer id as node 0's `/v1/consensus` reports it.
fn leader_peer(mesh: &Mesh) -> String {
    wait_for("a committee leader", Duration::from_secs(90), || {
        let consensus = mesh.nodes[0].get("/v1/consensus")?;
        let leader = consensus["leader_str"].as_str()?;
        consensus["member_peers"][leader]
            .as_str()
            .map(str::to_string)
    })
}

/// Runs Chromium headless on `url` with `extra` flags; returns (stdout, stderr).
fn browse(browser: &Path, profile: &Path, url: &str, extra: &[String]) -> (String, String) {
    let out_dir = tempfile::tempdir().unwrap();
    let stdout_path = out_dir.path().join("stdout");
    let stderr_path = out_dir.path().join("stderr");
    let mut child = Command::new(browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={VIRTUAL_TIME_MS}"))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("start chromium");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BROWSER_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("chromium ran past {BROWSER_LIMIT:?}:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(status.success(), "chromium failed ({status}):\n{stderr}");
    (stdout, stderr)
}

/// Every start tag `<name ...>` in `dom`.
fn tags<'a>(dom: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name} ");
    dom.match_indices(&open)
        .filter_map(|(at, _)| dom[at..].find('>').map(|end| &dom[at..at + end + 1]))
        .collect()
}

/// The value of `attr` in one start tag.
fn attr<'a>(tag: &'a str, attr: &str) -> Option<&'a str> {
    let key = format!(" {attr}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

/// The one start tag `<name ...>` carrying `attr="value"`.
fn tag_with<'a>(dom: &'a str, name: &str, attr_name: &str, value: &str) -> &'a str {
    let found: Vec<&str> = tags(dom, name)
        .into_iter()
        .filter(|t| attr(t, attr_name) == Some(value))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "want one <{name} {attr_name}=\"{value}\">, found {found:?}\n{dom}"
    );
    found[0]
}

/// Console lines Chromium logged for the page (script errors, CSP violations
/// and anything the page printed: the page prints nothing when all is well).
fn console_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains(":CONSOLE")).collect()
}

fn check_dom(dom: &str, mesh: &Mesh, leader: &str, token: &str, job: &serde_json::Value) {
    // The node, and the committee with its leader and every voter.
    assert!(
        dom.contains(&format!("data-node-id=\"{}\"", mesh.nodes[0].peer_id)),
        "this node's id is not shown\n{dom}"
    );
    tag_with(dom, "span", "data-leader-peer", leader);
    let voters = &dom[dom.find("id=\"voters\"").expect("voter list")..];
    for node in &mesh.nodes {
        assert!(
            voters.contains(&format!("data-peer=\"{}\"", node.peer_id)),
            "voter {} missing\n{dom}",
            node.peer_id
        );
    }

    // The finished job, its chart and the privacy row.
    let article = tag_with(dom, "article", "data-job", JOB);
    assert_eq!(attr(article, "data-status"), Some("Completed"), "{article}");
    let chart = tag_with(dom, "svg", "data-job", JOB);
    assert_eq!(attr(chart, "data-points"), Some("3"), "{chart}");
    let curve = tag_with(dom, "polyline", "data-series", "accuracy");
    assert_eq!(attr(curve, "data-rounds"), Some("0,1,2"), "{curve}");
    let points = attr(curve, "points").unwrap().split(' ').count();
    assert_eq!(points as u64, ROUNDS, "one point per round: {curve}");
    let shown: Vec<f64> = attr(curve, "data-values")
        .unwrap()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    let committed: Vec<f64> = job["detail"]["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["completion"]["metrics"]["accuracy"].as_f64().unwrap())
        .collect();
    assert_eq!(shown.len(), committed.len());
    for (s, c) in shown.iter().zip(&committed) {
        assert!(
            (s - c).abs() < 1e-9,
            "curve {shown:?}, committed {committed:?}"
        );
    }
    tag_with(dom, "tr", "data-job", JOB);

    // Every section drew, and the token went nowhere but storage.
    let hidden_errors = dom.matches("class=\"error\" hidden=\"\"").count();
    assert_eq!(hidden_errors, SECTIONS, "a section shows an error\n{dom}");
    assert!(dom.contains("token set for this tab"), "{dom}");
    assert!(!dom.contains(token), "the token appears in the page");
}

#[test]
fn the_web_view_shows_the_committee_and_a_finished_jobs_accuracy_curve() {
    let Some(browser) = chromium() else {
        skip_unless_ci(
            "chromium not found (Debian: apt-get install chromium; or set CHROMIUM=/path)",
        );
        return;
    };
    let started = Instant::now();
    let mesh = start_mnist_mesh(NODES);
    let admin = mesh.admin_token();
    let observer = observer_token(&mesh);
    leader_peer(&mesh);
    submit(&mesh, &admin);
    let job = wait_completed(&mesh, &admin);
    assert_eq!(job["rounds_completed"], ROUNDS, "{job}");
    eprintln!("mesh up and job done in {:?}", started.elapsed());

    let profile = tempfile::tempdir().unwrap();
    // Tokens are hex, so the fragment needs no percent-encoding.
    let url = format!("{}/ui#token={observer}", mesh.nodes[0].http_url);
    let dump = ["--dump-dom".to_string()];
    // The leader could change while the page loads: take a page whose
    // leader matches /v1/consensus before and after it (bounded retries).
    let (dom, stderr, leader) = (0..3)
        .find_map(|_| {
            let before = leader_peer(&mesh);
            let (dom, stderr) = browse(&browser, profile.path(), &url, &dump);
            (leader_peer(&mesh) == before).then_some((dom, stderr, before))
        })
        .expect("the leader kept changing while the page loaded");
    eprintln!("page loaded; {:?} in all", started.elapsed());
    let console = console_lines(&stderr);
    assert!(
        console.is_empty(),
        "the page logged to the console:\n{}",
        console.join("\n")
    );
    check_dom(&dom, &mesh, &leader, &observer, &job);

    if let Some(path) = std::env::var_os("AGENT_MESH_UI_SCREENSHOT") {
        let shot = [
            format!("--screenshot={}", Path::new(&path).display()),
            "--window-size=1280,900".to_string(),
        ];
        browse(&browser, profile.path(), &url, &shot);
        eprintln!("screenshot saved to {}", Path::new(&path).display());
    }
}
