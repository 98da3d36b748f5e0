//! The node's HTTP API (axum): health, readiness, metrics, status, and the
//! mutating endpoints behind an admin token.
//!
//! The API never reaches into the runtime's state. The runtime publishes a
//! [`NodeSnapshot`] on a `watch` channel whenever something changes, and
//! handlers read the latest one; writes go to the runtime as [`ApiCommand`]s
//! on a bounded channel, each with its own reply. A slow or stuck runtime so
//! cannot block reads, and a flood of writes cannot grow a queue without bound.
//! Connections are accepted by [`server`], which caps them in total and per
//! client address and closes any that is slow to send its request header,
//! and served over HTTPS ([`tls`]) unless plain HTTP on loopback is configured.
//!
//! | route              | who         | what                                              |
//! |--------------------|-------------|---------------------------------------------------|
//! | `GET /healthz`     | anyone      | 200 while the runtime loop is alive               |
//! | `GET /readyz`      | anyone      | 200 when admitted and, on a committee member, in step with the leader |
//! | `GET /metrics`     | anyone      | Prometheus text format                            |
//! | `GET /v1/status`   | anyone      | node id, mesh, uptime, counts, followed index     |
//! | `GET /v1/peers`    | anyone      | the peer table                                    |
//! | `GET /v1/consensus`| anyone      | leader, term, commit index, voters, last snapshot |
//! | `POST /v1/kv`      | admin token | commits a key-value command through the committee |
//! | `POST /v1/revocations` | admin token | commits a CA-signed revocation (`{"signed": HEX}`) |
//! | `POST /v1/jobs`    | admin token | submits a job (`{"job": ID, "spec": JobSpec}`)     |
//! | `POST /v1/jobs/{id}/cancel` | admin token | stops a job                              |
//! | `GET /v1/jobs`, `GET /v1/jobs/{id}` | observer token | jobs and their rounds             |
//! | `GET /v1/jobs/{id}/model?round=R` | observer token | a round's model (parameter blob)    |
//! | `GET /ui` (`/ui/ui.js`, `/ui/ui.css`) | anyone | the read-only web view (`ui.rs`); its data needs the API's tokens |

mod auth;
pub mod jobs;
mod proposer;
pub mod reputation;
pub mod server;
mod snapshot;
pub mod tls;
mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mesh_security::rbac::Action;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::runtime::revocations;
use mesh_federated::model::store::WEIGHTS_BYTES_MAX;

pub use auth::{AdminAuth, AuthError};
pub use jobs::JobView;
pub use proposer::Proposer;
pub use snapshot::{NodeSnapshot, PeerView, ReputationView, StatusView};

/// Capacity of the queue from the API to the runtime; beyond it writes get 503.
pub const COMMAND_QUEUE_CAPACITY: usize = 1_024;
/// Largest key or value accepted by `POST /v1/kv`.
pub const KV_FIELD_BYTES_MAX: usize = 4_096;

/// A write the API asks the runtime to perform.
#[derive(Debug)]
pub enum ApiCommand {
    /// Propose a command (a key-value write, a job submission or cancellation)
    /// on a node without the committee: the runtime forwards it.
    Propose {
        /// The command (boxed: a job spec makes it the largest variant by far).
        command: Box<mesh_consensus::Command>,
        /// The caller's admin token, passed on if the write is forwarded.
        token: String,
        /// Where the commit (or why not) goes.
        reply: oneshot::Sender<Result<CommitView, String>>,
    },
    /// A round's model blob.
    GetModel {
        /// The job.
        job: mesh_consensus::JobId,
        /// The round (latest completed when `None`).
        round: Option<u32>,
        /// The bytes, or an HTTP status and why not.
        reply: oneshot::Sender<Result<Vec<u8>, (u16, String)>>,
    },
    /// Pin uploaded starting weights (a safetensors file) on this node.
    PinWeights {
        /// The file.
        bytes: Arc<[u8]>,
        /// Its hash (hex) and this node's mesh name, or a status and why not.
        reply: oneshot::Sender<Result<(String, String), (u16, String)>>,
    },
    /// Check that this node holds a job's starting weights and that they
    /// fit the job's model.
    CheckStartingWeights {
        /// The job spec (boxed: it is large).
        spec: Box<mesh_consensus::JobSpec>,
        /// `Ok`, or why the job cannot start from them.
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// Where a committed write landed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommitView {
    /// Log index of the entry.
    pub index: u64,
    /// State hash after applying it (hex).
    pub state_hash: String,
}

/// Body of `POST /v1/kv`.
#[derive(Debug, Deserialize)]
pub struct PutKvRequest {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// Answer of `GET /v1/kv/{key}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct KvValue {
    /// The key.
    pub key: String,
    /// Its value; `null` when the key is not set.
    pub value: Option<String>,
    /// The leader's read index: every write committed at or below it is seen.
    pub index: u64,
}

/// Body of `POST /v1/revocations`.
#[derive(Debug, Deserialize)]
pub struct RevocationRequest {
    /// Hex of the CA-signed revocation: the `signed` field of a line of the
    /// CA's `revocations.jsonl` (`agent-mesh ca revoke` writes it).
    pub signed: String,
}

/// Everything a handler needs.
#[derive(Clone)]
pub struct ApiState {
    /// The runtime's latest view of itself.
    pub snapshot: watch::Receiver<Arc<NodeSnapshot>>,
    /// Metrics, encoded on each scrape.
    pub registry: Arc<Registry>,
    /// Checks admin tokens.
    pub auth: Arc<AdminAuth>,
    /// Writes for the runtime.
    pub commands: mpsc::Sender<ApiCommand>,
    /// Proposes writes here on a committee node; `None` elsewhere.
    pub proposer: Option<Proposer>,
}

/// Limits applied to every request.
#[derive(Clone, Copy, Debug)]
pub struct ApiLimits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Requests slower than this get 408.
    pub timeout_ms: u64,
    /// A request body that sends nothing for this long is cut off (400).
    pub body_read_timeout_ms: u64,
    /// Most requests in flight.
    pub max_concurrent_requests: usize,
}

/// Builds the router with body, time and concurrency limits.
pub fn router(state: ApiState, limits: ApiLimits) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers))
        .route("/v1/consensus", get(consensus))
        .route("/v1/kv", post(put_kv))
        .route("/v1/kv/{key}", get(get_kv))
        .route("/v1/revocations", post(revoke))
        .route("/v1/jobs", get(jobs::list).post(jobs::submit))
        .route("/v1/jobs/{id}", get(jobs::get_job))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/model", get(jobs::model))
        .route(
            "/v1/models",
            post(jobs::upload_weights).layer(DefaultBodyLimit::max(WEIGHTS_BYTES_MAX)),
        )
        .route("/v1/reputation", get(reputation::list))
        .route("/v1/reputation/{node}/reset", post(reputation::reset))
        .route("/ui", get(ui::index))
        .route("/ui/", get(ui::index))
        .route("/ui/ui.js", get(ui::script))
        .route("/ui/ui.css", get(ui::style))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            Duration::from_millis(limits.body_read_timeout_ms),
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(limits.timeout_ms),
        ))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            limits.max_concurrent_requests,
        ))
        .with_state(state)
}

/// An error reply: status code and a JSON `{"error": ...}` body.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn latest(state: &ApiState) -> Arc<NodeSnapshot> {
    state.snapshot.borrow().clone()
}

async fn healthz(State(state): State<ApiState>) -> Response {
    if state.commands.is_closed() {
        return (StatusCode::SERVICE_UNAVAILABLE, "runtime stopped\n").into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(State(state): State<ApiState>) -> Response {
    let snapshot = latest(&state);
    if snapshot.ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let reason = format!("not ready: {}\n", snapshot.not_ready_reason);
        (StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        let message = format!("encoding metrics failed: {err}");
        return ApiError(StatusCode::INTERNAL_SERVER_ERROR, message).into_response();
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

async fn status(State(state): State<ApiState>) -> Json<StatusView> {
    Json(latest(&state).status.clone())
}

async fn peers(State(state): State<ApiState>) -> Json<Vec<PeerView>> {
    Json(latest(&state).peers.clone())
}

async fn consensus(State(state): State<ApiState>) -> Response {
    match &latest(&state).consensus {
        Some(view) => Json(view.clone()).into_response(),
        None => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node does not run consensus yet".into(),
        )
        .into_response(),
    }
}

/// Refuses the request unless the caller's token allows `action`.
fn authorize(state: &ApiState, headers: &HeaderMap, action: Action) -> Result<(), ApiError> {
    state
        .auth
        .check(headers, action)
        .map_err(|err| ApiError(err.status(), err.to_string()))
}

/// A JSON body once the caller's token allows `action`, or the refusal to send.
fn authorized_body<T>(
    state: &ApiState,
    headers: &HeaderMap,
    action: Action,
    body: Result<Json<T>, JsonRejection>,
) -> Result<T, ApiError> {
    authorize(state, headers, action)?;
    body.map(|Json(request)| request)
        .map_err(|err| ApiError(err.status(), err.body_text()))
}

async fn put_kv(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<PutKvRequest>, JsonRejection>,
) -> Response {
    let request = match authorized_body(&state, &headers, Action::SubmitJob, body) {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    if request.key.len() > KV_FIELD_BYTES_MAX || request.value.len() > KV_FIELD_BYTES_MAX {
        let message = format!("key and value are limited to {KV_FIELD_BYTES_MAX} bytes");
        return ApiError(StatusCode::PAYLOAD_TOO_LARGE, message).into_response();
    }
    let command = mesh_consensus::Command::Put {
        key: request.key.into_bytes(),
        value: request.value.into_bytes(),
    };
    write(&state, &headers, command, StatusCode::SERVICE_UNAVAILABLE).await
}

/// `GET /v1/kv/{key}`: a linearizable read, served by the committee leader
/// only (any other node answers 421 naming the leader it knows, or 503 while
/// no leader is confirmed), so a read never returns a value older than a
/// write that completed before it began.
async fn get_kv(
    State(state): State<ApiState>,
    headers: HeaderMap,
    axum::extract::Path(key): axum::extract::Path<String>,
) -> Response {
    if let Err(denied) = authorize(&state, &headers, Action::ReadStatus) {
        return denied.into_response();
    }
    if key.len() > KV_FIELD_BYTES_MAX {
        let message = format!("keys are limited to {KV_FIELD_BYTES_MAX} bytes");
        return ApiError(StatusCode::PAYLOAD_TOO_LARGE, message).into_response();
    }
    let Some(proposer) = &state.proposer else {
        let message = "this node does not run the committee; read through the committee leader";
        return ApiError(StatusCode::MISDIRECTED_REQUEST, message.into()).into_response();
    };
    match proposer.read_kv(key.as_bytes()).await {
        Ok((index, value)) => {
            let value = value.map(|v| String::from_utf8_lossy(&v).into_owned());
            Json(KvValue { key, value, index }).into_response()
        }
        Err(e @ mesh_consensus::ConsensusError::NotLeader { .. }) => {
            ApiError(StatusCode::MISDIRECTED_REQUEST, e.to_string()).into_response()
        }
        Err(e) => ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn revoke(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<RevocationRequest>, JsonRejection>,
) -> Response {
    let request = match authorized_body(&state, &headers, Action::RevokeCertificate, body) {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    let revocation = match revocations::decode_hex(&request.signed, state.auth.ca_key()) {
        Ok(revocation) => revocation,
        Err(err) => return ApiError(StatusCode::BAD_REQUEST, err.to_string()).into_response(),
    };
    let reason = mesh_consensus::RevocationReason::from_text(&revocation.entry.reason);
    let command = mesh_consensus::Command::RevokeCertificate { revocation, reason };
    write(&state, &headers, command, StatusCode::CONFLICT).await
}

/// Commits `command` for a request that passed its checks: proposed here on
/// a committee node, otherwise sent to the runtime with the caller's token
/// to be forwarded. A refusal answers `refused`.
async fn write(
    state: &ApiState,
    headers: &HeaderMap,
    command: mesh_consensus::Command,
    refused: StatusCode,
) -> Response {
    if let Some(proposer) = &state.proposer {
        return commit_response(proposer.propose(command).await, refused);
    }
    let token = auth::bearer(headers).unwrap_or_default().to_string();
    let make = |reply| ApiCommand::Propose {
        command: Box::new(command),
        token,
        reply,
    };
    ask(state, make, |r| commit_response(r, refused)).await
}

/// Sends a command to the runtime (never waiting for queue space) and turns
/// its reply into a response with `answer`.
async fn ask<T>(
    state: &ApiState,
    make: impl FnOnce(oneshot::Sender<T>) -> ApiCommand,
    answer: impl FnOnce(T) -> Response,
) -> Response {
    let (reply, outcome) = oneshot::channel();
    if state.commands.try_send(make(reply)).is_err() {
        let message = "the node is overloaded or stopping; retry later".to_string();
        return ApiError(StatusCode::SERVICE_UNAVAILABLE, message).into_response();
    }
    match outcome.await {
        Ok(reply) => answer(reply),
        Err(_) => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the runtime stopped before answering".into(),
        )
        .into_response(),
    }
}

/// A commit as JSON, or why not with `refused`.
fn commit_response(reply: Result<CommitView, String>, refused: StatusCode) -> Response {
    match reply {
        Ok(commit) => Json(commit).into_response(),
        Err(message) => ApiError(refused, message).into_response(),
    }
}

#[cfg(test)]
mod tests;
