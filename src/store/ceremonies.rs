//! The ceremonies aggregate: one row per enrollment or assertion ceremony (kind, user, state,
//! error code, expiry), its state changes, the start-up sweep of interrupted ceremonies and
//! pruning of finished ones.

use super::db::{params, Connection, OptionalExtension};
use time::OffsetDateTime;

use super::audit::insert_audit;
use super::{exec, fmt_time, parse_time, row, NewAudit, Result, Store};

#[derive(Debug, Clone, PartialEq)]
pub struct CeremonyRecord {
    pub id: String,
    pub kind: String,
    pub user: Option<String>,
    pub state: String,
    pub error_code: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// The caller that started it (`token:<id>`); None on rows from before this was kept.
    pub created_by: Option<String>,
}

pub(super) fn set_ceremony_state(
    tx: &Connection,
    id: &str,
    state: &str,
    error_code: Option<&str>,
) -> Result<()> {
    exec(
        tx,
        "UPDATE ceremonies SET state = ?2, error_code = ?3, updated_at = keygate_now() WHERE id = ?1",
        params![id, state, error_code],
    )?;
    Ok(())
}

impl Store {
    pub async fn insert_ceremony(&self, rec: &CeremonyRecord, audit: &NewAudit) -> Result<()> {
        let rec = rec.clone();
        let audit = audit.clone();
        let node = self.node.clone();
        self.write(move |c| {
            exec(c,
                "INSERT INTO ceremonies (id, kind, user_name, state, error_code, created_at, updated_at, expires_at, created_by, node) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    rec.id,
                    rec.kind,
                    rec.user,
                    rec.state,
                    rec.error_code,
                    fmt_time(rec.created_at),
                    fmt_time(rec.updated_at),
                    fmt_time(rec.expires_at),
                    rec.created_by,
                    &*node
                ],
            )?;
            insert_audit(c, &audit)?;
            Ok(())
        })
        .await
    }

    /// Update a ceremony's state; with `audit` when the change is security-relevant
    /// (terminal failures, cancellation).
    pub async fn update_ceremony(
        &self,
        id: &str,
        state: &str,
        error_code: Option<&str>,
        audit: Option<&NewAudit>,
    ) -> Result<()> {
        let id = id.to_string();
        let state = state.to_string();
        let error_code = error_code.map(str::to_string);
        let audit = audit.cloned();
        self.write(move |c| {
            set_ceremony_state(c, &id, &state, error_code.as_deref())?;
            if let Some(a) = &audit {
                insert_audit(c, a)?;
            }
            Ok(())
        })
        .await
    }

    pub fn get_ceremony(&self, id: &str) -> Result<Option<CeremonyRecord>> {
        let c = self.reader();
        row(&c,
            "SELECT id, kind, user_name, state, error_code, created_at, updated_at, expires_at, created_by FROM ceremonies WHERE id = ?1",
            params![id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ))
            },
        )
        .optional()?
        .map(|t| {
            Ok(CeremonyRecord {
                id: t.0,
                kind: t.1,
                user: t.2,
                state: t.3,
                error_code: t.4,
                created_at: parse_time(&t.5)?,
                updated_at: parse_time(&t.6)?,
                expires_at: parse_time(&t.7)?,
                created_by: t.8,
            })
        })
        .transpose()
    }

    /// At start-up: every ceremony that was in flight when the previous process stopped ends
    /// as `failed` with `ceremony_interrupted` (nothing of it was stored half-way). Returns
    /// how many.
    pub fn fail_interrupted_ceremonies(&self) -> Result<u64> {
        // On a campus store the other daemons' live ceremonies are in the table too: this
        // daemon's own (it has just started: they were interrupted), and any past its
        // deadline (its daemon died).
        let sql = if self.is_shared() {
            "SELECT id, user_name FROM ceremonies WHERE state NOT IN ('succeeded', 'failed', 'cancelled') \
             AND (node = ?1 OR expires_at < keygate_now())"
        } else {
            "SELECT id, user_name FROM ceremonies WHERE state NOT IN ('succeeded', 'failed', 'cancelled') \
             AND ?1 IS NOT NULL"
        };
        let node = self.node.clone();
        self.tx(|c| {
            let ids: Vec<(String, Option<String>)> = {
                let mut st = c.prepare(sql)?;
                let rows = st.query_map([&*node], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<super::db::Result<_>>()?
            };
            for (id, user) in &ids {
                set_ceremony_state(c, id, "failed", Some("ceremony_interrupted"))?;
                let mut a = NewAudit::new("ceremony.interrupted", "system").ceremony(id);
                a.user = user.clone();
                insert_audit(c, &a)?;
            }
            Ok(ids.len() as u64)
        })
    }

    /// Delete finished ceremonies older than `before`, in the hot table or moved to history by
    /// the sweep (the audit log keeps their story).
    pub fn prune_ceremonies(&self, before: OffsetDateTime) -> Result<u64> {
        let c = self.conn();
        let hot = exec(&c,
            "DELETE FROM ceremonies WHERE state IN ('succeeded', 'failed', 'cancelled') AND updated_at < ?1",
            params![fmt_time(before)],
        )?;
        let history = exec(
            &c,
            "DELETE FROM ceremonies_history WHERE updated_at < ?1",
            params![fmt_time(before)],
        )?;
        Ok((hot + history) as u64)
    }
}
