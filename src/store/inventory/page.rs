//! The page statements of the inventory, one [`Source`] per kind of key, and the listing order
//! both share: (AAGUID group, enrollment time, credential id, kind), keys without an AAGUID
//! first. Each kind's rows come from its own index in that order (`credentials_inventory`,
//! `entra_passkeys_inventory`), so a page reads at most a page and a row of each and the
//! merge (`mod.rs`) needs no sort.
//!
//! The merge compares in Rust what the statements ordered in SQL: AAGUIDs (lowercase hex with
//! hyphens at fixed places), RFC 3339 UTC times and raw credential ids, which SQLite's BINARY
//! collation and Rust's byte order rank alike (as do PostgreSQL's text collations, for these
//! fixed-form ASCII strings; the HTTP tests run on both stores).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use uuid::Uuid;

use super::super::db::{params, Connection, OptionalExtension, Row};
use super::super::{parse_opt_time, parse_time, prepare, row, Result, StoreError};
use super::{EntraKeyFacts, KeyFilter, KeyKind, KeyRecord, KeyRef, KeyState};

/// The inventory state of a `credentials` row, in SQL (one definition for reading and for
/// filtering).
/// An Entra passkey's state: stored `active` or `lost`; a passkey of a factory-reset key is
/// stored `lost` with `state_reason: key_reset` and shown `reset`.
const ENTRA_STATE_SQL: &str =
    "CASE WHEN state = 'lost' AND state_reason = 'key_reset' THEN 'reset' ELSE state END";

const LOCAL_STATE_SQL: &str = "CASE WHEN state = 'revoked' AND state_reason = 'lost' THEN 'lost' \
    WHEN state = 'revoked' AND state_reason = 'key_reset' THEN 'reset' ELSE state END";

/// Where one kind of key is stored and how its rows read.
pub(crate) struct Source {
    pub(crate) kind: KeyKind,
    table: &'static str,
    id_col: &'static str,
    /// The columns [`Source::read`] reads, before the state.
    cols: &'static str,
    state_sql: &'static str,
    /// The audit event of the enrollment (for the device and firmware it records).
    enrolled_event: &'static str,
    read: fn(&Row<'_>) -> super::super::db::Result<KeyRow>,
}

pub(crate) const LOCAL: Source = Source {
    kind: KeyKind::Local,
    table: "credentials",
    id_col: "id",
    cols: "id, aaguid, model, attested, nickname, user_name, created_at, last_used_at, \
        state_reason",
    state_sql: LOCAL_STATE_SQL,
    enrolled_event: "credential.enrolled",
    read: local_row,
};

pub(crate) const ENTRA: Source = Source {
    kind: KeyKind::Entra,
    table: "entra_passkeys",
    id_col: "credential_id",
    cols: "credential_id, aaguid, model, attestation_level, display_name, user_name, \
        created_at, last_used_at, state_reason, rp_id, upn, method_id",
    state_sql: ENTRA_STATE_SQL,
    enrolled_event: "entra.passkey_registered",
    read: entra_row,
};

fn source(kind: KeyKind) -> &'static Source {
    match kind {
        KeyKind::Local => &LOCAL,
        KeyKind::Entra => &ENTRA,
    }
}

/// A row of either kind, as read.
pub(crate) struct KeyRow {
    kind: KeyKind,
    id: Vec<u8>,
    aaguid: Option<String>,
    model: Option<String>,
    attested: bool,
    nickname: Option<String>,
    owner: String,
    created_at: String,
    last_used_at: Option<String>,
    state_reason: Option<String>,
    state: String,
    entra: Option<EntraKeyFacts>,
}

fn local_row(r: &Row<'_>) -> super::super::db::Result<KeyRow> {
    Ok(KeyRow {
        kind: KeyKind::Local,
        id: r.get(0)?,
        aaguid: r.get(1)?,
        model: r.get(2)?,
        attested: r.get(3)?,
        nickname: r.get(4)?,
        owner: r.get(5)?,
        created_at: r.get(6)?,
        last_used_at: r.get(7)?,
        state_reason: r.get(8)?,
        state: r.get(9)?,
        entra: None,
    })
}

fn entra_row(r: &Row<'_>) -> super::super::db::Result<KeyRow> {
    let attestation_level: Option<String> = r.get(3)?;
    Ok(KeyRow {
        kind: KeyKind::Entra,
        id: r.get(0)?,
        aaguid: r.get(1)?,
        model: r.get(2)?,
        attested: attestation_level.as_deref() == Some("attested"),
        nickname: r.get(4)?,
        owner: r.get(5)?,
        created_at: r.get(6)?,
        last_used_at: r.get(7)?,
        state_reason: r.get(8)?,
        state: r.get(12)?,
        entra: Some(EntraKeyFacts {
            rp_id: r.get(9)?,
            upn: r.get(10)?,
            method_id: r.get(11)?,
            attestation_level,
        }),
    })
}

/// A key's place in the listing order.
pub(crate) struct Position {
    aaguid: Option<String>,
    created_at: String,
    id: Vec<u8>,
    kind: KeyKind,
}

impl KeyRow {
    /// The row's place in the listing order, for comparing.
    pub(crate) fn position(&self) -> (Option<&str>, &str, &[u8], KeyKind) {
        (
            self.aaguid.as_deref(),
            &self.created_at,
            &self.id,
            self.kind,
        )
    }

    pub(crate) fn position_owned(self) -> Position {
        Position {
            aaguid: self.aaguid,
            created_at: self.created_at,
            id: self.id,
            kind: self.kind,
        }
    }

    pub(crate) fn state(&self) -> Result<KeyState> {
        KeyState::parse(&self.state)
    }

    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }

    pub(crate) fn state_reason(&self) -> Option<&str> {
        self.state_reason.as_deref()
    }

    pub(crate) fn entra(&self) -> Option<&EntraKeyFacts> {
        self.entra.as_ref()
    }

    /// The record, with what the enrollment's audit line says about the key.
    pub(crate) fn into_record(self, c: &Connection) -> Result<KeyRecord> {
        let (device, firmware) =
            enrollment_facts(c, source(self.kind).enrolled_event, &self.owner, &self.id)?;
        Ok(KeyRecord {
            kind: self.kind,
            aaguid: self
                .aaguid
                .map(|s| Uuid::parse_str(&s).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()?,
            id: self.id,
            model: self.model,
            attested: self.attested,
            nickname: self.nickname,
            owner: self.owner,
            enrolled_at: parse_time(&self.created_at)?,
            last_used_at: parse_opt_time(self.last_used_at)?,
            state: KeyState::parse(&self.state)?,
            state_reason: self.state_reason,
            device,
            firmware,
            entra: self.entra,
        })
    }
}

/// The device id and firmware the enrollment line (`event`) of `id` records, if any. Reads
/// the owner's audit lines only (`audit_user`).
fn enrollment_facts(
    c: &Connection,
    event: &str,
    owner: &str,
    id: &[u8],
) -> Result<(Option<String>, Option<String>)> {
    let facts = row(
        c,
        "SELECT CAST(json_extract(detail, '$.device') AS TEXT), \
         CAST(json_extract(detail, '$.firmware') AS TEXT) FROM audit \
         WHERE user_name = ?1 AND event = ?2 AND credential_id = ?3 \
         ORDER BY seq LIMIT 1",
        params![owner, event, URL_SAFE_NO_PAD.encode(id)],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?;
    Ok(facts.unwrap_or((None, None)))
}

/// The key `key` names, if it exists.
pub(crate) fn key_row(c: &Connection, key: &KeyRef) -> Result<Option<KeyRow>> {
    let s = source(key.kind);
    Ok(row(
        c,
        &format!(
            "SELECT {}, {} FROM {} WHERE {} = ?1",
            s.cols, s.state_sql, s.table, s.id_col
        ),
        params![key.credential_id],
        s.read,
    )
    .optional()?)
}

/// How a page statement starts after the cursor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum After {
    /// From the group's start.
    Start,
    /// After the cursor's (time, id).
    Past,
    /// At or after the cursor's (time, id): rows of a kind that sorts after the cursor's.
    AtOrPast,
}

/// The statement of one [`fetch`] of `s`: keys of one AAGUID group (`aaguid IS ?1`, NULL:
/// keys without one), or with `later_groups` of the groups after `?1`; after the position
/// (`?2`, `?3`) as `after` says; of the state `?4` when `state`; at most `?5`. Each walks its
/// kind's inventory index in its order.
pub(crate) fn page_sql(s: &Source, later_groups: bool, after: After, state: bool) -> String {
    let mut clauses = vec![if later_groups {
        "aaguid > ?1"
    } else {
        "aaguid IS ?1"
    }
    .to_string()];
    match after {
        After::Start => {}
        After::Past => clauses.push(format!("(created_at, {}) > (?2, ?3)", s.id_col)),
        After::AtOrPast => clauses.push(format!("(created_at, {}) >= (?2, ?3)", s.id_col)),
    }
    if state {
        clauses.push(format!("({}) = ?4", s.state_sql));
    }
    let order = if later_groups {
        format!("aaguid, created_at, {}", s.id_col)
    } else {
        format!("created_at, {}", s.id_col)
    };
    format!(
        "SELECT {}, {} FROM {} WHERE {} ORDER BY {order} LIMIT ?5",
        s.cols,
        s.state_sql,
        s.table,
        clauses.join(" AND ")
    )
}

/// Up to `limit` keys of `s` in the group `group` after `from` (or from its start), or with
/// `later_groups` of the groups after it (see [`page_sql`]), appended to `out`.
#[allow(clippy::too_many_arguments)]
fn fetch(
    c: &Connection,
    s: &Source,
    group: Option<&str>,
    later_groups: bool,
    from: Option<&Position>,
    state: Option<KeyState>,
    limit: usize,
    out: &mut Vec<KeyRow>,
) -> Result<()> {
    let after = match from {
        None => After::Start,
        // Same (AAGUID, time, id), another kind: the kind decides.
        Some(p) if s.kind > p.kind => After::AtOrPast,
        Some(_) => After::Past,
    };
    let sql = page_sql(s, later_groups, after, state.is_some());
    let mut st = prepare(c, &sql)?;
    let rows = st.query_map(
        params![
            group,
            from.map(|p| p.created_at.as_str()),
            from.map(|p| p.id.as_slice()),
            state.map(KeyState::as_str),
            i64::try_from(limit).unwrap_or(i64::MAX),
        ],
        s.read,
    )?;
    for r in rows {
        out.push(r?);
    }
    Ok(())
}

/// Up to `want` keys of `s` matching `filter` after `from`, in listing order, into `out`
/// (empty on entry).
pub(crate) fn fetch_source(
    c: &Connection,
    s: &Source,
    filter: &KeyFilter,
    from: Option<&Position>,
    want: usize,
    out: &mut Vec<KeyRow>,
) -> Result<()> {
    match filter.aaguid.map(|a| a.to_string()) {
        Some(wanted) => {
            // A cursor from another group: before it, the whole group; after, nothing.
            let start = match from {
                None => Some(None),
                Some(p) => match p.aaguid.as_deref().cmp(&Some(wanted.as_str())) {
                    std::cmp::Ordering::Less => Some(None),
                    std::cmp::Ordering::Equal => Some(Some(p)),
                    std::cmp::Ordering::Greater => None,
                },
            };
            if let Some(start) = start {
                fetch(c, s, Some(&wanted), false, start, filter.state, want, out)?;
            }
        }
        None => {
            let group = from.and_then(|p| p.aaguid.clone());
            fetch(c, s, group.as_deref(), false, from, filter.state, want, out)?;
            if out.len() < want {
                // Every AAGUID sorts above '' (keys without one came first).
                let above = group.unwrap_or_default();
                let rest = want - out.len();
                fetch(c, s, Some(&above), true, None, filter.state, rest, out)?;
            }
        }
    }
    Ok(())
}
