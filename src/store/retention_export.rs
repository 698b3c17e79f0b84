//! The subject export (`GET /v1/users/{user}/export`): everything the store holds about one
//! person, for a data-subject access request. Columns are named one by one: secrets and
//! internal state (an SMS code's MAC and encrypted copy, the relying party's serialised
//! credential, Idempotency-Keys) never leave; blobs are base64url.

use super::db::ValueRef;
use super::db::{params, Connection};
use base64::Engine;
use serde_json::{Map, Value};

use super::{prepare, Result, Store, StoreError};

/// (section, SQL with `?1` the user). Each section is a list of rows as JSON objects.
const SECTIONS: &[(&str, &str)] = &[
    (
        "credentials",
        "SELECT id, public_key_cose, counter, aaguid, attestation_format, attested, discoverable, \
         user_verified, nickname, model, created_at, last_used_at, state, state_reason \
         FROM credentials WHERE user_name = ?1 ORDER BY created_at, id",
    ),
    (
        "entra_passkeys",
        "SELECT credential_id, upn, method_id, rp_id, entra_user_id, public_key_cose, counter, \
         aaguid, model, attestation_level, display_name, cred_protect, hmac_secret, \
         user_verified, created_at, created_by, last_used_at, state, state_reason \
         FROM entra_passkeys WHERE user_name = ?1 ORDER BY created_at, credential_id",
    ),
    (
        "phones",
        "SELECT id, e164, label, verified, created_at, verified_at, entra_state, entra_method_id, \
         entra_error FROM phones WHERE user_name = ?1 ORDER BY created_at, id",
    ),
    (
        "sms_challenges",
        "SELECT id, phone_id, e164, purpose, locale, created_at, expires_at, attempts, resends, \
         last_sent_at, state, delivery_status FROM sms_challenges WHERE user_name = ?1 \
         UNION ALL \
         SELECT id, phone_id, e164, purpose, locale, created_at, expires_at, attempts, resends, \
         last_sent_at, state, delivery_status FROM sms_challenges_history WHERE user_name = ?1 \
         ORDER BY created_at, id",
    ),
    (
        "sms_messages",
        "SELECT o.id, o.challenge_id, o.created_at, o.state, o.attempts, o.provider, o.sent_at \
         FROM sms_outbox o JOIN sms_challenges c ON c.id = o.challenge_id WHERE c.user_name = ?1 \
         UNION ALL \
         SELECT o.id, o.challenge_id, o.created_at, o.state, o.attempts, o.provider, o.sent_at \
         FROM sms_outbox_history o JOIN sms_challenges_history c ON c.id = o.challenge_id \
         WHERE c.user_name = ?1 ORDER BY 3, 1",
    ),
    (
        "sms_lock",
        "SELECT consecutive_failures, locked_until FROM sms_user_state WHERE user_name = ?1",
    ),
    (
        "ceremonies",
        "SELECT id, kind, state, error_code, created_at, updated_at, expires_at, created_by \
         FROM ceremonies WHERE user_name = ?1 \
         UNION ALL \
         SELECT id, kind, state, error_code, created_at, updated_at, expires_at, created_by \
         FROM ceremonies_history WHERE user_name = ?1 ORDER BY created_at, id",
    ),
    (
        "kiosk_sessions",
        "SELECT created_at, expires_at, bound_display_name, bound_at FROM kiosk_sessions \
         WHERE bound_user = ?1 ORDER BY created_at",
    ),
    (
        "audit",
        "SELECT seq, at, event, credential_id, ceremony_id, actor, detail FROM audit \
         WHERE user_name = ?1 ORDER BY seq",
    ),
];

fn json_value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => i.into(),
        ValueRef::Real(f) => f.into(),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        ValueRef::Blob(b) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(b)
            .into(),
    }
}

fn rows(c: &Connection, sql: &str, user: &str) -> Result<Vec<Value>> {
    let mut st = prepare(c, sql)?;
    let names: Vec<String> = st.column_names().iter().map(|n| n.to_string()).collect();
    let mut out = Vec::new();
    let mut q = st.query(params![user])?;
    while let Some(r) = q.next()? {
        let mut obj = Map::new();
        for (i, name) in names.iter().enumerate() {
            let mut v = json_value(r.get_ref(i)?);
            // The audit detail is JSON text: exported as the JSON it is.
            if name == "detail" {
                if let Value::String(s) = &v {
                    v = serde_json::from_str(s).unwrap_or(v);
                }
            }
            obj.insert(name.clone(), v);
        }
        out.push(Value::Object(obj));
    }
    Ok(out)
}

impl Store {
    /// Everything about `user` as one JSON object: `user` (the row: name, display name, user
    /// handle, creation, closure) and one list per [`SECTIONS`] entry, read in one snapshot.
    /// NotFound for an unknown user.
    pub fn export_user(&self, user: &str) -> Result<Value> {
        self.read(|c| {
            c.execute_batch("BEGIN")?;
            let out = export_in(c, user);
            c.execute_batch(if out.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
            out
        })
    }
}

fn export_in(c: &Connection, user: &str) -> Result<Value> {
    {
        {
            let mut found = rows(
                c,
                "SELECT name, display_name, user_handle, created_at, closed_at, closed_by \
                 FROM users WHERE name = ?1",
                user,
            )?;
            let row = found.pop().ok_or(StoreError::NotFound)?;
            let mut out = Map::new();
            out.insert("user".into(), row);
            for (section, sql) in SECTIONS {
                out.insert((*section).into(), Value::Array(rows(c, sql, user)?));
            }
            Ok(Value::Object(out))
        }
    }
}
