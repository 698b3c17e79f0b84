//! The Entra client half on its own: the pre-check of a key, the MakeCredential arguments
//! built from Graph's creationOptions, and the local verification of an assertion with a real
//! P-256 key.

use p256::ecdsa::signature::Signer;
use p256::ecdsa::{DerSignature, SigningKey};
use sha2::{Digest, Sha256};
use time::macros::datetime;

use crate::device::ctap2::{cose_ec2, encode};
use crate::device::{AssertionOutput, CredProtect, DeviceInfo, Pin};
use crate::entra::CreationOptions;
use crate::store::EntraPasskeyRecord;

use super::super::client;
use super::super::CeremonyError;
use super::verify::{counter_suggests_clone, verify_assertion};
use super::{make_credential_args, precheck};

fn info() -> DeviceInfo {
    DeviceInfo {
        id: "sim:1".into(),
        transport: "sim".into(),
        product: "sim".into(),
        aaguid: None,
        model: Some("Simulated key".into()),
        versions: vec!["FIDO_2_1".into()],
        extensions: vec!["credProtect".into(), "hmac-secret".into()],
        pin_set: Some(true),
        pin_retries: Some(8),
        uv_supported: false,
        discoverable_supported: true,
        remaining_discoverable_credentials: Some(25),
        firmware: None,
        min_pin_length: Some(4),
        force_pin_change: Some(false),
        pin_policy_writable: true,
        max_credentials_in_list: Some(8),
    }
}

fn code(r: Result<(), CeremonyError>) -> String {
    r.map(|_| "ok".to_string())
        .unwrap_or_else(|e| e.code().to_string())
}

#[test]
fn precheck_names_what_the_key_lacks_before_what_the_student_can_fix() {
    assert_eq!(code(precheck(&info())), "ok");
    let bare = DeviceInfo {
        extensions: vec!["credProtect".into()],
        pin_set: Some(false),
        ..info()
    };
    let e = precheck(&bare).unwrap_err();
    assert_eq!(e.code().as_str(), "key_unsupported");
    let m = e.public_message();
    assert!(
        m.contains("hmac-secret") && !m.contains("credProtect"),
        "{m}"
    );
    let no_rk = DeviceInfo {
        discoverable_supported: false,
        extensions: vec![],
        ..info()
    };
    let m = precheck(&no_rk).unwrap_err().public_message();
    for lack in ["discoverable", "credProtect", "hmac-secret"] {
        assert!(m.contains(lack), "{m}");
    }
    let touch_only = DeviceInfo {
        pin_set: None,
        ..info()
    };
    assert!(precheck(&touch_only)
        .unwrap_err()
        .public_message()
        .contains("PIN"));
    for (changed, want) in [
        (
            DeviceInfo {
                pin_set: Some(false),
                ..info()
            },
            "pin_not_set",
        ),
        (
            DeviceInfo {
                remaining_discoverable_credentials: Some(0),
                ..info()
            },
            "key_store_full",
        ),
        (
            DeviceInfo {
                pin_retries: Some(0),
                ..info()
            },
            "pin_blocked",
        ),
    ] {
        assert_eq!(code(precheck(&changed)), want);
    }
}

fn options() -> CreationOptions {
    CreationOptions {
        // As Graph sent it: the text goes into clientDataJSON unchanged.
        challenge: "cGFzc2tleS1jaGFsbGVuZ2U".into(),
        expires_at: datetime!(2026-12-06 18:05:00 UTC),
        rp_id: "login.microsoft.com".into(),
        rp_name: "Microsoft".into(),
        user_id: vec![7; 48],
        user_name: "s1@student.odisee.be".into(),
        user_display_name: "Student One".into(),
        algorithms: vec![-257, -7],
        exclude_credentials: vec![vec![1, 2, 3]],
        resident_key: true,
        user_verification: "required".into(),
        cred_protect: None,
        enforce_cred_protect: true,
        hmac_secret: true,
        attestation: "direct".into(),
    }
}

#[test]
fn make_credential_arguments_come_from_graph_and_never_from_the_local_rp() {
    let (cdj, args) = make_credential_args(&options(), Pin::new("1234")).unwrap();
    assert_eq!(
        std::str::from_utf8(&cdj).unwrap(),
        r#"{"type":"webauthn.create","challenge":"cGFzc2tleS1jaGFsbGVuZ2U","origin":"https://login.microsoft.com","crossOrigin":false}"#
    );
    assert_eq!(
        args.client_data_hash,
        <[u8; 32]>::from(Sha256::digest(&cdj))
    );
    assert_eq!(args.rp_id, "login.microsoft.com");
    assert_eq!(args.user_id, vec![7; 48]);
    assert_eq!(args.user_name, "s1@student.odisee.be");
    assert_eq!(args.algorithms, vec![-7]);
    assert_eq!(args.exclude_list, vec![vec![1, 2, 3]]);
    assert!(args.resident_key && args.user_verification);
    assert_eq!(args.pin, Some(Pin::new("1234")));
    assert_eq!(
        args.extensions.cred_protect,
        Some(CredProtect::UserVerificationOptional),
        "level 1 when Graph names none"
    );
    assert!(args.extensions.hmac_secret);

    let mut o = options();
    o.cred_protect = Some(2);
    o.hmac_secret = false;
    let (_, args) = make_credential_args(&o, Pin::new("1234")).unwrap();
    assert_eq!(
        args.extensions.cred_protect,
        Some(CredProtect::UserVerificationOptionalWithCredentialIdList)
    );
    assert!(!args.extensions.hmac_secret);

    o.algorithms = vec![-257, -8];
    let e = make_credential_args(&o, Pin::new("1234")).unwrap_err();
    assert_eq!(e.code().as_str(), "key_unsupported");
    assert!(e.public_message().contains("ES256"), "{e}");
    let mut o = options();
    o.cred_protect = Some(9);
    let e = make_credential_args(&o, Pin::new("1234")).unwrap_err();
    assert_eq!(e.code().as_str(), "entra_rejected");
}

/// A passkey of `key` for login.microsoft.com, and an assertion by it over `cdj`.
struct Signed {
    rec: EntraPasskeyRecord,
    out: AssertionOutput,
    cdj: Vec<u8>,
    challenge: [u8; 32],
}

fn signed(flags: u8, counter: u32) -> Signed {
    let key = SigningKey::from_slice(&[0x42; 32]).unwrap();
    let cose = encode(&cose_ec2(&p256::PublicKey::from(key.verifying_key()), -7));
    let rp_id = "login.microsoft.com";
    let challenge = [9u8; 32];
    let cdj = client::client_data_json("webauthn.get", &challenge, "https://login.microsoft.com");
    let mut ad = Sha256::digest(rp_id.as_bytes()).to_vec();
    ad.push(flags);
    ad.extend(counter.to_be_bytes());
    let mut signed = ad.clone();
    signed.extend(Sha256::digest(&cdj));
    let sig: DerSignature = key.sign(&signed);
    let rec = EntraPasskeyRecord {
        credential_id: vec![5; 16],
        user: "s1".into(),
        upn: "s1@student.odisee.be".into(),
        method_id: "m1".into(),
        rp_id: rp_id.into(),
        entra_user_id: vec![7; 48],
        public_key_cose: cose,
        counter: 3,
        aaguid: None,
        model: None,
        attestation_level: None,
        display_name: "Key".into(),
        cred_protect: Some(1),
        hmac_secret: true,
        user_verified: true,
        created_at: datetime!(2026-12-06 18:00:00 UTC),
        created_by: None,
        last_used_at: None,
    };
    let out = AssertionOutput {
        credential_id: vec![5; 16],
        authenticator_data: ad,
        signature: sig.as_bytes().to_vec(),
        user_handle: Some(vec![7; 48]),
    };
    Signed {
        rec,
        out,
        cdj,
        challenge,
    }
}

#[test]
fn an_assertion_verifies_with_the_recorded_key_and_nothing_else_does() {
    let s = signed(0x05, 4);
    let ad = verify_assertion(&s.rec, &s.cdj, &s.challenge, &s.out, true).unwrap();
    assert_eq!(ad.sign_count, 4);

    let why = |r: Result<_, super::super::rp::RpError>| r.unwrap_err().to_string();
    // Another key's record.
    let mut other = s.rec.clone();
    other.public_key_cose = {
        let k = SigningKey::from_slice(&[0x43; 32]).unwrap();
        encode(&cose_ec2(&p256::PublicKey::from(k.verifying_key()), -7))
    };
    assert!(
        why(verify_assertion(&other, &s.cdj, &s.challenge, &s.out, true)).contains("signature")
    );
    // Another challenge than this ceremony's.
    assert!(
        why(verify_assertion(&s.rec, &s.cdj, &[8; 32], &s.out, true)).contains("clientDataJSON")
    );
    // Another rp id.
    let mut rp = s.rec.clone();
    rp.rp_id = "keygate.local".into();
    assert!(why(verify_assertion(&rp, &s.cdj, &s.challenge, &s.out, true)).contains("rpIdHash"));
    // A tampered counter breaks the signature.
    let mut tampered = s.out.clone();
    tampered.authenticator_data[36] ^= 1;
    assert!(why(verify_assertion(
        &s.rec,
        &s.cdj,
        &s.challenge,
        &tampered,
        true
    ))
    .contains("signature"));
    // Presence only, where the PIN was required.
    let up_only = signed(0x01, 4);
    assert!(why(verify_assertion(
        &up_only.rec,
        &up_only.cdj,
        &up_only.challenge,
        &up_only.out,
        true
    ))
    .contains("verify the user"));
    assert!(verify_assertion(
        &up_only.rec,
        &up_only.cdj,
        &up_only.challenge,
        &up_only.out,
        false
    )
    .is_ok());
    // Not an ES256 key.
    let mut rs = s.rec.clone();
    rs.public_key_cose = encode(&crate::device::ctap2::int_map(vec![
        (1, crate::device::ctap2::int(3)),
        (3, crate::device::ctap2::int(-257)),
    ]));
    assert!(why(verify_assertion(&rs, &s.cdj, &s.challenge, &s.out, true)).contains("ES256"));
}

#[test]
fn only_a_non_zero_counter_that_does_not_go_up_suggests_a_clone() {
    assert!(!counter_suggests_clone(0, 0));
    assert!(!counter_suggests_clone(0, 5));
    assert!(!counter_suggests_clone(5, 0));
    assert!(!counter_suggests_clone(5, 6));
    assert!(counter_suggests_clone(5, 5));
    assert!(counter_suggests_clone(5, 4));
}

#[test]
fn extension_outputs_are_read_from_the_authenticator_data() {
    let ext = encode(&crate::device::ctap2::text_map(vec![
        ("credProtect", crate::device::ctap2::int(1)),
        ("hmac-secret", ciborium::Value::Bool(true)),
    ]));
    let key = SigningKey::from_slice(&[0x42; 32]).unwrap();
    let cose = encode(&cose_ec2(&p256::PublicKey::from(key.verifying_key()), -7));
    let mut ad = vec![0u8; 32];
    ad.push(0x01 | 0x04 | 0x40 | 0x80);
    ad.extend(7u32.to_be_bytes());
    ad.extend([0xAA; 16]);
    ad.extend(2u16.to_be_bytes());
    ad.extend([1, 2]);
    ad.extend(&cose);
    ad.extend(&ext);
    let s = client::parse_auth_data(&ad).unwrap();
    assert_eq!(s.cose_key.as_deref(), Some(cose.as_slice()));
    assert_eq!((s.cred_protect, s.hmac_secret), (Some(1), Some(true)));
    // Extensions without attested credential data (an assertion's authData).
    let mut ad = vec![0u8; 32];
    ad.push(0x01 | 0x80);
    ad.extend(7u32.to_be_bytes());
    ad.extend(&ext);
    let s = client::parse_auth_data(&ad).unwrap();
    assert_eq!((s.cred_protect, s.hmac_secret), (Some(1), Some(true)));
    // No ED flag: nothing read.
    ad[32] = 0x01;
    let s = client::parse_auth_data(&ad).unwrap();
    assert_eq!((s.cred_protect, s.hmac_secret), (None, None));
}
