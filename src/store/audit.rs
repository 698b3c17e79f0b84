//! The audit log: append-only lines (the schema refuses UPDATE and DELETE), each stamped by
//! the store with its sequence number and time, and the newest-first listing.

use rusqlite::{params, Connection};
use serde::Serialize;
use time::OffsetDateTime;

use super::{fmt_time, parse_time, prepare, Result, Store};

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

pub(super) fn insert_audit(tx: &Connection, a: &NewAudit) -> Result<i64> {
    prepare(
        tx,
        "INSERT INTO audit (at, event, user_name, credential_id, ceremony_id, actor, detail) \
         VALUES (keygate_now(), ?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        a.event,
        a.user,
        a.credential_id,
        a.ceremony_id,
        a.actor,
        a.detail.to_string()
    ])?;
    Ok(tx.last_insert_rowid())
}

impl Store {
    pub async fn append_audit(&self, a: &NewAudit) -> Result<i64> {
        let a = a.clone();
        self.write(move |c| insert_audit(c, &a)).await
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
