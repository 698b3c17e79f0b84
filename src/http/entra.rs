//! Admin routes over a user's Microsoft Entra ID methods (the service desk's tools): list the
//! passkeys Graph holds (marked when keygate enrolled them), delete one (and keygate's record),
//! issue a Temporary Access Pass. Without `[entra]` each answers `entra_not_configured`.
//!
//! The Temporary Access Pass is shown once, in the `201` answer (`Cache-Control: no-store`):
//! it is never stored, logged or audited; the audit line records that one was issued.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::bodies::ErrorBody;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath};
use super::SharedState;
use crate::auth::Caller;
use crate::ceremony::validate_user_name;
use crate::entra::{EntraClient, EntraError, Fido2Method};
use crate::store::NewAudit;

/// Entra's bounds on a Temporary Access Pass's lifetime, in minutes.
pub const TAP_MIN_MINUTES: u32 = 10;
pub const TAP_MAX_MINUTES: u32 = 43_200;
const TAP_DEFAULT_MINUTES: u32 = 60;

/// The longest Graph method id keygate passes on.
const METHOD_ID_MAX: usize = 128;

pub fn admin_routes() -> Router<SharedState> {
    Router::new()
        .route("/v1/users/{user}/entra/methods", get(list_methods))
        .route("/v1/users/{user}/entra/methods/{id}", delete(delete_method))
        .route(
            "/v1/users/{user}/entra/temporary-access-pass",
            post(create_tap),
        )
}

fn entra(st: &SharedState) -> ApiResult<&EntraClient> {
    st.entra
        .as_ref()
        .ok_or_else(|| ApiError::from(EntraError::NotConfigured))
}

fn check_user(u: &str) -> ApiResult<()> {
    validate_user_name(u).map_err(ApiError::from)
}

/// Graph method ids: GUIDs, or base64url for passkeys; nothing that could leave the path
/// segment keygate puts them in.
fn check_method_id(id: &str) -> ApiResult<()> {
    let ok = !id.is_empty()
        && id.len() <= METHOD_ID_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'=' | b'~'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "an Entra method id is 1-{METHOD_ID_MAX} characters of A-Z, a-z, 0-9, - _ . = ~"
        )))
    }
}

/// `{user}` and an Entra method `{id}` in a path (documentation only).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct EntraMethodPath {
    /// User name
    #[param(pattern = r"^(?!\.\.?$)[A-Za-z0-9._@+-]{1,128}$")]
    user: String,
    /// Graph's method id
    #[param(pattern = r"^[A-Za-z0-9._=~-]{1,128}$")]
    id: String,
}

/// One of the user's passkeys in Entra.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EntraMethodEntry {
    #[serde(flatten)]
    pub method: Fido2Method,
    /// keygate enrolled it (and can tell whose key it is).
    pub known_locally: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EntraMethodList {
    /// The user principal name the user maps to (`[entra] upn_template`).
    pub upn: String,
    pub methods: Vec<EntraMethodEntry>,
}

/// The user's passkeys (fido2 methods) in Microsoft Entra ID.
#[utoipa::path(get, path = "/v1/users/{user}/entra/methods", tag = "entra",
    params(super::bodies::UserPath),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The passkeys Graph lists", body = EntraMethodList),
        (status = 404, description = "`entra_user_not_found`", body = ErrorBody),
        (status = 429, description = "`entra_throttled` (with `retry_after`)", body = ErrorBody),
        (status = 501, description = "`entra_not_configured`", body = ErrorBody),
        (status = 502, description = "`entra_auth_failed`, `entra_forbidden`", body = ErrorBody),
        (status = 503, description = "`entra_unavailable`", body = ErrorBody),
    ))]
pub async fn list_methods(
    State(st): State<SharedState>,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Json<EntraMethodList>> {
    check_user(&user)?;
    let entra = entra(&st)?;
    let upn = entra.upn_for(&user);
    let known: Vec<String> = st
        .store
        .list_entra_passkeys(&user)?
        .into_iter()
        .map(|r| r.method_id)
        .collect();
    let methods = entra
        .list_fido2(&upn)
        .await?
        .into_iter()
        .map(|m| EntraMethodEntry {
            known_locally: known.contains(&m.id),
            method: m,
        })
        .collect();
    Ok(Json(EntraMethodList { upn, methods }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EntraMethodDeleted {
    pub method_id: String,
    pub upn: String,
    /// keygate held a record of this passkey and removed it.
    pub local_record_removed: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EntraDeletedBody {
    pub deleted: EntraMethodDeleted,
}

/// Delete one of the user's passkeys in Microsoft Entra ID, then keygate's record of it.
#[utoipa::path(delete, path = "/v1/users/{user}/entra/methods/{id}", tag = "entra",
    params(EntraMethodPath),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Deleted in Entra (a method already gone counts)", body = EntraDeletedBody),
        (status = 404, description = "`entra_user_not_found`", body = ErrorBody),
        (status = 429, description = "`entra_throttled` (with `retry_after`)", body = ErrorBody),
        (status = 501, description = "`entra_not_configured`", body = ErrorBody),
        (status = 502, description = "`entra_auth_failed`, `entra_forbidden`", body = ErrorBody),
        (status = 503, description = "`entra_unavailable`", body = ErrorBody),
    ))]
pub async fn delete_method(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath((user, id)): ApiPath<(String, String)>,
) -> ApiResult<Json<EntraDeletedBody>> {
    check_user(&user)?;
    check_method_id(&id)?;
    let entra = entra(&st)?;
    let upn = entra.upn_for(&user);
    entra.delete_fido2(&upn, &id).await?;
    let audit = NewAudit::new("entra.passkey_deleted", &caller.actor())
        .user(&user)
        .detail(serde_json::json!({ "upn": upn, "method_id": id }));
    let removed = st.store.delete_entra_passkey(&user, &id, &audit).await?;
    tracing::info!(user = %user, method_id = %id, local_record_removed = removed, "Entra passkey deleted");
    Ok(Json(EntraDeletedBody {
        deleted: EntraMethodDeleted {
            method_id: id,
            upn,
            local_record_removed: removed,
        },
    }))
}

/// A Temporary Access Pass: lifetime 10-43200 minutes (default 60), one use (default) or many.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TapRequest {
    #[serde(default)]
    #[schema(minimum = 10, maximum = 43200)]
    lifetime_minutes: Option<u32>,
    #[serde(default)]
    usable_once: Option<bool>,
}

/// The pass, shown once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TapIssued {
    pub temporary_access_pass: String,
    pub lifetime_minutes: u32,
    pub usable_once: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub starts_at: Option<time::OffsetDateTime>,
}

/// Issue a Temporary Access Pass for a student who lost every method. The pass is in this
/// answer only (`Cache-Control: no-store`): keygate neither stores nor logs it.
#[utoipa::path(post, path = "/v1/users/{user}/entra/temporary-access-pass", tag = "entra",
    params(super::bodies::UserPath), request_body = TapRequest,
    security(("bearer" = ["admin"])),
    responses(
        (status = 201, description = "The pass, shown once", body = TapIssued,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 404, description = "`entra_user_not_found`", body = ErrorBody),
        (status = 422, description = "`entra_rejected`: Entra refused (e.g. the TAP policy is off)", body = ErrorBody),
        (status = 429, description = "`entra_throttled` (with `retry_after`)", body = ErrorBody),
        (status = 501, description = "`entra_not_configured`", body = ErrorBody),
        (status = 502, description = "`entra_auth_failed`, `entra_forbidden`", body = ErrorBody),
        (status = 503, description = "`entra_unavailable`", body = ErrorBody),
    ))]
pub async fn create_tap(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<TapRequest>,
) -> ApiResult<Response> {
    check_user(&user)?;
    let lifetime = body.lifetime_minutes.unwrap_or(TAP_DEFAULT_MINUTES);
    if !(TAP_MIN_MINUTES..=TAP_MAX_MINUTES).contains(&lifetime) {
        return Err(ApiError::invalid(format!(
            "`lifetime_minutes` must be {TAP_MIN_MINUTES}-{TAP_MAX_MINUTES}"
        )));
    }
    let usable_once = body.usable_once.unwrap_or(true);
    let entra = entra(&st)?;
    let upn = entra.upn_for(&user);
    let tap = entra
        .create_temporary_access_pass(&upn, lifetime, usable_once)
        .await?;
    let audit = NewAudit::new("entra.tap_issued", &caller.actor())
        .user(&user)
        .detail(serde_json::json!({
            "upn": upn, "method_id": tap.id, "lifetime_minutes": tap.lifetime_minutes,
            "usable_once": tap.usable_once,
        }));
    // Issued in Entra already: a lost audit line must not cost the student the pass.
    if let Err(e) = st.store.append_audit(&audit).await {
        tracing::error!(user = %user, error = %e, "cannot audit the Temporary Access Pass");
    }
    tracing::info!(user = %user, lifetime_minutes = tap.lifetime_minutes, usable_once = tap.usable_once,
        "Temporary Access Pass issued");
    let body = TapIssued {
        temporary_access_pass: tap.pass.expose().to_string(),
        lifetime_minutes: tap.lifetime_minutes,
        usable_once: tap.usable_once,
        starts_at: tap.starts_at,
    };
    Ok((
        StatusCode::CREATED,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(body),
    )
        .into_response())
}
