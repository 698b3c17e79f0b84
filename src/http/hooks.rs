//! The event hooks' outbox for operators (admin): `GET /v1/hooks` shows each configured hook
//! with its delivery counts, so that a receiver that stopped accepting is seen;
//! `GET /v1/hooks/deliveries` lists deliveries (the dead ones by default) and
//! `POST /v1/hooks/deliveries/{id}/replay` queues a dead one again once the receiver is back.
//! Secrets are never shown.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::bodies::ErrorBody;
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::{ApiPath, ApiQuery};
use super::SharedState;
use crate::auth::Caller;
use crate::store::HookDelivery;

pub fn admin_routes() -> Router<SharedState> {
    Router::new()
        .route("/v1/hooks", get(list_hooks))
        .route("/v1/hooks/deliveries", get(list_deliveries))
        .route("/v1/hooks/deliveries/{id}/replay", post(replay_delivery))
}

/// One `[[hooks]]` entry and its deliveries.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HookView {
    pub url: String,
    /// The events it subscribed to.
    pub events: Vec<String>,
    /// Deliveries waiting for their first or next attempt.
    pub pending: u64,
    /// Deliveries given up after retrying for 24 hours (kept; see
    /// `POST /v1/hooks/deliveries/{id}/replay`).
    pub dead: u64,
    /// Deliveries accepted in the last 7 days.
    pub delivered: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct HookList {
    pub hooks: Vec<HookView>,
}

/// The configured event hooks with their pending, dead and delivered counts.
#[utoipa::path(get, path = "/v1/hooks", tag = "hooks",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The configured hooks (secrets never shown)", body = HookList)))]
pub async fn list_hooks(State(st): State<SharedState>) -> ApiResult<Json<HookList>> {
    let mut hooks = Vec::with_capacity(st.cfg.hooks.len());
    for h in &st.cfg.hooks {
        let counts = st.store.hook_counts(&h.url)?;
        hooks.push(HookView {
            url: h.url.clone(),
            events: h.events.clone(),
            pending: counts.pending,
            dead: counts.dead,
            delivered: counts.delivered,
        });
    }
    Ok(Json(HookList { hooks }))
}

/// Where a delivery stands.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting for its first or next attempt.
    Pending,
    /// Accepted by the receiver (a 2xx).
    Delivered,
    /// Given up after 24 hours of retries, or its hook is no longer configured.
    Dead,
}

impl DeliveryState {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }
}

/// One event on its way to one receiver.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    /// The payload's `id`, the same on every attempt and after a replay.
    id: String,
    /// The hook's URL.
    url: String,
    event: String,
    /// The audit line the event comes from.
    audit_seq: i64,
    state: DeliveryState,
    /// Attempts since the fan-out or the last replay.
    attempts: u32,
    /// When its 24-hour delivery window began: the fan-out, or the last replay.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    window_started_at: time::OffsetDateTime,
    /// When it is (or was last) due.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    next_attempt_at: time::OffsetDateTime,
    /// Why the last attempt failed (`HTTP 503`, `timed out`, ...).
    last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    delivered_at: Option<time::OffsetDateTime>,
}

impl DeliveryView {
    fn of(d: HookDelivery) -> ApiResult<DeliveryView> {
        let state = match d.state.as_str() {
            "pending" => DeliveryState::Pending,
            "delivered" => DeliveryState::Delivered,
            "dead" => DeliveryState::Dead,
            other => {
                tracing::error!(delivery = %d.id, state = other, "hook delivery in an unknown state");
                return Err(ApiError::new(ErrorCode::Internal, "internal error"));
            }
        };
        Ok(DeliveryView {
            id: d.id,
            url: d.hook_url,
            event: d.event,
            audit_seq: d.audit_seq,
            state,
            attempts: d.attempts,
            window_started_at: crate::base::clock::ms_to_time(d.created_at),
            next_attempt_at: crate::base::clock::ms_to_time(d.next_attempt_at),
            last_error: d.last_error,
            delivered_at: d.delivered_at.map(crate::base::clock::ms_to_time),
        })
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only deliveries in this state (default `dead`).
    #[serde(default)]
    state: Option<DeliveryState>,
    /// Deliveries at most, 1-1000 (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// The hooks' deliveries in one state (the dead ones unless `state` says otherwise), the
/// latest scheduled attempt first. Payloads are not shown.
#[utoipa::path(get, path = "/v1/hooks/deliveries", tag = "hooks", params(DeliveriesQuery),
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The deliveries", body = DeliveryList)))]
pub async fn list_deliveries(
    State(st): State<SharedState>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Json<DeliveryList>> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::invalid("`limit` must be 1-1000"));
    }
    let state = q.state.unwrap_or(DeliveryState::Dead);
    let deliveries = st
        .store
        .hook_deliveries_in(state.as_str(), limit)?
        .into_iter()
        .map(DeliveryView::of)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(DeliveryList { deliveries }))
}

/// Queue a dead delivery again (once its receiver is back): pending and due now, its retries
/// and 24-hour window starting over, with the same body and `id` (receivers deduplicate on
/// it). Audited as `hook.delivery_replayed`.
#[utoipa::path(post, path = "/v1/hooks/deliveries/{id}/replay", tag = "hooks",
    params(("id" = String, Path, description = "Delivery id (the payload's `id`)")),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The delivery, pending again", body = DeliveryView),
        (status = 404, description = "`not_found`: no such delivery", body = ErrorBody),
        (status = 409, description = "`conflict`: the delivery is not dead, or its hook is no longer configured", body = ErrorBody),
    ))]
pub async fn replay_delivery(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<DeliveryView>> {
    let Some(d) = st.store.hook_delivery(&id)? else {
        return Err(ApiError::not_found());
    };
    if !st.cfg.hooks.iter().any(|h| h.url == d.hook_url) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "the delivery's hook is no longer configured",
        ));
    }
    let now_ms = (st.store.now().unix_timestamp_nanos() / 1_000_000) as i64;
    let d = st
        .store
        .hook_delivery_replay(&id, now_ms, &caller.actor())
        .await?;
    tracing::info!(delivery = %d.id, event = %d.event, url = %d.hook_url, "hook delivery replayed");
    Ok(Json(DeliveryView::of(d)?))
}
