//! The attestation statement of a new credential (WebAuthn L3 §8), read and checked on its own:
//! the same code for local enrollments (after webauthn-rs verified the registration) and for
//! Microsoft Entra ID enrollments (where keygate is only the client and nothing else checks the
//! statement before Graph does).
//!
//! Formats security keys use: `packed` with `x5c` (basic attestation: signature by the
//! attestation certificate over authData ‖ clientDataHash, §8.2.1 certificate requirements,
//! the certificate's AAGUID extension equal to the credential's) and `fido-u2f` (§8.6). What is
//! not a verified certificate chain (self attestation, `none`, other formats, anything
//! malformed) carries no proof of the key's model; the policy counts it untrusted.

use crypto_glue::der::referenced::OwnedToRef;
use crypto_glue::x509::oiddb::rfc5912;
use crypto_glue::x509::{x509_verify_signature, Certificate, ObjectIdentifier};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use sha1::{Digest as _, Sha1};

use crate::ceremony::client::parse_auth_data;
use crate::device::ctap2::{decode, get_text_key, parse_cose_ec2};

use super::roots::certificate;

/// id-fido-gen-ce-aaguid: the AAGUID an attestation certificate was issued for.
const FIDO_GEN_CE_AAGUID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.45724.1.1.4");

/// What kind of proof a statement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofKind {
    /// A certificate chain (x5c) whose leaf signed the statement: trusted once the chain
    /// reaches a trusted root.
    Certificate,
    /// Packed self attestation: signed by the credential key itself.
    SelfAttestation,
    /// `fmt: "none"`.
    NoAttestation,
    /// A format keygate does not verify (tpm, android-key, apple, ...).
    Unsupported,
    /// Malformed, or a signature or certificate that does not verify.
    Invalid,
}

impl ProofKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProofKind::Certificate => "certificate",
            ProofKind::SelfAttestation => "self",
            ProofKind::NoAttestation => "none",
            ProofKind::Unsupported => "unsupported",
            ProofKind::Invalid => "invalid",
        }
    }
}

/// A read attestation statement.
#[derive(Debug, Clone)]
pub struct Statement {
    /// `fmt` as the key wrote it.
    pub format: String,
    pub kind: ProofKind,
    /// The AAGUID of the attested credential data: a claim, proven only by a trusted chain.
    pub aaguid: Option<uuid::Uuid>,
    /// With [`ProofKind::Certificate`]: x5c, leaf first.
    pub chain: Vec<Certificate>,
    /// `fido-u2f`: the attestation key's identifier as the FIDO Metadata Service lists U2F
    /// models (hex SHA-1 of the certificate's subjectPublicKey).
    pub u2f_key_id: Option<String>,
    /// Why the statement is `Invalid` or `Unsupported` (for the log and the audit).
    pub problem: Option<String>,
}

impl Statement {
    fn new(format: &str, aaguid: Option<uuid::Uuid>) -> Statement {
        Statement {
            format: format.to_string(),
            kind: ProofKind::Invalid,
            aaguid,
            chain: Vec::new(),
            u2f_key_id: None,
            problem: None,
        }
    }

    fn flawed(mut self, kind: ProofKind, problem: impl Into<String>) -> Statement {
        self.kind = kind;
        self.chain.clear();
        self.problem = Some(problem.into());
        self
    }
}

/// Read and check the statement of `attestation_object` (CBOR) made over `client_data_hash`.
/// Never fails: what cannot be verified is a statement of kind `Invalid`.
pub fn read_statement(attestation_object: &[u8], client_data_hash: &[u8; 32]) -> Statement {
    let Ok(obj) = decode(attestation_object) else {
        return Statement::new("", None)
            .flawed(ProofKind::Invalid, "attestation object is not CBOR");
    };
    let format = get_text_key(&obj, "fmt")
        .and_then(|v| v.as_text())
        .unwrap_or("")
        .to_string();
    let auth_data = get_text_key(&obj, "authData").and_then(|v| v.as_bytes());
    let summary = auth_data.and_then(|ad| parse_auth_data(ad));
    let st = Statement::new(&format, summary.as_ref().and_then(|s| s.aaguid));
    let (Some(auth_data), Some(summary), Some(att_stmt)) =
        (auth_data, summary, get_text_key(&obj, "attStmt"))
    else {
        return st.flawed(ProofKind::Invalid, "attestation object incomplete");
    };
    match format.as_str() {
        "packed" => packed(st, att_stmt, auth_data, client_data_hash),
        "fido-u2f" => fido_u2f(st, att_stmt, auth_data, &summary, client_data_hash),
        "none" => Statement {
            kind: ProofKind::NoAttestation,
            ..st
        },
        other => {
            let why = format!("attestation format `{other}` is not verified by keygate");
            st.flawed(ProofKind::Unsupported, why)
        }
    }
}

/// The x5c array of a statement as certificates.
fn x5c(att_stmt: &ciborium::Value) -> Option<Result<Vec<Certificate>, String>> {
    let list = get_text_key(att_stmt, "x5c")?;
    Some(
        list.as_array()
            .ok_or_else(|| "x5c is not an array".to_string())
            .and_then(|items| {
                items
                    .iter()
                    .map(|c| c.as_bytes().ok_or("x5c entry is not bytes".to_string()))
                    .map(|der| der.and_then(|d| certificate(d)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .and_then(|certs| {
                if certs.is_empty() {
                    Err("x5c is empty".to_string())
                } else {
                    Ok(certs)
                }
            }),
    )
}

/// The public key algorithm of a certificate: (key type, curve).
fn key_oids(cert: &Certificate) -> Option<(ObjectIdentifier, Option<ObjectIdentifier>)> {
    cert.tbs_certificate()
        .subject_public_key_info()
        .owned_to_ref()
        .algorithm
        .oids()
        .ok()
}

/// Whether a COSE algorithm is the one of `cert`'s key: ES256 (P-256), ES384 (P-384), RS256.
pub(super) fn alg_fits_key(alg: i128, cert: &Certificate) -> bool {
    matches!(
        (alg, key_oids(cert)),
        (
            -7,
            Some((rfc5912::ID_EC_PUBLIC_KEY, Some(rfc5912::SECP_256_R_1)))
        ) | (
            -35,
            Some((rfc5912::ID_EC_PUBLIC_KEY, Some(rfc5912::SECP_384_R_1)))
        ) | (-257, Some((rfc5912::RSA_ENCRYPTION, _)))
    )
}

/// The AAGUID a certificate names in id-fido-gen-ce-aaguid (an OCTET STRING of 16 bytes inside
/// the extension's value), or None without the extension; Err when unreadable.
fn certificate_aaguid(cert: &Certificate) -> Result<Option<uuid::Uuid>, String> {
    let Some(ext) = cert
        .tbs_certificate()
        .extensions()
        .and_then(|e| e.iter().find(|e| e.extn_id == FIDO_GEN_CE_AAGUID))
    else {
        return Ok(None);
    };
    match ext.extn_value.as_bytes() {
        [0x04, 0x10, rest @ ..] if rest.len() == 16 => Ok(uuid::Uuid::from_slice(rest).ok()),
        _ => Err("the certificate's AAGUID extension is malformed".into()),
    }
}

/// §8.2: packed.
fn packed(
    mut st: Statement,
    att_stmt: &ciborium::Value,
    auth_data: &[u8],
    client_data_hash: &[u8; 32],
) -> Statement {
    let alg = get_text_key(att_stmt, "alg")
        .and_then(|v| v.as_integer())
        .map(i128::from);
    let sig = get_text_key(att_stmt, "sig").and_then(|v| v.as_bytes());
    let (Some(alg), Some(sig)) = (alg, sig) else {
        return st.flawed(ProofKind::Invalid, "packed statement without alg or sig");
    };
    let chain = match x5c(att_stmt) {
        None if get_text_key(att_stmt, "ecdaaKeyId").is_some() => {
            return st.flawed(ProofKind::Unsupported, "ECDAA attestation is not verified")
        }
        // Self attestation proves nothing about the model, whether its signature holds or not
        // (webauthn-rs checked it for local enrollments).
        None => {
            st.kind = ProofKind::SelfAttestation;
            return st;
        }
        Some(Err(why)) => return st.flawed(ProofKind::Invalid, why),
        Some(Ok(chain)) => chain,
    };
    let leaf = &chain[0];
    if !alg_fits_key(alg, leaf) {
        let why = format!("alg {alg} does not match the attestation certificate's key");
        return st.flawed(ProofKind::Invalid, why);
    }
    let mut signed = auth_data.to_vec();
    signed.extend_from_slice(client_data_hash);
    if x509_verify_signature(&signed, sig, leaf).is_err() {
        return st.flawed(ProofKind::Invalid, "attestation signature does not verify");
    }
    if webauthn_rs_core::attestation::assert_packed_attest_req(leaf).is_err() {
        return st.flawed(
            ProofKind::Invalid,
            "attestation certificate does not meet WebAuthn §8.2.1",
        );
    }
    match certificate_aaguid(leaf) {
        Err(why) => return st.flawed(ProofKind::Invalid, why),
        Ok(Some(a)) if Some(a) != st.aaguid => {
            return st.flawed(
                ProofKind::Invalid,
                format!("the attestation certificate is for AAGUID {a}, not the key's"),
            )
        }
        Ok(_) => {}
    }
    st.kind = ProofKind::Certificate;
    st.chain = chain;
    st
}

/// §8.6: fido-u2f (a U2F key behind CTAP2, or CTAP1 through a platform).
fn fido_u2f(
    mut st: Statement,
    att_stmt: &ciborium::Value,
    auth_data: &[u8],
    summary: &crate::ceremony::client::AuthDataSummary,
    client_data_hash: &[u8; 32],
) -> Statement {
    let sig = get_text_key(att_stmt, "sig").and_then(|v| v.as_bytes());
    let (chain, sig) = match (x5c(att_stmt), sig) {
        (Some(Ok(chain)), Some(sig)) if chain.len() == 1 => (chain, sig),
        (Some(Err(why)), _) => return st.flawed(ProofKind::Invalid, why),
        _ => {
            return st.flawed(
                ProofKind::Invalid,
                "fido-u2f statement needs sig and exactly one x5c certificate",
            )
        }
    };
    let cert = &chain[0];
    if !alg_fits_key(-7, cert) {
        return st.flawed(ProofKind::Invalid, "fido-u2f certificate key is not P-256");
    }
    let public_key = summary
        .cose_key
        .as_deref()
        .and_then(|k| decode(k).ok())
        .and_then(|v| parse_cose_ec2(&v).ok());
    let (Some(public_key), Some(credential_id)) = (public_key, summary.credential_id.as_ref())
    else {
        return st.flawed(
            ProofKind::Invalid,
            "credential public key is not a P-256 key",
        );
    };
    let mut signed = vec![0x00];
    signed.extend_from_slice(&auth_data[..32]);
    signed.extend_from_slice(client_data_hash);
    signed.extend_from_slice(credential_id);
    signed.extend_from_slice(public_key.to_encoded_point(false).as_bytes());
    if x509_verify_signature(&signed, sig, cert).is_err() {
        return st.flawed(ProofKind::Invalid, "fido-u2f signature does not verify");
    }
    let key_bits = cert
        .tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .raw_bytes();
    st.u2f_key_id = Some(hex::encode(Sha1::digest(key_bits)));
    st.kind = ProofKind::Certificate;
    st.chain = chain;
    st
}
