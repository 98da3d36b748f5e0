//! Job endpoints: submit and cancel (admin token), list, inspect and fetch a
//! round's model (observer token or better).
//!
//! Nothing that cannot run reaches the log: a spec with a numeric field out
//! of range is refused with 400 naming the field and its range
//! ([`JobSpec::check_bounds`]), and cancelling a job this node's committed
//! state does not hold (or holds as ended) is refused with 409 before any
//! entry is written (the proposer checks; see `proposer.rs`).

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mesh_consensus::command::{Command, JobId, JobSpec, StopReason};
use mesh_round::job::{JobSpecCheck, JobSpecError};
use mesh_security::rbac::Action;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::{ask, authorize, authorized_body, latest, write, ApiCommand, ApiError, ApiState};

/// `POST /v1/jobs`.
#[derive(Debug, Deserialize)]
pub struct SubmitJobRequest {
    /// The new job's id.
    pub job: String,
    /// What it runs.
    pub spec: JobSpec,
}

/// A job as `GET /v1/jobs` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// Its id.
    pub job: String,
    /// WaitingForRound, RoundRunning, Completed, BudgetExhausted or Cancelled.
    pub status: String,
    /// Rounds asked for.
    pub rounds: u32,
    /// Rounds completed.
    pub rounds_completed: u32,
    /// Rounds aborted and run again.
    pub rounds_aborted: u32,
    /// Epsilon spent (0 without DP).
    pub epsilon_spent: f64,
    /// How DP protects updates: `off`, distributed (noise in every group sum
    /// under secure aggregation) or local DP (no secure aggregation).
    #[serde(default)]
    pub privacy: String,
    /// The latest committed model's hash (hex), if any.
    pub model_hash: Option<String>,
    /// Validation accuracy of the latest committed model (none for regression).
    pub accuracy: Option<f64>,
    /// Validation loss of the latest committed model: cross-entropy, or for
    /// regression the mean squared error of the standardized target (about
    /// 1 - R^2).
    #[serde(default)]
    pub loss: Option<f64>,
    /// Nodes that declined the job, each with its reason
    /// ("node X: schema mismatch: 31 columns, job wants 30 columns").
    #[serde(default)]
    pub declined: Vec<String>,
    /// The whole committed record.
    pub detail: serde_json::Value,
}

/// `?round=R` of the model endpoint.
#[derive(Debug, Deserialize)]
pub struct ModelQuery {
    /// Round number from 0; the latest completed round when absent.
    pub round: Option<u32>,
}

/// `POST /v1/jobs`: checks the spec ([`JobSpecCheck::check`]: a 400 naming the
/// field, nothing proposed) and commits `CreateJob`.
pub async fn submit(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<SubmitJobRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match authorized_body(&state, &headers, Action::SubmitJob, body) {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    if let Err(err) = request.spec.check() {
        return spec_refused(&err);
    }
    if let Err(err) = request.spec.check_bounds() {
        return ApiError(StatusCode::BAD_REQUEST, err.to_string()).into_response();
    }
    if request.spec.initial_model.is_some() {
        let checked = starting_weights_checked(&state, &request.spec).await;
        if checked.status() != StatusCode::OK {
            return checked;
        }
    }
    let command = Command::CreateJob {
        job: JobId(request.job),
        spec: request.spec,
    };
    if let Err(err) = command.validate() {
        return ApiError(StatusCode::UNPROCESSABLE_ENTITY, err.to_string()).into_response();
    }
    write(&state, &headers, command, StatusCode::CONFLICT).await
}

/// 200 when this node holds the job's starting weights and they fit its
/// model; else a 400 naming `initial_model` (or a 503 when the runtime is busy).
async fn starting_weights_checked(state: &ApiState, spec: &JobSpec) -> Response {
    let spec = Box::new(spec.clone());
    let make = |reply| ApiCommand::CheckStartingWeights { spec, reply };
    ask(state, make, |reply: Result<(), String>| match reply {
        Ok(()) => StatusCode::OK.into_response(),
        Err(message) => {
            let body = serde_json::json!({
                "error": format!("initial_model: {message}"),
                "field": "initial_model",
                "accepted": [],
            });
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
    })
    .await
}

/// A 400 that names the field to change and, for names, the accepted values:
/// `{"error": "rule: unknown ...", "field": "rule", "accepted": ["fedavg", ...]}`.
fn spec_refused(err: &JobSpecError) -> Response {
    let accepted = match err {
        JobSpecError::Field { accepted, .. } => accepted.clone(),
        JobSpecError::TooSmall(_) => Vec::new(),
    };
    let body = serde_json::json!({
        "error": err.to_string(),
        "field": err.field(),
        "accepted": accepted,
    });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// `POST /v1/jobs/{id}/cancel`: commits `StopJob`.
pub async fn cancel(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(job): Path<String>,
) -> Response {
    if let Err(denied) = authorize(&state, &headers, Action::CancelJob) {
        return denied.into_response();
    }
    let command = Command::StopJob {
        job: JobId(job),
        reason: StopReason::Cancelled,
    };
    write(&state, &headers, command, StatusCode::CONFLICT).await
}

/// `GET /v1/jobs`.
pub async fn list(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorize(&state, &headers, Action::ReadStatus) {
        return denied.into_response();
    }
    Json(latest(&state).jobs.clone()).into_response()
}

/// `GET /v1/jobs/{id}`.
pub async fn get_job(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(job): Path<String>,
) -> Response {
    if let Err(denied) = authorize(&state, &headers, Action::ReadStatus) {
        return denied.into_response();
    }
    match latest(&state).jobs.iter().find(|j| j.job == job) {
        Some(view) => Json(view.clone()).into_response(),
        None => ApiError(
            StatusCode::NOT_FOUND,
            format!("no job {job:?} (yet) in this node's committed state"),
        )
        .into_response(),
    }
}

/// `POST /v1/models`: uploads starting weights (a safetensors file of `F32`
/// tensors, at most `WEIGHTS_BYTES_MAX` bytes) for a job to fine-tune from.
/// This node pins the file and answers `{"hash": HEX, "holder": NAME}`: a job
/// names them as its `initial_model` and is submitted to this same node.
pub async fn upload_weights(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    if let Err(denied) = authorize(&state, &headers, Action::SubmitJob) {
        return denied.into_response();
    }
    let bytes = match body {
        Ok(bytes) => bytes,
        Err(rejection) => return rejection.into_response(),
    };
    let make = |reply| ApiCommand::PinWeights {
        bytes: Arc::from(bytes.as_ref()),
        reply,
    };
    ask(&state, make, |reply| match reply {
        Ok((hash, holder)) => {
            Json(serde_json::json!({ "hash": hash, "holder": holder })).into_response()
        }
        Err((status, message)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            ApiError(status, message).into_response()
        }
    })
    .await
}

/// `GET /v1/jobs/{id}/model?round=R`: the parameter blob of a round's model.
pub async fn model(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(job): Path<String>,
    Query(query): Query<ModelQuery>,
) -> Response {
    if let Err(denied) = authorize(&state, &headers, Action::FetchModel) {
        return denied.into_response();
    }
    let make = |reply| ApiCommand::GetModel {
        job: JobId(job),
        round: query.round,
        reply,
    };
    ask(&state, make, |reply| match reply {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err((status, message)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::CONFLICT);
            ApiError(status, message).into_response()
        }
    })
    .await
}
