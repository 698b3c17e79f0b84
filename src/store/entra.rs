//! The Entra aggregate: keys enrolled into users' Microsoft Entra ID accounts (the passkey as
//! Graph registered it, plus what keygate needs to verify the key locally: public key, counter,
//! rp id, Entra's user handle), and the Entra sync state of phones. Every change is stored
//! together with its audit line (and its ceremony's end) in one transaction.

use super::db::{params, OptionalExtension, Row};
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::audit::insert_audit;
use super::ceremonies::set_ceremony_state;
use super::users::{upsert_user_row, UserRecord};
use super::{
    exec, fmt_time, parse_opt_time, parse_time, row, NewAudit, Result, Store, StoreError, Tx,
};

/// A key enrolled into a user's Entra account.
#[derive(Debug, Clone, PartialEq)]
pub struct EntraPasskeyRecord {
    pub credential_id: Vec<u8>,
    pub user: String,
    pub upn: String,
    /// Graph's fido2AuthenticationMethod id.
    pub method_id: String,
    pub rp_id: String,
    /// The user handle Entra gave the key (`publicKey.user.id`).
    pub entra_user_id: Vec<u8>,
    /// COSE_Key of the credential public key, as the key encoded it.
    pub public_key_cose: Vec<u8>,
    pub counter: u32,
    pub aaguid: Option<Uuid>,
    pub model: Option<String>,
    pub attestation_level: Option<String>,
    pub display_name: String,
    pub cred_protect: Option<u8>,
    pub hmac_secret: bool,
    pub user_verified: bool,
    pub created_at: OffsetDateTime,
    /// The caller that enrolled it (`token:<id>`).
    pub created_by: Option<String>,
    pub last_used_at: Option<OffsetDateTime>,
}

const COLS: &str = "credential_id, user_name, upn, method_id, rp_id, entra_user_id, \
    public_key_cose, counter, aaguid, model, attestation_level, display_name, cred_protect, \
    hmac_secret, user_verified, created_at, created_by, last_used_at";

fn from_row(r: &Row<'_>) -> super::db::Result<Result<EntraPasskeyRecord>> {
    let counter: i64 = r.get(7)?;
    let aaguid: Option<String> = r.get(8)?;
    let cred_protect: Option<i64> = r.get(12)?;
    let created_at: String = r.get(15)?;
    let last_used_at: Option<String> = r.get(17)?;
    let base = EntraPasskeyRecord {
        credential_id: r.get(0)?,
        user: r.get(1)?,
        upn: r.get(2)?,
        method_id: r.get(3)?,
        rp_id: r.get(4)?,
        entra_user_id: r.get(5)?,
        public_key_cose: r.get(6)?,
        counter: 0,
        aaguid: None,
        model: r.get(9)?,
        attestation_level: r.get(10)?,
        display_name: r.get(11)?,
        cred_protect: None,
        hmac_secret: r.get(13)?,
        user_verified: r.get(14)?,
        created_at: OffsetDateTime::UNIX_EPOCH,
        created_by: r.get(16)?,
        last_used_at: None,
    };
    Ok((|| {
        Ok(EntraPasskeyRecord {
            counter: u32::try_from(counter).map_err(|_| StoreError::Corrupt("counter".into()))?,
            aaguid: aaguid
                .map(|s| Uuid::parse_str(&s).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()?,
            cred_protect: cred_protect
                .map(|l| u8::try_from(l).map_err(|_| StoreError::Corrupt("cred_protect".into())))
                .transpose()?,
            created_at: parse_time(&created_at)?,
            last_used_at: parse_opt_time(last_used_at)?,
            ..base
        })
    })())
}

/// What an Entra sync of a phone came to (`phones.entra_*`).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct PhoneEntraSync {
    /// `pending` (being added to Entra), `synced` or `failed`.
    #[schema(pattern = "^(pending|synced|failed)$")]
    pub state: String,
    /// Graph's phoneAuthenticationMethod id, once synced.
    pub method_id: Option<String>,
    /// The error code of the last failed attempt (`entra_forbidden`, ...).
    pub error: Option<String>,
}

impl Store {
    /// Store a new Entra passkey together with its user row (created with `user`'s handle when
    /// absent, display name updated otherwise), its ceremony's success and the audit line.
    pub async fn insert_entra_passkey(
        &self,
        user: &UserRecord,
        rec: &EntraPasskeyRecord,
        ceremony_id: &str,
        audit: &NewAudit,
    ) -> Result<()> {
        let (user, rec, ceremony_id, audit) = (
            user.clone(),
            rec.clone(),
            ceremony_id.to_string(),
            audit.clone(),
        );
        self.write(move |c| {
            upsert_user_row(
                c,
                &user.name,
                &user.display_name,
                &user.user_handle,
                user.created_at,
            )?;
            exec(
                c,
                &format!(
                    "INSERT INTO entra_passkeys ({COLS}) VALUES \
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
                ),
                params![
                    rec.credential_id,
                    rec.user,
                    rec.upn,
                    rec.method_id,
                    rec.rp_id,
                    rec.entra_user_id,
                    rec.public_key_cose,
                    rec.counter as i64,
                    rec.aaguid.map(|u| u.to_string()),
                    rec.model,
                    rec.attestation_level,
                    rec.display_name,
                    rec.cred_protect.map(i64::from),
                    rec.hmac_secret,
                    rec.user_verified,
                    fmt_time(rec.created_at),
                    rec.created_by,
                    rec.last_used_at.map(fmt_time),
                ],
            )?;
            set_ceremony_state(c, &ceremony_id, "succeeded", None)?;
            insert_audit(c, &audit)?;
            Ok(())
        })
        .await
    }

    pub fn get_entra_passkey(&self, credential_id: &[u8]) -> Result<Option<EntraPasskeyRecord>> {
        self.read(|c| {
            row(
                c,
                &format!("SELECT {COLS} FROM entra_passkeys WHERE credential_id = ?1"),
                params![credential_id],
                from_row,
            )
            .optional()?
            .transpose()
        })
    }

    /// The Entra passkey `credential_id` while it is in use: one marked lost (deleted from
    /// the user's Entra account, `PATCH /v1/keys/entra:{id}`) is not found, as a revoked local
    /// credential is not.
    pub fn entra_passkey_in_use(&self, credential_id: &[u8]) -> Result<Option<EntraPasskeyRecord>> {
        self.read(|c| {
            row(
                c,
                &format!(
                    "SELECT {COLS} FROM entra_passkeys WHERE credential_id = ?1 AND state = 'active'"
                ),
                params![credential_id],
                from_row,
            )
            .optional()?
            .transpose()
        })
    }

    /// A user's Entra passkeys, oldest first.
    pub fn list_entra_passkeys(&self, user: &str) -> Result<Vec<EntraPasskeyRecord>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLS} FROM entra_passkeys WHERE user_name = ?1 ORDER BY created_at, credential_id"
            ))?;
            let rows = st
                .query_map(params![user], from_row)?
                .collect::<super::db::Result<Vec<_>>>()?;
            rows.into_iter().collect()
        })
    }

    /// The relying-party ids of every stored Entra passkey (`login.microsoft.com`), sorted.
    pub fn entra_rp_ids(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut st =
                c.prepare_cached("SELECT DISTINCT rp_id FROM entra_passkeys ORDER BY rp_id")?;
            let ids = st
                .query_map([], |r| r.get(0))?
                .collect::<super::db::Result<Vec<String>>>()?;
            Ok(ids)
        })
    }

    /// A verified assertion of an Entra passkey: the counter (never moved down), last use, the
    /// ceremony's success and the audit line, atomically. `CounterNotAbove` when both the
    /// stored and the presented counter are non-zero and the presented one is not above
    /// (checked and set in one statement, so two racing ceremonies cannot both pass).
    pub async fn record_entra_assertion(
        &self,
        credential_id: &[u8],
        counter: u32,
        ceremony_id: &str,
        audit: &NewAudit,
    ) -> Result<()> {
        let (id, ceremony_id, audit) = (
            credential_id.to_vec(),
            ceremony_id.to_string(),
            audit.clone(),
        );
        self.write(move |c| {
            let n = exec(
                c,
                "UPDATE entra_passkeys SET counter = MAX(counter, ?2), last_used_at = keygate_now() \
                 WHERE credential_id = ?1 AND NOT (counter != 0 AND ?2 != 0 AND ?2 <= counter)",
                params![id, counter as i64],
            )?;
            if n != 1 {
                let found: Option<i64> = c
                    .query_row(
                        "SELECT counter FROM entra_passkeys WHERE credential_id = ?1",
                        params![id],
                        |r| r.get(0),
                    )
                    .optional()?;
                return Err(match found {
                    Some(_) => StoreError::CounterNotAbove,
                    None => StoreError::NotFound,
                });
            }
            set_ceremony_state(c, &ceremony_id, "succeeded", None)?;
            insert_audit(c, &audit)?;
            Ok(())
        })
        .await
    }

    /// Forget the local record of the user's Entra passkey `method_id` (Graph deleted it) and
    /// audit the deletion (written whether or not a record existed); returns whether one did.
    pub async fn delete_entra_passkey(
        &self,
        user: &str,
        method_id: &str,
        audit: &NewAudit,
    ) -> Result<bool> {
        let (user, method_id, audit) = (user.to_string(), method_id.to_string(), audit.clone());
        self.write(move |c| {
            let n = exec(
                c,
                "DELETE FROM entra_passkeys WHERE user_name = ?1 AND method_id = ?2",
                params![user, method_id],
            )?;
            let mut audit = audit;
            if let serde_json::Value::Object(m) = &mut audit.detail {
                m.insert("local_record_removed".into(), (n > 0).into());
            }
            insert_audit(c, &audit)?;
            Ok(n > 0)
        })
        .await
    }

    /// Record a phone's Entra sync outcome (with its audit line). Returns false when the phone
    /// is gone (removed meanwhile): nothing is written then.
    pub async fn set_phone_entra_state(
        &self,
        phone_id: &str,
        sync: &PhoneEntraSync,
        audit: Option<&NewAudit>,
    ) -> Result<bool> {
        let (phone_id, sync, audit) = (phone_id.to_string(), sync.clone(), audit.cloned());
        self.atomic(move |tx| {
            let n = tx.set_phone_entra_state(&phone_id, &sync)?;
            if n {
                if let Some(a) = &audit {
                    insert_audit(tx.0, a)?;
                }
            }
            Ok(n)
        })
        .await
    }

    /// Phones whose Entra sync was cut short (by a restart): `(phone id, user, number)`.
    pub fn phones_pending_entra_sync(&self) -> Result<Vec<(String, String, String)>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, user_name, e164 FROM phones WHERE entra_state = 'pending' ORDER BY verified_at",
            )?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<super::db::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }
}

impl Tx<'_> {
    /// Set a phone's Entra sync columns; false when there is no such phone.
    pub fn set_phone_entra_state(&self, phone_id: &str, sync: &PhoneEntraSync) -> Result<bool> {
        let n = exec(
            self.0,
            "UPDATE phones SET entra_state = ?2, entra_method_id = ?3, entra_error = ?4 WHERE id = ?1",
            params![phone_id, sync.state, sync.method_id, sync.error],
        )?;
        Ok(n > 0)
    }
}
