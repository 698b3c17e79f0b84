//! `/v1/sim/...`: drive the simulated keys (plug, unplug, configure, clone). Mounted only when
//! the daemon runs with `--simulate`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::ApiJson;
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

fn sim_error(e: DeviceError) -> ApiError {
    match e {
        DeviceError::NoDevice => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such simulated key")
        }
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
    let key = bench(&st)?.plug(parse(body)?).map_err(sim_error)?;
    Ok((StatusCode::CREATED, Json(json!({ "key": key }))))
}

async fn configure(
    State(st): State<SharedState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let key = bench(&st)?
        .configure(&id, parse(body)?)
        .map_err(sim_error)?;
    Ok(Json(json!({ "key": key })))
}

async fn remove(State(st): State<SharedState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    bench(&st)?.remove(&id).map_err(sim_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unplug(State(st): State<SharedState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let key = bench(&st)?.unplug(&id).map_err(sim_error)?;
    Ok(Json(json!({ "key": key })))
}

async fn replug(State(st): State<SharedState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let key = bench(&st)?.replug(&id).map_err(sim_error)?;
    Ok(Json(json!({ "key": key })))
}

async fn clone_key(
    State(st): State<SharedState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let key = bench(&st)?.clone_key(&id).map_err(sim_error)?;
    Ok((StatusCode::CREATED, Json(json!({ "key": key }))))
}
