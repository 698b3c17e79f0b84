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
//!
//! Microsoft Entra ID passkeys the key held are found the same way (their
//! `entra.passkey_registered` entries, [`Store::reset_entra_candidates`]) and kept as `reset`
//! once the ceremony has asked Graph to delete them ([`Store::mark_entra_passkey_reset`]).

use super::db::{params, Connection, OptionalExtension};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use uuid::Uuid;

use super::audit::{exec_audited, insert_audit};
use super::{exec, EntraPasskeyRecord, NewAudit, Result, Store};

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
            let mut candidates = Vec::new();
            for id in enrolled_on(c, "credential.enrolled", device)? {
                let active = c
                    .query_row(
                        "SELECT 1 FROM credentials WHERE id = ?1 AND state = 'active' \
                         AND aaguid IS ?2",
                        params![id, aaguid],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()?
                    .is_some();
                if active {
                    candidates.push(id);
                }
            }
            Ok(candidates)
        })
    }

    /// The active Entra passkeys that may be on the key at `device` with `aaguid`: registered
    /// on that device id (`entra.passkey_registered`) with that AAGUID, oldest first.
    pub fn reset_entra_candidates(
        &self,
        device: &str,
        aaguid: Option<Uuid>,
    ) -> Result<Vec<EntraPasskeyRecord>> {
        let ids = self.read(|c| enrolled_on(c, "entra.passkey_registered", device))?;
        let mut candidates = Vec::new();
        for id in ids {
            if let Some(p) = self
                .entra_passkey_in_use(&id)?
                .filter(|p| p.aaguid == aaguid)
            {
                candidates.push(p);
            }
        }
        Ok(candidates)
    }

    /// Keep the Entra passkey `p` of a reset key as `reset` (stored as `lost` with
    /// `state_reason: key_reset`; the inventory shows `reset`), audited as `credential.revoked`
    /// (reason `key_reset`, `target: entra`, the UPN, the method id, the device and whether
    /// Graph deleted the method from the user's account). Only an active passkey changes;
    /// returns whether it did.
    pub async fn mark_entra_passkey_reset(
        &self,
        p: &EntraPasskeyRecord,
        device: &str,
        actor: &str,
        method_deleted: bool,
    ) -> Result<bool> {
        let audit = NewAudit::new("credential.revoked", actor)
            .user(&p.user)
            .credential(&URL_SAFE_NO_PAD.encode(&p.credential_id))
            .detail(serde_json::json!({
                "reason": "key_reset", "target": "entra", "device": device, "upn": p.upn,
                "method_id": p.method_id, "rp_id": p.rp_id, "entra_method_deleted": method_deleted,
            }));
        let id = p.credential_id.clone();
        self.write(move |c| {
            exec_audited(
                c,
                "UPDATE entra_passkeys SET state = 'lost', state_reason = 'key_reset' \
                 WHERE credential_id = ?1 AND state = 'active'",
                params![id],
                &audit,
            )
        })
        .await
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

/// The credential ids the audit log says were enrolled (`event`) on `device`, oldest first,
/// each once.
fn enrolled_on(c: &Connection, event: &str, device: &str) -> Result<Vec<Vec<u8>>> {
    let mut q = c.prepare(
        "SELECT credential_id FROM audit WHERE event = ?1 AND credential_id IS NOT NULL \
         AND json_extract(detail, '$.device') = ?2 ORDER BY seq",
    )?;
    let rows = q.query_map(params![event, device], |r| r.get::<_, String>(0))?;
    let mut ids: Vec<Vec<u8>> = Vec::new();
    for b64 in rows {
        let Ok(id) = URL_SAFE_NO_PAD.decode(b64?) else {
            continue;
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}
