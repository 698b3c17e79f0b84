//! The credentials aggregate: a security key's credential (public key, signature counter,
//! attestation facts, state) and every change to it, each stored together with its
//! ceremony's end and its audit line in one transaction.

use super::db::{params, OptionalExtension, Row};
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::audit::insert_audit;
use super::ceremonies::set_ceremony_state;
use super::users::{upsert_user_row, UserRecord};
use super::{
    exec, fmt_time, parse_opt_time, parse_time, prepare, row, NewAudit, Result, Store, StoreError,
};

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialState {
    Active,
    Quarantined,
    Revoked,
}

impl CredentialState {
    fn as_str(self) -> &'static str {
        match self {
            CredentialState::Active => "active",
            CredentialState::Quarantined => "quarantined",
            CredentialState::Revoked => "revoked",
        }
    }
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "active" => CredentialState::Active,
            "quarantined" => CredentialState::Quarantined,
            "revoked" => CredentialState::Revoked,
            other => return Err(StoreError::Corrupt(format!("credential state {other}"))),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CredentialRecord {
    /// Raw credential id bytes.
    pub id: Vec<u8>,
    pub user: String,
    /// The relying-party library's serialised credential (opaque to the store).
    pub rp_credential: String,
    /// COSE_Key of the credential public key.
    pub public_key_cose: Vec<u8>,
    pub counter: u32,
    pub aaguid: Option<Uuid>,
    pub attestation_format: String,
    /// The attestation chained to a trusted CA.
    pub attested: bool,
    pub discoverable: bool,
    pub user_verified: bool,
    pub nickname: Option<String>,
    pub model: Option<String>,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub state: CredentialState,
    pub state_reason: Option<String>,
}

const CRED_COLS: &str = "id, user_name, rp_credential, public_key_cose, counter, aaguid, \
    attestation_format, attested, discoverable, user_verified, nickname, model, created_at, \
    last_used_at, state, state_reason";

fn cred_from_row(r: &Row<'_>) -> super::db::Result<(CredentialRecordRaw,)> {
    Ok((CredentialRecordRaw {
        id: r.get(0)?,
        user: r.get(1)?,
        rp_credential: r.get(2)?,
        public_key_cose: r.get(3)?,
        counter: r.get(4)?,
        aaguid: r.get(5)?,
        attestation_format: r.get(6)?,
        attested: r.get(7)?,
        discoverable: r.get(8)?,
        user_verified: r.get(9)?,
        nickname: r.get(10)?,
        model: r.get(11)?,
        created_at: r.get(12)?,
        last_used_at: r.get(13)?,
        state: r.get(14)?,
        state_reason: r.get(15)?,
    },))
}

struct CredentialRecordRaw {
    id: Vec<u8>,
    user: String,
    rp_credential: String,
    public_key_cose: Vec<u8>,
    counter: i64,
    aaguid: Option<String>,
    attestation_format: String,
    attested: bool,
    discoverable: bool,
    user_verified: bool,
    nickname: Option<String>,
    model: Option<String>,
    created_at: String,
    last_used_at: Option<String>,
    state: String,
    state_reason: Option<String>,
}

impl CredentialRecordRaw {
    fn into_record(self) -> Result<CredentialRecord> {
        Ok(CredentialRecord {
            id: self.id,
            user: self.user,
            rp_credential: self.rp_credential,
            public_key_cose: self.public_key_cose,
            counter: u32::try_from(self.counter)
                .map_err(|_| StoreError::Corrupt("counter".into()))?,
            aaguid: self
                .aaguid
                .map(|s| Uuid::parse_str(&s).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()?,
            attestation_format: self.attestation_format,
            attested: self.attested,
            discoverable: self.discoverable,
            user_verified: self.user_verified,
            nickname: self.nickname,
            model: self.model,
            created_at: parse_time(&self.created_at)?,
            last_used_at: parse_opt_time(self.last_used_at)?,
            state: CredentialState::parse(&self.state)?,
            state_reason: self.state_reason,
        })
    }
}

impl Store {
    pub fn list_credentials(
        &self,
        user: &str,
        include_revoked: bool,
    ) -> Result<Vec<CredentialRecord>> {
        let c = self.reader();
        let sql =
            format!(
            "SELECT {CRED_COLS} FROM credentials WHERE user_name = ?1 {} ORDER BY created_at, id",
            if include_revoked { "" } else { "AND state != 'revoked'" }
        );
        let mut st = prepare(&c, &sql)?;
        let rows = st.query_map(params![user], cred_from_row)?;
        rows.map(|r| r?.0.into_record()).collect()
    }

    pub fn get_credential(&self, id: &[u8]) -> Result<Option<CredentialRecord>> {
        let c = self.reader();
        row(
            &c,
            &format!("SELECT {CRED_COLS} FROM credentials WHERE id = ?1"),
            params![id],
            cred_from_row,
        )
        .optional()?
        .map(|r| r.0.into_record())
        .transpose()
    }

    /// Store a new credential, end its ceremony as `succeeded` and audit it, atomically.
    /// A new credential of `user`, stored together with the user row (created, or its display
    /// name updated), its ceremony's success and the audit line. Fails without storing anything
    /// when the user row exists with another user handle than the one the key was given (two
    /// first enrollments of one user raced).
    pub async fn insert_credential(
        &self,
        user: &UserRecord,
        cred: &CredentialRecord,
        ceremony_id: &str,
        audit: &NewAudit,
    ) -> Result<()> {
        let user = user.clone();
        let cred = cred.clone();
        let ceremony_id = ceremony_id.to_string();
        let audit = audit.clone();
        self.write(move |c| {
            let stored = upsert_user_row(
                c,
                &user.name,
                &user.display_name,
                &user.user_handle,
                user.created_at,
            )?;
            if stored.user_handle != user.user_handle {
                return Err(StoreError::Db(format!(
                    "user {} was created by a concurrent enrollment",
                    user.name
                )));
            }
            exec(c,
                &format!(
                    "INSERT INTO credentials ({CRED_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
                ),
                params![
                    cred.id,
                    cred.user,
                    cred.rp_credential,
                    cred.public_key_cose,
                    cred.counter as i64,
                    cred.aaguid.map(|u| u.to_string()),
                    cred.attestation_format,
                    cred.attested,
                    cred.discoverable,
                    cred.user_verified,
                    cred.nickname,
                    cred.model,
                    fmt_time(cred.created_at),
                    cred.last_used_at.map(fmt_time),
                    cred.state.as_str(),
                    cred.state_reason
                ],
            )?;
            set_ceremony_state(c, &ceremony_id, "succeeded", None)?;
            insert_audit(c, &audit)?;
            Ok(())
        })
        .await
    }

    /// Record a verified assertion: new counter and serialised credential, last use,
    /// ceremony success and audit, atomically. Fails with `Conflict` when the credential is
    /// no longer active (revoked or quarantined concurrently).
    pub async fn record_assertion(
        &self,
        cred_id: &[u8],
        counter: u32,
        rp_credential: &str,
        ceremony_id: &str,
        audit: &NewAudit,
    ) -> Result<()> {
        let cred_id = cred_id.to_vec();
        let rp_credential = rp_credential.to_string();
        let ceremony_id = ceremony_id.to_string();
        let audit = audit.clone();
        self.write(move |c| {
            // Compare-and-set on the counter: two ceremonies racing on two devices (a key and
            // its clone) cannot both move it from the same stored value. A key that always
            // reports 0 stays at 0.
            let n = exec(
                c,
                "UPDATE credentials SET counter = ?2, rp_credential = ?3, last_used_at = keygate_now() \
                 WHERE id = ?1 AND state = 'active' AND (counter < ?2 OR (counter = 0 AND ?2 = 0))",
                params![cred_id, counter as i64, rp_credential],
            )?;
            if n != 1 {
                let state: Option<String> = c
                    .query_row(
                        "SELECT state FROM credentials WHERE id = ?1",
                        params![cred_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                return Err(match state.as_deref() {
                    Some("active") => StoreError::CounterNotAbove,
                    _ => StoreError::Conflict("credential is not active".into()),
                });
            }
            set_ceremony_state(c, &ceremony_id, "succeeded", None)?;
            insert_audit(c, &audit)?;
            Ok(())
        })
        .await
    }

    /// Put a credential into quarantine (possible clone), fail the ceremony, audit; atomically.
    pub async fn quarantine_credential(
        &self,
        cred_id: &[u8],
        reason: &str,
        ceremony_id: &str,
        audit: &NewAudit,
    ) -> Result<()> {
        let cred_id = cred_id.to_vec();
        let reason = reason.to_string();
        let ceremony_id = ceremony_id.to_string();
        let audit = audit.clone();
        self.write(move |c| {
            exec(c,
                "UPDATE credentials SET state = 'quarantined', state_reason = ?2 WHERE id = ?1 AND state = 'active'",
                params![cred_id, reason],
            )?;
            set_ceremony_state(c, &ceremony_id, "failed", Some("possible_cloned_key"))?;
            insert_audit(c, &audit)?;
            Ok(())
        })
        .await
    }

    /// Move a user's credential to `to` from one of `from`; audits. NotFound when no such
    /// credential of that user; Conflict when it is not in one of `from`.
    pub async fn transition_credential(
        &self,
        user: &str,
        cred_id: &[u8],
        from: &[CredentialState],
        to: CredentialState,
        reason: Option<&str>,
        audit: &NewAudit,
    ) -> Result<CredentialRecord> {
        let user = user.to_string();
        let cred_id = cred_id.to_vec();
        let from = from.to_vec();
        let reason = reason.map(str::to_string);
        let audit = audit.clone();
        self.write(move |c| {
            let state: Option<String> = c
                .query_row(
                    "SELECT state FROM credentials WHERE id = ?1 AND user_name = ?2",
                    params![cred_id, user],
                    |r| r.get(0),
                )
                .optional()?;
            let state = CredentialState::parse(&state.ok_or(StoreError::NotFound)?)?;
            if !from.contains(&state) {
                return Err(StoreError::Conflict(format!(
                    "credential is {}",
                    state.as_str()
                )));
            }
            exec(
                c,
                "UPDATE credentials SET state = ?2, state_reason = ?3 WHERE id = ?1",
                params![cred_id, to.as_str(), reason],
            )?;
            insert_audit(c, &audit)?;
            let raw = row(
                c,
                &format!("SELECT {CRED_COLS} FROM credentials WHERE id = ?1"),
                params![cred_id],
                cred_from_row,
            )?;
            raw.0.into_record()
        })
        .await
    }

    pub async fn rename_credential(
        &self,
        user: &str,
        cred_id: &[u8],
        nickname: Option<&str>,
        audit: &NewAudit,
    ) -> Result<CredentialRecord> {
        let user = user.to_string();
        let cred_id = cred_id.to_vec();
        let nickname = nickname.map(str::to_string);
        let audit = audit.clone();
        self.write(move |c| {
            let n = exec(c,
                "UPDATE credentials SET nickname = ?3 WHERE id = ?1 AND user_name = ?2 AND state != 'revoked'",
                params![cred_id, user, nickname],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            insert_audit(c, &audit)?;
            let raw = row(c,
                &format!("SELECT {CRED_COLS} FROM credentials WHERE id = ?1"),
                params![cred_id],
                cred_from_row,
            )?;
            raw.0.into_record()
        })
        .await
    }
}
