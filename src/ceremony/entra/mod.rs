//! Ceremonies with Microsoft Entra ID as the relying party (`target: "entra"`). keygate is the
//! WebAuthn client here, not the RP: Graph's `fido2Methods/creationOptions` supplies the
//! challenge, rp and user, keygate runs MakeCredential on the key and posts the attestation
//! back (`enroll.rs`, `register.rs`); a user-less assertion tells whose Entra passkey a key
//! holds, verified locally against the public key recorded at enrollment (`assert.rs`,
//! `verify.rs`). Same API, events and registry as local ceremonies.
//!
//! Entra's rules that shape this (and that keygate's own relying party does not share): the
//! credential is discoverable, user-verified (PIN), ES256, with credProtect level 1
//! (userVerificationOptional: above 1 breaks Windows sign-in) and hmac-secret; clientDataJSON's
//! origin is `https://` + Graph's rp id; the challenge is valid until Graph's
//! `challengeTimeoutDateTime` (5 minutes in v1.0).

mod assert;
mod enroll;
mod register;
#[cfg(test)]
mod tests;
mod verify;

use sha2::{Digest, Sha256};

use crate::device::{
    CredProtect, CredentialExtensions, DeviceError, DeviceInfo, MakeCredentialArgs, Pin,
};
use crate::entra::{CreationOptions, EntraError};

use super::client;
use super::CeremonyError;

/// COSE ES256: the one algorithm keygate's keys are asked to sign with.
const ES256: i64 = -7;

/// The credProtect level when creationOptions asks for none: 1 (userVerificationOptional),
/// what Entra asks for (a higher level breaks Windows sign-in).
const DEFAULT_CRED_PROTECT: u8 = 1;

/// The key's answer to authenticatorGetInfo against what an Entra passkey needs. Permanent
/// lacks come first (`key_unsupported`, naming the feature), then what the student can fix
/// (`pin_not_set`), then the state of the key (`key_store_full`, `pin_blocked`).
pub(super) fn precheck(info: &DeviceInfo) -> Result<(), CeremonyError> {
    let mut lacks = Vec::new();
    if info.pin_set.is_none() {
        lacks.push("a PIN (clientPin)");
    }
    if !info.discoverable_supported {
        lacks.push("discoverable credentials (resident keys)");
    }
    if !info.extensions.iter().any(|e| e == "credProtect") {
        lacks.push("the credProtect extension");
    }
    if !info.extensions.iter().any(|e| e == "hmac-secret") {
        lacks.push("the hmac-secret extension");
    }
    if !lacks.is_empty() {
        return Err(CeremonyError::KeyUnsupported(format!(
            "this key cannot be enrolled into Microsoft Entra ID: it lacks {}",
            lacks.join(", ")
        )));
    }
    if info.pin_set == Some(false) {
        return Err(CeremonyError::PinNotSet);
    }
    if info.remaining_discoverable_credentials == Some(0) {
        return Err(DeviceError::KeyStoreFull.into());
    }
    if info.pin_retries == Some(0) {
        return Err(DeviceError::PinBlocked.into());
    }
    Ok(())
}

/// `https://` + the rp id: the origin Entra expects in clientDataJSON.
pub(super) fn origin_of(rp_id: &str) -> String {
    format!("https://{rp_id}")
}

/// clientDataJSON and the CTAP MakeCredential arguments for Graph's creationOptions: rk, UV
/// with `pin`, ES256, Graph's exclude list and user, and the extensions Graph asks for.
/// Nothing comes from keygate's own relying party.
pub(super) fn make_credential_args(
    opts: &CreationOptions,
    pin: Pin,
) -> Result<(Vec<u8>, MakeCredentialArgs), CeremonyError> {
    if !opts.algorithms.contains(&ES256) {
        return Err(CeremonyError::KeyUnsupported(format!(
            "Microsoft Entra ID asks for the signature algorithms {:?} (COSE); this key signs with \
             ES256 (-7) only",
            opts.algorithms
        )));
    }
    let level = opts.cred_protect.unwrap_or(DEFAULT_CRED_PROTECT);
    let cred_protect = CredProtect::from_level(level).ok_or_else(|| {
        EntraError::Rejected(format!(
            "Microsoft Entra ID asks for credProtect level {level}, which CTAP does not define"
        ))
    })?;
    let cdj =
        client::client_data_json_for("webauthn.create", &opts.challenge, &origin_of(&opts.rp_id));
    let args = MakeCredentialArgs {
        client_data_hash: Sha256::digest(&cdj).into(),
        client_data_json: cdj.clone(),
        rp_id: opts.rp_id.clone(),
        rp_name: opts.rp_name.clone(),
        user_id: opts.user_id.clone(),
        user_name: opts.user_name.clone(),
        user_display_name: opts.user_display_name.clone(),
        algorithms: vec![ES256],
        exclude_list: opts.exclude_credentials.clone(),
        resident_key: true,
        user_verification: true,
        pin: Some(pin),
        extensions: CredentialExtensions {
            cred_protect: Some(cred_protect),
            hmac_secret: opts.hmac_secret,
        },
    };
    Ok((cdj, args))
}
