//! authenticatorClientPIN with PIN/UV auth protocol 1 (CTAP 2.1 §6.5): retries, key agreement,
//! setPIN, changePIN, getPinToken, and the PIN-hash bookkeeping (retries, power-cycle block).

use ciborium::value::Value;
use subtle::ConstantTimeEq;

use super::{Reply, SoftKey, MAX_PIN_RETRIES, PIN_AUTH_BLOCK_AFTER};
use crate::device::ctap2::{
    as_i64, bytes, config_sub, cose_ec2, get_int_key, int, int_map, parse_cose_ec2,
    pin_protocol_one as pp1, pin_sub,
};
use crate::device::CtapStatus;

impl SoftKey {
    pub(super) fn client_pin(&mut self, params: Option<&Value>) -> Reply {
        if !self.state.pin_supported {
            return Err(CtapStatus::InvalidCommand);
        }
        let p = params.ok_or(CtapStatus::MissingParameter)?;
        let sub = get_int_key(p, 0x02)
            .and_then(as_i64)
            .ok_or(CtapStatus::MissingParameter)?;
        if sub != pin_sub::GET_PIN_RETRIES as i64 {
            match get_int_key(p, 0x01).and_then(as_i64) {
                Some(1) => {}
                Some(_) => return Err(CtapStatus::InvalidParameter),
                None => return Err(CtapStatus::MissingParameter),
            }
        }
        match sub as u8 {
            pin_sub::GET_PIN_RETRIES => {
                Ok(int_map(vec![(0x03, int(self.state.pin_retries as i64))]))
            }
            pin_sub::GET_KEY_AGREEMENT => {
                let pk = self.volatile.key_agreement.public_key();
                Ok(int_map(vec![(0x01, cose_ec2(&pk, -25))]))
            }
            pin_sub::SET_PIN => {
                if self.pin_set() {
                    return Err(CtapStatus::NotAllowed);
                }
                let shared = self.shared_secret(p)?;
                let new_pin_enc = self.param_bytes(p, 0x05)?;
                let auth = self.param_bytes(p, 0x04)?;
                if !pp1::verify(&shared, &new_pin_enc, &auth) {
                    return Err(CtapStatus::PinAuthInvalid);
                }
                let pin = self.decrypt_new_pin(&shared, &new_pin_enc)?;
                self.state.pin_hash = Some(pp1::pin_hash(&pin).to_vec());
                self.state.pin_policy.pin_length = Some(pin.chars().count() as u32);
                self.state.pin_retries = MAX_PIN_RETRIES;
                self.persist();
                Ok(Value::Map(vec![]))
            }
            pin_sub::CHANGE_PIN => {
                let shared = self.shared_secret(p)?;
                let new_pin_enc = self.param_bytes(p, 0x05)?;
                let pin_hash_enc = self.param_bytes(p, 0x06)?;
                let auth = self.param_bytes(p, 0x04)?;
                let mut msg = new_pin_enc.clone();
                msg.extend(&pin_hash_enc);
                if !pp1::verify(&shared, &msg, &auth) {
                    return Err(CtapStatus::PinAuthInvalid);
                }
                self.check_pin_hash(&shared, &pin_hash_enc)?;
                let pin = self.decrypt_new_pin(&shared, &new_pin_enc)?;
                let new_hash = pp1::pin_hash(&pin).to_vec();
                // A forced change must change the PIN (§6.5.5.6).
                if self.state.pin_policy.force_pin_change
                    && self.state.pin_hash.as_deref() == Some(&new_hash[..])
                {
                    return Err(CtapStatus::PinPolicyViolation);
                }
                self.state.pin_hash = Some(new_hash);
                self.state.pin_policy.pin_length = Some(pin.chars().count() as u32);
                self.state.pin_policy.force_pin_change = false;
                self.volatile.pin_token = self.random();
                self.volatile.pin_token_permissions = 0;
                self.persist();
                Ok(Value::Map(vec![]))
            }
            pin_sub::GET_PIN_TOKEN | pin_sub::GET_PIN_UV_AUTH_TOKEN_USING_PIN_WITH_PERMISSIONS => {
                let permissions = if sub as u8 == pin_sub::GET_PIN_TOKEN {
                    config_sub::PERMISSIONS_DEFAULT
                } else {
                    match get_int_key(p, 0x09).and_then(as_i64) {
                        None => return Err(CtapStatus::MissingParameter),
                        Some(n) if !(1..=0xff).contains(&n) => {
                            return Err(CtapStatus::InvalidParameter)
                        }
                        Some(n) => n as u8,
                    }
                };
                let shared = self.shared_secret(p)?;
                let pin_hash_enc = self.param_bytes(p, 0x06)?;
                self.check_pin_hash(&shared, &pin_hash_enc)?;
                self.persist();
                // The right PIN, but only changePIN may use it until it is changed (§6.5.5.7).
                if self.state.pin_policy.force_pin_change {
                    return Err(CtapStatus::PinPolicyViolation);
                }
                if permissions != self.volatile.pin_token_permissions {
                    // A token is re-issued for new permissions; the old one stops working.
                    self.volatile.pin_token = self.random();
                    self.volatile.pin_token_permissions = permissions;
                }
                Ok(int_map(vec![(
                    0x02,
                    bytes(&pp1::encrypt(&shared, &self.volatile.pin_token)),
                )]))
            }
            _ => Err(CtapStatus::InvalidSubcommand),
        }
    }

    fn param_bytes(&self, p: &Value, key: i64) -> Result<Vec<u8>, CtapStatus> {
        get_int_key(p, key)
            .and_then(Value::as_bytes)
            .cloned()
            .ok_or(CtapStatus::MissingParameter)
    }

    /// The shared secret with the platform key of ClientPIN parameter 0x03.
    fn shared_secret(&self, p: &Value) -> Result<[u8; 32], CtapStatus> {
        self.agree(get_int_key(p, 0x03).ok_or(CtapStatus::MissingParameter)?)
    }

    /// PIN/UV auth protocol 1 key agreement (§6.5.6): ECDH of the key's current
    /// key-agreement key with the platform's COSE key, then the KDF.
    pub(super) fn agree(&self, platform_key: &Value) -> Result<[u8; 32], CtapStatus> {
        let peer = parse_cose_ec2(platform_key).map_err(|_| CtapStatus::InvalidParameter)?;
        let z = p256::ecdh::diffie_hellman(
            self.volatile.key_agreement.to_nonzero_scalar(),
            peer.as_affine(),
        );
        Ok(pp1::kdf(z.raw_secret_bytes()))
    }

    fn decrypt_new_pin(&self, shared: &[u8; 32], new_pin_enc: &[u8]) -> Result<String, CtapStatus> {
        if new_pin_enc.len() < 64 {
            return Err(CtapStatus::PinPolicyViolation);
        }
        let padded = pp1::decrypt(shared, new_pin_enc).ok_or(CtapStatus::PinPolicyViolation)?;
        let pin = pp1::unpad_pin(&padded).ok_or(CtapStatus::PinPolicyViolation)?;
        let min = self.state.pin_policy.min_pin_length.max(4);
        if (pin.chars().count() as u32) < min || pin.len() > 63 {
            return Err(CtapStatus::PinPolicyViolation);
        }
        Ok(pin)
    }

    /// §6.5.5.7.1 steps for pinHashEnc: retries, auth block, mismatch bookkeeping.
    fn check_pin_hash(&mut self, shared: &[u8; 32], pin_hash_enc: &[u8]) -> Result<(), CtapStatus> {
        let stored = self.state.pin_hash.clone().ok_or(CtapStatus::PinNotSet)?;
        if self.state.pin_retries == 0 {
            return Err(CtapStatus::PinBlocked);
        }
        if self.volatile.consecutive_pin_mismatches >= PIN_AUTH_BLOCK_AFTER {
            return Err(CtapStatus::PinAuthBlocked);
        }
        self.state.pin_retries -= 1;
        let given = pp1::decrypt(shared, pin_hash_enc).unwrap_or_default();
        if given.len() != 16 || !bool::from(given.ct_eq(&stored)) {
            self.volatile.key_agreement = self.derive_secret_key(b"ka");
            self.volatile.consecutive_pin_mismatches += 1;
            self.persist();
            if self.state.pin_retries == 0 {
                return Err(CtapStatus::PinBlocked);
            }
            if self.volatile.consecutive_pin_mismatches >= PIN_AUTH_BLOCK_AFTER {
                return Err(CtapStatus::PinAuthBlocked);
            }
            return Err(CtapStatus::PinInvalid);
        }
        self.state.pin_retries = MAX_PIN_RETRIES;
        self.volatile.consecutive_pin_mismatches = 0;
        Ok(())
    }
}
