use super::*;
use crate::device::ctap2::{attestation_object, decode, int_map};

#[test]
fn library_error_strings_become_typed_errors() {
    assert_eq!(
        error_from_text("response_status err = 0x31 CTAP2_ERR_PIN_INVALID", Some(5)),
        DeviceError::PinInvalid {
            retries_left: Some(5)
        }
    );
    assert_eq!(
        error_from_text("0x32 CTAP2_ERR_PIN_BLOCKED", None),
        DeviceError::PinBlocked
    );
    assert_eq!(
        error_from_text("0x34 CTAP2_ERR_PIN_AUTH_BLOCKED", None),
        DeviceError::PinAuthBlocked
    );
    assert_eq!(
        error_from_text("0x19 CTAP2_ERR_CREDENTIAL_EXCLUDED", None),
        DeviceError::CredentialExcluded
    );
    assert_eq!(
        error_from_text("0x2D CTAP2_ERR_KEEPALIVE_CANCEL", None),
        DeviceError::Cancelled
    );
    assert_eq!(
        error_from_text("0x2F CTAP2_ERR_USER_ACTION_TIMEOUT", None),
        DeviceError::TouchTimeout
    );
    assert_eq!(
        error_from_text("read err = 0xFE", None),
        DeviceError::Removed
    );
    assert!(matches!(
        error_from_text("something odd", None),
        DeviceError::Protocol(_)
    ));
}

#[test]
fn attestation_objects_are_reassembled_per_format() {
    let mut ad = vec![0u8; 32];
    ad.push(0x41);
    ad.extend([0, 0, 0, 1]);
    ad.extend([7u8; 16]);
    ad.extend([0, 2, 0xAB, 0xCD]);
    for (fmt, x5c) in [
        ("packed", vec![vec![1u8, 2]]),
        ("packed", vec![]),
        ("fido-u2f", vec![vec![3]]),
        ("none", vec![]),
    ] {
        let obj = attestation_object_from_parts(fmt, &ad, -7, &[9, 9], &x5c);
        let v = decode(&obj).unwrap();
        assert_eq!(
            crate::device::ctap2::get_text_key(&v, "fmt")
                .unwrap()
                .as_text(),
            Some(fmt)
        );
        // The CTAP-keyed form of the same statement parses back to the same credential id.
        let as_ctap = int_map(vec![
            (1, text(fmt)),
            (2, bytes(&ad)),
            (
                3,
                crate::device::ctap2::get_text_key(&v, "attStmt")
                    .unwrap()
                    .clone(),
            ),
        ]);
        assert_eq!(
            attestation_object(&as_ctap).unwrap().credential_id,
            vec![0xAB, 0xCD]
        );
    }
}

/// The library's own makeCredential request with keygate's extension inputs goes to a
/// simulated key; the key's answer goes through the library's parser and keygate's
/// re-assembly: authData must come out byte for byte as the key signed it, ED and outputs
/// included, and the statement must still verify over it.
#[test]
fn extension_outputs_survive_the_library_byte_for_byte() {
    use ctap_hid_fido2::fidokey::make_credential::{
        make_credential_command, make_credential_response,
    };
    use p256::ecdsa::signature::Verifier;
    use sha2::{Digest, Sha256};

    let dir = tempfile::tempdir().unwrap();
    let mut key = crate::device::sim::standalone_key(dir.path(), Some(5)).unwrap();
    let client_data_json = br#"{"type":"webauthn.create"}"#.to_vec();
    let mut params = make_credential_command::Params::new(
        "login.microsoft.com",
        client_data_json.clone(),
        vec![1, 2, 3],
    );
    params.option_rk = true;
    let ext = CredentialExtensions {
        cred_protect: Some(CredProtect::UserVerificationOptional),
        hmac_secret: true,
    };
    let request =
        make_credential_command::create_payload(params, Some(&library_extensions(&ext)), 1)
            .unwrap();
    let raw = key.process(&request, &mut crate::device::sim::AlwaysPresent);
    assert_eq!(raw[0], 0, "the key accepted the library's request");
    let signed_auth_data = crate::device::ctap2::get_int_key(&decode(&raw[1..]).unwrap(), 2)
        .unwrap()
        .as_bytes()
        .unwrap()
        .clone();

    let att = make_credential_response::parse_cbor(&raw[1..]).unwrap();
    let out = attestation_output(&att);
    let obj = decode(&out.attestation_object).unwrap();
    let get = |k: &str| crate::device::ctap2::get_text_key(&obj, k).unwrap();
    assert_eq!(get("authData").as_bytes().unwrap(), &signed_auth_data);
    assert_eq!(signed_auth_data[32] & 0x80, 0x80, "flag ED");
    assert!(signed_auth_data.ends_with(b"\xA2\x6BcredProtect\x01\x6Bhmac-secret\xF5"));
    let outputs = out.extension_outputs().unwrap();
    assert_eq!(
        outputs.cred_protect,
        Some(CredProtect::UserVerificationOptional)
    );
    assert_eq!(outputs.hmac_secret, Some(true));

    let stmt = get("attStmt");
    let sig = crate::device::ctap2::get_text_key(stmt, "sig")
        .unwrap()
        .as_bytes()
        .unwrap();
    let mut message = signed_auth_data.clone();
    message.extend(Sha256::digest(&client_data_json));
    key_of_x5c(stmt)
        .verify(
            &message,
            &p256::ecdsa::DerSignature::try_from(sig.as_slice()).unwrap(),
        )
        .unwrap();
}

fn key_of_x5c(stmt: &Value) -> p256::ecdsa::VerifyingKey {
    use x509_cert::der::Decode;
    let leaf = crate::device::ctap2::get_text_key(stmt, "x5c")
        .unwrap()
        .as_array()
        .unwrap()[0]
        .as_bytes()
        .unwrap()
        .clone();
    let cert = x509_cert::Certificate::from_der(&leaf).unwrap();
    let spki = cert.tbs_certificate().subject_public_key_info();
    p256::ecdsa::VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes()).unwrap()
}

#[test]
fn library_extensions_keep_canonical_order_and_levels() {
    for level in 1..=3u8 {
        let ext = CredentialExtensions {
            cred_protect: CredProtect::from_level(level),
            hmac_secret: true,
        };
        let names: Vec<String> = library_extensions(&ext)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(names, ["credProtect", "hmac-secret"]);
        match &library_extensions(&ext)[0] {
            // The library writes `policy as i64` on the wire.
            Mext::CredProtect(Some(p)) => assert_eq!(*p as i64, i64::from(level)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(library_extensions(&CredentialExtensions::default()).is_empty());
}

#[test]
fn enumerating_without_keys_is_empty_not_an_error() {
    // CI machines have no USB: the source must answer an empty list (or a clean error).
    match HidSource::new().enumerate() {
        Ok(list) => assert!(list.iter().all(|a| a.id().starts_with("hid:"))),
        Err(e) => assert_eq!(e.code().as_str(), "device_error"),
    }
}

#[test]
fn a_new_kernel_device_under_a_known_path_is_a_replug() {
    let mut known = None;
    assert!(
        !another_device(&mut known, Some("0003:1209:0001.0001".into())),
        "first look"
    );
    assert!(!another_device(
        &mut known,
        Some("0003:1209:0001.0001".into())
    ));
    assert!(
        !another_device(&mut known, None),
        "an unreadable name tells nothing"
    );
    assert_eq!(known.as_deref(), Some("0003:1209:0001.0001"));
    assert!(another_device(
        &mut known,
        Some("0003:1209:0001.0002".into())
    ));
    assert!(!another_device(
        &mut known,
        Some("0003:1209:0001.0002".into())
    ));
}
