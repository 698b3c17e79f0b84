//! The fake's check of a passkey registration, as Entra makes it: clientDataJSON
//! (`webauthn.create`, the origin `https://{rp id}`, not cross-origin; the challenge is checked
//! by the caller against the ones it issued), then the attestation object: the rp id hash,
//! UP + UV + AT flags, an ES256 credential key, the credProtect (level 1) and hmac-secret
//! extension outputs, and the packed attestation signature (x5c leaf or self attestation).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use ciborium::Value as Cbor;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};
use x509_cert::der::Decode;

const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_AT: u8 = 0x40;
const FLAG_ED: u8 = 0x80;
/// id-fido-gen-ce-aaguid: the AAGUID in a packed attestation certificate.
const AAGUID_EXT_OID: &str = "1.3.6.1.4.1.45724.1.1.4";

/// The binary parts of a `POST fido2Methods` body.
pub(crate) struct CredentialParts {
    pub credential_id: Vec<u8>,
    pub client_data_json: Vec<u8>,
    pub attestation_object: Vec<u8>,
}

/// What a verified registration yields.
pub(crate) struct Verified {
    pub aaguid: uuid::Uuid,
    pub attested: bool,
    /// Hex SHA-1 thumbprints of the x5c certificates.
    pub certificates: Vec<String>,
}

fn b64(v: &Value, what: &str) -> Result<Vec<u8>, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("Invalid request: {what} is required."))?;
    B64URL
        .decode(s)
        .map_err(|_| format!("Invalid request: {what} must be Base64URL-encoded without padding."))
}

pub(crate) fn credential_parts(body: &Value) -> Result<CredentialParts, String> {
    let pkc = &body["publicKeyCredential"];
    if !pkc.is_object() {
        return Err("Invalid request: publicKeyCredential is required.".into());
    }
    let results = &pkc["clientExtensionResults"];
    if !(results.is_null() || results.is_object()) {
        return Err("Invalid request: clientExtensionResults must be an object.".into());
    }
    Ok(CredentialParts {
        credential_id: b64(&pkc["id"], "publicKeyCredential.id")?,
        client_data_json: b64(
            &pkc["response"]["clientDataJSON"],
            "response.clientDataJSON",
        )?,
        attestation_object: b64(
            &pkc["response"]["attestationObject"],
            "response.attestationObject",
        )?,
    })
}

/// The challenge clientDataJSON carries, after its other checks.
pub(crate) fn client_data_challenge(raw: &[u8], rp_id: &str) -> Result<String, String> {
    let cd: Value = serde_json::from_slice(raw)
        .map_err(|_| "The clientDataJSON could not be parsed.".to_string())?;
    if cd["type"].as_str() != Some("webauthn.create") {
        return Err("The clientDataJSON type must be webauthn.create.".into());
    }
    if cd["origin"].as_str() != Some(format!("https://{rp_id}").as_str()) {
        return Err(format!(
            "The clientDataJSON origin {} does not match the relying party.",
            cd["origin"]
        ));
    }
    if cd["crossOrigin"].as_bool() == Some(true) {
        return Err("Cross-origin registrations are not supported.".into());
    }
    cd["challenge"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "The clientDataJSON has no challenge.".into())
}

fn map_get<'a>(map: &'a [(Cbor, Cbor)], key: &Cbor) -> Option<&'a Cbor> {
    map.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn text(k: &str) -> Cbor {
    Cbor::Text(k.into())
}

fn int(i: i64) -> Cbor {
    Cbor::Integer(i.into())
}

fn es256_key(cose: &Cbor) -> Result<VerifyingKey, String> {
    let bad = || "The credential public key is not a supported ES256 key.".to_string();
    let map = cose.as_map().ok_or_else(bad)?;
    if map_get(map, &int(1)) != Some(&int(2))
        || map_get(map, &int(3)) != Some(&int(-7))
        || map_get(map, &int(-1)) != Some(&int(1))
    {
        return Err(bad());
    }
    let x = map_get(map, &int(-2))
        .and_then(Cbor::as_bytes)
        .ok_or_else(bad)?;
    let y = map_get(map, &int(-3))
        .and_then(Cbor::as_bytes)
        .ok_or_else(bad)?;
    if x.len() != 32 || y.len() != 32 {
        return Err(bad());
    }
    let mut sec1 = vec![0x04];
    sec1.extend_from_slice(x);
    sec1.extend_from_slice(y);
    VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| bad())
}

fn check_signature(key: &VerifyingKey, signed: &[u8], sig: &[u8]) -> Result<(), String> {
    let sig = Signature::from_der(sig).map_err(|_| "The attestation signature is malformed.")?;
    key.verify(signed, &sig)
        .map_err(|_| "The attestation signature is invalid.".to_string())
}

/// The AAGUID extension of a packed attestation certificate, if it has one.
fn cert_aaguid(cert: &x509_cert::Certificate) -> Option<Vec<u8>> {
    let exts = cert.tbs_certificate().extensions()?;
    let ext = exts
        .iter()
        .find(|e| e.extn_id.to_string() == AAGUID_EXT_OID)?;
    // extnValue holds the DER of an OCTET STRING of 16 bytes.
    let inner = ext.extn_value.as_bytes();
    (inner.len() == 18 && inner[0] == 0x04 && inner[1] == 16).then(|| inner[2..].to_vec())
}

pub(crate) fn attestation(parts: &CredentialParts, rp_id: &str) -> Result<Verified, String> {
    let obj: Cbor = ciborium::from_reader(parts.attestation_object.as_slice())
        .map_err(|_| "The attestationObject could not be decoded.".to_string())?;
    let obj = obj
        .as_map()
        .ok_or("The attestationObject could not be decoded.")?;
    let fmt = map_get(obj, &text("fmt"))
        .and_then(Cbor::as_text)
        .unwrap_or("");
    let auth_data = map_get(obj, &text("authData"))
        .and_then(Cbor::as_bytes)
        .ok_or("The attestationObject has no authData.")?;
    let att_stmt = map_get(obj, &text("attStmt"))
        .and_then(Cbor::as_map)
        .ok_or("The attestationObject has no attStmt.")?;
    if auth_data.len() < 37 + 18 {
        return Err("The authenticator data is too short.".into());
    }
    if auth_data[..32] != Sha256::digest(rp_id.as_bytes())[..] {
        return Err("The relying party ID hash in the authenticator data is invalid.".into());
    }
    let flags = auth_data[32];
    if flags & FLAG_UP == 0 {
        return Err("User presence is required.".into());
    }
    if flags & FLAG_UV == 0 {
        return Err("User verification is required.".into());
    }
    if flags & FLAG_AT == 0 {
        return Err("The authenticator data has no attested credential data.".into());
    }
    let aaguid = uuid::Uuid::from_slice(&auth_data[37..53]).map_err(|e| e.to_string())?;
    let id_len = u16::from_be_bytes([auth_data[53], auth_data[54]]) as usize;
    let id_end = 55 + id_len;
    if auth_data.len() < id_end {
        return Err("The authenticator data is too short.".into());
    }
    if auth_data[55..id_end] != parts.credential_id[..] {
        return Err("The credential ID does not match the authenticator data.".into());
    }
    let mut rest = &auth_data[id_end..];
    let cose: Cbor = ciborium::from_reader(&mut rest)
        .map_err(|_| "The credential public key could not be decoded.".to_string())?;
    let cred_key = es256_key(&cose)?;
    let extensions: Cbor = if flags & FLAG_ED != 0 {
        ciborium::from_reader(&mut rest)
            .map_err(|_| "The authenticator extension outputs could not be decoded.".to_string())?
    } else {
        Cbor::Map(Vec::new())
    };
    if !rest.is_empty() {
        return Err("The authenticator data has trailing bytes.".into());
    }
    let ext = extensions.as_map().ok_or("Malformed extension outputs.")?;
    if map_get(ext, &text("credProtect")) != Some(&int(1)) {
        return Err(
            "The credential must be created with credProtect level 1 (userVerificationOptional)."
                .into(),
        );
    }
    if map_get(ext, &text("hmac-secret")) != Some(&Cbor::Bool(true)) {
        return Err("The credential must be created with the hmac-secret extension.".into());
    }
    let mut signed = auth_data.to_vec();
    signed.extend_from_slice(&Sha256::digest(&parts.client_data_json));
    match fmt {
        "none" => Ok(Verified {
            aaguid,
            attested: false,
            certificates: Vec::new(),
        }),
        "packed" => {
            if map_get(att_stmt, &text("alg")) != Some(&int(-7)) {
                return Err("The attestation statement algorithm is not supported.".into());
            }
            let sig = map_get(att_stmt, &text("sig"))
                .and_then(Cbor::as_bytes)
                .ok_or("The attestation statement has no signature.")?;
            match map_get(att_stmt, &text("x5c")).and_then(Cbor::as_array) {
                Some(chain) => {
                    let ders: Vec<&Vec<u8>> = chain.iter().filter_map(Cbor::as_bytes).collect();
                    let leaf_der = ders.first().ok_or("The x5c chain is empty.")?;
                    let leaf = x509_cert::Certificate::from_der(leaf_der)
                        .map_err(|_| "The attestation certificate could not be parsed.")?;
                    if cert_aaguid(&leaf).is_some_and(|a| a != aaguid.as_bytes()) {
                        return Err("The attestation certificate's AAGUID does not match the authenticator data.".into());
                    }
                    let spki = leaf.tbs_certificate().subject_public_key_info();
                    let leaf_key =
                        VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
                            .map_err(|_| "The attestation certificate key is not supported.")?;
                    check_signature(&leaf_key, &signed, sig)?;
                    Ok(Verified {
                        aaguid,
                        attested: true,
                        certificates: ders
                            .iter()
                            .map(|d| hex::encode_upper(sha1::Sha1::digest(d)))
                            .collect(),
                    })
                }
                None => {
                    check_signature(&cred_key, &signed, sig)?;
                    Ok(Verified {
                        aaguid,
                        attested: false,
                        certificates: Vec::new(),
                    })
                }
            }
        }
        other => Err(format!(
            "The attestation format '{other}' is not supported."
        )),
    }
}
