//! The BLOB's signature: a compact JWS (RFC 7515) with the signing certificate and its
//! intermediates in the `x5c` header, ES256 or RS256 (what MDS3 §3.1.7 allows and the FIDO
//! Alliance uses). The chain must lead to one of the configured roots with every certificate
//! valid at the given time, and the leaf's key must verify the signature over
//! `header.payload`. Only then is the payload read.

use std::time::SystemTime;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use crypto_glue::x509::{x509_verify_signature, Certificate};
use serde::Deserialize;

use super::super::roots::{certificate, chain_root};
use super::super::statement::alg_fits_key;
use super::super::AttestationError;
use super::MdsData;

/// base64url, with or without padding (JWS omits it; a tool that adds it is tolerated).
pub(super) fn b64url(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    const URL: GeneralPurpose = GeneralPurpose::new(
        &alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    URL.decode(s)
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    x5c: Vec<String>,
}

fn malformed(why: impl Into<String>) -> AttestationError {
    AttestationError::BlobMalformed(why.into())
}

/// Verify `text` (the BLOB as downloaded) against `roots` at `now` and read its payload.
/// `nextUpdate` is not judged here: see [`MdsData::is_current`].
pub fn verify_blob(
    text: &str,
    roots: &[Certificate],
    now: SystemTime,
) -> Result<MdsData, AttestationError> {
    let parts: Vec<&str> = text.trim().split('.').collect();
    let [header_b64, payload_b64, signature_b64] = parts[..] else {
        return Err(malformed("not a compact JWS (three dot-separated parts)"));
    };
    let header: Header = b64url(header_b64)
        .map_err(|e| malformed(format!("header base64url: {e}")))
        .and_then(|h| {
            serde_json::from_slice(&h).map_err(|e| malformed(format!("header JSON: {e}")))
        })?;
    let chain = header
        .x5c
        .iter()
        .map(|c| {
            STANDARD
                .decode(c)
                .map_err(|e| e.to_string())
                .and_then(|der| certificate(&der))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| malformed(format!("x5c: {e}")))?;
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(malformed("no x5c certificate chain in the header"));
    };
    chain_root(leaf, intermediates, &roots.iter().collect::<Vec<_>>(), now)
        .map_err(AttestationError::BlobUntrusted)?;

    let signature =
        b64url(signature_b64).map_err(|e| malformed(format!("signature base64url: {e}")))?;
    let signature = match header.alg.as_str() {
        "ES256" if alg_fits_key(-7, leaf) => {
            // JWS carries R ‖ S (RFC 7518 §3.4); the certificate verifier takes DER.
            p256::ecdsa::Signature::from_slice(&signature)
                .map_err(|_| AttestationError::BlobSignature)?
                .to_der()
                .as_bytes()
                .to_vec()
        }
        "RS256" if alg_fits_key(-257, leaf) => signature,
        "ES256" | "RS256" => {
            return Err(malformed(format!(
                "alg {} does not match the signing certificate's key",
                header.alg
            )))
        }
        other => return Err(malformed(format!("unsupported alg `{other}`"))),
    };
    let signed = format!("{header_b64}.{payload_b64}");
    x509_verify_signature(signed.as_bytes(), &signature, leaf)
        .map_err(|_| AttestationError::BlobSignature)?;

    let payload = b64url(payload_b64).map_err(|e| malformed(format!("payload base64url: {e}")))?;
    MdsData::parse(&payload)
}
