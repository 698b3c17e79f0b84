//! Retention and account closure: closing and reopening a user, and the purge that removes
//! what keygate no longer needs (`keygate purge`, the daemon's daily run).
//!
//! What the purge removes, measured back from its `as_of` time:
//! - closed users past their grace period (`closed_user_grace_days`): their credentials, Entra
//!   passkey records, phones, SMS challenges and messages (history too), SMS lock state,
//!   ceremonies, kiosk-session bindings and finally the user row (display name, user handle).
//!   The audit chain is immutable and hash-linked, so entries that name the user stay until
//!   audit retention removes them; the purge appends `user.purged` naming only a pseudonym
//!   (see [`Store::user_pseudonym`]), never the name;
//! - SMS challenges (ended ones), their outbox messages and the send log older than `sms_days`,
//!   in the hot tables and their history tables (`sweep.rs`);
//! - finished ceremonies older than `ceremony_days` (hot and history);
//! - audit entries older than `audit_days`, through [`Store::purge_audit_before`], so the
//!   chain keeps verifying from an anchor; the newest entry always stays.
//!
//! Every run appends `retention.purged` with its counts (no names). Rows leave in units of at
//! most [`PURGE_BATCH`] (one closed user per unit), so the writer is never held long.

use std::collections::BTreeMap;

use super::db::{params, OptionalExtension};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::audit::insert_audit;
use super::retention_rules::{self as rules, Cutoffs};
use super::{exec, fmt_time, parse_time, prepare, NewAudit, Result, Store, StoreError};

/// At most this many rows leave in one atomic unit (audit entries too).
pub(super) const PURGE_BATCH: i64 = 1000;

/// Closed users read per round of the purge (each then purged in a unit of its own).
const USERS_PER_ROUND: i64 = 100;

/// The actor of the purge's audit entries.
pub const PURGE_ACTOR: &str = "system:retention";

/// How long each kind of record is kept (`[retention]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionWindows {
    pub sms: time::Duration,
    pub audit: time::Duration,
    pub ceremonies: time::Duration,
    pub closed_user_grace: time::Duration,
}

impl From<&crate::config::RetentionConfig> for RetentionWindows {
    fn from(r: &crate::config::RetentionConfig) -> Self {
        let days = |d: u32| time::Duration::days(i64::from(d));
        RetentionWindows {
            sms: days(r.sms_days),
            audit: days(r.audit_days),
            ceremonies: days(r.ceremony_days),
            closed_user_grace: days(r.closed_user_grace_days),
        }
    }
}

/// A user's closure (`POST /v1/users/{user}/close`).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Closure {
    pub user: String,
    #[serde(with = "time::serde::rfc3339")]
    pub closed_at: OffsetDateTime,
    /// Who closed it (`token:<id>`).
    pub closed_by: String,
}

/// A closed user the purge removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PurgedUser {
    pub user: String,
    /// What the `user.purged` audit entry names instead of the user.
    pub pseudonym: String,
    #[serde(with = "time::serde::rfc3339")]
    pub closed_at: OffsetDateTime,
    /// Rows per table.
    pub removed: BTreeMap<&'static str, u64>,
}

/// What one purge removed (or would remove, `dry_run`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PurgeReport {
    #[serde(with = "time::serde::rfc3339")]
    pub as_of: OffsetDateTime,
    pub dry_run: bool,
    /// Rows removed by age, per table (`audit` included).
    pub tables: BTreeMap<&'static str, u64>,
    pub closed_users: Vec<PurgedUser>,
    /// The `retention.purged` audit entry (none in a dry run).
    pub audit_seq: Option<i64>,
}

impl Store {
    /// Whether `user` exists and is closed.
    pub fn user_closed(&self, user: &str) -> Result<bool> {
        self.read(|c| {
            let closed: Option<Option<String>> =
                prepare(c, "SELECT closed_at FROM users WHERE name = ?1")?
                    .query_row(params![user], |r| r.get(0))
                    .optional()?;
            Ok(matches!(closed, Some(Some(_))))
        })
    }

    /// The closure of `user`, None while open; NotFound for an unknown user.
    pub fn user_closure(&self, user: &str) -> Result<Option<Closure>> {
        self.read(|c| read_closure(c, user))
    }

    /// Close `user` (idempotent: closing a closed user answers the first closure and audits
    /// nothing). Pending SMS challenges end with it; credentials stay until the purge, so a
    /// reopened account is whole again. Audited as `user.closed`.
    pub async fn close_user(&self, user: &str, actor: &str) -> Result<Closure> {
        let (user, actor) = (user.to_string(), actor.to_string());
        self.write(move |c| {
            if let Some(closure) = read_closure(c, &user)? {
                return Ok(closure);
            }
            exec(
                c,
                "UPDATE users SET closed_at = keygate_now(), closed_by = ?2 WHERE name = ?1",
                params![user, actor],
            )?;
            let ended = exec(
                c,
                "UPDATE sms_challenges SET state = 'cancelled', code_enc = NULL \
                 WHERE user_name = ?1 AND state = 'pending'",
                params![user],
            )?;
            insert_audit(
                c,
                &NewAudit::new("user.closed", &actor)
                    .user(&user)
                    .detail(serde_json::json!({ "sms_challenges_cancelled": ended })),
            )?;
            read_closure(c, &user)?.ok_or(StoreError::NotFound)
        })
        .await
    }

    /// Reopen a closed `user` before the purge took it; returns whether it was closed (a
    /// reopened user is audited as `user.reopened`). NotFound for an unknown (or purged) user.
    pub async fn reopen_user(&self, user: &str, actor: &str) -> Result<bool> {
        let (user, actor) = (user.to_string(), actor.to_string());
        self.write(move |c| {
            if read_closure(c, &user)?.is_none() {
                return Ok(false);
            }
            exec(
                c,
                "UPDATE users SET closed_at = NULL, closed_by = NULL WHERE name = ?1",
                params![user],
            )?;
            insert_audit(c, &NewAudit::new("user.reopened", &actor).user(&user))?;
            Ok(true)
        })
        .await
    }

    /// The pseudonym the purge's audit entry records for `user`: hex HMAC-SHA256 of the name
    /// under a key derived from the data dir's audit head key (the head key's MAC of seq -1,
    /// which no head ever has, and a fixed tag). Stable for a data dir, so an auditor holding
    /// a name can ask an operator to confirm a match; not reversible without the key.
    pub fn user_pseudonym(&self, user: &str) -> String {
        let tag: [u8; 32] = Sha256::digest(b"keygate user pseudonym v1").into();
        let key = self.audit.key.sign(-1, &tag);
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes a key of any length");
        mac.update(user.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Apply retention as of `as_of` (see the module). With `dry_run` nothing is removed and
    /// nothing audited: the report counts what would go.
    pub async fn purge(
        &self,
        as_of: OffsetDateTime,
        dry_run: bool,
        w: RetentionWindows,
    ) -> Result<PurgeReport> {
        let cut = Cutoffs::new(as_of, &w);
        let mut report = PurgeReport {
            as_of,
            dry_run,
            tables: BTreeMap::new(),
            closed_users: Vec::new(),
            audit_seq: None,
        };
        self.purge_closed_users(&cut, dry_run, &mut report).await?;
        for rule in rules::WINDOW_RULES {
            if dry_run {
                for (table, n) in self.read(|c| rules::count_due(c, rule, &cut))? {
                    *report.tables.entry(table).or_default() += n;
                }
                continue;
            }
            loop {
                let cut = cut.clone();
                let (counts, full) = self
                    .write(move |c| rules::delete_due(c, rule, &cut))
                    .await?;
                for (table, n) in counts {
                    *report.tables.entry(table).or_default() += n;
                }
                if !full {
                    break;
                }
            }
        }
        let audit = self.purge_old_audit(&cut.audit, dry_run).await?;
        report.tables.insert("audit", audit);
        if !dry_run {
            let detail = serde_json::json!({
                "as_of": fmt_time(as_of),
                "tables": report.tables,
                "closed_users": report.closed_users.len(),
            });
            report.audit_seq = Some(
                self.append_audit(&NewAudit::new("retention.purged", PURGE_ACTOR).detail(detail))
                    .await?,
            );
        }
        Ok(report)
    }

    async fn purge_closed_users(
        &self,
        cut: &Cutoffs,
        dry_run: bool,
        report: &mut PurgeReport,
    ) -> Result<()> {
        let mut after = String::new();
        loop {
            let due = self.read(|c| {
                let mut st = prepare(
                    c,
                    "SELECT name, closed_at FROM users WHERE closed_at IS NOT NULL \
                     AND closed_at < ?1 AND name > ?2 ORDER BY name LIMIT ?3",
                )?;
                let rows = st
                    .query_map(params![cut.closed_users, after, USERS_PER_ROUND], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                    })?;
                rows.collect::<super::db::Result<Vec<_>>>()
                    .map_err(StoreError::from)
            })?;
            let Some((last, _)) = due.last() else {
                return Ok(());
            };
            after = last.clone();
            let round = due.len() as i64;
            for (user, closed_at) in due {
                let pseudonym = self.user_pseudonym(&user);
                let removed = if dry_run {
                    self.read(|c| rules::count_user(c, &user))?
                } else {
                    let (u, p, cut_at) =
                        (user.clone(), pseudonym.clone(), cut.closed_users.clone());
                    match self
                        .write(move |c| rules::delete_user(c, &u, &p, &cut_at))
                        .await?
                    {
                        Some(removed) => removed,
                        // Reopened meanwhile.
                        None => continue,
                    }
                };
                report.closed_users.push(PurgedUser {
                    user,
                    pseudonym,
                    closed_at: parse_time(&closed_at)?,
                    removed,
                });
            }
            if round < USERS_PER_ROUND {
                return Ok(());
            }
        }
    }

    /// Audit entries before `cut` leave in prefixes of at most [`PURGE_BATCH`], each with its
    /// anchor; the newest entry always stays. Returns how many went (or would go).
    async fn purge_old_audit(&self, cut: &str, dry_run: bool) -> Result<u64> {
        let (first, target) = self.read(|c| {
            let first: Option<i64> =
                prepare(c, "SELECT min(seq) FROM audit")?.query_row([], |r| r.get(0))?;
            let head: Option<i64> =
                prepare(c, "SELECT max(seq) FROM audit")?.query_row([], |r| r.get(0))?;
            let last_old: Option<i64> = prepare(c, "SELECT max(seq) FROM audit WHERE at < ?1")?
                .query_row(params![cut], |r| r.get(0))?;
            Ok((
                first,
                last_old.zip(head).map(|(old, head)| (old + 1).min(head)),
            ))
        })?;
        let (Some(first), Some(target)) = (first, target) else {
            return Ok(0);
        };
        if dry_run {
            return self.read(|c| {
                let n: i64 = prepare(c, "SELECT count(*) FROM audit WHERE seq < ?1")?
                    .query_row(params![target], |r| r.get(0))?;
                Ok(n as u64)
            });
        }
        let mut total = 0;
        let mut next = first;
        while next < target {
            next = (next + PURGE_BATCH).min(target);
            total += self.purge_audit_before(next).await?;
        }
        Ok(total)
    }
}

fn read_closure(c: &super::db::Connection, user: &str) -> Result<Option<Closure>> {
    let row: Option<(Option<String>, Option<String>)> =
        prepare(c, "SELECT closed_at, closed_by FROM users WHERE name = ?1")?
            .query_row(params![user], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
    match row {
        None => Err(StoreError::NotFound),
        Some((Some(at), by)) => Ok(Some(Closure {
            user: user.to_string(),
            closed_at: parse_time(&at)?,
            closed_by: by.unwrap_or_default(),
        })),
        Some((None, _)) => Ok(None),
    }
}

/// How long after start the daemon's first purge runs (start-up stays quick), then how often.
const FIRST_PURGE_AFTER: std::time::Duration = std::time::Duration::from_secs(600);
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl Store {
    /// Run [`Store::purge`] as of the store's clock once a day for as long as the runtime
    /// runs (the daemon starts it). A run refused by a full disk is tried again the next day.
    pub fn spawn_daily_purge(&self, windows: RetentionWindows) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(FIRST_PURGE_AFTER).await;
            loop {
                match store.purge(store.now(), false, windows).await {
                    Ok(r) => tracing::info!(
                        tables = ?r.tables,
                        closed_users = r.closed_users.len(),
                        "retention purge"
                    ),
                    Err(e) => tracing::error!(error = %e, "retention purge"),
                }
                tokio::time::sleep(PURGE_EVERY).await;
            }
        })
    }
}
