//! authenticatorMakeCredential (CTAP 2.1 §6.1.2): parameters, UV, excludeList, the extension
//! inputs, then a new credential with packed attestation over `authData ‖ clientDataHash`.

use ciborium::value::Value;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::DerSignature;
use p256::PublicKey;
use sha2::{Digest, Sha256};

use super::state::ResidentCredential;
use super::{
    AttestationMode, Reply, SoftKey, UserPresence, FLAG_AT, FLAG_ED, FLAG_UP, FLAG_UV, SIM_AAGUID,
};
use crate::device::ctap2::{
    as_i64, bytes, cose_ec2, encode, get_int_key, get_text_key, int, int_map, text, text_map,
};
use crate::device::CtapStatus;

impl SoftKey {
    pub(super) fn make_credential(
        &mut self,
        params: Option<&Value>,
        presence: &mut dyn UserPresence,
    ) -> Reply {
        let p = params.ok_or(CtapStatus::MissingParameter)?;
        let cdh = get_int_key(p, 0x01)
            .and_then(Value::as_bytes)
            .ok_or(CtapStatus::MissingParameter)?
            .clone();
        let rp = get_int_key(p, 0x02).ok_or(CtapStatus::MissingParameter)?;
        let rp_id = get_text_key(rp, "id")
            .and_then(Value::as_text)
            .ok_or(CtapStatus::MissingParameter)?
            .to_string();
        let user = get_int_key(p, 0x03).ok_or(CtapStatus::MissingParameter)?;
        let user_id = get_text_key(user, "id")
            .and_then(Value::as_bytes)
            .ok_or(CtapStatus::MissingParameter)?
            .clone();
        if user_id.len() > 64 {
            return Err(CtapStatus::InvalidLength);
        }
        let user_name = get_text_key(user, "name")
            .and_then(Value::as_text)
            .unwrap_or("")
            .to_string();
        let user_display_name = get_text_key(user, "displayName")
            .and_then(Value::as_text)
            .unwrap_or("")
            .to_string();
        let algs = get_int_key(p, 0x04)
            .and_then(Value::as_array)
            .ok_or(CtapStatus::MissingParameter)?;
        if !algs
            .iter()
            .any(|a| get_text_key(a, "alg").and_then(as_i64) == Some(-7))
        {
            return Err(CtapStatus::UnsupportedAlgorithm);
        }
        let options = get_int_key(p, 0x07);
        let rk = options
            .and_then(|o| get_text_key(o, "rk"))
            .and_then(Value::as_bool)
            == Some(true);
        let uv = self.check_pin_auth(p, 0x08, 0x09, &cdh)?;
        if !uv {
            self.uv_option(options)?;
            // §6.1.2 step 6: a PIN-protected key requires the token unless makeCredUvNotRqd.
            if self.pin_set() {
                return Err(CtapStatus::PinRequired);
            }
        }
        let extensions = self.creation_extensions(p)?;
        let rp_id_hash: [u8; 32] = Sha256::digest(rp_id.as_bytes()).into();
        if let Some(excl) = get_int_key(p, 0x05).and_then(Value::as_array) {
            // §6.1.2 step 4: a credProtect level-3 credential is invisible without UV.
            let excluded = excl.iter().any(|d| {
                get_text_key(d, "id")
                    .and_then(Value::as_bytes)
                    .and_then(|id| self.credential(id, &rp_id_hash))
                    .is_some_and(|c| c.policy.visible(uv, true))
            });
            if excluded {
                // §6.1.2 step 4: collect user presence first, then report the exclusion.
                presence.wait()?;
                return Err(CtapStatus::CredentialExcluded);
            }
        }
        if rk
            && self.state.resident.len() as u32 >= self.state.resident_slots
            && !self
                .state
                .resident
                .iter()
                .any(|c| c.rp_id == rp_id && c.user_id == user_id)
        {
            return Err(CtapStatus::KeyStoreFull);
        }
        presence.wait()?;
        let (credential_id, cred) = self.new_credential(&rp_id_hash, extensions.policy());
        let key = cred.key;
        let extension_outputs = extensions.outputs();
        let count = self.next_sign_count();
        let mut flags = FLAG_UP | FLAG_AT;
        if uv {
            flags |= FLAG_UV;
        }
        if extension_outputs.is_some() {
            flags |= FLAG_ED;
        }
        let mut auth_data = rp_id_hash.to_vec();
        auth_data.push(flags);
        auth_data.extend(count.to_be_bytes());
        auth_data.extend(SIM_AAGUID.as_bytes());
        auth_data.extend((credential_id.len() as u16).to_be_bytes());
        auth_data.extend(&credential_id);
        auth_data.extend(encode(&cose_ec2(&PublicKey::from(key.verifying_key()), -7)));
        // WebAuthn §6.1: the extensions map follows the attested credential data.
        if let Some(outputs) = &extension_outputs {
            auth_data.extend(encode(outputs));
        }
        if rk {
            let serial = self.state.rng_counter;
            self.state
                .resident
                .retain(|c| !(c.rp_id == rp_id && c.user_id == user_id));
            self.state.resident.push(ResidentCredential {
                rp_id,
                user_id,
                user_name,
                user_display_name,
                credential_id: credential_id.clone(),
                serial,
            });
        }
        let mut signed = auth_data.clone();
        signed.extend(&cdh);
        // WebAuthn §8.2: packed; with x5c from the CA, or self-attestation by the credential key.
        let att_stmt = match self.state.attestation {
            AttestationMode::Ca => {
                let sig: DerSignature = self.attestation.key.sign(&signed);
                text_map(vec![
                    ("alg", int(-7)),
                    ("sig", bytes(sig.as_bytes())),
                    ("x5c", Value::Array(vec![bytes(&self.attestation.cert_der)])),
                ])
            }
            AttestationMode::SelfSigned => {
                let sig: DerSignature = key.sign(&signed);
                text_map(vec![("alg", int(-7)), ("sig", bytes(sig.as_bytes()))])
            }
        };
        self.persist();
        Ok(int_map(vec![
            (0x01, text("packed")),
            (0x02, bytes(&auth_data)),
            (0x03, att_stmt),
        ]))
    }
}
