//! The HTTP API: [`router`] builds the whole axum app from an [`AppState`], so tests drive it
//! in-process or over a real socket. Layers, outermost first: request timing (metrics), Host
//! check (DNS rebinding), Origin check (cross-origin browsers), body limit, bearer-token auth
//! per route group.

mod access;
mod admin;
mod bodies;
mod entra;
pub mod error;
pub(crate) mod extract;
mod handlers;
mod hooks;
mod keys;
mod kiosk;
mod metrics;
pub mod openapi;
mod reset;
pub mod server;
mod sim;
mod sms;
mod users_privacy;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::auth::{Caller, Role};
use crate::ceremony::CeremonyService;
use crate::config::Config;
use crate::device::sim::SimBench;
use crate::store::Store;
use error::ErrorCode;
pub use error::{ApiError, ApiResult};

/// Everything the handlers need.
pub struct AppState {
    pub cfg: Config,
    pub store: Store,
    pub ceremonies: Arc<CeremonyService>,
    /// Present only under `--simulate`: the `/v1/sim` routes exist only then.
    pub sim: Option<Arc<SimBench>>,
    /// The SMS factor (None only when it could not be set up, e.g. in bare unit tests).
    pub sms: Option<Arc<crate::sms::SmsService>>,
    /// `[entra]`: Microsoft Entra ID (the service desk's `/v1/users/{user}/entra/...` routes).
    pub entra: Option<crate::entra::EntraClient>,
    /// The daemon's one metrics registry (`GET /metrics`).
    pub metrics: crate::metrics::Metrics,
}

pub type SharedState = Arc<AppState>;

pub fn router(state: SharedState) -> Router {
    let kiosk = Router::new()
        .route("/v1/devices", get(handlers::list_devices))
        .route("/v1/devices/{id}/pin", post(handlers::device_pin))
        .route("/v1/enrollments", post(handlers::start_enrollment))
        .route(
            "/v1/enrollments/{id}",
            get(handlers::get_enrollment).delete(handlers::cancel_enrollment),
        )
        .route(
            "/v1/enrollments/{id}/events",
            get(handlers::enrollment_events),
        )
        .route("/v1/enrollments/{id}/pin", post(handlers::enrollment_pin))
        .route("/v1/assertions", post(handlers::start_assertion))
        .route(
            "/v1/assertions/{id}",
            get(handlers::get_assertion).delete(handlers::cancel_assertion),
        )
        .route(
            "/v1/assertions/{id}/events",
            get(handlers::assertion_events),
        )
        .route("/v1/assertions/{id}/pin", post(handlers::assertion_pin))
        .merge(sms::kiosk_routes())
        .merge(kiosk::api_routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_kiosk));

    let admin = Router::new()
        .route("/v1/users", get(admin::list_users))
        .route(
            "/v1/users/{user}",
            get(admin::get_user).delete(admin::reset_user),
        )
        .route("/v1/users/{user}/credentials", get(admin::list_credentials))
        .route(
            "/v1/users/{user}/credentials/{id}",
            get(admin::get_credential)
                .patch(admin::patch_credential)
                .delete(admin::revoke_credential),
        )
        .route(
            "/v1/users/{user}/credentials/{id}/release",
            post(admin::release_credential),
        )
        .route("/v1/audit", get(admin::audit))
        .route("/v1/audit/head", get(admin::audit_head))
        .merge(sms::admin_routes())
        .merge(entra::admin_routes())
        .merge(users_privacy::admin_routes())
        .merge(hooks::admin_routes())
        .merge(reset::admin_routes())
        .merge(keys::admin_routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));

    let mut app = Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/openapi.json", get(openapi::handler(&state.cfg)))
        .merge(kiosk)
        .merge(admin)
        .merge(sms::callback_routes())
        .merge(kiosk::public_routes())
        .merge(metrics::routes(state.clone()));
    if state.sim.is_some() {
        app = app.merge(
            sim::routes()
                .merge(sms::sim_routes())
                .route_layer(middleware::from_fn_with_state(state.clone(), require_kiosk)),
        );
    }
    app.fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this resource does not support that method",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(
            state.cfg.max_body_bytes,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), guard_origin))
        .layer(middleware::from_fn(error::envelope_rejections))
        .layer(axum::Extension(server::EventStreams::new(&state.cfg.http)))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::time_requests,
        ))
        .with_state(state)
}

/// The hosts a request may name: configured names plus the listen address itself.
fn host_allowed(cfg: &Config, host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        match rest.split_once(']') {
            Some((v6, _)) => format!("[{v6}]"),
            None => return false,
        }
    } else {
        host.rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(host)
            .to_string()
    };
    let name = name.to_ascii_lowercase();
    let listen_ip = match cfg.listen.ip() {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    };
    name == listen_ip
        || cfg
            .allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&name))
}

/// DNS-rebinding and cross-origin guard, before anything else runs.
async fn guard_origin(State(st): State<SharedState>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    if !host_allowed(&st.cfg, host) {
        return ApiError::new(
            ErrorCode::HostNotAllowed,
            "the Host header names a host keygate does not serve",
        )
        .into_response();
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !origin_allowed(&st.cfg, origin, host) {
            return ApiError::new(
                ErrorCode::OriginNotAllowed,
                "cross-origin requests are not allowed",
            )
            .into_response();
        }
    } else if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
    {
        return ApiError::new(
            ErrorCode::OriginNotAllowed,
            "cross-origin requests are not allowed",
        )
        .into_response();
    }
    next.run(req).await
}

fn origin_allowed(cfg: &Config, origin: &str, host: &str) -> bool {
    if cfg
        .allowed_origins
        .iter()
        .any(|o| o.trim_end_matches('/') == origin)
    {
        return true;
    }
    // Same origin: the Origin's authority is the Host we were addressed by.
    match url::Url::parse(origin) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
            let authority = match (u.host_str(), u.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                _ => return false,
            };
            authority.eq_ignore_ascii_case(host)
        }
        _ => false,
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

async fn authorize(st: &AppState, mut req: Request, next: Next, needed: Role) -> Response {
    // A bearer token, or the kiosk page's session cookie. Cookie-authenticated requests that
    // change state must carry an Origin (already checked same-origin by `guard_origin`):
    // with SameSite=Strict this closes cross-site request forgery.
    let from_cookie;
    let presented = match bearer(req.headers()) {
        Some(t) => {
            from_cookie = false;
            Some(t.to_string())
        }
        None => {
            from_cookie = true;
            kiosk::session_token(req.headers())
        }
    };
    if from_cookie
        && presented.is_some()
        && !matches!(
            *req.method(),
            axum::http::Method::GET | axum::http::Method::HEAD
        )
        && req.headers().get(header::ORIGIN).is_none()
    {
        return ApiError::forbidden("a cookie-authenticated request must carry an Origin header")
            .into_response();
    }
    let caller = match presented {
        None => None,
        Some(t) => match crate::auth::verify_token(&st.store, &t) {
            Ok(c) => c,
            Err(e) => return ApiError::from(e).into_response(),
        },
    };
    // The cookie carries page sessions only: any other token (an admin's above all) presented
    // as a cookie is refused as if absent, so a token pasted into a browser never acts there.
    let caller = caller.filter(|c| !from_cookie || c.page_session);
    let Some(caller) = caller else {
        return ApiError::unauthorized().into_response();
    };
    if !caller.role.allows(needed) {
        return ApiError::forbidden(format!("this action needs the `{}` role", needed.as_str()))
            .into_response();
    }
    req.extensions_mut().insert::<Caller>(caller);
    // A kiosk page session acts only for the student bound to it.
    match kiosk::bind_page_session(st, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn require_kiosk(State(st): State<SharedState>, req: Request, next: Next) -> Response {
    authorize(&st, req, next, Role::Kiosk).await
}

async fn require_admin(State(st): State<SharedState>, req: Request, next: Next) -> Response {
    authorize(&st, req, next, Role::Admin).await
}

async fn require_metrics(State(st): State<SharedState>, req: Request, next: Next) -> Response {
    authorize(&st, req, next, Role::Metrics).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_origin_rules() {
        let cfg = Config::default();
        assert!(host_allowed(&cfg, "127.0.0.1:8787"));
        assert!(host_allowed(&cfg, "localhost:8787"));
        assert!(host_allowed(&cfg, "[::1]:8787"));
        assert!(!host_allowed(&cfg, "evil.example:8787"));
        assert!(!host_allowed(&cfg, ""));
        assert!(origin_allowed(
            &cfg,
            "http://127.0.0.1:8787",
            "127.0.0.1:8787"
        ));
        assert!(!origin_allowed(
            &cfg,
            "http://evil.example",
            "127.0.0.1:8787"
        ));
        assert!(!origin_allowed(&cfg, "null", "127.0.0.1:8787"));
    }
}
