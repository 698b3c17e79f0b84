//! The key inventory (admin, `store/inventory/`): `GET /v1/keys` lists every key keygate
//! has enrolled a credential on, for its own relying party or into a user's Microsoft Entra
//! ID account, as JSON pages or as CSV for the service desk's spreadsheet (`csv.rs`);
//! `PATCH /v1/keys/{id}` marks a key lost: a local credential is revoked, an Entra passkey
//! deleted from the user's Entra account through Graph first.

mod csv;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::bodies::ErrorBody;
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::SharedState;
use crate::auth::Caller;
use crate::ceremony::client::{b64, unb64};
use crate::entra::EntraError;
use crate::store::{fmt_time, KeyFilter, KeyKind, KeyRecord, KeyRef, KeyState, Store, StoreError};

pub fn admin_routes() -> Router<SharedState> {
    Router::new()
        .route("/v1/keys", get(list_keys))
        .route("/v1/keys/{id}", patch(update_key))
}

/// Keys per JSON page unless `limit` says otherwise, and at most.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// The prefix of an Entra passkey's key id (`entra:` + its credential id). Not base64url, so
/// no local key id has it: a key chooses its credential ids, and an id one key presents in
/// both tables still names two keys.
const ENTRA_ID_PREFIX: &str = "entra:";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeysFormat {
    Json,
    Csv,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KeysQuery {
    /// Only keys in this state.
    #[serde(default)]
    #[param(inline)]
    state: Option<KeyState>,
    /// Only keys of this model: its AAGUID, hexadecimal with hyphens.
    #[serde(default)]
    #[param(
        pattern = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
    )]
    aaguid: Option<String>,
    /// Only keys of this kind: `local` (keygate's own relying party) or `entra`.
    #[serde(default)]
    #[param(inline)]
    kind: Option<KeyKind>,
    /// The cursor: the `next` of the previous page (the id of its last key).
    #[serde(default)]
    #[param(
        pattern = r"^(?:entra:)?(?:(?:[A-Za-z0-9_-]{4})+(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?|[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])$",
        min_length = 2,
        max_length = 1370
    )]
    after: Option<String>,
    /// Keys per page, 1-1000 (JSON: default 100; CSV: default every key).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `json` (default) or `csv` (`text/csv`, a header row, as an attachment).
    #[serde(default)]
    #[param(inline)]
    format: Option<KeysFormat>,
}

/// Where an Entra passkey is registered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyEntraPlace {
    /// The user principal name the passkey was enrolled into.
    pub upn: String,
    /// Graph's fido2AuthenticationMethod id.
    pub method_id: String,
    /// Graph's `attestationLevel` (`attested`, `notAttested`).
    pub attestation_level: Option<String>,
}

/// One key of the inventory: one credential (see `GET /v1/keys`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyEntry {
    /// The key id: its credential id, base64url without padding, after `entra:` for an Entra
    /// passkey.
    pub id: String,
    /// `local`: a credential for keygate's own relying party; `entra`: a passkey enrolled
    /// into the user's Microsoft Entra ID account.
    pub kind: KeyKind,
    /// The credential id, base64url without padding.
    pub credential_id: String,
    /// The relying party of an Entra passkey (`login.microsoft.com`); null for a local
    /// credential (keygate's own relying party).
    pub rp_id: Option<String>,
    /// The model's AAGUID from the attested credential data (null: the key gave none).
    pub aaguid: Option<uuid::Uuid>,
    /// The model's name, when its AAGUID is known (Entra: as Graph named it).
    pub model: Option<String>,
    /// The firmware version the key reported (GetInfo) at enrollment, where recorded.
    pub firmware: Option<String>,
    /// The device id the key was enrolled on (`sim:<n>`, `hid:<path>`: a USB port, not a
    /// key), where recorded.
    pub device: Option<String>,
    /// Local: the attestation chained to a trusted CA at enrollment; Entra: Graph reports
    /// the passkey `attested`.
    pub attested: bool,
    /// Local: the nickname; Entra: the passkey's name in Entra.
    pub nickname: Option<String>,
    /// The users holding credentials on the key: one, as an entry is one credential.
    pub owners: Vec<String>,
    /// The enrollment.
    #[schema(format = DateTime)]
    pub first_seen: String,
    /// The last verification with the key, else its enrollment.
    #[schema(format = DateTime)]
    pub last_seen: String,
    /// The last verification with the key (null: never used).
    #[schema(format = DateTime)]
    pub last_used: Option<String>,
    pub state: KeyState,
    /// Why the credential is not active (`lost`, `key_reset`, `removed by admin`, ...).
    pub state_reason: Option<String>,
    /// Entra passkeys: where in Entra (null for a local credential).
    pub entra: Option<KeyEntraPlace>,
}

impl KeyEntry {
    fn new(k: &KeyRecord) -> KeyEntry {
        let known = || {
            k.aaguid
                .as_ref()
                .and_then(crate::device::models::model_name)
        };
        let model = match k.kind {
            KeyKind::Local => known().or_else(|| k.model.clone()),
            // Graph's name comes from its own metadata: its word on the model it registered.
            KeyKind::Entra => k.model.clone().or_else(known),
        };
        let last_used = k.last_used_at.map(fmt_time);
        KeyEntry {
            id: key_id_string(&k.key_ref()),
            kind: k.kind,
            credential_id: b64(&k.id),
            rp_id: k.entra.as_ref().map(|e| e.rp_id.clone()),
            aaguid: k.aaguid,
            model,
            firmware: k.firmware.clone(),
            device: k.device.clone(),
            attested: k.attested,
            nickname: k.nickname.clone(),
            owners: vec![k.owner.clone()],
            first_seen: fmt_time(k.enrolled_at),
            last_seen: last_used.clone().unwrap_or_else(|| fmt_time(k.enrolled_at)),
            last_used,
            state: k.state,
            state_reason: k.state_reason.clone(),
            entra: k.entra.as_ref().map(|e| KeyEntraPlace {
                upn: e.upn.clone(),
                method_id: e.method_id.clone(),
                attestation_level: e.attestation_level.clone(),
            }),
        }
    }
}

/// One page of the inventory.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyPage {
    pub keys: Vec<KeyEntry>,
    /// The cursor (`after`) of the next page; null on the last.
    pub next: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyBody {
    pub key: KeyEntry,
}

/// The one state an admin sets.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SettableKeyState {
    Lost,
}

/// A key's new state: `lost` (the other states follow from what happens to the key).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyUpdate {
    #[schema(value_type = SettableKeyState)]
    state: KeyState,
}

/// The key id of `key` (see [`ENTRA_ID_PREFIX`]).
fn key_id_string(key: &KeyRef) -> String {
    match key.kind {
        KeyKind::Local => b64(&key.credential_id),
        KeyKind::Entra => format!("{ENTRA_ID_PREFIX}{}", b64(&key.credential_id)),
    }
}

fn key_ref(id: &str, what: &str) -> ApiResult<KeyRef> {
    let (kind, encoded) = match id.strip_prefix(ENTRA_ID_PREFIX) {
        Some(rest) => (KeyKind::Entra, rest),
        None => (KeyKind::Local, id),
    };
    (!encoded.contains('='))
        .then(|| unb64(encoded))
        .flatten()
        // What the document's pattern and 1,370 characters allow: a credential id is at most
        // 1,023 bytes, a longer one is simply not found.
        .filter(|b| !b.is_empty() && b.len() <= 1027)
        .map(|credential_id| KeyRef {
            kind,
            credential_id,
        })
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "{what} must be a key id (base64url, `entra:` before it for an Entra passkey)"
            ))
        })
}

fn aaguid(s: &str) -> ApiResult<uuid::Uuid> {
    // 36 characters: only the hyphenated form (what the document's pattern allows).
    (s.len() == 36)
        .then(|| uuid::Uuid::parse_str(s).ok())
        .flatten()
        .ok_or_else(|| ApiError::invalid("`aaguid` must be a UUID with hyphens"))
}

fn read_page(
    store: &Store,
    filter: &KeyFilter,
    after: Option<&KeyRef>,
    limit: usize,
) -> ApiResult<(Vec<KeyRecord>, bool)> {
    store.list_keys(filter, after, limit).map_err(|e| match e {
        StoreError::NotFound => ApiError::new(
            ErrorCode::NotFound,
            "`after` names no key (it may have been purged): list again from the start",
        ),
        other => other.into(),
    })
}

/// Every key keygate has enrolled a credential on, for its own relying party (`kind: local`)
/// or into a user's Microsoft Entra ID account (`kind: entra`), grouped by model (AAGUID; keys
/// without one first), each group in enrollment order, a page at a time.
///
/// A key is one credential: CTAP2 keys report no serial number and a device id names a USB
/// port, so nothing keygate records tells two keys of one model apart beyond their
/// credentials (a key enrolled for two users, or locally and into Entra, appears twice). Its
/// id is the credential id, after `entra:` for an Entra passkey. `state`: `active`,
/// `quarantined` (suspected clone), `revoked`, `reset` (factory-reset at the kiosk), `lost`
/// (an Entra passkey is `active` or `lost`). `firmware` and `device` come from the
/// enrollment's audit line where it recorded them.
///
/// JSON: `limit` keys (default 100) after `after`; `next` is the cursor of the following page.
/// `format=csv`: `text/csv` (RFC 4180, CRLF, a header row) as an attachment, every key (or,
/// with `limit`, one page, the next one linked in `Link`); a cell that begins with `=`, `+`,
/// `-`, `@`, a tab or a carriage return is prefixed with `'` so that no spreadsheet runs it as
/// a formula (strip it to get the value back, e.g. a key id that begins with `-`).
#[utoipa::path(get, path = "/v1/keys", tag = "keys", params(KeysQuery),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "One page of keys, or the CSV export",
            content((KeyPage = "application/json"), (String = "text/csv")),
            headers(
                ("Content-Disposition" = String,
                    description = "CSV: `attachment; filename=\"keygate-keys.csv\"`"),
                ("Link" = String,
                    description = "CSV with `limit`, when more keys follow: the next page, `rel=\"next\"`"),
            )),
        (status = 404, description = "`not_found`: `after` names no key", body = ErrorBody),
    ))]
pub async fn list_keys(
    State(st): State<SharedState>,
    ApiQuery(q): ApiQuery<KeysQuery>,
) -> ApiResult<Response> {
    let filter = KeyFilter {
        state: q.state,
        aaguid: q.aaguid.as_deref().map(aaguid).transpose()?,
        kind: q.kind,
    };
    let after = q
        .after
        .as_deref()
        .map(|a| key_ref(a, "`after`"))
        .transpose()?;
    if q.limit.is_some_and(|l| l == 0 || l > MAX_LIMIT) {
        return Err(ApiError::invalid(format!("`limit` must be 1-{MAX_LIMIT}")));
    }
    if q.format == Some(KeysFormat::Csv) {
        return csv::csv_response(&st.store, filter, after, q.limit);
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT) as usize;
    let (keys, more) = read_page(&st.store, &filter, after.as_ref(), limit)?;
    let next = more
        .then(|| keys.last().map(|k| key_id_string(&k.key_ref())))
        .flatten();
    let keys = keys.iter().map(KeyEntry::new).collect();
    Ok(Json(KeyPage { keys, next }).into_response())
}

/// Mark a key lost, audited as `credential.revoked` (reason `lost`). A local credential is
/// revoked (`state_reason: lost`). An Entra passkey is first deleted from the user's Microsoft
/// Entra ID account through Graph, so that the key no longer signs in there, then kept here as
/// `lost`; when Graph fails (an `entra_*` error, with `key_state`), nothing changes here and
/// the call can be repeated. Idempotent: a key already lost is answered as it is. Only `lost`
/// can be set: another state answers `key_state_not_settable`.
#[utoipa::path(patch, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path,
        description = "Key id (its credential id, base64url without padding; `entra:` before it for an Entra passkey)",
        pattern = r"^(?:entra:)?(?:(?:[A-Za-z0-9_-]{4})+(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?|[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])$",
        min_length = 2, max_length = 1370)),
    request_body = KeyUpdate,
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The key, lost", body = KeyBody),
        (status = 400, description = "`key_state_not_settable`: a state other than `lost`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such key; `entra_user_not_found`", body = ErrorBody),
        (status = 429, description = "`entra_throttled` (with `retry_after`)", body = ErrorBody),
        (status = 501, description = "`entra_not_configured`: an Entra passkey, without `[entra]`", body = ErrorBody),
        (status = 502, description = "`entra_auth_failed`, `entra_forbidden`", body = ErrorBody),
        (status = 503, description = "`entra_unavailable`", body = ErrorBody),
    ))]
pub async fn update_key(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<KeyUpdate>,
) -> ApiResult<Json<KeyBody>> {
    let key = key_ref(&id, "the key id")?;
    if body.state != KeyState::Lost {
        return Err(ApiError::new(
            ErrorCode::KeyStateNotSettable,
            format!(
                "a key cannot be set `{}`: only `lost` can be set (a key is revoked by its \
                 user or an admin, reset at the kiosk, released from quarantine by an admin)",
                body.state.as_str()
            ),
        )
        .with("allowed", serde_json::json!(["lost"])));
    }
    let (key, changed) = match key.kind {
        KeyKind::Local => {
            st.store
                .mark_key_lost(&key.credential_id, &caller.actor())
                .await?
        }
        KeyKind::Entra => entra_key_lost(&st, &key, &caller).await?,
    };
    if changed {
        tracing::info!(key = %id, user = %key.owner, kind = key.kind.as_str(), "key marked lost");
    }
    Ok(Json(KeyBody {
        key: KeyEntry::new(&key),
    }))
}

/// An Entra passkey reported lost: deleted from the user's Entra account (where the student
/// signs in), then marked lost here. Graph first: a key marked lost here but still registered
/// in Entra would still sign in. Graph answers a method already gone as deleted, so a repeat
/// after a failed local write completes it.
async fn entra_key_lost(
    st: &SharedState,
    key: &KeyRef,
    caller: &Caller,
) -> ApiResult<(KeyRecord, bool)> {
    let current = st.store.get_key(key)?.ok_or_else(ApiError::not_found)?;
    if current.state == KeyState::Lost {
        return Ok((current, false));
    }
    let entra = st
        .entra
        .as_ref()
        .ok_or_else(|| ApiError::from(EntraError::NotConfigured))?;
    let place = current
        .entra
        .as_ref()
        .ok_or_else(|| ApiError::internal("an Entra passkey without its Entra facts"))?;
    if let Err(e) = entra.delete_fido2(&place.upn, &place.method_id).await {
        tracing::warn!(user = %current.owner, upn = %place.upn, method_id = %place.method_id,
            error = %e, "a lost Entra passkey could not be deleted from Entra; it stays active");
        return Err(ApiError::from(e).with("key_state", current.state.as_str()));
    }
    Ok(st
        .store
        .mark_entra_key_lost(&key.credential_id, &caller.actor())
        .await?)
}
