//! The users aggregate: user rows (name, display name, WebAuthn user handle) and the
//! service-desk reset, which revokes a user's credentials and removes their phones in one
//! transaction.

use super::db::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use time::OffsetDateTime;

use super::audit::insert_audit;
use super::{exec, fmt_time, parse_time, row, NewAudit, Result, Store, StoreError};
use crate::base::user::{is_valid_user_name, USER_NAME_RULE};

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct UserRecord {
    pub name: String,
    pub display_name: String,
    #[serde(skip)]
    pub user_handle: Vec<u8>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What a service-desk reset removed.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ResetReceipt {
    pub user: String,
    pub credentials_revoked: u64,
    pub phones_removed: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Sequence number of the audit line recording the reset.
    pub audit_seq: i64,
}

fn user_from_row(r: &Row<'_>) -> super::db::Result<(String, String, Vec<u8>, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_user(t: (String, String, Vec<u8>, String)) -> Result<UserRecord> {
    Ok(UserRecord {
        name: t.0,
        display_name: t.1,
        user_handle: t.2,
        created_at: parse_time(&t.3)?,
    })
}

/// The user `name`, created with `new_handle` when absent; an existing user's display name is
/// updated (the handle never changes).
pub(super) fn upsert_user_row(
    c: &Connection,
    name: &str,
    display_name: &str,
    new_handle: &[u8],
    created_at: OffsetDateTime,
) -> Result<UserRecord> {
    exec(
        c,
        "INSERT INTO users (name, display_name, user_handle, created_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT(name) DO UPDATE SET display_name = excluded.display_name",
        params![name, display_name, new_handle, fmt_time(created_at)],
    )?;
    let t = row(
        c,
        "SELECT name, display_name, user_handle, created_at FROM users WHERE name = ?1",
        params![name],
        user_from_row,
    )?;
    to_user(t)
}

impl Store {
    pub fn get_user(&self, name: &str) -> Result<Option<UserRecord>> {
        let c = self.reader();
        row(
            &c,
            "SELECT name, display_name, user_handle, created_at FROM users WHERE name = ?1",
            params![name],
            user_from_row,
        )
        .optional()?
        .map(to_user)
        .transpose()
    }

    pub fn find_user_by_handle(&self, handle: &[u8]) -> Result<Option<UserRecord>> {
        let c = self.reader();
        row(
            &c,
            "SELECT name, display_name, user_handle, created_at FROM users WHERE user_handle = ?1",
            params![handle],
            user_from_row,
        )
        .optional()?
        .map(to_user)
        .transpose()
    }

    /// Returns the user, creating it with `new_handle` when absent; an existing user's
    /// display name is updated.
    pub async fn upsert_user(
        &self,
        name: &str,
        display_name: &str,
        new_handle: &[u8],
    ) -> Result<UserRecord> {
        let (name, display_name, new_handle) = (
            name.to_string(),
            display_name.to_string(),
            new_handle.to_vec(),
        );
        let at = self.now();
        self.write(move |c| upsert_user_row(c, &name, &display_name, &new_handle, at))
            .await
    }

    /// Migration check for the one user-name rule ([`is_valid_user_name`]): the distinct
    /// user names, in the users table and the phone and SMS tables, that break it (rows stored
    /// before the rule). They are reported, never dropped or changed.
    pub fn users_breaking_name_rule(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT name FROM users UNION SELECT user_name FROM phones \
                 UNION SELECT user_name FROM sms_challenges \
                 UNION SELECT user_name FROM sms_user_state ORDER BY 1",
            )?;
            let names = st.query_map([], |r| r.get::<_, String>(0))?;
            let mut bad = Vec::new();
            for n in names {
                let n = n?;
                if !is_valid_user_name(&n) {
                    bad.push(n);
                }
            }
            Ok(bad)
        })
    }

    /// At open: warn about rows whose user name breaks the rule (count and the first 10,
    /// escaped by `Debug`: they may hold control characters).
    pub(super) fn warn_about_user_names(&self) -> Result<()> {
        let bad = self.users_breaking_name_rule()?;
        if !bad.is_empty() {
            tracing::warn!(
                count = bad.len(),
                names = ?&bad[..bad.len().min(10)],
                rule = USER_NAME_RULE,
                "stored user names break the user-name rule; they are kept as they are"
            );
        }
        Ok(())
    }

    /// One page of users in name order: at most `limit` (at least 1) users whose names sort
    /// after `after`, and the cursor for the next page (the page's last name) when more
    /// users follow.
    pub fn list_users_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<UserRecord>, Option<String>)> {
        let limit = limit.max(1);
        let mut page = self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT name, display_name, user_handle, created_at FROM users \
                 WHERE ?1 IS NULL OR name > ?1 ORDER BY name LIMIT ?2",
            )?;
            let rows = st.query_map(
                params![
                    after,
                    i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1)
                ],
                user_from_row,
            )?;
            rows.map(|r| to_user(r?)).collect::<Result<Vec<_>>>()
        })?;
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|u| u.name.clone())
        } else {
            None
        };
        Ok((page, next))
    }

    pub fn list_users(&self) -> Result<Vec<UserRecord>> {
        let c = self.reader();
        let mut st = c.prepare(
            "SELECT name, display_name, user_handle, created_at FROM users ORDER BY name",
        )?;
        let rows = st.query_map([], user_from_row)?;
        rows.map(|r| to_user(r?)).collect()
    }

    /// Service-desk reset: revoke every credential of the user and remove their phones;
    /// audited; returns a receipt. NotFound for an unknown user.
    pub async fn reset_user(&self, user: &str, actor: &str) -> Result<ResetReceipt> {
        let user = user.to_string();
        let actor = actor.to_string();
        let at = self.now();
        self.write(move |c| {
            let exists: Option<String> = c
                .query_row(
                    "SELECT name FROM users WHERE name = ?1",
                    params![user],
                    |r| r.get(0),
                )
                .optional()?;
            exists.ok_or(StoreError::NotFound)?;
            let creds = exec(
                c,
                "UPDATE credentials SET state = 'revoked', state_reason = 'service desk reset' \
                 WHERE user_name = ?1 AND state != 'revoked'",
                params![user],
            )? as u64;
            let phones = exec(c, "DELETE FROM phones WHERE user_name = ?1", params![user])? as u64;
            exec(
                c,
                "UPDATE sms_challenges SET state = 'cancelled', code_enc = NULL \
                 WHERE user_name = ?1 AND state = 'pending'",
                params![user],
            )?;
            let seq = insert_audit(
                c,
                &NewAudit::new("user.reset", &actor)
                    .user(&user)
                    .detail(serde_json::json!({
                        "credentials_revoked": creds,
                        "phones_removed": phones,
                    })),
            )?;
            Ok(ResetReceipt {
                user: user.to_string(),
                credentials_revoked: creds,
                phones_removed: phones,
                at,
                audit_seq: seq,
            })
        })
        .await
    }
}
