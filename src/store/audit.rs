//! The audit log: append-only lines (the schema refuses UPDATE and DELETE), each stamped by
//! the store with its sequence number and time and chained to the one before by its hash
//! (`audit_chain.rs`); the newest-first listing, the signed head and the retention purge.

use super::db::{params, Connection, OptionalExtension};
use serde::Serialize;
use time::OffsetDateTime;

use super::audit_writer::{self, broken_link, read_head};
use super::{exec, fmt_time, parse_time, prepare, Result, Store, StoreError};

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct AuditEvent {
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub event: String,
    pub user: Option<String>,
    pub credential_id: Option<String>,
    pub ceremony_id: Option<String>,
    /// Who caused it: `token:<id>`, `system`, ...
    pub actor: String,
    pub detail: serde_json::Value,
}

/// An audit line to append (the store assigns `seq` and `at`).
#[derive(Debug, Clone, Default)]
pub struct NewAudit {
    pub event: String,
    pub user: Option<String>,
    pub credential_id: Option<String>,
    pub ceremony_id: Option<String>,
    pub actor: String,
    pub detail: serde_json::Value,
}

impl NewAudit {
    pub fn new(event: &str, actor: &str) -> Self {
        NewAudit {
            event: event.to_string(),
            actor: actor.to_string(),
            detail: serde_json::Value::Null,
            ..Default::default()
        }
    }
    pub fn user(mut self, u: &str) -> Self {
        self.user = Some(u.to_string());
        self
    }
    pub fn credential(mut self, id: &str) -> Self {
        self.credential_id = Some(id.to_string());
        self
    }
    pub fn ceremony(mut self, id: &str) -> Self {
        self.ceremony_id = Some(id.to_string());
        self
    }
    pub fn detail(mut self, d: serde_json::Value) -> Self {
        self.detail = d;
        self
    }
}

/// Run `sql`, a conditional write, and append `audit` in the same transaction only when it
/// changed a row (a line says what happened: nothing is audited when nothing changed).
/// Returns whether it changed a row.
pub(super) fn exec_audited(
    c: &Connection,
    sql: &str,
    p: impl super::db::Params,
    audit: &NewAudit,
) -> Result<bool> {
    let changed = exec(c, sql, p)? > 0;
    if changed {
        insert_audit(c, audit)?;
    }
    Ok(changed)
}

/// Append `a` to the chain inside the open transaction on `tx` (the one write path of every
/// audit line: see `audit_writer.rs`); returns its seq.
pub(super) fn insert_audit(tx: &Connection, a: &NewAudit) -> Result<i64> {
    audit_writer::append(tx, a)
}

/// The chain's newest entry and its signature under the head key (`audit_chain.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditHead {
    /// 0 while the log is empty.
    pub seq: i64,
    pub hash: [u8; 32],
    pub signature: [u8; 32],
    /// The entry's time; None while the log is empty.
    pub at: Option<OffsetDateTime>,
}

impl Store {
    pub async fn append_audit(&self, a: &NewAudit) -> Result<i64> {
        let a = a.clone();
        self.write(move |c| insert_audit(c, &a)).await
    }

    /// The signed head: the newest committed entry (or, before any, the genesis as seq 0).
    pub fn audit_head(&self) -> Result<AuditHead> {
        let (head, at) = self.read(|c| {
            let head = read_head(c)?;
            let at: Option<String> = prepare(c, "SELECT at FROM audit WHERE seq = ?1")?
                .query_row(params![head.seq], |r| r.get(0))
                .optional()?;
            Ok((head, at))
        })?;
        Ok(AuditHead {
            seq: head.seq,
            hash: head.hash,
            signature: self.audit.key.sign(head.seq, &head.hash),
            at: at.as_deref().map(parse_time).transpose()?,
        })
    }

    /// Remove the entries before `seq` (retention), recording in the same transaction the
    /// anchor verification starts from: `seq` and its predecessor's hash. Refused when `seq` is
    /// past the newest entry (the head stays, so the chain always has an end to check) or when
    /// the chain does not link at `seq`. Returns how many entries went.
    pub async fn purge_audit_before(&self, seq: i64) -> Result<u64> {
        let chain = self.audit.clone();
        self.write(move |c| {
            let first: Option<i64> =
                prepare(c, "SELECT min(seq) FROM audit")?.query_row([], |r| r.get(0))?;
            if first.is_none_or(|first| seq <= first) {
                return Ok(0);
            }
            let link = |s: i64, column: &str| -> Result<Option<Vec<u8>>> {
                let sql = format!("SELECT {column} FROM audit WHERE seq = ?1");
                Ok(prepare(c, &sql)?
                    .query_row(params![s], |r| r.get::<_, Option<Vec<u8>>>(0))
                    .optional()?
                    .flatten())
            };
            let prev = link(seq, "prev_hash")?.ok_or_else(|| {
                StoreError::Conflict(format!("no audit entry at seq {seq} to keep"))
            })?;
            if link(seq - 1, "hash")?.as_ref() != Some(&prev) {
                return Err(broken_link(seq));
            }
            exec(
                c,
                "INSERT INTO audit_anchor (seq, prev_hash, at) VALUES (?1, ?2, keygate_now())",
                params![seq, prev],
            )?;
            // SQLite's trigger asks the permit (a function of this connection); PostgreSQL's
            // reads a setting local to this transaction.
            let pg = c.backend() == super::db::Backend::Postgres;
            let gone = chain.purging(|| -> super::db::Result<usize> {
                if pg {
                    c.execute_batch("SELECT set_config('keygate.audit_purging', 'on', true)")?;
                }
                let gone = exec(c, "DELETE FROM audit WHERE seq < ?1", params![seq])?;
                if pg {
                    c.execute_batch("SELECT set_config('keygate.audit_purging', '', true)")?;
                }
                Ok(gone)
            })?;
            Ok(gone as u64)
        })
        .await
    }

    pub fn list_audit(
        &self,
        user: Option<&str>,
        since: Option<OffsetDateTime>,
        limit: u32,
    ) -> Result<Vec<AuditEvent>> {
        let c = self.reader();
        let mut st = c.prepare(
            "SELECT seq, at, event, user_name, credential_id, ceremony_id, actor, detail FROM audit \
             WHERE (?1 IS NULL OR user_name = ?1) AND (?2 IS NULL OR at >= ?2) ORDER BY seq DESC LIMIT ?3",
        )?;
        let rows = st.query_map(params![user, since.map(fmt_time), limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
            ))
        })?;
        rows.map(|r| {
            let t = r?;
            Ok(AuditEvent {
                seq: t.0,
                at: parse_time(&t.1)?,
                event: t.2,
                user: t.3,
                credential_id: t.4,
                ceremony_id: t.5,
                actor: t.6,
                detail: serde_json::from_str(&t.7).unwrap_or(serde_json::Value::Null),
            })
        })
        .collect()
    }
}
