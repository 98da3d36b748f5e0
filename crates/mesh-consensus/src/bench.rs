//! Performance groundwork: the fsync cost of the disk under the data
//! directory, an in-process committee on the in-memory network
//! ([`LocalCommittee`], also the harness of the failure tests), and a
//! closed-loop commit benchmark over it.
//!
//! The benchmark measures the consensus path with durable storage (every
//! commit fsynced on a majority) but no real network; the node runtime's
//! benchmark over real processes builds on the same report type.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_security::identity::NodeIdentity;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::command::Command;
use crate::error::ConsensusError;
use crate::memnet::MemNet;
use crate::node::{ConsensusConfig, ConsensusNode};
use crate::types::{MemberId, MemberInfo};

/// Most fsync samples [`measure_fsync`] takes.
pub const FSYNC_SAMPLES_MAX: usize = 10_000;

/// Fsync latency of a disk.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct FsyncReport {
    /// Samples taken.
    pub samples: usize,
    /// Median write+fsync time, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, in milliseconds.
    pub p99_ms: f64,
}

/// Times `samples` small writes each followed by an fsync, in a file under `dir`.
pub fn measure_fsync(dir: &Path, samples: usize) -> std::io::Result<FsyncReport> {
    measure_fsync_concurrent(dir, 1, samples)
}

/// Most writers [`measure_fsync_concurrent`] runs at once.
pub const FSYNC_WRITERS_MAX: usize = 64;

/// Like [`measure_fsync`], with `writers` threads (one file each) writing and
/// fsyncing at the same time, as the voters of a committee on one disk do at
/// every commit; the report covers every writer's samples.
pub fn measure_fsync_concurrent(
    dir: &Path,
    writers: usize,
    samples: usize,
) -> std::io::Result<FsyncReport> {
    Ok(FsyncReport::from_times(fsync_times(dir, writers, samples)?))
}

/// The time of every write+fsync of [`measure_fsync_concurrent`], unsorted,
/// for callers that pool samples taken at several moments.
pub fn fsync_times(dir: &Path, writers: usize, samples: usize) -> std::io::Result<Vec<Duration>> {
    let writers = writers.clamp(1, FSYNC_WRITERS_MAX);
    let samples = samples.clamp(1, FSYNC_SAMPLES_MAX);
    let start = std::sync::Barrier::new(writers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let path = dir.join(format!(".fsync-probe-{w}"));
                let start = &start;
                scope.spawn(move || probe_file(&path, samples, start))
            })
            .collect();
        let mut all = Vec::with_capacity(writers * samples);
        for handle in handles {
            let joined = handle
                .join()
                .map_err(|_| std::io::Error::other("an fsync probe thread panicked"))?;
            all.extend(joined?);
        }
        Ok(all)
    })
}

impl FsyncReport {
    /// The report of write+fsync `times`, in any order.
    pub fn from_times(mut times: Vec<Duration>) -> Self {
        times.sort();
        Self {
            samples: times.len(),
            p50_ms: ms(percentile(&times, 0.50)),
            p99_ms: ms(percentile(&times, 0.99)),
        }
    }
}

/// One probe: appends 8 bytes and fsyncs, `samples` times, once every
/// writer is ready; the file is removed after.
fn probe_file(
    path: &Path,
    samples: usize,
    start: &std::sync::Barrier,
) -> std::io::Result<Vec<Duration>> {
    let created = std::fs::File::create(path);
    // Every writer passes the barrier, even one whose file failed, so none waits forever.
    start.wait();
    let mut file = created?;
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let started = Instant::now();
        file.write_all(&(i as u64).to_le_bytes())?;
        file.sync_data()?;
        times.push(started.elapsed());
    }
    drop(file);
    let _ = std::fs::remove_file(path);
    Ok(times)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let pos = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[pos.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One closed-loop run.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Concurrent clients, each with one proposal in flight.
    pub clients: usize,
    /// Commits measured.
    pub commits: usize,
    /// Proposals that failed.
    pub errors: usize,
    /// Measured wall time, in milliseconds.
    pub duration_ms: f64,
    /// Commits per second.
    pub throughput_per_s: f64,
    /// Median commit latency, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile commit latency, in milliseconds.
    pub p99_ms: f64,
    /// Slowest commit, in milliseconds.
    pub max_ms: f64,
}

/// A committee of nodes in one process on a [`MemNet`], each with its own
/// redb store under one root directory.
pub struct LocalCommittee {
    /// The network connecting them.
    pub net: Arc<MemNet>,
    /// Running nodes.
    pub nodes: BTreeMap<MemberId, ConsensusNode>,
    root: PathBuf,
    tweak: fn(&mut ConsensusConfig),
    identities: BTreeMap<MemberId, NodeIdentity>,
}

/// The identity of the `i`-th node of a local committee (deterministic).
pub fn local_identity(i: usize) -> NodeIdentity {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    NodeIdentity::from_seed(&seed)
}

impl LocalCommittee {
    /// Starts `voters + learners` nodes, bootstraps the voters and adds the
    /// learners; `tweak` adjusts each node's configuration.
    pub async fn start(
        root: &Path,
        voters: usize,
        learners: usize,
        tweak: fn(&mut ConsensusConfig),
    ) -> Result<Self, ConsensusError> {
        let mut c = Self {
            net: MemNet::new(),
            nodes: BTreeMap::new(),
            root: root.to_path_buf(),
            tweak,
            identities: BTreeMap::new(),
        };
        let mut members = BTreeMap::new();
        let mut spares = Vec::new();
        for i in 0..voters + learners {
            let identity = local_identity(i);
            let zone = Some(format!("zone-{}", i % 3));
            let info = MemberInfo::new(&identity.node_id(), format!("mem://{i}"), zone);
            let id = info.member_id();
            c.identities.insert(id, identity);
            if i < voters {
                members.insert(id, info);
            } else {
                spares.push(info);
            }
            c.start_node(id).await?;
        }
        if let Some(first) = c.nodes.values().next() {
            first.bootstrap(members).await?;
        }
        for info in spares {
            c.add_learner(info).await?;
        }
        Ok(c)
    }

    /// Starts one more node with a fresh store and adds it as a learner.
    pub async fn add_node(&mut self) -> Result<MemberId, ConsensusError> {
        let i = self.identities.len();
        let identity = local_identity(i);
        let zone = Some(format!("zone-{}", i % 3));
        let info = MemberInfo::new(&identity.node_id(), format!("mem://{i}"), zone);
        let id = info.member_id();
        self.identities.insert(id, identity);
        self.start_node(id).await?;
        self.add_learner(info).await?;
        Ok(id)
    }

    /// Adds a learner through the current leader, retrying (bounded) while
    /// the leader is still settling its first membership.
    async fn add_learner(&self, info: MemberInfo) -> Result<(), ConsensusError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leader = self
                .wait_leader(Duration::from_secs(30))
                .await
                .ok_or(ConsensusError::NoLeader)?;
            match self.nodes[&leader].add_learner(info.clone(), true).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tracing::debug!(error = %e, "add learner: retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The identity of a member.
    pub fn identity(&self, id: MemberId) -> Option<&NodeIdentity> {
        self.identities.get(&id)
    }

    /// Every member id, running or not.
    pub fn ids(&self) -> Vec<MemberId> {
        self.identities.keys().copied().collect()
    }

    /// Opens node `id` from its data directory and attaches it to the network.
    pub async fn start_node(&mut self, id: MemberId) -> Result<(), ConsensusError> {
        let identity = self
            .identities
            .get(&id)
            .cloned()
            .ok_or_else(|| ConsensusError::Config(format!("unknown member {id}")))?;
        let pos = self.identities.keys().position(|k| *k == id).unwrap_or(0);
        let mut config = ConsensusConfig::new(self.data_dir(id), "local-mesh");
        config.address = format!("mem://{id}");
        config.zone = Some(format!("zone-{}", pos % 3));
        (self.tweak)(&mut config);
        let transport = self.net.transport(id);
        let node =
            ConsensusNode::open(config, identity, transport, &mut Registry::default()).await?;
        self.net.register(node.clone());
        self.nodes.insert(id, node);
        Ok(())
    }

    /// The data directory of node `id`.
    pub fn data_dir(&self, id: MemberId) -> PathBuf {
        self.root.join(format!("{id}"))
    }

    /// Crashes node `id`: detaches it from the network and stops it.
    pub async fn stop_node(&mut self, id: MemberId) -> Result<(), ConsensusError> {
        self.net.drop_node(id);
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await?;
        }
        Ok(())
    }

    /// The leader that a running node reports and that is itself running
    /// and leading, waiting up to `timeout`.
    pub async fn wait_leader(&self, timeout: Duration) -> Option<MemberId> {
        self.wait_leader_among(&self.nodes.keys().copied().collect::<Vec<_>>(), timeout)
            .await
    }

    /// Like [`Self::wait_leader`], among the nodes `ids` only.
    pub async fn wait_leader_among(&self, ids: &[MemberId], timeout: Duration) -> Option<MemberId> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            for id in ids {
                let Some(node) = self.nodes.get(id) else {
                    continue;
                };
                let s = node.status();
                if s.role == "leader" && s.leader == Some(*id) {
                    return Some(*id);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Waits until every running node among `ids` has applied at least `index`.
    pub async fn wait_applied(&self, ids: &[MemberId], index: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let done = ids.iter().all(|id| {
                self.nodes
                    .get(id)
                    .is_some_and(|n| n.status().last_applied.is_some_and(|a| a >= index))
            });
            if done {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            let _ = self.stop_node(id).await;
        }
    }
}

/// Runs `clients` closed-loop clients against the leader of `committee` for
/// `duration`, each proposing one small `Put` at a time.
pub async fn closed_loop(
    committee: &LocalCommittee,
    clients: usize,
    duration: Duration,
) -> Result<BenchReport, ConsensusError> {
    let leader = committee
        .wait_leader(Duration::from_secs(10))
        .await
        .ok_or(ConsensusError::NoLeader)?;
    let node = committee.nodes[&leader].clone();
    let started = Instant::now();
    let deadline = started + duration;
    let mut handles = Vec::with_capacity(clients);
    for client in 0..clients {
        let node = node.clone();
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let key = format!("client-{client}").into_bytes();
            let mut seq = 0u64;
            while Instant::now() < deadline {
                seq += 1;
                let cmd = Command::Put {
                    key: key.clone(),
                    value: seq.to_le_bytes().to_vec(),
                };
                let t = Instant::now();
                match node.propose(cmd).await {
                    Ok(_) => latencies.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for h in handles {
        if let Ok((l, e)) = h.await {
            all.extend(l);
            errors += e;
        }
    }
    Ok(BenchReport::from_latencies(
        clients,
        all,
        errors,
        started.elapsed(),
    ))
}

impl BenchReport {
    /// Summarizes one run: every successful commit's latency, the failures, and the wall time.
    pub fn from_latencies(
        clients: usize,
        mut latencies: Vec<Duration>,
        errors: usize,
        elapsed: Duration,
    ) -> Self {
        latencies.sort();
        Self {
            clients,
            commits: latencies.len(),
            errors,
            duration_ms: ms(elapsed),
            throughput_per_s: latencies.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            p50_ms: ms(percentile(&latencies, 0.50)),
            p99_ms: ms(percentile(&latencies, 0.99)),
            max_ms: ms(latencies.last().copied().unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_concurrent_probe_reports_every_writers_samples_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let report = measure_fsync_concurrent(dir.path(), 3, 20).unwrap();
        assert_eq!(report.samples, 60);
        assert!(report.p50_ms > 0.0 && report.p50_ms <= report.p99_ms);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_probe_in_a_missing_directory_fails_without_waiting_forever() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent");
        assert!(measure_fsync_concurrent(&missing, 3, 5).is_err());
        assert!(measure_fsync(&missing, 5).is_err());
    }

    #[test]
    fn a_report_of_pooled_times_takes_their_median() {
        let times = [3u64, 1, 2, 5, 4].map(Duration::from_millis).to_vec();
        let report = FsyncReport::from_times(times);
        assert_eq!(report.samples, 5);
        assert!((report.p50_ms - 3.0).abs() < 1e-9);
        assert!((report.p99_ms - 5.0).abs() < 1e-9);
        assert_eq!(FsyncReport::from_times(Vec::new()).samples, 0);
    }
}
