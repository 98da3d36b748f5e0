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
//!
//! One round command comes from participants themselves: a trainer whose
//! data cannot take part in a job declines it. A node that follows the state
//! without the log sends it under `decline/1` (postcard of the command, no
//! token): the member takes it only when the declining node is the sender
//! and the sender's certificate has the trainer role.

use mesh_consensus::{Command, NodeId};
use mesh_net::{NetError, NetHandle, PeerId};
use mesh_security::rbac::Action;
use serde::{Deserialize, Serialize};

use crate::api::CommitView;

/// The request-response protocol name of forwarded writes.
pub const WRITE_PROTOCOL: &str = "write/1";
/// The request-response protocol name of a follower's own job declines.
pub const DECLINE_PROTOCOL: &str = "decline/1";
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

/// Decodes a forwarded decline and checks that `sender` (the mesh name of
/// the peer that sent it) declines for itself and may train (`sender_trains`).
pub fn decode_decline(
    payload: &[u8],
    sender: &NodeId,
    sender_trains: bool,
) -> Result<Command, String> {
    let command: Command =
        postcard::from_bytes(payload).map_err(|e| format!("malformed decline: {e}"))?;
    command
        .validate()
        .map_err(|e| format!("invalid decline: {e}"))?;
    match &command {
        Command::DeclineJob { node, .. } if node == sender && sender_trains => Ok(command),
        Command::DeclineJob { node, .. } if node == sender => {
            Err("decline refused: the sender's certificate has no trainer role".into())
        }
        Command::DeclineJob { node, .. } => Err(format!(
            "decline refused: {sender} cannot decline for {node}"
        )),
        other => Err(format!("{other} cannot be sent as a decline")),
    }
}

/// Sends `payload` under `protocol` to the first of `members` that takes it.
/// A member that is no longer admitted is skipped; any other failure is the
/// answer, because the write may have been proposed and must not be sent twice.
async fn send_to_committee(
    net: &NetHandle,
    members: &[PeerId],
    protocol: &str,
    payload: Vec<u8>,
) -> Result<CommitView, String> {
    for peer in members.iter().take(FORWARD_TARGETS_MAX) {
        match net.request(*peer, protocol, payload.clone()).await {
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

/// Sends this node's `decline` (a [`Command::DeclineJob`]) to the first of
/// `members` that takes it.
pub async fn forward_decline(
    net: &NetHandle,
    members: &[PeerId],
    decline: &Command,
) -> Result<CommitView, String> {
    let payload =
        postcard::to_allocvec(decline).map_err(|e| format!("cannot encode the decline: {e}"))?;
    send_to_committee(net, members, DECLINE_PROTOCOL, payload).await
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
    send_to_committee(net, members, WRITE_PROTOCOL, payload).await
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

    #[test]
    fn a_trainer_may_decline_only_for_itself() {
        let me = NodeId("me".into());
        let decline = |node: &NodeId| {
            postcard::to_allocvec(&Command::DeclineJob {
                job: JobId("j".into()),
                node: node.clone(),
                reason: "schema mismatch".into(),
            })
            .unwrap()
        };
        assert!(decode_decline(&decline(&me), &me, true).is_ok());
        let other = NodeId("other".into());
        let err = decode_decline(&decline(&other), &me, true).unwrap_err();
        assert!(err.contains("cannot decline for other"), "{err}");
        let err = decode_decline(&decline(&me), &me, false).unwrap_err();
        assert!(err.contains("no trainer role"), "{err}");
        let put = postcard::to_allocvec(&Command::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        })
        .unwrap();
        let err = decode_decline(&put, &me, true).unwrap_err();
        assert!(err.contains("cannot be sent as a decline"), "{err}");
        assert!(decode_decline(b"\xff\x00", &me, true)
            .unwrap_err()
            .contains("malformed"));
    }
}
