//! Writes from nodes that do not run the committee: forwarded, with the
//! caller's admin token, to a committee member that proposes them.
//!
//! ```text
//!   node without the committee            committee member (any; it forwards
//!   POST /v1/kv, /v1/jobs ... (token ok)    to the leader itself)
//!     ── write/1 request: postcard(ForwardedWrite { token, command }) ──►
//!                                          action = required_action(command)
//!                                          token checked again for that action
//!                                          propose ─► commit
//!     ◄── postcard(Result<CommitView, String>) ──
//! ```
//!
//! The member checks the token itself: a node's certificate lets it relay a
//! write, never authorizes one; a forwarded revocation must also carry the
//! CA's signature. Only the writes the HTTP API makes can be forwarded;
//! membership and round records are proposed by the committee's own logic.

use mesh_consensus::Command;
use mesh_net::{NetError, NetHandle, PeerId};
use mesh_security::rbac::Action;
use serde::{Deserialize, Serialize};

use crate::api::CommitView;

/// The request-response protocol name of forwarded writes.
pub const WRITE_PROTOCOL: &str = "write/1";
/// Committee members a forwarding node tries, in order, before giving up.
pub const FORWARD_TARGETS_MAX: usize = 3;

/// A write and the token of the client that asked for it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardedWrite {
    /// The client's admin token.
    pub token: String,
    /// The command to propose.
    pub command: Command,
}

/// The action a token must allow for `command` to be forwarded; `None` for
/// commands the HTTP API never proposes.
pub fn required_action(command: &Command) -> Option<Action> {
    match command {
        Command::Put { .. } | Command::CreateJob { .. } => Some(Action::SubmitJob),
        Command::StopJob { .. } => Some(Action::CancelJob),
        Command::RevokeCertificate { .. } => Some(Action::RevokeCertificate),
        _ => None,
    }
}

/// Decodes a forwarded write and says which action its token must allow.
pub fn decode_request(payload: &[u8]) -> Result<(ForwardedWrite, Action), String> {
    let write: ForwardedWrite =
        postcard::from_bytes(payload).map_err(|e| format!("malformed forwarded write: {e}"))?;
    write
        .command
        .validate()
        .map_err(|e| format!("invalid forwarded command: {e}"))?;
    let action = required_action(&write.command).ok_or_else(|| {
        "this command cannot be forwarded; send it to a committee member".to_string()
    })?;
    Ok((write, action))
}

/// Encodes a member's answer.
pub fn encode_answer(answer: &Result<CommitView, String>) -> Vec<u8> {
    postcard::to_allocvec(answer).unwrap_or_default()
}

/// Sends `write` to the first of `members` that takes it. A member that is no
/// longer admitted is skipped; any other failure is the answer, because the
/// write may have been proposed and must not be sent twice.
pub async fn forward(
    net: &NetHandle,
    members: &[PeerId],
    write: &ForwardedWrite,
) -> Result<CommitView, String> {
    let payload =
        postcard::to_allocvec(write).map_err(|e| format!("cannot encode the write: {e}"))?;
    for peer in members.iter().take(FORWARD_TARGETS_MAX) {
        match net.request(*peer, WRITE_PROTOCOL, payload.clone()).await {
            Ok(answer) => {
                return postcard::from_bytes::<Result<CommitView, String>>(&answer)
                    .map_err(|e| format!("committee member {peer} answered garbage: {e}"))?
            }
            Err(NetError::NotAdmitted(_)) => continue,
            Err(e) => return Err(format!("forwarding to committee member {peer}: {e}")),
        }
    }
    Err("no committee member is reachable from this node; retry once it has joined the mesh".into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mesh_consensus::command::StopReason;
    use mesh_consensus::JobId;

    fn encoded(command: Command) -> Vec<u8> {
        postcard::to_allocvec(&ForwardedWrite {
            token: "t".into(),
            command,
        })
        .unwrap()
    }

    #[test]
    fn api_writes_need_the_api_action_and_others_are_refused() {
        let put = Command::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        };
        assert_eq!(decode_request(&encoded(put)).unwrap().1, Action::SubmitJob);
        let stop = Command::StopJob {
            job: JobId("j".into()),
            reason: StopReason::Cancelled,
        };
        assert_eq!(decode_request(&encoded(stop)).unwrap().1, Action::CancelJob);
        let revoke = Command::RemoveMember {
            node: mesh_consensus::NodeId("n".into()),
        };
        assert!(decode_request(&encoded(revoke))
            .unwrap_err()
            .contains("cannot be forwarded"));
        assert!(decode_request(b"\xff\x00garbage")
            .unwrap_err()
            .contains("malformed"));
    }
}
