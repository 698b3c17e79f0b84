//! The SMS fraud guard's rows (migration 10): per-prefix counts of messages and verified codes
//! in time buckets, the blocked prefixes, and the messages of each calendar month. Times are
//! Unix milliseconds from the SMS layer's clock.
//!
//! Contract: every change is one conditional statement (an upsert, an `UPDATE ... WHERE`), so
//! that kiosks sharing one database count every message once and judge a prefix once, whatever
//! their interleaving. The counts a message is judged by are read in its unit, under the
//! store's write lock, before its writes ([`Tx::sms_send_check`]); the writes do not depend on
//! them being right (the month's reservation stays conditional on the cap).

use super::db::{params, OptionalExtension, Row};

use super::audit::{exec_audited, insert_audit};
use super::{exec, exec_later, prepare, row, NewAudit, Result, Store, Tx};

/// A blocked prefix: when, until when, and what its window held when it was judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FraudBlockRecord {
    /// The first digits of the E.164 number (country code included, no `+`).
    pub prefix: String,
    pub blocked_at: i64,
    pub blocked_until: i64,
    pub sends: u32,
    pub verified: u32,
}

/// A prefix's messages and verified codes within a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixCounts {
    pub sends: u32,
    pub verified: u32,
}

/// The messages reserved in one calendar month (UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthlyUsage {
    /// `YYYY-MM`.
    pub month: String,
    pub messages: u64,
    /// When the cap was reached (and audited), if it was.
    pub cap_reached_at: Option<i64>,
}

/// Stale buckets of any prefix forgotten per counted message: the table stays the size of
/// the window's traffic (each message adds at most one row) without a sweep of its own.
const PRUNE_PER_SEND: u32 = 16;

const BLOCK_COLS: &str = "prefix, blocked_at, blocked_until, sends, verified";

fn block_row(r: &Row<'_>) -> super::db::Result<FraudBlockRecord> {
    Ok(FraudBlockRecord {
        prefix: r.get(0)?,
        blocked_at: r.get(1)?,
        blocked_until: r.get(2)?,
        sends: r.get(3)?,
        verified: r.get(4)?,
    })
}

impl Tx<'_> {
    /// The block on `prefix` still in force at `now`, if any.
    pub fn sms_fraud_block(&self, prefix: &str, now: i64) -> Result<Option<FraudBlockRecord>> {
        Ok(row(
            self.0,
            &format!(
                "SELECT {BLOCK_COLS} FROM sms_fraud_blocks WHERE prefix = ?1 AND blocked_until > ?2"
            ),
            params![prefix, now],
            block_row,
        )
        .optional()?)
    }

    /// Note that `month` reached `cap` at `at`, with `audit`: true only for the first caller
    /// that finds the count at or past the cap (once per month).
    pub fn sms_mark_cap_reached(
        &self,
        month: &str,
        cap: u64,
        at: i64,
        audit: &NewAudit,
    ) -> Result<bool> {
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        exec_audited(
            self.0,
            "UPDATE sms_monthly_usage SET cap_reached_at = ?3 \
             WHERE month = ?1 AND cap_reached_at IS NULL AND ?2 > 0 AND messages >= ?2",
            params![month, cap, at],
            audit,
        )
    }

    pub fn sms_month_usage(&self, month: &str) -> Result<MonthlyUsage> {
        Ok(row(
            self.0,
            "SELECT messages, cap_reached_at FROM sms_monthly_usage WHERE month = ?1",
            params![month],
            |r| {
                Ok(MonthlyUsage {
                    month: month.to_string(),
                    messages: r.get::<_, i64>(0)?.max(0) as u64,
                    cap_reached_at: r.get(1)?,
                })
            },
        )
        .optional()?
        .unwrap_or(MonthlyUsage {
            month: month.to_string(),
            messages: 0,
            cap_reached_at: None,
        }))
    }

    /// Count one message to `prefix` in the bucket starting at `bucket_start` (its counts
    /// before it came from [`Tx::sms_send_check`]), and forget a few buckets (of any prefix)
    /// that start at or before `window_start`. Neither write waits for its answer.
    pub fn sms_count_prefix_send(
        &self,
        prefix: &str,
        bucket_start: i64,
        window_start: i64,
    ) -> Result<()> {
        let c = self.0;
        exec_later(
            c,
            "INSERT INTO sms_fraud_counts (prefix, bucket_start, sends, verified) \
             VALUES (?1, ?2, 1, 0) \
             ON CONFLICT (prefix, bucket_start) DO UPDATE SET sends = sms_fraud_counts.sends + 1",
            params![prefix, bucket_start],
        )?;
        exec_later(
            c,
            "DELETE FROM sms_fraud_counts WHERE rowid IN (SELECT rowid FROM sms_fraud_counts \
             WHERE bucket_start <= ?1 ORDER BY bucket_start LIMIT ?2)",
            params![window_start, PRUNE_PER_SEND],
        )?;
        Ok(())
    }

    /// A code sent in the bucket starting at `bucket_start` was verified. Counted only while
    /// that bucket is kept and only up to its messages (a bucket forgotten or reset by a
    /// lifted block gains nothing).
    pub fn sms_count_prefix_verified(&self, prefix: &str, bucket_start: i64) -> Result<()> {
        exec_later(
            self.0,
            "UPDATE sms_fraud_counts SET verified = verified + 1 \
             WHERE prefix = ?1 AND bucket_start = ?2 AND verified < sends",
            params![prefix, bucket_start],
        )?;
        Ok(())
    }

    /// Block a prefix, with `audit`: true when this call set the block, false when one was
    /// already in force (another kiosk judged it first).
    pub fn sms_block_prefix(&self, b: &FraudBlockRecord, audit: &NewAudit) -> Result<bool> {
        exec_audited(
            self.0,
            &format!(
                "INSERT INTO sms_fraud_blocks ({BLOCK_COLS}) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (prefix) DO UPDATE SET blocked_at = excluded.blocked_at, \
                 blocked_until = excluded.blocked_until, sends = excluded.sends, \
                 verified = excluded.verified \
                 WHERE sms_fraud_blocks.blocked_until <= excluded.blocked_at"
            ),
            params![b.prefix, b.blocked_at, b.blocked_until, b.sends, b.verified],
            audit,
        )
    }

    /// Lift the block on `prefix` and forget its counts (so that the next message does not
    /// block it again at once), with `audit`: false when no block row was there.
    pub fn sms_lift_block(&self, prefix: &str, audit: &NewAudit) -> Result<bool> {
        let c = self.0;
        let n = exec(
            c,
            "DELETE FROM sms_fraud_blocks WHERE prefix = ?1",
            params![prefix],
        )?;
        if n == 0 {
            return Ok(false);
        }
        exec(
            c,
            "DELETE FROM sms_fraud_counts WHERE prefix = ?1",
            params![prefix],
        )?;
        insert_audit(c, audit)?;
        Ok(true)
    }

    /// The blocks in force at `now`, newest first.
    pub fn sms_fraud_blocks(&self, now: i64) -> Result<Vec<FraudBlockRecord>> {
        let mut st = prepare(
            self.0,
            &format!(
                "SELECT {BLOCK_COLS} FROM sms_fraud_blocks WHERE blocked_until > ?1 \
                 ORDER BY blocked_at DESC, prefix"
            ),
        )?;
        let rows = st
            .query_map(params![now], block_row)?
            .collect::<super::db::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

/// The same, outside an atomic unit.
impl Store {
    pub fn sms_fraud_blocks(&self, now: i64) -> Result<Vec<FraudBlockRecord>> {
        self.read(|c| Tx(c).sms_fraud_blocks(now))
    }

    pub fn sms_month_usage(&self, month: &str) -> Result<MonthlyUsage> {
        self.read(|c| Tx(c).sms_month_usage(month))
    }

    /// [`Tx::sms_mark_cap_reached`] at start-up (a cap lowered below the month's count is
    /// reached without a message crossing it).
    pub fn sms_mark_cap_reached_at_start(
        &self,
        month: &str,
        cap: u64,
        at: i64,
        audit: &NewAudit,
    ) -> Result<bool> {
        self.tx(|c| Tx(c).sms_mark_cap_reached(month, cap, at, audit))
    }
}
