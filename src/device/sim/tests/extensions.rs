//! credProtect and hmac-secret at makeCredential, credProtect at getAssertion, the `extensions`
//! key option, and key files written before the extensions existed. Through the platform-side
//! CTAP2 client, so the encoder's extensions map and the key's outputs are both exercised.

use std::io::Cursor;

use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, VerifyingKey};
use webauthn_rs_core::internals::AuthenticatorData;
use webauthn_rs_core::proto::{CredentialProtectionPolicy, Registration};
use x509_cert::der::Decode;

use super::super::fixtures::{bench, ctx, ga_args, mc_args, open_bench};
use super::super::*;
use crate::device::ctap2::{self, get_text_key};
use crate::device::CtapStatus;
use crate::device::{
    CreationExtensionOutputs, CredProtect, CredentialExtensions, MakeCredentialArgs,
    MakeCredentialOutput, Pin,
};

/// `{"credProtect": level, "hmac-secret": true}` as CTAP 2.1 §12 and canonical CBOR spell it:
/// map(2), text(11) "credProtect", uint level, text(11) "hmac-secret", true.
fn both_outputs(level: u8) -> Vec<u8> {
    let mut out = b"\xA2\x6BcredProtect".to_vec();
    out.push(level);
    out.extend(b"\x6Bhmac-secret\xF5");
    out
}

fn with_extensions(
    mut args: MakeCredentialArgs,
    level: Option<u8>,
    hmac_secret: bool,
) -> MakeCredentialArgs {
    args.extensions = CredentialExtensions {
        cred_protect: level.map(|l| CredProtect::from_level(l).unwrap()),
        hmac_secret,
    };
    args
}

fn auth_data(out: &MakeCredentialOutput) -> Vec<u8> {
    let obj = ctap2::decode(&out.attestation_object).unwrap();
    get_text_key(&obj, "authData")
        .unwrap()
        .as_bytes()
        .unwrap()
        .clone()
}

/// The bytes after the attested credential data's COSE key, and the key itself.
fn after_credential_key(ad: &[u8]) -> (&[u8], VerifyingKey) {
    let id_len = u16::from_be_bytes([ad[53], ad[54]]) as usize;
    let key_bytes = &ad[55 + id_len..];
    let mut cursor = Cursor::new(key_bytes);
    let cose: ciborium::value::Value = ciborium::de::from_reader(&mut cursor).unwrap();
    let key = VerifyingKey::from(&ctap2::parse_cose_ec2(&cose).unwrap());
    (&key_bytes[cursor.position() as usize..], key)
}

/// Packed attestation (WebAuthn §8.2) as a relying party checks it: the x5c leaf's key signed
/// `authData ‖ clientDataHash`.
fn assert_packed_attestation_verifies(out: &MakeCredentialOutput, cdh: &[u8]) {
    let obj = ctap2::decode(&out.attestation_object).unwrap();
    assert_eq!(get_text_key(&obj, "fmt").unwrap().as_text(), Some("packed"));
    let stmt = get_text_key(&obj, "attStmt").unwrap();
    let sig = get_text_key(stmt, "sig").unwrap().as_bytes().unwrap();
    let leaf = get_text_key(stmt, "x5c").unwrap().as_array().unwrap()[0]
        .as_bytes()
        .unwrap();
    let cert = x509_cert::Certificate::from_der(leaf).unwrap();
    let spki = cert.tbs_certificate().subject_public_key_info();
    let key = VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes()).unwrap();
    let mut signed = auth_data(out);
    signed.extend_from_slice(cdh);
    key.verify(&signed, &DerSignature::try_from(sig.as_slice()).unwrap())
        .expect("attestation signature over authData with its extensions");
}

#[test]
fn make_credential_with_both_extensions_sets_ed_and_signs_the_outputs() {
    let (_d, _b, a) = bench(Some(11));
    let info = a.info().unwrap();
    assert!(info.supports_extension("credProtect") && info.supports_extension("hmac-secret"));
    assert!(!info.supports_extension("credBlob"));
    assert!(info.versions.contains(&"FIDO_2_1".to_string()));
    for level in 1..=3u8 {
        let mut args = with_extensions(mc_args(level == 2, None), Some(level), true);
        args.user_id = vec![level];
        let out = a.make_credential(&args, &ctx()).unwrap();
        let ad = auth_data(&out);
        assert_eq!(ad[32], 0x01 | 0x40 | 0x80, "UP, AT and ED");
        let (rest, _) = after_credential_key(&ad);
        assert_eq!(rest, both_outputs(level).as_slice());
        assert_eq!(
            out.extension_outputs().unwrap(),
            CreationExtensionOutputs {
                cred_protect: CredProtect::from_level(level),
                hmac_secret: Some(true),
            }
        );
        // An independent parser (the relying-party library keygate links) reads the same.
        let parsed = AuthenticatorData::<Registration>::try_from(ad.as_slice()).unwrap();
        let expected = CredentialProtectionPolicy::try_from(level).unwrap();
        assert_eq!(parsed.extensions.cred_protect.map(|c| c.0), Some(expected));
        assert_eq!(parsed.extensions.hmac_secret, Some(true));
        assert_packed_attestation_verifies(&out, &args.client_data_hash);
    }
}

#[test]
fn a_key_built_without_extensions_ignores_them() {
    let (_d, b, a) = bench(Some(12));
    let status = b
        .configure(
            "sim:1",
            SimKeyOptions {
                extensions: Some(vec![]),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(status.extensions.is_empty());
    let info = a.info().unwrap();
    assert!(info.extensions.is_empty());
    assert_eq!(info.versions, vec!["FIDO_2_0"]);
    let args = with_extensions(mc_args(false, None), Some(3), true);
    let out = a.make_credential(&args, &ctx()).unwrap();
    let ad = auth_data(&out);
    assert_eq!(ad[32], 0x01 | 0x40, "no ED");
    assert!(after_credential_key(&ad).0.is_empty());
    assert_eq!(
        out.extension_outputs().unwrap(),
        CreationExtensionOutputs::default()
    );
    assert_packed_attestation_verifies(&out, &args.client_data_hash);
    // It ignored level 3 too: the credential works without UV.
    a.get_assertion(&ga_args(vec![out.credential_id], None), &ctx())
        .unwrap();

    // A key with credProtect only answers credProtect only.
    b.configure(
        "sim:1",
        SimKeyOptions {
            extensions: Some(vec![SimExtension::CredProtect]),
            ..Default::default()
        },
    )
    .unwrap();
    let out = a.make_credential(&args, &ctx()).unwrap();
    let ad = auth_data(&out);
    assert_eq!(
        after_credential_key(&ad).0,
        b"\xA1\x6BcredProtect\x03".as_slice()
    );
}

#[test]
fn without_extension_inputs_nothing_changes() {
    let (_d, _b, a) = bench(Some(13));
    let out = a.make_credential(&mc_args(false, None), &ctx()).unwrap();
    let ad = auth_data(&out);
    assert_eq!(ad[32], 0x01 | 0x40);
    assert!(after_credential_key(&ad).0.is_empty());
    assert_eq!(out.credential_id.len(), 48, "the original id form");
}

/// Registers one credential per level (discoverable, user id = level) on a key with PIN 1234.
fn protected_credentials(a: &dyn crate::device::Authenticator) -> Vec<Vec<u8>> {
    a.set_pin(&Pin::new("1234")).unwrap();
    (1..=3u8)
        .map(|level| {
            let mut args = with_extensions(mc_args(true, Some("1234")), Some(level), false);
            args.user_id = vec![level];
            a.make_credential(&args, &ctx()).unwrap().credential_id
        })
        .collect()
}

#[test]
fn cred_protect_decides_which_credentials_a_request_may_use() {
    let (_d, _b, a) = bench(Some(14));
    let ids = protected_credentials(a.as_ref());
    let (l1, l2, l3) = (&ids[0], &ids[1], &ids[2]);
    let uses = |allow: Vec<Vec<u8>>, pin: Option<&str>| {
        a.get_assertion(&ga_args(allow, pin), &ctx())
            .map(|all| all.into_iter().map(|x| x.credential_id).collect::<Vec<_>>())
    };

    // Named in the allow list: levels 1 and 2 without UV, level 3 only with UV.
    assert_eq!(uses(vec![l1.clone()], None).unwrap(), vec![l1.clone()]);
    assert_eq!(uses(vec![l2.clone()], None).unwrap(), vec![l2.clone()]);
    assert_eq!(
        uses(vec![l3.clone()], None).unwrap_err(),
        DeviceError::NoCredentials
    );
    assert_eq!(
        uses(vec![l3.clone()], Some("1234")).unwrap(),
        vec![l3.clone()]
    );
    // A level-3 credential first in the list is skipped without UV, not an error.
    assert_eq!(
        uses(vec![l3.clone(), l1.clone()], None).unwrap(),
        vec![l1.clone()]
    );

    // Discoverable: without UV only level 1; with UV all three, newest first.
    assert_eq!(uses(vec![], None).unwrap(), vec![l1.clone()]);
    assert_eq!(
        uses(vec![], Some("1234")).unwrap(),
        vec![l3.clone(), l2.clone(), l1.clone()]
    );
}

#[test]
fn protected_credentials_alone_answer_no_credentials_without_uv() {
    let (_d, _b, a) = bench(Some(15));
    a.set_pin(&Pin::new("1234")).unwrap();
    for level in [2u8, 3] {
        let mut args = with_extensions(mc_args(true, Some("1234")), Some(level), false);
        args.user_id = vec![level];
        a.make_credential(&args, &ctx()).unwrap();
    }
    assert_eq!(
        a.get_assertion(&ga_args(vec![], None), &ctx()).unwrap_err(),
        DeviceError::NoCredentials
    );
    assert_eq!(
        a.get_assertion(&ga_args(vec![], Some("1234")), &ctx())
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn cred_protect_of_non_discoverable_credentials_lives_in_their_authenticated_id() {
    let (_d, _b, a) = bench(Some(16));
    a.set_pin(&Pin::new("1234")).unwrap();
    let args = with_extensions(mc_args(false, Some("1234")), Some(3), false);
    let id = a.make_credential(&args, &ctx()).unwrap().credential_id;
    assert_eq!(id.len(), 49);
    assert_eq!(
        a.get_assertion(&ga_args(vec![id.clone()], None), &ctx())
            .unwrap_err(),
        DeviceError::NoCredentials
    );
    a.get_assertion(&ga_args(vec![id.clone()], Some("1234")), &ctx())
        .unwrap();
    // Lowering the level in the id breaks its tag: the key no longer knows the credential.
    let mut lowered = id.clone();
    lowered[32] = 0x01;
    assert_eq!(
        a.get_assertion(&ga_args(vec![lowered], Some("1234")), &ctx())
            .unwrap_err(),
        DeviceError::NoCredentials
    );
}

#[test]
fn a_level_three_credential_excludes_only_with_uv() {
    let (_d, _b, a) = bench(Some(17));
    a.set_pin(&Pin::new("1234")).unwrap();
    let args = with_extensions(mc_args(false, Some("1234")), Some(3), false);
    let id = a.make_credential(&args, &ctx()).unwrap().credential_id;
    let mut again = mc_args(false, Some("1234"));
    again.exclude_list = vec![id];
    assert_eq!(
        a.make_credential(&again, &ctx()).unwrap_err(),
        DeviceError::CredentialExcluded
    );
    // Without UV (a touch-only key cannot verify), the same kind of credential is invisible.
    let (_d2, b2, plain) = bench(Some(17));
    b2.configure(
        "sim:1",
        SimKeyOptions {
            pin_supported: Some(false),
            ..Default::default()
        },
    )
    .unwrap();
    let id = plain
        .make_credential(
            &with_extensions(mc_args(false, None), Some(3), false),
            &ctx(),
        )
        .unwrap()
        .credential_id;
    let mut again = mc_args(false, None);
    again.exclude_list = vec![id];
    plain
        .make_credential(&again, &ctx())
        .expect("§6.1.2: a level-3 credential is invisible to an excludeList without UV");
}

#[test]
fn a_key_file_from_before_the_extensions_loads_with_both() {
    // Exactly what the previous keygate wrote for a fresh key.
    let old = r#"{"master":"0909090909090909090909090909090909090909090909090909090909090909",
        "rng_counter":3,"sign_counter":0,"counter_mode":"increment","pin_hash":null,
        "pin_retries":8,"resident":[],"resident_slots":25,"attestation":"ca","pin_supported":true}"#;
    let state: KeyState = serde_json::from_str(old).unwrap();
    assert_eq!(state.extensions, SimExtension::ALL.to_vec());

    // A bench whose key file predates the field, with a discoverable credential made then.
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let (b, a) = open_bench(dir.path(), Some(18));
        b.configure(
            "sim:1",
            SimKeyOptions {
                extensions: Some(vec![]),
                ..Default::default()
            },
        )
        .unwrap();
        a.make_credential(&mc_args(true, None), &ctx())
            .unwrap()
            .credential_id
    };
    let file = dir.path().join("sim/keys/1.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("extensions").unwrap();
    // Newer still than `extensions` (the PIN policy of authenticatorConfig).
    v.as_object_mut().unwrap().remove("pin_policy").unwrap();
    // And the reset window (authenticatorReset's power-up window).
    v.as_object_mut()
        .unwrap()
        .remove("reset_window_ms")
        .unwrap();
    let mut fields: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "attestation",
            "counter_mode",
            "master",
            "pin_hash",
            "pin_retries",
            "pin_supported",
            "resident",
            "resident_slots",
            "rng_counter",
            "sign_counter"
        ],
        "the previous version's fields"
    );
    std::fs::write(&file, serde_json::to_vec(&v).unwrap()).unwrap();

    let (b, a) = open_bench(dir.path(), Some(18));
    assert_eq!(b.list()[0].extensions, SimExtension::ALL.to_vec());
    assert!(a.info().unwrap().supports_extension("hmac-secret"));
    // The old credential is level 1: discoverable without UV.
    let all = a.get_assertion(&ga_args(vec![], None), &ctx()).unwrap();
    assert_eq!(all[0].credential_id, id);
}

#[test]
fn a_reset_keeps_the_keys_extension_set() {
    let mut k = super::softkey();
    k.set_extensions(&[SimExtension::HmacSecret, SimExtension::HmacSecret]);
    assert_eq!(k.state.extensions, vec![SimExtension::HmacSecret]);
    let reset = k.process(&[ctap2::cmd::RESET], &mut AlwaysPresent);
    assert_eq!(reset[0], CtapStatus::Ok.to_byte());
    let raw = k.process(&[ctap2::cmd::GET_INFO], &mut AlwaysPresent);
    let gi = ctap2::GetInfo::parse(&raw[1..]).unwrap();
    assert_eq!(gi.extensions, vec!["hmac-secret"]);
    assert_eq!(gi.versions, vec!["FIDO_2_0"]);
}

#[test]
fn rp_id_hash_binds_protected_ids_too() {
    let (_d, _b, a) = bench(Some(19));
    let args = with_extensions(mc_args(false, None), Some(2), true);
    let id = a.make_credential(&args, &ctx()).unwrap().credential_id;
    let mut elsewhere = ga_args(vec![id], None);
    elsewhere.rp_id = "other.example".into();
    assert_eq!(
        a.get_assertion(&elsewhere, &ctx()).unwrap_err(),
        DeviceError::NoCredentials
    );
}
