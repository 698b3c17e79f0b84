//! The simulated key's authenticator core: a CTAP2.1 authenticator in software that takes raw
//! CTAP2 requests (command byte ‖ CBOR) and returns raw responses (status ‖ CBOR), with real
//! P-256 keys and packed attestation. The same core answers the in-process simulator and the
//! uhid virtual key, so both paths exercise the same key model.
//!
//! Key model (like many real keys): the credential id carries everything the key needs to use
//! the credential again, authenticated by an HMAC under the key's master secret (see
//! `credential`); the private key is derived from the master secret and the id's nonce, so
//! non-discoverable credentials need no storage. Discoverable credentials are kept in a bounded
//! table. All randomness comes from `HMAC(master, counter)`, so a seeded key is deterministic
//! and a restarted key never repeats a nonce.
//!
//! Files: `state` (what persists), `credential` (credential ids, keys and policies),
//! `make_credential`, `get_assertion`, `client_pin` (one CTAP command each), `extensions`
//! (credProtect and hmac-secret, CTAP 2.1 §12.1 and §12.5).

mod client_pin;
mod config;
mod credential;
mod extensions;
mod get_assertion;
mod make_credential;
mod reset;
mod state;

use std::path::PathBuf;
use std::sync::Arc;

use ciborium::value::Value;
use hmac::{Hmac, Mac};
use p256::ecdsa::SigningKey;
use p256::SecretKey;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use self::extensions::HmacSecretInput;
pub use self::extensions::{all_extensions, normalised_extensions, SimExtension};
pub use self::state::{KeyState, ResidentCredential};
use crate::device::ctap2::{
    as_i64, bytes, cmd, encode, get_int_key, get_text_key, int, int_map, pin_protocol_one as pp1,
    text, text_map,
};
use crate::device::CtapStatus;

/// The simulated key's AAGUID: the ASCII bytes of "keygate-sim-key1".
pub const SIM_AAGUID: uuid::Uuid = uuid::Uuid::from_bytes(*b"keygate-sim-key1");
pub const SIM_MODEL: &str = "keygate Simulated Key";
/// Default PIN retries of a fresh key (§6.5.2: maximum 8).
pub const MAX_PIN_RETRIES: u32 = 8;
/// Consecutive wrong PINs before a power cycle is needed (§6.5.5.7).
const PIN_AUTH_BLOCK_AFTER: u32 = 3;

/// authData flags (WebAuthn §6.1): user present, user verified, attested credential data,
/// extension data.
const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_AT: u8 = 0x40;
const FLAG_ED: u8 = 0x80;

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

/// RAM state, lost on a power cycle.
struct Volatile {
    key_agreement: SecretKey,
    pin_token: [u8; 32],
    consecutive_pin_mismatches: u32,
    /// What the current pinUvAuthToken may be used for (CTAP 2.1 §6.5.5.7 permissions).
    pin_token_permissions: u8,
    /// Remaining assertions of a discoverable GetAssertion, for GetNextAssertion.
    pending: Vec<PendingAssertion>,
    /// When the key last powered up: authenticatorReset's window starts here (`reset`).
    powered_up_at: std::time::Instant,
}

struct PendingAssertion {
    cred: ResidentCredential,
    client_data_hash: Vec<u8>,
    flags: u8,
    hmac_secret: Option<HmacSecretInput>,
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
                pin_token_permissions: 0,
                pending: Vec::new(),
                powered_up_at: std::time::Instant::now(),
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
        self.volatile.pin_token_permissions = 0;
        self.volatile.pending.clear();
        self.volatile.powered_up_at = std::time::Instant::now();
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
        self.state.pin_policy.pin_length = pin.map(|p| p.chars().count() as u32);
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

    /// Which extensions the key implements from now on (a firmware change). Credentials made
    /// before keep the protection they were made with.
    pub fn set_extensions(&mut self, extensions: &[SimExtension]) {
        self.state.extensions = normalised_extensions(extensions);
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
            cmd::AUTHENTICATOR_CONFIG => self.authenticator_config(params.as_ref()),
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
        options.extend(self.config_options());
        let pin_protocols = if self.state.pin_supported {
            vec![int(1)]
        } else {
            vec![]
        };
        // CTAP 2.1 §9: credProtect is mandatory for FIDO_2_1; without it the key is CTAP 2.0.
        let mut versions = vec![text("FIDO_2_0")];
        if self.state.supports(SimExtension::CredProtect) {
            versions.push(text("FIDO_2_1"));
        }
        let extensions = self
            .state
            .extensions
            .iter()
            .map(|e| text(e.name()))
            .collect();
        int_map(vec![
            (0x01, Value::Array(versions)),
            (0x02, Value::Array(extensions)),
            (0x03, bytes(SIM_AAGUID.as_bytes())),
            (0x04, text_map(options)),
            (0x05, int(1200)),
            (0x06, Value::Array(pin_protocols)),
            (0x07, int(8)),
            (0x0C, Value::Bool(self.state.pin_policy.force_pin_change)),
            (0x0D, int(self.state.pin_policy.min_pin_length as i64)),
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

    /// An identical copy of this key's secrets and counter (a cloned key).
    pub fn clone_state(&self) -> KeyState {
        self.state.clone()
    }
}

/// Write via a temporary file and rename, so a crash leaves the old or the new state; 0600.
pub fn write_atomically(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    crate::base::fs::replace_private(path, data)
}
