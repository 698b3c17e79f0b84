//! Counts read when `/metrics` is scraped: small reads on a reader connection, never on the
//! hot path.

use super::db::params;

use super::{row, Result, Store};

impl Store {
    /// Outbox messages still to send (`pending`): counted on the outbox's queue index
    /// (`sms_outbox_due`), so the read is as long as the queue, not the table.
    pub fn sms_outbox_pending(&self) -> Result<u64> {
        self.read(|c| {
            Ok(row(
                c,
                "SELECT count(*) FROM sms_outbox WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )?)
        })
    }

    /// Users whose SMS lock runs past `now` (Unix ms, the SMS layer's clock). Reads the whole
    /// `sms_user_state` table (one row per user who ever typed a wrong code): bounded by the
    /// campus's size, and read once per scrape.
    pub fn sms_users_locked(&self, now: i64) -> Result<u64> {
        self.read(|c| {
            Ok(row(
                c,
                "SELECT count(*) FROM sms_user_state WHERE locked_until > ?1",
                params![now],
                |r| r.get(0),
            )?)
        })
    }
}
