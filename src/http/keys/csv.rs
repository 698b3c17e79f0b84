//! `GET /v1/keys?format=csv`: the inventory as RFC 4180 CSV for the service desk's
//! spreadsheet, one page (with `limit`) or every key streamed a chunk at a time.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::super::error::{ApiError, ApiResult};
use super::{key_id_string, read_page, KeyEntry};
use crate::store::{KeyFilter, KeyRecord, KeyRef, Store};

/// Keys read from the store per chunk of a whole-inventory CSV export.
const CSV_CHUNK: usize = 500;

const CSV_FILE: &str = "attachment; filename=\"keygate-keys.csv\"";

/// With `limit`, one page (the next linked in `Link`); without, every key, streamed a chunk at
/// a time. The first chunk is read before answering, so a bad cursor or a store failure is
/// still an error answer.
pub(super) fn csv_response(
    store: &Store,
    filter: KeyFilter,
    after: Option<KeyRef>,
    limit: Option<u32>,
) -> ApiResult<Response> {
    let chunk = limit.map_or(CSV_CHUNK, |l| l as usize);
    let (keys, more) = read_page(store, &filter, after.as_ref(), chunk)?;
    let next = more.then(|| keys.last().map(KeyRecord::key_ref)).flatten();
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
                    let next = more.then(|| keys.last().map(KeyRecord::key_ref)).flatten();
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
fn next_link(filter: &KeyFilter, next: &KeyRef, limit: u32) -> String {
    let mut query = format!("format=csv&limit={limit}&after={}", key_id_string(next));
    if let Some(s) = filter.state {
        query.push_str(&format!("&state={}", s.as_str()));
    }
    if let Some(a) = filter.aaguid {
        query.push_str(&format!("&aaguid={a}"));
    }
    if let Some(k) = filter.kind {
        query.push_str(&format!("&kind={}", k.as_str()));
    }
    format!("</v1/keys?{query}>; rel=\"next\"")
}

const CSV_HEADER: [&str; 18] = [
    "id",
    "kind",
    "credential_id",
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
    "rp_id",
    "entra_upn",
    "entra_method_id",
];

fn csv_rows(keys: &[KeyRecord]) -> String {
    keys.iter()
        .map(|k| {
            let e = KeyEntry::new(k);
            let opt = |v: Option<String>| v.unwrap_or_default();
            let (upn, method_id) = e.entra.map(|x| (x.upn, x.method_id)).unwrap_or_default();
            csv_line(&[
                e.id,
                e.kind.as_str().to_string(),
                e.credential_id,
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
                opt(e.rp_id),
                upn,
                method_id,
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
