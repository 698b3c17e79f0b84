//! Real keys over USB HID: the only module that names `ctap_hid_fido2` and `hidapi`.
//!
//! Quirks of ctap-hid-fido2 3.6 this adapter works around (read from its source):
//! - it computes clientDataHash = SHA-256 of the "challenge" it is given, so we hand it the
//!   exact clientDataJSON bytes and its output is the standard WebAuthn response;
//! - its calls block with no timeout: a CTAPHID_CBOR request reads keepalives in a loop with
//!   100 ms sleeps in between. The only way out for an operation waiting for a touch is a
//!   CTAPHID_CANCEL on the same channel, which it exposes as `cancel_selection()`; that write
//!   gets the device lock during the keepalive sleeps, so a cancel from another thread lands
//!   within ~100 ms and the key answers CTAP2_ERR_KEEPALIVE_CANCEL;
//! - errors are `anyhow` strings such as "0x31 CTAP2_ERR_PIN_INVALID": parsed once into
//!   [`CtapStatus`] here; "read err" means the key went away;
//! - `HidApi::new()` inside it panics instead of returning an error (no hidraw support, no
//!   udev): calls are wrapped in `catch_unwind` and reported as `device_error`;
//! - `enable_keep_alive_msg` must be false, or it prints "touch the key" to stdout;
//! - makeCredential extensions: it writes the extensions map in the order it is given (so
//!   keygate gives canonical order), encodes `CredProtect(policy)` as `policy as i64`, which
//!   is the CTAP level because its enum starts with `Unknown = 0`, and unwraps the `Option`s
//!   (always `Some` here). Its `Attestation::auth_data` is the key's authData byte string,
//!   copied before parsing, so the extension outputs (flag ED and the CBOR map) reach the
//!   attestation object exactly as the key signed them. It fails the whole call when it cannot
//!   parse that map, and prints to stdout on an output it does not know: keygate asks only
//!   for credProtect and hmac-secret, which it knows;
//! - it has no authenticatorReset: keygate sends that one itself (`hid/reset.rs`), with the
//!   library's handle closed meanwhile, since hidraw hands every input report to every handle
//!   and the library does not check channel ids.
//!
//! Replug detection: a key pulled and plugged back between two enumerations may get the same
//! `/dev/hidrawN` back; the kernel's device name behind the node (`raw::kernel_device_name`)
//! tells it apart, and the key's handle then counts a power-up ([`Authenticator::power_ups`]).

mod exchange;
mod raw;
mod reset;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ciborium::value::Value;
use ctap_hid_fido2::fidokey::credential_management::credential_management_params::CredentialProtectionPolicy;
use ctap_hid_fido2::fidokey::get_assertion::get_assertion_params::Assertion;
use ctap_hid_fido2::fidokey::make_credential::Attestation;
use ctap_hid_fido2::fidokey::{
    CredentialExtension as Mext, GetAssertionArgsBuilder, MakeCredentialArgsBuilder,
};
use ctap_hid_fido2::public_key_credential_user_entity::PublicKeyCredentialUserEntity;
use ctap_hid_fido2::{FidoKeyHid, HidParam, LibCfg};

use super::ctap2::{bytes, encode, int, text, text_map};
use super::{
    AssertionOutput, Authenticator, CredProtect, CredentialExtensions, CtapStatus, DeviceError,
    DeviceId, DeviceInfo, DeviceSource, GetAssertionArgs, MakeCredentialArgs, MakeCredentialOutput,
    OpContext, Pin, Progress,
};
use crate::base::sync::lock;

fn lib_cfg() -> LibCfg {
    let mut cfg = LibCfg::init();
    cfg.enable_log = false;
    cfg.enable_keep_alive_msg = false;
    cfg.keep_alive_msg = String::new();
    cfg
}

/// Map one of ctap-hid-fido2's error strings to a device error.
pub fn error_from_text(text: &str, pin_retries: Option<u32>) -> DeviceError {
    if text.contains("read err") || text.contains("write error") || text.contains("Failed to open")
    {
        return DeviceError::Removed;
    }
    match CtapStatus::parse_from_text(text) {
        Some(CtapStatus::Ok) | None => DeviceError::Protocol(text.to_string()),
        Some(status) => DeviceError::from_status(status, pin_retries),
    }
}

/// Run a library call, turning its panics into errors.
fn guarded<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!(
            "{what}: the HID library panicked (no hidraw access?)"
        )),
    }
}

/// Re-assemble a WebAuthn attestationObject from the library's parsed attestation
/// (WebAuthn §6.5: `{fmt, attStmt, authData}`), per attestation format.
pub fn attestation_object_from_parts(
    fmt: &str,
    auth_data: &[u8],
    alg: i32,
    sig: &[u8],
    x5c: &[Vec<u8>],
) -> Vec<u8> {
    let chain = || Value::Array(x5c.iter().map(|c| bytes(c)).collect());
    let att_stmt = match fmt {
        "none" => Value::Map(vec![]),
        // FIDO U2F attestation (WebAuthn §8.6): sig + x5c, no alg.
        "fido-u2f" => text_map(vec![("sig", bytes(sig)), ("x5c", chain())]),
        _ if x5c.is_empty() => text_map(vec![("alg", int(alg as i64)), ("sig", bytes(sig))]),
        _ => text_map(vec![
            ("alg", int(alg as i64)),
            ("sig", bytes(sig)),
            ("x5c", chain()),
        ]),
    };
    encode(&text_map(vec![
        ("fmt", text(fmt)),
        ("attStmt", att_stmt),
        ("authData", bytes(auth_data)),
    ]))
}

/// The library's makeCredential extension inputs for `ext`, in CTAP2 canonical key order
/// ("credProtect" before "hmac-secret": equal length, then bytewise).
fn library_extensions(ext: &CredentialExtensions) -> Vec<Mext> {
    let mut out = Vec::new();
    if let Some(level) = ext.cred_protect {
        out.push(Mext::CredProtect(Some(match level {
            CredProtect::UserVerificationOptional => {
                CredentialProtectionPolicy::UserVerificationOptional
            }
            CredProtect::UserVerificationOptionalWithCredentialIdList => {
                CredentialProtectionPolicy::UserVerificationOptionalWithCredentialIdList
            }
            CredProtect::UserVerificationRequired => {
                CredentialProtectionPolicy::UserVerificationRequired
            }
        })));
    }
    if ext.hmac_secret {
        out.push(Mext::HmacSecret(Some(true)));
    }
    out
}

/// The attestation object as the key made it: `att.auth_data` is the key's authData verbatim
/// (extension outputs included), the statement is rebuilt from the parsed alg/sig/x5c.
fn attestation_output(att: &Attestation) -> MakeCredentialOutput {
    MakeCredentialOutput {
        attestation_object: attestation_object_from_parts(
            &att.fmt,
            &att.auth_data,
            att.attstmt_alg,
            &att.attstmt_sig,
            &att.attstmt_x5c,
        ),
        credential_id: att.credential_descriptor.id.clone(),
    }
}

fn assertion_output(a: &Assertion) -> AssertionOutput {
    AssertionOutput {
        credential_id: a.credential_id.clone(),
        authenticator_data: a.auth_data.clone(),
        signature: a.signature.clone(),
        user_handle: (!a.user.id.is_empty()).then(|| a.user.id.clone()),
    }
}

fn open_library(path: &str) -> Result<FidoKeyHid, String> {
    guarded("open", || {
        FidoKeyHid::new(&[HidParam::Path(path.to_string())], &lib_cfg())
    })
}

/// Whether kernel device name `now` of a node is another device than the `known` one, which
/// it then becomes. An unreadable name (`None`: off Linux, or the node just went away) tells
/// nothing and changes nothing.
fn another_device(known: &mut Option<String>, now: Option<String>) -> bool {
    let Some(now) = now else {
        return false;
    };
    let another = known.as_ref().is_some_and(|k| *k != now);
    *known = Some(now);
    another
}

/// One plugged key.
pub struct HidAuthenticator {
    id: DeviceId,
    path: String,
    product: String,
    /// ctap-hid-fido2's handle. `None` after it was retired (for keygate's own requests, or
    /// because the key was replugged) until the next library call opens a fresh one.
    library: Mutex<Option<Arc<FidoKeyHid>>>,
    /// The kernel's device name behind `path` when it was last looked at.
    kernel_name: Mutex<Option<String>>,
    power_ups: AtomicU64,
    /// The path vanished from the device list: never reopened (another key may get it).
    unplugged: AtomicBool,
}

impl HidAuthenticator {
    fn open(path: &str, product: String) -> Result<Self, DeviceError> {
        let key =
            open_library(path).map_err(|e| DeviceError::Io(format!("cannot open {path}: {e}")))?;
        Ok(HidAuthenticator {
            id: format!("hid:{path}"),
            path: path.to_string(),
            product,
            library: Mutex::new(Some(Arc::new(key))),
            kernel_name: Mutex::new(raw::kernel_device_name(path)),
            power_ups: AtomicU64::new(0),
            unplugged: AtomicBool::new(false),
        })
    }

    fn path(&self) -> &str {
        &self.path
    }

    /// The library's handle, opened again if it was retired. A key whose node cannot be
    /// opened any more, or whose path left the device list, is gone.
    fn library(&self) -> Result<Arc<FidoKeyHid>, DeviceError> {
        let mut slot = lock(&self.library);
        if let Some(key) = slot.as_ref() {
            return Ok(key.clone());
        }
        if self.unplugged.load(Ordering::SeqCst) {
            return Err(DeviceError::Removed);
        }
        let key = Arc::new(open_library(&self.path).map_err(|e| {
            tracing::debug!(device = %self.id, error = %e, "cannot reopen the key");
            DeviceError::Removed
        })?);
        *slot = Some(key.clone());
        Ok(key)
    }

    /// Close the library's handle (once a call holding it returns).
    fn retire_library(&self) {
        let retired = lock(&self.library).take();
        drop(retired);
    }

    /// Look at the device behind the path again: a new kernel device is the key plugged in
    /// again (or another key) under the same path: a power-up, and a fresh library handle.
    fn notice_replug(&self) {
        let now = raw::kernel_device_name(&self.path);
        if another_device(&mut lock(&self.kernel_name), now) {
            tracing::info!(device = %self.id, "the key was plugged in again under the same path");
            self.retire_library();
            self.power_ups.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn err(&self, text: String) -> DeviceError {
        let retries = if CtapStatus::parse_from_text(&text) == Some(CtapStatus::PinInvalid) {
            self.pin_retries().ok()
        } else {
            None
        };
        error_from_text(&text, retries)
    }

    /// Run a blocking call; a cancelled context turns the key's KEEPALIVE_CANCEL into `Cancelled`.
    fn blocking<T>(
        &self,
        ctx: &OpContext,
        f: impl FnOnce(&FidoKeyHid) -> anyhow::Result<T>,
    ) -> Result<T, DeviceError> {
        if ctx.is_cancelled() {
            return Err(DeviceError::Cancelled);
        }
        let key = self.library()?;
        ctx.emit(Progress::WaitingTouch);
        let r = guarded("operation", || f(&key)).map_err(|e| self.err(e));
        match r {
            Err(_) if ctx.is_cancelled() => Err(if ctx.expired() {
                DeviceError::TouchTimeout
            } else {
                DeviceError::Cancelled
            }),
            other => other,
        }
    }
}

impl Authenticator for HidAuthenticator {
    fn id(&self) -> DeviceId {
        self.id.clone()
    }

    fn info(&self) -> Result<DeviceInfo, DeviceError> {
        let key = self.library()?;
        let info = guarded("get_info", || key.get_info()).map_err(|e| self.err(e))?;
        let option = |name: &str| {
            info.options
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| *v)
        };
        let pin_set = option("clientPin");
        let pin_retries = if pin_set == Some(true) {
            self.pin_retries().ok()
        } else {
            None
        };
        let aaguid = uuid::Uuid::from_slice(&info.aaguid).ok();
        Ok(DeviceInfo {
            id: self.id.clone(),
            transport: "hid".into(),
            product: self.product.clone(),
            model: aaguid.as_ref().and_then(super::model_name),
            aaguid,
            versions: info.versions.clone(),
            extensions: info.extensions.clone(),
            pin_set,
            pin_retries,
            uv_supported: option("uv").is_some(),
            discoverable_supported: option("rk") == Some(true),
            // 0 means "not reported" in the library's struct (the field is CTAP 2.1+).
            remaining_discoverable_credentials: (info.versions.iter().any(|v| v == "FIDO_2_1")
                || info.remaining_discoverable_credentials > 0)
                .then_some(info.remaining_discoverable_credentials),
            firmware: (info.firmware_version > 0).then(|| info.firmware_version.to_string()),
            min_pin_length: (info.min_pin_length > 0).then_some(info.min_pin_length),
            // The library reports `false` for keys without the field (CTAP 2.0).
            force_pin_change: info
                .versions
                .iter()
                .any(|v| v == "FIDO_2_1")
                .then_some(info.force_pin_change),
            pin_policy_writable: option("authnrCfg") == Some(true)
                && option("setMinPINLength") == Some(true),
            // 0 means "not reported" in the library's struct.
            max_credentials_in_list: (info.max_credential_count_in_list > 0)
                .then_some(info.max_credential_count_in_list),
        })
    }

    fn make_credential(
        &self,
        args: &MakeCredentialArgs,
        ctx: &OpContext,
    ) -> Result<MakeCredentialOutput, DeviceError> {
        let pin = args.pin.as_ref().map(|p| p.expose().to_string());
        let att = self.blocking(ctx, |key| {
            let mut b = MakeCredentialArgsBuilder::new(&args.rp_id, &args.client_data_json)
                .user_entity(&PublicKeyCredentialUserEntity::new(
                    Some(&args.user_id),
                    Some(&args.user_name),
                    Some(&args.user_display_name),
                ));
            b = match (&pin, args.user_verification) {
                (Some(p), _) => b.pin(p),
                // Ask for built-in UV: a PIN-only key answers PUAT_REQUIRED -> pin_required.
                (None, true) => b,
                (None, false) => b.without_pin_and_uv(),
            };
            for id in &args.exclude_list {
                b = b.exclude_authenticator(id);
            }
            if args.resident_key {
                b = b.resident_key();
            }
            let extensions = library_extensions(&args.extensions);
            if !extensions.is_empty() {
                b = b.extensions(&extensions);
            }
            key.make_credential_with_args(&b.build())
        })?;
        Ok(attestation_output(&att))
    }

    fn get_assertion(
        &self,
        args: &GetAssertionArgs,
        ctx: &OpContext,
    ) -> Result<Vec<AssertionOutput>, DeviceError> {
        let pin = args.pin.as_ref().map(|p| p.expose().to_string());
        let all = self.blocking(ctx, |key| {
            let mut b = GetAssertionArgsBuilder::new(&args.rp_id, &args.client_data_json);
            b = match (&pin, args.user_verification) {
                (Some(p), _) => b.pin(p),
                (None, true) => b,
                (None, false) => b.without_pin_and_uv(),
            };
            if !args.user_presence {
                b = b.without_up();
            }
            for id in &args.allow_list {
                b = b.add_credential_id(id);
            }
            key.get_assertion_with_args(&b.build())
        })?;
        Ok(all.iter().map(assertion_output).collect())
    }

    fn pin_retries(&self) -> Result<u32, DeviceError> {
        let key = self.library()?;
        guarded("get_pin_retries", || key.get_pin_retries())
            .map(|r| r.max(0) as u32)
            .map_err(|e| error_from_text(&e, None))
    }

    fn set_pin(&self, new_pin: &Pin) -> Result<(), DeviceError> {
        let key = self.library()?;
        guarded("set_new_pin", || key.set_new_pin(new_pin.expose())).map_err(|e| {
            match error_from_text(&e, None) {
                // §6.5.5.5: setPIN on a key that has one answers NOT_ALLOWED.
                DeviceError::OperationDenied => DeviceError::PinAlreadySet,
                other => other,
            }
        })
    }

    fn change_pin(&self, current_pin: &Pin, new_pin: &Pin) -> Result<(), DeviceError> {
        let key = self.library()?;
        guarded("change_pin", || {
            key.change_pin(current_pin.expose(), new_pin.expose())
        })
        .map_err(|e| self.err(e))
    }

    fn verify_pin(&self, pin: &Pin) -> Result<(), DeviceError> {
        let key = self.library()?;
        guarded("get_pin_token", || {
            key.get_pin_token(pin.expose()).map(|_| ())
        })
        .map_err(|e| self.err(e))
    }

    fn set_pin_policy(
        &self,
        pin: &Pin,
        min_pin_length: u32,
        force_change: bool,
    ) -> Result<(), DeviceError> {
        let min = u8::try_from(min_pin_length).map_err(|_| DeviceError::PinPolicyViolation)?;
        // ctap-hid-fido2 sends newMinPINLength and forceChangePin as two setMinPINLength
        // commands, each under its own acfg token; the second keeps the minimum (§6.11.4:
        // an absent newMinPINLength means the current one).
        let key = self.library()?;
        guarded("set_min_pin_length", || {
            key.set_min_pin_length(min, Some(pin.expose()))
        })
        .map_err(|e| self.err(e))?;
        if force_change {
            guarded("force_change_pin", || {
                key.force_change_pin(Some(pin.expose()))
            })
            .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn cancel(&self) {
        // CTAPHID_CANCEL on the library's channel; see the module docs for why this works. A
        // reset in flight has no library handle: it watches the context's cancel flag, which
        // the actor raises before calling this.
        let Some(key) = lock(&self.library).clone() else {
            return;
        };
        if let Err(e) = guarded("cancel", || key.cancel_selection()) {
            tracing::debug!(device = %self.id, error = %e, "CTAPHID_CANCEL not sent");
        }
    }

    /// See `hid/reset.rs`.
    fn reset(&self, ctx: &OpContext) -> Result<(), DeviceError> {
        self.factory_reset(ctx)
    }

    /// Replugs seen under the same path (see the module docs); a key that comes back under
    /// another path is another device id.
    fn power_ups(&self) -> u64 {
        self.power_ups.load(Ordering::SeqCst)
    }
}

/// The FIDO HID devices (usage page 0xF1D0) of this machine.
pub struct HidSource {
    open: Mutex<HashMap<String, Arc<HidAuthenticator>>>,
}

impl HidSource {
    pub fn new() -> Self {
        HidSource {
            open: Mutex::new(HashMap::new()),
        }
    }
}

impl Default for HidSource {
    fn default() -> Self {
        Self::new()
    }
}

impl DeviceSource for HidSource {
    /// Keys stay open between calls (one handle per path); vanished paths are dropped.
    fn enumerate(&self) -> Result<Vec<Arc<dyn Authenticator>>, DeviceError> {
        let found = catch_unwind(ctap_hid_fido2::get_fidokey_devices).map_err(|_| {
            DeviceError::Io("cannot enumerate HID devices (hidapi failed to initialise)".into())
        })?;
        let mut open = lock(&self.open);
        let mut paths = Vec::new();
        for dev in found {
            let HidParam::Path(path) = &dev.param else {
                continue;
            };
            paths.push(path.clone());
            if let Some(known) = open.get(path) {
                known.notice_replug();
            } else {
                match HidAuthenticator::open(path, dev.product_string.clone()) {
                    Ok(a) => {
                        open.insert(path.clone(), Arc::new(a));
                    }
                    Err(e) => {
                        tracing::warn!(path = %path, error = %e, "FIDO device not usable (see `keygate doctor`)")
                    }
                }
            }
        }
        // A handle left open on a node whose device went away keeps the node's minor number
        // taken (an actor or a ceremony may still hold the authenticator), so the key plugged
        // back in would get another path: close the library's handle now.
        open.retain(|p, a| {
            let plugged = paths.contains(p);
            if !plugged {
                a.unplugged.store(true, Ordering::SeqCst);
                a.retire_library();
            }
            plugged
        });
        let mut out: Vec<Arc<dyn Authenticator>> = open
            .values()
            .map(|a| a.clone() as Arc<dyn Authenticator>)
            .collect();
        out.sort_by_key(|a| a.id());
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
