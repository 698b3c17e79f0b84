//! A throwaway PKI for the tests (unit and integration; not part of the public API): a root CA,
//! an intermediate and a BLOB signing certificate made at run time, like the FIDO Alliance's
//! chain (root <- intermediate <- signer, x5c = [signer, intermediate]), and Metadata Service
//! BLOBs signed with them. No real BLOB is shipped: every BLOB of the tests comes from here.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{json, Value};

/// The BLOB signer's key: ES256, or RS256 from a PKCS#8 RSA key.
enum SignerKey {
    Es256(p256::ecdsa::SigningKey),
    Rs256(ring::signature::RsaKeyPair),
}

pub struct TestPki {
    /// PEM of the root, for `mds_root_ca` or `ca_files`.
    pub root_pem: String,
    root: rcgen::Certificate,
    root_key: KeyPair,
    intermediate_der: Vec<u8>,
    signer_der: Vec<u8>,
    signer: SignerKey,
}

fn p256_key() -> (p256::ecdsa::SigningKey, KeyPair) {
    let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let pem = key.to_pkcs8_pem(LineEnding::LF).expect("pkcs8");
    let pair = KeyPair::from_pem(&pem).expect("rcgen key");
    (key, pair)
}

fn name(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (t, v) in parts {
        dn.push(t.clone(), *v);
    }
    dn
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2049, 12, 31);
    p.distinguished_name = name(&[
        (DnType::OrganizationName, "keygate tests"),
        (DnType::CommonName, cn),
    ]);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn leaf_params(dn: DistinguishedName) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2049, 12, 31);
    p.distinguished_name = dn;
    p.is_ca = IsCa::NoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p
}

impl TestPki {
    /// A PKI whose BLOB signer signs ES256.
    pub fn new(label: &str) -> TestPki {
        let (signer, signer_pair) = p256_key();
        Self::build(label, SignerKey::Es256(signer), signer_pair)
    }

    /// A PKI whose BLOB signer signs RS256 (as the FIDO Alliance does) with `pkcs8_pem`, an
    /// RSA key (e.g. `tests/fixtures/entra/rsa-a.key.pem`; generating one is slow).
    pub fn new_rs256(label: &str, pkcs8_pem: &str) -> TestPki {
        let body: String = pkcs8_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = STANDARD.decode(body).expect("PEM base64");
        let ring_key = ring::signature::RsaKeyPair::from_pkcs8(&der).expect("RSA PKCS#8");
        let pair = KeyPair::from_pem_and_sign_algo(pkcs8_pem, &rcgen::PKCS_RSA_SHA256)
            .expect("rcgen RSA key");
        Self::build(label, SignerKey::Rs256(ring_key), pair)
    }

    fn build(label: &str, signer: SignerKey, signer_pair: KeyPair) -> TestPki {
        let (_, root_key) = p256_key();
        let root = ca_params(&format!("{label} root"))
            .self_signed(&root_key)
            .expect("root");
        let (_, intermediate_key) = p256_key();
        let intermediate = ca_params(&format!("{label} intermediate"))
            .signed_by(&intermediate_key, &root, &root_key)
            .expect("intermediate");
        let signer_cert = leaf_params(name(&[(DnType::CommonName, "mds.keygate.test")]))
            .signed_by(&signer_pair, &intermediate, &intermediate_key)
            .expect("signer");
        TestPki {
            root_pem: root.pem(),
            root,
            root_key,
            intermediate_der: intermediate.der().to_vec(),
            signer_der: signer_cert.der().to_vec(),
            signer,
        }
    }

    /// `payload` as a compact JWS with x5c = [signer, intermediate].
    pub fn sign_blob(&self, payload: &Value) -> String {
        let alg = match self.signer {
            SignerKey::Es256(_) => "ES256",
            SignerKey::Rs256(_) => "RS256",
        };
        let header = json!({
            "alg": alg, "typ": "JWT",
            "x5c": [STANDARD.encode(&self.signer_der), STANDARD.encode(&self.intermediate_der)],
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let signature = match &self.signer {
            SignerKey::Es256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(signing_input.as_bytes());
                sig.to_bytes().to_vec()
            }
            SignerKey::Rs256(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &ring::rand::SystemRandom::new(),
                    signing_input.as_bytes(),
                    &mut sig,
                )
                .expect("RSA signature");
                sig
            }
        };
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// A packed attestation certificate for `aaguid` under this root (WebAuthn §8.2.1), and its
    /// key.
    pub fn attestation_certificate(
        &self,
        aaguid: uuid::Uuid,
    ) -> (Vec<u8>, p256::ecdsa::SigningKey) {
        let (key, pair) = p256_key();
        let mut p = leaf_params(name(&[
            (DnType::CountryName, "BE"),
            (DnType::OrganizationName, "keygate tests"),
            (DnType::OrganizationalUnitName, "Authenticator Attestation"),
            (DnType::CommonName, "test key"),
        ]));
        // basicConstraints cA FALSE in DER: the empty SEQUENCE (see device/sim/attestation.rs).
        let mut bc = CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x30, 0x00]);
        bc.set_criticality(true);
        p.custom_extensions.push(bc);
        let mut value = vec![0x04, 0x10];
        value.extend_from_slice(aaguid.as_bytes());
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 45724, 1, 1, 4],
            value,
        ));
        let cert = p
            .signed_by(&pair, &self.root, &self.root_key)
            .expect("attestation certificate");
        (cert.der().to_vec(), key)
    }
}

/// A BLOB payload (MDS3 §3.1.6).
pub fn payload(no: u64, next_update: time::Date, entries: Vec<Value>) -> Value {
    json!({
        "legalHeader": "Test data made by keygate's tests; not FIDO Alliance metadata.",
        "no": no,
        "nextUpdate": next_update.to_string(),
        "entries": entries,
    })
}

/// A FIDO2 entry for `aaguid` whose attestation roots are `root_pems` and whose newest status
/// report says `status` (e.g. `FIDO_CERTIFIED_L1`, `REVOKED`).
pub fn entry(aaguid: uuid::Uuid, description: &str, root_pems: &[&str], status: &str) -> Value {
    let roots: Vec<String> = root_pems
        .iter()
        .flat_map(|pem| crate::attestation::roots::pem_blocks(pem).expect("PEM"))
        .map(|der| STANDARD.encode(der))
        .collect();
    json!({
        "aaguid": aaguid,
        "metadataStatement": {
            "aaguid": aaguid, "description": description, "schema": 3,
            "protocolFamily": "fido2", "attestationTypes": ["basic_full"],
            "attestationRootCertificates": roots,
        },
        "statusReports": [
            { "status": "FIDO_CERTIFIED", "effectiveDate": "2024-01-01" },
            { "status": status, "effectiveDate": "2025-01-01" },
        ],
        "timeOfLastStatusChange": "2025-01-01",
    })
}
