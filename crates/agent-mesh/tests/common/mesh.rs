//! A mesh of real `agent-mesh node` processes on loopback, for integration tests.
//!
//! Keys and certificates come from the binary's own `keygen` and `ca` commands;
//! each node listens on port 0 and reports its addresses in `data/node.json`.
//! Every wait is bounded and every process is killed when the harness drops.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: this build's, or the one `AGENT_MESH_TEST_BIN`
/// names (to measure a release build with the same tests).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("AGENT_MESH_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_agent-mesh").to_string())
    })
}

/// Runs the binary and returns stdout, panicking with stderr on failure.
pub fn run_ok(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `check` every 200 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, check: impl FnMut() -> Option<T>) -> T {
    wait_for_described(limit, check, || what.to_string())
}

/// [`wait_for`], describing what it waited for (logs, say) only once it
/// timed out, so the description shows the state at the end.
pub fn wait_for_described<T>(
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
    describe: impl FnOnce() -> String,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        if started.elapsed() >= limit {
            panic!("timed out after {limit:?} waiting for {}", describe());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The mesh CA that `https://` URLs given to [`http`] are verified with.
static HTTPS_CA: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// Verifies the `https://` URLs given to [`http`] from now on with the
/// CA certificate at `ca_cert` (a mesh's `ca.cert.pem`).
pub fn trust_ca(ca_cert: &Path) {
    *HTTPS_CA.lock().unwrap() = Some(ca_cert.to_path_buf());
}

/// One HTTP/1.1 exchange on a fresh connection: (status code, body).
/// `https://` URLs go through curl, verified with the CA of [`trust_ca`]
/// under the name `localhost`, which every mesh certificate carries (so a
/// node reached by an IP address its certificate does not name verifies too).
pub fn http(method: &str, url: &str, bearer: Option<&str>, body: &str) -> Option<(u16, String)> {
    if let Some(rest) = url.strip_prefix("https://") {
        return https(method, rest, bearer, body);
    }
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = TcpStream::connect(host).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((status, body))
}

fn https(method: &str, rest: &str, bearer: Option<&str>, body: &str) -> Option<(u16, String)> {
    let ca = HTTPS_CA.lock().unwrap().clone()?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (ip, port) = host.rsplit_once(':')?;
    let mut command = Command::new("curl");
    command
        .args(["--silent", "--max-time", "20", "--request", method])
        .args(["--cacert", ca.to_str()?])
        .args(["--connect-to", &format!("localhost:{port}:{ip}:{port}")])
        .args(["--header", "Content-Type: application/json"])
        .args(["--write-out", "\n%{http_code}"]);
    if let Some(token) = bearer {
        command.args(["--header", &format!("Authorization: Bearer {token}")]);
    }
    if !body.is_empty() {
        command.args(["--data-binary", body]);
    }
    let out = command
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let (body, code) = text.rsplit_once('\n')?;
    let status: u16 = code.trim().parse().ok()?;
    (status != 0).then(|| (status, body.to_string()))
}

/// GET returning the body of a 200 answer as JSON.
pub fn get_json(url: &str) -> Option<serde_json::Value> {
    let (status, body) = http("GET", url, None, "")?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

/// One node process and its files.
pub struct Node {
    /// Its folder (key, certificate, config, data, log).
    pub dir: PathBuf,
    child: Option<Child>,
    /// Base URL of its HTTP API, once started.
    pub http_url: String,
    /// Its P2P listen addresses, once started.
    pub listen: Vec<String>,
    /// Its peer id.
    pub peer_id: String,
}

impl Node {
    /// A node whose files are in `dir` (not started).
    pub fn at(dir: PathBuf) -> Self {
        Self {
            dir,
            child: None,
            http_url: String::new(),
            listen: Vec::new(),
            peer_id: String::new(),
        }
    }

    /// `GET {http_url}{path}` as JSON.
    pub fn get(&self, path: &str) -> Option<serde_json::Value> {
        get_json(&format!("{}{path}", self.http_url))
    }

    /// Admitted peers as the node reports them.
    pub fn admitted(&self) -> usize {
        self.get("/v1/status")
            .and_then(|s| s["peers_admitted"].as_u64())
            .unwrap_or(0) as usize
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> String {
        http("GET", &format!("{}/metrics", self.http_url), None, "")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL, no clean shutdown.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// The tail of the node's log, for assertion messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A CA, an admin and node folders under one temporary directory.
pub struct Mesh {
    /// Keeps the folder alive.
    pub root: tempfile::TempDir,
    /// The nodes, index 0 first.
    pub nodes: Vec<Node>,
}

/// The mesh id every test mesh uses.
pub const MESH_ID: &str = "test-mesh";

/// The roles of a node that can do everything: join the committee,
/// aggregate, train and observe.
pub const ALL_NODE_ROLES: &str = "committee,aggregator,trainer,observer";

impl Mesh {
    /// Creates the CA, an admin, and `n` nodes' keys, certificates and
    /// configs, every node with all four node roles.
    pub fn new(n: usize) -> Self {
        Self::with_roles(n, |_| ALL_NODE_ROLES)
    }

    /// [`Mesh::new`] with node `i` holding `roles_of(i)` (comma-separated).
    pub fn with_roles(n: usize, roles_of: impl Fn(usize) -> &'static str) -> Self {
        // AGENT_MESH_KEEP_TEST_DIRS=1 keeps the folders (node logs included) for a look afterwards.
        let keep = std::env::var_os("AGENT_MESH_KEEP_TEST_DIRS").is_some();
        let root = tempfile::Builder::new()
            .prefix("agent-mesh-test-")
            .disable_cleanup(keep)
            .tempdir()
            .unwrap();
        if keep {
            eprintln!("test mesh folder: {}", root.path().display());
        }
        let ca = root.path().join("ca");
        run_ok(&["ca", "init", "--out", ca.to_str().unwrap()]);
        // Nodes started with HTTPS are reached through [`http`] too.
        trust_ca(&ca.join("ca.cert.pem"));
        make_member(root.path(), &ca, "admin", "admin,observer");
        let nodes = (0..n)
            .map(|i| {
                let name = format!("node-{i}");
                make_member(root.path(), &ca, &name, roles_of(i));
                let dir = root.path().join(&name);
                write_config(&dir, "../ca", i as u64);
                Node::at(dir)
            })
            .collect();
        Self { root, nodes }
    }

    /// Adds one more node, `node-<n>`, with `roles` (comma-separated); returns its index.
    pub fn add_member(&mut self, roles: &str) -> usize {
        let i = self.nodes.len();
        let name = format!("node-{i}");
        make_member(self.root.path(), &self.ca(), &name, roles);
        let dir = self.root.path().join(&name);
        write_config(&dir, "../ca", i as u64);
        self.nodes.push(Node::at(dir));
        i
    }

    /// The CA folder.
    pub fn ca(&self) -> PathBuf {
        self.root.path().join("ca")
    }

    /// Revokes the certificate at `cert` (appends to the CA's revocations.jsonl, which nodes watch).
    pub fn revoke(&self, cert: &Path) {
        let ca = self.ca();
        run_ok(&[
            "ca",
            "revoke",
            "--ca",
            ca.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
        ]);
    }

    /// A fresh admin token.
    pub fn admin_token(&self) -> String {
        let admin = self.root.path().join("admin");
        run_ok(&[
            "token",
            "--key",
            admin.to_str().unwrap(),
            "--cert",
            admin.join("node.cert.pem").to_str().unwrap(),
            "--mesh-id",
            MESH_ID,
        ])
        .trim()
        .to_string()
    }

    /// Starts node `i` (bootstrapping from `bootstrap`, if any) and waits for its node.json.
    pub fn start(&mut self, i: usize, bootstrap: Option<&str>) {
        let node = &mut self.nodes[i];
        start_node(node, bootstrap, &[]);
    }

    /// Starts every node, all bootstrapping from node 0, and waits until each admits all others.
    pub fn start_all(&mut self) {
        self.start(0, None);
        let boot = self.nodes[0].listen[0].clone();
        for i in 1..self.nodes.len() {
            self.start(i, Some(&boot));
        }
        self.wait_full_mesh();
    }

    /// Waits until every running node has admitted all the others.
    pub fn wait_full_mesh(&mut self) {
        let want = self.nodes.len() - 1;
        for node in &self.nodes {
            wait_for(
                &format!(
                    "{} to admit {want} peers\n{}",
                    node.dir.display(),
                    node.log_tail()
                ),
                Duration::from_secs(90),
                || (node.admitted() >= want).then_some(()),
            );
        }
    }
}

impl Drop for Mesh {
    /// A failed test shows the end of every node's log.
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!("--- {} ---\n{}", node.dir.display(), node.log_tail());
            }
        }
    }
}

/// keygen + ca issue for one member folder.
pub fn make_member(root: &Path, ca: &Path, name: &str, roles: &str) {
    let dir = root.join(name);
    run_ok(&["keygen", "--out", dir.to_str().unwrap()]);
    run_ok(&[
        "ca",
        "issue",
        "--ca",
        ca.to_str().unwrap(),
        "--node",
        dir.to_str().unwrap(),
        "--roles",
        roles,
        "--out",
        dir.join("node.cert.pem").to_str().unwrap(),
    ]);
}

/// Writes `dir/node.toml` for a node whose CA folder is `ca_rel` (relative
/// to `dir`). Its API is plain HTTP on loopback, which [`http`] speaks;
/// tests of HTTPS turn it off with `AGENT_MESH_HTTP_PLAIN=false`.
pub fn write_config(dir: &Path, ca_rel: &str, seed: u64) {
    let text = format!(
        r#"mesh_id = "{MESH_ID}"
data_dir = "data"

[identity]
key = "node.key.pem"
cert = "node.cert.pem"
ca_cert = "{ca_rel}/ca.cert.pem"
ca_pin = "{ca_rel}/ca.pin"
revocations = "{ca_rel}/revocations.jsonl"

[network]
listen = ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]
admission_deadline_ms = 3000
ban_ms = 2000
seed = {seed}

[http]
plain = true

[consensus]
bootstrap_expect = 3
voter_down_limit_ms = 8000
"#
    );
    std::fs::write(dir.join("node.toml"), text).unwrap();
}

/// The bundled MNIST subset's folder, for nodes that train on files.
pub fn mnist_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/mnist-10k")
        .to_str()
        .unwrap()
        .to_string()
}

/// Spawns `agent-mesh node` for `node` and waits (bounded) for its node.json.
pub fn start_node(node: &mut Node, bootstrap: Option<&str>, extra_env: &[(&str, &str)]) {
    start_node_with_args(node, bootstrap, extra_env, &[]);
}

/// [`start_node`] with extra command-line flags (e.g. `--allow-adversary`).
pub fn start_node_with_args(
    node: &mut Node,
    bootstrap: Option<&str>,
    extra_env: &[(&str, &str)],
    extra_args: &[&str],
) {
    start_node_wrapped(node, &[], bootstrap, extra_env, extra_args);
}

/// [`start_node_with_args`] under a wrapper command: `prefix` runs the
/// binary (`["ip", "netns", "exec", NS]` starts it in a network namespace).
pub fn start_node_wrapped(
    node: &mut Node,
    prefix: &[&str],
    bootstrap: Option<&str>,
    extra_env: &[(&str, &str)],
    extra_args: &[&str],
) {
    let info = node.dir.join("data").join("node.json");
    let _ = std::fs::remove_file(&info);
    let log = std::fs::File::create(node.dir.join("node.log")).unwrap();
    let mut command = match prefix.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(bin());
            command
        }
        None => Command::new(bin()),
    };
    command
        .args([
            "node",
            "--config",
            node.dir.join("node.toml").to_str().unwrap(),
        ])
        .args(extra_args)
        .env("AGENT_MESH_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(addr) = bootstrap {
        command.env("AGENT_MESH_BOOTSTRAP", addr);
    }
    for (k, v) in extra_env {
        command.env(k, v);
    }
    node.child = Some(command.spawn().unwrap());
    let json: serde_json::Value = wait_for(
        &format!("{} to write node.json", node.dir.display()),
        Duration::from_secs(60),
        || {
            let text = std::fs::read_to_string(&info).ok()?;
            serde_json::from_str(&text).ok()
        },
    );
    node.http_url = json["http_url"].as_str().unwrap().to_string();
    node.peer_id = json["peer_id"].as_str().unwrap().to_string();
    node.listen = json["listen_addrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .filter(|a| a.contains("/tcp/"))
        .collect();
    assert!(!node.listen.is_empty(), "node has no TCP listen address");
}

/// A mesh of `n` nodes, node `i` training on shard `i` of `n` of the MNIST
/// subset, each bootstrapping from node 0; returns once all admit each other.
pub fn start_mnist_mesh(n: usize) -> Mesh {
    start_mnist_mesh_with(n, &[])
}

/// [`start_mnist_mesh`] with more environment for every node.
pub fn start_mnist_mesh_with(n: usize, extra_env: &[(&str, &str)]) -> Mesh {
    let mut mesh = start_mnist_nodes(n, extra_env);
    mesh.wait_full_mesh();
    mesh
}

/// The nodes of [`start_mnist_mesh_with`], started but not waited for: each
/// has written its node.json, none need have admitted the others yet.
pub fn start_mnist_nodes(n: usize, extra_env: &[(&str, &str)]) -> Mesh {
    start_mnist_nodes_of(Mesh::new(n), extra_env)
}

/// [`start_mnist_nodes`] over the nodes of `mesh` (made, not started).
pub fn start_mnist_nodes_of(mut mesh: Mesh, extra_env: &[(&str, &str)]) -> Mesh {
    let n = mesh.nodes.len();
    let data = mnist_dir();
    let mut boot = None::<String>;
    for i in 0..n {
        let shard = format!("{i}/{n}");
        let mut env = vec![
            ("AGENT_MESH_DATA", data.as_str()),
            ("AGENT_MESH_DATA_SHARD", shard.as_str()),
        ];
        env.extend_from_slice(extra_env);
        start_node(&mut mesh.nodes[i], boot.as_deref(), &env);
        if boot.is_none() {
            boot = Some(mesh.nodes[0].listen[0].clone());
        }
    }
    mesh
}

/// Posts `body` (`{"job": ID, "spec": ...}`) to `api`'s `/v1/jobs` until it
/// is accepted (the committee may still be forming), for at most two minutes.
pub fn submit_job(api: &str, token: &str, body: &serde_json::Value) {
    wait_for("the job to be accepted", Duration::from_secs(120), || {
        let url = format!("{api}/v1/jobs");
        let (status, answer) = http("POST", &url, Some(token), &body.to_string())?;
        if status == 200 {
            return Some(());
        }
        eprintln!("submit: {status} {answer}");
        None
    });
}

/// `GET /v1/jobs/{job}` on `api`, when it answers 200 with JSON.
pub fn job_view(api: &str, token: &str, job: &str) -> Option<serde_json::Value> {
    let (status, body) = http("GET", &format!("{api}/v1/jobs/{job}"), Some(token), "")?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A test that needs a tool this machine lacks: under `CI` (which installs
/// every tool the tests use) that is a failure; elsewhere the test says
/// `skipped:` and why, and passes.
pub fn skip_unless_ci(why: &str) {
    assert!(std::env::var_os("CI").is_none(), "CI is set but {why}");
    eprintln!("skipped: {why}");
}
