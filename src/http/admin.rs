//! Admin routes over users, their credentials and the audit log (the service desk's tools).
//! Each handler carries its `#[utoipa::path]` with every status it answers.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::bodies::{
    AuditPage, CredentialBody, CredentialList, ErrorBody, ReceiptBody, UserDetail, UserPage,
};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::SharedState;
use crate::auth::Caller;
use crate::ceremony::{client::unb64, validate_user_name, CredentialView};
use crate::store::{CredentialState, NewAudit};

fn check_user(u: &str) -> ApiResult<()> {
    validate_user_name(u).map_err(ApiError::from)
}

fn cred_id(id: &str) -> ApiResult<Vec<u8>> {
    unb64(id)
        .filter(|b| !b.is_empty() && b.len() <= 1023)
        .ok_or_else(|| ApiError::invalid("credential id must be base64url"))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsersQuery {
    /// The cursor: the `next` of the previous page.
    #[serde(default)]
    #[param(pattern = r"^(?!\.\.?$)[A-Za-z0-9._@+-]{1,128}$")]
    after: Option<String>,
    /// Users per page, 1-1000 (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Users by name, a page at a time: `limit` (1-1000, default 100) after the cursor `after`;
/// `next` is the cursor of the following page, null on the last.
/// Users by name, a page at a time; `next` is the cursor of the following page (null on
/// the last).
#[utoipa::path(get, path = "/v1/users", tag = "users", params(UsersQuery),
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "One page of users", body = UserPage)))]
pub async fn list_users(
    State(st): State<SharedState>,
    ApiQuery(q): ApiQuery<UsersQuery>,
) -> ApiResult<Json<UserPage>> {
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
    Ok(Json(UserPage { users, next }))
}

/// A user and their active credentials.
#[utoipa::path(get, path = "/v1/users/{user}", tag = "users", params(super::bodies::UserPath),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The user", body = UserDetail),
        (status = 404, description = "`not_found`: no such user", body = ErrorBody),
    ))]
pub async fn get_user(
    State(st): State<SharedState>,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Json<UserDetail>> {
    check_user(&user)?;
    let u = st.store.get_user(&user)?.ok_or_else(ApiError::not_found)?;
    let creds: Vec<_> = st
        .store
        .list_credentials(&user, false)?
        .iter()
        .map(|c| CredentialView::new(c, false))
        .collect();
    Ok(Json(UserDetail {
        user: u,
        credentials: creds,
    }))
}

/// Service-desk reset: revoke every key of the user and remove their phones, in one
/// transaction; answers a receipt.
#[utoipa::path(delete, path = "/v1/users/{user}", tag = "users", params(super::bodies::UserPath),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "What the reset removed", body = ReceiptBody),
        (status = 404, description = "`not_found`: no such user", body = ErrorBody),
    ))]
pub async fn reset_user(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Json<ReceiptBody>> {
    check_user(&user)?;
    let receipt = st.store.reset_user(&user, &caller.actor()).await?;
    tracing::info!(user = %user, credentials = receipt.credentials_revoked, phones = receipt.phones_removed, "service desk reset");
    Ok(Json(ReceiptBody {
        receipt,
        entra: st.entra.is_some().then_some(
            "Microsoft Entra ID methods are separate and were not changed: see \
             GET /v1/users/{user}/entra/methods",
        ),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `true` to include revoked credentials.
    #[serde(default)]
    include_revoked: Option<bool>,
}

/// A user's credentials (active and quarantined; revoked too with `include_revoked`).
#[utoipa::path(get, path = "/v1/users/{user}/credentials", tag = "users",
    params(super::bodies::UserPath, ListQuery),
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The credentials", body = CredentialList)))]
pub async fn list_credentials(
    State(st): State<SharedState>,
    ApiPath(user): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<CredentialList>> {
    check_user(&user)?;
    let credentials: Vec<_> = st
        .store
        .list_credentials(&user, q.include_revoked.unwrap_or(false))?
        .iter()
        .map(|c| CredentialView::new(c, false))
        .collect();
    Ok(Json(CredentialList { credentials }))
}

/// One credential, with its COSE public key.
#[utoipa::path(get, path = "/v1/users/{user}/credentials/{id}", tag = "users",
    params(super::bodies::CredentialPath),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The credential", body = CredentialBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn get_credential(
    State(st): State<SharedState>,
    ApiPath((user, id)): ApiPath<(String, String)>,
) -> ApiResult<Json<CredentialBody>> {
    check_user(&user)?;
    let raw = cred_id(&id)?;
    let c = st
        .store
        .get_credential(&raw)?
        .filter(|c| c.user == user)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(CredentialBody {
        credential: CredentialView::new(&c, true),
    }))
}

/// A new nickname (1-64 printable characters), or null to clear it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchCredential {
    #[schema(
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]*[^\s\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069][^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]*$"
    )]
    nickname: Option<String>,
}

/// Rename a credential (its nickname).
#[utoipa::path(patch, path = "/v1/users/{user}/credentials/{id}", tag = "users",
    params(super::bodies::CredentialPath), request_body = PatchCredential,
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The credential", body = CredentialBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub async fn patch_credential(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath((user, id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<PatchCredential>,
) -> ApiResult<Json<CredentialBody>> {
    check_user(&user)?;
    let raw = cred_id(&id)?;
    if let Some(n) = &body.nickname {
        if crate::base::text::check_text(n, 64).is_err() {
            return Err(ApiError::invalid(crate::base::text::text_message(
                "nickname", 64,
            )));
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
    Ok(Json(CredentialBody {
        credential: CredentialView::new(&c, false),
    }))
}

/// Revoke a credential (active or quarantined).
#[utoipa::path(delete, path = "/v1/users/{user}/credentials/{id}", tag = "users",
    params(super::bodies::CredentialPath),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The credential, revoked", body = CredentialBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: already revoked", body = ErrorBody),
    ))]
pub async fn revoke_credential(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath((user, id)): ApiPath<(String, String)>,
) -> ApiResult<Json<CredentialBody>> {
    transition(
        &st,
        &caller,
        &user,
        &id,
        &[CredentialState::Active, CredentialState::Quarantined],
        (CredentialState::Revoked, Some("removed by admin")),
        "credential.revoked",
    )
    .await
}

/// Move a user's credential from one of `from` to `to` (with its reason), audited as `event`.
async fn transition(
    st: &SharedState,
    caller: &Caller,
    user: &str,
    id: &str,
    from: &[CredentialState],
    (to, reason): (CredentialState, Option<&str>),
    event: &str,
) -> ApiResult<Json<CredentialBody>> {
    check_user(user)?;
    let raw = cred_id(id)?;
    let audit = NewAudit::new(event, &caller.actor())
        .user(user)
        .credential(id);
    let c = st
        .store
        .transition_credential(user, &raw, from, to, reason, &audit)
        .await?;
    Ok(Json(CredentialBody {
        credential: CredentialView::new(&c, false),
    }))
}

/// Release a credential from quarantine (after a suspected clone was cleared).
#[utoipa::path(post, path = "/v1/users/{user}/credentials/{id}/release", tag = "users",
    params(super::bodies::CredentialPath),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The credential, active again", body = CredentialBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: not quarantined", body = ErrorBody),
    ))]
pub async fn release_credential(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath((user, id)): ApiPath<(String, String)>,
) -> ApiResult<Json<CredentialBody>> {
    transition(
        &st,
        &caller,
        &user,
        &id,
        &[CredentialState::Quarantined],
        (CredentialState::Active, None),
        "credential.released",
    )
    .await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this user's lines.
    #[serde(default)]
    #[param(pattern = r"^(?!\.\.?$)[A-Za-z0-9._@+-]{1,128}$")]
    user: Option<String>,
    /// Only lines at or after this RFC 3339 time.
    #[serde(default)]
    #[param(format = DateTime)]
    since: Option<String>,
    /// Lines at most, 1-1000 (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/v1/audit", tag = "users", params(AuditQuery),
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Audit lines", body = AuditPage)))]
pub async fn audit(
    State(st): State<SharedState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
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
    Ok(Json(AuditPage { events }))
}

/// The audit chain's signed head (see "Tamper-evident audit log" in the README).
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditHeadBody {
    /// The newest entry's seq (0 while the log is empty).
    seq: i64,
    /// Its hash (SHA-256 over the entry's canonical encoding), 64 hex digits.
    hash: String,
    /// HMAC-SHA256 under the data dir's `audit-head.key` over
    /// `keygate.audit.head.v1` || seq (8 bytes big-endian) || hash, 64 hex digits.
    signature: String,
    /// The newest entry's time (null while the log is empty).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    at: Option<time::OffsetDateTime>,
}

/// The audit chain's head, signed: keep a copy elsewhere, and `keygate audit verify --head
/// SEQ:HASH` later shows whether the log was cut or rewritten since.
#[utoipa::path(get, path = "/v1/audit/head", tag = "users",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The signed head", body = AuditHeadBody)))]
pub async fn audit_head(State(st): State<SharedState>) -> ApiResult<Json<AuditHeadBody>> {
    let head = st.store.audit_head()?;
    Ok(Json(AuditHeadBody {
        seq: head.seq,
        hash: hex::encode(head.hash),
        signature: hex::encode(head.signature),
        at: head.at,
    }))
}
