//! The key inventory (admin, `store/inventory.rs`): `GET /v1/keys` lists every key keygate
//! has enrolled a credential on, as JSON pages or as CSV for the service desk's spreadsheet;
//! `PATCH /v1/keys/{id}` marks a key lost, which revokes its credential.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::bodies::ErrorBody;
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::SharedState;
use crate::auth::Caller;
use crate::ceremony::client::{b64, unb64};
use crate::store::{fmt_time, KeyFilter, KeyRecord, KeyState, Store, StoreError};

pub fn admin_routes() -> Router<SharedState> {
    Router::new()
        .route("/v1/keys", get(list_keys))
        .route("/v1/keys/{id}", patch(update_key))
}

/// Keys per JSON page unless `limit` says otherwise, and at most.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// Keys read from the store per chunk of a whole-inventory CSV export.
const CSV_CHUNK: usize = 500;

const CSV_FILE: &str = "attachment; filename=\"keygate-keys.csv\"";

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
    /// The cursor: the `next` of the previous page (the id of its last key).
    #[serde(default)]
    #[param(
        pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$",
        min_length = 2,
        max_length = 1364
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

/// One key of the inventory: one credential (see `GET /v1/keys`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyEntry {
    /// The key id: its credential id, base64url without padding.
    pub id: String,
    /// The model's AAGUID from the attested credential data (null: the key gave none).
    pub aaguid: Option<uuid::Uuid>,
    /// The model's name, when its AAGUID is known.
    pub model: Option<String>,
    /// The firmware version the key reported (GetInfo) at enrollment, where recorded.
    pub firmware: Option<String>,
    /// The device id the key was enrolled on (`sim:<n>`, `hid:<path>`: a USB port, not a
    /// key), where recorded.
    pub device: Option<String>,
    /// The attestation chained to a trusted CA at enrollment.
    pub attested: bool,
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
}

impl KeyEntry {
    fn new(k: &KeyRecord) -> KeyEntry {
        let model = k
            .aaguid
            .as_ref()
            .and_then(crate::device::models::model_name)
            .or_else(|| k.model.clone());
        let last_used = k.last_used_at.map(fmt_time);
        KeyEntry {
            id: b64(&k.id),
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

fn key_id(id: &str, what: &str) -> ApiResult<Vec<u8>> {
    (!id.contains('='))
        .then(|| unb64(id))
        .flatten()
        .filter(|b| !b.is_empty() && b.len() <= 1023)
        .ok_or_else(|| ApiError::invalid(format!("{what} must be a key id (base64url)")))
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
    after: Option<&[u8]>,
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

/// Every key keygate has enrolled a credential on, grouped by model (AAGUID; keys without one
/// first), each group in enrollment order, a page at a time.
///
/// A key is one credential, its id the credential id: CTAP2 keys report no serial number and a
/// device id names a USB port, so nothing keygate records tells two keys of one model apart
/// beyond their credentials (a key enrolled for two users appears twice). `state`: `active`,
/// `quarantined` (suspected clone), `revoked`, `reset` (factory-reset at the kiosk), `lost`.
/// `firmware` and `device` come from the enrollment's audit line where it recorded them.
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
    };
    let after = q
        .after
        .as_deref()
        .map(|a| key_id(a, "`after`"))
        .transpose()?;
    if q.limit.is_some_and(|l| l == 0 || l > MAX_LIMIT) {
        return Err(ApiError::invalid(format!("`limit` must be 1-{MAX_LIMIT}")));
    }
    if q.format == Some(KeysFormat::Csv) {
        return csv_response(&st.store, filter, after, q.limit);
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT) as usize;
    let (keys, more) = read_page(&st.store, &filter, after.as_deref(), limit)?;
    let next = more.then(|| keys.last().map(|k| b64(&k.id))).flatten();
    let keys = keys.iter().map(KeyEntry::new).collect();
    Ok(Json(KeyPage { keys, next }).into_response())
}

/// Mark a key lost: its credential is revoked (`state_reason: lost`) and the change audited
/// (`credential.revoked`, reason `lost`). Idempotent: a key already lost is answered as it is.
/// Only `lost` can be set: another state answers `key_state_not_settable`.
#[utoipa::path(patch, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "Key id (its credential id, base64url without padding)",
        pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$",
        min_length = 2, max_length = 1364)),
    request_body = KeyUpdate,
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The key, lost", body = KeyBody),
        (status = 400, description = "`key_state_not_settable`: a state other than `lost`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such key", body = ErrorBody),
    ))]
pub async fn update_key(
    State(st): State<SharedState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<KeyUpdate>,
) -> ApiResult<Json<KeyBody>> {
    let raw = key_id(&id, "the key id")?;
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
    let (key, changed) = st.store.mark_key_lost(&raw, &caller.actor()).await?;
    if changed {
        tracing::info!(key = %id, user = %key.owner, "key marked lost");
    }
    Ok(Json(KeyBody {
        key: KeyEntry::new(&key),
    }))
}

/// `format=csv`: with `limit`, one page (the next linked in `Link`); without, every key,
/// streamed a chunk at a time. The first chunk is read before answering, so a bad cursor
/// or a store failure is still an error answer.
fn csv_response(
    store: &Store,
    filter: KeyFilter,
    after: Option<Vec<u8>>,
    limit: Option<u32>,
) -> ApiResult<Response> {
    let chunk = limit.map_or(CSV_CHUNK, |l| l as usize);
    let (keys, more) = read_page(store, &filter, after.as_deref(), chunk)?;
    let next = more.then(|| keys.last().map(|k| k.id.clone())).flatten();
    let mut first = csv_line(&CSV_HEADER.map(String::from));
    first.push_str(&csv_rows(&keys));
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static(CSV_FILE),
    );
    let Some(next) = next else {
        return Ok((headers, first).into_response());
    };
    if let Some(limit) = limit {
        let link = next_link(&filter, &next, limit);
        headers.insert(
            header::LINK,
            HeaderValue::from_str(&link).map_err(ApiError::internal)?,
        );
        return Ok((headers, first).into_response());
    }
    let store = store.clone();
    let rest = futures::stream::unfold(Some(next), move |cursor| {
        let (store, filter) = (store.clone(), filter.clone());
        async move {
            let after = cursor?;
            match store.list_keys(&filter, Some(&after), CSV_CHUNK) {
                Ok((keys, more)) => {
                    let next = more.then(|| keys.last().map(|k| k.id.clone())).flatten();
                    Some((Ok(Bytes::from(csv_rows(&keys))), next))
                }
                Err(e) => {
                    // The answer has begun: cutting it short is the only way left to fail.
                    tracing::error!(error = %e, "key inventory export cut short");
                    Some((Err(std::io::Error::other("the export failed")), None))
                }
            }
        }
    });
    let body = futures::stream::once(async move { Ok(Bytes::from(first)) }).chain(rest);
    Ok((headers, Body::from_stream(body)).into_response())
}

/// The CSV page after `next` with the same filter and size.
fn next_link(filter: &KeyFilter, next: &[u8], limit: u32) -> String {
    let mut query = format!("format=csv&limit={limit}&after={}", b64(next));
    if let Some(s) = filter.state {
        query.push_str(&format!("&state={}", s.as_str()));
    }
    if let Some(a) = filter.aaguid {
        query.push_str(&format!("&aaguid={a}"));
    }
    format!("</v1/keys?{query}>; rel=\"next\"")
}

const CSV_HEADER: [&str; 13] = [
    "id",
    "aaguid",
    "model",
    "firmware",
    "device",
    "attested",
    "nickname",
    "owners",
    "first_seen",
    "last_seen",
    "last_used",
    "state",
    "state_reason",
];

fn csv_rows(keys: &[KeyRecord]) -> String {
    keys.iter()
        .map(|k| {
            let e = KeyEntry::new(k);
            let opt = |v: Option<String>| v.unwrap_or_default();
            csv_line(&[
                e.id,
                opt(e.aaguid.map(|a| a.to_string())),
                opt(e.model),
                opt(e.firmware),
                opt(e.device),
                e.attested.to_string(),
                opt(e.nickname),
                e.owners.join("; "),
                e.first_seen,
                e.last_seen,
                opt(e.last_used),
                e.state.as_str().to_string(),
                opt(e.state_reason),
            ])
        })
        .collect()
}

/// One CSV record (RFC 4180): cells joined by commas, ended by CRLF; each cell made safe for
/// spreadsheets ([`csv_cell`]).
fn csv_line(cells: &[String]) -> String {
    let mut line = cells
        .iter()
        .map(|c| csv_cell(c))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// A cell that a spreadsheet would run as a formula (it begins with `=`, `+`, `-`, `@`, a tab
/// or a carriage return: OWASP's CSV injection list) gets a leading `'`; a cell with a comma,
/// a quote or a line break is quoted, its quotes doubled (RFC 4180).
fn csv_cell(value: &str) -> String {
    let guarded = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if guarded.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell(""), "");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_cell("=1+1"), "'=1+1");
        assert_eq!(csv_cell("+31"), "'+31");
        assert_eq!(csv_cell("-x"), "'-x");
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("\tx"), "'\tx");
        assert_eq!(csv_cell("=A1,\"b\""), "\"'=A1,\"\"b\"\"\"");
        assert_eq!(csv_cell("a=b"), "a=b");
        assert_eq!(
            csv_line(&["a".into(), "-b".into(), "c,d".into()]),
            "a,'-b,\"c,d\"\r\n"
        );
    }
}
