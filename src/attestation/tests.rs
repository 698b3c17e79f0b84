//! Unit tests of the statement checks and the policy's decision, on attestation objects built
//! here (packed and fido-u2f under a throwaway PKI) and made by the simulated key, with BLOBs
//! signed by `testing.rs` and a manual clock.

use std::path::Path;
use std::sync::Arc;

use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{DerSignature, SigningKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::testing::{entry, payload, TestPki};
use super::*;
use crate::base::clock::ManualClock;
use crate::config::{parse_config, Config, Overrides};
use crate::device::ctap2::{bytes, cose_ec2, decode, encode, get_text_key, int, text, text_map};

const CDH: [u8; 32] = [7; 32];
const MODEL_A: uuid::Uuid = uuid::Uuid::from_u128(0xaaaa_0000_0000_4000_8000_0000_0000_0001);
const MODEL_B: uuid::Uuid = uuid::Uuid::from_u128(0xbbbb_0000_0000_4000_8000_0000_0000_0002);
/// 2026-03-01T00:00:00Z.
const NOW_MS: i64 = 1_772_323_200_000;

/// Authenticator data with an attested credential (`credential` is the credential key).
fn auth_data(aaguid: uuid::Uuid, credential: &SigningKey) -> Vec<u8> {
    let mut ad = Sha256::digest(b"keygate.local").to_vec();
    ad.push(0x45); // UP | UV | AT
    ad.extend(1u32.to_be_bytes());
    ad.extend(aaguid.as_bytes());
    ad.extend(4u16.to_be_bytes());
    ad.extend([1, 2, 3, 4]);
    ad.extend(encode(&cose_ec2(&credential.verifying_key().into(), -7)));
    ad
}

fn object(fmt: &str, att_stmt: ciborium::Value, ad: &[u8]) -> Vec<u8> {
    encode(&text_map(vec![
        ("fmt", text(fmt)),
        ("attStmt", att_stmt),
        ("authData", bytes(ad)),
    ]))
}

/// A packed attestation for `aaguid` signed by `cert`/`key`.
fn packed(aaguid: uuid::Uuid, cert: &[u8], key: &SigningKey) -> Vec<u8> {
    let ad = auth_data(aaguid, &SigningKey::random(&mut rand::rngs::OsRng));
    let mut signed = ad.clone();
    signed.extend(CDH);
    let sig: DerSignature = key.sign(&signed);
    let stmt = text_map(vec![
        ("alg", int(-7)),
        ("sig", bytes(sig.as_bytes())),
        ("x5c", ciborium::Value::Array(vec![bytes(cert)])),
    ]);
    object("packed", stmt, &ad)
}

/// A fido-u2f attestation (nil AAGUID) signed by `cert`/`key`.
fn fido_u2f(cert: &[u8], key: &SigningKey, tamper: bool) -> Vec<u8> {
    let credential = SigningKey::random(&mut rand::rngs::OsRng);
    let ad = auth_data(uuid::Uuid::nil(), &credential);
    let mut signed = vec![0u8];
    signed.extend(&ad[..32]);
    signed.extend(CDH);
    signed.extend([1, 2, 3, 4]);
    signed.extend(
        credential
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes(),
    );
    if tamper {
        signed[1] ^= 1;
    }
    let sig: DerSignature = key.sign(&signed);
    let stmt = text_map(vec![
        ("sig", bytes(sig.as_bytes())),
        ("x5c", ciborium::Value::Array(vec![bytes(cert)])),
    ]);
    object("fido-u2f", stmt, &ad)
}

/// The simulated key's attestation object (packed, its test CA's certificate) and that CA.
fn sim_attestation(self_attested: bool) -> (Vec<u8>, String) {
    use crate::device::sim::fixtures::{bench, ctx, mc_args};
    let (_dir, bench, key) = bench(Some(3));
    if self_attested {
        let id = bench.list()[0].id.clone();
        let opts = crate::device::sim::SimKeyOptions {
            attestation: Some(crate::device::sim::AttestationMode::SelfSigned),
            ..Default::default()
        };
        bench.configure(&id, opts).unwrap();
    }
    let out = key.make_credential(&mc_args(false, None), &ctx()).unwrap();
    (out.attestation_object, bench.attestation_ca_pem())
}

#[test]
fn statements_are_read_and_checked_by_format() {
    let pki = TestPki::new("vendor");
    let (cert, key) = pki.attestation_certificate(MODEL_A);
    let st = read_statement(&packed(MODEL_A, &cert, &key), &CDH);
    assert_eq!(
        (st.kind, st.format.as_str()),
        (ProofKind::Certificate, "packed")
    );
    assert_eq!((st.aaguid, st.chain.len()), (Some(MODEL_A), 1));

    // Signed over another clientDataHash, or by another key: invalid.
    let st = read_statement(&packed(MODEL_A, &cert, &key), &[8; 32]);
    assert_eq!(st.kind, ProofKind::Invalid, "{st:?}");
    let other = SigningKey::random(&mut rand::rngs::OsRng);
    assert_eq!(
        read_statement(&packed(MODEL_A, &cert, &other), &CDH).kind,
        ProofKind::Invalid
    );
    // A certificate issued for model A cannot vouch for a key claiming model B.
    let st = read_statement(&packed(MODEL_B, &cert, &key), &CDH);
    assert_eq!(st.kind, ProofKind::Invalid);
    assert!(st.problem.unwrap().contains("not the key's"));

    // fido-u2f: the U2F verification data, and the key identifier MDS lists U2F models by.
    let st = read_statement(&fido_u2f(&cert, &key, false), &CDH);
    assert_eq!(
        (st.kind, st.format.as_str()),
        (ProofKind::Certificate, "fido-u2f")
    );
    assert_eq!(st.u2f_key_id.as_ref().map(String::len), Some(40));
    let st = read_statement(&fido_u2f(&cert, &key, true), &CDH);
    assert_eq!(st.kind, ProofKind::Invalid);

    // The simulated key: packed with its CA's certificate, or self attestation.
    let (obj, _) = sim_attestation(false);
    let st = read_statement(&obj, &CDH);
    assert_eq!(st.kind, ProofKind::Certificate, "{st:?}");
    assert_eq!(st.aaguid, Some(crate::device::sim::SIM_AAGUID));
    let (obj, _) = sim_attestation(true);
    assert_eq!(read_statement(&obj, &CDH).kind, ProofKind::SelfAttestation);

    // none, other formats, garbage.
    let ad = auth_data(MODEL_A, &key);
    let none = object("none", text_map(vec![]), &ad);
    assert_eq!(read_statement(&none, &CDH).kind, ProofKind::NoAttestation);
    let tpm = object("tpm", text_map(vec![]), &ad);
    assert_eq!(read_statement(&tpm, &CDH).kind, ProofKind::Unsupported);
    assert_eq!(read_statement(b"\xff\x00", &CDH).kind, ProofKind::Invalid);
    let no_sig = object("packed", text_map(vec![("alg", int(-7))]), &ad);
    assert_eq!(read_statement(&no_sig, &CDH).kind, ProofKind::Invalid);
}

/// A policy over `toml` (`[attestation]` and more), data in `dir`, at [`NOW_MS`].
fn policy(dir: &Path, toml: &str) -> (AttestationPolicy, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(NOW_MS));
    let cfg: Config = parse_config(
        Some(toml),
        &[],
        &Overrides {
            data_dir: Some(dir.to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap();
    (
        AttestationPolicy::from_config(&cfg, clock.clone()).unwrap(),
        clock,
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn date(s: &str) -> time::Date {
    time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).unwrap()
}

#[test]
fn trust_comes_from_configured_roots_or_the_models_mds_roots() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = TestPki::new("vendor");
    let (cert, key) = vendor.attestation_certificate(MODEL_A);
    let obj = packed(MODEL_A, &cert, &key);

    // No root at all: untrusted, the AAGUID only claimed.
    let (p, _) = policy(dir.path(), "");
    let j = p.judge(&obj, &CDH);
    assert_eq!(j.findings, vec![Reason::Untrusted]);
    assert_eq!((j.claimed_aaguid, j.aaguid()), (Some(MODEL_A), None));
    assert!(j.note.unwrap().contains("no trusted chain"));

    // A configured root.
    let ca = write(dir.path(), "vendor.pem", &vendor.root_pem);
    let (p, _) = policy(dir.path(), &format!("[attestation]\nca_files = [{ca:?}]\n"));
    let j = p.judge(&obj, &CDH);
    assert_eq!(
        (j.findings.clone(), j.trusted_by, j.aaguid()),
        (vec![], Some(TrustedBy::Configured), Some(MODEL_A))
    );
    // ... also from [relying_party] attestation_ca_files.
    let (p, _) = policy(
        dir.path(),
        &format!("[relying_party]\nattestation_ca_files = [{ca:?}]\n"),
    );
    assert_eq!(p.judge(&obj, &CDH).trusted_by, Some(TrustedBy::Configured));

    // The MDS entry's root for model A, not for model B (another vendor's model).
    let mds = TestPki::new("fido");
    let root = write(dir.path(), "mds-root.pem", &mds.root_pem);
    let blob = mds.sign_blob(&payload(
        7,
        date("2026-04-01"),
        vec![
            entry(
                MODEL_A,
                "Vendor Key A",
                &[&vendor.root_pem],
                "FIDO_CERTIFIED_L1",
            ),
            entry(
                MODEL_B,
                "Other Key B",
                &[&TestPki::new("other").root_pem],
                "FIDO_CERTIFIED_L1",
            ),
        ],
    ));
    write(dir.path(), "mds-blob.jwt", &blob);
    let toml = format!("[attestation]\nmds_root_ca = {root:?}\n");
    let (p, clock) = policy(dir.path(), &toml);
    let j = p.judge(&obj, &CDH);
    assert_eq!(
        (j.trusted_by, j.mds),
        (Some(TrustedBy::Metadata), "current")
    );
    assert_eq!(j.model.as_deref(), Some("Vendor Key A"));
    assert_eq!(j.mds_status.as_deref(), Some("FIDO_CERTIFIED_L1"));
    assert_eq!(j.result_json()["aaguid"], MODEL_A.to_string());
    let (cert_b, key_b) = vendor.attestation_certificate(MODEL_B);
    let j = p.judge(&packed(MODEL_B, &cert_b, &key_b), &CDH);
    assert_eq!((j.findings, j.model), (vec![Reason::Untrusted], None));

    // Past nextUpdate the BLOB is stale and its roots are not used.
    clock.advance(std::time::Duration::from_secs(32 * 86_400));
    let j = p.judge(&obj, &CDH);
    assert_eq!((j.findings, j.mds), (vec![Reason::Untrusted], "stale"));
    assert!(p.summary().contains("stale, no 7"), "{}", p.summary());

    // Self attestation: untrusted whatever the roots.
    let (obj, _) = sim_attestation(true);
    assert_eq!(p.judge(&obj, &CDH).findings, vec![Reason::Untrusted]);
}

#[test]
fn lists_and_mds_status_decide_for_a_proven_model() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = TestPki::new("vendor");
    let ca = write(dir.path(), "vendor.pem", &vendor.root_pem);
    let (cert, key) = vendor.attestation_certificate(MODEL_A);
    let obj = packed(MODEL_A, &cert, &key);
    let judge = |extra: &str| {
        let (p, _) = policy(
            dir.path(),
            &format!("[attestation]\nca_files = [{ca:?}]\n{extra}"),
        );
        p.judge(&obj, &CDH).findings
    };
    assert_eq!(
        judge(&format!("blocked_aaguids = [\"{MODEL_A}\"]")),
        vec![Reason::Blocked]
    );
    assert_eq!(
        judge(&format!("allowed_aaguids = [\"{MODEL_B}\"]")),
        vec![Reason::NotAllowed]
    );
    assert_eq!(judge(&format!("allowed_aaguids = [\"{MODEL_A}\"]")), vec![]);

    let mds = TestPki::new("fido");
    let root = write(dir.path(), "mds-root.pem", &mds.root_pem);
    for (status, want) in [
        ("REVOKED", Some(Reason::Revoked)),
        ("ATTESTATION_KEY_COMPROMISE", Some(Reason::Compromised)),
        ("USER_KEY_PHYSICAL_COMPROMISE", Some(Reason::Compromised)),
        ("USER_VERIFICATION_BYPASS", Some(Reason::UvBypass)),
        ("UPDATE_AVAILABLE", None),
        ("FIDO_CERTIFIED_L2", None),
    ] {
        let blob = mds.sign_blob(&payload(
            1,
            date("2026-04-01"),
            vec![entry(MODEL_A, "Vendor Key A", &[], status)],
        ));
        write(dir.path(), "mds-blob.jwt", &blob);
        let found = judge(&format!("mds_root_ca = {root:?}"));
        assert_eq!(found, want.into_iter().collect::<Vec<_>>(), "{status}");
    }
    // A self-attested key claiming a blocked model is refused as untrusted: its claim is not
    // taken for the lists.
    std::fs::remove_file(dir.path().join("mds-blob.jwt")).unwrap();
    let (obj, _) = sim_attestation(true);
    let (p, _) = policy(
        dir.path(),
        &format!(
            "[attestation]\nblocked_aaguids = [\"{}\"]\n",
            crate::device::sim::SIM_AAGUID
        ),
    );
    assert_eq!(p.judge(&obj, &CDH).findings, vec![Reason::Untrusted]);
}

#[test]
fn fido_u2f_models_are_found_in_mds_by_key_identifier() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = TestPki::new("u2f vendor");
    let (cert, key) = vendor.attestation_certificate(MODEL_A);
    let obj = fido_u2f(&cert, &key, false);
    let key_id = read_statement(&obj, &CDH).u2f_key_id.unwrap();
    let mds = TestPki::new("fido");
    let root = write(dir.path(), "mds-root.pem", &mds.root_pem);
    let mut u2f = entry(MODEL_A, "Old U2F Key", &[&vendor.root_pem], "REVOKED");
    let fields = u2f.as_object_mut().unwrap();
    fields.remove("aaguid");
    fields.insert(
        "attestationCertificateKeyIdentifiers".into(),
        Value::from(vec![key_id]),
    );
    write(
        dir.path(),
        "mds-blob.jwt",
        &mds.sign_blob(&payload(1, date("2026-04-01"), vec![u2f])),
    );
    let (p, _) = policy(
        dir.path(),
        &format!("[attestation]\nmds_root_ca = {root:?}\n"),
    );
    let j = p.judge(&obj, &CDH);
    assert_eq!(j.trusted_by, Some(TrustedBy::Metadata));
    assert_eq!(j.model.as_deref(), Some("Old U2F Key"));
    assert_eq!(j.findings, vec![Reason::Revoked]);
}

#[test]
fn a_sim_key_is_trusted_once_its_ca_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (obj, ca_pem) = sim_attestation(false);
    let ca = write(dir.path(), "sim-ca.pem", &ca_pem);
    let (p, _) = policy(dir.path(), &format!("[attestation]\nca_files = [{ca:?}]\n"));
    let j = p.judge(&obj, &CDH);
    assert_eq!(
        (j.findings, j.trusted_by),
        (vec![], Some(TrustedBy::Configured))
    );
    assert_eq!(
        get_text_key(&decode(&obj).unwrap(), "fmt").and_then(|f| f.as_text()),
        Some("packed")
    );
}

#[test]
fn an_installed_blob_that_does_not_verify_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mds = TestPki::new("fido");
    let root = write(dir.path(), "mds-root.pem", &mds.root_pem);
    let blob = TestPki::new("impostor").sign_blob(&payload(1, date("2026-04-01"), vec![]));
    write(dir.path(), "mds-blob.jwt", &blob);
    let cfg = parse_config(
        Some(&format!("[attestation]\nmds_root_ca = {root:?}\n")),
        &[],
        &Overrides {
            data_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap();
    let err = AttestationPolicy::from_config(&cfg, Arc::new(ManualClock::new(NOW_MS)))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("not signed under the configured root"),
        "{err}"
    );
}
