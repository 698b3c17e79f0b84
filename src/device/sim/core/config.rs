//! authenticatorConfig (CTAP 2.1 §6.11) on the simulated key: setMinPINLength (§6.11.4) only,
//! the subcommand keygate writes its PIN policy with. The key implements it when it is a
//! CTAP 2.1 key (`FIDO_2_1`, i.e. it implements credProtect); a CTAP 2.0 key (extensions `[]`)
//! answers CTAP1_ERR_INVALID_COMMAND like the older keys in the field.
//!
//! The policy's effect on ClientPIN lives in `client_pin`: setPIN/changePIN refuse a PIN
//! shorter than minPINLength, and while forcePINChange is set getPinToken and
//! getPinUvAuthTokenUsingPinWithPermissions refuse the (right) PIN with
//! CTAP2_ERR_PIN_POLICY_VIOLATION; changePIN to a different PIN clears it.

use ciborium::value::Value;

use super::{Reply, SimExtension, SoftKey};
use crate::device::ctap2::{
    as_i64, config_auth_message, config_sub, encode, get_int_key, pin_protocol_one as pp1,
};
use crate::device::CtapStatus;

impl SoftKey {
    /// authnrCfg and setMinPINLength are CTAP 2.1 features.
    pub(super) fn config_supported(&self) -> bool {
        self.state.pin_supported && self.state.supports(SimExtension::CredProtect)
    }

    /// GetInfo options for authenticatorConfig.
    pub(super) fn config_options(&self) -> Vec<(&'static str, Value)> {
        if !self.config_supported() {
            return Vec::new();
        }
        vec![
            ("authnrCfg", Value::Bool(true)),
            ("setMinPINLength", Value::Bool(true)),
        ]
    }

    pub(super) fn authenticator_config(&mut self, params: Option<&Value>) -> Reply {
        if !self.config_supported() {
            return Err(CtapStatus::InvalidCommand);
        }
        let p = params.ok_or(CtapStatus::MissingParameter)?;
        let sub = get_int_key(p, 0x01)
            .and_then(as_i64)
            .ok_or(CtapStatus::MissingParameter)?;
        if sub != config_sub::SET_MIN_PIN_LENGTH as i64 {
            return Err(CtapStatus::InvalidSubcommand);
        }
        let sub_params = get_int_key(p, 0x02);
        match get_int_key(p, 0x04) {
            None if self.pin_set() => return Err(CtapStatus::PinRequired),
            // Nothing protects the key's configuration yet (§6.11 step 3).
            None => {}
            Some(param) => {
                let param = param.as_bytes().ok_or(CtapStatus::CborUnexpectedType)?;
                match get_int_key(p, 0x03).and_then(as_i64) {
                    Some(1) => {}
                    Some(_) => return Err(CtapStatus::InvalidParameter),
                    None => return Err(CtapStatus::MissingParameter),
                }
                // The params are authenticated as the platform encoded them; keygate and
                // ctap-hid-fido2 both send canonical CBOR, which re-encoding reproduces.
                let sub_bytes = sub_params.map(encode).unwrap_or_default();
                let message = config_auth_message(sub as u8, &sub_bytes);
                if !self.pin_set() || !pp1::verify(&self.volatile.pin_token, &message, param) {
                    return Err(CtapStatus::PinAuthInvalid);
                }
                if self.volatile.pin_token_permissions & config_sub::PERMISSION_ACFG == 0 {
                    return Err(CtapStatus::PinAuthInvalid);
                }
            }
        }
        self.set_min_pin_length(sub_params)
    }

    /// §6.11.4 setMinPINLength.
    fn set_min_pin_length(&mut self, sub_params: Option<&Value>) -> Reply {
        let pin_set = self.pin_set();
        let policy = self.state.pin_policy.clone();
        let new_min = match sub_params.and_then(|s| get_int_key(s, 0x01)) {
            None => policy.min_pin_length,
            Some(v) => as_i64(v)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or(CtapStatus::CborUnexpectedType)?,
        };
        let force = match sub_params.and_then(|s| get_int_key(s, 0x03)) {
            None => false,
            Some(v) => v.as_bool().ok_or(CtapStatus::CborUnexpectedType)?,
        };
        if sub_params.and_then(|s| get_int_key(s, 0x02)).is_some() {
            // minPinLengthRPIDs: this key keeps no RP list (maxRPIDsForSetMinPINLength 0).
            return Err(CtapStatus::KeyStoreFull);
        }
        // The minimum only goes up; a PIN must still fit the 63-byte limit.
        if new_min < policy.min_pin_length || new_min > 63 {
            return Err(CtapStatus::PinPolicyViolation);
        }
        if force && !pin_set {
            return Err(CtapStatus::PinNotSet);
        }
        let too_short = pin_set && policy.pin_length.is_some_and(|len| len < new_min);
        let policy = &mut self.state.pin_policy;
        policy.min_pin_length = new_min;
        if force || too_short {
            policy.force_pin_change = true;
        }
        self.persist();
        Ok(Value::Map(vec![]))
    }
}
