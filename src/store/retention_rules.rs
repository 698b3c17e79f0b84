//! The purge's SQL (`retention.rs`): which rows are past their window, and everything the
//! store holds about one closed user. Counting (a dry run) and deleting read the same
//! selections, so a dry run reports exactly what a real run at that moment would remove.

use std::collections::BTreeMap;

use super::db::{params, Connection};
use time::OffsetDateTime;

use super::audit::insert_audit;
use super::retention::{RetentionWindows, PURGE_ACTOR, PURGE_BATCH};
use super::{exec, fmt_time, prepare, NewAudit, Result};

/// The purge's limits: SMS tables keep Unix milliseconds, the others RFC 3339 text.
#[derive(Debug, Clone)]
pub(super) struct Cutoffs {
    pub sms_ms: i64,
    pub ceremonies: String,
    pub audit: String,
    pub closed_users: String,
}

impl Cutoffs {
    pub fn new(as_of: OffsetDateTime, w: &RetentionWindows) -> Cutoffs {
        let ms =
            |t: OffsetDateTime| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        Cutoffs {
            sms_ms: ms(as_of - w.sms),
            ceremonies: fmt_time(as_of - w.ceremonies),
            audit: fmt_time(as_of - w.audit),
            closed_users: fmt_time(as_of - w.closed_user_grace),
        }
    }
}

/// Which cutoff a rule's `?1` is.
#[derive(Debug, Clone, Copy)]
pub(super) enum Cut {
    SmsMs,
    Ceremonies,
}

/// Rows of `table` past their window: `due` selects their rowids (`?1` the cutoff, `?2` the
/// most to select; i64::MAX for all). `children` (table, SQL naming the due parents' ids by `{due}`)
/// go first, in the same unit: the outbox references its challenge.
pub(super) struct WindowRule {
    pub table: &'static str,
    pub due: &'static str,
    pub cut: Cut,
    pub children: Option<(&'static str, &'static str)>,
}

pub(super) const WINDOW_RULES: &[WindowRule] = &[
    WindowRule {
        table: "sms_challenges",
        due: "SELECT rowid FROM sms_challenges WHERE created_at < ?1 \
              AND (state != 'pending' OR expires_at <= ?1) ORDER BY created_at LIMIT ?2",
        cut: Cut::SmsMs,
        children: Some((
            "sms_outbox",
            "challenge_id IN (SELECT id FROM sms_challenges WHERE rowid IN ({due}))",
        )),
    },
    WindowRule {
        table: "sms_challenges_history",
        due: "SELECT rowid FROM sms_challenges_history WHERE created_at < ?1 \
              ORDER BY created_at LIMIT ?2",
        cut: Cut::SmsMs,
        children: None,
    },
    WindowRule {
        table: "sms_outbox_history",
        due: "SELECT rowid FROM sms_outbox_history WHERE created_at < ?1 \
              ORDER BY created_at LIMIT ?2",
        cut: Cut::SmsMs,
        children: None,
    },
    WindowRule {
        table: "sms_sends",
        due: "SELECT rowid FROM sms_sends WHERE at < ?1 ORDER BY at LIMIT ?2",
        cut: Cut::SmsMs,
        children: None,
    },
    WindowRule {
        table: "sms_sends_history",
        due: "SELECT rowid FROM sms_sends_history WHERE at < ?1 ORDER BY at LIMIT ?2",
        cut: Cut::SmsMs,
        children: None,
    },
    WindowRule {
        table: "ceremonies",
        due: "SELECT rowid FROM ceremonies WHERE updated_at < ?1 \
              AND state IN ('succeeded', 'failed', 'cancelled') ORDER BY updated_at LIMIT ?2",
        cut: Cut::Ceremonies,
        children: None,
    },
    WindowRule {
        table: "ceremonies_history",
        due: "SELECT rowid FROM ceremonies_history WHERE updated_at < ?1 \
              ORDER BY updated_at LIMIT ?2",
        cut: Cut::Ceremonies,
        children: None,
    },
];

fn cut_param(rule: &WindowRule, cut: &Cutoffs) -> super::db::Value {
    match rule.cut {
        Cut::SmsMs => cut.sms_ms.into(),
        Cut::Ceremonies => cut.ceremonies.clone().into(),
    }
}

/// How many rows `rule` would remove now, per table.
pub(super) fn count_due(
    c: &Connection,
    rule: &WindowRule,
    cut: &Cutoffs,
) -> Result<Vec<(&'static str, u64)>> {
    let p = cut_param(rule, cut);
    let count = |table: &str, pred: &str| -> Result<u64> {
        let sql = format!("SELECT count(*) FROM {table} WHERE {pred}");
        let n: i64 = prepare(c, &sql)?.query_row(params![p, i64::MAX], |r| r.get(0))?;
        Ok(n as u64)
    };
    let mut out = Vec::new();
    if let Some((child, pred)) = rule.children {
        out.push((child, count(child, &pred.replace("{due}", rule.due))?));
    }
    out.push((
        rule.table,
        count(rule.table, &format!("rowid IN ({})", rule.due))?,
    ));
    Ok(out)
}

/// Remove at most [`PURGE_BATCH`] rows of `rule` (with their children); returns the counts
/// and whether the batch was full (more may be due).
pub(super) fn delete_due(
    c: &Connection,
    rule: &WindowRule,
    cut: &Cutoffs,
) -> Result<(Vec<(&'static str, u64)>, bool)> {
    let p = cut_param(rule, cut);
    let mut out = Vec::new();
    if let Some((child, pred)) = rule.children {
        let sql = format!(
            "DELETE FROM {child} WHERE {}",
            pred.replace("{due}", rule.due)
        );
        out.push((child, exec(c, &sql, params![p, PURGE_BATCH])? as u64));
    }
    let sql = format!("DELETE FROM {} WHERE rowid IN ({})", rule.table, rule.due);
    let n = exec(c, &sql, params![p, PURGE_BATCH])? as u64;
    out.push((rule.table, n));
    Ok((out, n == PURGE_BATCH as u64))
}

/// Everything about one user, children before the rows they reference (`?1` the user). The
/// user row itself goes last ([`delete_user`]).
const USER_ROWS: &[(&str, &str)] = &[
    (
        "sms_outbox",
        "challenge_id IN (SELECT id FROM sms_challenges WHERE user_name = ?1)",
    ),
    ("sms_challenges", "user_name = ?1"),
    (
        "sms_outbox_history",
        "challenge_id IN (SELECT id FROM sms_challenges_history WHERE user_name = ?1)",
    ),
    ("sms_challenges_history", "user_name = ?1"),
    ("sms_user_state", "user_name = ?1"),
    ("phones", "user_name = ?1"),
    ("credentials", "user_name = ?1"),
    ("entra_passkeys", "user_name = ?1"),
    ("ceremonies", "user_name = ?1"),
    ("ceremonies_history", "user_name = ?1"),
];

/// Kiosk sessions bound to the user keep running unbound (they expire on their own).
const KIOSK_BOUND: &str = "bound_user = ?1";

/// What [`delete_user`] would remove now.
pub(super) fn count_user(c: &Connection, user: &str) -> Result<BTreeMap<&'static str, u64>> {
    let mut out = BTreeMap::new();
    let tables = USER_ROWS
        .iter()
        .copied()
        .chain([("kiosk_sessions", KIOSK_BOUND), ("users", "name = ?1")]);
    for (table, pred) in tables {
        let n: i64 = prepare(c, &format!("SELECT count(*) FROM {table} WHERE {pred}"))?
            .query_row(params![user], |r| r.get(0))?;
        out.insert(table, n as u64);
    }
    Ok(out)
}

/// Remove `user` and everything about them if they are still closed since before
/// `closed_before` (None when not: reopened meanwhile), and append `user.purged` naming only
/// `pseudonym`.
pub(super) fn delete_user(
    c: &Connection,
    user: &str,
    pseudonym: &str,
    closed_before: &str,
) -> Result<Option<BTreeMap<&'static str, u64>>> {
    let due: i64 = prepare(
        c,
        "SELECT count(*) FROM users WHERE name = ?1 AND closed_at IS NOT NULL AND closed_at < ?2",
    )?
    .query_row(params![user, closed_before], |r| r.get(0))?;
    if due == 0 {
        return Ok(None);
    }
    let mut out = BTreeMap::new();
    for (table, pred) in USER_ROWS {
        let n = exec(
            c,
            &format!("DELETE FROM {table} WHERE {pred}"),
            params![user],
        )?;
        out.insert(*table, n as u64);
    }
    let unbound = exec(
        c,
        &format!(
            "UPDATE kiosk_sessions SET bound_user = NULL, bound_display_name = NULL, \
             bound_at = NULL WHERE {KIOSK_BOUND}"
        ),
        params![user],
    )?;
    out.insert("kiosk_sessions", unbound as u64);
    let n = exec(c, "DELETE FROM users WHERE name = ?1", params![user])?;
    out.insert("users", n as u64);
    insert_audit(
        c,
        &NewAudit::new("user.purged", PURGE_ACTOR).detail(serde_json::json!({
            "pseudonym": pseudonym,
            "removed": out,
        })),
    )?;
    Ok(Some(out))
}
