//! Device layer: everything that talks to a FIDO2 authenticator.
//!
//! Layering (after mozilla/authenticator-rs): a *transport* moves CTAPHID/CBOR bytes, the CTAP2
//! *command* layer (`ctap2`) encodes requests and decodes responses, and the [`Authenticator`] trait
//! is the seam the rest of keygate uses. Two adapters implement it:
//! - `hid`: real keys through ctap-hid-fido2/hidapi (the only module naming those crates);
//! - `sim`: a software CTAP2 authenticator speaking real CBOR with real P-256 keys.
//!
//! Every device is driven by an actor thread (`actor`), because CTAP calls block.

pub mod actor;
pub mod capture;
pub mod ctap2;
pub mod ctaphid;
pub mod held;
pub mod hid;
pub mod models;
pub mod sim;
pub mod status;

use crate::base::error::{ErrorCode, PublicError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

pub use held::held_credentials;
pub use models::model_name;
pub use status::CtapStatus;

/// Stable identifier of a plugged device (`sim:<n>` or `hid:<path>`).
pub type DeviceId = String;

/// What keygate reports about one plugged key.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct DeviceInfo {
    pub id: DeviceId,
    /// `hid` or `sim`.
    pub transport: String,
    pub product: String,
    pub aaguid: Option<uuid::Uuid>,
    /// Human model name when the AAGUID is known.
    pub model: Option<String>,
    /// CTAP versions from authenticatorGetInfo (e.g. `FIDO_2_0`, `FIDO_2_1`).
    pub versions: Vec<String>,
    pub extensions: Vec<String>,
    /// `clientPin` option: Some(true) = set, Some(false) = supported but not set, None = unsupported.
    pub pin_set: Option<bool>,
    pub pin_retries: Option<u32>,
    /// Built-in user verification (biometrics) supported.
    pub uv_supported: bool,
    /// Discoverable credential support (`rk` option).
    pub discoverable_supported: bool,
    pub remaining_discoverable_credentials: Option<u32>,
    pub firmware: Option<String>,
    /// GetInfo 0x0D: the shortest PIN the key accepts (CTAP 2.1; 4 when not raised).
    pub min_pin_length: Option<u32>,
    /// GetInfo 0x0C: the key refuses its PIN for anything but changePIN until it is changed.
    pub force_pin_change: Option<bool>,
    /// Options `authnrCfg` and `setMinPINLength`: the key takes a PIN policy through
    /// authenticatorConfig (CTAP 2.1 §6.11).
    pub pin_policy_writable: bool,
    /// GetInfo 0x07 maxCredentialCountInList: how many credential ids one request may list
    /// (None when the key does not say; keygate then lists one).
    pub max_credentials_in_list: Option<u32>,
}

impl DeviceInfo {
    /// Whether the key lists `name` (e.g. `credProtect`, `hmac-secret`) among its extensions
    /// (authenticatorGetInfo 0x02). A key ignores inputs of extensions it does not list.
    pub fn supports_extension(&self, name: &str) -> bool {
        self.extensions.iter().any(|e| e == name)
    }
}

/// Typed progress of one device operation, streamed to API clients.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    WaitingTouch,
    NeedsPin { retries_left: Option<u32> },
    Processing,
    Done,
    Failed { code: String },
}

/// Everything a blocking operation needs to stay interruptible: a deadline, a cancel flag
/// that another thread may raise, and a progress sink.
#[derive(Clone)]
pub struct OpContext {
    pub deadline: Instant,
    pub cancelled: Arc<AtomicBool>,
    pub progress: Arc<dyn Fn(Progress) + Send + Sync>,
}

impl OpContext {
    pub fn new(deadline: Instant, progress: Arc<dyn Fn(Progress) + Send + Sync>) -> Self {
        Self {
            deadline,
            cancelled: Arc::new(AtomicBool::new(false)),
            progress,
        }
    }
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }
    pub fn emit(&self, p: Progress) {
        (self.progress)(p)
    }
}

impl std::fmt::Debug for OpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpContext")
            .field("deadline", &self.deadline)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// A PIN held in memory only; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(String);

impl Pin {
    pub fn new(s: impl Into<String>) -> Self {
        Pin(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// CTAP 2.1 §6.5.5.5: minimum PIN length counts Unicode code points, default 4 (`min_len`
    /// may raise it, never lower it); at most 63 bytes UTF-8 (the PIN is padded to 64 with at
    /// least one NUL). [`DeviceError::PinPolicyViolation`] states both limits: the key's own
    /// refusal (CTAP2_ERR_PIN_POLICY_VIOLATION) maps to it too and does not say which one broke.
    pub fn check_policy(&self, min_len: u32) -> Result<(), DeviceError> {
        let cps = self.0.chars().count() as u32;
        if cps < min_len.max(4) || self.0.len() > 63 {
            return Err(DeviceError::PinPolicyViolation);
        }
        Ok(())
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

/// credProtect policy (CTAP 2.1 §12.1): what a getAssertion must show to use the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CredProtect {
    /// 0x01: usable with or without UV, discoverable without UV.
    UserVerificationOptional = 1,
    /// 0x02: without UV only when the RP names the credential (allow list).
    UserVerificationOptionalWithCredentialIdList = 2,
    /// 0x03: only with UV.
    UserVerificationRequired = 3,
}

impl CredProtect {
    pub fn from_level(level: u8) -> Option<Self> {
        match level {
            1 => Some(Self::UserVerificationOptional),
            2 => Some(Self::UserVerificationOptionalWithCredentialIdList),
            3 => Some(Self::UserVerificationRequired),
            _ => None,
        }
    }
    pub fn level(self) -> u8 {
        self as u8
    }
}

/// Authenticator extension inputs of a makeCredential (CTAP 2.1 §12). The outputs come back
/// in the authenticator data's extensions map (flag ED), inside the attestation object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CredentialExtensions {
    /// `credProtect`: None leaves the key's default (level 1).
    pub cred_protect: Option<CredProtect>,
    /// `hmac-secret: true`: create the credential's CredRandom (Windows sign-in uses it).
    pub hmac_secret: bool,
}

/// authenticatorMakeCredential, as keygate asks for it.
#[derive(Debug, Clone)]
pub struct MakeCredentialArgs {
    /// SHA-256 of the exact clientDataJSON bytes.
    pub client_data_hash: [u8; 32],
    /// The clientDataJSON bytes themselves: ctap-hid-fido2 hashes them itself.
    pub client_data_json: Vec<u8>,
    pub rp_id: String,
    pub rp_name: String,
    pub user_id: Vec<u8>,
    pub user_name: String,
    pub user_display_name: String,
    /// COSE algorithm identifiers in preference order (e.g. -7 = ES256).
    pub algorithms: Vec<i64>,
    pub exclude_list: Vec<Vec<u8>>,
    pub resident_key: bool,
    /// Require user verification (PIN or built-in UV).
    pub user_verification: bool,
    pub pin: Option<Pin>,
    pub extensions: CredentialExtensions,
}

/// The authenticator's answer, already assembled as a WebAuthn attestationObject (CBOR map
/// `{fmt, authData, attStmt}`).
#[derive(Debug, Clone)]
pub struct MakeCredentialOutput {
    pub attestation_object: Vec<u8>,
    pub credential_id: Vec<u8>,
}

impl MakeCredentialOutput {
    /// The authenticator extension outputs in the attestation object's authData (flag ED):
    /// what the key applied of [`MakeCredentialArgs::extensions`]. All `None` for a key that
    /// ignored them (CTAP 2.0 keys, keys without the extension).
    pub fn extension_outputs(&self) -> Result<CreationExtensionOutputs, DeviceError> {
        let obj = ctap2::decode(&self.attestation_object)?;
        let auth_data = ctap2::get_text_key(&obj, "authData")
            .and_then(|v| v.as_bytes())
            .ok_or_else(|| DeviceError::Protocol("attestation object lacks authData".into()))?;
        CreationExtensionOutputs::from_auth_data(auth_data)
    }
}

/// The makeCredential extension outputs keygate uses (CTAP 2.1 §12.1, §12.5), as the key
/// signed them in authData.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreationExtensionOutputs {
    /// `credProtect`: the protection level the credential got.
    pub cred_protect: Option<CredProtect>,
    /// `hmac-secret`: true when the key made the credential's CredRandom. WebAuthn clients
    /// report it as the client extension output `hmacCreateSecret`.
    pub hmac_secret: Option<bool>,
}

impl CreationExtensionOutputs {
    /// Read from authData; all `None` without flag ED. Malformed outputs are a protocol error.
    pub fn from_auth_data(auth_data: &[u8]) -> Result<Self, DeviceError> {
        let Some(map) = ctap2::auth_data_extensions(auth_data)? else {
            return Ok(Self::default());
        };
        let cred_protect = match ctap2::get_text_key(&map, "credProtect") {
            None => None,
            Some(v) => Some(
                ctap2::as_i64(v)
                    .and_then(|l| u8::try_from(l).ok())
                    .and_then(CredProtect::from_level)
                    .ok_or_else(|| DeviceError::Protocol("invalid credProtect output".into()))?,
            ),
        };
        let hmac_secret = match ctap2::get_text_key(&map, "hmac-secret") {
            None => None,
            Some(v) => Some(
                v.as_bool()
                    .ok_or_else(|| DeviceError::Protocol("invalid hmac-secret output".into()))?,
            ),
        };
        Ok(Self {
            cred_protect,
            hmac_secret,
        })
    }
}

/// authenticatorGetAssertion, as keygate asks for it.
#[derive(Debug, Clone)]
pub struct GetAssertionArgs {
    pub client_data_hash: [u8; 32],
    /// The clientDataJSON bytes themselves: ctap-hid-fido2 hashes them itself.
    pub client_data_json: Vec<u8>,
    pub rp_id: String,
    /// Empty means a discoverable (user-less) request.
    pub allow_list: Vec<Vec<u8>>,
    pub user_verification: bool,
    pub pin: Option<Pin>,
    /// False: a silent request (option `up: false`, CTAP 2.1 §6.2.2): the key answers without
    /// a touch and signs with the UP flag clear. Only for learning which credentials a key
    /// holds ([`held_credentials`]); never for a verification.
    pub user_presence: bool,
}

#[derive(Debug, Clone)]
pub struct AssertionOutput {
    pub credential_id: Vec<u8>,
    pub authenticator_data: Vec<u8>,
    pub signature: Vec<u8>,
    pub user_handle: Option<Vec<u8>>,
}

/// Errors of the device layer. Each maps to one stable API error code.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("no security key is plugged in")]
    NoDevice,
    #[error("more than one security key is plugged in")]
    MultipleDevices,
    #[error("the security key is busy with another operation")]
    Busy,
    #[error("the security key was removed")]
    Removed,
    #[error("the key was not touched in time")]
    TouchTimeout,
    #[error("the operation was cancelled")]
    Cancelled,
    #[error("the user denied the operation on the key")]
    OperationDenied,
    #[error("a PIN is required")]
    PinRequired,
    #[error("wrong PIN")]
    PinInvalid { retries_left: Option<u32> },
    #[error("the PIN is blocked; the key must be reset")]
    PinBlocked,
    #[error("too many wrong PINs; unplug and replug the key")]
    PinAuthBlocked,
    #[error(
        "the PIN does not meet the policy: at least 4 characters (more if the key requires it) \
         and at most 63 bytes of UTF-8"
    )]
    PinPolicyViolation,
    #[error("the PIN is already set")]
    PinAlreadySet,
    #[error("the PIN is not set")]
    PinNotSet,
    #[error("the key does not support user verification")]
    UvUnsupported,
    #[error("the key already holds a credential excluded by the request")]
    CredentialExcluded,
    #[error("the key holds no matching credential")]
    NoCredentials,
    #[error("the key does not support discoverable credentials or its storage is full")]
    KeyStoreFull,
    #[error("the key refused the reset: more than its power-up window has passed since it was plugged in")]
    ResetWindowMissed,
    #[error("the key answered with CTAP status {0:?}")]
    Ctap(CtapStatus),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("I/O error: {0}")]
    Io(String),
}

impl DeviceError {
    /// The stable API error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            DeviceError::NoDevice => ErrorCode::NoDevice,
            DeviceError::MultipleDevices => ErrorCode::MultipleDevices,
            DeviceError::Busy => ErrorCode::DeviceBusy,
            DeviceError::Removed => ErrorCode::DeviceRemoved,
            DeviceError::TouchTimeout => ErrorCode::TouchTimeout,
            DeviceError::Cancelled => ErrorCode::Cancelled,
            DeviceError::OperationDenied => ErrorCode::OperationDenied,
            DeviceError::PinRequired => ErrorCode::PinRequired,
            DeviceError::PinInvalid { .. } => ErrorCode::PinInvalid,
            DeviceError::PinBlocked => ErrorCode::PinBlocked,
            DeviceError::PinAuthBlocked => ErrorCode::PinAuthBlocked,
            DeviceError::PinPolicyViolation => ErrorCode::PinPolicyViolation,
            DeviceError::PinAlreadySet => ErrorCode::PinAlreadySet,
            DeviceError::PinNotSet => ErrorCode::PinNotSet,
            DeviceError::UvUnsupported => ErrorCode::UvUnsupported,
            DeviceError::CredentialExcluded => ErrorCode::CredentialExcluded,
            DeviceError::NoCredentials => ErrorCode::NoCredentials,
            DeviceError::KeyStoreFull => ErrorCode::KeyStoreFull,
            DeviceError::ResetWindowMissed => ErrorCode::ResetWindowMissed,
            DeviceError::Ctap(_) | DeviceError::Protocol(_) | DeviceError::Io(_) => {
                ErrorCode::DeviceError
            }
        }
    }

    /// Map a CTAP status (other than success) to the device error users understand.
    pub fn from_status(s: CtapStatus, pin_retries: Option<u32>) -> Self {
        match s {
            CtapStatus::PinInvalid => DeviceError::PinInvalid {
                retries_left: pin_retries,
            },
            CtapStatus::PinBlocked => DeviceError::PinBlocked,
            CtapStatus::PinAuthBlocked => DeviceError::PinAuthBlocked,
            CtapStatus::PinPolicyViolation => DeviceError::PinPolicyViolation,
            CtapStatus::PinRequired => DeviceError::PinRequired,
            CtapStatus::PinNotSet => DeviceError::PinNotSet,
            CtapStatus::CredentialExcluded => DeviceError::CredentialExcluded,
            CtapStatus::NoCredentials => DeviceError::NoCredentials,
            CtapStatus::KeepaliveCancel => DeviceError::Cancelled,
            CtapStatus::UserActionTimeout | CtapStatus::ActionTimeout => DeviceError::TouchTimeout,
            CtapStatus::OperationDenied | CtapStatus::NotAllowed => DeviceError::OperationDenied,
            CtapStatus::KeyStoreFull => DeviceError::KeyStoreFull,
            CtapStatus::UnsupportedOption => DeviceError::UvUnsupported,
            other => DeviceError::Ctap(other),
        }
    }
}

impl PublicError for DeviceError {
    fn code(&self) -> ErrorCode {
        DeviceError::code(self)
    }
    fn public_message(&self) -> String {
        match self {
            DeviceError::Ctap(_) | DeviceError::Protocol(_) | DeviceError::Io(_) => {
                "the security key reported an error".into()
            }
            other => other.to_string(),
        }
    }
    fn details(&self) -> Vec<(&'static str, serde_json::Value)> {
        match self {
            DeviceError::PinInvalid {
                retries_left: Some(r),
            } => vec![("retries_left", (*r).into())],
            _ => Vec::new(),
        }
    }
}

/// The seam between keygate and one plugged authenticator. Implementations block; they are
/// only ever called from the device's actor thread, except [`Authenticator::cancel`], which
/// another thread calls to interrupt a blocking operation (CTAPHID_CANCEL on HID).
pub trait Authenticator: Send + Sync {
    fn id(&self) -> DeviceId;
    /// authenticatorGetInfo plus PIN retries.
    fn info(&self) -> Result<DeviceInfo, DeviceError>;
    /// Blocks until the user touched the key, the deadline passed or the context was cancelled.
    fn make_credential(
        &self,
        args: &MakeCredentialArgs,
        ctx: &OpContext,
    ) -> Result<MakeCredentialOutput, DeviceError>;
    /// All assertions the key returns (more than one only for a discoverable request where the
    /// key holds several credentials for the RP).
    fn get_assertion(
        &self,
        args: &GetAssertionArgs,
        ctx: &OpContext,
    ) -> Result<Vec<AssertionOutput>, DeviceError>;
    fn pin_retries(&self) -> Result<u32, DeviceError>;
    fn set_pin(&self, new_pin: &Pin) -> Result<(), DeviceError>;
    fn change_pin(&self, current_pin: &Pin, new_pin: &Pin) -> Result<(), DeviceError>;
    /// Check a PIN without a touch: ClientPIN getPinToken (CTAP 2.1 §6.5.5.7). Contract: a
    /// wrong PIN costs one retry on the key exactly as it would inside makeCredential
    /// (`PinInvalid` with the retries left, `PinAuthBlocked` after three in a row), so callers
    /// use it only where the PIN is about to be used anyway: before a ceremony whose clock
    /// must not start on a wrong PIN (Entra's 5-minute window).
    fn verify_pin(&self, pin: &Pin) -> Result<(), DeviceError>;
    /// authenticatorConfig setMinPINLength (CTAP 2.1 §6.11.4) under a pinUvAuthToken with the
    /// `acfg` permission got with `pin`: raise the key's minimum PIN length (a key refuses to
    /// lower it, `PinPolicyViolation`) and, with `force_change`, make it refuse the PIN for
    /// anything but changePIN until changed. A PIN already shorter than `min_pin_length` makes
    /// the key force a change by itself. A key without authenticatorConfig answers
    /// CTAP1_ERR_INVALID_COMMAND (the default here, for adapters that cannot send it).
    fn set_pin_policy(
        &self,
        pin: &Pin,
        min_pin_length: u32,
        force_change: bool,
    ) -> Result<(), DeviceError> {
        let _ = (pin, min_pin_length, force_change);
        Err(DeviceError::Ctap(CtapStatus::InvalidCommand))
    }
    /// Interrupt the operation in flight, if any. Must not block.
    fn cancel(&self);
    /// authenticatorReset (CTAP 2.1 §6.6): wipes the PIN, every credential and the key's
    /// secrets. Keys accept it only within their power-up window (~10 s after being plugged
    /// in; else `ResetWindowMissed`) and only with a touch (`OperationDenied`,
    /// `TouchTimeout`, `Cancelled`). Adapters that cannot send it answer `Ctap(InvalidCommand)`.
    fn reset(&self, ctx: &OpContext) -> Result<(), DeviceError> {
        let _ = ctx;
        Err(DeviceError::Ctap(CtapStatus::InvalidCommand))
    }
    /// How many times this handle has seen the key power up (plugged back in) since it was
    /// opened. A real key that is replugged gets a new handle instead, so HID reports 0.
    fn power_ups(&self) -> u64 {
        0
    }
}

/// Discovers the plugged authenticators of one kind.
pub trait DeviceSource: Send + Sync {
    fn enumerate(&self) -> Result<Vec<Arc<dyn Authenticator>>, DeviceError>;
}
