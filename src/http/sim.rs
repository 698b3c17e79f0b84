//! `/v1/sim/...`: drive the simulated keys (plug, unplug, configure, clone). Mounted only when
//! the daemon runs with `--simulate` (documented all the same, under the `simulator` tag).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::Value;

use super::bodies::{ErrorBody, SimKeyBody, SimKeyList};
use super::error::ErrorCode;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath};
use super::SharedState;
use crate::device::sim::{SimBench, SimKeyOptions, Touch};
use crate::device::DeviceError;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/v1/sim/keys", get(list).post(plug))
        .route("/v1/sim/keys/{id}", patch(configure).delete(remove))
        .route("/v1/sim/keys/{id}/unplug", post(unplug))
        .route("/v1/sim/keys/{id}/replug", post(replug))
        .route("/v1/sim/keys/{id}/clone", post(clone_key))
}

fn bench(st: &SharedState) -> ApiResult<&SimBench> {
    st.sim.as_deref().ok_or_else(ApiError::not_found)
}

/// Run a simulator control. The controls change keys outside their device actors, so what
/// the actors cached about them is dropped afterwards. Every control but `list` goes here.
fn control<T>(
    st: &SharedState,
    f: impl FnOnce(&SimBench) -> Result<T, DeviceError>,
) -> ApiResult<T> {
    let out = f(bench(st)?).map_err(sim_error);
    st.ceremonies.devices().forget_info();
    out
}

fn sim_error(e: DeviceError) -> ApiError {
    match e {
        DeviceError::NoDevice => ApiError::new(ErrorCode::NotFound, "no such simulated key"),
        other => other.into(),
    }
}

/// The longest scripted touch delay (what the document states as its maximum).
pub(super) const MAX_TOUCH_DELAY_MS: u64 = 3_600_000;

fn parse(v: Value) -> ApiResult<SimKeyOptions> {
    let options: SimKeyOptions = serde_json::from_value(v)
        .map_err(|e| ApiError::invalid(format!("invalid simulated key options: {e}")))?;
    if let Some(Touch::AutoAfterMs(ms)) = options.touch {
        if ms > MAX_TOUCH_DELAY_MS {
            return Err(ApiError::invalid(format!(
                "`touch.auto_after_ms` must be at most {MAX_TOUCH_DELAY_MS}"
            )));
        }
    }
    Ok(options)
}

/// The simulated keys.
#[utoipa::path(get, path = "/v1/sim/keys", tag = "simulator",
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The simulated keys", body = SimKeyList),
        (status = 404, description = "`not_found`: not simulating", body = ErrorBody),
    ))]
async fn list(State(st): State<SharedState>) -> ApiResult<Json<SimKeyList>> {
    Ok(Json(SimKeyList {
        keys: bench(&st)?.list(),
    }))
}

/// Plug in a new simulated key (by default a CTAP 2.1 key with credProtect and hmac-secret).
#[utoipa::path(post, path = "/v1/sim/keys", tag = "simulator", request_body = SimKeyOptions,
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 201, description = "The new key", body = SimKeyBody),
        (status = 404, description = "`not_found`: not simulating", body = ErrorBody),
        (status = 422, description = "`pin_policy_violation`", body = ErrorBody),
    ))]
async fn plug(
    State(st): State<SharedState>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<(StatusCode, Json<SimKeyBody>)> {
    let options: SimKeyOptions = parse(body)?;
    let key = control(&st, |b| b.plug(options))?;
    Ok((StatusCode::CREATED, Json(SimKeyBody { key })))
}

/// Change a simulated key's behaviour (touch, counter, PIN, extensions, ...).
#[utoipa::path(patch, path = "/v1/sim/keys/{id}", tag = "simulator", params(("id" = String, Path, description = "Simulated key id (`sim:<n>`)")),
    request_body = SimKeyOptions,
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The key", body = SimKeyBody),
        (status = 404, description = "`not_found`: no such simulated key", body = ErrorBody),
        (status = 422, description = "`pin_policy_violation`", body = ErrorBody),
    ))]
async fn configure(
    State(st): State<SharedState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<SimKeyBody>> {
    let options: SimKeyOptions = parse(body)?;
    let key = control(&st, |b| b.configure(&id, options))?;
    Ok(Json(SimKeyBody { key }))
}

/// Remove a simulated key for good.
#[utoipa::path(delete, path = "/v1/sim/keys/{id}", tag = "simulator", params(("id" = String, Path, description = "Simulated key id (`sim:<n>`)")),
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "`not_found`: no such simulated key", body = ErrorBody),
    ))]
async fn remove(
    State(st): State<SharedState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    control(&st, |b| b.remove(&id))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Unplug a simulated key (an operation in flight fails with `device_removed`).
#[utoipa::path(post, path = "/v1/sim/keys/{id}/unplug", tag = "simulator", params(("id" = String, Path, description = "Simulated key id (`sim:<n>`)")),
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The key, unplugged", body = SimKeyBody),
        (status = 404, description = "`not_found`: no such simulated key", body = ErrorBody),
    ))]
async fn unplug(
    State(st): State<SharedState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<SimKeyBody>> {
    let key = control(&st, |b| b.unplug(&id))?;
    Ok(Json(SimKeyBody { key }))
}

/// Plug a simulated key back in (a power cycle).
#[utoipa::path(post, path = "/v1/sim/keys/{id}/replug", tag = "simulator", params(("id" = String, Path, description = "Simulated key id (`sim:<n>`)")),
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The key, plugged", body = SimKeyBody),
        (status = 404, description = "`not_found`: no such simulated key", body = ErrorBody),
    ))]
async fn replug(
    State(st): State<SharedState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<SimKeyBody>> {
    let key = control(&st, |b| b.replug(&id))?;
    Ok(Json(SimKeyBody { key }))
}

/// Clone a simulated key: the same secrets with a frozen counter (a cloned-key scenario).
#[utoipa::path(post, path = "/v1/sim/keys/{id}/clone", tag = "simulator", params(("id" = String, Path, description = "Simulated key id (`sim:<n>`)")),
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 201, description = "The clone", body = SimKeyBody),
        (status = 404, description = "`not_found`: no such simulated key", body = ErrorBody),
    ))]
async fn clone_key(
    State(st): State<SharedState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<SimKeyBody>)> {
    let key = control(&st, |b| b.clone_key(&id))?;
    Ok((StatusCode::CREATED, Json(SimKeyBody { key })))
}
