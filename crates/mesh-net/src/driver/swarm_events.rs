//! The driver's handling of swarm events: connections, certificate exchange,
//! direct requests, gossip validation and discovery.

use futures::FutureExt;
use libp2p::core::ConnectedPoint;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::request_response::{self, Message, ResponseChannel};
use libp2p::swarm::{ConnectionId, ListenError, SwarmEvent};
use libp2p::{identify, kad, mdns, ping, Multiaddr, PeerId};
use tokio::sync::oneshot;

use super::{now_ms, Driver};
use crate::admission::{AdmissionError, RejectReason, Verdict};
use crate::behaviour::MeshBehaviourEvent;
use crate::cert_exchange::CertMessage;
use crate::codec::{WireRequest, WireResponse};
use crate::discovery::ADDRS_PER_PEER_MAX;
use crate::driver::GOSSIP_HELD_MAX;
use crate::handle::NetEvent;
use crate::metrics::{Direction, Kind};
use crate::trim::PeerClose;
use crate::{ids, NetError};

type Event = SwarmEvent<MeshBehaviourEvent>;

impl Driver {
    pub(super) fn on_swarm_event(&mut self, event: Event) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => self.on_connected(peer_id, connection_id, &endpoint, num_established.get()),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => self.on_closed(peer_id, connection_id, num_established),
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                tracing::debug!(?peer_id, "dial failed: {error}");
                let now = now_ms();
                if let Some(addr) = self.bootstrap_dials.remove(&connection_id) {
                    let _ = self.bootstrap.on_disconnected(&addr, now);
                }
                // A failed extra dial (say, to the old address of a peer that
                // restarted and is connected again) says nothing about a
                // connection that is up: marking the peer down here left it
                // out of the peer table while it was admitted.
                if let Some(peer) = peer_id.filter(|p| !self.swarm.is_connected(p)) {
                    let _ = self.peers.on_disconnected(&peer, now);
                    // Requests that wait for this peer wait on for a lookup
                    // (it may have moved), or fail when one ran already.
                    if self.awaiting.is_waiting(&peer) && !self.find_peer(peer) {
                        self.fail_awaiting(&peer);
                    }
                }
                self.nat_on_dial_failure(peer_id, &error);
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => self.on_incoming_error(&send_back_addr, &error),
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                let reason = match reason {
                    Ok(()) => "closed".to_string(),
                    Err(e) => e.to_string(),
                };
                self.nat_on_listener_closed(listener_id, &reason);
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::Dialing { peer_id, .. } => {
                tracing::trace!(?peer_id, "dialling");
            }
            _ => {}
        }
    }

    /// An incoming connection failed before it was established: counted, and
    /// logged at most once per source IP and interval. Random bytes sent to
    /// the P2P port end here (the protocol negotiation or Noise handshake fails).
    fn on_incoming_error(&mut self, from: &Multiaddr, error: &ListenError) {
        let label = match error {
            ListenError::Transport(_) | ListenError::WrongPeerId { .. } => "handshake",
            ListenError::Denied { .. } => "denied",
            ListenError::Aborted => "aborted",
            _ => "other",
        };
        self.metrics.incoming_error(label);
        let source = source_ip(from);
        let Some(suppressed) = self.log_limit.admit("incoming", &source, now_ms()) else {
            return;
        };
        if label == "handshake" {
            tracing::warn!(%source, "incoming connection failed its handshake: {error}{suppressed}");
        } else {
            tracing::debug!(%source, label, "incoming connection failed: {error}{suppressed}");
        }
    }

    fn on_connected(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        endpoint: &ConnectedPoint,
        num_established: u32,
    ) {
        self.nat_on_connected(peer, connection, endpoint);
        let now = now_ms();
        self.uses
            .on_connected(peer, connection, now, endpoint.is_dialer());
        if let Some(addr) = self.bootstrap_dials.get(&connection) {
            let _ = self.bootstrap.on_admitted(addr.clone(), now);
        }
        if let ConnectedPoint::Dialer { address, .. } = endpoint {
            self.book.add(peer, address.clone());
        }
        self.refresh_gauges();
        if self.bans.is_banned(&peer, now) {
            self.metrics.rejection("banned");
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        }
        let Some(node) = ids::node_id(&peer) else {
            self.reject(
                peer,
                RejectReason::KeyMismatch,
                "not an Ed25519 peer id".into(),
            );
            return;
        };
        if num_established == 1 {
            if let Err(e @ AdmissionError::Full { .. }) = self.admission.on_connected(node, now) {
                tracing::warn!(%peer, "{e}");
                let _ = self.swarm.disconnect_peer_id(peer);
                return;
            }
            let _ = self.peers.insert(peer, now);
            let _ = self.peers.on_dialing(&peer, now);
        }
        if endpoint.is_dialer() && !self.admission.may_process(&node) {
            self.send_certificate(peer);
        }
    }

    fn on_closed(&mut self, peer: PeerId, connection: ConnectionId, num_established: u32) {
        self.nat_on_closed(connection);
        let now = now_ms();
        if let Some(addr) = self.bootstrap_dials.remove(&connection) {
            let _ = self.bootstrap.on_disconnected(&addr, now);
        }
        let Some(close) =
            self.uses
                .on_connection_closed(&peer, connection, num_established == 0, now)
        else {
            return;
        };
        let was_admitted = ids::node_id(&peer).is_some_and(|node| {
            let admitted = self.admission.may_process(&node);
            self.admission.on_disconnected(&node);
            admitted
        });
        let _ = self.peers.on_disconnected(&peer, now);
        self.refresh_gauges();
        self.release_held_gossip(&peer);
        // The peer hung up before it was admitted (it refused this node):
        // requests waiting for it fail now rather than at their deadline.
        self.fail_awaiting(&peer);
        if was_admitted {
            let gone = close == PeerClose::Gone;
            tracing::info!(%peer, gone, "peer down");
            self.emit(NetEvent::PeerDown { peer, gone });
        }
    }

    fn on_behaviour_event(&mut self, event: MeshBehaviourEvent) {
        match event {
            MeshBehaviourEvent::Cert(event) => self.on_cert_event(event),
            MeshBehaviourEvent::Rpc(event) => self.on_rpc_event(event),
            MeshBehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip(propagation_source, &message_id, message),
            MeshBehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                let rtt_ms = u64::try_from(rtt.as_millis()).unwrap_or(u64::MAX);
                let _ = self.peers.on_rtt(&peer, rtt_ms, now_ms());
            }
            MeshBehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(error),
            }) => self.on_ping_failure(peer, connection, &error),
            MeshBehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.on_identified(peer_id, &info.agent_version);
                let addrs = info.listen_addrs.into_iter().take(ADDRS_PER_PEER_MAX);
                self.learn(peer_id, addrs);
                self.nat_on_identified(peer_id, &info.protocols);
            }
            MeshBehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, addresses, ..
            }) => {
                let addrs = crate::discovery::newest_addrs(addresses.into_vec());
                self.learn(peer, addrs);
            }
            MeshBehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::GetClosestPeers(result),
                step,
                ..
            }) if step.last => self.on_lookup_done(result),
            MeshBehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.learn(peer, [addr]);
                }
            }
            MeshBehaviourEvent::Mdns(mdns::Event::Expired(gone)) => {
                for (peer, addr) in gone {
                    self.book.remove(&peer, &addr);
                }
            }
            MeshBehaviourEvent::Autonat(event) => self.on_autonat_event(event),
            MeshBehaviourEvent::Dcutr(event) => self.on_dcutr_event(event),
            MeshBehaviourEvent::RelayClient(event) => self.on_relay_client_event(event),
            MeshBehaviourEvent::Relay(event) => self.on_relay_server_event(event),
            _ => {}
        }
    }

    /// A ping on one of `peer`'s connections went unanswered. Pings on the
    /// peer's other connections keep it from counting as silent, so a
    /// connection left behind by a peer that restarted elsewhere (its old
    /// address gone without a reset) would stay open, and requests and
    /// streams spread over the peer's connections would keep failing on it:
    /// such a connection is closed. A peer's only connection is left to the
    /// silence timeout, which gives a loaded peer more time.
    fn on_ping_failure(&mut self, peer: PeerId, connection: ConnectionId, error: &ping::Failure) {
        if self.swarm.behaviour().keep_alive.connection_count(&peer) < 2 {
            tracing::debug!(%peer, "ping failed: {error}");
            return;
        }
        tracing::info!(%peer, ?connection, "closing a connection that stopped answering pings: {error}");
        self.metrics.stale_connections_closed.inc();
        let _ = self.swarm.close_connection(connection);
    }

    /// Discovery found `peer` at `addrs`: remember them, tell Kademlia, and
    /// make the peer a dial candidate.
    pub(super) fn learn(&mut self, peer: PeerId, addrs: impl IntoIterator<Item = Multiaddr>) {
        if peer == self.local_peer_id() {
            return;
        }
        let now = now_ms();
        let keep_loopback = self.listens_on_loopback_only();
        for addr in addrs {
            if !keep_loopback && is_loopback(&addr) {
                continue;
            }
            // Circuit addresses stay out of Kademlia, whose queries would
            // dial them beside a peer's own: the driver offers them once a
            // direct dial failed (`driver/nat.rs`).
            if self.book.add(peer, addr.clone()) && !crate::nat::is_relayed(&addr) {
                self.swarm.behaviour_mut().kad.add_address(&peer, addr);
            }
        }
        let _ = self.peers.insert(peer, now);
    }

    /// True while every address this node listens on is a loopback one (a
    /// mesh of processes on one machine). Otherwise a peer's loopback
    /// addresses lead back to this node itself (in a container, on a host)
    /// and are not worth a dial.
    fn listens_on_loopback_only(&self) -> bool {
        self.swarm.listeners().all(is_loopback)
    }

    fn on_cert_event(&mut self, event: request_response::Event<WireRequest, WireResponse>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.metrics.message(Kind::Cert, Direction::In, "received");
                self.on_certificate(peer, &request.payload);
                let own = self.settings.cert_message.clone();
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .cert
                    .send_response(channel, WireResponse(Ok(own)));
            }
            request_response::Event::Message {
                peer,
                message: Message::Response { response, .. },
                ..
            } => {
                self.metrics.message(Kind::Cert, Direction::In, "received");
                match response.0 {
                    Ok(bytes) => self.on_certificate(peer, &bytes),
                    Err(text) => tracing::info!(%peer, "peer refused our certificate: {text}"),
                }
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "certificate exchange failed: {error}");
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "certificate exchange failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// `peer` presented its certificate message: decide with admission.
    fn on_certificate(&mut self, peer: PeerId, bytes: &[u8]) {
        let Some(node) = ids::node_id(&peer) else {
            return;
        };
        let message = match CertMessage::decode(bytes) {
            Ok(message) => message,
            Err(e) => return self.reject(peer, RejectReason::Invalid, e.to_string()),
        };
        if message.mesh_id != self.settings.mesh_id {
            let detail = format!("peer belongs to mesh {:?}", message.mesh_id);
            return self.reject(peer, RejectReason::WrongMesh, detail);
        }
        let was_admitted = self.admission.may_process(&node);
        match self
            .admission
            .on_certificate(node, &message.cert_der, now_ms())
        {
            Ok(Verdict::Admitted) if !was_admitted => self.on_admitted(peer, node),
            Ok(Verdict::Admitted) => {}
            Ok(Verdict::Rejected { reason, detail }) => self.reject(peer, reason, detail),
            Err(e) => tracing::debug!(%peer, "certificate dropped: {e}"),
        }
    }

    fn on_admitted(&mut self, peer: PeerId, node: mesh_security::NodeId) {
        let now = now_ms();
        let _ = self.peers.on_admitted(peer, now);
        self.keep_admitted_peers();
        let roles = match self.admission.state(&node) {
            Some(crate::AdmissionState::Admitted { cert }) => cert.info.roles,
            _ => mesh_security::rbac::RoleSet::EMPTY,
        };
        let role = roles
            .iter()
            .next()
            .unwrap_or(mesh_security::rbac::Role::Observer);
        tracing::info!(%peer, %role, "peer admitted");
        self.refresh_gauges();
        for addr in self.book.get(&peer).to_vec() {
            if !crate::nat::is_relayed(&addr) {
                self.swarm.behaviour_mut().kad.add_address(&peer, addr);
            }
        }
        self.emit(NetEvent::PeerAdmitted { peer, role, roles });
        self.release_held_gossip(&peer);
        self.release_awaiting(&peer);
    }

    fn on_rpc_event(&mut self, event: request_response::Event<WireRequest, WireResponse>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } if request.protocol == crate::trim::CLOSING_PROTOCOL => {
                self.on_closing_notice(peer, channel);
            }
            request_response::Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.uses.on_used(peer, now_ms());
                self.on_request(peer, request, channel);
            }
            request_response::Event::Message {
                message: Message::Response { request_id, .. },
                ..
            } if self.on_notice_settled(&request_id) => {}
            request_response::Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let _ = self.peers.on_seen(&peer, now_ms());
                self.uses.on_used(peer, now_ms());
                let result = match response.0 {
                    Ok(body) => {
                        self.metrics
                            .bytes(Kind::Response, Direction::In, body.len());
                        self.metrics.message(Kind::Response, Direction::In, "ok");
                        Ok(body)
                    }
                    Err(reason) => {
                        self.metrics.message(Kind::Response, Direction::In, "error");
                        Err(NetError::Remote { peer, reason })
                    }
                };
                if let Some(reply) = self.outbound.remove(&request_id) {
                    let _ = reply.send(result);
                }
            }
            request_response::Event::OutboundFailure { request_id, .. }
                if self.on_notice_settled(&request_id) => {}
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.metrics
                    .message(Kind::Request, Direction::Out, "failed");
                let error = match error {
                    request_response::OutboundFailure::Timeout => NetError::Timeout(peer),
                    other => NetError::Remote {
                        peer,
                        reason: other.to_string(),
                    },
                };
                if let Some(reply) = self.outbound.remove(&request_id) {
                    let _ = reply.send(Err(error));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "inbound request failed: {error}");
                self.metrics.message(Kind::Request, Direction::In, "failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        request: WireRequest,
        channel: ResponseChannel<WireResponse>,
    ) {
        let admitted = ids::node_id(&peer).is_some_and(|n| self.admission.may_process(&n));
        let refusal = if !admitted {
            Some(("not_admitted", "not admitted"))
        } else if self.inbound.len() >= self.settings.inbound_requests_max {
            Some(("busy", "busy: too many requests in progress"))
        } else {
            None
        };
        if let Some((label, text)) = refusal {
            self.metrics.message(Kind::Request, Direction::In, label);
            let response = WireResponse(Err(text.to_string()));
            let _ = self
                .swarm
                .behaviour_mut()
                .rpc
                .send_response(channel, response);
            return;
        }
        let _ = self.peers.on_seen(&peer, now_ms());
        tracing::trace!(%peer, protocol = %request.protocol, "request in");
        self.metrics
            .bytes(Kind::Request, Direction::In, request.payload.len());
        let (respond, answer) = oneshot::channel();
        let delivered = self.emit(NetEvent::Request {
            peer,
            protocol: request.protocol,
            payload: request.payload,
            respond,
        });
        if !delivered {
            self.metrics.message(Kind::Request, Direction::In, "busy");
            let response = WireResponse(Err("busy: application queue full".to_string()));
            let _ = self
                .swarm
                .behaviour_mut()
                .rpc
                .send_response(channel, response);
            return;
        }
        self.metrics
            .message(Kind::Request, Direction::In, "delivered");
        let timeout = self.settings.request_timeout;
        let answer = async move {
            let answer = match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err("the application dropped the request".to_string()),
                Err(_) => Err("the application did not answer in time".to_string()),
            };
            (answer, channel)
        };
        self.inbound.push(answer.boxed());
    }

    fn on_gossip(
        &mut self,
        forwarder: PeerId,
        id: &gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        let now = now_ms();
        let node = ids::node_id(&forwarder);
        let admitted = node.is_some_and(|n| self.admission.may_process(&n));
        let awaiting = node.is_some_and(|n| {
            matches!(
                self.admission.state(&n),
                Some(crate::AdmissionState::AwaitingCertificate { .. })
            )
        });
        if awaiting && self.gossip_held < GOSSIP_HELD_MAX {
            // Gossipsub has already recorded the message id: refusing this
            // copy would make it drop the copies admitted peers relay later.
            // Hold the decision until the relay's admission is settled.
            self.gossip_held += 1;
            let held = self.held_gossip.entry(forwarder).or_default();
            held.push((id.clone(), message));
            return;
        }
        let verdict = self.gate.check(admitted, &message.data, now);
        let acceptance = match &verdict {
            Ok(_) => MessageAcceptance::Accept,
            Err(reject) if reject.is_benign() => MessageAcceptance::Ignore,
            Err(_) => MessageAcceptance::Reject,
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, &forwarder, acceptance);
        if let Err(reject) = verdict {
            tracing::debug!(%forwarder, reason = reject.as_str(), "gossip refused");
            self.metrics
                .message(Kind::Gossip, Direction::In, reject.as_str());
            return;
        }
        let _ = self.peers.on_seen(&forwarder, now);
        self.metrics
            .message(Kind::Gossip, Direction::In, "accepted");
        self.metrics
            .bytes(Kind::Gossip, Direction::In, message.data.len());
        self.emit(NetEvent::Gossip {
            source: message.source.unwrap_or(forwarder),
            topic: message.topic.into_string(),
            payload: message.data,
        });
    }

    /// The admission of `peer` is settled (admitted, refused or gone): decide
    /// the gossip it relayed meanwhile.
    pub(super) fn release_held_gossip(&mut self, peer: &PeerId) {
        let Some(held) = self.held_gossip.remove(peer) else {
            return;
        };
        self.gossip_held = self.gossip_held.saturating_sub(held.len());
        for (id, message) in held {
            self.on_gossip(*peer, &id, message);
        }
    }
}

/// The IP of a remote address, or the whole address when it has none
/// (memory transport): the key that paces log lines per source.
fn source_ip(addr: &Multiaddr) -> String {
    addr.iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Ip4(ip) => Some(ip.to_string()),
            libp2p::multiaddr::Protocol::Ip6(ip) => Some(ip.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| addr.to_string())
}

/// True when `addr` is on 127.0.0.0/8 or ::1.
fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|part| match part {
        libp2p::multiaddr::Protocol::Ip4(ip) => ip.is_loopback(),
        libp2p::multiaddr::Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}
