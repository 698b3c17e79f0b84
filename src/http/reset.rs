//! Factory reset of a plugged key (admin): `POST /v1/devices/{id}/reset` starts a reset
//! ceremony (`ceremony/reset.rs`), followed at `/v1/resets/{id}` (state, a long-poll with
//! `wait`), `/v1/resets/{id}/events` (Server-Sent Events) and cancelled with `DELETE`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::Stream;
use serde::Deserialize;

use super::bodies::ErrorBody;
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::{ApiPath, ApiQuery};
use super::server::EventStreams;
use super::SharedState;
use crate::auth::Caller;
use crate::ceremony::reset::ResetView;

pub fn admin_routes() -> Router<SharedState> {
    Router::new()
        .route("/v1/devices/{id}/reset", post(start))
        .route("/v1/resets/{id}", get(get_reset).delete(cancel))
        .route("/v1/resets/{id}/events", get(events))
}

/// Options of a reset; the body may be empty.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// How long the student has to replug and touch the key (default 60000, at most 600000).
    #[schema(minimum = 1, maximum = 600_000)]
    timeout_ms: Option<u64>,
}

/// Longest `?wait=` of `GET /v1/resets/{id}`.
const MAX_WAIT_SECS: u64 = 5;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResetWait {
    /// Wait at most this many seconds (0-5) for the reset to end: a kiosk polls again, or
    /// follows `/v1/resets/{id}/events`.
    #[param(minimum = 0, maximum = 5)]
    wait: Option<u64>,
}

fn respond(view: ResetView, created: bool) -> Response {
    let status = if created && !view.state.is_terminal() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    (status, Json(view)).into_response()
}

/// Start a factory reset of a plugged key: `202` with `needs_replug`. The key accepts the
/// reset only within seconds of being plugged in, so the kiosk asks the student to unplug
/// and replug it; keygate then sends the reset and the key wants a touch (`waiting_touch`).
/// On `succeeded` the key has no PIN and no credentials, and the credentials keygate knew
/// for it are revoked (`state_reason: key_reset`).
#[utoipa::path(post, path = "/v1/devices/{id}/reset", tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    request_body(content = Option<ResetRequest>),
    security(("bearer" = ["admin"])),
    responses(
        (status = 202, description = "Started: `needs_replug`", body = ResetView),
        (status = 409, description = "`no_device`, `device_busy`", body = ErrorBody),
        (status = 422, description = "`invalid_request`", body = ErrorBody),
        (status = 502, description = "`device_error`", body = ErrorBody),
    ))]
async fn start(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    // No body, or JSON `null` (what the OpenAPI document's optional body allows): the defaults.
    let trimmed = body.trim_ascii();
    let req: ResetRequest = if trimmed.is_empty() || trimmed == b"null" {
        ResetRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("invalid reset request: {e}")))?
    };
    let timeout = req.timeout_ms.map(Duration::from_millis);
    let view = st
        .ceremonies
        .start_reset(&id, timeout, &caller.actor())
        .await?;
    Ok(respond(view, true))
}

/// A reset's state; `?wait=N` waits at most N seconds for it to end.
#[utoipa::path(get, path = "/v1/resets/{id}", tag = "devices",
    params(("id" = String, Path, description = "Reset id"), ResetWait),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The reset", body = ResetView),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn get_reset(
    State(st): State<SharedState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ResetWait>,
) -> ApiResult<Response> {
    let view = match q.wait {
        None | Some(0) => st.ceremonies.get_reset(&id)?,
        Some(s) if s <= MAX_WAIT_SECS => {
            st.ceremonies
                .wait_reset(&id, Duration::from_secs(s))
                .await?
        }
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "`wait` must be 0-{MAX_WAIT_SECS} seconds"
            )))
        }
    };
    Ok(respond(view, false))
}

/// Cancel a reset (before the replug, or while the key waits for a touch); answers its end
/// state.
#[utoipa::path(delete, path = "/v1/resets/{id}", tag = "devices",
    params(("id" = String, Path, description = "Reset id")),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The reset, cancelled (or already ended)", body = ResetView),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn cancel(
    State(st): State<SharedState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let view = st.ceremonies.cancel_reset(&id)?;
    let view = if view.state.is_terminal() {
        view
    } else {
        st.ceremonies
            .wait_reset(&id, Duration::from_secs(5))
            .await?
    };
    Ok(respond(view, false))
}

/// Server-Sent Events of a reset: one event per state (`needs_replug`, `waiting_touch`, then
/// `succeeded`, `failed` or `cancelled`, which ends the stream), each with the reset as JSON.
#[utoipa::path(get, path = "/v1/resets/{id}/events", tag = "devices",
    params(("id" = String, Path, description = "Reset id")),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = super::bodies::SseEvent),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 429, description = "`too_many_streams` (with `retry_after`)", body = ErrorBody),
    ))]
async fn events(
    State(st): State<SharedState>,
    Extension(streams): Extension<Arc<EventStreams>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let rx = st.ceremonies.subscribe_reset(&id)?;
    let slot = streams.open(&id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::TooManyStreams,
            "too many event streams are open; close one or poll the reset instead",
        )
        .with("retry_after", 1)
    })?;
    Ok(super::handlers::watch_events(rx, slot, |v: &ResetView| {
        (v.state.as_str(), v.state.is_terminal())
    }))
}
