//! A software authenticator that answers Graph's creation options the way a FIDO2 key driven by
//! keygate would: clientDataJSON for `https://{rp id}`, an ES256 resident credential with UP and
//! UV, the credProtect (level 1) and hmac-secret extension outputs, packed attestation (with an
//! x5c certificate, or self attestation) or none. `Tamper` breaks one thing at a time, so the
//! fake's verifier is tested both ways.

use keygate::entra::{CreationOptions, NewFido2Method};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey;
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};

/// The AAGUID of a YubiKey 5 NFC (so the fake's model lookup names it).
pub const YUBIKEY_5_NFC: uuid::Uuid = uuid::uuid!("2fc0579f-8113-47ea-b116-bb5a8db9202a");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftAttestation {
    /// `packed` with an x5c attestation certificate (carrying the AAGUID extension).
    Packed,
    /// `packed` signed with the credential key itself.
    SelfAttestation,
    /// `none`.
    NoAttestation,
}

/// One deviation from a correct registration.
#[derive(Debug, Clone, Default)]
pub struct Tamper {
    /// rp id hashed into authData (and, unless `origin` is set, used for the origin).
    pub rp_id: Option<String>,
    pub origin: Option<String>,
    pub challenge: Option<String>,
    /// clientDataJSON `type`.
    pub client_data_type: Option<String>,
    pub cross_origin: bool,
    pub no_up: bool,
    pub no_uv: bool,
    /// No extension outputs at all (ED flag clear).
    pub omit_extensions: bool,
    pub cred_protect: Option<u8>,
    pub hmac_secret: Option<bool>,
    /// Flip a bit of the signed data before signing.
    pub bad_signature: bool,
    /// Reuse a credential id instead of a fresh one.
    pub credential_id: Option<Vec<u8>>,
}

pub struct SoftKey {
    pub aaguid: uuid::Uuid,
    pub mode: SoftAttestation,
    attestation: Option<(Vec<u8>, SigningKey)>,
}

impl SoftKey {
    pub fn new(aaguid: uuid::Uuid, mode: SoftAttestation) -> SoftKey {
        let attestation = (mode == SoftAttestation::Packed).then(|| attestation_cert(aaguid));
        SoftKey {
            aaguid,
            mode,
            attestation,
        }
    }

    /// Packed attestation, YubiKey 5 NFC AAGUID.
    pub fn yubikey_like() -> SoftKey {
        SoftKey::new(YUBIKEY_5_NFC, SoftAttestation::Packed)
    }

    /// A correct registration for `options`.
    pub fn register(&self, options: &CreationOptions, display_name: &str) -> NewFido2Method {
        self.register_tampered(options, display_name, &Tamper::default())
    }

    pub fn register_tampered(
        &self,
        o: &CreationOptions,
        display_name: &str,
        t: &Tamper,
    ) -> NewFido2Method {
        let rp_id = t.rp_id.clone().unwrap_or_else(|| o.rp_id.clone());
        let origin = t
            .origin
            .clone()
            .unwrap_or_else(|| format!("https://{}", o.rp_id));
        let client_data_json = format!(
            r#"{{"type":{},"challenge":{},"origin":{},"crossOrigin":{}}}"#,
            json!(t.client_data_type.as_deref().unwrap_or("webauthn.create")),
            json!(t.challenge.as_deref().unwrap_or(&o.challenge)),
            json!(origin),
            t.cross_origin
        )
        .into_bytes();
        let credential_id = t.credential_id.clone().unwrap_or_else(|| {
            let mut id = vec![0u8; 32];
            rand::thread_rng().fill_bytes(&mut id);
            id
        });
        let cred_key = SigningKey::random(&mut rand::rngs::OsRng);
        let point = cred_key.verifying_key().to_encoded_point(false);
        let cose = cbor(&ciborium::Value::Map(vec![
            (int(1), int(2)),
            (int(3), int(-7)),
            (int(-1), int(1)),
            (
                int(-2),
                ciborium::Value::Bytes(point.x().expect("x").to_vec()),
            ),
            (
                int(-3),
                ciborium::Value::Bytes(point.y().expect("y").to_vec()),
            ),
        ]));
        let cred_protect = t.cred_protect.or(o.cred_protect).unwrap_or(1);
        let hmac_secret = t.hmac_secret.unwrap_or(o.hmac_secret);
        let mut flags = 0x40u8;
        if !t.no_up {
            flags |= 0x01;
        }
        if !t.no_uv {
            flags |= 0x04;
        }
        if !t.omit_extensions {
            flags |= 0x80;
        }
        let mut auth_data = Sha256::digest(rp_id.as_bytes()).to_vec();
        auth_data.push(flags);
        auth_data.extend_from_slice(&0u32.to_be_bytes());
        auth_data.extend_from_slice(self.aaguid.as_bytes());
        auth_data.extend_from_slice(&(credential_id.len() as u16).to_be_bytes());
        auth_data.extend_from_slice(&credential_id);
        auth_data.extend_from_slice(&cose);
        if !t.omit_extensions {
            auth_data.extend_from_slice(&cbor(&ciborium::Value::Map(vec![
                (text("credProtect"), int(cred_protect as i64)),
                (text("hmac-secret"), ciborium::Value::Bool(hmac_secret)),
            ])));
        }
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&Sha256::digest(&client_data_json));
        if t.bad_signature {
            signed[0] ^= 1;
        }
        let (fmt, att_stmt) = match (&self.mode, &self.attestation) {
            (SoftAttestation::Packed, Some((cert_der, key))) => {
                let sig: Signature = key.sign(&signed);
                (
                    "packed",
                    vec![
                        (text("alg"), int(-7)),
                        (
                            text("sig"),
                            ciborium::Value::Bytes(sig.to_der().as_bytes().to_vec()),
                        ),
                        (
                            text("x5c"),
                            ciborium::Value::Array(vec![ciborium::Value::Bytes(cert_der.clone())]),
                        ),
                    ],
                )
            }
            (SoftAttestation::NoAttestation, _) => ("none", Vec::new()),
            _ => {
                let sig: Signature = cred_key.sign(&signed);
                (
                    "packed",
                    vec![
                        (text("alg"), int(-7)),
                        (
                            text("sig"),
                            ciborium::Value::Bytes(sig.to_der().as_bytes().to_vec()),
                        ),
                    ],
                )
            }
        };
        let attestation_object = cbor(&ciborium::Value::Map(vec![
            (text("fmt"), text(fmt)),
            (text("attStmt"), ciborium::Value::Map(att_stmt)),
            (text("authData"), ciborium::Value::Bytes(auth_data)),
        ]));
        NewFido2Method {
            display_name: display_name.into(),
            credential_id,
            client_data_json,
            attestation_object,
            client_extension_results: json!({"hmacCreateSecret": hmac_secret, "credProtect": cred_protect}),
        }
    }
}

fn cbor(v: &ciborium::Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).expect("CBOR");
    out
}

fn int(i: i64) -> ciborium::Value {
    ciborium::Value::Integer(i.into())
}

fn text(s: &str) -> ciborium::Value {
    ciborium::Value::Text(s.into())
}

/// A self-signed packed attestation certificate for `aaguid` (WebAuthn §8.2.1 subject, the
/// id-fido-gen-ce-aaguid extension) and its key.
fn attestation_cert(aaguid: uuid::Uuid) -> (Vec<u8>, SigningKey) {
    use rcgen::{CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa, KeyPair};
    let kp = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "BE");
    dn.push(DnType::OrganizationName, "keygate tests");
    dn.push(DnType::OrganizationalUnitName, "Authenticator Attestation");
    dn.push(DnType::CommonName, "software test key");
    params.distinguished_name = dn;
    params.is_ca = IsCa::NoCa;
    let mut ext = vec![0x04, 0x10];
    ext.extend_from_slice(aaguid.as_bytes());
    params
        .custom_extensions
        .push(CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 45724, 1, 1, 4],
            ext,
        ));
    let cert = params.self_signed(&kp).expect("attestation certificate");
    let key = SigningKey::from_pkcs8_der(&kp.serialize_der()).expect("PKCS#8 P-256");
    (cert.der().to_vec(), key)
}
