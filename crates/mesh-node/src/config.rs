//! The node's configuration: a TOML file, then environment overrides.
//!
//! Every field has a default that suits a development mesh on one machine, so
//! the smallest file names only the key, the certificate and the CA. Paths in
//! the file are taken relative to the file's folder. After the file, any
//! `AGENT_MESH_*` variable listed in [`ENV_OVERRIDES`] replaces its field, so
//! containers can share one file and differ by environment.
//!
//! ```toml
//! mesh_id = "dev"
//! data_dir = "node-1"
//! [identity]
//! key = "node-1/node.key.pem"
//! cert = "node-1/node.cert.pem"
//! ca_cert = "ca/ca.cert.pem"
//! ca_pin = "ca/ca.pin"
//! [network]
//! listen = ["/ip4/127.0.0.1/tcp/0"]
//! bootstrap = ["/ip4/127.0.0.1/tcp/7001"]
//! [http]
//! addr = "127.0.0.1:0"
//! ```

use std::path::{Path, PathBuf};

use mesh_federated::data::{DataError, DataSource};
use serde::{Deserialize, Serialize};

/// Largest config file read (a config is a few hundred bytes).
pub const CONFIG_BYTES_MAX: u64 = 1 << 20;

/// What is wrong with a configuration. Fix the file or variable and start again.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (the cause is the error's `source()`).
    #[error("cannot read config {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`CONFIG_BYTES_MAX`].
    #[error("config {path} is {size_bytes} bytes, the limit is {CONFIG_BYTES_MAX}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size_bytes: u64,
    },
    /// The TOML does not parse or has unknown fields.
    #[error("config {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// An environment variable has a value that does not fit its field.
    #[error("environment variable {name}={value:?} is not valid: {message}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        message: String,
    },
    /// A field has a value out of range.
    #[error("config field {field}: {message}")]
    Invalid {
        /// The field, in dotted form.
        field: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
}

/// True when `addr` (`HOST:PORT`) names a loopback address (`localhost`
/// counts); a host name that might resolve elsewhere does not.
pub fn addr_is_loopback(addr: &str) -> bool {
    host_is_loopback(addr.rsplit_once(':').map_or(addr, |(host, _)| host))
}

/// True when `host` (a name, an IPv4 address, or an IPv6 address with or
/// without brackets) is `localhost` or a loopback address.
pub fn host_is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The whole configuration of one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// The mesh this node belongs to; messages for other meshes are refused.
    pub mesh_id: String,
    /// Where the node keeps its durable state (Raft log, snapshots, runtime info).
    pub data_dir: PathBuf,
    /// The failure domain this node runs in (a region, data centre or
    /// rack: `eu-west-1a`); the committee spreads its voters and each
    /// round its final aggregators across zones. Unset: no zone.
    pub zone: Option<String>,
    /// Key, certificate and trust anchor.
    pub identity: IdentityConfig,
    /// Peer-to-peer network.
    pub network: NetworkConfig,
    /// HTTP API.
    pub http: HttpConfig,
    /// What `/readyz` demands of a committee member.
    pub health: HealthConfig,
    /// Raft committee.
    pub consensus: ConsensusConfigFile,
    /// Logging.
    pub log: LogConfig,
    /// This node's private training data.
    pub data: DataConfig,
    /// The async runtime the node runs on.
    pub runtime: RuntimeConfig,
    /// The round engine: its blob cache.
    pub round: RoundConfig,
    /// Misbehaviour for robustness tests; the node refuses to start with it
    /// unless `agent-mesh node --allow-adversary` is given.
    pub adversary: AdversaryConfig,
    /// The user's own training process (`[learner] command = [...]`): jobs
    /// whose model is a learner layout train through it (`docs/learner.md`).
    pub learner: Option<mesh_learner::LearnerConfig>,
    /// Distributed tracing of rounds (OTLP); off unless an endpoint is set.
    pub telemetry: TelemetryConfig,
    /// NAT traversal: reachability probes, relays, hole punching, external
    /// addresses (`docs/operations.md`, "NAT traversal").
    pub nat: NatFileConfig,
}

/// Distributed tracing: spans of every round step, sent over OTLP/HTTP
/// (protobuf) to a collector the operator names. Nothing is exported and no
/// exporter thread runs while `otlp_endpoint` is empty (the default): the node
/// never sends traces anywhere it was not told to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL, such as `http://127.0.0.1:4318`
    /// (spans go to `<base>/v1/traces`; a URL ending in `/v1/traces` is used
    /// as it is). Empty: tracing off. Plain `http` only.
    pub otlp_endpoint: String,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// The fraction of rounds traced, 0 to 1; the decision is a function of
    /// the round's trace id, so every node traces the same rounds.
    pub sample_ratio: f64,
}

/// NAT traversal (`[nat]`). A node behind a NAT learns so from AutoNAT
/// probes, reserves a slot on a relay and advertises its `/p2p-circuit`
/// address; relayed connections are upgraded to direct ones by hole punching
/// where the NATs allow it. Nodes with `relay_server = true` relay for others
/// within the limits below.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatFileConfig {
    /// Multiaddresses at which this node is reachable although it listens
    /// elsewhere (port forwarding, a NAT gateway's public IP); announced to
    /// peers as confirmed, and the node counts as publicly reachable.
    pub external_addresses: Vec<String>,
    /// Ask bootstrap and relay peers to dial this node back (AutoNAT).
    pub autonat: bool,
    /// Delay of the first reachability probe, and between probes until
    /// the answer is certain.
    pub autonat_probe_interval_ms: u64,
    /// Reserve on relays while AutoNAT finds this node private.
    pub relay_client: bool,
    /// Relays to reserve on at once.
    pub relays_max: usize,
    /// Upgrade relayed connections to direct ones by hole punching (DCUtR).
    pub hole_punching: bool,
    /// Serve as a circuit relay for peers behind NATs (the relay role).
    pub relay_server: bool,
    /// Relay: reservations held by peers in total.
    pub relay_reservations_max: usize,
    /// Relay: circuits open at once.
    pub relay_circuits_max: usize,
    /// Relay: circuits open at once per source peer.
    pub relay_circuits_per_peer_max: usize,
    /// Relay: longest life of one circuit (the peers reconnect after it).
    pub relay_circuit_duration_ms: u64,
    /// Relay: most bytes carried by one circuit, both directions together.
    pub relay_circuit_bytes_max: u64,
}

impl Default for NatFileConfig {
    fn default() -> Self {
        let net = mesh_net::NatConfig::default();
        let limits = net.relay_limits;
        Self {
            external_addresses: Vec::new(),
            autonat: net.autonat,
            autonat_probe_interval_ms: duration_ms(net.autonat_probe_interval),
            relay_client: net.relay_client,
            relays_max: net.relays_max,
            hole_punching: net.hole_punching,
            relay_server: net.relay_server,
            relay_reservations_max: limits.reservations_max,
            relay_circuits_max: limits.circuits_max,
            relay_circuits_per_peer_max: limits.circuits_per_peer_max,
            relay_circuit_duration_ms: duration_ms(limits.circuit_duration),
            relay_circuit_bytes_max: limits.circuit_bytes_max,
        }
    }
}

fn duration_ms(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl NatFileConfig {
    /// The network layer's NAT settings, with `external_addresses` parsed.
    pub fn net_config(&self, external_addresses: Vec<mesh_net::Multiaddr>) -> mesh_net::NatConfig {
        use std::time::Duration;
        let defaults = mesh_net::RelayLimits::default();
        mesh_net::NatConfig {
            autonat: self.autonat,
            autonat_probe_interval: Duration::from_millis(self.autonat_probe_interval_ms),
            relay_client: self.relay_client,
            relays_max: self.relays_max,
            hole_punching: self.hole_punching,
            relay_server: self.relay_server,
            relay_limits: mesh_net::RelayLimits {
                reservations_max: self.relay_reservations_max,
                circuits_max: self.relay_circuits_max,
                circuits_per_peer_max: self.relay_circuits_per_peer_max,
                circuit_duration: Duration::from_millis(self.relay_circuit_duration_ms),
                circuit_bytes_max: self.relay_circuit_bytes_max,
                ..defaults
            },
            external_addresses,
        }
    }

    /// Checks the bounds: every limit positive, probes not faster than 100 ms.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let checks: [(bool, &'static str, &str); 4] = [
            (
                self.autonat_probe_interval_ms < 100,
                "nat.autonat_probe_interval_ms",
                "must be at least 100",
            ),
            (
                self.relay_client && self.relays_max == 0,
                "nat.relays_max",
                "must be at least 1 while relay_client is on",
            ),
            (
                self.relay_reservations_max == 0
                    || self.relay_circuits_max == 0
                    || self.relay_circuits_per_peer_max == 0,
                "nat.relay_circuits_max",
                "relay_reservations_max, relay_circuits_max and relay_circuits_per_peer_max must be at least 1",
            ),
            (
                self.relay_circuit_duration_ms == 0 || self.relay_circuit_bytes_max == 0,
                "nat.relay_circuit_bytes_max",
                "relay_circuit_duration_ms and relay_circuit_bytes_max must be positive",
            ),
        ];
        match checks.into_iter().find(|(bad, _, _)| *bad) {
            Some((_, field, message)) => Err(ConfigError::Invalid {
                field,
                message: message.to_owned(),
            }),
            None => Ok(()),
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            service_name: "agent-mesh".into(),
            sample_ratio: 1.0,
        }
    }
}

impl TelemetryConfig {
    /// The URL spans are posted to, or `None` when tracing is off.
    pub fn traces_url(&self) -> Option<String> {
        let base = self.otlp_endpoint.trim();
        if base.is_empty() {
            return None;
        }
        if base.ends_with("/v1/traces") {
            return Some(base.to_owned());
        }
        Some(format!("{}/v1/traces", base.trim_end_matches('/')))
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        let endpoint = self.otlp_endpoint.trim();
        if !endpoint.is_empty() {
            let Some(rest) = endpoint.strip_prefix("http://") else {
                return Err((
                    "telemetry.otlp_endpoint",
                    format!(
                        "{endpoint:?} must be an http:// URL (OTLP/HTTP; this build sends no TLS: \
                         put a collector next to the node for https)"
                    ),
                ));
            };
            let host = rest.split('/').next().unwrap_or_default();
            if host.is_empty() || endpoint.len() > 512 || endpoint.chars().any(char::is_whitespace)
            {
                return Err((
                    "telemetry.otlp_endpoint",
                    format!("{endpoint:?} needs a host (http://HOST:PORT), no spaces, at most 512 bytes"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(("telemetry.sample_ratio", "must be from 0 to 1".into()));
        }
        if self.service_name.trim().is_empty() || self.service_name.len() > 128 {
            return Err((
                "telemetry.service_name",
                "must be 1 to 128 characters".into(),
            ));
        }
        Ok(())
    }
}

/// Makes the node a Byzantine participant that shapes every update it sends
/// with one attack of mesh-federated (`sign-flip`, `label-flip`, `gaussian`,
/// `alie`, `ipm`, `mimic`, with `:key=value` parameters). For testing the
/// mesh's robust rules and detection against real processes only: the node
/// logs a warning at start and exports `mesh_node_adversarial 1`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdversaryConfig {
    /// The attack; empty (the default): an honest node.
    pub attack: String,
}

impl AdversaryConfig {
    /// The configured attack, if any (checked by [`NodeConfig::validate`]).
    pub fn attack(&self) -> Option<mesh_federated::attack::Attack> {
        if self.attack.is_empty() {
            return None;
        }
        self.attack.parse().ok()
    }
}

/// The node's async runtime.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Worker threads; 0 (the default) means one per CPU core. Set it lower
    /// when several nodes share one machine: each node's workers wake each
    /// other for work they could have done on one thread, and on a machine
    /// with fewer cores than threads those wake-ups wait for a core. 1 is a
    /// current-thread runtime: all tasks on the thread that drives the node.
    pub worker_threads: usize,
}

/// Most worker threads `runtime.worker_threads` may ask for.
pub const WORKER_THREADS_MAX: usize = 1_024;

/// The round engine's settings: the blob cache that holds the models and
/// group results this node fetched, built or serves to peers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoundConfig {
    /// Most bytes of blobs held in memory (at least
    /// [`CACHE_CAPACITY_BYTES_MIN`]); a blob larger than this is not cached.
    pub cache_capacity_bytes: usize,
    /// What the cache evicts first when full: `lru` (the default, least
    /// recently used), `lfu` (least frequently used) or `adaptive`
    /// (W-TinyLFU: resists scans of blobs used once).
    pub cache_policy: mesh_round::cache::CachePolicy,
}

/// Smallest `round.cache_capacity_bytes`: every model a round uses passes
/// through the cache, and 1 MiB holds the MLP preset's model of 100,010
/// parameters twice over.
pub const CACHE_CAPACITY_BYTES_MIN: usize = 1 << 20;

impl Default for RoundConfig {
    fn default() -> Self {
        Self {
            cache_capacity_bytes: mesh_round::protocol::CACHE_CAPACITY_BYTES_DEFAULT,
            cache_policy: mesh_round::cache::CachePolicy::default(),
        }
    }
}

/// The node's private data: a folder of MNIST IDX files or the MNIST subset
/// built into the binary, either whole or one named shard of a seeded
/// partition (for demos on one machine).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Name jobs bind to (a job's `dataset`); empty: this node trains nothing.
    pub dataset: String,
    /// Folder with `train.csv` + `test.csv` (or `.parquet`), `train/` +
    /// `test/` image folders (`<class>/<file>`), or `train-*` and `t10k-*`
    /// IDX files (gzip or not); or `builtin:mnist-10k` for the set built
    /// into the binary.
    pub dir: Option<DataSource>,
    /// The label (or regression target) column of a table.
    pub label: String,
    /// `classification` or `regression` (tables).
    pub task: String,
    /// Missing table cells: `refuse` (the error names the row and column),
    /// `mean` or `zero`.
    pub missing: String,
    /// Split the training set into this many shards (1: use it all).
    pub shards: usize,
    /// Which shard this node holds, from 0.
    pub shard: usize,
    /// How to split: iid, dirichlet[:ALPHA], shards, quantity[:ALPHA].
    pub partition: String,
    /// Seed of the split (every node of a demo must use the same).
    pub seed: u64,
    /// Rows of the test set used to evaluate models this node aggregates.
    pub validation_rows: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: "mnist".into(),
            dir: None,
            label: "label".into(),
            task: "classification".into(),
            missing: "refuse".into(),
            shards: 1,
            shard: 0,
            partition: "iid".into(),
            seed: 0,
            validation_rows: 2_000,
        }
    }
}

/// Key, certificate and CA files.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// The node's private key (PKCS#8 PEM, mode 0600), from `agent-mesh keygen`.
    pub key: PathBuf,
    /// The node's certificate (PEM), from `agent-mesh ca issue`.
    pub cert: PathBuf,
    /// The mesh CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// The CA pin: a file holding the hex SHA-256 of the CA certificate, or the hex itself.
    pub ca_pin: String,
    /// Optional `revocations.jsonl` from `agent-mesh ca revoke`; re-read when it changes,
    /// and peers holding a revoked certificate are disconnected.
    pub revocations: Option<PathBuf>,
}

/// Peer-to-peer settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Multiaddresses to listen on (TCP and QUIC).
    pub listen: Vec<String>,
    /// Multiaddresses of peers to dial at start.
    pub bootstrap: Vec<String>,
    /// Find peers on the LAN with mDNS (on for development, off in production).
    pub mdns: bool,
    /// Connections the node tries to keep open, and the most admitted
    /// peers it holds open (more are closed once unused, when
    /// `unused_connection_close_ms` is set).
    pub target_peers: usize,
    /// Most connections in total.
    pub max_connections: u32,
    /// How long the first attempt of a new peer's certificate exchange may
    /// take; each further attempt may take twice as long.
    pub admission_deadline_ms: u64,
    /// Attempts of the certificate exchange before a silent peer is
    /// disconnected (not banned: only a certificate that fails verification bans).
    pub admission_attempts: u32,
    /// How long a refused peer stays banned.
    pub ban_ms: u64,
    /// Seed for reconnection jitter.
    pub seed: u64,
    /// Close a connection this node dialled once no request has used it for
    /// this long, unless it is one of the held peers (default 30 s; 0: off,
    /// connections stay while any protocol keeps a stream open). Requests
    /// to peers that are not connected dial them on demand either way. The
    /// closer sends a closing notice first, so a peer whose connection
    /// drops without one is known to be gone at once; a crashed node that
    /// nothing was connected to counts as alive until its announcements
    /// age out (up to 35 s).
    pub unused_connection_close_ms: u64,
    /// The newest mesh protocol version the node speaks (1 to this build's
    /// newest, the default). Set it to the previous version while a mesh
    /// still has nodes of the previous release and a node must talk as they
    /// do (see `docs/operations.md`, "Upgrades"); nodes use the newest
    /// version both speak either way.
    pub max_protocol_version: u32,
}

impl NetworkConfig {
    /// The protocol versions the node speaks, from the oldest this build
    /// speaks to `max_protocol_version`.
    pub fn protocol_versions(
        &self,
    ) -> Result<mesh_net::VersionRange, mesh_net::version::VersionError> {
        mesh_net::VersionRange::capped(self.max_protocol_version)
    }
}

/// HTTP API settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to serve on (`127.0.0.1:0` picks a free port; the chosen one is in `node.json`).
    pub addr: String,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Requests slower than this are cut off.
    pub timeout_ms: u64,
    /// Most requests served at once; more wait in the listener backlog.
    pub max_concurrent_requests: usize,
    /// A connection that has not sent a whole request header this long after
    /// it opened, or after its previous response (an idle keep-alive
    /// connection), is closed.
    pub header_read_timeout_ms: u64,
    /// A request body that sends nothing for this long is cut off (400).
    pub body_read_timeout_ms: u64,
    /// Most open connections; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Most open connections from one client IP address.
    pub max_connections_per_ip: usize,
    /// Serve plain HTTP instead of HTTPS: allowed only when `addr` is a
    /// loopback address, since requests carry bearer tokens.
    pub plain: bool,
    /// The certificate chain (PEM) the API presents over HTTPS; unset: the
    /// node's own mesh certificate followed by the CA certificate.
    pub tls_cert: Option<PathBuf>,
    /// The private key (PKCS#8 PEM) of `tls_cert`; unset: the node's key.
    pub tls_key: Option<PathBuf>,
    /// Client certificates over HTTPS, verified against the mesh CA: `off`
    /// (the default; tokens authorize), `optional` or `required` (mutual TLS:
    /// only holders of a mesh certificate may connect at all).
    pub client_certs: ClientCerts,
}

/// Whether the HTTPS API asks clients for a certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientCerts {
    /// Never asked for.
    #[default]
    Off,
    /// Asked for; a client without one still connects, one with a
    /// certificate the mesh CA did not sign is refused.
    Optional,
    /// Required: a connection without a mesh certificate is refused.
    Required,
}

/// What `/readyz` demands of a node that runs the committee protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Most entries the node may be behind the leader's commit index.
    pub apply_lag_entries_max: u64,
    /// Longest time since the node last heard from the leader (on the
    /// leader: since a quorum of voters last acknowledged it).
    pub leader_contact_ms_max: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            apply_lag_entries_max: 1_000,
            leader_contact_ms_max: 5_000,
        }
    }
}

/// Raft committee settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusConfigFile {
    /// Take part in the committee election (false: this node only follows).
    pub enabled: bool,
    /// Heartbeat interval.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max_ms: u64,
    /// Snapshot after this many entries since the last one.
    pub snapshot_every_entries: u64,
    /// A voter unreachable this long is replaced.
    pub voter_down_limit_ms: u64,
    /// Nodes expected before the committee forms (the first committee).
    pub bootstrap_expect: usize,
    /// Send Raft RPCs over a direct Noise-secured TCP link to each voter
    /// (false: over streams of the swarm's connection only).
    pub direct_link: bool,
    /// TCP port of the direct link, on the IP of the first TCP listen address
    /// (0: any free port; peers learn it from the node).
    pub direct_link_port: u16,
}

/// Log output settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for collectors.
    pub format: LogFormat,
    /// A tracing filter, such as `info` or `info,mesh_net=debug`.
    pub level: String,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            mesh_id: "agent-mesh".into(),
            data_dir: PathBuf::from("agent-mesh-data"),
            zone: None,
            identity: IdentityConfig::default(),
            network: NetworkConfig::default(),
            http: HttpConfig::default(),
            health: HealthConfig::default(),
            consensus: ConsensusConfigFile::default(),
            log: LogConfig::default(),
            data: DataConfig::default(),
            runtime: RuntimeConfig::default(),
            round: RoundConfig::default(),
            adversary: AdversaryConfig::default(),
            learner: None,
            telemetry: TelemetryConfig::default(),
            nat: NatFileConfig::default(),
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            bootstrap: Vec::new(),
            mdns: false,
            target_peers: 16,
            max_connections: 256,
            admission_deadline_ms: 5_000,
            admission_attempts: 3,
            ban_ms: 60_000,
            seed: 0,
            unused_connection_close_ms: 30_000,
            max_protocol_version: u32::from(mesh_net::version::PROTOCOL_VERSION_MAX),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:0".into(),
            max_body_bytes: 1 << 20,
            timeout_ms: 30_000,
            max_concurrent_requests: 4_096,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            max_connections: 1_024,
            max_connections_per_ip: 128,
            plain: false,
            tls_cert: None,
            tls_key: None,
            client_certs: ClientCerts::Off,
        }
    }
}

impl Default for ConsensusConfigFile {
    fn default() -> Self {
        Self {
            enabled: true,
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1_000,
            snapshot_every_entries: 10_000,
            voter_down_limit_ms: 15_000,
            bootstrap_expect: 3,
            direct_link: true,
            direct_link_port: 0,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// One environment override: the variable and what it sets.
pub struct EnvOverride {
    /// The variable name.
    pub name: &'static str,
    /// What the variable sets, for `--help`.
    pub help: &'static str,
    apply: fn(&mut NodeConfig, &str) -> Result<(), String>,
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn number<T: std::str::FromStr>(value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| e.to_string())
}

/// The variables read after the file, in the order they are applied.
pub const ENV_OVERRIDES: &[EnvOverride] = &[
    EnvOverride {
        name: "AGENT_MESH_MESH_ID",
        help: "mesh_id",
        apply: |c, v| {
            c.mesh_id = v.to_owned();
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_DATA_DIR",
        help: "data_dir",
        apply: |c, v| {
            c.data_dir = v.into();
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_KEY",
        help: "identity.key",
        apply: |c, v| {
            c.identity.key = v.into();
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_CERT",
        help: "identity.cert",
        apply: |c, v| {
            c.identity.cert = v.into();
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_CA_CERT",
        help: "identity.ca_cert",
        apply: |c, v| {
            c.identity.ca_cert = v.into();
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_CA_PIN",
        help: "identity.ca_pin",
        apply: |c, v| {
            c.identity.ca_pin = v.to_owned();
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_LISTEN",
        help: "network.listen (comma-separated)",
        apply: |c, v| {
            c.network.listen = list(v);
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_BOOTSTRAP",
        help: "network.bootstrap (comma-separated)",
        apply: |c, v| {
            c.network.bootstrap = list(v);
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_EXTERNAL_ADDRESSES",
        help: "nat.external_addresses (comma-separated)",
        apply: |c, v| {
            c.nat.external_addresses = list(v);
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_RELAY_SERVER",
        help: "nat.relay_server (true/false)",
        apply: |c, v| {
            c.nat.relay_server = number(v)?;
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_AUTONAT",
        help: "nat.autonat (true/false)",
        apply: |c, v| {
            c.nat.autonat = number(v)?;
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_MDNS",
        help: "network.mdns (true/false)",
        apply: |c, v| {
            c.network.mdns = number(v)?;
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_TARGET_PEERS",
        help: "network.target_peers",
        apply: |c, v| {
            c.network.target_peers = number(v)?;
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_UNUSED_CONNECTION_CLOSE_MS",
        help: "network.unused_connection_close_ms (0: off)",
        apply: |c, v| {
            c.network.unused_connection_close_ms = number(v)?;
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_MAX_PROTOCOL_VERSION",
        help: "network.max_protocol_version (newest protocol version spoken)",
        apply: |c, v| {
            c.network.max_protocol_version = number(v)?;
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_HTTP_ADDR",
        help: "http.addr",
        apply: |c, v| {
            c.http.addr = v.to_owned();
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_ZONE",
        help: "zone (empty: none)",
        apply: |c, v| {
            c.zone = (!v.is_empty()).then(|| v.to_owned());
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_HTTP_PLAIN",
        help: "http.plain (true/false; loopback addresses only)",
        apply: |c, v| {
            c.http.plain = number(v)?;
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_BOOTSTRAP_EXPECT",
        help: "consensus.bootstrap_expect",
        apply: |c, v| {
            c.consensus.bootstrap_expect = number(v)?;
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_DIRECT_LINK_PORT",
        help: "consensus.direct_link_port",
        apply: |c, v| {
            c.consensus.direct_link_port = number(v)?;
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_WORKER_THREADS",
        help: "runtime.worker_threads",
        apply: |c, v| {
            c.runtime.worker_threads = number(v)?;
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_CACHE_CAPACITY_BYTES",
        help: "round.cache_capacity_bytes",
        apply: |c, v| {
            c.round.cache_capacity_bytes = number(v)?;
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_CACHE_POLICY",
        help: "round.cache_policy (lru/lfu/adaptive)",
        apply: |c, v| {
            c.round.cache_policy = v
                .parse()
                .map_err(|e: mesh_round::cache::ParseCachePolicyError| e.to_string())?;
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_LOG_FORMAT",
        help: "log.format (text/json)",
        apply: |c, v| {
            c.log.format = match v.trim() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => return Err(format!("{other:?} is neither text nor json")),
            };
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_LOG",
        help: "log.level (a tracing filter)",
        apply: |c, v| {
            c.log.level = v.to_owned();
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_DATA",
        help:
            "data.dir (a folder of tables, image folders or MNIST IDX files, or builtin:mnist-10k)",
        apply: |c, v| {
            c.data.dir = Some(v.parse().map_err(|e: DataError| e.to_string())?);
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_DATA_SHARD",
        help: "data.shard/data.shards, as SHARD/SHARDS",
        apply: |c, v| {
            let (shard, shards) = v
                .split_once('/')
                .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
                .ok_or_else(|| format!("{v:?} is not SHARD/SHARDS"))?;
            c.data.shard = shard;
            c.data.shards = shards;
            Ok(())
        },
    },
    EnvOverride {
        name: "AGENT_MESH_OTLP_ENDPOINT",
        help:
            "telemetry.otlp_endpoint (OTLP/HTTP base URL, e.g. http://collector:4318; empty: off)",
        apply: |c, v| {
            c.telemetry.otlp_endpoint = v.trim().to_owned();
            Ok(())
        },
    },
];

impl NodeConfig {
    /// Reads `path`, resolves its relative paths against the file's folder,
    /// applies environment overrides from `env` and validates the result.
    pub fn load(
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<NodeConfig, ConfigError> {
        let mut config = Self::from_file(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a config file without overrides or validation.
    pub fn from_file(path: &Path) -> Result<NodeConfig, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let size_bytes = std::fs::metadata(path).map_err(read_err)?.len();
        if size_bytes > CONFIG_BYTES_MAX {
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
                size_bytes,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Self::from_toml(&text, path)
    }

    /// Parses config text that was read from `path` (named in errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if !p.as_os_str().is_empty() && p.is_relative() {
                *p = base.join(&*p);
            }
        };
        join(&mut self.data_dir);
        join(&mut self.identity.key);
        join(&mut self.identity.cert);
        join(&mut self.identity.ca_cert);
        if let Some(path) = &mut self.identity.revocations {
            join(path);
        }
        for path in [&mut self.http.tls_cert, &mut self.http.tls_key]
            .into_iter()
            .flatten()
        {
            join(path);
        }
        if let Some(DataSource::Dir(path)) = &mut self.data.dir {
            join(path);
        }
        if let Some(dir) = self.learner.as_mut().and_then(|l| l.working_dir.as_mut()) {
            join(dir);
        }
        let pin_path = base.join(&self.identity.ca_pin);
        if !self.identity.ca_pin.is_empty() && !is_hex_pin(&self.identity.ca_pin) {
            self.identity.ca_pin = pin_path.to_string_lossy().into_owned();
        }
    }

    /// Applies every variable of [`ENV_OVERRIDES`] that `env` knows.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for item in ENV_OVERRIDES {
            if let Some(value) = env(item.name) {
                (item.apply)(self, &value).map_err(|message| ConfigError::Env {
                    name: item.name,
                    value,
                    message,
                })?;
            }
        }
        Ok(())
    }

    /// Checks ranges and that required fields are set.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| {
            Err(ConfigError::Invalid {
                field,
                message: message.to_owned(),
            })
        };
        if self.mesh_id.is_empty() || self.mesh_id.len() > 64 {
            return invalid("mesh_id", "must be 1 to 64 characters");
        }
        for (field, path) in [
            ("identity.key", &self.identity.key),
            ("identity.cert", &self.identity.cert),
            ("identity.ca_cert", &self.identity.ca_cert),
        ] {
            if path.as_os_str().is_empty() {
                return invalid(field, "is required (a file path)");
            }
        }
        if self.identity.ca_pin.is_empty() {
            return invalid("identity.ca_pin", "is required (hex SHA-256 or a file)");
        }
        if self.runtime.worker_threads > WORKER_THREADS_MAX {
            return invalid(
                "runtime.worker_threads",
                "must be at most 1024 (0: one per core)",
            );
        }
        if self.network.listen.is_empty() {
            return invalid("network.listen", "needs at least one address");
        }
        if self.round.cache_capacity_bytes < CACHE_CAPACITY_BYTES_MIN {
            return invalid(
                "round.cache_capacity_bytes",
                "must be at least 1048576 (1 MiB): every model a round uses passes through the cache",
            );
        }
        if !self.adversary.attack.is_empty() {
            if let Err(e) = self
                .adversary
                .attack
                .parse::<mesh_federated::attack::Attack>()
            {
                return invalid("adversary.attack", &e.to_string());
            }
        }
        if let Some(Err(e)) = self
            .learner
            .as_ref()
            .map(mesh_learner::LearnerConfig::validate)
        {
            return Err(ConfigError::Invalid {
                field: e.field,
                message: e.message,
            });
        }
        if self.data.shards == 0 || self.data.shard >= self.data.shards {
            return invalid("data.shard", "must be below data.shards (at least 1)");
        }
        if self
            .data
            .partition
            .parse::<mesh_federated::data::partition::Partition>()
            .is_err()
        {
            return invalid(
                "data.partition",
                "expected iid, dirichlet[:ALPHA], shards or quantity[:ALPHA]",
            );
        }
        if let Err(e) = self.network.protocol_versions() {
            return invalid("network.max_protocol_version", &e.to_string());
        }
        if self.network.target_peers == 0 || self.network.max_connections == 0 {
            return invalid(
                "network.target_peers",
                "target_peers and max_connections must be at least 1",
            );
        }
        let c = &self.consensus;
        if c.heartbeat_ms == 0 || c.election_timeout_min_ms <= c.heartbeat_ms * 2 {
            return invalid(
                "consensus.election_timeout_min_ms",
                "must exceed twice heartbeat_ms (and heartbeat_ms must be positive)",
            );
        }
        if c.election_timeout_max_ms <= c.election_timeout_min_ms {
            return invalid(
                "consensus.election_timeout_max_ms",
                "must exceed election_timeout_min_ms",
            );
        }
        if !(1..=7).contains(&c.bootstrap_expect) {
            return invalid("consensus.bootstrap_expect", "must be 1 to 7");
        }
        if let Err((field, message)) = self.telemetry.check() {
            return Err(ConfigError::Invalid { field, message });
        }
        if let Some(zone) = &self.zone {
            crate::runtime::announce::check_zone(zone).or_else(|m| invalid("zone", &m))?;
        }
        if self.http.plain && !addr_is_loopback(&self.http.addr) {
            return invalid(
                "http.plain",
                &format!(
                    "plain HTTP is allowed on loopback addresses only, not {:?}: \
                     requests carry bearer tokens (leave it off to serve HTTPS)",
                    self.http.addr
                ),
            );
        }
        if self.http.tls_cert.is_some() != self.http.tls_key.is_some() {
            return invalid("http.tls_cert", "tls_cert and tls_key go together");
        }
        if self.http.max_body_bytes == 0 || self.http.max_concurrent_requests == 0 {
            return invalid(
                "http.max_body_bytes",
                "max_body_bytes and max_concurrent_requests must be positive",
            );
        }
        self.nat.validate()?;
        self.validate_limits()
    }

    /// Checks the timeouts and caps that bound what clients and peers can hold.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let h = &self.http;
        let checks: [(bool, &'static str, &str); 6] = [
            (
                h.header_read_timeout_ms == 0 || h.body_read_timeout_ms == 0,
                "http.header_read_timeout_ms",
                "header_read_timeout_ms and body_read_timeout_ms must be positive",
            ),
            (
                h.max_connections == 0,
                "http.max_connections",
                "must be at least 1",
            ),
            (
                h.max_connections_per_ip == 0 || h.max_connections_per_ip > h.max_connections,
                "http.max_connections_per_ip",
                "must be 1 to http.max_connections",
            ),
            (
                !(1..=10).contains(&self.network.admission_attempts),
                "network.admission_attempts",
                "must be 1 to 10",
            ),
            (
                self.network.admission_deadline_ms == 0,
                "network.admission_deadline_ms",
                "must be positive",
            ),
            (
                self.health.apply_lag_entries_max == 0 || self.health.leader_contact_ms_max == 0,
                "health.leader_contact_ms_max",
                "apply_lag_entries_max and leader_contact_ms_max must be positive",
            ),
        ];
        match checks.into_iter().find(|(bad, _, _)| *bad) {
            Some((_, field, message)) => Err(ConfigError::Invalid {
                field,
                message: message.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// The CA pin bytes: the hex in the field, or the hex in the file it names.
    pub fn ca_pin_bytes(&self) -> Result<[u8; 32], ConfigError> {
        let text = if is_hex_pin(&self.identity.ca_pin) {
            self.identity.ca_pin.clone()
        } else {
            std::fs::read_to_string(&self.identity.ca_pin).map_err(|source| ConfigError::Read {
                path: PathBuf::from(&self.identity.ca_pin),
                source,
            })?
        };
        let invalid = |message: String| ConfigError::Invalid {
            field: "identity.ca_pin",
            message,
        };
        let bytes = hex::decode(text.trim()).map_err(|e| invalid(e.to_string()))?;
        bytes
            .try_into()
            .map_err(|b: Vec<u8>| invalid(format!("{} bytes, a pin is 32", b.len())))
    }
}

fn is_hex_pin(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("node.toml");
        std::fs::write(&path, text).expect("write");
        path
    }

    const MINIMAL: &str = r#"
mesh_id = "dev"
[identity]
key = "k.pem"
cert = "c.pem"
ca_cert = "ca.pem"
ca_pin = "ca.pin"
"#;

    #[test]
    fn minimal_file_gets_defaults_and_paths_relative_to_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let config = NodeConfig::load(&write(dir.path(), MINIMAL), |_| None).expect("load");
        assert_eq!(config.mesh_id, "dev");
        assert_eq!(config.identity.key, dir.path().join("k.pem"));
        assert_eq!(
            config.identity.ca_pin,
            dir.path().join("ca.pin").to_string_lossy()
        );
        assert_eq!(config.network, NetworkConfig::default());
    }

    #[test]
    fn tracing_is_off_by_default_and_the_endpoint_comes_from_file_or_environment() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = write(dir.path(), MINIMAL);
        let config = NodeConfig::load(&path, |_| None).expect("load");
        assert_eq!(config.telemetry, TelemetryConfig::default());
        assert_eq!(config.telemetry.traces_url(), None, "no default endpoint");
        let env = |name: &str| {
            (name == "AGENT_MESH_OTLP_ENDPOINT").then(|| "http://collector:4318/".to_string())
        };
        let config = NodeConfig::load(&path, env).expect("env");
        assert_eq!(
            config.telemetry.traces_url().as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        let text = format!(
            "{MINIMAL}\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:9/v1/traces\"\n\
             service_name = \"edge\"\nsample_ratio = 0.25\n"
        );
        let config = NodeConfig::load(&write(dir.path(), &text), |_| None).expect("file");
        assert_eq!(
            config.telemetry.traces_url().as_deref(),
            Some("http://127.0.0.1:9/v1/traces")
        );
        assert_eq!(config.telemetry.service_name, "edge");
        for (bad, field) in [
            (
                "otlp_endpoint = \"https://collector:4318\"",
                "telemetry.otlp_endpoint",
            ),
            (
                "otlp_endpoint = \"http:///v1/traces\"",
                "telemetry.otlp_endpoint",
            ),
            ("sample_ratio = 1.5", "telemetry.sample_ratio"),
            ("service_name = \"\"", "telemetry.service_name"),
        ] {
            let text = format!("{MINIMAL}\n[telemetry]\n{bad}\n");
            let err = NodeConfig::load(&write(dir.path(), &text), |_| None).expect_err(bad);
            assert!(err.to_string().contains(field), "{bad}: {err}");
        }
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let env = |name: &str| match name {
            "AGENT_MESH_BOOTSTRAP" => Some("/ip4/127.0.0.1/tcp/1, /ip4/127.0.0.1/tcp/2".into()),
            "AGENT_MESH_LOG_FORMAT" => Some("json".into()),
            "AGENT_MESH_WORKER_THREADS" => Some("1".into()),
            _ => None,
        };
        let config = NodeConfig::load(&write(dir.path(), MINIMAL), env).expect("load");
        assert_eq!(config.network.bootstrap.len(), 2);
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.runtime.worker_threads, 1);
    }

    #[test]
    fn protocol_versions_can_be_capped_in_file_or_environment_and_are_checked() {
        let dir = tempfile::tempdir().expect("tmp");
        let config = NodeConfig::load(&write(dir.path(), MINIMAL), |_| None).expect("load");
        assert_eq!(
            config.network.protocol_versions().expect("default"),
            mesh_net::VersionRange::default()
        );
        let text = format!("{MINIMAL}\n[network]\nmax_protocol_version = 1\n");
        let config = NodeConfig::load(&write(dir.path(), &text), |_| None).expect("capped");
        assert_eq!(config.network.protocol_versions().expect("1").max(), 1);
        let env = |name: &str| (name == "AGENT_MESH_MAX_PROTOCOL_VERSION").then(|| "1".to_string());
        let config = NodeConfig::load(&write(dir.path(), MINIMAL), env).expect("env");
        assert_eq!(config.network.max_protocol_version, 1);
        for bad in ["0", "4"] {
            let text = format!("{MINIMAL}\n[network]\nmax_protocol_version = {bad}\n");
            let err = NodeConfig::load(&write(dir.path(), &text), |_| None).expect_err(bad);
            let err = err.to_string();
            assert!(err.contains("network.max_protocol_version"), "{err}");
            assert!(err.contains("1 to 3"), "{err}");
        }
        let env =
            |name: &str| (name == "AGENT_MESH_MAX_PROTOCOL_VERSION").then(|| "two".to_string());
        let err = NodeConfig::load(&write(dir.path(), MINIMAL), env).expect_err("env");
        assert!(
            err.to_string().contains("AGENT_MESH_MAX_PROTOCOL_VERSION"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_field_or_variable() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = write(dir.path(), MINIMAL);
        let env = |name: &str| (name == "AGENT_MESH_MDNS").then(|| "maybe".to_string());
        let err = NodeConfig::load(&path, env).expect_err("bad env");
        assert!(err.to_string().contains("AGENT_MESH_MDNS"), "{err}");

        let text = format!("{MINIMAL}\n[consensus]\nheartbeat_ms = 400\n");
        let err = NodeConfig::load(&write(dir.path(), &text), |_| None).expect_err("range");
        assert!(err.to_string().contains("election_timeout_min_ms"), "{err}");

        let text = format!("{MINIMAL}\n[runtime]\nworker_threads = 5000\n");
        let err = NodeConfig::load(&write(dir.path(), &text), |_| None).expect_err("threads");
        assert!(err.to_string().contains("runtime.worker_threads"), "{err}");

        let err = NodeConfig::load(&write(dir.path(), "colour = 1\n"), |_| None)
            .expect_err("unknown field");
        assert!(err.to_string().contains("colour"), "{err}");

        let err = NodeConfig::load(&write(dir.path(), "mesh_id = \"x\"\n"), |_| None)
            .expect_err("missing key");
        assert!(err.to_string().contains("identity.key"), "{err}");
    }

    #[test]
    fn round_cache_capacity_and_policy_come_from_file_or_environment_and_are_checked() {
        use mesh_round::cache::CachePolicy;
        let dir = tempfile::tempdir().expect("tmp");
        let defaults = NodeConfig::load(&write(dir.path(), MINIMAL), |_| None).expect("load");
        assert_eq!(defaults.round.cache_policy, CachePolicy::Lru);
        assert_eq!(
            defaults.round.cache_capacity_bytes,
            mesh_round::protocol::CACHE_CAPACITY_BYTES_DEFAULT
        );

        let text = format!(
            "{MINIMAL}\n[round]\ncache_capacity_bytes = 67108864\ncache_policy = \"adaptive\"\n"
        );
        let path = write(dir.path(), &text);
        let config = NodeConfig::load(&path, |_| None).expect("round");
        assert_eq!(
            (config.round.cache_capacity_bytes, config.round.cache_policy),
            (64 << 20, CachePolicy::Adaptive)
        );
        let env = |name: &str| match name {
            "AGENT_MESH_CACHE_POLICY" => Some("lfu".to_string()),
            "AGENT_MESH_CACHE_CAPACITY_BYTES" => Some("2097152".to_string()),
            _ => None,
        };
        let config = NodeConfig::load(&path, env).expect("env");
        assert_eq!(
            (config.round.cache_capacity_bytes, config.round.cache_policy),
            (2 << 20, CachePolicy::Lfu)
        );

        let env = |name: &str| (name == "AGENT_MESH_CACHE_POLICY").then(|| "arc".to_string());
        let err = NodeConfig::load(&path, env).expect_err("unknown policy");
        let message = err.to_string();
        assert!(
            message.contains("AGENT_MESH_CACHE_POLICY") && message.contains("lru, lfu or adaptive"),
            "{message}"
        );
        let text = format!("{MINIMAL}\n[round]\ncache_policy = \"fifo\"\n");
        let err = NodeConfig::load(&write(dir.path(), &text), |_| None).expect_err("file");
        let message = err.to_string();
        assert!(
            message.contains("fifo") && message.contains("adaptive"),
            "{message}"
        );
        let text = format!("{MINIMAL}\n[round]\ncache_capacity_bytes = 1000\n");
        let err = NodeConfig::load(&write(dir.path(), &text), |_| None).expect_err("small");
        assert!(
            err.to_string().contains("round.cache_capacity_bytes"),
            "{err}"
        );
    }

    #[test]
    fn a_learner_table_starts_in_a_folder_relative_to_the_file_and_is_checked() {
        let dir = tempfile::tempdir().expect("tmp");
        let text = format!(
            "{MINIMAL}\n[learner]\ncommand = [\"python3\", \"-m\", \"my_learner\"]\n\
             working_dir = \"learner\"\nfit_timeout_ms = 5000\n[learner.env]\nSHARD = \"0/3\"\n"
        );
        let config = NodeConfig::load(&write(dir.path(), &text), |_| None).expect("learner");
        let learner = config.learner.expect("[learner]");
        assert_eq!(learner.working_dir, Some(dir.path().join("learner")));
        assert_eq!(learner.fit_timeout_ms, 5000);
        assert_eq!(learner.env.get("SHARD").map(String::as_str), Some("0/3"));
        assert!(NodeConfig::load(&write(dir.path(), MINIMAL), |_| None)
            .expect("no learner")
            .learner
            .is_none());

        let text = format!("{MINIMAL}\n[learner]\ncommand = []\n");
        let err = NodeConfig::load(&write(dir.path(), &text), |_| None).expect_err("empty");
        assert!(err.to_string().contains("learner.command"), "{err}");
    }

    #[test]
    fn data_dir_is_a_folder_relative_to_the_file_or_a_built_in_set() {
        let dir = tempfile::tempdir().expect("tmp");
        let text = format!("{MINIMAL}\n[data]\ndir = \"mnist\"\n");
        let config = NodeConfig::load(&write(dir.path(), &text), |_| None).expect("folder");
        assert_eq!(
            config.data.dir,
            Some(DataSource::Dir(dir.path().join("mnist")))
        );

        let text = format!("{MINIMAL}\n[data]\ndir = \"builtin:mnist-10k\"\n");
        let config = NodeConfig::load(&write(dir.path(), &text), |_| None).expect("builtin");
        assert_eq!(config.data.dir, Some(DataSource::default()));
        let printed = toml::to_string(&config).expect("print");
        assert!(printed.contains("dir = \"builtin:mnist-10k\""), "{printed}");

        let env = |name: &str| (name == "AGENT_MESH_DATA").then(|| "builtin:mnist-10k".into());
        let config = NodeConfig::load(&write(dir.path(), MINIMAL), env).expect("env");
        assert_eq!(config.data.dir, Some(DataSource::default()));

        let text = format!("{MINIMAL}\n[data]\ndir = \"builtin:nope\"\n");
        let err = NodeConfig::load(&write(dir.path(), &text), |_| None).expect_err("unknown");
        assert!(err.to_string().contains("mnist-10k"), "{err}");
    }

    #[test]
    fn connection_caps_timeouts_and_health_bounds_are_checked() {
        let dir = tempfile::tempdir().expect("tmp");
        let cases = [
            (
                "[http]\nheader_read_timeout_ms = 0",
                "http.header_read_timeout_ms",
            ),
            ("[http]\nmax_connections = 0", "http.max_connections"),
            (
                "[http]\nmax_connections = 10\nmax_connections_per_ip = 11",
                "http.max_connections_per_ip",
            ),
            (
                "[network]\nadmission_attempts = 0",
                "network.admission_attempts",
            ),
            (
                "[health]\napply_lag_entries_max = 0",
                "health.leader_contact_ms_max",
            ),
        ];
        for (section, field) in cases {
            let text = format!("{MINIMAL}\n{section}\n");
            let err = NodeConfig::load(&write(dir.path(), &text), |_| None).expect_err(field);
            assert!(err.to_string().contains(field), "{section}: {err}");
        }
        let text = format!("{MINIMAL}\n[http]\nheader_read_timeout_ms = 250\n");
        let config = NodeConfig::load(&write(dir.path(), &text), |_| None).expect("load");
        assert_eq!(config.http.header_read_timeout_ms, 250);
        assert_eq!(config.health, HealthConfig::default());
    }

    #[test]
    fn https_is_the_default_and_plain_http_is_for_loopback_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let config = NodeConfig::load(&write(dir.path(), MINIMAL), |_| None).expect("load");
        assert!(!config.http.plain);
        assert_eq!(config.http.client_certs, ClientCerts::Off);
        for addr in ["127.0.0.1:0", "[::1]:8080", "localhost:80"] {
            let text = format!("{MINIMAL}\n[http]\naddr = \"{addr}\"\nplain = true\n");
            let config = NodeConfig::load(&write(dir.path(), &text), |_| None);
            assert!(config.expect(addr).http.plain);
        }
        for addr in ["0.0.0.0:8080", "10.1.2.3:80", "node-1:8080"] {
            let text = format!("{MINIMAL}\n[http]\naddr = \"{addr}\"\nplain = true\n");
            let err = NodeConfig::load(&write(dir.path(), &text), |_| None).expect_err(addr);
            assert!(err.to_string().contains("http.plain"), "{err}");
        }
        let env = |name: &str| (name == "AGENT_MESH_HTTP_PLAIN").then(|| "true".to_string());
        assert!(
            NodeConfig::load(&write(dir.path(), MINIMAL), env)
                .expect("env")
                .http
                .plain
        );
        let text = format!("{MINIMAL}\n[http]\ntls_cert = \"api.pem\"\n");
        let err = NodeConfig::load(&write(dir.path(), &text), |_| None).expect_err("pair");
        assert!(err.to_string().contains("tls_key"), "{err}");
        let text = format!(
            "{MINIMAL}\n[http]\ntls_cert = \"a.pem\"\ntls_key = \"k.pem\"\nclient_certs = \"required\"\n"
        );
        let config = NodeConfig::load(&write(dir.path(), &text), |_| None).expect("tls");
        assert_eq!(config.http.tls_key, Some(dir.path().join("k.pem")));
        assert_eq!(config.http.client_certs, ClientCerts::Required);
    }

    #[test]
    fn pin_is_read_from_hex_or_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let hex_pin = "ab".repeat(32);
        std::fs::write(dir.path().join("ca.pin"), format!("{hex_pin}\n")).expect("pin");
        let config = NodeConfig::load(&write(dir.path(), MINIMAL), |_| None).expect("load");
        assert_eq!(config.ca_pin_bytes().expect("pin"), [0xab; 32]);
        let mut inline = config.clone();
        inline.identity.ca_pin = "cd".repeat(32);
        assert_eq!(inline.ca_pin_bytes().expect("pin"), [0xcd; 32]);
        inline.identity.ca_pin = dir.path().join("missing").to_string_lossy().into();
        assert!(inline.ca_pin_bytes().is_err());
    }

    #[test]
    fn the_nat_section_reaches_the_network_layer_and_its_bounds_are_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let text = format!(
            "{MINIMAL}\n[nat]\nrelay_server = true\nrelay_circuits_max = 9\n\
             external_addresses = [\"/ip4/203.0.113.7/tcp/7001\"]\n"
        );
        let config = NodeConfig::load(&write(dir.path(), &text), |_| None).expect("nat");
        assert_eq!(config.nat.external_addresses.len(), 1);
        let net = config.nat.net_config(Vec::new());
        assert!(net.relay_server && net.relay_client && net.hole_punching);
        assert_eq!(net.relay_limits.circuits_max, 9);
        assert_eq!(net.relay_limits.circuit_bytes_max, 256 * 1024 * 1024);
        let env = |name: &str| (name == "AGENT_MESH_RELAY_SERVER").then(|| "true".to_string());
        let config = NodeConfig::load(&write(dir.path(), MINIMAL), env).expect("env");
        assert!(config.nat.relay_server);
        for bad in [
            "relays_max = 0",
            "autonat_probe_interval_ms = 10",
            "relay_circuit_bytes_max = 0",
            "relay_circuits_max = 0",
        ] {
            let text = format!("{MINIMAL}\n[nat]\n{bad}\n");
            let err = NodeConfig::load(&write(dir.path(), &text), |_| None).expect_err(bad);
            assert!(err.to_string().contains("nat."), "{bad}: {err}");
        }
    }
}
