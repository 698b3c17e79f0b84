//! The WebAuthn *client* half of a ceremony: what a browser would do between a relying party's
//! options and an authenticator. It builds the exact clientDataJSON, turns standard WebAuthn
//! options into CTAP arguments and the authenticator's output into the standard response JSON
//! (WebAuthn L3 `RegistrationResponseJSON` / `AuthenticationResponseJSON`).
//!
//! It depends only on the standard option types, not on keygate's own relying party, so the
//! same code can later act as a client for a remote RP (e.g. Entra ID's fido2Methods
//! creationOptions, rp `login.microsoft.com`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};
use webauthn_rs_core::proto::{
    AuthenticatorAssertionResponseRaw, AuthenticatorAttestationResponseRaw, AuthenticatorTransport,
    PublicKeyCredential, PublicKeyCredentialCreationOptions, PublicKeyCredentialRequestOptions,
    RegisterPublicKeyCredential, ResidentKeyRequirement, UserVerificationPolicy,
};

use crate::device::{
    AssertionOutput, GetAssertionArgs, MakeCredentialArgs, MakeCredentialOutput, Pin,
};

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// CollectedClientData (WebAuthn L3 §5.8.1), serialised in the spec's member order.
#[derive(Serialize)]
struct CollectedClientData<'a> {
    #[serde(rename = "type")]
    type_: &'a str,
    challenge: String,
    origin: &'a str,
    #[serde(rename = "crossOrigin")]
    cross_origin: bool,
}

pub fn client_data_json(ceremony_type: &str, challenge: &[u8], origin: &str) -> Vec<u8> {
    serde_json::to_vec(&CollectedClientData {
        type_: ceremony_type,
        challenge: b64(challenge),
        origin,
        cross_origin: false,
    })
    .expect("client data serialises")
}

/// clientDataJSON for a remote relying party's challenge given as the base64url text it sent
/// (Entra's creationOptions): the text goes in exactly as received, never decoded and
/// re-encoded, so padding or any other spelling the RP chose survives byte for byte.
pub fn client_data_json_for(ceremony_type: &str, challenge: &str, origin: &str) -> Vec<u8> {
    serde_json::to_vec(&CollectedClientData {
        type_: ceremony_type,
        challenge: challenge.to_string(),
        origin,
        cross_origin: false,
    })
    .expect("client data serialises")
}

fn wants_uv(policy: UserVerificationPolicy, key_can_verify: bool) -> bool {
    match policy {
        UserVerificationPolicy::Required => true,
        UserVerificationPolicy::Preferred => key_can_verify,
        _ => false,
    }
}

/// CTAP arguments for `navigator.credentials.create(options)` from `origin`.
/// `key_can_verify`: the key has a PIN set or built-in UV (decides "preferred").
pub fn make_credential_args(
    options: &PublicKeyCredentialCreationOptions,
    origin: &str,
    key_can_verify: bool,
    pin: Option<Pin>,
) -> (Vec<u8>, MakeCredentialArgs) {
    let cdj = client_data_json("webauthn.create", options.challenge.as_ref(), origin);
    let selection = options.authenticator_selection.as_ref();
    let resident_key = selection
        .map(|s| {
            s.require_resident_key
                || matches!(s.resident_key, Some(ResidentKeyRequirement::Required))
        })
        .unwrap_or(false);
    let policy = selection
        .map(|s| s.user_verification)
        .unwrap_or(UserVerificationPolicy::Preferred);
    let args = MakeCredentialArgs {
        client_data_hash: Sha256::digest(&cdj).into(),
        client_data_json: cdj.clone(),
        rp_id: options.rp.id.clone(),
        rp_name: options.rp.name.clone(),
        user_id: AsRef::<[u8]>::as_ref(&options.user.id).to_vec(),
        user_name: options.user.name.clone(),
        user_display_name: options.user.display_name.clone(),
        algorithms: options.pub_key_cred_params.iter().map(|p| p.alg).collect(),
        exclude_list: options
            .exclude_credentials
            .iter()
            .flatten()
            .map(|d| AsRef::<[u8]>::as_ref(&d.id).to_vec())
            .collect(),
        resident_key,
        user_verification: wants_uv(policy, key_can_verify),
        pin,
        extensions: Default::default(),
    };
    (cdj, args)
}

/// CTAP arguments for `navigator.credentials.get(options)` from `origin`.
pub fn get_assertion_args(
    options: &PublicKeyCredentialRequestOptions,
    origin: &str,
    key_can_verify: bool,
    pin: Option<Pin>,
) -> (Vec<u8>, GetAssertionArgs) {
    let cdj = client_data_json("webauthn.get", options.challenge.as_ref(), origin);
    let args = GetAssertionArgs {
        client_data_hash: Sha256::digest(&cdj).into(),
        client_data_json: cdj.clone(),
        rp_id: options.rp_id.clone(),
        allow_list: options
            .allow_credentials
            .iter()
            .map(|d| AsRef::<[u8]>::as_ref(&d.id).to_vec())
            .collect(),
        user_verification: wants_uv(options.user_verification, key_can_verify),
        pin,
        user_presence: true,
    };
    (cdj, args)
}

/// The RP library's view of a registration response.
pub fn registration_credential(
    cdj: &[u8],
    out: &MakeCredentialOutput,
) -> RegisterPublicKeyCredential {
    RegisterPublicKeyCredential {
        id: b64(&out.credential_id),
        raw_id: out.credential_id.clone(),
        response: AuthenticatorAttestationResponseRaw {
            attestation_object: out.attestation_object.clone(),
            client_data_json: cdj.to_vec(),
            transports: Some(vec![AuthenticatorTransport::Usb]),
        },
        type_: "public-key".into(),
        extensions: Default::default(),
    }
}

/// The RP library's view of an assertion.
pub fn assertion_credential(cdj: &[u8], out: &AssertionOutput) -> PublicKeyCredential {
    PublicKeyCredential {
        id: b64(&out.credential_id),
        raw_id: out.credential_id.clone(),
        response: AuthenticatorAssertionResponseRaw {
            authenticator_data: out.authenticator_data.clone(),
            client_data_json: cdj.to_vec(),
            signature: out.signature.clone(),
            user_handle: out.user_handle.clone(),
        },
        extensions: Default::default(),
        type_: "public-key".into(),
    }
}

/// WebAuthn L3 `RegistrationResponseJSON`.
pub fn registration_response_json(cdj: &[u8], out: &MakeCredentialOutput) -> serde_json::Value {
    serde_json::json!({
        "id": b64(&out.credential_id),
        "rawId": b64(&out.credential_id),
        "type": "public-key",
        "authenticatorAttachment": "cross-platform",
        "clientExtensionResults": {},
        "response": {
            "clientDataJSON": b64(cdj),
            "attestationObject": b64(&out.attestation_object),
            "transports": ["usb"],
        }
    })
}

/// WebAuthn L3 `AuthenticationResponseJSON`.
pub fn authentication_response_json(cdj: &[u8], out: &AssertionOutput) -> serde_json::Value {
    serde_json::json!({
        "id": b64(&out.credential_id),
        "rawId": b64(&out.credential_id),
        "type": "public-key",
        "authenticatorAttachment": "cross-platform",
        "clientExtensionResults": {},
        "response": {
            "clientDataJSON": b64(cdj),
            "authenticatorData": b64(&out.authenticator_data),
            "signature": b64(&out.signature),
            "userHandle": out.user_handle.as_deref().map(b64),
        }
    })
}

/// The parts of authenticator data (WebAuthn L3 §6.1) keygate records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthDataSummary {
    pub flags: u8,
    pub sign_count: u32,
    pub aaguid: Option<uuid::Uuid>,
    pub credential_id: Option<Vec<u8>>,
    /// The credential public key exactly as the key encoded it (COSE_Key CBOR).
    pub cose_key: Option<Vec<u8>>,
    /// Extension outputs (flag ED): `credProtect` level.
    pub cred_protect: Option<u8>,
    /// Extension outputs (flag ED): `hmac-secret` (true: the credential has its CredRandom).
    pub hmac_secret: Option<bool>,
}

impl AuthDataSummary {
    pub fn user_present(&self) -> bool {
        self.flags & 0x01 != 0
    }
    pub fn user_verified(&self) -> bool {
        self.flags & 0x04 != 0
    }
}

/// Parse authenticator data; None when malformed. Never panics.
pub fn parse_auth_data(ad: &[u8]) -> Option<AuthDataSummary> {
    if ad.len() < 37 {
        return None;
    }
    let flags = ad[32];
    let sign_count = u32::from_be_bytes(ad[33..37].try_into().ok()?);
    let mut s = AuthDataSummary {
        flags,
        sign_count,
        aaguid: None,
        credential_id: None,
        cose_key: None,
        cred_protect: None,
        hmac_secret: None,
    };
    let mut extensions_at = 37;
    if flags & 0x40 != 0 {
        let rest = &ad[37..];
        if rest.len() < 18 {
            return None;
        }
        s.aaguid = Some(uuid::Uuid::from_slice(&rest[..16]).ok()?);
        let len = u16::from_be_bytes([rest[16], rest[17]]) as usize;
        let rest = &rest[18..];
        if rest.len() < len {
            return None;
        }
        s.credential_id = Some(rest[..len].to_vec());
        let key_bytes = &rest[len..];
        let mut cursor = std::io::Cursor::new(key_bytes);
        let _: ciborium::Value = ciborium::de::from_reader(&mut cursor).ok()?;
        let used = cursor.position() as usize;
        s.cose_key = Some(key_bytes[..used].to_vec());
        extensions_at = ad.len() - (key_bytes.len() - used);
    }
    if flags & 0x80 != 0 {
        let ext: ciborium::Value = ciborium::de::from_reader(&ad[extensions_at..]).ok()?;
        for (k, v) in ext.as_map()? {
            match k.as_text() {
                Some("credProtect") => {
                    s.cred_protect = v
                        .as_integer()
                        .and_then(|i| u8::try_from(i128::from(i)).ok());
                }
                Some("hmac-secret") => s.hmac_secret = v.as_bool(),
                _ => {}
            }
        }
    }
    Some(s)
}

/// The `authData` member of a CBOR attestationObject.
pub fn attestation_auth_data(attestation_object: &[u8]) -> Option<Vec<u8>> {
    let v: ciborium::Value = ciborium::de::from_reader(attestation_object).ok()?;
    v.as_map()?.iter().find_map(|(k, v)| {
        (k.as_text() == Some("authData"))
            .then(|| v.as_bytes().cloned())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn client_data_is_in_spec_order() {
        let j = client_data_json("webauthn.create", &[1, 2, 3], "https://a.example");
        assert_eq!(
            std::str::from_utf8(&j).unwrap(),
            r#"{"type":"webauthn.create","challenge":"AQID","origin":"https://a.example","crossOrigin":false}"#
        );
    }

    proptest! {
        #[test]
        fn auth_data_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_auth_data(&bytes);
            let _ = attestation_auth_data(&bytes);
        }
    }
}
