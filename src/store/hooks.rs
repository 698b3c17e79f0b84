//! The durable hook outbox (`crate::hooks`): one delivery row per (hook URL, audit line) that
//! the hook subscribed to, and the cursor over the audit log that the fan-out advances.
//!
//! Contract: every hook event is an audit line, committed with the fact it records. The
//! fan-out reads the lines after the cursor and, in one transaction, inserts their deliveries
//! and moves the cursor past them: a kill at any instant loses no event and fans none out
//! twice. Times are Unix milliseconds from the hooks' clock.

use super::db::{params, Connection, OptionalExtension, Row};

use super::audit::insert_audit;
use super::{exec, parse_time, prepare, row, AuditEvent, NewAudit, Result, Store, StoreError, Tx};

/// One event for one receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct HookDelivery {
    /// Also the payload's `id`: the same on every retry, for the receiver's dedup.
    pub id: String,
    pub hook_url: String,
    pub event: String,
    pub audit_seq: i64,
    /// The JSON body, fixed when fanned out (retries send the same bytes).
    pub payload: String,
    /// When its 24-hour delivery window began: the fan-out, or the last replay.
    pub created_at: i64,
    /// `pending`, `delivered` or `dead` (kept, visible in `GET /v1/hooks`; an admin may
    /// replay it: [`Store::hook_delivery_replay`]).
    pub state: String,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

/// Per configured URL: the deliveries waiting and given up.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HookCounts {
    pub pending: u64,
    pub dead: u64,
    pub delivered: u64,
}

const COLS: &str = "id, hook_url, event, audit_seq, payload, created_at, state, attempts, \
    next_attempt_at, last_error, delivered_at";

fn delivery_row(r: &Row<'_>) -> super::db::Result<HookDelivery> {
    Ok(HookDelivery {
        id: r.get(0)?,
        hook_url: r.get(1)?,
        event: r.get(2)?,
        audit_seq: r.get(3)?,
        payload: r.get(4)?,
        created_at: r.get(5)?,
        state: r.get(6)?,
        attempts: r.get(7)?,
        next_attempt_at: r.get(8)?,
        last_error: r.get(9)?,
        delivered_at: r.get(10)?,
    })
}

/// The audit lines after `after`, oldest first.
fn audit_after(c: &Connection, after: i64, limit: u32) -> Result<Vec<AuditEvent>> {
    let mut st = prepare(
        c,
        "SELECT seq, at, event, user_name, credential_id, ceremony_id, actor, detail FROM audit \
         WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let raw = st
        .query_map(params![after, limit], |r| {
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
        })?
        .collect::<super::db::Result<Vec<_>>>()?;
    raw.into_iter()
        .map(|t| {
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

fn cursor(c: &Connection) -> Result<Option<i64>> {
    Ok(
        prepare(c, "SELECT audit_seq FROM hook_cursor WHERE id = 1")?
            .query_row([], |r| r.get(0))
            .optional()?,
    )
}

impl Tx<'_> {
    /// Fan out the audit lines after the cursor (up to `limit`): `plan` turns them into
    /// deliveries, which are stored with the cursor moved past the last line read. Returns how
    /// many lines were read (`limit`: there may be more).
    pub fn hooks_fan_out(
        &self,
        limit: u32,
        plan: impl FnOnce(&[AuditEvent]) -> Vec<HookDelivery>,
    ) -> Result<usize> {
        let c = self.0;
        let Some(after) = cursor(c)? else {
            return Ok(0);
        };
        let lines = audit_after(c, after, limit)?;
        let Some(last) = lines.last().map(|a| a.seq) else {
            return Ok(0);
        };
        for d in plan(&lines) {
            exec(
                c,
                &format!(
                    "INSERT OR IGNORE INTO hook_deliveries ({COLS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ),
                params![
                    d.id,
                    d.hook_url,
                    d.event,
                    d.audit_seq,
                    d.payload,
                    d.created_at,
                    d.state,
                    d.attempts,
                    d.next_attempt_at,
                    d.last_error,
                    d.delivered_at
                ],
            )?;
        }
        exec(
            c,
            "UPDATE hook_cursor SET audit_seq = ?1 WHERE id = 1",
            params![last],
        )?;
        Ok(lines.len())
    }

    /// Store a delivery's new state after an attempt.
    pub fn hook_delivery_save(&self, d: &HookDelivery) -> Result<()> {
        exec(
            self.0,
            "UPDATE hook_deliveries SET state = ?2, attempts = ?3, next_attempt_at = ?4, \
             last_error = ?5, delivered_at = ?6 WHERE id = ?1",
            params![
                d.id,
                d.state,
                d.attempts,
                d.next_attempt_at,
                d.last_error,
                d.delivered_at
            ],
        )?;
        Ok(())
    }

    /// Forget deliveries that arrived before `before` (dead ones stay until an operator looks).
    pub fn hook_prune_delivered(&self, before: i64) -> Result<u64> {
        Ok(exec(
            self.0,
            "DELETE FROM hook_deliveries WHERE state = 'delivered' AND delivered_at < ?1",
            params![before],
        )? as u64)
    }
}

impl Store {
    /// At start-up with hooks configured: the first time ever, the fan-out starts after the
    /// newest audit line (events from before hooks existed are not sent). Idempotent.
    pub fn hooks_start_cursor(&self) -> Result<()> {
        self.tx(|c| {
            exec(
                c,
                "INSERT OR IGNORE INTO hook_cursor (id, audit_seq) \
                 SELECT 1, coalesce(max(seq), 0) FROM audit",
                [],
            )?;
            Ok(())
        })
    }

    /// Pending deliveries due at `now`, the longest-waiting first.
    pub fn hook_deliveries_due(&self, now: i64, limit: u32) -> Result<Vec<HookDelivery>> {
        self.read(|c| {
            let mut st = prepare(
                c,
                &format!(
                    "SELECT {COLS} FROM hook_deliveries WHERE state = 'pending' \
                     AND next_attempt_at <= ?1 ORDER BY next_attempt_at LIMIT ?2"
                ),
            )?;
            let rows = st
                .query_map(params![now, limit], delivery_row)?
                .collect::<super::db::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Every delivery of the audit line `audit_seq`.
    pub fn hook_deliveries_of(&self, audit_seq: i64) -> Result<Vec<HookDelivery>> {
        self.read(|c| {
            let mut st = prepare(
                c,
                &format!("SELECT {COLS} FROM hook_deliveries WHERE audit_seq = ?1 ORDER BY id"),
            )?;
            let rows = st
                .query_map(params![audit_seq], delivery_row)?
                .collect::<super::db::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// One delivery by id.
    pub fn hook_delivery(&self, id: &str) -> Result<Option<HookDelivery>> {
        self.read(|c| {
            Ok(row(
                c,
                &format!("SELECT {COLS} FROM hook_deliveries WHERE id = ?1"),
                params![id],
                delivery_row,
            )
            .optional()?)
        })
    }

    /// The deliveries in `state` (`pending`, `delivered` or `dead`), the latest scheduled
    /// attempt first.
    pub fn hook_deliveries_in(&self, state: &str, limit: u32) -> Result<Vec<HookDelivery>> {
        self.read(|c| {
            let mut st = prepare(
                c,
                &format!(
                    "SELECT {COLS} FROM hook_deliveries WHERE state = ?1 \
                     ORDER BY next_attempt_at DESC, id LIMIT ?2"
                ),
            )?;
            let rows = st
                .query_map(params![state, limit], delivery_row)?
                .collect::<super::db::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Replay the dead delivery `id`: pending again and due at `now_ms`, its attempts and its
    /// 24-hour window starting over, with the same payload and id (receivers that saw it
    /// deduplicate). Audited as `hook.delivery_replayed` by `actor`. NotFound without such a
    /// delivery; Conflict when it is not dead (pending: already queued; delivered: accepted).
    pub async fn hook_delivery_replay(
        &self,
        id: &str,
        now_ms: i64,
        actor: &str,
    ) -> Result<HookDelivery> {
        let (id, actor) = (id.to_string(), actor.to_string());
        self.write(move |c| {
            let select = format!("SELECT {COLS} FROM hook_deliveries WHERE id = ?1");
            let d = row(c, &select, params![id], delivery_row)
                .optional()?
                .ok_or(StoreError::NotFound)?;
            if d.state != "dead" {
                return Err(StoreError::Conflict(format!(
                    "the delivery is {}: only a dead delivery can be replayed",
                    d.state
                )));
            }
            exec(
                c,
                "UPDATE hook_deliveries SET state = 'pending', attempts = 0, created_at = ?2, \
                 next_attempt_at = ?2, last_error = NULL WHERE id = ?1",
                params![id, now_ms],
            )?;
            insert_audit(
                c,
                &NewAudit::new("hook.delivery_replayed", &actor).detail(serde_json::json!({
                    "delivery_id": d.id,
                    "event": d.event,
                    "audit_seq": d.audit_seq,
                    "attempts_before": d.attempts,
                })),
            )?;
            Ok(row(c, &select, params![id], delivery_row)?)
        })
        .await
    }

    /// The deliveries of `hook_url` by state.
    pub fn hook_counts(&self, hook_url: &str) -> Result<HookCounts> {
        self.read(|c| {
            let mut st = prepare(
                c,
                "SELECT state, count(*) FROM hook_deliveries WHERE hook_url = ?1 GROUP BY state",
            )?;
            let mut counts = HookCounts::default();
            let rows = st.query_map(params![hook_url], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (state, n) = row?;
                let n = n as u64;
                match state.as_str() {
                    "pending" => counts.pending = n,
                    "dead" => counts.dead = n,
                    _ => counts.delivered = n,
                }
            }
            Ok(counts)
        })
    }
}
