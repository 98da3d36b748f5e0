//! Prometheus metrics of the network layer, registered under the `mesh_net`
//! prefix of the registry handed to [`crate::spawn`].
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `mesh_net_peers_connected` | gauge | |
//! | `mesh_net_peers_admitted` | gauge | |
//! | `mesh_net_messages_total` | counter | `kind` (gossip, request, response, cert), `direction` (in, out), `result` |
//! | `mesh_net_bytes_total` | counter | `kind`, `direction` |
//! | `mesh_net_admission_rejections_total` | counter | `reason` ([`crate::RejectReason`] labels, plus `banned`) |
//! | `mesh_net_admission_retries_total` | counter | |
//! | `mesh_net_stale_connections_closed_total` | counter | |
//! | `mesh_net_unused_connections_closed_total` | counter | |
//! | `mesh_net_peer_lookups_total` | counter | |
//! | `mesh_net_incoming_connection_errors_total` | counter | `error` (handshake, denied, aborted, other) |
//! | `mesh_net_events_dropped_total` | counter | |
//!
//! NAT traversal adds its own (connections by kind, hole punches, relayed
//! bytes, reachability, relay reservations and circuits): see [`crate::nat::NatMetrics`].

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::admission::RejectReason;

type Labels3 = [(&'static str, &'static str); 3];
type Labels2 = [(&'static str, &'static str); 2];
type Labels1 = [(&'static str, &'static str); 1];

/// Message kinds used as the `kind` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Gossipsub messages.
    Gossip,
    /// Direct requests.
    Request,
    /// Responses to direct requests.
    Response,
    /// Certificate exchange messages.
    Cert,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Gossip => "gossip",
            Self::Request => "request",
            Self::Response => "response",
            Self::Cert => "cert",
        }
    }
}

/// Direction of a message, used as the `direction` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received.
    In,
    /// Sent.
    Out,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }
}

/// The network layer's metric handles (cheap to clone: they share state).
#[derive(Clone, Debug, Default)]
pub struct NetMetrics {
    /// Peers with at least one established connection.
    pub peers_connected: Gauge,
    /// Peers admitted (verified certificate).
    pub peers_admitted: Gauge,
    messages: Family<Labels3, Counter>,
    bytes: Family<Labels2, Counter>,
    rejections: Family<Labels1, Counter>,
    events_dropped: Counter,
    /// Certificate exchanges tried again after missing their deadline.
    pub admission_retries: Counter,
    /// Extra connections to a peer closed because they stopped answering pings.
    pub stale_connections_closed: Counter,
    /// Connections closed because nothing used them (see [`crate::trim`]).
    pub unused_connections_closed: Counter,
    /// Kademlia lookups started for wanted peers that were not connected.
    pub peer_lookups: Counter,
    incoming_errors: Family<Labels1, Counter>,
    /// NAT traversal: connection kinds, hole punches, relayed bytes, reachability.
    pub nat: crate::nat::NatMetrics,
}

/// Labels of `mesh_net_incoming_connection_errors_total`: why an incoming
/// connection failed before it was established.
pub const INCOMING_ERRORS: [&str; 4] = ["handshake", "denied", "aborted", "other"];

impl NetMetrics {
    /// Creates the metrics and registers them into `registry` under `mesh_net`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let sub = registry.sub_registry_with_prefix("mesh_net");
        sub.register(
            "peers_connected",
            "Peers with at least one established connection",
            metrics.peers_connected.clone(),
        );
        sub.register(
            "peers_admitted",
            "Peers whose mesh certificate verified",
            metrics.peers_admitted.clone(),
        );
        sub.register(
            "messages",
            "Messages by kind, direction and result",
            metrics.messages.clone(),
        );
        sub.register(
            "bytes",
            "Payload bytes by kind and direction",
            metrics.bytes.clone(),
        );
        sub.register(
            "admission_rejections",
            "Peers refused by admission, by reason",
            metrics.rejections.clone(),
        );
        sub.register(
            "events_dropped",
            "Events dropped because the application's queue was full",
            metrics.events_dropped.clone(),
        );
        sub.register(
            "admission_retries",
            "Certificate exchanges tried again after missing their deadline",
            metrics.admission_retries.clone(),
        );
        sub.register(
            "stale_connections_closed",
            "Extra connections to a peer closed because they stopped answering pings (a peer that restarted elsewhere)",
            metrics.stale_connections_closed.clone(),
        );
        sub.register(
            "unused_connections_closed",
            "Connections closed because no request used them for the configured time and nothing held them",
            metrics.unused_connections_closed.clone(),
        );
        sub.register(
            "peer_lookups",
            "Kademlia lookups started for wanted peers that were not connected (a peer that moved, a member never met)",
            metrics.peer_lookups.clone(),
        );
        sub.register(
            "incoming_connection_errors",
            "Incoming connections that failed before they were established (garbage, failed handshakes, limits)",
            metrics.incoming_errors.clone(),
        );
        metrics.nat.register(sub);
        for error in INCOMING_ERRORS {
            let _ = metrics.incoming_errors.get_or_create(&[("error", error)]);
        }
        for reason in RejectReason::ALL {
            let _ = metrics
                .rejections
                .get_or_create(&[("reason", reason.as_str())]);
        }
        metrics
    }

    /// Counts one message.
    pub fn message(&self, kind: Kind, direction: Direction, result: &'static str) {
        self.messages
            .get_or_create(&[
                ("kind", kind.as_str()),
                ("direction", direction.as_str()),
                ("result", result),
            ])
            .inc();
    }

    /// Counts payload bytes.
    pub fn bytes(&self, kind: Kind, direction: Direction, bytes: usize) {
        self.bytes
            .get_or_create(&[("kind", kind.as_str()), ("direction", direction.as_str())])
            .inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    /// Counts one event dropped because the application's queue was full.
    pub fn dropped_event(&self) {
        self.events_dropped.inc();
    }

    /// Counts one admission rejection under `reason`.
    pub fn rejection(&self, reason: &'static str) {
        self.rejections.get_or_create(&[("reason", reason)]).inc();
    }

    /// Counts one incoming connection that failed, under an
    /// [`INCOMING_ERRORS`] label.
    pub fn incoming_error(&self, error: &'static str) {
        self.incoming_errors
            .get_or_create(&[("error", error)])
            .inc();
    }

    /// The number of rejections counted under `reason` so far.
    pub fn rejections(&self, reason: &'static str) -> u64 {
        self.rejections.get_or_create(&[("reason", reason)]).get()
    }

    /// The number of messages counted under these labels so far.
    pub fn messages(&self, kind: Kind, direction: Direction, result: &'static str) -> u64 {
        self.messages
            .get_or_create(&[
                ("kind", kind.as_str()),
                ("direction", direction.as_str()),
                ("result", result),
            ])
            .get()
    }
}
