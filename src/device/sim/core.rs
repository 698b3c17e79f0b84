//! The simulated key's authenticator core: a CTAP2.1 authenticator in software that takes raw
//! CTAP2 requests (command byte ‖ CBOR) and returns raw responses (status ‖ CBOR), with real
//! P-256 keys and packed attestation. The same core answers the in-process simulator and the
//! uhid virtual key, so both paths exercise the same key model.
//!
//! Key model (like many real keys): credential ids are `nonce(32) ‖ tag(16)` where
//! `tag = HMAC(master, "cred" ‖ nonce ‖ rpIdHash)`; the private key is derived from the master
//! secret and the nonce, so non-discoverable credentials need no storage. Discoverable
//! credentials are kept in a bounded table. All randomness comes from `HMAC(master, counter)`,
//! so a seeded key is deterministic and a restarted key never repeats a nonce.

use std::path::PathBuf;
use std::sync::Arc;

use ciborium::value::Value;
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::device::ctap2::{
    as_i64, bytes, cmd, cose_ec2, encode, get_int_key, get_text_key, int, int_map, parse_cose_ec2,
    pin_protocol_one as pp1, pin_sub, text, text_map,
};
use crate::device::CtapStatus;

/// The simulated key's AAGUID: the ASCII bytes of "keygate-sim-key1".
pub const SIM_AAGUID: uuid::Uuid = uuid::Uuid::from_bytes(*b"keygate-sim-key1");
pub const SIM_MODEL: &str = "keygate Simulated Key";
/// Default PIN retries of a fresh key (§6.5.2: maximum 8).
pub const MAX_PIN_RETRIES: u32 = 8;
/// Consecutive wrong PINs before a power cycle is needed (§6.5.5.7).
const PIN_AUTH_BLOCK_AFTER: u32 = 3;

/// Answers "was the key touched?" for one request. Implementations block.
pub trait UserPresence {
    /// Ok when the user touched the key; `OperationDenied`, `UserActionTimeout` or
    /// `KeepaliveCancel` otherwise.
    fn wait(&mut self) -> Result<(), CtapStatus>;
}

/// A presence that is always granted at once (replays, benchmarks).
pub struct AlwaysPresent;

impl UserPresence for AlwaysPresent {
    fn wait(&mut self) -> Result<(), CtapStatus> {
        Ok(())
    }
}

/// How the sign counter behaves.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CounterMode {
    /// A global counter that goes up by one per signature (most keys).
    #[default]
    Increment,
    /// Always reports 0 (some keys do, to avoid tracking).
    Zero,
}

/// Which attestation statement the key produces.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttestationMode {
    /// Packed attestation with a certificate from the bench's test CA.
    #[default]
    Ca,
    /// Packed self-attestation: signed by the credential key itself, no certificate.
    #[serde(rename = "self")]
    SelfSigned,
}

/// Packed attestation material shared by all simulated keys of a bench.
pub struct Attestation {
    pub cert_der: Vec<u8>,
    pub key: SigningKey,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResidentCredential {
    pub rp_id: String,
    #[serde(with = "hex_bytes")]
    pub user_id: Vec<u8>,
    pub user_name: String,
    pub user_display_name: String,
    #[serde(with = "hex_bytes")]
    pub credential_id: Vec<u8>,
    /// Creation order; newest first when listed.
    pub serial: u64,
}

/// What persists across power cycles (a real key's flash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyState {
    #[serde(with = "hex_bytes")]
    pub master: Vec<u8>,
    pub rng_counter: u64,
    pub sign_counter: u32,
    pub counter_mode: CounterMode,
    #[serde(with = "opt_hex_bytes", default)]
    pub pin_hash: Option<Vec<u8>>,
    pub pin_retries: u32,
    pub resident: Vec<ResidentCredential>,
    pub resident_slots: u32,
    #[serde(default)]
    pub attestation: AttestationMode,
    /// False for a key without ClientPIN support (no PIN, no UV: touch only).
    #[serde(default = "yes")]
    pub pin_supported: bool,
}

fn yes() -> bool {
    true
}

impl KeyState {
    pub fn new(master: [u8; 32]) -> Self {
        KeyState {
            master: master.to_vec(),
            rng_counter: 0,
            sign_counter: 0,
            counter_mode: CounterMode::Increment,
            pin_hash: None,
            pin_retries: MAX_PIN_RETRIES,
            resident: Vec::new(),
            resident_slots: 25,
            attestation: AttestationMode::Ca,
            pin_supported: true,
        }
    }
}

/// RAM state, lost on a power cycle.
struct Volatile {
    key_agreement: SecretKey,
    pin_token: [u8; 32],
    consecutive_pin_mismatches: u32,
    /// Remaining assertions of a discoverable GetAssertion, for GetNextAssertion.
    pending: Vec<PendingAssertion>,
}

struct PendingAssertion {
    cred: ResidentCredential,
    client_data_hash: Vec<u8>,
    flags: u8,
}

/// One software authenticator.
pub struct SoftKey {
    pub state: KeyState,
    attestation: Arc<Attestation>,
    volatile: Volatile,
    /// When set, the state is written here (atomically) after every change.
    persist_to: Option<PathBuf>,
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn err(s: CtapStatus) -> Vec<u8> {
    vec![s.to_byte()]
}

fn ok(body: &Value) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend(encode(body));
    out
}

type Reply = Result<Value, CtapStatus>;

impl SoftKey {
    pub fn new(
        state: KeyState,
        attestation: Arc<Attestation>,
        persist_to: Option<PathBuf>,
    ) -> Self {
        let mut key = SoftKey {
            state,
            attestation,
            volatile: Volatile {
                key_agreement: SecretKey::from_slice(&[1u8; 32]).expect("valid scalar"),
                pin_token: [0; 32],
                consecutive_pin_mismatches: 0,
                pending: Vec::new(),
            },
            persist_to,
        };
        key.power_cycle();
        key
    }

    /// Unplug and replug: new key-agreement key and PIN token, PIN auth block lifted.
    pub fn power_cycle(&mut self) {
        self.volatile.key_agreement = self.derive_secret_key(b"ka");
        self.volatile.pin_token = self.random();
        self.volatile.consecutive_pin_mismatches = 0;
        self.volatile.pending.clear();
    }

    fn random(&mut self) -> [u8; 32] {
        self.state.rng_counter += 1;
        hmac(
            &self.state.master,
            &[b"rand", &self.state.rng_counter.to_be_bytes()],
        )
    }

    fn derive_secret_key(&mut self, label: &[u8]) -> SecretKey {
        loop {
            let r = self.random();
            if let Ok(k) = SecretKey::from_slice(&hmac(&r, &[label])) {
                return k;
            }
        }
    }

    /// The private key of a credential id, when the id is this key's for `rp_id_hash`.
    fn credential_key(&self, credential_id: &[u8], rp_id_hash: &[u8]) -> Option<SigningKey> {
        if credential_id.len() != 48 {
            return None;
        }
        let (nonce, tag) = credential_id.split_at(32);
        let expect = hmac(&self.state.master, &[b"cred", nonce, rp_id_hash]);
        if !bool::from(expect[..16].ct_eq(tag)) {
            return None;
        }
        let mut seed = hmac(&self.state.master, &[b"key", nonce, rp_id_hash]);
        loop {
            if let Ok(k) = SigningKey::from_slice(&seed) {
                return Some(k);
            }
            seed = Sha256::digest(seed).into();
        }
    }

    fn new_credential(&mut self, rp_id_hash: &[u8]) -> (Vec<u8>, SigningKey) {
        let nonce = self.random();
        let tag = hmac(&self.state.master, &[b"cred", &nonce, rp_id_hash]);
        let mut id = nonce.to_vec();
        id.extend_from_slice(&tag[..16]);
        let key = self
            .credential_key(&id, rp_id_hash)
            .expect("freshly minted id is ours");
        (id, key)
    }

    fn next_sign_count(&mut self) -> u32 {
        match self.state.counter_mode {
            CounterMode::Zero => 0,
            CounterMode::Increment => {
                self.state.sign_counter = self.state.sign_counter.wrapping_add(1);
                self.state.sign_counter
            }
        }
    }

    /// Write the state to its file, if it has one.
    pub fn persist(&self) {
        if let Some(path) = &self.persist_to {
            if let Err(e) = write_atomically(
                path,
                &serde_json::to_vec_pretty(&self.state).unwrap_or_default(),
            ) {
                tracing::error!(path = %path.display(), error = %e, "cannot persist simulated key state");
            }
        }
    }

    pub fn pin_set(&self) -> bool {
        self.state.pin_hash.is_some()
    }

    /// Set or clear the PIN directly (simulator control, not a CTAP command).
    pub fn force_pin(&mut self, pin: Option<&str>) {
        self.state.pin_hash = pin.map(|p| pp1::pin_hash(p).to_vec());
        self.state.pin_retries = MAX_PIN_RETRIES;
        self.persist();
    }

    pub fn set_pin_retries(&mut self, retries: u32) {
        self.state.pin_retries = retries.min(MAX_PIN_RETRIES);
        self.persist();
    }

    pub fn set_counter_mode(&mut self, mode: CounterMode) {
        self.state.counter_mode = mode;
        self.persist();
    }

    /// Process one CTAP2 request: command byte ‖ CBOR parameters → status ‖ CBOR.
    pub fn process(&mut self, request: &[u8], presence: &mut dyn UserPresence) -> Vec<u8> {
        let Some((&command, params)) = request.split_first() else {
            return err(CtapStatus::InvalidLength);
        };
        let params = if params.is_empty() {
            None
        } else {
            match ciborium::de::from_reader::<Value, _>(params) {
                Ok(v @ Value::Map(_)) => Some(v),
                Ok(_) => return err(CtapStatus::CborUnexpectedType),
                Err(_) => return err(CtapStatus::InvalidCbor),
            }
        };
        if command != cmd::GET_NEXT_ASSERTION {
            self.volatile.pending.clear();
        }
        let reply = match command {
            cmd::GET_INFO => Ok(self.get_info()),
            cmd::MAKE_CREDENTIAL => self.make_credential(params.as_ref(), presence),
            cmd::GET_ASSERTION => self.get_assertion(params.as_ref(), presence),
            cmd::GET_NEXT_ASSERTION => self.get_next_assertion(),
            cmd::CLIENT_PIN => self.client_pin(params.as_ref()),
            cmd::RESET => self.reset(presence),
            _ => Err(CtapStatus::InvalidCommand),
        };
        match reply {
            Ok(v) => ok(&v),
            Err(s) => err(s),
        }
    }

    fn get_info(&self) -> Value {
        let remaining = self
            .state
            .resident_slots
            .saturating_sub(self.state.resident.len() as u32);
        let mut options = vec![
            ("rk", Value::Bool(true)),
            ("up", Value::Bool(true)),
            ("plat", Value::Bool(false)),
        ];
        if self.state.pin_supported {
            options.push(("clientPin", Value::Bool(self.pin_set())));
        }
        let pin_protocols = if self.state.pin_supported {
            vec![int(1)]
        } else {
            vec![]
        };
        int_map(vec![
            (0x01, Value::Array(vec![text("FIDO_2_0"), text("FIDO_2_1")])),
            (0x02, Value::Array(vec![])),
            (0x03, bytes(SIM_AAGUID.as_bytes())),
            (0x04, text_map(options)),
            (0x05, int(1200)),
            (0x06, Value::Array(pin_protocols)),
            (0x0D, int(4)),
            (0x0E, int(0x0001_0002)),
            (0x14, int(remaining as i64)),
        ])
    }

    /// Checks a pinUvAuthParam over `client_data_hash`; Ok(true) = user verified.
    fn check_pin_auth(
        &self,
        params: &Value,
        param_key: i64,
        proto_key: i64,
        cdh: &[u8],
    ) -> Result<bool, CtapStatus> {
        let Some(param) = get_int_key(params, param_key) else {
            return Ok(false);
        };
        let param = param.as_bytes().ok_or(CtapStatus::CborUnexpectedType)?;
        match get_int_key(params, proto_key).and_then(as_i64) {
            Some(1) => {}
            Some(_) => return Err(CtapStatus::InvalidParameter),
            None => return Err(CtapStatus::MissingParameter),
        }
        if !self.pin_set() {
            return Err(CtapStatus::PinNotSet);
        }
        if !pp1::verify(&self.volatile.pin_token, cdh, param) {
            return Err(CtapStatus::PinAuthInvalid);
        }
        Ok(true)
    }

    /// Decide UV for a request without pinUvAuthParam asking `uv: true` (§6.1.2 step 5/6).
    fn uv_option(&self, options: Option<&Value>) -> Result<(), CtapStatus> {
        let wants_uv = options
            .and_then(|o| get_text_key(o, "uv"))
            .and_then(Value::as_bool)
            == Some(true);
        if wants_uv && !self.state.pin_supported {
            return Err(CtapStatus::UnsupportedOption);
        }
        if wants_uv {
            // No built-in UV: a PIN-protected key needs the token, a key without PIN cannot verify.
            return Err(if self.pin_set() {
                CtapStatus::PinRequired
            } else {
                CtapStatus::PinNotSet
            });
        }
        Ok(())
    }

    fn make_credential(
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
        let rp_id_hash: [u8; 32] = Sha256::digest(rp_id.as_bytes()).into();
        if let Some(excl) = get_int_key(p, 0x05).and_then(Value::as_array) {
            let excluded = excl.iter().any(|d| {
                get_text_key(d, "id")
                    .and_then(Value::as_bytes)
                    .is_some_and(|id| self.credential_key(id, &rp_id_hash).is_some())
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
        let (credential_id, key) = self.new_credential(&rp_id_hash);
        let count = self.next_sign_count();
        let mut flags = 0x01 | 0x40;
        if uv {
            flags |= 0x04;
        }
        let mut auth_data = rp_id_hash.to_vec();
        auth_data.push(flags);
        auth_data.extend(count.to_be_bytes());
        auth_data.extend(SIM_AAGUID.as_bytes());
        auth_data.extend((credential_id.len() as u16).to_be_bytes());
        auth_data.extend(&credential_id);
        auth_data.extend(encode(&cose_ec2(&PublicKey::from(key.verifying_key()), -7)));
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

    fn get_assertion(&mut self, params: Option<&Value>, presence: &mut dyn UserPresence) -> Reply {
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
        let rp_id_hash: [u8; 32] = Sha256::digest(rp_id.as_bytes()).into();
        let allow = get_int_key(p, 0x03).and_then(Value::as_array);
        let mut flags = 0x01;
        if uv {
            flags |= 0x04;
        }
        match allow {
            Some(list) if !list.is_empty() => {
                let found = list.iter().find_map(|d| {
                    let id = get_text_key(d, "id").and_then(Value::as_bytes)?;
                    self.credential_key(id, &rp_id_hash)
                        .map(|k| (id.clone(), k))
                });
                let (id, key) = found.ok_or(CtapStatus::NoCredentials)?;
                presence.wait()?;
                let user = self
                    .state
                    .resident
                    .iter()
                    .find(|c| c.credential_id == id)
                    .map(|c| text_map(vec![("id", bytes(&c.user_id))]));
                let mut out = self.sign_assertion(&id, &key, &rp_id_hash, flags, &cdh);
                if let (Some(u), Value::Map(m)) = (user, &mut out) {
                    m.push((int(0x04), u));
                }
                self.persist();
                Ok(out)
            }
            _ => {
                let mut creds: Vec<ResidentCredential> = self
                    .state
                    .resident
                    .iter()
                    .filter(|c| c.rp_id == rp_id)
                    .cloned()
                    .collect();
                if creds.is_empty() {
                    return Err(CtapStatus::NoCredentials);
                }
                creds.sort_by_key(|c| std::cmp::Reverse(c.serial));
                presence.wait()?;
                let total = creds.len();
                let first = creds.remove(0);
                self.volatile.pending = creds
                    .into_iter()
                    .map(|cred| PendingAssertion {
                        cred,
                        client_data_hash: cdh.clone(),
                        flags,
                    })
                    .collect();
                let mut out = self.resident_assertion(&first, &rp_id_hash, flags, &cdh, uv);
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
        uv: bool,
    ) -> Value {
        let key = self
            .credential_key(&c.credential_id, rp_id_hash)
            .expect("resident ids are ours");
        let mut out = self.sign_assertion(&c.credential_id, &key, rp_id_hash, flags, cdh);
        // §6.2.2: user name/displayName only when UV was done and more than one account exists.
        let user = if uv {
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

    fn get_next_assertion(&mut self) -> Reply {
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
            next.flags & 0x04 != 0,
        );
        self.persist();
        Ok(out)
    }

    fn sign_assertion(
        &mut self,
        id: &[u8],
        key: &SigningKey,
        rp_id_hash: &[u8; 32],
        flags: u8,
        cdh: &[u8],
    ) -> Value {
        let count = self.next_sign_count();
        let mut auth_data = rp_id_hash.to_vec();
        auth_data.push(flags);
        auth_data.extend(count.to_be_bytes());
        let mut signed = auth_data.clone();
        signed.extend(cdh);
        let sig: DerSignature = key.sign(&signed);
        int_map(vec![
            (
                0x01,
                text_map(vec![("id", bytes(id)), ("type", text("public-key"))]),
            ),
            (0x02, bytes(&auth_data)),
            (0x03, bytes(sig.as_bytes())),
        ])
    }

    fn reset(&mut self, presence: &mut dyn UserPresence) -> Reply {
        presence.wait()?;
        let master = self.random();
        let slots = self.state.resident_slots;
        let mode = self.state.counter_mode;
        self.state = KeyState::new(master);
        self.state.resident_slots = slots;
        self.state.counter_mode = mode;
        self.power_cycle();
        self.persist();
        Ok(Value::Map(vec![]))
    }

    fn client_pin(&mut self, params: Option<&Value>) -> Reply {
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
                self.state.pin_hash = Some(pp1::pin_hash(&pin).to_vec());
                self.volatile.pin_token = self.random();
                self.persist();
                Ok(Value::Map(vec![]))
            }
            pin_sub::GET_PIN_TOKEN => {
                let shared = self.shared_secret(p)?;
                let pin_hash_enc = self.param_bytes(p, 0x06)?;
                self.check_pin_hash(&shared, &pin_hash_enc)?;
                self.persist();
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

    fn shared_secret(&self, p: &Value) -> Result<[u8; 32], CtapStatus> {
        let peer = get_int_key(p, 0x03).ok_or(CtapStatus::MissingParameter)?;
        let peer = parse_cose_ec2(peer).map_err(|_| CtapStatus::InvalidParameter)?;
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
        if pin.chars().count() < 4 || pin.len() > 63 {
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

    /// An identical copy of this key's secrets and counter (a cloned key).
    pub fn clone_state(&self) -> KeyState {
        self.state.clone()
    }
}

/// Write via a temporary file and rename, so a crash leaves the old or the new state; 0600.
pub fn write_atomically(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    crate::base::fs::replace_private(path, data)
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

mod opt_hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => s.serialize_some(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|h| hex::decode(h).map_err(serde::de::Error::custom))
            .transpose()
    }
}
