//! authenticatorGetAssertion and authenticatorGetNextAssertion (CTAP 2.1 §6.2.2, §6.3): UV,
//! the credentials a request may use (credProtect, §12.1), user presence, then one signed
//! assertion per credential with the extension outputs (hmac-secret, §12.5) in its authData.

use ciborium::value::Value;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::DerSignature;
use sha2::{Digest, Sha256};

use super::credential::OwnCredential;
use super::extensions::HmacSecretInput;
use super::state::ResidentCredential;
use super::{PendingAssertion, Reply, SoftKey, UserPresence, FLAG_ED, FLAG_UP, FLAG_UV};
use crate::device::ctap2::{
    bytes, encode, get_int_key, get_text_key, int, int_map, text, text_map,
};
use crate::device::CtapStatus;

impl SoftKey {
    pub(super) fn get_assertion(
        &mut self,
        params: Option<&Value>,
        presence: &mut dyn UserPresence,
    ) -> Reply {
        let p = params.ok_or(CtapStatus::MissingParameter)?;
        let rp_id = get_int_key(p, 0x01)
            .and_then(Value::as_text)
            .ok_or(CtapStatus::MissingParameter)?
            .to_string();
        let cdh = get_int_key(p, 0x02)
            .and_then(Value::as_bytes)
            .ok_or(CtapStatus::MissingParameter)?
            .clone();
        let options = get_int_key(p, 0x05);
        let uv = self.check_pin_auth(p, 0x06, 0x07, &cdh)?;
        if !uv {
            self.uv_option(options)?;
        }
        let hmac_secret = self.hmac_secret_input(p)?;
        let rp_id_hash: [u8; 32] = Sha256::digest(rp_id.as_bytes()).into();
        let allow = get_int_key(p, 0x03).and_then(Value::as_array);
        // §6.2.2: `up: false` asks for no user presence (a platform learning which
        // credentials the key holds): no touch, the UP flag clear.
        let wants_up = options
            .and_then(|o| get_text_key(o, "up"))
            .and_then(Value::as_bool)
            != Some(false);
        let mut flags = if wants_up { FLAG_UP } else { 0 };
        if uv {
            flags |= FLAG_UV;
        }
        match allow {
            Some(list) if !list.is_empty() => {
                // The first credential of the list that is ours and that credProtect lets
                // this request use (named in the list: level 2 passes without UV).
                let found = list.iter().find_map(|d| {
                    let id = get_text_key(d, "id").and_then(Value::as_bytes)?;
                    self.credential(id, &rp_id_hash)
                        .filter(|c| c.policy.visible(uv, true))
                        .map(|c| (id.clone(), c))
                });
                let (id, cred) = found.ok_or(CtapStatus::NoCredentials)?;
                if wants_up {
                    presence.wait()?;
                }
                let user = self
                    .state
                    .resident
                    .iter()
                    .find(|c| c.credential_id == id)
                    .map(|c| text_map(vec![("id", bytes(&c.user_id))]));
                let mut out =
                    self.sign_assertion(&id, &cred, &rp_id_hash, flags, &cdh, hmac_secret.as_ref());
                if let (Some(u), Value::Map(m)) = (user, &mut out) {
                    m.push((int(0x04), u));
                }
                self.persist();
                Ok(out)
            }
            _ => {
                // Without an allowList, credProtect levels 2 and 3 need UV.
                let mut creds: Vec<ResidentCredential> = self
                    .state
                    .resident
                    .iter()
                    .filter(|c| c.rp_id == rp_id)
                    .filter(|c| {
                        self.credential(&c.credential_id, &rp_id_hash)
                            .is_some_and(|own| own.policy.visible(uv, false))
                    })
                    .cloned()
                    .collect();
                if creds.is_empty() {
                    return Err(CtapStatus::NoCredentials);
                }
                creds.sort_by_key(|c| std::cmp::Reverse(c.serial));
                if wants_up {
                    presence.wait()?;
                }
                let total = creds.len();
                let first = creds.remove(0);
                self.volatile.pending = creds
                    .into_iter()
                    .map(|cred| PendingAssertion {
                        cred,
                        client_data_hash: cdh.clone(),
                        flags,
                        hmac_secret: hmac_secret.clone(),
                    })
                    .collect();
                let mut out =
                    self.resident_assertion(&first, &rp_id_hash, flags, &cdh, hmac_secret.as_ref());
                if total > 1 {
                    if let Value::Map(m) = &mut out {
                        m.push((int(0x05), int(total as i64)));
                    }
                }
                self.persist();
                Ok(out)
            }
        }
    }

    fn resident_assertion(
        &mut self,
        c: &ResidentCredential,
        rp_id_hash: &[u8; 32],
        flags: u8,
        cdh: &[u8],
        hmac_secret: Option<&HmacSecretInput>,
    ) -> Value {
        let cred = self
            .credential(&c.credential_id, rp_id_hash)
            .expect("resident ids are ours");
        let mut out =
            self.sign_assertion(&c.credential_id, &cred, rp_id_hash, flags, cdh, hmac_secret);
        // §6.2.2: user name/displayName only when UV was done and more than one account exists.
        let user = if flags & FLAG_UV != 0 {
            text_map(vec![
                ("id", bytes(&c.user_id)),
                ("name", text(&c.user_name)),
                ("displayName", text(&c.user_display_name)),
            ])
        } else {
            text_map(vec![("id", bytes(&c.user_id))])
        };
        if let Value::Map(m) = &mut out {
            m.push((int(0x04), user));
        }
        out
    }

    pub(super) fn get_next_assertion(&mut self) -> Reply {
        if self.volatile.pending.is_empty() {
            return Err(CtapStatus::NotAllowed);
        }
        let next = self.volatile.pending.remove(0);
        let rp_id_hash: [u8; 32] = Sha256::digest(next.cred.rp_id.as_bytes()).into();
        let out = self.resident_assertion(
            &next.cred,
            &rp_id_hash,
            next.flags,
            &next.client_data_hash,
            next.hmac_secret.as_ref(),
        );
        self.persist();
        Ok(out)
    }

    /// `authData = rpIdHash ‖ flags ‖ signCount [‖ extensions]`, signed with `clientDataHash`.
    fn sign_assertion(
        &mut self,
        id: &[u8],
        cred: &OwnCredential,
        rp_id_hash: &[u8; 32],
        flags: u8,
        cdh: &[u8],
        hmac_secret: Option<&HmacSecretInput>,
    ) -> Value {
        let uv = flags & FLAG_UV != 0;
        let extension_outputs = self.assertion_extension_outputs(cred, rp_id_hash, uv, hmac_secret);
        let count = self.next_sign_count();
        let mut auth_data = rp_id_hash.to_vec();
        auth_data.push(if extension_outputs.is_some() {
            flags | FLAG_ED
        } else {
            flags
        });
        auth_data.extend(count.to_be_bytes());
        if let Some(outputs) = &extension_outputs {
            auth_data.extend(encode(outputs));
        }
        let mut signed = auth_data.clone();
        signed.extend(cdh);
        let sig: DerSignature = cred.key.sign(&signed);
        int_map(vec![
            (
                0x01,
                text_map(vec![("id", bytes(id)), ("type", text("public-key"))]),
            ),
            (0x02, bytes(&auth_data)),
            (0x03, bytes(sig.as_bytes())),
        ])
    }
}
