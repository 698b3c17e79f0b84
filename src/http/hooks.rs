//! `GET /v1/hooks` (admin): the configured event hooks and their delivery outbox, so that an
//! operator sees a receiver that stopped accepting. Secrets are never shown.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::error::ApiResult;
use super::SharedState;

pub fn admin_routes() -> Router<SharedState> {
    Router::new().route("/v1/hooks", get(list_hooks))
}

/// One `[[hooks]]` entry and its deliveries.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HookView {
    pub url: String,
    /// The events it subscribed to.
    pub events: Vec<String>,
    /// Deliveries waiting for their first or next attempt.
    pub pending: u64,
    /// Deliveries given up after retrying for 24 hours (kept).
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
