//! NAT traversal's bookkeeping and decisions, without sockets: how each
//! connection was made, whether this node is reachable, and which relays it
//! should hold a reservation on.
//!
//! ```text
//!   AutoNAT (bootstrap and relay peers dial us back)
//!      public ──> nothing to do; confirmed external address advertised
//!      private ─> reserve on up to `relays_max` admitted relay peers
//!                 (listen on /.../p2p/RELAY/p2p-circuit; identify pushes it)
//!   peer A ──dial /.../p2p/RELAY/p2p-circuit/p2p/B──> relayed connection
//!      (admitted like any other: the certificate exchange runs over it)
//!      DCUtR: both ends dial their observed addresses at once
//!        success ──> hole-punched direct connection; the relayed one closes
//!        failure ──> traffic stays on the circuit, bounded by the relay's limits
//! ```
//!
//! The driver ([`crate::driver`]) feeds events in and carries out the
//! decisions; the metrics (`mesh_net_connections{kind}`,
//! `mesh_net_relayed_bytes_total`, ...) live in [`NatMetrics`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{autonat, relay};
use libp2p::{Multiaddr, PeerId};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::NatConfig;

type Label = [(&'static str, &'static str); 1];

/// How a connection to a peer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnectionKind {
    /// Dialled or accepted on a peer's own address.
    Direct,
    /// Through a circuit relay (`/p2p-circuit`): every byte crosses the relay.
    Relayed,
    /// A direct connection opened by hole punching (DCUtR) from a relayed one.
    HolePunched,
}

impl ConnectionKind {
    /// Every kind, in label order.
    pub const ALL: [ConnectionKind; 3] = [Self::Direct, Self::Relayed, Self::HolePunched];

    /// The metric label and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Relayed => "relayed",
            Self::HolePunched => "hole_punched",
        }
    }

    /// The kind that describes a peer with connections of `kinds`: a
    /// hole-punched or direct link wins over a relayed one (traffic prefers it).
    pub fn best(kinds: impl IntoIterator<Item = ConnectionKind>) -> Option<ConnectionKind> {
        kinds.into_iter().min_by_key(|kind| match kind {
            Self::HolePunched => 0,
            Self::Direct => 1,
            Self::Relayed => 2,
        })
    }
}

/// Whether this node can be dialled from outside, as AutoNAT found it (or
/// as configured with external addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reachability {
    /// Not probed yet, or no peer could answer a probe.
    Unknown,
    /// Peers could not dial back: behind a NAT or firewall.
    Private,
    /// Peers dialled back, or an external address is configured.
    Public,
}

impl Reachability {
    /// Every value, in label order.
    pub const ALL: [Reachability; 3] = [Self::Unknown, Self::Private, Self::Public];

    /// The metric label and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Private => "private",
            Self::Public => "public",
        }
    }

    fn code(self) -> u8 {
        match self {
            Self::Unknown => 0,
            Self::Private => 1,
            Self::Public => 2,
        }
    }

    fn from_code(code: u8) -> Self {
        match code {
            1 => Self::Private,
            2 => Self::Public,
            _ => Self::Unknown,
        }
    }
}

/// True when `addr` runs through a circuit relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// The circuit address of `target` (or of this node, when `None`: the
/// address to listen on) through `relay` reached at `relay_addr`.
/// Returns `None` when `relay_addr` is itself relayed or names another peer.
pub fn circuit_addr(
    relay_addr: &Multiaddr,
    relay: PeerId,
    target: Option<PeerId>,
) -> Option<Multiaddr> {
    if is_relayed(relay_addr) {
        return None;
    }
    let mut addr = relay_addr.clone();
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) if peer == relay => {}
        Some(Protocol::P2p(_)) => return None,
        _ => addr.push(Protocol::P2p(relay)),
    }
    addr.push(Protocol::P2pCircuit);
    if let Some(target) = target {
        addr.push(Protocol::P2p(target));
    }
    Some(addr)
}

/// The relays to reserve on now: none unless the node is private and the
/// relay client is on; otherwise the known relays not reserved on yet, in
/// peer order, until `relays_max` reservations are held or asked for.
pub fn relays_to_reserve(
    reachability: Reachability,
    relay_client: bool,
    relays_max: usize,
    relays: &BTreeSet<PeerId>,
    reserved: &BTreeSet<PeerId>,
) -> Vec<PeerId> {
    if !relay_client || reachability != Reachability::Private {
        return Vec::new();
    }
    let room = relays_max.saturating_sub(reserved.len());
    relays
        .iter()
        .filter(|relay| !reserved.contains(relay))
        .take(room)
        .copied()
        .collect()
}

/// The AutoNAT behaviour for `nat`, or `None` when probes are off.
///
/// Probes go only to peers the driver names ([`autonat::Behaviour::add_server`]:
/// bootstrap peers and relays), never to any connected peer: a neighbour on
/// the same private network would dial back across the LAN and call a node
/// behind a NAT public. Private address ranges are allowed (meshes inside one
/// organisation's networks); a server dials back only the IP it sees the
/// client at, so it cannot be aimed at a third party.
pub fn autonat_behaviour(local: PeerId, nat: &NatConfig) -> Option<autonat::Behaviour> {
    if !nat.autonat {
        return None;
    }
    let interval = nat.autonat_probe_interval.max(Duration::from_millis(100));
    let config = autonat::Config {
        boot_delay: interval,
        retry_interval: interval,
        throttle_server_period: interval,
        refresh_interval: interval.saturating_mul(20),
        use_connected: false,
        only_global_ips: false,
        ..autonat::Config::default()
    };
    Some(autonat::Behaviour::new(local, config))
}

/// The circuit relay server for `nat`, or `None` when this node has no
/// relay role. It serves from the start, whatever AutoNAT finds: a relay is
/// placed where peers reach it, and says so by its role.
pub fn relay_server(local: PeerId, nat: &NatConfig) -> Option<relay::Behaviour> {
    if !nat.relay_server {
        return None;
    }
    let limits = &nat.relay_limits;
    let config = relay::Config {
        max_reservations: limits.reservations_max,
        max_reservations_per_peer: limits.reservations_per_peer_max,
        reservation_duration: limits.reservation_duration,
        max_circuits: limits.circuits_max,
        max_circuits_per_peer: limits.circuits_per_peer_max,
        max_circuit_duration: limits.circuit_duration,
        max_circuit_bytes: limits.circuit_bytes_max,
        ..relay::Config::default()
    };
    let mut behaviour = relay::Behaviour::new(local, config);
    behaviour.set_status(Some(relay::Status::Enable));
    Some(behaviour)
}

/// The NAT side of the network layer's metrics, registered under `mesh_net`.
///
/// | metric | type | labels |
/// |---|---|---|
/// | `mesh_net_connections` | gauge | `kind` (direct, relayed, hole_punched) |
/// | `mesh_net_connections_opened_total` | counter | `kind` |
/// | `mesh_net_hole_punches_total` | counter | `result` (success, failure) |
/// | `mesh_net_relayed_bytes_total` | counter | `direction` (in, out): this node's bytes on relayed connections |
/// | `mesh_net_reachability` | gauge | `status` (unknown, private, public): 1 for the current one |
/// | `mesh_net_relay_reservations` | gauge | reservations this node holds on relays |
/// | `mesh_net_relay_served_reservations` | gauge | reservations other peers hold on this relay |
/// | `mesh_net_relay_served_circuits_total` | counter | `event` (accepted, denied, closed) |
#[derive(Clone, Debug, Default)]
pub struct NatMetrics {
    connections: Family<Label, Gauge>,
    opened: Family<Label, Counter>,
    hole_punches: Family<Label, Counter>,
    relayed_bytes: Family<Label, Counter>,
    reachability_gauge: Family<Label, Gauge>,
    reachability: Arc<AtomicU8>,
    /// Reservations this node holds on relays.
    pub reservations: Gauge,
    /// Reservations other peers hold on this node (relay role).
    pub served_reservations: Gauge,
    served_circuits: Family<Label, Counter>,
}

impl NatMetrics {
    /// Registers the metrics into `sub` (the `mesh_net` sub-registry).
    pub fn register(&self, sub: &mut Registry) {
        sub.register(
            "connections",
            "Open connections by kind (direct, relayed, hole_punched)",
            self.connections.clone(),
        );
        sub.register(
            "connections_opened",
            "Connections established, by kind",
            self.opened.clone(),
        );
        sub.register(
            "hole_punches",
            "Hole-punching (DCUtR) attempts by result",
            self.hole_punches.clone(),
        );
        sub.register(
            "relayed_bytes",
            "Bytes this node sent (out) and received (in) over relayed connections, encrypted, as the relay carried them",
            self.relayed_bytes.clone(),
        );
        sub.register(
            "reachability",
            "Whether the node is publicly reachable (AutoNAT): 1 for the current status",
            self.reachability_gauge.clone(),
        );
        sub.register(
            "relay_reservations",
            "Reservations this node holds on relays",
            self.reservations.clone(),
        );
        sub.register(
            "relay_served_reservations",
            "Reservations other peers hold on this node (relay role)",
            self.served_reservations.clone(),
        );
        sub.register(
            "relay_served_circuits",
            "Circuits through this node (relay role), by event",
            self.served_circuits.clone(),
        );
        for kind in ConnectionKind::ALL {
            let _ = self.connections.get_or_create(&[("kind", kind.as_str())]);
            let _ = self.opened.get_or_create(&[("kind", kind.as_str())]);
        }
        for result in ["success", "failure"] {
            let _ = self.hole_punches.get_or_create(&[("result", result)]);
        }
        for direction in ["in", "out"] {
            let _ = self
                .relayed_bytes
                .get_or_create(&[("direction", direction)]);
        }
        self.set_reachability(Reachability::Unknown);
    }

    /// A connection of `kind` opened (`opened = true`) or closed.
    pub fn connection(&self, kind: ConnectionKind, opened: bool) {
        let gauge = self.connections.get_or_create(&[("kind", kind.as_str())]);
        if opened {
            gauge.inc();
            self.opened.get_or_create(&[("kind", kind.as_str())]).inc();
        } else {
            gauge.dec();
        }
    }

    /// A direct connection turned out to be hole-punched.
    pub fn reclassify_as_hole_punched(&self) {
        self.connections
            .get_or_create(&[("kind", ConnectionKind::Direct.as_str())])
            .dec();
        self.connection(ConnectionKind::HolePunched, true);
    }

    /// Counts one hole-punching attempt.
    pub fn hole_punch(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.hole_punches.get_or_create(&[("result", result)]).inc();
    }

    /// Counts bytes on a relayed connection (`sent`: this node wrote them).
    pub fn relayed(&self, sent: bool, bytes: usize) {
        let direction = if sent { "out" } else { "in" };
        self.relayed_bytes
            .get_or_create(&[("direction", direction)])
            .inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    /// The counters of bytes on relayed connections: (sent, received).
    pub fn relayed_counters(&self) -> (Counter, Counter) {
        let get = |d| {
            self.relayed_bytes
                .get_or_create(&[("direction", d)])
                .clone()
        };
        (get("out"), get("in"))
    }

    /// Bytes counted on relayed connections so far: (sent, received).
    pub fn relayed_totals(&self) -> (u64, u64) {
        let get = |d| self.relayed_bytes.get_or_create(&[("direction", d)]).get();
        (get("out"), get("in"))
    }

    /// Counts one circuit event on this relay.
    pub fn served_circuit(&self, event: &'static str) {
        self.served_circuits
            .get_or_create(&[("event", event)])
            .inc();
    }

    /// Records the node's reachability.
    pub fn set_reachability(&self, reachability: Reachability) {
        self.reachability
            .store(reachability.code(), Ordering::Relaxed);
        for value in Reachability::ALL {
            let on = i64::from(value == reachability);
            self.reachability_gauge
                .get_or_create(&[("status", value.as_str())])
                .set(on);
        }
    }

    /// The node's reachability now.
    pub fn reachability(&self) -> Reachability {
        Reachability::from_code(self.reachability.load(Ordering::Relaxed))
    }
}

/// The driver's NAT state: connection kinds, known relays, reservations.
#[derive(Debug, Default)]
pub(crate) struct NatState {
    /// Reserve on relays while private ([`NatConfig::relay_client`]).
    pub relay_client: bool,
    /// Most relays reserved on at once.
    pub relays_max: usize,
    /// Hole-punched connections whose DCUtR event came before their
    /// establishment was seen.
    pub punched_early: BTreeSet<ConnectionId>,
    /// Relays whose reservation failed, and when to try them again (Unix ms).
    pub retry_after_ms: BTreeMap<PeerId, u64>,
    /// Relays that accepted this node's reservation.
    pub accepted: BTreeSet<PeerId>,
    /// Every open connection: its peer and kind.
    pub connections: HashMap<ConnectionId, (PeerId, ConnectionKind)>,
    /// Peers that serve as relays (their identify lists the hop protocol),
    /// with the address this node reaches them at.
    pub relays: BTreeMap<PeerId, Multiaddr>,
    /// Relays this node listens through, and the listener of each.
    pub reservations: BTreeMap<PeerId, libp2p::core::transport::ListenerId>,
    /// Whether AutoNAT (or configuration) found this node reachable.
    pub reachability: Option<Reachability>,
    /// External addresses were configured: the node is public by declaration.
    pub declared_public: bool,
}

impl NatState {
    /// The state of a node configured with `nat`.
    pub fn new(nat: &NatConfig) -> Self {
        Self {
            relay_client: nat.relay_client,
            relays_max: nat.relays_max,
            declared_public: !nat.external_addresses.is_empty(),
            ..Self::default()
        }
    }

    /// The kind of the connections to `peer` that traffic prefers.
    pub fn peer_kind(&self, peer: &PeerId) -> Option<ConnectionKind> {
        ConnectionKind::best(
            self.connections
                .values()
                .filter(|(p, _)| p == peer)
                .map(|(_, kind)| *kind),
        )
    }

    /// The relayed connections to `peer`.
    pub fn relayed_connections(&self, peer: &PeerId) -> Vec<ConnectionId> {
        self.connections
            .iter()
            .filter(|(_, (p, kind))| p == peer && *kind == ConnectionKind::Relayed)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The reachability to report.
    pub fn reachability(&self) -> Reachability {
        match self.reachability {
            Some(found) if found != Reachability::Unknown => found,
            _ if self.declared_public => Reachability::Public,
            _ => Reachability::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        PeerId::random()
    }

    #[test]
    fn circuit_addresses_name_the_relay_once_and_refuse_nested_circuits() {
        let relay = peer();
        let target = peer();
        let base: Multiaddr = "/ip4/198.51.100.1/tcp/7000".parse().expect("addr");
        let listen = circuit_addr(&base, relay, None).expect("circuit");
        assert_eq!(
            listen.to_string(),
            format!("{base}/p2p/{relay}/p2p-circuit")
        );
        let with_id = base.clone().with(Protocol::P2p(relay));
        let dial = circuit_addr(&with_id, relay, Some(target)).expect("circuit");
        assert_eq!(
            dial.to_string(),
            format!("{base}/p2p/{relay}/p2p-circuit/p2p/{target}")
        );
        assert!(is_relayed(&dial));
        assert!(
            circuit_addr(&dial, relay, None).is_none(),
            "no circuit in a circuit"
        );
        let other = base.with(Protocol::P2p(peer()));
        assert!(
            circuit_addr(&other, relay, None).is_none(),
            "address of another peer"
        );
    }

    #[test]
    fn only_a_private_node_reserves_and_never_beyond_the_bound() {
        let relays: BTreeSet<PeerId> = (0..4).map(|_| peer()).collect();
        let none = BTreeSet::new();
        for state in [Reachability::Unknown, Reachability::Public] {
            assert!(relays_to_reserve(state, true, 2, &relays, &none).is_empty());
        }
        assert!(relays_to_reserve(Reachability::Private, false, 2, &relays, &none).is_empty());
        let first = relays_to_reserve(Reachability::Private, true, 2, &relays, &none);
        assert_eq!(first.len(), 2);
        let held: BTreeSet<PeerId> = first.iter().copied().collect();
        assert!(relays_to_reserve(Reachability::Private, true, 2, &relays, &held).is_empty());
        let one: BTreeSet<PeerId> = first.iter().take(1).copied().collect();
        let next = relays_to_reserve(Reachability::Private, true, 2, &relays, &one);
        assert_eq!(next.len(), 1);
        assert!(!one.contains(&next[0]));
    }

    #[test]
    fn a_peer_is_shown_by_its_best_connection() {
        use ConnectionKind::*;
        assert_eq!(
            ConnectionKind::best([Relayed, HolePunched]),
            Some(HolePunched)
        );
        assert_eq!(ConnectionKind::best([Relayed, Direct]), Some(Direct));
        assert_eq!(ConnectionKind::best([Relayed]), Some(Relayed));
        assert_eq!(ConnectionKind::best([]), None);
    }

    #[test]
    fn declared_external_addresses_make_a_node_public_until_probes_say_otherwise() {
        let mut state = NatState {
            declared_public: true,
            ..NatState::default()
        };
        assert_eq!(state.reachability(), Reachability::Public);
        state.reachability = Some(Reachability::Private);
        assert_eq!(state.reachability(), Reachability::Private);
        state.declared_public = false;
        state.reachability = Some(Reachability::Unknown);
        assert_eq!(state.reachability(), Reachability::Unknown);
    }

    #[test]
    fn metrics_track_kinds_and_reachability() {
        let metrics = NatMetrics::default();
        metrics.register(&mut Registry::default());
        metrics.connection(ConnectionKind::Direct, true);
        metrics.reclassify_as_hole_punched();
        metrics.relayed(true, 10);
        metrics.relayed(false, 4);
        assert_eq!(metrics.relayed_totals(), (10, 4));
        metrics.set_reachability(Reachability::Private);
        assert_eq!(metrics.reachability(), Reachability::Private);
    }
}
