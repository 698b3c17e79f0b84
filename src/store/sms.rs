//! SMS rows: phones, challenges, the send log and per-user lockout state (the durable outbox
//! is in `outbox.rs`). Times are Unix milliseconds from the SMS layer's clock. Every compound
//! change is one transaction (see the store's contract).

use super::db::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use time::OffsetDateTime;

use super::audit::insert_audit;
use super::outbox::{insert_outbox, NewOutbox};
use super::{
    exec, exec_later, parse_opt_time, parse_time, prepare, row, NewAudit, Result, Store,
    StoreError, Tx,
};

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct PhoneRecord {
    pub id: String,
    #[serde(skip)]
    pub user: String,
    /// Full number: never serialised to clients or logs (use the SMS layer's masking).
    #[serde(skip)]
    pub e164: String,
    pub label: Option<String>,
    pub verified: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub verified_at: Option<OffsetDateTime>,
    /// The phone's sync to Microsoft Entra ID (`[entra] sync_phones`); absent when never synced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entra: Option<super::PhoneEntraSync>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SmsChallengeRecord {
    pub id: String,
    pub user: String,
    pub phone_id: Option<String>,
    pub e164: String,
    /// `verify_phone` or `sign_in`.
    pub purpose: String,
    pub locale: String,
    pub code_mac: Vec<u8>,
    pub code_enc: Option<Vec<u8>>,
    pub created_at: i64,
    pub expires_at: i64,
    pub attempts: u32,
    pub resends: u32,
    pub last_sent_at: i64,
    /// `pending`, `verified`, `failed` or `cancelled` (expiry is derived from `expires_at`).
    pub state: String,
    pub delivery_status: String,
    pub idempotency_key: Option<String>,
    /// SHA-256 of the normalised request `idempotency_key` was first used with.
    pub idempotency_hash: Option<Vec<u8>>,
    /// The caller that made it (`token:<id>`); None on rows from before this was kept.
    pub created_by: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SmsUserState {
    pub consecutive_failures: u32,
    pub locked_until: i64,
}

/// [`Tx::sms_send_check`]'s campus budgets: sends in the budget window, in all and to one country, and the
/// start of the oldest minute holding one (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetCounts {
    pub total: u64,
    pub oldest_minute: Option<i64>,
    pub in_country: u64,
    pub oldest_minute_in_country: Option<i64>,
}

/// One accounted send (for the per-number, per-country and global budgets).
#[derive(Debug, Clone)]
pub struct SendLog {
    pub e164: String,
    pub country_code: u16,
    pub at: i64,
}

pub(super) const CH_COLS: &str =
    "id, user_name, phone_id, e164, purpose, locale, code_mac, code_enc, created_at, \
    expires_at, attempts, resends, last_sent_at, state, delivery_status, idempotency_key, \
    idempotency_hash, created_by";

pub(super) fn challenge_row(r: &Row<'_>) -> super::db::Result<SmsChallengeRecord> {
    Ok(SmsChallengeRecord {
        id: r.get(0)?,
        user: r.get(1)?,
        phone_id: r.get(2)?,
        e164: r.get(3)?,
        purpose: r.get(4)?,
        locale: r.get(5)?,
        code_mac: r.get(6)?,
        code_enc: r.get(7)?,
        created_at: r.get(8)?,
        expires_at: r.get(9)?,
        attempts: r.get(10)?,
        resends: r.get(11)?,
        last_sent_at: r.get(12)?,
        state: r.get(13)?,
        delivery_status: r.get(14)?,
        idempotency_key: r.get(15)?,
        idempotency_hash: r.get(16)?,
        created_by: r.get(17)?,
    })
}

type PhoneTuple = (
    String,
    String,
    String,
    Option<String>,
    bool,
    String,
    Option<String>,
    Option<super::PhoneEntraSync>,
);

fn phone_row(r: &Row<'_>) -> super::db::Result<PhoneTuple> {
    let entra = r
        .get::<_, Option<String>>(7)?
        .map(|state| -> super::db::Result<_> {
            Ok(super::PhoneEntraSync {
                state,
                method_id: r.get(8)?,
                error: r.get(9)?,
            })
        })
        .transpose()?;
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        entra,
    ))
}

fn to_phone(t: PhoneTuple) -> Result<PhoneRecord> {
    Ok(PhoneRecord {
        id: t.0,
        user: t.1,
        e164: t.2,
        label: t.3,
        verified: t.4,
        created_at: parse_time(&t.5)?,
        verified_at: parse_opt_time(t.6)?,
        entra: t.7,
    })
}

const PHONE_COLS: &str = "id, user_name, e164, label, verified, created_at, verified_at, \
    entra_state, entra_method_id, entra_error";

/// The length of a budget count's bucket (`sms_send_minutes`), ms.
pub const SEND_MINUTE_MS: i64 = 60_000;

/// The scope of every send in `sms_send_minutes`.
pub(super) const ALL_SENDS: &str = "*";

fn insert_send(c: &Connection, s: &SendLog) -> Result<()> {
    exec_later(
        c,
        "INSERT INTO sms_sends (e164, country_code, at) VALUES (?1, ?2, ?3)",
        params![s.e164, s.country_code, s.at],
    )?;
    if c.backend() == super::db::Backend::Postgres {
        let minute = s.at - s.at.rem_euclid(SEND_MINUTE_MS);
        exec_later(
            c,
            "INSERT INTO sms_send_minutes (scope, minute, sends) VALUES (?1, ?3, 1), (?2, ?3, 1) \
             ON CONFLICT (scope, minute) DO UPDATE SET sends = sms_send_minutes.sends + 1",
            params![ALL_SENDS, s.country_code.to_string(), minute],
        )?;
    }
    Ok(())
}

/// A challenge ended (not pending, or past its expiry at `?1`): its encrypted code must go.
pub(super) const ENDED_AT: &str = "(state != 'pending' OR expires_at <= ?1)";

fn insert_challenge(c: &Connection, ch: &SmsChallengeRecord) -> Result<()> {
    exec_later(
        c,
        &format!(
            "INSERT INTO sms_challenges ({CH_COLS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
        ),
        params![
            ch.id,
            ch.user,
            ch.phone_id,
            ch.e164,
            ch.purpose,
            ch.locale,
            ch.code_mac,
            ch.code_enc,
            ch.created_at,
            ch.expires_at,
            ch.attempts,
            ch.resends,
            ch.last_sent_at,
            ch.state,
            ch.delivery_status,
            ch.idempotency_key,
            ch.idempotency_hash,
            ch.created_by
        ],
    )?;
    Ok(())
}

/// Create the user row when the first method is a phone (no key enrolled yet).
fn ensure_user(c: &Connection, name: &str) -> Result<()> {
    exec(
        c,
        "INSERT OR IGNORE INTO users (name, display_name, user_handle, created_at) \
         VALUES (?1, ?1, ?2, keygate_now())",
        params![name, uuid::Uuid::new_v4().as_bytes().to_vec()],
    )?;
    Ok(())
}

/// The SMS rows, inside one atomic unit ([`Store::atomic`]) or one call of the [`Store`] wrappers below.
impl Tx<'_> {
    /// Register a phone (unverified; an existing row of the user for that number is reused,
    /// its label updated when one is given) together with its verification challenge, the
    /// challenge's first outbox message, send-log line and audits: all in one transaction, or
    /// nothing. `ch.phone_id` is set to the phone's id; `phone_audit` is written only when the
    /// phone is new.
    #[allow(clippy::too_many_arguments)]
    pub fn sms_add_phone_with_challenge(
        &self,
        e164: &str,
        label: Option<&str>,
        phone_audit: &NewAudit,
        ch: &SmsChallengeRecord,
        outbox: &NewOutbox,
        send: &SendLog,
        challenge_audit: &NewAudit,
    ) -> Result<PhoneRecord> {
        let c = self.0;
        ensure_user(c, &ch.user)?;
        let existing: Option<String> = row(
            c,
            "SELECT id FROM phones WHERE user_name = ?1 AND e164 = ?2",
            params![ch.user, e164],
            |r| r.get(0),
        )
        .optional()?;
        let phone_id = match existing {
            Some(id) => {
                if label.is_some() {
                    exec(
                        c,
                        "UPDATE phones SET label = ?2 WHERE id = ?1",
                        params![id, label],
                    )?;
                }
                id
            }
            None => {
                let id = super::new_row_id();
                exec(c,
                    "INSERT INTO phones (id, user_name, e164, label, verified, created_at) VALUES (?1, ?2, ?3, ?4, 0, keygate_now())",
                    params![id, ch.user, e164, label],
                )?;
                insert_audit(c, phone_audit)?;
                id
            }
        };
        let ch = SmsChallengeRecord {
            phone_id: Some(phone_id.clone()),
            ..ch.clone()
        };
        insert_challenge(c, &ch)?;
        insert_outbox(c, outbox, &ch.id, ch.created_at)?;
        insert_send(c, send)?;
        insert_audit(c, challenge_audit)?;
        row(
            c,
            &format!("SELECT {PHONE_COLS} FROM phones WHERE id = ?1"),
            params![phone_id],
            phone_row,
        )
        .map_err(StoreError::from)
        .and_then(to_phone)
    }

    pub fn get_phone(&self, id: &str) -> Result<Option<PhoneRecord>> {
        let c = self.0;
        row(
            c,
            &format!("SELECT {PHONE_COLS} FROM phones WHERE id = ?1"),
            params![id],
            phone_row,
        )
        .optional()?
        .map(to_phone)
        .transpose()
    }

    pub fn list_phones(&self, user: &str) -> Result<Vec<PhoneRecord>> {
        let c = self.0;
        let mut st = prepare(
            c,
            &format!("SELECT {PHONE_COLS} FROM phones WHERE user_name = ?1 ORDER BY created_at"),
        )?;
        let rows = st
            .query_map(params![user], phone_row)?
            .collect::<super::db::Result<Vec<_>>>()?;
        rows.into_iter().map(to_phone).collect()
    }

    /// Remove a phone and end its live challenges.
    pub fn delete_phone(&self, user: &str, id: &str, audit: &NewAudit) -> Result<()> {
        let c = self.0;
        let n = exec(
            c,
            "DELETE FROM phones WHERE id = ?1 AND user_name = ?2",
            params![id, user],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        exec(c,
            "UPDATE sms_challenges SET state = 'cancelled', code_enc = NULL WHERE phone_id = ?1 AND state = 'pending'",
            params![id],
        )?;
        insert_audit(c, audit)?;
        Ok(())
    }

    /// A new challenge, its first outbox message and its send-log line, in one transaction.
    pub fn sms_insert_challenge(
        &self,
        ch: &SmsChallengeRecord,
        outbox: &NewOutbox,
        send: &SendLog,
        audit: &NewAudit,
    ) -> Result<()> {
        // The user exists: the challenge goes to one of their phones (phones reference users).
        let c = self.0;
        insert_challenge(c, ch)?;
        insert_outbox(c, outbox, &ch.id, ch.created_at)?;
        insert_send(c, send)?;
        insert_audit(c, audit)?;
        Ok(())
    }

    pub fn sms_challenge(&self, id: &str) -> Result<Option<SmsChallengeRecord>> {
        let c = self.0;
        Ok(row(
            c,
            &format!("SELECT {CH_COLS} FROM sms_challenges WHERE id = ?1"),
            params![id],
            challenge_row,
        )
        .optional()?)
    }

    /// The challenge stored under a (caller-scoped) Idempotency-Key.
    pub fn sms_challenge_by_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<SmsChallengeRecord>> {
        let c = self.0;
        Ok(row(
            c,
            &format!("SELECT {CH_COLS} FROM sms_challenges WHERE idempotency_key = ?1"),
            params![key],
            challenge_row,
        )
        .optional()?)
    }

    /// Sends since `since` as (time, country code), oldest first (to rebuild in-memory budgets).
    pub fn sms_recent_sends(&self, since: i64) -> Result<Vec<(i64, u16)>> {
        let c = self.0;
        let mut st = prepare(
            c,
            "SELECT at, country_code FROM sms_sends WHERE at > ?1 ORDER BY at",
        )?;
        let rows = st
            .query_map(params![since], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<super::db::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// A wrong code: the challenge's attempts (and, when `fail`, its end) and the user's
    /// failure streak/lock land together.
    pub fn sms_wrong_code(
        &self,
        ch: &SmsChallengeRecord,
        attempts: u32,
        fail: bool,
        user: SmsUserState,
        audit: Option<&NewAudit>,
    ) -> Result<()> {
        let c = self.0;
        exec_later(c,
            "UPDATE sms_challenges SET attempts = ?2, state = CASE WHEN ?3 THEN 'failed' ELSE state END, \
             code_enc = CASE WHEN ?3 THEN NULL ELSE code_enc END WHERE id = ?1 AND state = 'pending'",
            params![ch.id, attempts, fail],
        )?;
        exec_later(c,
            "INSERT INTO sms_user_state (user_name, consecutive_failures, locked_until) VALUES (?1, ?2, ?3) \
             ON CONFLICT(user_name) DO UPDATE SET consecutive_failures = ?2, locked_until = ?3",
            params![ch.user, user.consecutive_failures, user.locked_until],
        )?;
        if let Some(a) = audit {
            insert_audit(c, a)?;
        }
        Ok(())
    }

    /// The right code. Only the first caller wins (`state = 'pending'` guard): returns false
    /// for every later one. Verifies the phone when that was the purpose; resets the streak.
    pub fn sms_verified(&self, ch: &SmsChallengeRecord, audit: &NewAudit) -> Result<bool> {
        let c = self.0;
        let n = exec(c,
            "UPDATE sms_challenges SET state = 'verified', code_enc = NULL WHERE id = ?1 AND state = 'pending'",
            params![ch.id],
        )?;
        if n == 0 {
            return Ok(false);
        }
        if let (Some(phone), "verify_phone") = (&ch.phone_id, ch.purpose.as_str()) {
            exec_later(
                c,
                "UPDATE phones SET verified = 1, verified_at = keygate_now() WHERE id = ?1",
                params![phone],
            )?;
        }
        // No row is the same as a clean streak: only a user with failures has one to reset.
        exec_later(
            c,
            "UPDATE sms_user_state SET consecutive_failures = 0, locked_until = 0 \
             WHERE user_name = ?1 AND (consecutive_failures != 0 OR locked_until != 0)",
            params![ch.user],
        )?;
        insert_audit(c, audit)?;
        Ok(true)
    }

    /// Resend: bump the counter and queue the message again, in one transaction.
    pub fn sms_resend(
        &self,
        ch: &SmsChallengeRecord,
        at: i64,
        outbox_id: &str,
        send: &SendLog,
        audit: &NewAudit,
    ) -> Result<()> {
        let c = self.0;
        let n = exec(c,
            "UPDATE sms_challenges SET resends = resends + 1, last_sent_at = ?2, delivery_status = 'queued' \
             WHERE id = ?1 AND state = 'pending'",
            params![ch.id, at],
        )?;
        if n == 0 {
            return Err(StoreError::Conflict("challenge ended".into()));
        }
        insert_outbox(c, &NewOutbox::due(outbox_id), &ch.id, at)?;
        insert_send(c, send)?;
        insert_audit(c, audit)?;
        Ok(())
    }

    /// End a challenge without success (`cancelled`, or `failed` when it expired); wipes the code.
    pub fn sms_end_challenge(
        &self,
        id: &str,
        state: &str,
        audit: Option<&NewAudit>,
    ) -> Result<bool> {
        let c = self.0;
        let n = exec(c,
            "UPDATE sms_challenges SET state = ?2, code_enc = NULL WHERE id = ?1 AND state = 'pending'",
            params![id, state],
        )?;
        if n > 0 {
            if let Some(a) = audit {
                insert_audit(c, a)?;
            }
        }
        Ok(n > 0)
    }

    /// Forget the encrypted code of an expired challenge.
    pub fn sms_wipe_code(&self, id: &str) -> Result<()> {
        exec(
            self.0,
            "UPDATE sms_challenges SET code_enc = NULL WHERE id = ?1",
            params![id],
        )?;
        Ok(())
    }

    /// Forget the encrypted code of every challenge that ended by `at` (not pending, or
    /// expired), whether or not anyone touched it since; returns how many were wiped.
    pub fn sms_wipe_ended_codes(&self, at: i64) -> Result<usize> {
        Ok(exec(
            self.0,
            &format!("UPDATE sms_challenges SET code_enc = NULL WHERE code_enc IS NOT NULL AND {ENDED_AT}"),
            params![at],
        )?)
    }
}

/// The same, outside an atomic unit: one transaction (writes) or one read per call.
impl Store {
    pub fn list_phones(&self, user: &str) -> Result<Vec<PhoneRecord>> {
        self.read(|c| Tx(c).list_phones(user))
    }

    pub fn sms_challenge(&self, id: &str) -> Result<Option<SmsChallengeRecord>> {
        self.read(|c| Tx(c).sms_challenge(id))
    }

    pub fn sms_recent_sends(&self, since: i64) -> Result<Vec<(i64, u16)>> {
        self.read(|c| Tx(c).sms_recent_sends(since))
    }
}
