//! Where the chaos nodes run and how faults reach them.
//!
//! With network namespaces (root, `ip`, `iptables`, `tc`), every node runs in
//! a namespace of its own, linked to a private bridge that the harness's
//! clients also sit on: a partition or packet loss is an iptables rule in the
//! node's namespace, a slow link a `tbf` qdisc on its interface, and its data
//! folder is a tmpfs that can be filled. Without them, the nodes run on
//! loopback and only process faults apply (kill -9, SIGSTOP, clock skew).
//! Clock skew restarts a node under libfaketime (`LD_PRELOAD`) when it is
//! installed, moving its wall clock only.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;

use super::schedule::FaultKind;
use crate::cli::bench_consensus::{exe, path_str};
use crate::cli::netns::run;

/// libfaketime's library, where Debian's `faketime` package puts it.
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// Port of every node's P2P listener in its namespace.
const P2P_PORT: u16 = 7_000;
/// Port of every node's HTTP API in its namespace.
const HTTP_PORT: u16 = 8_080;
/// Size of each node's data tmpfs (namespaces).
const DATA_TMPFS_MB: u64 = 256;

/// How the nodes are networked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// A namespace per node on a private bridge.
    Namespaces,
    /// Loopback only.
    Loopback,
}

/// One node's place and process.
pub struct NodeHost {
    /// Its folder (keys, config, log, data).
    pub dir: PathBuf,
    /// Its address: in its namespace, or 127.0.0.1.
    pub ip: String,
    /// Its HTTP API.
    pub http_url: String,
    p2p_port: u16,
    child: Option<Child>,
    /// Times the harness started it again.
    pub restarts: u32,
}

/// The nodes and the network they run on.
pub struct Hosts {
    /// Namespaces or loopback.
    pub network: Network,
    /// The nodes.
    pub nodes: Vec<NodeHost>,
    /// libfaketime, when installed.
    faketime: Option<PathBuf>,
    /// Unique prefix of this run's namespaces and links.
    tag: String,
}

impl Hosts {
    /// Sets up `nodes` hosts under `root`: namespaces when `want_namespaces`
    /// and they can be made, else loopback (the reason is returned).
    pub fn new(
        root: &Path,
        nodes: usize,
        want_namespaces: bool,
    ) -> anyhow::Result<(Self, Option<String>)> {
        let tag = format!("amc{}", std::process::id() % 100_000);
        let faketime = Some(PathBuf::from(FAKETIME_LIB)).filter(|p| p.exists());
        let mut hosts = Self {
            network: Network::Loopback,
            nodes: Vec::new(),
            faketime,
            tag,
        };
        let mut fallback = None;
        if want_namespaces {
            match hosts.make_namespaces(root, nodes) {
                Ok(()) => hosts.network = Network::Namespaces,
                Err(e) => {
                    hosts.remove_namespaces(nodes);
                    fallback = Some(format!("{e:#}"));
                }
            }
        } else {
            fallback = Some("namespaces not asked for (--loopback)".into());
        }
        if hosts.network == Network::Loopback {
            // Fixed ports (so restarts keep them), apart from other runs'.
            let base = 20_000 + (std::process::id() % 2_000) as u16 * 10;
            hosts.nodes = (0..nodes)
                .map(|i| {
                    let port = base + 2 * i as u16;
                    NodeHost::new(root, i, "127.0.0.1", port, port + 1)
                })
                .collect();
        }
        Ok((hosts, fallback))
    }

    /// The fault kinds this setup can inject.
    pub fn kinds(&self) -> Vec<FaultKind> {
        FaultKind::ALL
            .into_iter()
            .filter(|k| self.network == Network::Namespaces || !k.needs_namespaces())
            .filter(|k| *k != FaultKind::ClockSkew || self.faketime.is_some())
            .collect()
    }

    /// Why some kinds are left out, for the summary.
    pub fn skipped(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.network == Network::Loopback {
            out.push("partitions, loss, slow links and full disks need network namespaces".into());
        }
        if self.faketime.is_none() {
            out.push(format!("clock skew needs libfaketime ({FAKETIME_LIB})"));
        }
        out
    }

    fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    /// The private subnet's first three octets.
    fn subnet(&self) -> String {
        format!(
            "10.{}.{}",
            200 + std::process::id() % 50,
            std::process::id() % 250
        )
    }

    fn make_namespaces(&mut self, root: &Path, nodes: usize) -> anyhow::Result<()> {
        let (bridge, subnet) = (self.bridge(), self.subnet());
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        run(
            "ip",
            &["addr", "add", &format!("{subnet}.254/24"), "dev", &bridge],
        )?;
        run("ip", &["link", "set", &bridge, "up"])?;
        // Bridged frames pass the host's FORWARD chain (br_netfilter), whose
        // policy may be DROP (Docker sets it): let the bridge's own traffic through.
        run(
            "iptables",
            &[
                "-I", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT",
            ],
        )?;
        for i in 0..nodes {
            let (ns, veth) = (self.ns(i), format!("{}v{i}", self.tag));
            let ip = format!("{subnet}.{}", i + 1);
            run("ip", &["netns", "add", &ns])?;
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run("ip", &["link", "set", &veth, "master", &bridge, "up"])?;
            run(
                "ip",
                &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            )?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            run("ip", &["netns", "exec", &ns, "iptables", "-F"])?;
            let host = NodeHost::new(root, i, &ip, P2P_PORT, HTTP_PORT);
            let data = host.dir.join("data");
            std::fs::create_dir_all(&data)?;
            let size = format!("size={DATA_TMPFS_MB}m");
            run(
                "mount",
                &["-t", "tmpfs", "-o", &size, "tmpfs", path_str(&data)?],
            )?;
            self.nodes.push(host);
        }
        Ok(())
    }

    fn remove_namespaces(&mut self, nodes: usize) {
        for host in &self.nodes {
            let _ = run("umount", &["-l", &host.dir.join("data").to_string_lossy()]);
        }
        for i in 0..nodes {
            let _ = run("ip", &["netns", "del", &self.ns(i)]);
        }
        let bridge = self.bridge();
        let _ = run(
            "iptables",
            &[
                "-D", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT",
            ],
        );
        let _ = run("ip", &["link", "del", &bridge]);
    }

    /// Every node's P2P address, for the bootstrap lists.
    pub fn p2p_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(NodeHost::p2p_addr).collect()
    }

    /// Starts node `i` (with its wall clock moved by `skew_s` seconds when not 0).
    pub fn start(&mut self, i: usize, skew_s: i64) -> anyhow::Result<()> {
        let host = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(host.dir.join("node.log"))?;
        let config = host.dir.join("node.toml");
        let mut command = match self.network {
            Network::Namespaces => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &self.ns(i)]).arg(exe()?);
                c
            }
            Network::Loopback => Command::new(exe()?),
        };
        command
            .args(["node", "--config", path_str(&config)?])
            .stdout(Stdio::null())
            .stderr(log);
        if let (Some(lib), true) = (&self.faketime, skew_s != 0) {
            command
                .env("LD_PRELOAD", lib)
                .env("FAKETIME", format!("{skew_s:+}"))
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_NO_CACHE", "1");
        }
        let child = command.spawn().context("starting a node process")?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// SIGKILL to node `i`; waits for it to die.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to node `i`.
    pub fn signal(&self, i: usize, signal: &str) -> anyhow::Result<()> {
        match &self.nodes[i].child {
            Some(child) => run("kill", &[&format!("-{signal}"), &child.id().to_string()]),
            None => Ok(()),
        }
    }

    /// Starts node `i` again if its process has exited; says whether it had.
    pub fn restart_if_exited(&mut self, i: usize) -> anyhow::Result<bool> {
        let exited = match self.nodes[i].child.as_mut() {
            None => true,
            Some(child) => !matches!(child.try_wait(), Ok(None)),
        };
        if exited {
            self.nodes[i].child = None;
            self.nodes[i].restarts += 1;
            self.start(i, 0)?;
        }
        Ok(exited)
    }

    /// Cuts nodes `side` off from every other node (both directions).
    pub fn partition(&self, side: &[usize]) -> anyhow::Result<()> {
        for &i in side {
            let ns = self.ns(i);
            for (j, other) in self.nodes.iter().enumerate() {
                if side.contains(&j) {
                    continue;
                }
                for (chain, flag) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
                    let args = [
                        "netns", "exec", &ns, "iptables", "-A", chain, flag, &other.ip, "-j",
                        "DROP",
                    ];
                    run("ip", &args)?;
                }
            }
        }
        Ok(())
    }

    /// Drops `percent` of the packets arriving at node `i`.
    pub fn loss(&self, i: usize, percent: i64) -> anyhow::Result<()> {
        let p = format!("{:.2}", percent as f64 / 100.0);
        let args = [
            "netns",
            "exec",
            &self.ns(i),
            "iptables",
            "-A",
            "INPUT",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &p,
            "-j",
            "DROP",
        ];
        run("ip", &args)
    }

    /// Limits node `i`'s outgoing link to 256 kbit/s, queueing up to 300 ms.
    pub fn slow_link(&self, i: usize) -> anyhow::Result<()> {
        let args = [
            "-n",
            &self.ns(i),
            "qdisc",
            "add",
            "dev",
            "eth0",
            "root",
            "tbf",
            "rate",
            "256kbit",
            "burst",
            "16kbit",
            "latency",
            "300ms",
        ];
        run("tc", &args)
    }

    /// Fills node `i`'s data disk; returns the ballast file to delete.
    pub fn fill_disk(&self, i: usize) -> anyhow::Result<PathBuf> {
        use std::io::Write;
        let path = self.nodes[i].dir.join("data").join("ballast");
        let mut file = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..DATA_TMPFS_MB {
            if file.write_all(&chunk).is_err() {
                break;
            }
        }
        Ok(path)
    }

    /// Removes every network fault from every node.
    pub fn heal_network(&self) {
        if self.network != Network::Namespaces {
            return;
        }
        for i in 0..self.nodes.len() {
            let ns = self.ns(i);
            let _ = run("ip", &["netns", "exec", &ns, "iptables", "-F"]);
            let _ = run("tc", &["-n", &ns, "qdisc", "del", "dev", "eth0", "root"]);
        }
    }

    /// Stops every node.
    pub fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            let _ = self.signal(i, "CONT");
            self.kill(i);
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.stop_all();
        if self.network == Network::Namespaces {
            let nodes = self.nodes.len();
            self.remove_namespaces(nodes);
        }
    }
}

impl NodeHost {
    fn new(root: &Path, i: usize, ip: &str, p2p_port: u16, http_port: u16) -> Self {
        Self {
            dir: root.join(format!("node-{i}")),
            ip: ip.to_string(),
            http_url: format!("https://{ip}:{http_port}"),
            p2p_port,
            child: None,
            restarts: 0,
        }
    }

    /// Its P2P TCP multiaddress.
    pub fn p2p_addr(&self) -> String {
        format!("/ip4/{}/tcp/{}", self.ip, self.p2p_port)
    }

    /// Its HTTP listen address.
    pub fn http_addr(&self) -> String {
        self.http_url.trim_start_matches("https://").to_string()
    }
}
