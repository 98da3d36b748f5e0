//! The driver's handling of [`Command`]s from [`crate::NetHandle`]s.

use libp2p::gossipsub::{IdentTopic, PublishError};
use libp2p::swarm::DialError;
use libp2p::{Multiaddr, PeerId};
use mesh_security::ca::SignedRevocation;
use mesh_security::envelope::Envelope;
use tokio::sync::oneshot;

use super::{now_ms, Driver, HeldRequest, InboundAnswer, RequestReply};
use crate::admission::RejectReason;
use crate::codec::{WireRequest, WireResponse, NAME_BYTES_MAX};
use crate::handle::{Command, PeerInfo};
use crate::metrics::{Direction, Kind};
use crate::{ids, NetError};

impl Driver {
    pub(super) fn on_command(&mut self, command: Command) {
        match command {
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Dial(addr, reply) => {
                let _ = reply.send(self.dial(addr));
            }
            Command::Request {
                peer,
                protocol,
                payload,
                reply,
            } => self.send_request(peer, protocol, payload, reply),
            Command::Publish {
                topic,
                payload,
                reply,
            } => {
                let _ = reply.send(self.publish(&topic, payload));
            }
            Command::Subscribe(topic, reply) => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .subscribe(&IdentTopic::new(topic))
                    .map(|_| ())
                    .map_err(|e| NetError::Gossip(format!("subscribe: {e}")));
                let _ = reply.send(result);
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.peer_infos());
            }
            Command::Revoke(revocation, reply) => {
                let _ = reply.send(self.revoke(&revocation));
            }
            Command::RenewCertificate(cert_der, reply) => {
                let _ = reply.send(self.renew_certificate(cert_der));
            }
            Command::FindPeer(peer) => {
                self.find_peer(peer);
            }
            Command::Protect(peers) => self.protected = peers,
            Command::Shutdown(reply) => {
                // Handled by the run loop; answering here keeps the match total.
                let _ = reply.send(());
            }
        }
    }

    /// Checks `cert_der` as a peer would, then presents it from now on and
    /// sends it to every admitted peer.
    fn renew_certificate(&mut self, cert_der: Vec<u8>) -> Result<usize, NetError> {
        let me = ids::node_id(&self.local_peer_id())
            .ok_or_else(|| NetError::Config("this node's peer id is not a node id".into()))?;
        self.admission
            .check(me, &cert_der, now_ms())
            .map_err(|e| NetError::Config(format!("renewed certificate refused: {e}")))?;
        self.settings.cert_message = crate::cert_exchange::CertMessage {
            mesh_id: self.settings.mesh_id.clone(),
            cert_der,
        }
        .encode()
        .map_err(|e| NetError::Config(format!("renewed certificate: {e}")))?;
        let admitted: Vec<PeerId> = self
            .admission
            .admitted()
            .filter_map(|(node, _)| ids::peer_id(node).ok())
            .collect();
        for peer in &admitted {
            self.send_certificate(*peer);
        }
        tracing::info!(
            peers = admitted.len(),
            "renewed certificate sent to admitted peers"
        );
        Ok(admitted.len())
    }

    fn dial(&mut self, addr: Multiaddr) -> Result<(), NetError> {
        self.swarm.dial(addr.clone()).map_err(|e| NetError::Dial {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
    }

    fn send_request(
        &mut self,
        peer: PeerId,
        protocol: String,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, NetError>>,
    ) {
        let limit = self.settings.request_bytes_max;
        let refusal = if payload.len() > limit {
            Some(NetError::TooLarge {
                size_bytes: payload.len(),
                limit_bytes: limit,
            })
        } else if protocol.len() > NAME_BYTES_MAX {
            Some(NetError::TooLarge {
                size_bytes: protocol.len(),
                limit_bytes: NAME_BYTES_MAX,
            })
        } else if self.outbound.len() >= self.settings.outbound_requests_max {
            Some(NetError::Busy("outbound requests"))
        } else {
            None
        };
        if let Some(error) = refusal {
            self.refuse_request(reply, error);
            return;
        }
        let request = HeldRequest {
            protocol,
            payload,
            reply,
        };
        if !ids::node_id(&peer).is_some_and(|n| self.admission.may_process(&n)) {
            self.await_admission(peer, request);
            return;
        }
        self.uses.on_used(peer, super::now_ms());
        tracing::trace!(%peer, protocol = %request.protocol, "request out");
        self.metrics.message(Kind::Request, Direction::Out, "sent");
        self.metrics
            .bytes(Kind::Request, Direction::Out, request.payload.len());
        let wire = WireRequest {
            protocol: request.protocol,
            payload: request.payload,
        };
        let id = self.swarm.behaviour_mut().rpc.send_request(&peer, wire);
        self.outbound.insert(id, request.reply);
    }

    fn refuse_request(&mut self, reply: RequestReply, error: NetError) {
        self.metrics
            .message(Kind::Request, Direction::Out, "refused");
        let _ = reply.send(Err(error));
    }

    /// Holds a request to a peer that is not admitted (see
    /// [`crate::awaiting`]) and starts connecting it when it is the first.
    fn await_admission(&mut self, peer: PeerId, request: HeldRequest) {
        let now = now_ms();
        if peer == self.local_peer_id() || self.bans.is_banned(&peer, now) {
            return self.refuse_request(request.reply, NetError::NotAdmitted(peer));
        }
        let deadline_ms = now.saturating_add(self.settings.admission_wait_ms);
        match self.awaiting.hold(peer, request, deadline_ms) {
            Ok(true) => self.connect_on_demand(peer, now),
            Ok(false) => {}
            Err(request) => {
                self.refuse_request(request.reply, NetError::Busy("requests awaiting admission"))
            }
        }
    }

    /// Dials `peer` at its known addresses, or looks it up when none is
    /// known; nothing when it is connected (admission is under way).
    fn connect_on_demand(&mut self, peer: PeerId, now: u64) {
        if self.swarm.is_connected(&peer) {
            return;
        }
        let addrs = self.dial_addresses(&peer, self.book.get(&peer).to_vec());
        if addrs.is_empty() {
            self.find_peer(peer);
            return;
        }
        tracing::debug!(%peer, "dialling a peer a request is for");
        let _ = self.peers.on_dialing(&peer, now);
        match self.dial_peer(peer, addrs) {
            // Already dialling: its outcome decides.
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {}
            Err(e) => {
                tracing::debug!(%peer, "dial on demand not started: {e}");
                if !self.find_peer(peer) {
                    self.fail_awaiting(&peer);
                }
            }
        }
    }

    /// `peer` was admitted: the requests held for it go out.
    pub(super) fn release_awaiting(&mut self, peer: &PeerId) {
        for request in self.awaiting.take(peer) {
            self.send_request(*peer, request.protocol, request.payload, request.reply);
        }
    }

    /// The requests held for `peer` fail: it was refused.
    pub(super) fn fail_awaiting(&mut self, peer: &PeerId) {
        for request in self.awaiting.take(peer) {
            self.refuse_request(request.reply, NetError::NotAdmitted(*peer));
        }
    }

    /// The held requests whose deadline passed fail.
    pub(super) fn expire_awaiting(&mut self, now: u64) {
        for (peer, request) in self.awaiting.expire(now) {
            tracing::debug!(%peer, "request not sent: the peer was not admitted in time");
            self.refuse_request(request.reply, NetError::NotAdmitted(peer));
        }
    }

    fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), NetError> {
        let limit = self.settings.gossip_bytes_max;
        if payload.len() > limit {
            return Err(NetError::TooLarge {
                size_bytes: payload.len(),
                limit_bytes: limit,
            });
        }
        Envelope::decode(&payload, limit)
            .and_then(|envelope| envelope.verify_signature())
            .map_err(|e| NetError::InvalidEnvelope(e.to_string()))?;
        let size = payload.len();
        let result = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(IdentTopic::new(topic), payload);
        match result {
            Ok(_) => {
                self.metrics.message(Kind::Gossip, Direction::Out, "sent");
                self.metrics.bytes(Kind::Gossip, Direction::Out, size);
                Ok(())
            }
            Err(error) => {
                self.metrics
                    .message(Kind::Gossip, Direction::Out, "refused");
                Err(match error {
                    PublishError::NoPeersSubscribedToTopic => NetError::NoPeers(topic.to_string()),
                    PublishError::AllQueuesFull(_) => NetError::Busy("gossip send"),
                    PublishError::MessageTooLarge => NetError::TooLarge {
                        size_bytes: size,
                        limit_bytes: limit,
                    },
                    other => NetError::Gossip(other.to_string()),
                })
            }
        }
    }

    fn revoke(&mut self, revocation: &SignedRevocation) -> Result<(), NetError> {
        let rejected = self
            .admission
            .on_revocation(revocation)
            .map_err(|e| NetError::BadRevocation(e.to_string()))?;
        self.gate.revoke(revocation.entry.node_id);
        for rejection in rejected {
            if let Ok(peer) = ids::peer_id(&rejection.peer) {
                self.reject(peer, RejectReason::Revoked, "certificate revoked".into());
            }
        }
        Ok(())
    }

    fn peer_infos(&self) -> Vec<PeerInfo> {
        let now = now_ms();
        self.peers
            .iter()
            .map(|(peer, info)| PeerInfo {
                peer: *peer,
                addresses: self.book.get(peer).to_vec(),
                state: self.peer_status(peer, info.state, now),
                rtt_ms: info.rtt_ms,
                last_seen_ms: info.last_seen_ms,
                connection: self.nat.peer_kind(peer),
            })
            .collect()
    }

    /// The application answered an inbound request (or dropped it, or timed out).
    pub(super) fn on_inbound_answer(&mut self, (answer, channel): InboundAnswer) {
        if let Ok(body) = &answer {
            self.metrics
                .bytes(Kind::Response, Direction::Out, body.len());
        }
        let response = answer;
        let result = if response.is_ok() { "ok" } else { "error" };
        self.metrics.message(Kind::Response, Direction::Out, result);
        let sent = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_response(channel, WireResponse(response));
        if sent.is_err() {
            tracing::debug!("requester went away before the response");
        }
    }
}
