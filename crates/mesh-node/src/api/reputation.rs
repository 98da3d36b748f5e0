//! Reputation endpoints: who has evidence against them and who is
//! quarantined (observer token or better), and an operator's reset of a
//! node's reputation that lifts its quarantine (admin token).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mesh_consensus::command::{Command, NodeId};
use mesh_security::rbac::Action;

use super::{authorize, latest, write, ApiState};

/// `GET /v1/reputation`: members with evidence against them, with their
/// scores and whether they are quarantined.
pub async fn list(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorize(&state, &headers, Action::ReadStatus) {
        return denied.into_response();
    }
    Json(latest(&state).reputation.clone()).into_response()
}

/// `POST /v1/reputation/{node}/reset`: commits `ResetReputation`; the node is
/// selected for rounds again.
pub async fn reset(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(node): Path<String>,
) -> Response {
    if let Err(denied) = authorize(&state, &headers, Action::ResetReputation) {
        return denied.into_response();
    }
    let command = Command::ResetReputation { node: NodeId(node) };
    write(&state, &headers, command, StatusCode::CONFLICT).await
}
