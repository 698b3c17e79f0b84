//! authenticatorConfig (CTAP 2.1 §6.11) from the platform side: a pinUvAuthToken with the
//! `acfg` permission (getPinUvAuthTokenUsingPinWithPermissions, §6.5.5.7.2, with PIN/UV auth
//! protocol 1), then setMinPINLength with its pinUvAuthParam over
//! `32×0xff ‖ 0x0d ‖ uint8(subCommand) ‖ subCommandParams` (the CBOR bytes exactly as sent).

use ciborium::value::Value;

use super::cbor::{bytes, encode, get_int_key, int, int_map, need_bytes};
use super::client::{quick_ctx, Ctap2Authenticator};
use super::pin_protocol_one as pp1;
use super::{cmd, config_sub, pin_sub};
use crate::device::{DeviceError, Pin};

/// The message a setMinPINLength pinUvAuthParam authenticates (§6.11, step "authenticate").
pub fn config_auth_message(sub_command: u8, sub_command_params: &[u8]) -> Vec<u8> {
    let mut msg = vec![0xff; 32];
    msg.push(cmd::AUTHENTICATOR_CONFIG);
    msg.push(sub_command);
    msg.extend_from_slice(sub_command_params);
    msg
}

/// setMinPINLength's subCommandParams (§6.11.4): newMinPINLength (0x01) and, when asked,
/// forceChangePin (0x03).
pub fn set_min_pin_length_params(min_pin_length: u32, force_change: bool) -> Value {
    let mut params = vec![(0x01, int(min_pin_length as i64))];
    if force_change {
        params.push((0x03, Value::Bool(true)));
    }
    int_map(params)
}

impl Ctap2Authenticator {
    /// getPinUvAuthTokenUsingPinWithPermissions with protocol 1: the decrypted token.
    fn pin_token_with_permissions(
        &self,
        pin: &Pin,
        permissions: u8,
    ) -> Result<Vec<u8>, DeviceError> {
        let (shared, our_key) = self.key_agreement()?;
        let pin_hash_enc = pp1::encrypt(&shared, &pp1::pin_hash(pin.expose()));
        let resp = self.client_pin(vec![
            (0x01, int(1)),
            (
                0x02,
                int(pin_sub::GET_PIN_UV_AUTH_TOKEN_USING_PIN_WITH_PERMISSIONS as i64),
            ),
            (0x03, our_key),
            (0x06, bytes(&pin_hash_enc)),
            (0x09, int(permissions as i64)),
        ])?;
        let enc = need_bytes(get_int_key(&resp, 0x02), "pinUvAuthToken")?;
        pp1::decrypt(&shared, &enc)
            .ok_or_else(|| DeviceError::Protocol("malformed pinUvAuthToken".into()))
    }

    pub(super) fn write_pin_policy(
        &self,
        pin: &Pin,
        min_pin_length: u32,
        force_change: bool,
    ) -> Result<(), DeviceError> {
        let token = self.pin_token_with_permissions(pin, config_sub::PERMISSION_ACFG)?;
        let params = set_min_pin_length_params(min_pin_length, force_change);
        let message = config_auth_message(config_sub::SET_MIN_PIN_LENGTH, &encode(&params));
        let auth = pp1::authenticate(&token, &message);
        self.call(
            cmd::AUTHENTICATOR_CONFIG,
            Some(int_map(vec![
                (0x01, int(config_sub::SET_MIN_PIN_LENGTH as i64)),
                (0x02, params),
                (0x03, int(1)),
                (0x04, bytes(&auth)),
            ])),
            &quick_ctx(),
        )?;
        Ok(())
    }
}
