//! NAT traversal with real `agent-mesh node` processes in network
//! namespaces: one public relay/bootstrap node and two private networks,
//! each behind its own NAT router (iptables MASQUERADE), with two nodes in
//! each. Every node admits every other (private nodes learn they are private
//! from AutoNAT, reserve on the relay, and reach each other through it;
//! DCUtR punches direct connections where the NATs allow), and a job with
//! secure aggregation completes. The second test makes both NATs symmetric
//! (`MASQUERADE --random-fully`, new inbound connections dropped), so hole
//! punching fails and everything runs through the relay.
//!
//! ```text
//!                      relay (198.18.0.1, bridge pub0)       "public" network
//!                      /                          \
//!        router A 198.18.0.2                 router B 198.18.0.3     MASQUERADE
//!        lan0 10.1.0.1                       lan0 10.2.0.1
//!        /          \                        /          \
//!   a1 10.1.0.2  a2 10.1.0.3           b1 10.2.0.2  b2 10.2.0.3       private networks
//! ```
//!
//! Each test prints a report: which pairs are direct, relayed or
//! hole-punched, the time from the first start to all nodes admitting each
//! other, and the bytes relayed. Without root or `ip netns` the tests say
//! why and pass, except under `CI=true`, where that is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../src/cli/netns.rs"]
mod netns;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::mesh::{mnist_dir, skip_unless_ci, start_node_wrapped, wait_for_described, Mesh};
use netns::Namespaces;

/// Nodes: the relay first, then a1, a2 (behind router A), b1, b2 (behind B).
const NAMES: [&str; 5] = ["relay", "a1", "a2", "b1", "b2"];
const RELAY_IP: &str = "198.18.0.1";
/// Node `i` listens on port `P2P_PORT + i` (TCP and QUIC) in its
/// namespace: hosts behind one NAT on one port would collide in its port
/// mapping, and a hole punch could reach only one of them.
const P2P_PORT: u16 = 7_000;
/// Bound on the wait for every node to admit every other.
const CONNECT_LIMIT: Duration = Duration::from_secs(240);
/// Bound on the job (two small secure rounds take well under a minute).
const JOB_LIMIT: Duration = Duration::from_secs(300);
/// How long after every link formed the test waits at most for hole
/// punching to settle. A link makes its DCUtR attempts 20 s apart (the
/// node logs), and through symmetric NATs all three fail only after a
/// minute: by this bound each relayed link has had its first attempt fail
/// and stayed relayed. (Counted from the job's end, this wait was a fixed
/// 30 s of every relay-only run.)
const PUNCH_SETTLE: Duration = Duration::from_secs(25);

/// The namespaces and routers of one test, and its nodes. Fields drop in
/// order: the nodes are killed before their namespaces are deleted.
struct Lab {
    mesh: Mesh,
    /// Held for its drop, which deletes the namespaces.
    _net: Namespaces,
    ns: Vec<String>,
}

/// Which NAT the routers do. Both drop unsolicited inbound packets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nat {
    /// Port-preserving MASQUERADE: a connection keeps its source port where
    /// it can, so the port a relay observed is the one a hole punch meets.
    Cone,
    /// `MASQUERADE --random-fully`: a new random port per connection, so
    /// the observed port is useless to the other side and punching fails.
    Symmetric,
}

fn ns_name(tag: &str, role: &str) -> String {
    format!("{tag}{role}")
}

/// Makes the relay's public bridge, the two routers and the four private hosts.
fn build_network(net: &mut Namespaces, tag: &str, nat: Nat) -> anyhow::Result<Vec<String>> {
    let relay = ns_name(tag, "relay");
    net.add(&relay)?;
    let mut public_ports = Vec::new();
    let mut hosts = vec![relay.clone()];
    for (side, subnet, wan_ip) in [("a", "10.1.0", "198.18.0.2"), ("b", "10.2.0", "198.18.0.3")] {
        let router = ns_name(tag, &format!("gw{side}"));
        net.add(&router)?;
        let port = format!("w{side}");
        net.veth(&relay, &port, &router, "wan0")?;
        public_ports.push(port);
        net.address(&router, "wan0", &format!("{wan_ip}/24"))?;
        net.exec(&router, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        let mut masquerade = ["-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j"].to_vec();
        masquerade.push("MASQUERADE");
        if nat == Nat::Symmetric {
            masquerade.push("--random-fully");
        }
        net.exec(&router, "iptables", &masquerade)?;
        // Like a home or office router: unsolicited packets from outside are
        // dropped, not answered (a reset would kill a hole punch's first SYN).
        let unsolicited = [
            "-i",
            "wan0",
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-j",
            "DROP",
        ];
        for chain in ["INPUT", "FORWARD"] {
            let mut rule = vec!["-A", chain];
            rule.extend_from_slice(&unsolicited);
            net.exec(&router, "iptables", &rule)?;
        }
        let mut lan_ports = Vec::new();
        for n in 1..=2 {
            let host = ns_name(tag, &format!("{side}{n}"));
            net.add(&host)?;
            let lan_port = format!("p{n}");
            net.veth(&router, &lan_port, &host, "eth0")?;
            lan_ports.push(lan_port);
            net.address(&host, "eth0", &format!("{subnet}.{}/24", n + 1))?;
            net.default_route(&host, &format!("{subnet}.1"))?;
            hosts.push(host);
        }
        let ports: Vec<&str> = lan_ports.iter().map(String::as_str).collect();
        net.bridge(&router, "lan0", &ports)?;
        net.address(&router, "lan0", &format!("{subnet}.1/24"))?;
    }
    let ports: Vec<&str> = public_ports.iter().map(String::as_str).collect();
    net.bridge(&relay, "pub0", &ports)?;
    net.address(&relay, "pub0", &format!("{RELAY_IP}/24"))?;
    // hosts: relay, a1, a2, b1, b2 (the order of NAMES).
    Ok(hosts)
}

/// Rewrites node `i`'s config: listen on every address of its namespace at
/// its own port, form the first committee only with all five nodes, probe
/// reachability every 2 s, and, on the relay, serve as relay at its public
/// address.
fn configure(mesh: &Mesh, i: usize) {
    let path = mesh.nodes[i].dir.join("node.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let port = P2P_PORT + i as u16;
    let listen =
        format!("listen = [\"/ip4/0.0.0.0/tcp/{port}\", \"/ip4/0.0.0.0/udp/{port}/quic-v1\"]");
    let mut text: String = text
        .lines()
        .map(|line| {
            if line.starts_with("listen = ") {
                listen.as_str()
            } else if line.starts_with("bootstrap_expect = ") {
                // The whole mesh: each side of a NAT sees three
                // committee-capable nodes (the relay and its two) long before
                // the links across form, and would bootstrap a committee of
                // its own with three.
                "bootstrap_expect = 5"
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    text.push_str("\n\n[nat]\nautonat_probe_interval_ms = 2000\n");
    if i == 0 {
        text.push_str(&format!(
            "relay_server = true\nexternal_addresses = [\"/ip4/{RELAY_IP}/tcp/{P2P_PORT}\", \
             \"/ip4/{RELAY_IP}/udp/{P2P_PORT}/quic-v1\"]\n"
        ));
    }
    std::fs::write(path, text).unwrap();
}

impl Lab {
    /// The lab, or `None` (after saying why) where namespaces cannot be made.
    fn new(test: char, nat: Nat) -> Option<Self> {
        let tag = format!("nt{}{test}", std::process::id() % 100_000);
        if let Some(why) = netns::unavailable(&format!("{tag}probe")) {
            skip_unless_ci(&why);
            return None;
        }
        // The nodes' APIs live inside their namespaces; curl reaches them there.
        if std::process::Command::new("curl")
            .arg("--version")
            .output()
            .is_err()
        {
            skip_unless_ci("curl is not installed");
            return None;
        }
        let mesh = Mesh::new(NAMES.len());
        let mut net = Namespaces::new();
        let ns = match build_network(&mut net, &tag, nat) {
            Ok(ns) => ns,
            Err(e) => {
                skip_unless_ci(&format!("the test network could not be built: {e:#}"));
                return None;
            }
        };
        for i in 0..NAMES.len() {
            configure(&mesh, i);
        }
        Some(Self {
            mesh,
            _net: net,
            ns,
        })
    }

    /// Starts every node (the relay first) on its MNIST shard.
    fn start(&mut self) {
        let data = mnist_dir();
        let boot = format!("/ip4/{RELAY_IP}/tcp/{P2P_PORT}");
        let n = NAMES.len();
        for i in 0..n {
            let shard = format!("{i}/{n}");
            let env = [
                ("AGENT_MESH_DATA", data.as_str()),
                ("AGENT_MESH_DATA_SHARD", shard.as_str()),
                ("AGENT_MESH_LOG", "info,libp2p_dcutr=debug"),
            ];
            let prefix = ["ip", "netns", "exec", self.ns[i].as_str()];
            let bootstrap = (i > 0).then_some(boot.as_str());
            start_node_wrapped(&mut self.mesh.nodes[i], &prefix, bootstrap, &env, &[]);
        }
    }

    /// One HTTP exchange with node `i`'s API (inside its namespace): (status, body).
    fn http(
        &self,
        i: usize,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> Option<(u16, String)> {
        let url = format!("{}{path}", self.mesh.nodes[i].http_url);
        let mut command = Namespaces::command(&self.ns[i], "curl");
        command.args(["-s", "-m", "20", "-X", method, "-w", "\n%{http_code}"]);
        command.args(["-H", "Content-Type: application/json"]);
        if let Some(token) = token {
            command.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        if !body.is_empty() {
            command.args(["--data-binary", body]);
        }
        let out = command.arg(url).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n')?;
        Some((code.trim().parse().ok()?, body.to_string()))
    }

    fn get(&self, i: usize, path: &str) -> Option<serde_json::Value> {
        let (status, body) = self.http(i, "GET", path, None, "")?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    }

    fn admitted(&self, i: usize) -> usize {
        self.get(i, "/v1/status")
            .and_then(|s| s["peers_admitted"].as_u64())
            .unwrap_or(0) as usize
    }

    fn logs(&self) -> String {
        (0..NAMES.len())
            .map(|i| format!("--- {} ---\n{}", NAMES[i], self.mesh.nodes[i].log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until every node admits every other; returns how long since `started`.
    fn wait_all_connected(&self, started: Instant) -> Duration {
        let want = NAMES.len() - 1;
        wait_for_described(
            CONNECT_LIMIT,
            || {
                (0..NAMES.len())
                    .all(|i| self.admitted(i) >= want)
                    .then_some(())
            },
            || {
                let counts: Vec<String> = (0..NAMES.len())
                    .map(|i| format!("{}: {}", NAMES[i], self.admitted(i)))
                    .collect();
                format!(
                    "every node to admit {want} peers ({})\n{}",
                    counts.join(", "),
                    self.logs()
                )
            },
        );
        started.elapsed()
    }

    /// Submits a two-round secure-aggregation job through the relay's API
    /// and waits for it to complete.
    fn run_secure_job(&self, token: &str) -> serde_json::Value {
        let body = serde_json::json!({
            "job": "nat",
            "spec": {
                "model": "mlp", "rounds": 2, "participants_per_round": NAMES.len(),
                "rule_name": "fedavg", "byzantine_count": 0, "secagg": true, "dp_budget": null,
                "training": {
                    "dataset": "mnist", "epochs": 1, "batch_size": 32, "learning_rate": 0.1,
                    "seed": 7, "round_deadline_ms": 120000, "group_size": 5, "clip_norm": 20.0,
                    "noise_multiplier": 0.0, "sampling_rate": 1.0
                }
            }
        })
        .to_string();
        wait_for_described(
            Duration::from_secs(120),
            || match self.http(0, "POST", "/v1/jobs", Some(token), &body)? {
                (200, _) => Some(()),
                (status, answer) => {
                    eprintln!("submit: {status} {answer}");
                    None
                }
            },
            || format!("the job to be accepted\n{}", self.logs()),
        );
        let view = |i: usize| {
            let (status, body) = self.http(i, "GET", "/v1/jobs/nat", Some(token), "")?;
            (status == 200).then(|| serde_json::from_str::<serde_json::Value>(&body).ok())?
        };
        wait_for_described(
            JOB_LIMIT,
            || (0..NAMES.len()).find_map(|i| view(i).filter(|v| v["status"] == "Completed")),
            || {
                format!(
                    "the job to complete: {}\n{}",
                    view(0).unwrap_or_default(),
                    self.logs()
                )
            },
        )
    }

    /// Connection kind of each pair, as the lower-indexed node sees it.
    fn kinds(&self) -> BTreeMap<(usize, usize), String> {
        let ids: Vec<String> = self.mesh.nodes.iter().map(|n| n.peer_id.clone()).collect();
        let mut out = BTreeMap::new();
        for i in 0..NAMES.len() {
            let peers = self.get(i, "/v1/peers").unwrap_or_default();
            for peer in peers.as_array().into_iter().flatten() {
                let Some(j) = ids.iter().position(|id| peer["peer_id"] == id.as_str()) else {
                    continue;
                };
                if j > i {
                    let kind = peer["connection"].as_str().unwrap_or("none").to_string();
                    out.insert((i, j), kind);
                }
            }
        }
        out
    }

    /// Waits until every relayed link across the NATs has had its
    /// hole-punching attempts settled (punched, or each end's attempts over:
    /// DCUtR tries three times), at most until [`PUNCH_SETTLE`] after
    /// `connected`, when every link had formed and made its first attempt.
    fn settle_hole_punching(&self, connected: Instant) {
        while connected.elapsed() < PUNCH_SETTLE {
            let relayed = self
                .kinds()
                .iter()
                .filter(|(pair, kind)| cross_nat(pair.0, pair.1) && *kind == "relayed")
                .count();
            let settled = self.metric_sum("mesh_net_hole_punches_total{result=\"failure\"}");
            if relayed == 0 || settled >= relayed as f64 {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The sum over nodes of a metric's value on lines starting with `prefix`.
    fn metric_sum(&self, prefix: &str) -> f64 {
        (0..NAMES.len())
            .filter_map(|i| self.http(i, "GET", "/metrics", None, ""))
            .flat_map(|(_, text)| {
                text.lines()
                    .filter(|l| l.starts_with(prefix))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    }
}

/// What a run measured.
struct Report {
    connected: Duration,
    kinds: BTreeMap<(usize, usize), String>,
    relayed_bytes: f64,
    punched: f64,
    punch_failures: f64,
}

fn cross_nat(i: usize, j: usize) -> bool {
    let side = |k: usize| NAMES[k].chars().next();
    i > 0 && j > 0 && side(i) != side(j)
}

fn print_report(title: &str, lab: &Lab, report: &Report) {
    println!("== NAT traversal: {title} ==");
    println!(
        "start to all-connected: {:.1} s",
        report.connected.as_secs_f64()
    );
    for ((i, j), kind) in &report.kinds {
        let place = if cross_nat(*i, *j) { "across NATs" } else { "" };
        println!("  {:>5} - {:<5} {kind:<13} {place}", NAMES[*i], NAMES[*j]);
    }
    let count = |k: &str| {
        report
            .kinds
            .iter()
            .filter(|(p, v)| cross_nat(p.0, p.1) && *v == k)
            .count()
    };
    println!(
        "cross-NAT pairs: {} hole-punched, {} relayed; hole punches: {} succeeded, {} failed",
        count("hole_punched"),
        count("relayed"),
        report.punched,
        report.punch_failures
    );
    println!(
        "bytes relayed (sent by circuit ends, all nodes): {:.0}",
        report.relayed_bytes
    );
    for (i, name) in NAMES.iter().enumerate() {
        let reach = lab
            .get(i, "/v1/status")
            .and_then(|s| s["reachability"].as_str().map(str::to_string))
            .unwrap_or_default();
        println!("  {name:>5} reachability: {reach}");
    }
}

/// Runs the lab to a completed secure job and measures it.
fn exercise(lab: &mut Lab) -> Report {
    let started = Instant::now();
    lab.start();
    let connected = lab.wait_all_connected(started);
    let token = lab.mesh.admin_token();
    let done = lab.run_secure_job(&token);
    assert_eq!(done["rounds_completed"], 2, "{done}");
    lab.settle_hole_punching(started + connected);
    Report {
        connected,
        kinds: lab.kinds(),
        relayed_bytes: lab.metric_sum("mesh_net_relayed_bytes_total{direction=\"out\"}"),
        punched: lab.metric_sum("mesh_net_hole_punches_total{result=\"success\"}"),
        punch_failures: lab.metric_sum("mesh_net_hole_punches_total{result=\"failure\"}"),
    }
}

/// Private nodes must know they are private, the relay that it is public.
fn assert_reachability(lab: &Lab) {
    for (i, name) in NAMES.iter().enumerate() {
        let want = if i == 0 { "public" } else { "private" };
        let status = lab.get(i, "/v1/status").unwrap_or_default();
        assert_eq!(
            status["reachability"],
            want,
            "{name}: {status}\n{}",
            lab.logs()
        );
    }
}

#[test]
fn private_nodes_behind_nats_admit_each_other_and_train_securely() {
    let Some(mut lab) = Lab::new('c', Nat::Cone) else {
        return;
    };
    let report = exercise(&mut lab);
    print_report(
        "port-preserving NATs (hole punching allowed)",
        &lab,
        &report,
    );
    assert_reachability(&lab);
    for ((i, j), kind) in &report.kinds {
        if cross_nat(*i, *j) {
            assert!(
                kind == "hole_punched" || kind == "relayed",
                "{} - {} crossed the NATs as {kind}",
                NAMES[*i],
                NAMES[*j]
            );
        } else {
            assert_not_relayed(*i, *j, kind);
        }
    }
}

/// A pair on one network (or with the relay) may have met through the
/// relay (a Kademlia query can dial a circuit address), but hole punching
/// then opens a direct link: it never stays relayed.
fn assert_not_relayed(i: usize, j: usize, kind: &str) {
    assert!(
        kind == "direct" || kind == "hole_punched",
        "{} - {} are on one network but connected as {kind}",
        NAMES[i],
        NAMES[j]
    );
}

#[test]
fn with_hole_punching_blocked_everything_runs_through_the_relay() {
    let Some(mut lab) = Lab::new('s', Nat::Symmetric) else {
        return;
    };
    let report = exercise(&mut lab);
    print_report("symmetric NATs (hole punching blocked)", &lab, &report);
    assert_reachability(&lab);
    for ((i, j), kind) in &report.kinds {
        if cross_nat(*i, *j) {
            assert_eq!(kind, "relayed", "{} - {}", NAMES[*i], NAMES[*j]);
        } else {
            assert_not_relayed(*i, *j, kind);
        }
    }
    assert!(
        report.relayed_bytes > 0.0,
        "no bytes went through the relay"
    );
}
