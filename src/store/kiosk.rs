//! The kiosk page's server-side state: one-time session codes, page sessions (server-side
//! expiry and the student a session is bound to), and used sign-in handoffs.

use super::db::{params, OptionalExtension};
use time::OffsetDateTime;

use super::{exec, fmt_time, row, Result, Store};

/// A kiosk page session: the API token behind one `keygate kiosk-url` cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KioskSessionRecord {
    pub token_id: String,
    /// Unix seconds; the token is refused from then on.
    pub expires_at: i64,
    /// The student the session acts for, from a verified handoff or the trusted header.
    pub bound_user: Option<String>,
    pub bound_display_name: Option<String>,
}

impl Store {
    pub async fn insert_kiosk_code(
        &self,
        code_hash: &[u8],
        expires_at: OffsetDateTime,
    ) -> Result<()> {
        let code_hash = code_hash.to_vec();
        self.write(move |c| {
            exec(
                c,
                "INSERT INTO kiosk_codes (code_hash, created_at, expires_at) VALUES (?1, keygate_now(), ?2)",
                params![code_hash, fmt_time(expires_at)],
            )?;
            Ok(())
        })
        .await
    }

    /// Use a code once: true only for the first use of an unexpired code.
    pub async fn consume_kiosk_code(&self, code_hash: &[u8]) -> Result<bool> {
        let code_hash = code_hash.to_vec();
        self.write(move |c| {
            let n = exec(c,
                "UPDATE kiosk_codes SET used_at = keygate_now() WHERE code_hash = ?1 AND used_at IS NULL \
                 AND expires_at > keygate_now()",
                params![code_hash],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// Mark `token_id` as a kiosk page session valid until `expires_at` (Unix seconds), bound
    /// to nobody. Rows are never deleted: a token with a row stays a page session for good.
    pub async fn insert_kiosk_session(&self, token_id: &str, expires_at: i64) -> Result<()> {
        let token_id = token_id.to_string();
        self.write(move |c| {
            exec(
                c,
                "INSERT INTO kiosk_sessions (token_id, created_at, expires_at) VALUES (?1, keygate_now(), ?2)",
                params![token_id, expires_at],
            )?;
            Ok(())
        })
        .await
    }

    /// The page session behind `token_id`; None for every other token.
    pub fn kiosk_session(&self, token_id: &str) -> Result<Option<KioskSessionRecord>> {
        Ok(row(
            &self.reader(),
                "SELECT token_id, expires_at, bound_user, bound_display_name FROM kiosk_sessions WHERE token_id = ?1",
                params![token_id],
                |r| {
                    Ok(KioskSessionRecord {
                        token_id: r.get(0)?,
                        expires_at: r.get(1)?,
                        bound_user: r.get(2)?,
                        bound_display_name: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Bind a page session to a student (`Some((user, display_name))`) or to nobody (`None`).
    /// False when `token_id` is no page session.
    pub async fn bind_kiosk_session(
        &self,
        token_id: &str,
        user: Option<(&str, &str)>,
    ) -> Result<bool> {
        let token_id = token_id.to_string();
        let user = user.map(|(a, b)| (a.to_string(), b.to_string()));
        self.write(move |c| {
            let (u, d) = user.unzip();
            let n = exec(
                c,
                "UPDATE kiosk_sessions SET bound_user = ?2, bound_display_name = ?3, \
                 bound_at = CASE WHEN ?2 IS NULL THEN NULL ELSE keygate_now() END WHERE token_id = ?1",
                params![token_id, u, d],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// Record a handoff token (by hash) as used until `expires_at` (Unix seconds): true only
    /// the first time. Entries whose handoff has expired by `now_unix` are forgotten, since
    /// the token itself is refused from then on.
    pub async fn use_kiosk_handoff(
        &self,
        token_hash: &[u8],
        expires_at: i64,
        now_unix: i64,
    ) -> Result<bool> {
        let token_hash = token_hash.to_vec();
        self.write(move |c| {
            exec(
                c,
                "DELETE FROM kiosk_handoffs_used WHERE expires_at <= ?1",
                params![now_unix],
            )?;
            let n = exec(
                c,
                "INSERT OR IGNORE INTO kiosk_handoffs_used (token_hash, expires_at) VALUES (?1, ?2)",
                params![token_hash, expires_at],
            )?;
            Ok(n == 1)
        })
        .await
    }
}
