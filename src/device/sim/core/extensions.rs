//! The CTAP 2.1 extensions of the simulated key: credProtect (§12.1) and hmac-secret (§12.5),
//! the two Microsoft Entra ID asks for when it provisions a passkey. A key built without one
//! (the `extensions` option) ignores its inputs like a CTAP 2.0 key does: no output, no ED flag.
//! What a credential was made with lives in its id (see `credential`), so the protection holds
//! for discoverable and non-discoverable credentials alike, and even after the key's extension
//! set is changed.

use ciborium::value::Value;
use serde::{Deserialize, Serialize};

use super::credential::{CredentialPolicy, OwnCredential};
use super::{hmac, SoftKey};
use crate::device::ctap2::{
    as_i64, bytes, get_int_key, get_text_key, int, pin_protocol_one as pp1,
};
use crate::device::CtapStatus;

/// An extension a simulated key can implement.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
pub enum SimExtension {
    /// `credProtect` (CTAP 2.1 §12.1): per-credential UV requirements.
    #[serde(rename = "credProtect")]
    CredProtect,
    /// `hmac-secret` (CTAP 2.1 §12.5): a per-credential symmetric secret.
    #[serde(rename = "hmac-secret")]
    HmacSecret,
}

impl SimExtension {
    /// Every simulated extension, in GetInfo order.
    pub const ALL: [SimExtension; 2] = [SimExtension::CredProtect, SimExtension::HmacSecret];

    /// The extension identifier, as in GetInfo and the extensions maps.
    pub fn name(self) -> &'static str {
        match self {
            SimExtension::CredProtect => "credProtect",
            SimExtension::HmacSecret => "hmac-secret",
        }
    }
}

/// What a new key implements, and what a key file from before the extensions loads with.
pub fn all_extensions() -> Vec<SimExtension> {
    SimExtension::ALL.to_vec()
}

/// A requested extension set as the key keeps it: each once, in GetInfo order.
pub fn normalised_extensions(requested: &[SimExtension]) -> Vec<SimExtension> {
    SimExtension::ALL
        .into_iter()
        .filter(|e| requested.contains(e))
        .collect()
}

/// The makeCredential extension inputs this key acts on.
#[derive(Debug, Default)]
pub(super) struct CreationExtensions {
    pub cred_protect: Option<u8>,
    pub hmac_secret: bool,
}

impl CreationExtensions {
    pub fn policy(&self) -> CredentialPolicy {
        CredentialPolicy {
            cred_protect: self.cred_protect.unwrap_or(1),
            hmac_secret: self.hmac_secret,
        }
    }

    /// The authenticator extension outputs for authData (flag ED), None when there are none.
    /// CTAP2 canonical order sorts keys by length, then bytewise: "credProtect" and
    /// "hmac-secret" are both 11 bytes, so credProtect comes first.
    pub fn outputs(&self) -> Option<Value> {
        let mut out = Vec::new();
        if let Some(level) = self.cred_protect {
            out.push((Value::Text("credProtect".into()), int(level.into())));
        }
        if self.hmac_secret {
            out.push((Value::Text("hmac-secret".into()), Value::Bool(true)));
        }
        (!out.is_empty()).then_some(Value::Map(out))
    }
}

/// A checked hmac-secret getAssertion input: the shared secret and the decrypted salts.
#[derive(Clone)]
pub(super) struct HmacSecretInput {
    shared: [u8; 32],
    /// salt1, or salt1 ‖ salt2 (32 or 64 bytes).
    salts: Vec<u8>,
}

impl SoftKey {
    /// makeCredential parameter 0x06: the inputs of the extensions this key implements;
    /// unknown identifiers are ignored (§12).
    pub(super) fn creation_extensions(
        &self,
        params: &Value,
    ) -> Result<CreationExtensions, CtapStatus> {
        let mut out = CreationExtensions::default();
        let Some(map) = get_int_key(params, 0x06) else {
            return Ok(out);
        };
        if map.as_map().is_none() {
            return Err(CtapStatus::CborUnexpectedType);
        }
        if self.state.supports(SimExtension::CredProtect) {
            if let Some(v) = get_text_key(map, "credProtect") {
                let level = as_i64(v).ok_or(CtapStatus::CborUnexpectedType)?;
                if !(1..=3).contains(&level) {
                    return Err(CtapStatus::InvalidParameter);
                }
                out.cred_protect = Some(level as u8);
            }
        }
        if self.state.supports(SimExtension::HmacSecret) {
            if let Some(v) = get_text_key(map, "hmac-secret") {
                out.hmac_secret = v.as_bool().ok_or(CtapStatus::CborUnexpectedType)?;
            }
        }
        Ok(out)
    }

    /// getAssertion parameter 0x04, `hmac-secret` (§12.5): `{1: keyAgreement, 2: saltEnc,
    /// 3: saltAuth, 4: pinUvAuthProtocol}` with PIN/UV auth protocol 1, checked and decrypted.
    pub(super) fn hmac_secret_input(
        &self,
        params: &Value,
    ) -> Result<Option<HmacSecretInput>, CtapStatus> {
        if !self.state.supports(SimExtension::HmacSecret) {
            return Ok(None);
        }
        let Some(map) = get_int_key(params, 0x04) else {
            return Ok(None);
        };
        if map.as_map().is_none() {
            return Err(CtapStatus::CborUnexpectedType);
        }
        let Some(input) = get_text_key(map, "hmac-secret") else {
            return Ok(None);
        };
        if input.as_map().is_none() {
            return Err(CtapStatus::CborUnexpectedType);
        }
        let field = |k: i64| get_int_key(input, k).ok_or(CtapStatus::MissingParameter);
        let key_agreement = field(0x01)?;
        let salt_enc = field(0x02)?
            .as_bytes()
            .ok_or(CtapStatus::CborUnexpectedType)?;
        let salt_auth = field(0x03)?
            .as_bytes()
            .ok_or(CtapStatus::CborUnexpectedType)?;
        if let Some(protocol) = get_int_key(input, 0x04) {
            if as_i64(protocol) != Some(1) {
                return Err(CtapStatus::InvalidParameter);
            }
        }
        let shared = self.agree(key_agreement)?;
        if !pp1::verify(&shared, salt_enc, salt_auth) {
            return Err(CtapStatus::ExtensionFirst);
        }
        if salt_enc.len() != 32 && salt_enc.len() != 64 {
            return Err(CtapStatus::InvalidLength);
        }
        let salts = pp1::decrypt(&shared, salt_enc).ok_or(CtapStatus::InvalidLength)?;
        Ok(Some(HmacSecretInput { shared, salts }))
    }

    /// The getAssertion extension outputs for one credential (authData, flag ED), None when
    /// there are none: `{"hmac-secret": encrypt(shared, HMAC(CredRandom, salt1)
    /// [‖ HMAC(CredRandom, salt2)])}`, CredRandom chosen by UV (§12.5). A credential made
    /// without hmac-secret gets no output.
    pub(super) fn assertion_extension_outputs(
        &self,
        cred: &OwnCredential,
        rp_id_hash: &[u8],
        uv: bool,
        input: Option<&HmacSecretInput>,
    ) -> Option<Value> {
        let input = input?;
        let cred_random = self.cred_random(cred, rp_id_hash, uv)?;
        let mut outputs = Vec::with_capacity(input.salts.len());
        for salt in input.salts.chunks(32) {
            outputs.extend(hmac(&cred_random, &[salt]));
        }
        Some(Value::Map(vec![(
            Value::Text("hmac-secret".into()),
            bytes(&pp1::encrypt(&input.shared, &outputs)),
        )]))
    }
}
