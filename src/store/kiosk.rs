//! One-time kiosk session codes.

use rusqlite::params;
use time::OffsetDateTime;

use super::{fmt_time, now, Result, Store};

impl Store {
    pub fn insert_kiosk_code(&self, code_hash: &[u8], expires_at: OffsetDateTime) -> Result<()> {
        self.conn().execute(
            "INSERT INTO kiosk_codes (code_hash, created_at, expires_at) VALUES (?1, ?2, ?3)",
            params![code_hash, fmt_time(now()), fmt_time(expires_at)],
        )?;
        Ok(())
    }

    /// Use a code once: true only for the first use of an unexpired code.
    pub fn consume_kiosk_code(&self, code_hash: &[u8]) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE kiosk_codes SET used_at = ?2 WHERE code_hash = ?1 AND used_at IS NULL AND expires_at > ?2",
            params![code_hash, fmt_time(now())],
        )?;
        Ok(n == 1)
    }
}
