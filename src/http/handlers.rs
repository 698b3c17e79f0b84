//! Route handlers: parse, call the ceremony service or the store, shape JSON.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;

use super::error::ErrorCode;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::kiosk::PageSession;
use super::server::EventStreams;
use super::{access, SharedState};
use crate::auth::Caller;
use crate::ceremony::{
    client::unb64, credential_json, validate_user_name, AssertionRequest, CeremonyView,
    EnrollmentRequest, Kind, State as CState,
};
use crate::store::{CredentialState, NewAudit};

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

// ---- devices ------------------------------------------------------------------------------

pub async fn list_devices(State(st): State<SharedState>) -> ApiResult<Json<serde_json::Value>> {
    let devices = st.ceremonies.devices().clone();
    let statuses = devices.statuses().await?;
    Ok(Json(json!({ "devices": statuses })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinBody {
    new_pin: String,
    #[serde(default)]
    current_pin: Option<String>,
}

pub async fn device_pin(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PinBody>,
) -> ApiResult<Json<serde_json::Value>> {
    let status = st
        .ceremonies
        .set_pin(&id, body.new_pin, body.current_pin, &caller.actor())
        .await?;
    Ok(Json(json!({ "device": status })))
}

// ---- ceremonies ---------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct WaitQuery {
    #[serde(default)]
    wait: Option<String>,
}

/// `?wait=true` waits until the ceremony ended or needs the client (bounded by its own
/// deadline); `?wait=N` waits at most N seconds (≤ 120).
fn wait_duration(q: &WaitQuery, view: &CeremonyView) -> ApiResult<Option<Duration>> {
    let Some(w) = q.wait.as_deref() else {
        return Ok(None);
    };
    match w {
        "false" | "0" => Ok(None),
        "true" => {
            // The ceremony ends at its deadline (the key is cancelled then); the grace covers
            // the cancel's round trip, which a slow key or a loaded machine can stretch to
            // seconds: `wait=true` must not hand back a ceremony still waiting for a touch.
            let left = view.expires_at - time::OffsetDateTime::now_utc();
            let secs = left.whole_milliseconds().max(0) as u64 + 10_000;
            Ok(Some(Duration::from_millis(secs.min(135_000))))
        }
        n => match n.parse::<u64>() {
            Ok(s) if s <= 120 => Ok(Some(Duration::from_secs(s))),
            _ => Err(ApiError::invalid(
                "`wait` must be true, false or 0-120 seconds",
            )),
        },
    }
}

fn ceremony_response(view: CeremonyView, created: bool) -> Response {
    let status = if view.state.is_terminal() {
        StatusCode::OK
    } else if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    (status, Json(view)).into_response()
}

async fn waited(
    st: &SharedState,
    view: CeremonyView,
    q: &WaitQuery,
    kind: Kind,
) -> ApiResult<CeremonyView> {
    match wait_duration(q, &view)? {
        Some(d) if !view.state.needs_client_or_done() => {
            Ok(st.ceremonies.wait(&view.id, kind, d).await?)
        }
        _ => Ok(view),
    }
}

pub async fn start_enrollment(
    State(st): State<SharedState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<WaitQuery>,
    ApiJson(req): ApiJson<EnrollmentRequest>,
) -> ApiResult<Response> {
    let view = st.ceremonies.start_enrollment(req, &caller.actor()).await?;
    let view = waited(&st, view, &q, Kind::Enrollment).await?;
    Ok(ceremony_response(view, true))
}

pub async fn start_assertion(
    State(st): State<SharedState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<WaitQuery>,
    ApiJson(req): ApiJson<AssertionRequest>,
) -> ApiResult<Response> {
    let view = st.ceremonies.start_assertion(req, &caller.actor()).await?;
    let view = waited(&st, view, &q, Kind::Assertion).await?;
    Ok(ceremony_response(view, true))
}

async fn get_ceremony(
    st: SharedState,
    id: String,
    q: WaitQuery,
    kind: Kind,
) -> ApiResult<Response> {
    let view = st.ceremonies.get(&id, kind)?;
    let view = waited(&st, view, &q, kind).await?;
    Ok(ceremony_response(view, false))
}

pub async fn get_enrollment(
    State(st): State<SharedState>,
    caller: Caller,
    session: Option<Extension<PageSession>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> ApiResult<Response> {
    access::ceremony(&st, &caller, &session, &id, Kind::Enrollment)?;
    get_ceremony(st, id, q, Kind::Enrollment).await
}

pub async fn get_assertion(
    State(st): State<SharedState>,
    caller: Caller,
    session: Option<Extension<PageSession>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> ApiResult<Response> {
    access::ceremony(&st, &caller, &session, &id, Kind::Assertion)?;
    get_ceremony(st, id, q, Kind::Assertion).await
}

pub async fn cancel_enrollment(
    State(st): State<SharedState>,
    caller: Caller,
    session: Option<Extension<PageSession>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    access::ceremony(&st, &caller, &session, &id, Kind::Enrollment)?;
    cancel(st, id, Kind::Enrollment).await
}

pub async fn cancel_assertion(
    State(st): State<SharedState>,
    caller: Caller,
    session: Option<Extension<PageSession>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    access::ceremony(&st, &caller, &session, &id, Kind::Assertion)?;
    cancel(st, id, Kind::Assertion).await
}

async fn cancel(st: SharedState, id: String, kind: Kind) -> ApiResult<Response> {
    let view = st.ceremonies.cancel(&id, kind)?;
    // Give the ceremony a moment to wind down so the answer shows the end state.
    let view = if view.state.is_terminal() {
        view
    } else {
        st.ceremonies
            .wait(&id, kind, Duration::from_secs(5))
            .await?
    };
    Ok(ceremony_response(view, false))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CeremonyPin {
    pin: String,
}

pub async fn enrollment_pin(
    State(st): State<SharedState>,
    caller: Caller,
    session: Option<Extension<PageSession>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
    ApiJson(body): ApiJson<CeremonyPin>,
) -> ApiResult<Response> {
    access::ceremony(&st, &caller, &session, &id, Kind::Enrollment)?;
    ceremony_pin(st, id, q, body, Kind::Enrollment).await
}

pub async fn assertion_pin(
    State(st): State<SharedState>,
    caller: Caller,
    session: Option<Extension<PageSession>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
    ApiJson(body): ApiJson<CeremonyPin>,
) -> ApiResult<Response> {
    access::ceremony(&st, &caller, &session, &id, Kind::Assertion)?;
    ceremony_pin(st, id, q, body, Kind::Assertion).await
}

async fn ceremony_pin(
    st: SharedState,
    id: String,
    q: WaitQuery,
    body: CeremonyPin,
    kind: Kind,
) -> ApiResult<Response> {
    let mut view = st.ceremonies.submit_pin(&id, kind, body.pin)?;
    // The PIN was handed over while the view still says needs_pin; report the next state.
    if let Some(d) = wait_duration(&q, &view)? {
        let mut rx = st.ceremonies.subscribe(&id, kind)?;
        let _ = tokio::time::timeout(d, async {
            let _ = rx.wait_for(|v| v.state != CState::NeedsPin).await;
            let _ = rx.wait_for(|v| v.state.needs_client_or_done()).await;
        })
        .await;
        view = rx.borrow().clone();
    }
    Ok(ceremony_response(view, false))
}

fn sse_name(state: CState) -> &'static str {
    match state {
        CState::Succeeded => "done",
        other => other.as_str(),
    }
}

async fn events(
    st: SharedState,
    streams: Arc<EventStreams>,
    id: String,
    kind: Kind,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let rx = st.ceremonies.subscribe(&id, kind)?;
    let slot = streams.open(&id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::TooManyStreams,
            "too many event streams are open; close one or poll the ceremony instead",
        )
        .with("retry_after", 1)
    })?;
    // Emit the current state, then every change, and end after a terminal state. The slot
    // lives in the stream's state: it is freed when the stream ends or the client leaves.
    let stream = futures::stream::unfold(
        (rx, true, false, slot),
        |(mut rx, first, done, slot)| async move {
            if done {
                return None;
            }
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let view = rx.borrow_and_update().clone();
            let ev = Event::default()
                .event(sse_name(view.state))
                .json_data(&view)
                .unwrap_or_else(|_| Event::default().event("error"));
            let terminal = view.state.is_terminal();
            Some((Ok(ev), (rx, false, terminal, slot)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))))
}

pub async fn enrollment_events(
    State(st): State<SharedState>,
    caller: Caller,
    session: Option<Extension<PageSession>>,
    Extension(streams): Extension<Arc<EventStreams>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    access::ceremony(&st, &caller, &session, &id, Kind::Enrollment)?;
    events(st, streams, id, Kind::Enrollment).await
}

pub async fn assertion_events(
    State(st): State<SharedState>,
    caller: Caller,
    session: Option<Extension<PageSession>>,
    Extension(streams): Extension<Arc<EventStreams>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    access::ceremony(&st, &caller, &session, &id, Kind::Assertion)?;
    events(st, streams, id, Kind::Assertion).await
}

// ---- users and credentials (admin) --------------------------------------------------------

fn check_user(u: &str) -> ApiResult<()> {
    validate_user_name(u).map_err(ApiError::from)
}

fn cred_id(id: &str) -> ApiResult<Vec<u8>> {
    unb64(id)
        .filter(|b| !b.is_empty() && b.len() <= 1023)
        .ok_or_else(|| ApiError::invalid("credential id must be base64url"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

/// Users by name, a page at a time: `limit` (1-1000, default 100) after the cursor `after`;
/// `next` is the cursor of the following page, null on the last.
pub async fn list_users(
    State(st): State<SharedState>,
    ApiQuery(q): ApiQuery<UsersQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    if let Some(a) = &q.after {
        check_user(a)?;
    }
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::invalid("`limit` must be 1-1000"));
    }
    let (users, next) = st
        .store
        .list_users_page(q.after.as_deref(), limit as usize)?;
    Ok(Json(json!({ "users": users, "next": next })))
}

pub async fn get_user(
    State(st): State<SharedState>,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    check_user(&user)?;
    let u = st.store.get_user(&user)?.ok_or_else(ApiError::not_found)?;
    let creds: Vec<_> = st
        .store
        .list_credentials(&user, false)?
        .iter()
        .map(|c| credential_json(c, false))
        .collect();
    Ok(Json(json!({ "user": u, "credentials": creds })))
}

pub async fn reset_user(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    check_user(&user)?;
    let receipt = st.store.reset_user(&user, &caller.actor()).await?;
    tracing::info!(user = %user, credentials = receipt.credentials_revoked, phones = receipt.phones_removed, "service desk reset");
    Ok(Json(json!({ "receipt": receipt })))
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    include_revoked: Option<bool>,
}

pub async fn list_credentials(
    State(st): State<SharedState>,
    ApiPath(user): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    check_user(&user)?;
    let creds: Vec<_> = st
        .store
        .list_credentials(&user, q.include_revoked.unwrap_or(false))?
        .iter()
        .map(|c| credential_json(c, false))
        .collect();
    Ok(Json(json!({ "credentials": creds })))
}

pub async fn get_credential(
    State(st): State<SharedState>,
    ApiPath((user, id)): ApiPath<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    check_user(&user)?;
    let raw = cred_id(&id)?;
    let c = st
        .store
        .get_credential(&raw)?
        .filter(|c| c.user == user)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({ "credential": credential_json(&c, true) })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchCredential {
    nickname: Option<String>,
}

pub async fn patch_credential(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath((user, id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<PatchCredential>,
) -> ApiResult<Json<serde_json::Value>> {
    check_user(&user)?;
    let raw = cred_id(&id)?;
    if let Some(n) = &body.nickname {
        if n.trim().is_empty() || n.chars().count() > 64 || n.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "`nickname` must be 1-64 printable characters",
            ));
        }
    }
    let c = st
        .store
        .rename_credential(
            &user,
            &raw,
            body.nickname.as_deref(),
            &NewAudit::new("credential.renamed", &caller.actor())
                .user(&user)
                .credential(&id),
        )
        .await?;
    Ok(Json(json!({ "credential": credential_json(&c, false) })))
}

pub async fn revoke_credential(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath((user, id)): ApiPath<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    check_user(&user)?;
    let raw = cred_id(&id)?;
    let c = st
        .store
        .transition_credential(
            &user,
            &raw,
            &[CredentialState::Active, CredentialState::Quarantined],
            CredentialState::Revoked,
            Some("removed by admin"),
            &NewAudit::new("credential.revoked", &caller.actor())
                .user(&user)
                .credential(&id),
        )
        .await?;
    Ok(Json(json!({ "credential": credential_json(&c, false) })))
}

pub async fn release_credential(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath((user, id)): ApiPath<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    check_user(&user)?;
    let raw = cred_id(&id)?;
    let c = st
        .store
        .transition_credential(
            &user,
            &raw,
            &[CredentialState::Quarantined],
            CredentialState::Active,
            None,
            &NewAudit::new("credential.released", &caller.actor())
                .user(&user)
                .credential(&id),
        )
        .await?;
    Ok(Json(json!({ "credential": credential_json(&c, false) })))
}

#[derive(Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

pub async fn audit(
    State(st): State<SharedState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    if let Some(u) = &q.user {
        check_user(u)?;
    }
    let since = match &q.since {
        Some(s) => Some(
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|_| ApiError::invalid("`since` must be an RFC 3339 timestamp"))?,
        ),
        None => None,
    };
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::invalid("`limit` must be 1-1000"));
    }
    let events = st.store.list_audit(q.user.as_deref(), since, limit)?;
    Ok(Json(json!({ "events": events })))
}
