//! Account closure and the subject export (admin): `POST /v1/users/{user}/close` marks a user
//! closed (no enrollment, phone or SMS code from then on, `user_closed`), `DELETE` of it
//! reopens the account before the purge (`[retention] closed_user_grace_days`) removes it, and
//! `GET /v1/users/{user}/export` answers everything keygate holds about the person.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use super::bodies::ErrorBody;
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::ApiPath;
use super::SharedState;
use crate::auth::Caller;
use crate::ceremony::validate_user_name;
use crate::store::{Closure, NewAudit};

pub fn admin_routes() -> Router<SharedState> {
    Router::new()
        .route("/v1/users/{user}/close", post(close).delete(reopen))
        .route("/v1/users/{user}/export", get(export))
}

/// Refuse work for a closed `user` (`user_closed`): the entry points that enroll a key, add a
/// phone or send a code call this first. An unknown user is not closed.
pub(super) fn refuse_closed(st: &SharedState, user: &str) -> ApiResult<()> {
    if st.store.user_closed(user)? {
        return Err(ApiError::new(
            ErrorCode::UserClosed,
            "this account is closed: an administrator must reopen it first",
        ));
    }
    Ok(())
}

fn check_user(u: &str) -> ApiResult<()> {
    validate_user_name(u).map_err(ApiError::from)
}

/// A closure and when the purge removes the account.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ClosureBody {
    #[serde(flatten)]
    closure: Closure,
    /// From then on `keygate purge` (and the daemon's daily run) removes the user's keys,
    /// phones, SMS history and personal data.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    purge_after: time::OffsetDateTime,
}

/// Whether a reopen changed anything.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReopenBody {
    user: String,
    /// False when the account was not closed.
    reopened: bool,
}

/// Close a user's account (idempotent: a second close answers the first closure). Pending SMS
/// challenges end; enrollments, phones and SMS codes are refused with `user_closed`. Audited.
#[utoipa::path(post, path = "/v1/users/{user}/close", tag = "users",
    params(super::bodies::UserPath),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The closure", body = ClosureBody),
        (status = 404, description = "`not_found`: no such user", body = ErrorBody),
    ))]
pub async fn close(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Json<ClosureBody>> {
    check_user(&user)?;
    let closure = st.store.close_user(&user, &caller.actor()).await?;
    let grace = time::Duration::days(i64::from(st.cfg.retention.closed_user_grace_days));
    tracing::info!(user = %user, "account closed");
    Ok(Json(ClosureBody {
        purge_after: closure.closed_at + grace,
        closure,
    }))
}

/// Reopen a closed account before the purge removed it. Audited.
#[utoipa::path(delete, path = "/v1/users/{user}/close", tag = "users",
    params(super::bodies::UserPath),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Reopened (or was open)", body = ReopenBody),
        (status = 404, description = "`not_found`: no such user (or already purged)", body = ErrorBody),
    ))]
pub async fn reopen(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Json<ReopenBody>> {
    check_user(&user)?;
    let reopened = st.store.reopen_user(&user, &caller.actor()).await?;
    if reopened {
        tracing::info!(user = %user, "account reopened");
    }
    Ok(Json(ReopenBody { user, reopened }))
}

/// Everything keygate holds about one person (a data-subject access request): the user row,
/// credentials and Entra passkey records (public data only), phones (full numbers), SMS
/// challenges and messages (states and times; never codes), ceremonies, kiosk sessions and
/// the audit entries naming the user. Sent as an attachment, never cached.
#[utoipa::path(get, path = "/v1/users/{user}/export", tag = "users",
    params(super::bodies::UserPath),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The export: `user` and one list per kind of record", body = Object),
        (status = 404, description = "`not_found`: no such user", body = ErrorBody),
    ))]
pub async fn export(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Response> {
    check_user(&user)?;
    let mut doc = st.store.export_user(&user).map_err(|e| match e {
        crate::store::StoreError::NotFound => ApiError::not_found(),
        e => e.into(),
    })?;
    doc["exported_at"] = crate::store::fmt_time(st.store.now()).into();
    st.store
        .append_audit(&NewAudit::new("user.exported", &caller.actor()).user(&user))
        .await?;
    tracing::info!(user = %user, "subject export");
    let disposition = format!("attachment; filename=\"keygate-export-{user}.json\"");
    Ok((
        [
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Json(doc),
    )
        .into_response())
}
