//! Marking a key lost (`PATCH /v1/keys/{id}`), in one transaction with its audit line
//! (`credential.revoked`, reason `lost`, the previous state). A local credential is revoked
//! with `state_reason: lost`; an Entra passkey (which the caller has deleted from the user's
//! Entra account first) is kept as `lost`, the service desk's record of the key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::super::audit::insert_audit;
use super::super::db::params;
use super::super::{exec, NewAudit, Result, Store, StoreError};
use super::page::key_row;
use super::{KeyKind, KeyRecord, KeyRef, KeyState, LOST_REASON};

impl Store {
    /// Mark the local key `id` lost: its credential is revoked (`state_reason: lost`, whatever
    /// its state was) and a `credential.revoked` line (reason `lost`, the previous state)
    /// audited as `actor`. Idempotent: a key already lost is left as it is and nothing is
    /// audited. Returns the key and whether it changed; `NotFound` for no such key.
    pub async fn mark_key_lost(&self, id: &[u8], actor: &str) -> Result<(KeyRecord, bool)> {
        let key = KeyRef {
            kind: KeyKind::Local,
            credential_id: id.to_vec(),
        };
        self.mark_lost(
            key,
            "UPDATE credentials SET state = 'revoked', state_reason = ?2 WHERE id = ?1",
            actor,
            serde_json::json!({}),
        )
        .await
    }

    /// Mark the Entra passkey `id` lost once the caller deleted it from the user's Entra
    /// account: kept as `lost` (`state_reason: lost`), audited as `credential.revoked` with
    /// `target: entra`, the UPN, the method id and `entra_method_deleted: true`. Idempotent
    /// like [`Store::mark_key_lost`]; `NotFound` for no such passkey.
    pub async fn mark_entra_key_lost(&self, id: &[u8], actor: &str) -> Result<(KeyRecord, bool)> {
        let key = KeyRef {
            kind: KeyKind::Entra,
            credential_id: id.to_vec(),
        };
        self.mark_lost(
            key,
            "UPDATE entra_passkeys SET state = 'lost', state_reason = ?2 WHERE credential_id = ?1",
            actor,
            serde_json::json!({ "target": "entra", "entra_method_deleted": true }),
        )
        .await
    }

    /// `update` (binding the id as `?1` and [`LOST_REASON`] as `?2`) on a key not yet lost,
    /// with its audit line (`extra` added to its detail).
    async fn mark_lost(
        &self,
        key: KeyRef,
        update: &'static str,
        actor: &str,
        extra: serde_json::Value,
    ) -> Result<(KeyRecord, bool)> {
        let actor = actor.to_string();
        self.write(move |c| {
            let before = key_row(c, &key)?.ok_or(StoreError::NotFound)?;
            let previous = before.state()?;
            if previous == KeyState::Lost {
                return Ok((before.into_record(c)?, false));
            }
            exec(c, update, params![key.credential_id, LOST_REASON])?;
            let mut detail = serde_json::json!({
                "reason": LOST_REASON,
                "previous_state": previous.as_str(),
                "previous_reason": before.state_reason(),
            });
            if let (Some(d), serde_json::Value::Object(extra)) = (detail.as_object_mut(), &extra) {
                d.extend(extra.clone());
            }
            if let Some(facts) = before.entra() {
                detail["upn"] = facts.upn.clone().into();
                detail["method_id"] = facts.method_id.clone().into();
                detail["rp_id"] = facts.rp_id.clone().into();
            }
            insert_audit(
                c,
                &NewAudit::new("credential.revoked", &actor)
                    .user(before.owner())
                    .credential(&URL_SAFE_NO_PAD.encode(&key.credential_id))
                    .detail(detail),
            )?;
            let after = key_row(c, &key)?.ok_or(StoreError::NotFound)?;
            Ok((after.into_record(c)?, true))
        })
        .await
    }
}
