//! The durable SMS outbox: one row per message to send (state, attempts, next attempt, the
//! provider's message id), the worker's queue reads and updates, and provider delivery reports,
//! which move a challenge's delivery status forward only. Times are Unix milliseconds from the
//! SMS layer's clock.

use super::db::{params, Connection, OptionalExtension, Row};

use super::sms::ENDED_AT;
use super::{exec, exec_later, prepare, row, Result, Store, Tx};

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRecord {
    pub id: String,
    pub challenge_id: String,
    pub created_at: i64,
    /// `pending`, `sending`, `sent`, `failed` or `dropped`.
    pub state: String,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    pub last_error: Option<String>,
    pub sent_at: Option<i64>,
}

const OB_COLS: &str = "id, challenge_id, created_at, state, attempts, next_attempt_at, provider, \
    provider_message_id, last_error, sent_at";

fn outbox_row(r: &Row<'_>) -> super::db::Result<OutboxRecord> {
    Ok(OutboxRecord {
        id: r.get(0)?,
        challenge_id: r.get(1)?,
        created_at: r.get(2)?,
        state: r.get(3)?,
        attempts: r.get(4)?,
        next_attempt_at: r.get(5)?,
        provider: r.get(6)?,
        provider_message_id: r.get(7)?,
        last_error: r.get(8)?,
        sent_at: r.get(9)?,
    })
}

/// A delivery status only moves forward (`?2` is the new one): queued < sent < delivered, and
/// failed/undeliverable beat queued and sent; delivered, failed and undeliverable are final.
/// Reports arrive out of order (a late "sent" after "delivered"), and the worker's own "sent"
/// can land after the provider's callback.
const DELIVERY_MOVES_FORWARD: &str = "(delivery_status = 'queued' \
     AND ?2 IN ('sent', 'delivered', 'failed', 'undeliverable') \
     OR delivery_status = 'sent' AND ?2 IN ('delivered', 'failed', 'undeliverable'))";

/// The outbox row stored with a message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutbox {
    pub id: String,
    /// `(node, lease end)`: claimed at insert by the daemon that stores it, which sends the
    /// message itself right after the commit; due for any worker once the lease ends (so a
    /// daemon that dies before sending leaves it to the others, or to itself after a restart).
    /// `None`: due at once, for whichever worker claims it first.
    pub claimed: Option<(String, i64)>,
}

impl NewOutbox {
    /// A row due at once, for the workers.
    pub fn due(id: impl Into<String>) -> NewOutbox {
        NewOutbox {
            id: id.into(),
            claimed: None,
        }
    }

    /// The row as stored for `challenge_id` at `at`.
    pub fn record(&self, challenge_id: &str, at: i64) -> OutboxRecord {
        OutboxRecord {
            id: self.id.clone(),
            challenge_id: challenge_id.to_string(),
            created_at: at,
            state: "pending".into(),
            attempts: 0,
            next_attempt_at: self.claimed.as_ref().map_or(at, |(_, until)| *until),
            provider: None,
            provider_message_id: None,
            last_error: None,
            sent_at: None,
        }
    }
}

pub(super) fn insert_outbox(
    c: &Connection,
    ob: &NewOutbox,
    challenge_id: &str,
    at: i64,
) -> Result<()> {
    let (claimed_by, next_attempt_at) = match &ob.claimed {
        Some((node, until)) => (Some(node.as_str()), *until),
        None => (None, at),
    };
    exec_later(
        c,
        "INSERT INTO sms_outbox (id, challenge_id, created_at, state, next_attempt_at, claimed_by) \
         VALUES (?1, ?2, ?3, 'pending', ?4, ?5)",
        params![ob.id, challenge_id, at, next_attempt_at, claimed_by],
    )?;
    Ok(())
}

/// The outbox rows, inside one atomic unit ([`Store::atomic`]) or one call of the [`Store`]
/// wrappers below.
impl Tx<'_> {
    /// An outbox message that will not be sent because its challenge ended: the row is marked
    /// and, in the same transaction, the challenge's code is wiped if it ended by `at`.
    pub fn sms_outbox_drop(&self, ob: &OutboxRecord, at: i64) -> Result<()> {
        let c = self.0;
        exec(
            c,
            "UPDATE sms_outbox SET state = 'dropped', attempts = ?2 WHERE id = ?1",
            params![ob.id, ob.attempts],
        )?;
        exec(
            c,
            &format!("UPDATE sms_challenges SET code_enc = NULL WHERE id = ?2 AND {ENDED_AT}"),
            params![at, ob.challenge_id],
        )?;
        Ok(())
    }

    /// After a restart: messages caught mid-send go back to the queue (sent at most once more).
    pub fn sms_outbox_recover(&self) -> Result<u64> {
        Ok(exec(
            self.0,
            "UPDATE sms_outbox SET state = 'pending' WHERE state = 'sending'",
            [],
        )? as u64)
    }

    pub fn sms_outbox_due(&self, at: i64, limit: u32) -> Result<Vec<OutboxRecord>> {
        let c = self.0;
        let mut st = prepare(
            c,
            &format!(
            "SELECT {OB_COLS} FROM sms_outbox WHERE state = 'pending' AND next_attempt_at <= ?1 \
             ORDER BY next_attempt_at LIMIT ?2"
        ),
        )?;
        let rows = st
            .query_map(params![at, limit], outbox_row)?
            .collect::<super::db::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Claim up to `limit` due messages until `lease_until`: they stay pending, due again
    /// only when the lease runs out. On a campus store every daemon drains the one outbox;
    /// a claimed message is sent by its claimer alone, and a claimer that dies mid-send
    /// leaves it to the next daemon once the lease has passed (sent at least once, never
    /// lost).
    pub fn sms_outbox_claim(
        &self,
        node: &str,
        at: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>> {
        let due = self.sms_outbox_due(at, limit)?;
        for ob in &due {
            exec_later(
                self.0,
                "UPDATE sms_outbox SET next_attempt_at = ?2, claimed_by = ?3 WHERE id = ?1",
                params![ob.id, lease_until, node],
            )?;
        }
        Ok(due)
    }

    /// A restarted daemon's claims from before its restart: due again now (it sent none of
    /// them since, and no other daemon may until the lease ends).
    pub fn sms_outbox_release_claims(&self, node: &str, at: i64) -> Result<u64> {
        Ok(exec(
            self.0,
            "UPDATE sms_outbox SET next_attempt_at = ?2, claimed_by = NULL \
             WHERE claimed_by = ?1 AND state = 'pending' AND next_attempt_at > ?2",
            params![node, at],
        )? as u64)
    }

    pub fn sms_outbox(&self, id: &str) -> Result<Option<OutboxRecord>> {
        let c = self.0;
        Ok(row(
            c,
            &format!("SELECT {OB_COLS} FROM sms_outbox WHERE id = ?1"),
            params![id],
            outbox_row,
        )
        .optional()?)
    }

    /// Store an outbox row's new state and, when given and a move forward, its challenge's
    /// delivery status.
    pub fn sms_outbox_update(
        &self,
        ob: &OutboxRecord,
        delivery_status: Option<&str>,
    ) -> Result<()> {
        let c = self.0;
        exec_later(c,
            "UPDATE sms_outbox SET state = ?2, attempts = ?3, next_attempt_at = ?4, provider = ?5, \
             provider_message_id = ?6, last_error = ?7, sent_at = ?8 WHERE id = ?1",
            params![
                ob.id, ob.state, ob.attempts, ob.next_attempt_at, ob.provider, ob.provider_message_id,
                ob.last_error, ob.sent_at
            ],
        )?;
        if let Some(d) = delivery_status {
            exec_later(c,
                &format!("UPDATE sms_challenges SET delivery_status = ?2 WHERE id = ?1 AND {DELIVERY_MOVES_FORWARD}"),
                params![ob.challenge_id, d],
            )?;
        }
        Ok(())
    }

    /// A provider's delivery report; false when no message has that provider id. A report that
    /// would move the status backwards (or off a final one) is accepted and ignored.
    pub fn sms_delivery_report(
        &self,
        provider: &str,
        provider_message_id: &str,
        status: &str,
    ) -> Result<bool> {
        let c = self.0;
        let challenge: Option<String> = row(
            c,
            "SELECT challenge_id FROM sms_outbox WHERE provider = ?1 AND provider_message_id = ?2",
            params![provider, provider_message_id],
            |r| r.get(0),
        )
        .optional()?;
        let Some(ch) = challenge else {
            return Ok(false);
        };
        exec(c,
            &format!("UPDATE sms_challenges SET delivery_status = ?2 WHERE id = ?1 AND {DELIVERY_MOVES_FORWARD}"),
            params![ch, status],
        )?;
        Ok(true)
    }
}

/// The same, outside an atomic unit: one transaction (writes) or one read per call.
impl Store {
    pub fn sms_outbox_recover(&self) -> Result<u64> {
        let now_ms = (self.now().unix_timestamp_nanos() / 1_000_000) as i64;
        let node = self.node.clone();
        self.tx(|c| {
            let released = Tx(c).sms_outbox_release_claims(&node, now_ms)?;
            Ok(Tx(c).sms_outbox_recover()? + released)
        })
    }

    pub fn sms_outbox_due(&self, at: i64, limit: u32) -> Result<Vec<OutboxRecord>> {
        self.read(|c| Tx(c).sms_outbox_due(at, limit))
    }

    pub fn sms_outbox(&self, id: &str) -> Result<Option<OutboxRecord>> {
        self.read(|c| Tx(c).sms_outbox(id))
    }
}
