//! SMS routes: phones as a method, challenges (send, verify, resend, cancel), provider health,
//! provider delivery callbacks (signature-verified, no bearer token), and under `--simulate`
//! the simulated phones' inbox.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::error::ErrorCode;
use super::error::{ApiError, ApiResult};
use super::extract::ApiJson;
use super::SharedState;
use crate::auth::{Caller, Role};
use crate::sms::providers::{twilio_signature, vonage_signature, webhook_signature};
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
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(json!(service(&st)?.get_challenge(&id)?)))
}

async fn cancel_challenge(
    State(st): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
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
    Path(id): Path<String>,
    ApiJson(body): ApiJson<VerifyBody>,
) -> ApiResult<Json<Value>> {
    let view = service(&st)?
        .verify(&id, &body.code, &caller.actor())
        .await?;
    Ok(Json(json!({ "verified": true, "challenge": view })))
}

async fn resend(
    State(st): State<SharedState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(json!(
        service(&st)?.resend(&id, &caller.actor()).await?
    )))
}

async fn providers(State(st): State<SharedState>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "providers": service(&st)?.providers() })))
}

fn bad_signature() -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, "missing or wrong signature")
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Twilio's MessageStatus -> keygate's delivery status.
fn twilio_status(s: &str) -> Option<&'static str> {
    Some(match s {
        "accepted" | "queued" | "sending" | "sent" | "scheduled" => "sent",
        "delivered" | "read" => "delivered",
        "failed" | "canceled" => "failed",
        "undelivered" => "undeliverable",
        _ => return None,
    })
}

/// Vonage's delivery receipt status -> keygate's delivery status; `unknown` says nothing new.
fn vonage_status(s: &str) -> Option<Option<&'static str>> {
    Some(Some(match s {
        "accepted" | "buffered" => "sent",
        "delivered" => "delivered",
        "failed" => "failed",
        "expired" | "rejected" => "undeliverable",
        "unknown" => return Some(None),
        _ => return None,
    }))
}

/// A callback's parameters: a JSON object (strings kept, other values as JSON text) when the
/// content type says JSON, form fields otherwise.
fn callback_params(headers: &HeaderMap, body: &[u8]) -> ApiResult<Vec<(String, String)>> {
    let json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json {
        return Ok(url::form_urlencoded::parse(body).into_owned().collect());
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|_| ApiError::invalid("the body is not JSON"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::invalid("the body is not a JSON object"))?;
    Ok(obj
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect())
}

async fn callback(
    State(st): State<SharedState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let sms = service(&st)?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    // `None`: an authentic report that carries no new status (acknowledged, nothing changes).
    let (message_id, status): (String, Option<&'static str>) = match provider.as_str() {
        "twilio" => {
            let cfg = &st.cfg.sms.twilio;
            let url = cfg
                .status_callback_url
                .as_deref()
                .ok_or_else(ApiError::not_found)?;
            let params: Vec<(String, String)> =
                url::form_urlencoded::parse(&body).into_owned().collect();
            let expected = twilio_signature(cfg.auth_token.expose(), url, &params);
            if cfg.auth_token.is_empty() || !same(header("x-twilio-signature"), &expected) {
                return Err(bad_signature());
            }
            let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let sid =
                get("MessageSid").ok_or_else(|| ApiError::invalid("MessageSid is missing"))?;
            let status = get("MessageStatus")
                .as_deref()
                .and_then(twilio_status)
                .ok_or_else(|| ApiError::invalid("unknown MessageStatus"))?;
            (sid, Some(status))
        }
        "vonage" => {
            // Vonage signs webhooks only when the account asks for it: without a configured
            // signature secret no receipt can be authenticated, so none is accepted.
            let secret = &st.cfg.sms.vonage.signature_secret;
            let params = callback_params(&headers, &body)?;
            let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            let expected = vonage_signature(secret.expose(), &params);
            let sig = get("sig").unwrap_or("").to_ascii_uppercase();
            if secret.is_empty() || !same(&sig, &expected) {
                return Err(bad_signature());
            }
            let id = get("messageId").ok_or_else(|| ApiError::invalid("messageId is missing"))?;
            let status = get("status")
                .and_then(vonage_status)
                .ok_or_else(|| ApiError::invalid("unknown status"))?;
            (id.to_string(), status)
        }
        "webhook" => {
            let secret = &st.cfg.sms.webhook.secret;
            let expected = webhook_signature(secret.expose(), &body);
            if secret.is_empty() || !same(header("x-keygate-signature"), &expected) {
                return Err(bad_signature());
            }
            let v: Value = serde_json::from_slice(&body)
                .map_err(|_| ApiError::invalid("the body is not JSON"))?;
            let id = v["id"]
                .as_str()
                .ok_or_else(|| ApiError::invalid("`id` is missing"))?;
            let status = match v["status"].as_str() {
                Some(s @ ("sent" | "delivered" | "failed" | "undeliverable")) => s,
                _ => {
                    return Err(ApiError::invalid(
                        "`status` must be sent, delivered, failed or undeliverable",
                    ))
                }
            };
            let status: &'static str = match status {
                "sent" => "sent",
                "delivered" => "delivered",
                "failed" => "failed",
                _ => "undeliverable",
            };
            (id.to_string(), Some(status))
        }
        _ => return Err(ApiError::not_found()),
    };
    let Some(status) = status else {
        return Ok(StatusCode::NO_CONTENT);
    };
    if sms.delivery_report(&provider, &message_id, status).await? {
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
