//! SMS routes: phones as a method, challenges (send, verify, resend, cancel), provider health,
//! provider delivery callbacks (signature-verified, no bearer token), and under `--simulate`
//! the simulated phones' inbox.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::ApiJson;
use super::kiosk::PageSession;
use super::SharedState;
use crate::auth::{Caller, Role};
use crate::sms::providers;
use crate::sms::template::Locale;
use crate::sms::{NewChallenge, SmsService};

/// Routes for kiosks (and admins); list/delete of phones check the admin role themselves.
pub fn kiosk_routes() -> Router<SharedState> {
    Router::new()
        .route("/v1/users/{user}/phones", post(add_phone).get(list_phones))
        .route("/v1/users/{user}/phones/{id}", delete(delete_phone))
        .route("/v1/sms/challenges", post(create_challenge))
        .route(
            "/v1/sms/challenges/{id}",
            get(get_challenge).delete(cancel_challenge),
        )
        .route("/v1/sms/challenges/{id}/verify", post(verify))
        .route("/v1/sms/challenges/{id}/resend", post(resend))
}

pub fn admin_routes() -> Router<SharedState> {
    Router::new().route("/v1/sms/providers", get(providers))
}

/// Providers call these; they authenticate by signature, not by token.
pub fn callback_routes() -> Router<SharedState> {
    Router::new().route("/v1/sms/callbacks/{provider}", post(callback))
}

pub fn sim_routes() -> Router<SharedState> {
    Router::new().route("/v1/sim/sms", get(sim_inbox))
}

fn service(st: &SharedState) -> ApiResult<&Arc<SmsService>> {
    st.sms.as_ref().ok_or_else(ApiError::not_found)
}

fn admin_only(caller: &Caller) -> ApiResult<()> {
    if caller.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::forbidden("this needs an admin token"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddPhone {
    number: String,
    label: Option<String>,
    locale: Option<Locale>,
}

async fn add_phone(
    State(st): State<SharedState>,
    caller: Caller,
    Path(user): Path<String>,
    ApiJson(body): ApiJson<AddPhone>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let (phone, challenge) = service(&st)?
        .add_phone(
            &user,
            &body.number,
            body.label.as_deref(),
            body.locale.unwrap_or_default(),
            &caller.actor(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "phone": phone, "challenge": challenge })),
    ))
}

async fn list_phones(
    State(st): State<SharedState>,
    caller: Caller,
    Path(user): Path<String>,
) -> ApiResult<Json<Value>> {
    admin_only(&caller)?;
    Ok(Json(json!({ "phones": service(&st)?.list_phones(&user)? })))
}

async fn delete_phone(
    State(st): State<SharedState>,
    caller: Caller,
    Path((user, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    admin_only(&caller)?;
    service(&st)?
        .delete_phone(&user, &id, &caller.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_challenge(
    State(st): State<SharedState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<NewChallenge>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::invalid("Idempotency-Key must be ASCII"))
        })
        .transpose()?;
    let (view, created) = service(&st)?
        .create_challenge(body, key, &caller.actor())
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!(view))))
}

async fn get_challenge(
    State(st): State<SharedState>,
    caller: Caller,
    session: Option<Extension<PageSession>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    super::access::challenge(service(&st)?, &caller, &session, &id)?;
    Ok(Json(json!(service(&st)?.get_challenge(&id)?)))
}

async fn cancel_challenge(
    State(st): State<SharedState>,
    caller: Caller,
    session: Option<Extension<PageSession>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    super::access::challenge(service(&st)?, &caller, &session, &id)?;
    Ok(Json(json!(
        service(&st)?.cancel(&id, &caller.actor()).await?
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    code: String,
}

async fn verify(
    State(st): State<SharedState>,
    caller: Caller,
    session: Option<Extension<PageSession>>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<VerifyBody>,
) -> ApiResult<Json<Value>> {
    super::access::challenge(service(&st)?, &caller, &session, &id)?;
    let view = service(&st)?
        .verify(&id, &body.code, &caller.actor())
        .await?;
    Ok(Json(json!({ "verified": true, "challenge": view })))
}

async fn resend(
    State(st): State<SharedState>,
    caller: Caller,
    session: Option<Extension<PageSession>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    super::access::challenge(service(&st)?, &caller, &session, &id)?;
    Ok(Json(json!(
        service(&st)?.resend(&id, &caller.actor()).await?
    )))
}

async fn providers(State(st): State<SharedState>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "providers": service(&st)?.providers() })))
}

/// Authentication and parsing belong to the provider ([`providers::receipt`]); this route only
/// records what it returns.
async fn callback(
    State(st): State<SharedState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let sms = service(&st)?;
    // `None`: an authentic report that carries no new status (acknowledged, nothing changes).
    let Some(report) = providers::receipt(&st.cfg.sms, &provider, &headers, &body)? else {
        return Ok(StatusCode::NO_CONTENT);
    };
    if sms
        .delivery_report(&provider, &report.message_id, report.status)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found())
    }
}

#[derive(Deserialize)]
struct InboxQuery {
    number: String,
}

async fn sim_inbox(
    State(st): State<SharedState>,
    Query(q): Query<InboxQuery>,
) -> ApiResult<Json<Value>> {
    let sms = service(&st)?;
    let inbox = sms.inbox.as_ref().ok_or_else(ApiError::not_found)?;
    let parsed = sms.parse_number(&q.number).map_err(ApiError::from)?;
    Ok(Json(json!({ "messages": inbox.for_number(&parsed.e164) })))
}
