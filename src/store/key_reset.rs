//! After a factory reset: the credentials keygate knew for the key are dead (the key drew a new
//! master secret), so they are revoked with `state_reason: "key_reset"`.
//!
//! Which credentials: keygate cannot list a key's non-discoverable credentials, and a
//! credential record does not name the key it lives on. The audit log does: every
//! `credential.enrolled` entry records the device id it was made on (`detail.device`). So the
//! revoked ones are the active credentials enrolled on that device id whose AAGUID is the
//! key's (guarding against another model that later got the same id). Contract and limit: a
//! simulated key's id is stable; a USB key's id is its hidraw path, which is stable while it
//! stays in the same port but not across ports or reboots, so credentials it got under
//! another path are missed (they stay active and simply no longer work on the key).

use super::db::params;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use uuid::Uuid;

use super::audit::insert_audit;
use super::{exec, NewAudit, Result, Store};

/// A credential revoked because its key was reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetCredential {
    pub user: String,
    /// The credential id as the audit log names it (base64url).
    pub credential_id: String,
}

impl Store {
    /// Revoke the active credentials enrolled on `device` with `aaguid` (see the module docs),
    /// write one `credential.revoked` audit entry each (reason `key_reset`) and then `audit`
    /// (the `device.reset` entry, its detail gaining `revoked_credentials`), all in one
    /// transaction.
    pub async fn revoke_credentials_of_reset_key(
        &self,
        device: &str,
        aaguid: Option<Uuid>,
        audit: &NewAudit,
    ) -> Result<Vec<ResetCredential>> {
        let device = device.to_string();
        let aaguid = aaguid.map(|a| a.to_string());
        let mut audit = audit.clone();
        self.write(move |c| {
            let enrolled: Vec<String> = {
                let mut q = c.prepare(
                    "SELECT DISTINCT credential_id FROM audit WHERE event = 'credential.enrolled' \
                     AND credential_id IS NOT NULL AND json_extract(detail, '$.device') = ?1",
                )?;
                let ids = q.query_map(params![device], |r| r.get::<_, String>(0))?;
                ids.collect::<super::db::Result<_>>()?
            };
            let mut revoked = Vec::new();
            for b64 in enrolled {
                let Ok(id) = URL_SAFE_NO_PAD.decode(&b64) else {
                    continue;
                };
                let owner: Option<String> = c
                    .query_row(
                        "SELECT user_name FROM credentials WHERE id = ?1 AND state = 'active' \
                         AND aaguid IS ?2",
                        params![id, aaguid],
                        |r| r.get(0),
                    )
                    .ok();
                let Some(user) = owner else { continue };
                exec(
                    c,
                    "UPDATE credentials SET state = 'revoked', state_reason = 'key_reset' WHERE id = ?1",
                    params![id],
                )?;
                insert_audit(
                    c,
                    &NewAudit::new("credential.revoked", &audit.actor)
                        .user(&user)
                        .credential(&b64)
                        .detail(serde_json::json!({ "reason": "key_reset", "device": device })),
                )?;
                revoked.push(ResetCredential {
                    user,
                    credential_id: b64,
                });
            }
            if let serde_json::Value::Object(m) = &mut audit.detail {
                m.insert("revoked_credentials".into(), revoked.len().into());
            }
            insert_audit(c, &audit)?;
            Ok(revoked)
        })
        .await
    }
}
