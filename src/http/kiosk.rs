//! The kiosk page (`/kiosk/`, assets embedded in the binary), the one-time session exchange
//! (`/kiosk/session?code=` -> HttpOnly SameSite=Strict cookie with the kiosk role), and the
//! page's API: its configuration and the verified user handoff.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::ApiJson;
use super::SharedState;
use crate::auth::Role;
use crate::kiosk;

pub const SESSION_COOKIE: &str = "keygate_session";

/// Strict CSP: only this origin's script and style, nothing inline, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn public_routes() -> Router<SharedState> {
    Router::new()
        .route("/kiosk", get(|| async { Redirect::permanent("/kiosk/") }))
        .route("/kiosk/", get(index))
        .route("/kiosk/app.js", get(app_js))
        .route("/kiosk/app.css", get(app_css))
        .route("/kiosk/session", get(session))
}

pub fn api_routes() -> Router<SharedState> {
    Router::new()
        .route("/v1/kiosk/config", get(config))
        .route("/v1/kiosk/handoff", post(handoff))
        .route("/v1/kiosk/whoami", get(whoami))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", kiosk::INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", kiosk::APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", kiosk::APP_CSS)
}

#[derive(Deserialize)]
struct SessionQuery {
    code: String,
}

/// Exchange a one-time code for a kiosk session cookie, then go to the page.
async fn session(
    State(st): State<SharedState>,
    Query(q): Query<SessionQuery>,
) -> ApiResult<Response> {
    if !st
        .store
        .consume_kiosk_code(&kiosk::session_code_hash(&q.code))?
    {
        return Err(ApiError::forbidden(
            "this kiosk link is invalid, expired or already used",
        ));
    }
    let token = crate::auth::create_token(&st.store, Role::Kiosk, Some("kiosk page session"))?;
    let cookie =
        format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200");
    let mut r = Redirect::to("/kiosk/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// The session token carried by the kiosk cookie, if any.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

async fn config(State(st): State<SharedState>) -> Json<Value> {
    let k = &st.cfg.kiosk;
    Json(json!({
        "inactivity_secs": k.inactivity_secs,
        "touch_timeout_secs": k.touch_timeout_secs,
        "sms": st.sms.is_some(),
        "simulate": st.cfg.simulate,
        "trusted_user_header": k.trusted_user_header.is_some(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HandoffBody {
    token: String,
}

/// Check the upstream sign-in's signed handoff; the page learns the user only this way.
async fn handoff(
    State(st): State<SharedState>,
    ApiJson(body): ApiJson<HandoffBody>,
) -> ApiResult<Json<Value>> {
    let secret = kiosk::handoff_secret(&st.cfg).map_err(ApiError::internal)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let h = kiosk::verify_handoff(&secret, body.token.trim(), now)
        .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, "handoff_invalid", e.to_string()))?;
    crate::sms::validate_user(&h.user)
        .map_err(|_| ApiError::invalid("the handoff names an invalid user"))?;
    Ok(Json(
        json!({ "user": h.user, "display_name": h.display_name, "expires_at": h.exp }),
    ))
}

/// The user a reverse proxy on this machine signed in (when so configured). Only honoured
/// while keygate listens on loopback, so that every caller is local.
async fn whoami(State(st): State<SharedState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let Some(name) = &st.cfg.kiosk.trusted_user_header else {
        return Err(ApiError::not_found());
    };
    if !st.cfg.listen.ip().is_loopback() {
        return Err(ApiError::forbidden(
            "trusted_user_header needs keygate to listen on loopback",
        ));
    }
    let user = headers
        .get(name.as_str())
        .and_then(|v| v.to_str().ok())
        .filter(|u| crate::sms::validate_user(u).is_ok())
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({ "user": user, "display_name": user })))
}
