//! The driver's handling of [`Command`]s from [`crate::NetHandle`]s.

use libp2p::gossipsub::{IdentTopic, PublishError};
use libp2p::{Multiaddr, PeerId};
use mesh_security::ca::SignedRevocation;
use mesh_security::envelope::Envelope;
use tokio::sync::oneshot;

use super::{now_ms, Driver, InboundAnswer};
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
            Command::FindPeer(peer) => self.find_peer(peer),
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
        let admitted = ids::node_id(&peer).is_some_and(|n| self.admission.may_process(&n));
        let limit = self.settings.request_bytes_max;
        let refusal = if !admitted {
            Some(NetError::NotAdmitted(peer))
        } else if payload.len() > limit {
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
            if let NetError::NotAdmitted(_) = error {
                self.find_peer(peer);
            }
            self.metrics
                .message(Kind::Request, Direction::Out, "refused");
            let _ = reply.send(Err(error));
            return;
        }
        self.uses.on_used(peer, super::now_ms());
        self.metrics.message(Kind::Request, Direction::Out, "sent");
        self.metrics
            .bytes(Kind::Request, Direction::Out, payload.len());
        let request = WireRequest { protocol, payload };
        let id = self.swarm.behaviour_mut().rpc.send_request(&peer, request);
        self.outbound.insert(id, reply);
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
