//! The CTAP2 command layer: encodes authenticator requests as CTAP2 canonical CBOR, decodes the
//! responses, and runs the ClientPIN protocol (PIN/UV auth protocol 1, CTAP 2.1 §6.5.6) from the
//! platform side. It sits on a [`CtapTransport`] that moves one request/response pair; the
//! simulated key plugs in below it, so the whole encode/decode path runs in tests.
//!
//! Section references are to FIDO CTAP 2.1 (Proposed Standard, 2021-06-15).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ciborium::value::{Integer, Value};
use hmac::{Hmac, Mac};
use p256::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
use p256::{EncodedPoint, PublicKey};
use ring::agreement;
use sha2::{Digest, Sha256};

use super::{
    AssertionOutput, Authenticator, CtapStatus, DeviceError, DeviceId, DeviceInfo,
    GetAssertionArgs, MakeCredentialArgs, MakeCredentialOutput, OpContext, Pin,
};

/// authenticator API command bytes (§6).
pub mod cmd {
    pub const MAKE_CREDENTIAL: u8 = 0x01;
    pub const GET_ASSERTION: u8 = 0x02;
    pub const GET_INFO: u8 = 0x04;
    pub const CLIENT_PIN: u8 = 0x06;
    pub const RESET: u8 = 0x07;
    pub const GET_NEXT_ASSERTION: u8 = 0x08;
}

/// authenticatorClientPIN subcommands (§6.5.5).
pub mod pin_sub {
    pub const GET_PIN_RETRIES: u8 = 0x01;
    pub const GET_KEY_AGREEMENT: u8 = 0x02;
    pub const SET_PIN: u8 = 0x03;
    pub const CHANGE_PIN: u8 = 0x04;
    pub const GET_PIN_TOKEN: u8 = 0x05;
}

/// Moves one CTAP2 request (command byte followed by CBOR parameters) to an authenticator and
/// returns its raw response (status byte followed by CBOR). Blocks until the authenticator
/// answers; must give up with `Cancelled`/`TouchTimeout` when `ctx` is cancelled or expires.
pub trait CtapTransport: Send + Sync {
    fn transact(&self, request: &[u8], ctx: &OpContext) -> Result<Vec<u8>, DeviceError>;
    /// Interrupt a transaction in flight (CTAPHID_CANCEL). Must not block.
    fn cancel(&self);
    /// Human product string (HID product name or the simulator's).
    fn product(&self) -> String;
    /// `hid`, `sim`, ...
    fn kind(&self) -> &'static str;
}

// ---------------------------------------------------------------------------------------------
// CBOR helpers
// ---------------------------------------------------------------------------------------------

pub fn int(i: i64) -> Value {
    Value::Integer(Integer::from(i))
}

pub fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

pub fn bytes(b: &[u8]) -> Value {
    Value::Bytes(b.to_vec())
}

/// A CBOR map with integer keys, in the order given (callers give canonical order).
pub fn int_map(entries: Vec<(i64, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (int(k), v)).collect())
}

pub fn text_map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (text(k), v)).collect())
}

pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).expect("writing CBOR to a Vec cannot fail");
    out
}

pub fn decode(b: &[u8]) -> Result<Value, DeviceError> {
    ciborium::de::from_reader(b).map_err(|e| DeviceError::Protocol(format!("invalid CBOR: {e}")))
}

/// Look up an integer key in a CBOR map.
pub fn get_int_key(map: &Value, key: i64) -> Option<&Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_integer().and_then(|i| i64::try_from(i).ok()) == Some(key))
        .map(|(_, v)| v)
}

pub fn get_text_key<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

pub fn as_i64(v: &Value) -> Option<i64> {
    v.as_integer().and_then(|i| i64::try_from(i).ok())
}

fn need<'a>(v: Option<&'a Value>, what: &str) -> Result<&'a Value, DeviceError> {
    v.ok_or_else(|| DeviceError::Protocol(format!("response lacks {what}")))
}

fn need_bytes(v: Option<&Value>, what: &str) -> Result<Vec<u8>, DeviceError> {
    need(v, what)?
        .as_bytes()
        .cloned()
        .ok_or_else(|| DeviceError::Protocol(format!("{what} is not a byte string")))
}

/// Split a raw response into status and CBOR body.
pub fn split_response(raw: &[u8]) -> Result<(CtapStatus, &[u8]), DeviceError> {
    match raw.split_first() {
        Some((s, rest)) => Ok((CtapStatus::from_byte(*s), rest)),
        None => Err(DeviceError::Protocol("empty CTAP response".into())),
    }
}

// ---------------------------------------------------------------------------------------------
// COSE keys (RFC 9052 / §6.5.6 getPublicKey)
// ---------------------------------------------------------------------------------------------

/// COSE_Key for an EC2 P-256 public key with the given `alg` (-7 ES256 for credentials,
/// -25 ECDH-ES+HKDF-256 for PIN key agreement, per §6.5.6).
pub fn cose_ec2(pk: &PublicKey, alg: i64) -> Value {
    cose_ec2_sec1(pk.to_encoded_point(false).as_bytes(), alg)
}

/// COSE_Key for an uncompressed SEC1 P-256 point (`04 || x || y`, 65 bytes).
fn cose_ec2_sec1(point: &[u8], alg: i64) -> Value {
    int_map(vec![
        (1, int(2)),
        (3, int(alg)),
        (-1, int(1)),
        (-2, bytes(&point[1..33])),
        (-3, bytes(&point[33..65])),
    ])
}

pub fn parse_cose_ec2(v: &Value) -> Result<PublicKey, DeviceError> {
    let x = need_bytes(get_int_key(v, -2), "COSE x")?;
    let y = need_bytes(get_int_key(v, -3), "COSE y")?;
    if x.len() != 32 || y.len() != 32 {
        return Err(DeviceError::Protocol(
            "COSE key coordinates are not 32 bytes".into(),
        ));
    }
    let point = EncodedPoint::from_affine_coordinates(
        p256::FieldBytes::from_slice(&x),
        p256::FieldBytes::from_slice(&y),
        false,
    );
    Option::<PublicKey>::from(PublicKey::from_encoded_point(&point))
        .ok_or_else(|| DeviceError::Protocol("COSE key is not on P-256".into()))
}

// ---------------------------------------------------------------------------------------------
// PIN/UV auth protocol 1 (§6.5.6), shared by the platform side here and the simulated key
// ---------------------------------------------------------------------------------------------

pub mod pin_protocol_one {
    use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};

    use super::*;

    type Enc = cbc::Encryptor<aes::Aes256>;
    type Dec = cbc::Decryptor<aes::Aes256>;

    /// kdf(Z) = SHA-256(Z), Z = the ECDH shared point's x-coordinate.
    pub fn kdf(z: &[u8]) -> [u8; 32] {
        Sha256::digest(z).into()
    }

    /// AES-256-CBC with an all-zero IV and no padding; `data` must be whole blocks.
    pub fn encrypt(key: &[u8; 32], data: &[u8]) -> Vec<u8> {
        let mut buf = data.to_vec();
        let n = buf.len();
        Enc::new(key.into(), &[0u8; 16].into())
            .encrypt_padded_mut::<NoPadding>(&mut buf, n)
            .expect("whole blocks");
        buf
    }

    pub fn decrypt(key: &[u8; 32], data: &[u8]) -> Option<Vec<u8>> {
        if data.is_empty() || data.len() % 16 != 0 {
            return None;
        }
        let mut buf = data.to_vec();
        Dec::new(key.into(), &[0u8; 16].into())
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .ok()
            .map(|b| b.to_vec())
    }

    /// LEFT(HMAC-SHA-256(key, message), 16).
    pub fn authenticate(key: &[u8], message: &[u8]) -> [u8; 16] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
        mac.update(message);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// Constant-time check of a pinUvAuthParam.
    pub fn verify(key: &[u8], message: &[u8], param: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        param.len() == 16 && bool::from(authenticate(key, message).ct_eq(param))
    }

    /// LEFT(SHA-256(pin), 16).
    pub fn pin_hash(pin: &str) -> [u8; 16] {
        let d = Sha256::digest(pin.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&d[..16]);
        out
    }

    /// The new PIN, UTF-8, zero-padded to 64 bytes (§6.5.5.5).
    pub fn pad_pin(pin: &str) -> Vec<u8> {
        let mut p = pin.as_bytes().to_vec();
        p.resize(64, 0);
        p
    }

    /// Undo [`pad_pin`]; None when the padding or UTF-8 is malformed.
    pub fn unpad_pin(padded: &[u8]) -> Option<String> {
        if padded.len() < 64 {
            return None;
        }
        let end = padded.iter().position(|b| *b == 0).unwrap_or(padded.len());
        if padded[end..].iter().any(|b| *b != 0) {
            return None;
        }
        String::from_utf8(padded[..end].to_vec()).ok()
    }
}

use pin_protocol_one as pp1;

// ---------------------------------------------------------------------------------------------
// The platform-side client
// ---------------------------------------------------------------------------------------------

/// A CTAP2 authenticator reached through a [`CtapTransport`].
pub struct Ctap2Authenticator {
    id: DeviceId,
    transport: Arc<dyn CtapTransport>,
    /// Human model name for the key's AAGUID, when the caller knows it.
    model_of: fn(&uuid::Uuid) -> Option<String>,
}

/// Short operations (GetInfo, ClientPIN) need no touch; this bounds them all the same.
const QUICK_OP: Duration = Duration::from_secs(10);

fn quick_ctx() -> OpContext {
    OpContext::new(Instant::now() + QUICK_OP, Arc::new(|_| {}))
}

/// authenticatorGetInfo response (§6.4), the fields keygate uses.
#[derive(Debug, Clone, Default)]
pub struct GetInfo {
    pub versions: Vec<String>,
    pub extensions: Vec<String>,
    pub aaguid: Option<uuid::Uuid>,
    pub options: Vec<(String, bool)>,
    pub pin_protocols: Vec<u64>,
    pub min_pin_length: Option<u32>,
    pub firmware_version: Option<u64>,
    pub remaining_discoverable_credentials: Option<u32>,
}

impl GetInfo {
    pub fn option(&self, name: &str) -> Option<bool> {
        self.options
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }

    pub fn parse(body: &[u8]) -> Result<GetInfo, DeviceError> {
        let v = decode(body)?;
        let strings = |k: i64| -> Vec<String> {
            get_int_key(&v, k)
                .and_then(|a| a.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_text().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let aaguid = get_int_key(&v, 0x03)
            .and_then(|b| b.as_bytes())
            .and_then(|b| uuid::Uuid::from_slice(b).ok());
        let options = get_int_key(&v, 0x04)
            .and_then(|m| m.as_map())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_text()?.to_string(), v.as_bool()?)))
                    .collect()
            })
            .unwrap_or_default();
        let pin_protocols = get_int_key(&v, 0x06)
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| as_i64(x).map(|i| i as u64))
                    .collect()
            })
            .unwrap_or_default();
        let small = |k: i64| get_int_key(&v, k).and_then(as_i64);
        Ok(GetInfo {
            versions: strings(0x01),
            extensions: strings(0x02),
            aaguid,
            options,
            pin_protocols,
            min_pin_length: small(0x0D).map(|i| i as u32),
            firmware_version: small(0x0E).map(|i| i as u64),
            remaining_discoverable_credentials: small(0x14).map(|i| i as u32),
        })
    }
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
    fn call(
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

    fn client_pin(&self, params: Vec<(i64, Value)>) -> Result<Value, DeviceError> {
        self.call(cmd::CLIENT_PIN, Some(int_map(params)), &quick_ctx())
    }

    /// getKeyAgreement + ECDH: the shared secret and our public key as COSE.
    fn key_agreement(&self) -> Result<([u8; 32], Value), DeviceError> {
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

fn cred_descriptor(id: &[u8]) -> Value {
    text_map(vec![("id", bytes(id)), ("type", text("public-key"))])
}

/// Parse one authenticatorGetAssertion/GetNextAssertion response (§6.2.2).
pub fn parse_assertion(v: &Value, allow_list: &[Vec<u8>]) -> Result<AssertionOutput, DeviceError> {
    let credential_id = match get_int_key(v, 0x01) {
        Some(c) => need_bytes(get_text_key(c, "id"), "credential id")?,
        // §6.2.2: the credential may be omitted when the allowList had exactly one entry.
        None if allow_list.len() == 1 => allow_list[0].clone(),
        None => {
            return Err(DeviceError::Protocol(
                "assertion lacks its credential".into(),
            ))
        }
    };
    let user_handle = get_int_key(v, 0x04)
        .and_then(|u| get_text_key(u, "id"))
        .and_then(|b| b.as_bytes().cloned());
    Ok(AssertionOutput {
        credential_id,
        authenticator_data: need_bytes(get_int_key(v, 0x02), "authData")?,
        signature: need_bytes(get_int_key(v, 0x03), "signature")?,
        user_handle,
    })
}

/// Re-key a makeCredential response (integer keys 1..3) as a WebAuthn attestationObject
/// (text keys fmt/authData/attStmt), and pull out the credential id from authData.
pub fn attestation_object(v: &Value) -> Result<MakeCredentialOutput, DeviceError> {
    let fmt = need(get_int_key(v, 0x01), "fmt")?.clone();
    let auth_data = need_bytes(get_int_key(v, 0x02), "authData")?;
    let att_stmt = need(get_int_key(v, 0x03), "attStmt")?.clone();
    let credential_id = credential_id_from_auth_data(&auth_data)?;
    let obj = text_map(vec![
        ("fmt", fmt),
        ("attStmt", att_stmt),
        ("authData", bytes(&auth_data)),
    ]);
    Ok(MakeCredentialOutput {
        attestation_object: encode(&obj),
        credential_id,
    })
}

/// authData layout (WebAuthn §6.1): rpIdHash(32) flags(1) signCount(4) [aaguid(16) len(2) id ...].
pub fn credential_id_from_auth_data(auth_data: &[u8]) -> Result<Vec<u8>, DeviceError> {
    if auth_data.len() < 37 || auth_data[32] & 0x40 == 0 {
        return Err(DeviceError::Protocol(
            "authData lacks attested credential data".into(),
        ));
    }
    let rest = &auth_data[37..];
    if rest.len() < 18 {
        return Err(DeviceError::Protocol(
            "attested credential data truncated".into(),
        ));
    }
    let len = u16::from_be_bytes([rest[16], rest[17]]) as usize;
    rest.get(18..18 + len)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| DeviceError::Protocol("credential id truncated".into()))
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
        ctx.emit(super::Progress::WaitingTouch);
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
        if args.user_verification && auth.is_none() {
            params.push((0x05, text_map(vec![("uv", Value::Bool(true))])));
        }
        if let Some(a) = auth {
            params.push((0x06, bytes(&a)));
            params.push((0x07, int(1)));
        }
        ctx.emit(super::Progress::WaitingTouch);
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

    fn cancel(&self) {
        self.transport.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_padding_round_trips_and_rejects_garbage() {
        let p = pp1::pad_pin("1234");
        assert_eq!(p.len(), 64);
        assert_eq!(pp1::unpad_pin(&p).as_deref(), Some("1234"));
        let mut bad = p.clone();
        bad[40] = 1;
        assert_eq!(pp1::unpad_pin(&bad), None);
        assert_eq!(pp1::unpad_pin(&p[..32]), None);
    }

    #[test]
    fn aes_cbc_zero_iv_round_trips() {
        let key = [7u8; 32];
        let data = [1u8; 32];
        let enc = pp1::encrypt(&key, &data);
        assert_ne!(enc, data);
        assert_eq!(pp1::decrypt(&key, &enc).unwrap(), data);
        assert!(pp1::decrypt(&key, &enc[..15]).is_none());
    }

    #[test]
    fn credential_id_is_read_from_auth_data() {
        let mut ad = vec![0u8; 32];
        ad.push(0x41);
        ad.extend([0, 0, 0, 1]);
        ad.extend([9u8; 16]);
        ad.extend([0, 3, 0xAA, 0xBB, 0xCC]);
        assert_eq!(
            credential_id_from_auth_data(&ad).unwrap(),
            vec![0xAA, 0xBB, 0xCC]
        );
        ad.truncate(ad.len() - 1);
        assert!(credential_id_from_auth_data(&ad).is_err());
        assert!(credential_id_from_auth_data(&[0u8; 10]).is_err());
    }

    #[test]
    fn get_info_parses_options() {
        let v = int_map(vec![
            (0x01, Value::Array(vec![text("FIDO_2_0"), text("FIDO_2_1")])),
            (0x03, bytes(&[1u8; 16])),
            (
                0x04,
                text_map(vec![
                    ("rk", Value::Bool(true)),
                    ("clientPin", Value::Bool(false)),
                ]),
            ),
            (0x06, Value::Array(vec![int(1)])),
            (0x14, int(25)),
        ]);
        let gi = GetInfo::parse(&encode(&v)).unwrap();
        assert_eq!(gi.versions, vec!["FIDO_2_0", "FIDO_2_1"]);
        assert_eq!(gi.option("clientPin"), Some(false));
        assert_eq!(gi.option("uv"), None);
        assert_eq!(gi.remaining_discoverable_credentials, Some(25));
        assert!(GetInfo::parse(&[0xFF]).is_err());
    }
}
