//! Route handlers of the keys and their ceremonies: devices, enrollments, assertions (state,
//! long-poll, cancel, PIN, event streams). Each carries its `#[utoipa::path]`: every status
//! and content type it answers, so that `/openapi.json` documents what the handler does.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::Stream;
use serde::Deserialize;

use super::bodies::{DeviceBody, DeviceList, ErrorBody, Health};
use super::error::ErrorCode;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::kiosk::PageSession;
use super::server::EventStreams;
use super::{access, SharedState};
use crate::auth::Caller;
use crate::ceremony::{AssertionRequest, CeremonyView, EnrollmentRequest, Kind, State as CState};

/// Liveness: answers while the daemon serves requests; `store` tells whether it can store
/// (`storage_full`: the disk is full, writes answer `store_unavailable`, reads go on).
#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, description = "The daemon is up", body = Health)))]
pub async fn healthz(State(st): State<SharedState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        store: st.store.status(),
        version: env!("CARGO_PKG_VERSION"),
    })
}

// ---- devices ------------------------------------------------------------------------------

/// Plugged keys: model, AAGUID, CTAP versions, PIN state and retries, UV, slots.
#[utoipa::path(get, path = "/v1/devices", tag = "devices",
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The plugged keys", body = DeviceList),
        (status = 502, description = "`device_error`: a key failed to answer", body = ErrorBody),
    ))]
pub async fn list_devices(State(st): State<SharedState>) -> ApiResult<Json<DeviceList>> {
    let devices = st.ceremonies.devices().clone();
    let statuses = devices.statuses().await?;
    Ok(Json(DeviceList { devices: statuses }))
}

/// A new PIN for a key (4 or more characters, at most 63 bytes), and the current one when
/// changing it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PinBody {
    /// The new PIN; absent with `generate_pin: true`.
    #[serde(default)]
    #[schema(min_length = 4, max_length = 63)]
    new_pin: Option<String>,
    #[serde(default)]
    current_pin: Option<String>,
    /// Service desk (admin only): keygate draws a random 6-8 digit PIN, sets it on a key
    /// without one and answers it once in `generated_pin`; it is never logged or stored.
    #[serde(default)]
    generate_pin: bool,
}

/// Set a PIN (key without one) or change it (with `current_pin`); with `generate_pin: true`
/// (admin), keygate generates the PIN. A PIN shorter than `[enrollment] min_pin_length` (or
/// the key's own minimum) is refused with `pin_policy_violation` before the key sees it.
#[utoipa::path(post, path = "/v1/devices/{id}/pin", tag = "devices",
    params(("id" = String, Path, description = "Device id (`sim:<n>` or `hid:<path>`)")),
    request_body = PinBody,
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The key, with its PIN set", body = DeviceBody),
        (status = 400, description = "`invalid_request`: neither or both of `new_pin` and `generate_pin`", body = ErrorBody),
        (status = 403, description = "`forbidden`: `generate_pin` needs an admin token", body = ErrorBody),
        (status = 404, description = "`not_found`: no such key", body = ErrorBody),
        (status = 408, description = "`touch_timeout`", body = ErrorBody),
        (status = 409, description = "`no_device`, `device_busy`, `device_removed`, `pin_already_set`, `pin_not_set`", body = ErrorBody),
        (status = 422, description = "`pin_invalid`, `pin_policy_violation`", body = ErrorBody),
        (status = 428, description = "`pin_required`: changing a PIN needs `current_pin`", body = ErrorBody),
        (status = 423, description = "`pin_blocked`, `pin_auth_blocked`", body = ErrorBody),
        (status = 502, description = "`device_error`", body = ErrorBody),
    ))]
pub async fn device_pin(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PinBody>,
) -> ApiResult<Json<DeviceBody>> {
    match (body.new_pin, body.generate_pin) {
        (Some(new_pin), false) => {
            let status = st
                .ceremonies
                .set_pin(&id, new_pin, body.current_pin, &caller.actor())
                .await?;
            Ok(Json(DeviceBody {
                device: status,
                generated_pin: None,
            }))
        }
        (None, true) if body.current_pin.is_none() => {
            if caller.role != crate::auth::Role::Admin {
                return Err(ApiError::forbidden(
                    "`generate_pin` is for the service desk: it needs an admin token",
                ));
            }
            let (status, pin) = st
                .ceremonies
                .set_generated_pin(&id, &caller.actor())
                .await?;
            Ok(Json(DeviceBody {
                device: status,
                generated_pin: Some(pin.expose().to_string()),
            }))
        }
        _ => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "give `new_pin`, or `generate_pin: true` for a key without a PIN",
        )),
    }
}

// ---- ceremonies ---------------------------------------------------------------------------

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// `true`: wait until the ceremony ended or needs the client (bounded by its deadline);
    /// `0`-`120`: wait at most that many seconds; `false` or absent: answer at once.
    #[serde(default)]
    #[param(schema_with = super::openapi::wait_schema)]
    wait: Option<String>,
}

/// `?wait=true` waits until the ceremony ended or needs the client (bounded by its own
/// deadline); `?wait=N` waits at most N seconds (≤ 120).
fn wait_duration(
    q: &WaitQuery,
    view: &CeremonyView,
    now: time::OffsetDateTime,
) -> ApiResult<Option<Duration>> {
    let Some(w) = q.wait.as_deref() else {
        return Ok(None);
    };
    match w {
        "false" | "0" => Ok(None),
        "true" => {
            // The ceremony ends at its deadline (the key is cancelled then); the grace covers
            // the cancel's round trip, which a slow key or a loaded machine can stretch to
            // seconds: `wait=true` must not hand back a ceremony still waiting for a touch.
            let left = view.expires_at - now;
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
    match wait_duration(q, &view, st.store.now())? {
        Some(d) if !view.state.needs_client_or_done() => {
            Ok(st.ceremonies.wait(&view.id, kind, d).await?)
        }
        _ => Ok(view),
    }
}

/// Start enrolling a key for a user: `202` while it runs, `200` once it ended (with `wait`).
#[utoipa::path(post, path = "/v1/enrollments", tag = "ceremonies", params(WaitQuery),
    request_body = EnrollmentRequest,
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 202, description = "Started; follow it with GET, `wait` or the event stream", body = CeremonyView),
        (status = 200, description = "Already ended (with `wait`): succeeded, failed or cancelled", body = CeremonyView),
        (status = 404, description = "`not_found`: no such device", body = ErrorBody),
        (status = 409, description = "`no_device`, `multiple_devices`, `device_busy`, `pin_not_set`, ...", body = ErrorBody),
        (status = 422, description = "`pin_policy_violation`, `uv_unsupported`, `discoverable_unsupported`, `no_credentials`, `key_unsupported` (`target: \"entra\"`: the key lacks a PIN, discoverable credentials, credProtect or hmac-secret), ...", body = ErrorBody),
        (status = 423, description = "`pin_blocked`", body = ErrorBody),
        (status = 428, description = "`pin_required`", body = ErrorBody),
        (status = 429, description = "`too_many_streams`", body = ErrorBody),
        (status = 501, description = "`entra_not_configured`: `target: \"entra\"` without `[entra]`", body = ErrorBody),
        (status = 502, description = "`device_error`", body = ErrorBody),
    ))]
pub async fn start_enrollment(
    State(st): State<SharedState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<WaitQuery>,
    ApiJson(req): ApiJson<EnrollmentRequest>,
) -> ApiResult<Response> {
    super::users_privacy::refuse_closed(&st, &req.user)?;
    let view = st.ceremonies.start_enrollment(req, &caller.actor()).await?;
    let view = waited(&st, view, &q, Kind::Enrollment).await?;
    Ok(ceremony_response(view, true))
}

/// Start verifying a key: for a named user, or user-less ("test my key") without `user`.
#[utoipa::path(post, path = "/v1/assertions", tag = "ceremonies", params(WaitQuery),
    request_body = AssertionRequest,
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 202, description = "Started; follow it with GET, `wait` or the event stream", body = CeremonyView),
        (status = 200, description = "Already ended (with `wait`)", body = CeremonyView),
        (status = 404, description = "`not_found`: no such device", body = ErrorBody),
        (status = 409, description = "`no_device`, `multiple_devices`, `device_busy`, `pin_not_set`, ...", body = ErrorBody),
        (status = 422, description = "`pin_policy_violation`, `uv_unsupported`, `discoverable_unsupported`, `no_credentials`, `key_unsupported` (`target: \"entra\"`: the key lacks a PIN, discoverable credentials, credProtect or hmac-secret), ...", body = ErrorBody),
        (status = 423, description = "`pin_blocked`", body = ErrorBody),
        (status = 428, description = "`pin_required`", body = ErrorBody),
        (status = 429, description = "`too_many_streams`", body = ErrorBody),
        (status = 501, description = "`entra_not_configured`: `target: \"entra\"` without `[entra]`", body = ErrorBody),
        (status = 502, description = "`device_error`", body = ErrorBody),
    ))]
pub async fn start_assertion(
    State(st): State<SharedState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<WaitQuery>,
    ApiJson(req): ApiJson<AssertionRequest>,
) -> ApiResult<Response> {
    if let Some(user) = &req.user {
        super::users_privacy::refuse_closed(&st, user)?;
    }
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

/// The ceremony's state (a long-poll with `wait`).
#[utoipa::path(get, path = "/v1/enrollments/{id}", tag = "ceremonies",
    params(("id" = String, Path, description = "Ceremony id"), WaitQuery),
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The ceremony", body = CeremonyView),
        (status = 404, description = "`not_found` (also another caller's ceremony)", body = ErrorBody),
    ))]
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

/// The ceremony's state (a long-poll with `wait`).
#[utoipa::path(get, path = "/v1/assertions/{id}", tag = "ceremonies",
    params(("id" = String, Path, description = "Ceremony id"), WaitQuery),
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The ceremony", body = CeremonyView),
        (status = 404, description = "`not_found` (also another caller's ceremony)", body = ErrorBody),
    ))]
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

/// Cancel the ceremony (the key stops waiting for a touch); answers its end state.
#[utoipa::path(delete, path = "/v1/enrollments/{id}", tag = "ceremonies",
    params(("id" = String, Path, description = "Ceremony id")),
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The ceremony, cancelled (or already ended)", body = CeremonyView),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn cancel_enrollment(
    State(st): State<SharedState>,
    caller: Caller,
    session: Option<Extension<PageSession>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    access::ceremony(&st, &caller, &session, &id, Kind::Enrollment)?;
    cancel(st, id, Kind::Enrollment).await
}

/// Cancel the ceremony (the key stops waiting for a touch); answers its end state.
#[utoipa::path(delete, path = "/v1/assertions/{id}", tag = "ceremonies",
    params(("id" = String, Path, description = "Ceremony id")),
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The ceremony, cancelled (or already ended)", body = CeremonyView),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
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

/// The key's PIN: 4 or more characters, at most 63 bytes of UTF-8.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CeremonyPin {
    #[schema(min_length = 4, max_length = 63)]
    pin: String,
}

/// Answer `needs_pin` with the key's PIN.
#[utoipa::path(post, path = "/v1/enrollments/{id}/pin", tag = "ceremonies",
    params(("id" = String, Path, description = "Ceremony id"), WaitQuery),
    request_body = CeremonyPin,
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The ceremony after the PIN was handed over", body = CeremonyView),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`not_waiting_for_pin`, `ceremony_ended`", body = ErrorBody),
        (status = 422, description = "`pin_policy_violation`", body = ErrorBody),
    ))]
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

/// Answer `needs_pin` with the key's PIN.
#[utoipa::path(post, path = "/v1/assertions/{id}/pin", tag = "ceremonies",
    params(("id" = String, Path, description = "Ceremony id"), WaitQuery),
    request_body = CeremonyPin,
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The ceremony after the PIN was handed over", body = CeremonyView),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`not_waiting_for_pin`, `ceremony_ended`", body = ErrorBody),
        (status = 422, description = "`pin_policy_violation`", body = ErrorBody),
    ))]
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
    if let Some(d) = wait_duration(&q, &view, st.store.now())? {
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
    Ok(watch_events(rx, slot, |v: &CeremonyView| {
        (sse_name(v.state), v.state.is_terminal())
    }))
}

/// The event stream of a watched view (a ceremony, a reset): the current state, then every
/// change, ending after a terminal one; `describe` names a view's event and says whether it
/// is terminal. The slot lives in the stream's state: freed when the stream ends or the
/// client leaves.
pub(super) fn watch_events<V: serde::Serialize + Clone + Send + Sync + 'static>(
    rx: tokio::sync::watch::Receiver<V>,
    slot: super::server::StreamSlot,
    describe: fn(&V) -> (&'static str, bool),
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::unfold(
        (rx, true, false, slot),
        move |(mut rx, first, done, slot)| async move {
            if done {
                return None;
            }
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let view = rx.borrow_and_update().clone();
            let (name, terminal) = describe(&view);
            let ev = Event::default()
                .event(name)
                .json_data(&view)
                .unwrap_or_else(|_| Event::default().event("error"));
            Some((Ok(ev), (rx, false, terminal, slot)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

/// Server-Sent Events of the ceremony: one event per state (`pending`, `waiting_touch`,
/// `needs_pin`, `processing`, then `done`, `failed` or `cancelled`, which ends the stream),
/// each with the ceremony as JSON data.
#[utoipa::path(get, path = "/v1/enrollments/{id}/events", tag = "ceremonies",
    params(("id" = String, Path, description = "Ceremony id")),
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = super::bodies::SseEvent),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 429, description = "`too_many_streams` (with `retry_after`)", body = ErrorBody),
    ))]
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

/// Server-Sent Events of the ceremony: one event per state (`pending`, `waiting_touch`,
/// `needs_pin`, `processing`, then `done`, `failed` or `cancelled`, which ends the stream),
/// each with the ceremony as JSON data.
#[utoipa::path(get, path = "/v1/assertions/{id}/events", tag = "ceremonies",
    params(("id" = String, Path, description = "Ceremony id")),
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = super::bodies::SseEvent),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 429, description = "`too_many_streams` (with `retry_after`)", body = ErrorBody),
    ))]
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
