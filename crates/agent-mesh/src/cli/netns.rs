//! Network namespaces for runs that need several hosts on one machine:
//! `bench chaos` (a namespace per node on a bridge, `bench_chaos/hosts.rs`)
//! and the NAT traversal test (`tests/nat_traversal.rs`, which includes this
//! file by path: public and private networks, NAT routers). Everything is
//! made with `ip` and `iptables` and needs root.
//!
//! [`Namespaces`] deletes every namespace it made when dropped, which also
//! removes their interfaces and the iptables rules inside them; a caller
//! stops the processes it runs in them first.

// The binary uses only part of this (`bench chaos` runs commands); the test
// that includes it uses the rest.
#![allow(dead_code)]

use std::process::Command;

use anyhow::{bail, Context};

/// Runs `program args`; an error carries its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    output(program, args).map(|_| ())
}

/// Runs `program args` and returns its stdout; an error carries its stderr.
pub fn output(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Namespaces made by one run, deleted when this is dropped.
#[derive(Debug, Default)]
pub struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    /// None made yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes namespace `name` with its loopback up.
    pub fn add(&mut self, name: &str) -> anyhow::Result<()> {
        run("ip", &["netns", "add", name])?;
        self.names.push(name.to_string());
        run("ip", &["-n", name, "link", "set", "lo", "up"])
    }

    /// Runs `program args` inside namespace `ns`.
    pub fn exec(&self, ns: &str, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["netns", "exec", ns, program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// A veth pair: `if_a` in `ns_a`, `if_b` in `ns_b`, both up. No
    /// interface is made outside the namespaces, so names need not be unique
    /// across runs.
    pub fn veth(&self, ns_a: &str, if_a: &str, ns_b: &str, if_b: &str) -> anyhow::Result<()> {
        run(
            "ip",
            &[
                "-n", ns_a, "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns",
                ns_b,
            ],
        )?;
        run("ip", &["-n", ns_a, "link", "set", if_a, "up"])?;
        run("ip", &["-n", ns_b, "link", "set", if_b, "up"])
    }

    /// A bridge `name` in `ns`, up, with `ports` (interfaces in `ns`) on it.
    pub fn bridge(&self, ns: &str, name: &str, ports: &[&str]) -> anyhow::Result<()> {
        run("ip", &["-n", ns, "link", "add", name, "type", "bridge"])?;
        run("ip", &["-n", ns, "link", "set", name, "up"])?;
        for port in ports {
            run("ip", &["-n", ns, "link", "set", port, "master", name])?;
        }
        Ok(())
    }

    /// Gives `ifname` in `ns` the address `cidr` (`10.0.0.1/24`).
    pub fn address(&self, ns: &str, ifname: &str, cidr: &str) -> anyhow::Result<()> {
        run("ip", &["-n", ns, "addr", "add", cidr, "dev", ifname])
    }

    /// Routes everything not on a local network through `gateway`.
    pub fn default_route(&self, ns: &str, gateway: &str) -> anyhow::Result<()> {
        run("ip", &["-n", ns, "route", "add", "default", "via", gateway])
    }

    /// A command that runs `program` inside `ns`.
    pub fn command(ns: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns, program]);
        command
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.names.drain(..).rev() {
            if let Err(e) = run("ip", &["netns", "del", &name]) {
                eprintln!("could not delete network namespace {name}: {e:#}");
            }
        }
    }
}

/// Why namespaces cannot be made here (not root, no `ip`, or the kernel or
/// sandbox refuses), or `None` when they can: a probe namespace is made and
/// deleted.
pub fn unavailable(probe: &str) -> Option<String> {
    match output("id", &["-u"]) {
        Ok(uid) if uid.trim() == "0" => {}
        Ok(uid) => return Some(format!("network namespaces need root (uid {})", uid.trim())),
        Err(e) => return Some(format!("cannot tell the user id: {e:#}")),
    }
    for tool in ["ip", "iptables"] {
        if let Err(e) = output("sh", &["-c", &format!("command -v {tool}")]) {
            return Some(format!("{tool} is not installed: {e:#}"));
        }
    }
    let mut namespaces = Namespaces::new();
    match namespaces.add(probe) {
        Ok(()) => None,
        Err(e) => Some(format!("`ip netns add` failed: {e:#}")),
    }
}
