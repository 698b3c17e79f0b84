//! The platform-side CTAP2 client: [`Ctap2Authenticator`] implements the [`Authenticator`] seam
//! over any [`CtapTransport`] by encoding makeCredential (with its credProtect and hmac-secret
//! extension inputs), getAssertion and ClientPIN requests, mapping non-zero statuses to
//! `DeviceError`s, and running the ClientPIN key agreement and PIN token exchange with PIN/UV
//! auth protocol 1.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ciborium::value::Value;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use ring::agreement;

use super::cbor::{
    as_i64, bytes, decode, encode, get_int_key, int, int_map, need, need_bytes, split_response,
    text, text_map,
};
use super::cose::{cose_ec2_sec1, parse_cose_ec2};
use super::extensions::make_credential_extensions;
use super::pin_protocol_one as pp1;
use super::response::{attestation_object, parse_assertion, GetInfo};
use super::{cmd, pin_sub, CtapTransport};
use crate::device::{
    AssertionOutput, Authenticator, CtapStatus, DeviceError, DeviceId, DeviceInfo,
    GetAssertionArgs, MakeCredentialArgs, MakeCredentialOutput, OpContext, Pin, Progress,
};

/// A CTAP2 authenticator reached through a [`CtapTransport`].
pub struct Ctap2Authenticator {
    id: DeviceId,
    transport: Arc<dyn CtapTransport>,
    /// Human model name for the key's AAGUID, when the caller knows it.
    model_of: fn(&uuid::Uuid) -> Option<String>,
}

/// Short operations (GetInfo, ClientPIN) need no touch; this bounds them all the same.
const QUICK_OP: Duration = Duration::from_secs(10);

pub(super) fn quick_ctx() -> OpContext {
    OpContext::new(Instant::now() + QUICK_OP, Arc::new(|_| {}))
}

impl Ctap2Authenticator {
    pub fn new(
        id: DeviceId,
        transport: Arc<dyn CtapTransport>,
        model_of: fn(&uuid::Uuid) -> Option<String>,
    ) -> Self {
        Ctap2Authenticator {
            id,
            transport,
            model_of,
        }
    }

    /// One request/response; a non-zero status becomes a [`DeviceError`].
    pub(super) fn call(
        &self,
        command: u8,
        params: Option<Value>,
        ctx: &OpContext,
    ) -> Result<Value, DeviceError> {
        let mut req = vec![command];
        if let Some(p) = params {
            req.extend(encode(&p));
        }
        let raw = self.transport.transact(&req, ctx)?;
        let (status, body) = split_response(&raw)?;
        if status != CtapStatus::Ok {
            return Err(self.status_error(status));
        }
        if body.is_empty() {
            return Ok(Value::Map(vec![]));
        }
        decode(body)
    }

    fn status_error(&self, status: CtapStatus) -> DeviceError {
        let retries = if status == CtapStatus::PinInvalid {
            self.pin_retries().ok()
        } else {
            None
        };
        DeviceError::from_status(status, retries)
    }

    pub fn get_info(&self) -> Result<GetInfo, DeviceError> {
        let raw = self.transport.transact(&[cmd::GET_INFO], &quick_ctx())?;
        let (status, body) = split_response(&raw)?;
        if status != CtapStatus::Ok {
            return Err(DeviceError::from_status(status, None));
        }
        GetInfo::parse(body)
    }

    pub(super) fn client_pin(&self, params: Vec<(i64, Value)>) -> Result<Value, DeviceError> {
        self.call(cmd::CLIENT_PIN, Some(int_map(params)), &quick_ctx())
    }

    /// getKeyAgreement + ECDH: the shared secret and our public key as COSE.
    pub(super) fn key_agreement(&self) -> Result<([u8; 32], Value), DeviceError> {
        let resp = self.client_pin(vec![
            (0x01, int(1)),
            (0x02, int(pin_sub::GET_KEY_AGREEMENT as i64)),
        ])?;
        let peer = parse_cose_ec2(need(get_int_key(&resp, 0x01), "keyAgreement")?)?;
        // The platform's half of the key agreement runs in the daemon for every PIN use, real
        // key or simulated: ring's P-256 (assembly, constant time) does it in a fraction of
        // the pure-Rust curve's time. The ephemeral key comes from the OS CSPRNG.
        let ours = agreement::EphemeralPrivateKey::generate(
            &agreement::ECDH_P256,
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|_| DeviceError::Protocol("no ephemeral key agreement key".into()))?;
        // ring gives it uncompressed (65 bytes), as COSE wants it.
        let our_public = ours
            .compute_public_key()
            .map_err(|_| DeviceError::Protocol("no ephemeral public key".into()))?;
        let secret = agreement::agree_ephemeral(
            ours,
            &agreement::UnparsedPublicKey::new(
                &agreement::ECDH_P256,
                peer.to_encoded_point(false).as_bytes(),
            ),
            pp1::kdf,
        )
        .map_err(|_| DeviceError::Protocol("the key's keyAgreement point is unusable".into()))?;
        Ok((secret, cose_ec2_sec1(our_public.as_ref(), -25)))
    }

    /// getPinToken (§6.5.5.7.1 with protocol 1): the decrypted pinUvAuthToken.
    fn pin_token(&self, pin: &Pin) -> Result<Vec<u8>, DeviceError> {
        let (shared, our_key) = self.key_agreement()?;
        let pin_hash_enc = pp1::encrypt(&shared, &pp1::pin_hash(pin.expose()));
        let resp = self.client_pin(vec![
            (0x01, int(1)),
            (0x02, int(pin_sub::GET_PIN_TOKEN as i64)),
            (0x03, our_key),
            (0x06, bytes(&pin_hash_enc)),
        ])?;
        let enc = need_bytes(get_int_key(&resp, 0x02), "pinUvAuthToken")?;
        pp1::decrypt(&shared, &enc)
            .ok_or_else(|| DeviceError::Protocol("malformed pinUvAuthToken".into()))
    }

    fn pin_auth(
        &self,
        pin: &Option<Pin>,
        client_data_hash: &[u8; 32],
    ) -> Result<Option<[u8; 16]>, DeviceError> {
        match pin {
            Some(p) => {
                let token = self.pin_token(p)?;
                Ok(Some(pp1::authenticate(&token, client_data_hash)))
            }
            None => Ok(None),
        }
    }
}

/// authenticatorReset's status (CTAP 2.1 §6.6): NOT_ALLOWED there means "too long after
/// power-up", not a refusal by the user (OPERATION_DENIED / USER_ACTION_TIMEOUT).
pub fn reset_outcome(status: CtapStatus) -> Result<(), DeviceError> {
    match status {
        CtapStatus::Ok => Ok(()),
        CtapStatus::NotAllowed => Err(DeviceError::ResetWindowMissed),
        other => Err(DeviceError::from_status(other, None)),
    }
}

fn cred_descriptor(id: &[u8]) -> Value {
    text_map(vec![("id", bytes(id)), ("type", text("public-key"))])
}

impl Authenticator for Ctap2Authenticator {
    fn id(&self) -> DeviceId {
        self.id.clone()
    }

    fn info(&self) -> Result<DeviceInfo, DeviceError> {
        let gi = self.get_info()?;
        let pin_set = gi.option("clientPin");
        let pin_retries = if pin_set.is_some() {
            self.pin_retries().ok()
        } else {
            None
        };
        Ok(DeviceInfo {
            id: self.id.clone(),
            transport: self.transport.kind().to_string(),
            product: self.transport.product(),
            model: gi.aaguid.as_ref().and_then(self.model_of),
            aaguid: gi.aaguid,
            versions: gi.versions.clone(),
            extensions: gi.extensions.clone(),
            pin_set,
            pin_retries,
            uv_supported: gi.option("uv").is_some(),
            discoverable_supported: gi.option("rk") == Some(true),
            remaining_discoverable_credentials: gi.remaining_discoverable_credentials,
            firmware: gi.firmware_version.map(|f| f.to_string()),
            min_pin_length: gi.min_pin_length,
            force_pin_change: gi.force_pin_change,
            pin_policy_writable: gi.option("authnrCfg") == Some(true)
                && gi.option("setMinPINLength") == Some(true),
            max_credentials_in_list: gi.max_credential_count_in_list,
        })
    }

    fn make_credential(
        &self,
        args: &MakeCredentialArgs,
        ctx: &OpContext,
    ) -> Result<MakeCredentialOutput, DeviceError> {
        let auth = self.pin_auth(&args.pin, &args.client_data_hash)?;
        let mut params = vec![
            (0x01, bytes(&args.client_data_hash)),
            (
                0x02,
                text_map(vec![
                    ("id", text(&args.rp_id)),
                    ("name", text(&args.rp_name)),
                ]),
            ),
            (
                0x03,
                text_map(vec![
                    ("id", bytes(&args.user_id)),
                    ("name", text(&args.user_name)),
                    ("displayName", text(&args.user_display_name)),
                ]),
            ),
            (
                0x04,
                Value::Array(
                    args.algorithms
                        .iter()
                        .map(|a| text_map(vec![("alg", int(*a)), ("type", text("public-key"))]))
                        .collect(),
                ),
            ),
        ];
        if !args.exclude_list.is_empty() {
            params.push((
                0x05,
                Value::Array(
                    args.exclude_list
                        .iter()
                        .map(|i| cred_descriptor(i))
                        .collect(),
                ),
            ));
        }
        if let Some(extensions) = make_credential_extensions(&args.extensions) {
            params.push((0x06, extensions));
        }
        let mut options = vec![];
        if args.resident_key {
            options.push(("rk", Value::Bool(true)));
        }
        if args.user_verification && auth.is_none() {
            // No PIN given: ask for built-in UV; a PIN-protected key answers PUAT_REQUIRED,
            // which becomes `pin_required` and the ceremony asks the user for the PIN.
            options.push(("uv", Value::Bool(true)));
        }
        if !options.is_empty() {
            params.push((0x07, text_map(options)));
        }
        if let Some(a) = auth {
            params.push((0x08, bytes(&a)));
            params.push((0x09, int(1)));
        }
        ctx.emit(Progress::WaitingTouch);
        let resp = self.call(cmd::MAKE_CREDENTIAL, Some(int_map(params)), ctx)?;
        attestation_object(&resp)
    }

    fn get_assertion(
        &self,
        args: &GetAssertionArgs,
        ctx: &OpContext,
    ) -> Result<Vec<AssertionOutput>, DeviceError> {
        let auth = self.pin_auth(&args.pin, &args.client_data_hash)?;
        let mut params = vec![
            (0x01, text(&args.rp_id)),
            (0x02, bytes(&args.client_data_hash)),
        ];
        if !args.allow_list.is_empty() {
            params.push((
                0x03,
                Value::Array(args.allow_list.iter().map(|i| cred_descriptor(i)).collect()),
            ));
        }
        let mut options = vec![];
        if !args.user_presence {
            options.push(("up", Value::Bool(false)));
        }
        if args.user_verification && auth.is_none() {
            options.push(("uv", Value::Bool(true)));
        }
        if !options.is_empty() {
            params.push((0x05, text_map(options)));
        }
        if let Some(a) = auth {
            params.push((0x06, bytes(&a)));
            params.push((0x07, int(1)));
        }
        if args.user_presence {
            ctx.emit(Progress::WaitingTouch);
        }
        let first = self.call(cmd::GET_ASSERTION, Some(int_map(params)), ctx)?;
        let total = get_int_key(&first, 0x05)
            .and_then(as_i64)
            .unwrap_or(1)
            .clamp(1, 64) as usize;
        let mut out = vec![parse_assertion(&first, &args.allow_list)?];
        while out.len() < total {
            let next = self.call(cmd::GET_NEXT_ASSERTION, None, ctx)?;
            out.push(parse_assertion(&next, &args.allow_list)?);
        }
        Ok(out)
    }

    fn pin_retries(&self) -> Result<u32, DeviceError> {
        let resp = self.client_pin(vec![
            (0x01, int(1)),
            (0x02, int(pin_sub::GET_PIN_RETRIES as i64)),
        ])?;
        need(get_int_key(&resp, 0x03), "pinRetries").map(|v| as_i64(v).unwrap_or(0).max(0) as u32)
    }

    fn set_pin(&self, new_pin: &Pin) -> Result<(), DeviceError> {
        // §6.5.5.5: setPIN on a key with a PIN answers CTAP2_ERR_NOT_ALLOWED, which alone
        // would read as "denied"; ask first so the caller learns the PIN is already set.
        match self.get_info()?.option("clientPin") {
            Some(true) => return Err(DeviceError::PinAlreadySet),
            Some(false) => {}
            // No ClientPIN at all: a touch-only key can hold no PIN.
            None => return Err(DeviceError::UvUnsupported),
        }
        let (shared, our_key) = self.key_agreement()?;
        let new_pin_enc = pp1::encrypt(&shared, &pp1::pad_pin(new_pin.expose()));
        let param = pp1::authenticate(&shared, &new_pin_enc);
        self.client_pin(vec![
            (0x01, int(1)),
            (0x02, int(pin_sub::SET_PIN as i64)),
            (0x03, our_key),
            (0x04, bytes(&param)),
            (0x05, bytes(&new_pin_enc)),
        ])?;
        Ok(())
    }

    fn change_pin(&self, current_pin: &Pin, new_pin: &Pin) -> Result<(), DeviceError> {
        if self.get_info()?.option("clientPin").is_none() {
            return Err(DeviceError::UvUnsupported);
        }
        let (shared, our_key) = self.key_agreement()?;
        let new_pin_enc = pp1::encrypt(&shared, &pp1::pad_pin(new_pin.expose()));
        let pin_hash_enc = pp1::encrypt(&shared, &pp1::pin_hash(current_pin.expose()));
        let mut msg = new_pin_enc.clone();
        msg.extend_from_slice(&pin_hash_enc);
        let param = pp1::authenticate(&shared, &msg);
        self.client_pin(vec![
            (0x01, int(1)),
            (0x02, int(pin_sub::CHANGE_PIN as i64)),
            (0x03, our_key),
            (0x04, bytes(&param)),
            (0x05, bytes(&new_pin_enc)),
            (0x06, bytes(&pin_hash_enc)),
        ])?;
        Ok(())
    }

    fn verify_pin(&self, pin: &Pin) -> Result<(), DeviceError> {
        match self.get_info()?.option("clientPin") {
            Some(true) => self.pin_token(pin).map(|_| ()),
            Some(false) => Err(DeviceError::PinNotSet),
            None => Err(DeviceError::UvUnsupported),
        }
    }

    fn set_pin_policy(
        &self,
        pin: &Pin,
        min_pin_length: u32,
        force_change: bool,
    ) -> Result<(), DeviceError> {
        self.write_pin_policy(pin, min_pin_length, force_change)
    }

    fn reset(&self, ctx: &OpContext) -> Result<(), DeviceError> {
        ctx.emit(Progress::WaitingTouch);
        let raw = self.transport.transact(&[cmd::RESET], ctx)?;
        let (status, _) = split_response(&raw)?;
        reset_outcome(status)
    }

    fn power_ups(&self) -> u64 {
        self.transport.power_ups()
    }

    fn cancel(&self) {
        self.transport.cancel();
    }
}
