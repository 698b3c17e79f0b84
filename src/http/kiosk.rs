//! The kiosk page (`/kiosk/`, assets embedded in the binary), the one-time session exchange
//! (`/kiosk/session?code=` -> HttpOnly SameSite=Strict cookie with the kiosk role), and the
//! page's API: its configuration and the verified user handoff.
//!
//! A page session (the token behind the cookie) ends [`SESSION_TTL_SECS`] after its creation,
//! server-side. It acts for one student at a time: the user of the last verified handoff (or
//! of the trusted header), bound to the session server-side. A page session's requests that
//! name a user must name that one ([`bind_page_session`]); unbound, it may only do user-less
//! things (devices, "test my key", its config). This holds however the token is presented;
//! other kiosk tokens (front-ends that authenticate students themselves) may act for anyone.

use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;

use super::bodies::{ErrorBody, HandoffView, KioskConfigView, WhoAmI};
use super::error::ErrorCode;
use super::error::{ApiError, ApiResult};
use super::extract::{json_object, ApiJson, ApiQuery};
use super::{AppState, SharedState};
use crate::auth::{Caller, Role};
use crate::kiosk;

pub const SESSION_COOKIE: &str = "keygate_session";

/// Lifetime of a page session: the cookie's Max-Age and the token's server-side expiry.
pub const SESSION_TTL_SECS: i64 = 12 * 3600;

/// Strict CSP: only this origin's script and style, nothing inline, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn public_routes() -> Router<SharedState> {
    Router::new()
        .route("/", get(root))
        .route("/favicon.ico", get(icon))
        .route("/kiosk", get(kiosk_slash))
        .route("/kiosk/", get(index))
        .route("/kiosk/app.js", get(app_js))
        .route("/kiosk/texts.js", get(texts_js))
        .route("/kiosk/app.css", get(app_css))
        .route("/kiosk/session", get(session))
}

pub fn api_routes() -> Router<SharedState> {
    Router::new()
        .route("/v1/kiosk/config", get(config))
        .route("/v1/kiosk/handoff", post(handoff).delete(sign_out))
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

/// The browser's way in: to the kiosk page.
#[utoipa::path(get, path = "/", tag = "kiosk page",
    responses((status = 303, description = "To the kiosk page",
        headers(("Location" = String, description = "`/kiosk/`")))))]
async fn root() -> Redirect {
    Redirect::to("/kiosk/")
}

/// The page lives at `/kiosk/` (its assets are relative to it).
#[utoipa::path(get, path = "/kiosk", tag = "kiosk page",
    responses((status = 308, description = "To the kiosk page",
        headers(("Location" = String, description = "`/kiosk/`")))))]
async fn kiosk_slash() -> Redirect {
    Redirect::permanent("/kiosk/")
}

/// The kiosk page (strict CSP, no framing, not cached).
#[utoipa::path(get, path = "/kiosk/", tag = "kiosk page",
    responses((status = 200, description = "The page", content_type = "text/html", body = String)))]
async fn index() -> Response {
    asset("text/html; charset=utf-8", kiosk::INDEX_HTML)
}

/// The page's script.
#[utoipa::path(get, path = "/kiosk/app.js", tag = "kiosk page",
    responses((status = 200, description = "The script", content_type = "text/javascript", body = String)))]
async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", kiosk::APP_JS)
}

/// The page's texts (Dutch and English) and error explanations; loaded before `app.js`.
#[utoipa::path(get, path = "/kiosk/texts.js", tag = "kiosk page",
    responses((status = 200, description = "The texts", content_type = "text/javascript", body = String)))]
async fn texts_js() -> Response {
    asset("text/javascript; charset=utf-8", kiosk::TEXTS_JS)
}

/// The page's style sheet.
#[utoipa::path(get, path = "/kiosk/app.css", tag = "kiosk page",
    responses((status = 200, description = "The style sheet", content_type = "text/css", body = String)))]
async fn app_css() -> Response {
    asset("text/css; charset=utf-8", kiosk::APP_CSS)
}

/// The page's icon (so that browsers' `/favicon.ico` requests are answered).
#[utoipa::path(get, path = "/favicon.ico", tag = "kiosk page",
    responses((status = 200, description = "The icon", content_type = "image/svg+xml", body = String)))]
async fn icon() -> Response {
    asset("image/svg+xml", kiosk::ICON_SVG)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct SessionQuery {
    /// The one-time code of a `keygate kiosk-link` URL.
    code: String,
}

/// Exchange a one-time code for a kiosk session cookie, then go to the page.
/// Exchange a one-time code for a kiosk session cookie, then go to the page.
#[utoipa::path(get, path = "/kiosk/session", tag = "kiosk page", params(SessionQuery),
    responses(
        (status = 303, description = "To the kiosk page, with the session cookie",
            headers(("Location" = String, description = "`/kiosk/`"),
                ("Set-Cookie" = String, description = "`keygate_session=...; HttpOnly; SameSite=Strict`"))),
        (status = 403, description = "`forbidden`: the link is invalid, expired or already used", body = ErrorBody),
    ))]
async fn session(
    State(st): State<SharedState>,
    ApiQuery(q): ApiQuery<SessionQuery>,
) -> ApiResult<Response> {
    if !st
        .store
        .consume_kiosk_code(&kiosk::session_code_hash(&q.code))
        .await?
    {
        return Err(ApiError::forbidden(
            "this kiosk link is invalid, expired or already used",
        ));
    }
    let token =
        crate::auth::create_token(&st.store, Role::Kiosk, Some("kiosk page session")).await?;
    // `kg_<id>_<secret>` (see `auth`).
    let id = token
        .strip_prefix("kg_")
        .and_then(|t| t.split_once('_'))
        .map(|(id, _)| id)
        .ok_or_else(|| ApiError::internal("unexpected token format"))?;
    let now = st.store.now().unix_timestamp();
    st.store
        .insert_kiosk_session(id, now + SESSION_TTL_SECS)
        .await?;
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_TTL_SECS}"
    );
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

/// What the kiosk page needs to know about the daemon.
#[utoipa::path(get, path = "/v1/kiosk/config", tag = "kiosk page",
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses((status = 200, description = "The page's settings", body = KioskConfigView)))]
async fn config(State(st): State<SharedState>) -> Json<KioskConfigView> {
    let k = &st.cfg.kiosk;
    Json(KioskConfigView {
        inactivity_secs: k.inactivity_secs,
        touch_timeout_secs: k.touch_timeout_secs,
        sms: st.sms.is_some(),
        simulate: st.cfg.simulate,
        trusted_user_header: k.trusted_user_header.is_some(),
        enroll_target: k.enroll_target,
        entra: st.entra.is_some(),
    })
}

/// On requests authenticated by a page session: the session and whom it is bound to.
#[derive(Debug, Clone)]
pub struct PageSession {
    pub token_id: String,
    pub bound_user: Option<String>,
}

impl PageSession {
    /// Ok only if this session is bound to `user`; otherwise `forbidden`.
    pub fn may_act_for(&self, user: &str) -> ApiResult<()> {
        match &self.bound_user {
            Some(b) if b == user => Ok(()),
            Some(_) => Err(ApiError::forbidden(
                "this kiosk session is signed in for another student; it may act only for them",
            )),
            None => Err(ApiError::forbidden(
                "this kiosk session has no signed-in student: sign in first (handoff or trusted \
                 header); until then it may only use devices and test a key",
            )),
        }
    }
}

/// The routes (POST) whose JSON body names the user acted for; see [`body_user`].
const USER_BODY_ROUTES: [&str; 3] = ["/v1/enrollments", "/v1/assertions", "/v1/sms/challenges"];

/// The user a request's JSON body names, for each of [`USER_BODY_ROUTES`]. Read the way the
/// handler reads it ([`json_object`]), and also the way serde alone would (a JSON array as
/// the struct's fields in order), so that no reading of the bytes the handler could accept
/// names a user this check did not see; a body neither reading accepts names nobody (the
/// handler refuses it).
fn body_user(route: &str, body: &[u8]) -> Option<String> {
    fn read<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
        json_object::<T>(body)
            .ok()
            .or_else(|| serde_json::from_slice::<T>(body).ok())
    }
    match route {
        "/v1/enrollments" => read::<crate::ceremony::EnrollmentRequest>(body).map(|r| r.user),
        "/v1/assertions" => read::<crate::ceremony::AssertionRequest>(body).and_then(|r| r.user),
        "/v1/sms/challenges" => read::<crate::sms::NewChallenge>(body).map(|r| r.user),
        _ => None,
    }
}

/// For an authenticated request (a [`Caller`] extension) of a page session: add the
/// [`PageSession`] extension and refuse (`forbidden`) a `{user}` path parameter or a body user
/// other than the bound one. Other callers' requests pass unchanged. Runs after routing.
pub async fn bind_page_session(st: &AppState, req: Request) -> Result<Request, ApiError> {
    let Some(caller) = req.extensions().get::<Caller>().filter(|c| c.page_session) else {
        return Ok(req);
    };
    let Some(rec) = st.store.kiosk_session(&caller.token_id)? else {
        return Ok(req);
    };
    let session = PageSession {
        token_id: rec.token_id,
        bound_user: rec.bound_user,
    };
    let (mut parts, body) = req.into_parts();
    if let Ok(params) = RawPathParams::from_request_parts(&mut parts, &()).await {
        for (name, value) in &params {
            if name == "user" {
                session.may_act_for(value)?;
            }
        }
    }
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let body = match route {
        Some(route)
            if parts.method == Method::POST && USER_BODY_ROUTES.contains(&route.as_str()) =>
        {
            let bytes = axum::body::to_bytes(body, st.cfg.max_body_bytes)
                .await
                .map_err(|_| {
                    ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
                })?;
            if let Some(user) = body_user(&route, &bytes) {
                session.may_act_for(&user)?;
            }
            Body::from(bytes)
        }
        _ => body,
    };
    parts.extensions.insert(session);
    Ok(Request::from_parts(parts, body))
}

/// The upstream sign-in's signed handoff token.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct HandoffBody {
    token: String,
}

/// Check the upstream sign-in's signed handoff (each token once); the page learns the user
/// only this way. A page session is bound to the verified user, or to nobody when the check
/// fails.
/// Check a signed handoff and bind the page session to the student it names.
#[utoipa::path(post, path = "/v1/kiosk/handoff", tag = "kiosk page", request_body = HandoffBody,
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The verified student", body = HandoffView),
        (status = 403, description = "`handoff_invalid`: bad signature, expired, replayed or malformed", body = ErrorBody),
        (status = 409, description = "`user_closed`: the student's account is closed", body = ErrorBody),
    ))]
async fn handoff(
    State(st): State<SharedState>,
    session: Option<Extension<PageSession>>,
    ApiJson(body): ApiJson<HandoffBody>,
) -> ApiResult<Json<HandoffView>> {
    if let Some(Extension(s)) = &session {
        st.store.bind_kiosk_session(&s.token_id, None).await?;
    }
    let secret = kiosk::handoff_secret(&st.cfg).map_err(ApiError::internal)?;
    let now = st.store.now().unix_timestamp();
    let invalid = |e: kiosk::HandoffError| ApiError::new(ErrorCode::HandoffInvalid, e.to_string());
    let token = body.token.trim();
    let h = kiosk::verify_handoff(&secret, token, now).map_err(invalid)?;
    crate::sms::validate_user(&h.user)
        .map_err(|_| ApiError::invalid("the handoff names an invalid user"))?;
    let hash = kiosk::handoff_hash(token).ok_or_else(|| invalid(kiosk::HandoffError::Malformed))?;
    if !st.store.use_kiosk_handoff(&hash, h.exp, now).await? {
        return Err(invalid(kiosk::HandoffError::Replayed));
    }
    // A closed account (the student left) is told so at once; the session acts for nobody.
    super::users_privacy::refuse_closed(&st, &h.user)?;
    if let Some(Extension(s)) = &session {
        st.store
            .bind_kiosk_session(&s.token_id, Some((&h.user, &h.display_name)))
            .await?;
    }
    Ok(Json(HandoffView {
        user: h.user,
        display_name: h.display_name,
        expires_at: h.exp,
    }))
}

/// The student is done (the page reset): a page session goes back to acting for nobody.
/// The student is done: the page session acts for nobody again.
#[utoipa::path(delete, path = "/v1/kiosk/handoff", tag = "kiosk page",
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses((status = 204, description = "Signed out")))]
async fn sign_out(
    State(st): State<SharedState>,
    session: Option<Extension<PageSession>>,
) -> ApiResult<StatusCode> {
    if let Some(Extension(s)) = session {
        st.store.bind_kiosk_session(&s.token_id, None).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The user a reverse proxy on this machine signed in (when so configured), to which a page
/// session is then bound (to nobody when the header names no valid user). Only honoured
/// while keygate listens on loopback, so that every caller is local.
/// The student a reverse proxy on this machine signed in (`kiosk.trusted_user_header`).
#[utoipa::path(get, path = "/v1/kiosk/whoami", tag = "kiosk page",
    security(("bearer" = ["kiosk"]), ("kiosk_session" = ["kiosk"])),
    responses(
        (status = 200, description = "The signed-in student", body = WhoAmI),
        (status = 403, description = "`forbidden`: keygate does not listen on loopback", body = ErrorBody),
        (status = 404, description = "`not_found`: no trusted header configured, or it names no valid user", body = ErrorBody),
        (status = 409, description = "`user_closed`: the student's account is closed", body = ErrorBody),
    ))]
async fn whoami(
    State(st): State<SharedState>,
    session: Option<Extension<PageSession>>,
    headers: HeaderMap,
) -> ApiResult<Json<WhoAmI>> {
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
        .filter(|u| crate::sms::validate_user(u).is_ok());
    let closed = match user {
        Some(u) => super::users_privacy::refuse_closed(&st, u).err(),
        None => None,
    };
    let user = user.filter(|_| closed.is_none());
    if let Some(Extension(s)) = &session {
        st.store
            .bind_kiosk_session(&s.token_id, user.map(|u| (u, u)))
            .await?;
    }
    if let Some(e) = closed {
        return Err(e);
    }
    let user = user.ok_or_else(ApiError::not_found)?;
    Ok(Json(WhoAmI {
        user: user.to_string(),
        display_name: user.to_string(),
    }))
}
