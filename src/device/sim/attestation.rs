//! The simulated keys' packed-attestation test CA: created once per data dir (deterministic
//! under a seed) and kept in `<data_dir>/sim/attestation.json`, with the CA's PEM beside it in
//! `attestation-ca.pem` for relying parties to trust. A file from an older keygate whose leaf
//! wrote basicConstraints in non-DER form is made anew.

use std::path::Path;
use std::sync::Arc;

use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{core, io, Attestation, SIM_AAGUID};
use crate::device::DeviceError;

#[derive(Serialize, Deserialize)]
pub(super) struct AttestationFile {
    pub(super) ca_pem: String,
    pub(super) cert_der_hex: String,
    pub(super) key_pem: String,
}

pub(super) fn load_or_create_attestation(
    dir: &Path,
    seed: Option<u64>,
) -> Result<(Arc<Attestation>, String), DeviceError> {
    let path = dir.join("attestation.json");
    let stored = match std::fs::read(&path) {
        Ok(bytes) => Some(
            serde_json::from_slice::<AttestationFile>(&bytes)
                .map_err(|e| DeviceError::Io(format!("{}: {e}", path.display())))?,
        )
        .filter(|f| {
            let der = hex::decode(&f.cert_der_hex).unwrap_or_default();
            !has_non_der_basic_constraints(&der)
        })
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound)),
        Err(e) => Err(e),
    };
    let file: AttestationFile = match stored {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let f = create_attestation(seed)?;
            core::write_atomically(&path, &serde_json::to_vec_pretty(&f).map_err(io)?)
                .map_err(io)?;
            core::write_atomically(&dir.join("attestation-ca.pem"), f.ca_pem.as_bytes())
                .map_err(io)?;
            f
        }
        Err(e) => return Err(io(e)),
    };
    let key = p256::ecdsa::SigningKey::from_pkcs8_pem(&file.key_pem).map_err(io)?;
    let cert_der = hex::decode(&file.cert_der_hex).map_err(io)?;
    Ok((Arc::new(Attestation { cert_der, key }), file.ca_pem))
}

/// basicConstraints' value for an end entity in DER: `SEQUENCE {}` (cA's DEFAULT FALSE omitted).
pub(super) const EMPTY_BASIC_CONSTRAINTS: [u8; 2] = [0x30, 0x00];

/// An attestation certificate made by keygate before 0.x wrote basicConstraints as
/// `SEQUENCE { BOOLEAN FALSE }` (not DER); such a file is made anew.
pub(super) fn has_non_der_basic_constraints(cert_der: &[u8]) -> bool {
    const EXPLICIT_FALSE: [u8; 5] = [0x30, 0x03, 0x01, 0x01, 0x00];
    const OID: [u8; 5] = [0x06, 0x03, 0x55, 0x1d, 0x13];
    cert_der.windows(OID.len()).enumerate().any(|(i, w)| {
        w == OID
            && cert_der[i + OID.len()..]
                .windows(EXPLICIT_FALSE.len())
                .take(6)
                .any(|v| v == EXPLICIT_FALSE)
    })
}

/// A test CA and a packed-attestation certificate under it (WebAuthn §8.2.1 requirements:
/// X.509 v3, subject C/O/OU="Authenticator Attestation"/CN, CA=false, id-fido-gen-ce-aaguid).
pub(super) fn create_attestation(seed: Option<u64>) -> Result<AttestationFile, DeviceError> {
    use rcgen::{
        BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa,
        KeyPair, KeyUsagePurpose, SerialNumber,
    };
    let rc = |e: rcgen::Error| DeviceError::Io(format!("creating the attestation CA: {e}"));
    let att_secret = match seed {
        Some(s) => {
            let mut h: [u8; 32] = Sha256::new()
                .chain_update(b"keygate-sim-attestation")
                .chain_update(s.to_be_bytes())
                .finalize()
                .into();
            loop {
                if let Ok(k) = p256::SecretKey::from_slice(&h) {
                    break k;
                }
                h = Sha256::digest(h).into();
            }
        }
        None => p256::SecretKey::random(&mut rand::rngs::OsRng),
    };
    let key_pem = att_secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(io)?
        .to_string();

    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rc)?;
    let mut ca = CertificateParams::default();
    ca.not_before = rcgen::date_time_ymd(2024, 1, 1);
    ca.not_after = rcgen::date_time_ymd(2049, 12, 31);
    ca.serial_number = Some(SerialNumber::from(vec![1]));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "BE");
    dn.push(DnType::OrganizationName, "keygate");
    dn.push(
        DnType::CommonName,
        "keygate simulated key attestation CA (TEST ONLY)",
    );
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(rc)?;

    let leaf_key = KeyPair::from_pem(&key_pem).map_err(rc)?;
    let mut leaf = CertificateParams::default();
    leaf.not_before = rcgen::date_time_ymd(2024, 1, 1);
    leaf.not_after = rcgen::date_time_ymd(2049, 12, 31);
    leaf.serial_number = Some(SerialNumber::from(vec![2]));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "BE");
    dn.push(DnType::OrganizationName, "keygate");
    dn.push(DnType::OrganizationalUnitName, "Authenticator Attestation");
    dn.push(DnType::CommonName, "keygate simulated key");
    leaf.distinguished_name = dn;
    // basicConstraints with cA FALSE, as WebAuthn §8.2.1 (packed attestation) requires. DER
    // (X.690 §11.5) forbids encoding a DEFAULT value, so the extension's value is the empty
    // SEQUENCE; rcgen's `ExplicitNoCa` writes `cA FALSE`, which strict parsers refuse.
    leaf.is_ca = IsCa::NoCa;
    let mut basic_constraints =
        CustomExtension::from_oid_content(&[2, 5, 29, 19], EMPTY_BASIC_CONSTRAINTS.to_vec());
    basic_constraints.set_criticality(true);
    leaf.custom_extensions.push(basic_constraints);
    leaf.use_authority_key_identifier_extension = true;
    let mut aaguid_ext = vec![0x04, 0x10];
    aaguid_ext.extend_from_slice(SIM_AAGUID.as_bytes());
    leaf.custom_extensions
        .push(CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 45724, 1, 1, 4],
            aaguid_ext,
        ));
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).map_err(rc)?;
    Ok(AttestationFile {
        ca_pem: ca_cert.pem(),
        cert_der_hex: hex::encode(leaf_cert.der()),
        key_pem,
    })
}
