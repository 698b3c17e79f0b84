//! API tokens: their hashes, roles and revocation, and the one read on every request's path
//! (a token and, for a kiosk page session, its expiry), served by a reader connection.

use super::db::{params, OptionalExtension};
use time::OffsetDateTime;

use super::audit::{exec_audited, insert_audit};
use super::{exec, fmt_time, parse_time, row, NewAudit, Result, Store};

#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub id: String,
    pub role: String,
    pub hash: Vec<u8>,
    pub label: Option<String>,
    pub created_at: OffsetDateTime,
    pub revoked: bool,
}

impl Store {
    pub async fn insert_token(&self, rec: &TokenRecord, audit: &NewAudit) -> Result<()> {
        let rec = rec.clone();
        let audit = audit.clone();
        self.write(move |c| {
            exec(c,
                "INSERT INTO tokens (id, role, hash, label, created_at, revoked) VALUES (?1, ?2, ?3, ?4, ?5, 0)",
                params![rec.id, rec.role, rec.hash, rec.label, fmt_time(rec.created_at)],
            )?;
            insert_audit(c, &audit)?;
            Ok(())
        })
        .await
    }

    pub fn get_token(&self, id: &str) -> Result<Option<TokenRecord>> {
        Ok(self.token_for_auth(id)?.map(|(t, _)| t))
    }

    /// A token and, when it is a kiosk page session, that session's expiry (Unix seconds):
    /// one read on a reader connection, on every request's path.
    pub fn token_for_auth(&self, id: &str) -> Result<Option<(TokenRecord, Option<i64>)>> {
        let c = self.reader();
        let found = row(
            &c,
            "SELECT t.id, t.role, t.hash, t.label, t.created_at, t.revoked, s.expires_at \
             FROM tokens t LEFT JOIN kiosk_sessions s ON s.token_id = t.id WHERE t.id = ?1",
            params![id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, bool>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                ))
            },
        )
        .optional()?;
        found
            .map(|t| {
                Ok((
                    TokenRecord {
                        id: t.0,
                        role: t.1,
                        hash: t.2,
                        label: t.3,
                        created_at: parse_time(&t.4)?,
                        revoked: t.5,
                    },
                    t.6,
                ))
            })
            .transpose()
    }

    pub async fn revoke_token(&self, id: &str, audit: &NewAudit) -> Result<bool> {
        let id = id.to_string();
        let audit = audit.clone();
        self.write(move |c| {
            exec_audited(
                c,
                "UPDATE tokens SET revoked = 1 WHERE id = ?1 AND revoked = 0",
                params![id],
                &audit,
            )
        })
        .await
    }
}
