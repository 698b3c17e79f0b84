//! `GET /metrics` for Prometheus (a `metrics` or `admin` token), and the layer that times
//! every request by its route template.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{ApiError, ApiResult, AppState, SharedState};
use crate::metrics::Format;
use crate::sms::dispatch::CircuitState;

pub(super) fn routes(state: SharedState) -> Router<SharedState> {
    Router::new()
        .route("/metrics", get(scrape))
        .route_layer(middleware::from_fn_with_state(
            state,
            super::require_metrics,
        ))
}

/// Every metric family: the Prometheus text format 0.0.4, or OpenMetrics 1.0.0 text when the
/// `Accept` header prefers `application/openmetrics-text` (as Prometheus sends it).
#[utoipa::path(get, path = "/metrics", tag = "service",
    security(("bearer" = ["metrics"])),
    responses((status = 200,
        description = "The metrics in the Prometheus text format 0.0.4 \
            (`text/plain; version=0.0.4`) or, when `Accept` prefers it, OpenMetrics 1.0.0 \
            (`application/openmetrics-text; version=1.0.0`); needs a `metrics` or `admin` token",
        content((String = "text/plain"), (String = "application/openmetrics-text")))))]
pub async fn scrape(State(st): State<SharedState>, headers: HeaderMap) -> ApiResult<Response> {
    refresh_gauges(&st);
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let body = st.metrics.encode(format).map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

/// The gauges that describe the keys, the SMS providers and the store, read now. A part that
/// cannot be read keeps its last value (and is logged); the scrape still answers.
fn refresh_gauges(st: &AppState) {
    let m = &st.metrics;
    match st.ceremonies.devices().refresh() {
        Ok(keys) => m.set_devices_plugged(keys.len()),
        Err(e) => tracing::warn!(error = %e, "metrics: cannot list the keys"),
    }
    let Some(sms) = &st.sms else {
        return;
    };
    for p in sms.providers() {
        m.set_sms_circuit_open(p.name, p.circuit != CircuitState::Closed);
    }
    match sms.outbox_pending() {
        Ok(n) => m.set_sms_outbox_pending(n),
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count the SMS outbox"),
    }
    match sms.users_locked() {
        Ok(n) => m.set_lockouts_active(n),
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count locked users"),
    }
}

/// `keygate_http_request_duration_seconds`: from the request to its response head, labelled
/// with the matched route's template (`unmatched` when none matched), never the raw path.
pub(super) async fn time_requests(
    State(st): State<SharedState>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let resp = next.run(req).await;
    st.metrics.http_request(
        method.as_str(),
        route.as_ref().map(MatchedPath::as_str),
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}
