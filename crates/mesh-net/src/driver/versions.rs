//! The driver's side of protocol versions (see [`crate::version`]): a peer's
//! identify tells which versions it speaks; the driver records the version
//! the two use and says in its log, once per peer and change (and at most
//! once per peer per log interval), when they share none.

use libp2p::PeerId;

use super::{now_ms, Driver};
use crate::version::PeerVersion;

impl Driver {
    /// `peer` identified itself with `agent_version`.
    pub(super) fn on_identified(&mut self, peer: PeerId, agent_version: &str) {
        let (version, changed) = self.versions.identified(peer, agent_version);
        match version {
            PeerVersion::Incompatible { theirs } if changed => {
                let key = peer.to_string();
                if let Some(suppressed) =
                    self.log_limit
                        .admit("incompatible-protocol", &key, now_ms())
                {
                    tracing::warn!(
                        %peer,
                        ours = %self.versions.ours(),
                        %theirs,
                        "peer shares no protocol version with this node; \
                         no round messages go to it{suppressed}"
                    );
                }
            }
            PeerVersion::Negotiated(v) if changed => {
                tracing::debug!(%peer, version = v, "protocol version negotiated");
            }
            _ => {}
        }
    }
}
