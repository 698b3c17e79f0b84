//! `/v1/sim/...`: drive the simulated keys (plug, unplug, configure, clone). Mounted only when
//! the daemon runs with `--simulate`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::error::ErrorCode;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath};
use super::SharedState;
use crate::device::sim::SimBench;
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

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> ApiResult<T> {
    serde_json::from_value(v)
        .map_err(|e| ApiError::invalid(format!("invalid simulated key options: {e}")))
}

async fn list(State(st): State<SharedState>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "keys": bench(&st)?.list() })))
}

async fn plug(
    State(st): State<SharedState>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let options = parse(body)?;
    let key = control(&st, |b| b.plug(options))?;
    Ok((StatusCode::CREATED, Json(json!({ "key": key }))))
}

async fn configure(
    State(st): State<SharedState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let options = parse(body)?;
    let key = control(&st, |b| b.configure(&id, options))?;
    Ok(Json(json!({ "key": key })))
}

async fn remove(
    State(st): State<SharedState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    control(&st, |b| b.remove(&id))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unplug(
    State(st): State<SharedState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let key = control(&st, |b| b.unplug(&id))?;
    Ok(Json(json!({ "key": key })))
}

async fn replug(
    State(st): State<SharedState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let key = control(&st, |b| b.replug(&id))?;
    Ok(Json(json!({ "key": key })))
}

async fn clone_key(
    State(st): State<SharedState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let key = control(&st, |b| b.clone_key(&id))?;
    Ok((StatusCode::CREATED, Json(json!({ "key": key }))))
}
