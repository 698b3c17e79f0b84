//! After a factory reset: the credentials keygate knew on the key are dead (the key drew a new
//! master secret), so they are revoked with `state_reason: "key_reset"`.
//!
//! Which credentials: the key says. A credential record does not name the key it lives on, and
//! a device id is a port, not a key: a USB key's id is its hidraw path, which every key of a
//! kiosk's port gets in turn (a simulated key's id likewise passes to the next key plugged
//! when it is removed). So the candidates are the active credentials enrolled on that device
//! id (the audit log's `credential.enrolled` entries name it, `detail.device`) with the key's
//! AAGUID ([`Store::reset_candidates`]); before the reset the kiosk asks the key which of them
//! it holds, without a touch (`device::held_credentials`), and after it revokes those alone
//! ([`Store::revoke_credentials_of_reset_key`]): another student's key of the same model, once
//! in the same port, keeps its credentials. Limit: a credential the key hides without UV
//! (credProtect level 3) or one enrolled under another device id is not found; it stays
//! active and simply no longer works on the key.

use super::db::{params, OptionalExtension};
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
    /// The active credentials that may be on the key at `device` with `aaguid`: enrolled on
    /// that device id with that AAGUID, oldest first (see the module docs: candidates only).
    pub fn reset_candidates(&self, device: &str, aaguid: Option<Uuid>) -> Result<Vec<Vec<u8>>> {
        let aaguid = aaguid.map(|a| a.to_string());
        self.read(|c| {
            let enrolled: Vec<String> = {
                let mut q = c.prepare(
                    "SELECT credential_id FROM audit WHERE event = 'credential.enrolled' \
                     AND credential_id IS NOT NULL AND json_extract(detail, '$.device') = ?1 \
                     ORDER BY seq",
                )?;
                let ids = q.query_map(params![device], |r| r.get::<_, String>(0))?;
                ids.collect::<super::db::Result<_>>()?
            };
            let mut candidates: Vec<Vec<u8>> = Vec::new();
            for b64 in enrolled {
                let Ok(id) = URL_SAFE_NO_PAD.decode(&b64) else {
                    continue;
                };
                let active = c
                    .query_row(
                        "SELECT 1 FROM credentials WHERE id = ?1 AND state = 'active' \
                         AND aaguid IS ?2",
                        params![id, aaguid],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()?
                    .is_some();
                if active && !candidates.contains(&id) {
                    candidates.push(id);
                }
            }
            Ok(candidates)
        })
    }

    /// Revoke the credentials of `held` (those the reset key said it held) that are still
    /// active, write one `credential.revoked` audit entry each (reason `key_reset`, the
    /// `device`) and then `audit` (the `device.reset` entry, its detail gaining
    /// `revoked_credentials`), all in one transaction.
    pub async fn revoke_credentials_of_reset_key(
        &self,
        device: &str,
        held: Vec<Vec<u8>>,
        audit: &NewAudit,
    ) -> Result<Vec<ResetCredential>> {
        let device = device.to_string();
        let mut audit = audit.clone();
        self.write(move |c| {
            let mut revoked = Vec::new();
            for id in held {
                let owner: Option<String> = c
                    .query_row(
                        "SELECT user_name FROM credentials WHERE id = ?1 AND state = 'active'",
                        params![id],
                        |r| r.get(0),
                    )
                    .optional()?;
                let Some(user) = owner else { continue };
                let b64 = URL_SAFE_NO_PAD.encode(&id);
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
