//! Unit tests of the CTAP2 command layer: PIN padding, AES-CBC, authData and GetInfo parsing.

use ciborium::value::Value;

use super::pin_protocol_one as pp1;
use super::*;

#[test]
fn pin_padding_round_trips_and_rejects_garbage() {
    let p = pp1::pad_pin("1234");
    assert_eq!(p.len(), 64);
    assert_eq!(pp1::unpad_pin(&p).as_deref(), Some("1234"));
    let mut bad = p.clone();
    bad[40] = 1;
    assert_eq!(pp1::unpad_pin(&bad), None);
    assert_eq!(pp1::unpad_pin(&p[..32]), None);
}

#[test]
fn aes_cbc_zero_iv_round_trips() {
    let key = [7u8; 32];
    let data = [1u8; 32];
    let enc = pp1::encrypt(&key, &data);
    assert_ne!(enc, data);
    assert_eq!(pp1::decrypt(&key, &enc).unwrap(), data);
    assert!(pp1::decrypt(&key, &enc[..15]).is_none());
}

#[test]
fn credential_id_is_read_from_auth_data() {
    let mut ad = vec![0u8; 32];
    ad.push(0x41);
    ad.extend([0, 0, 0, 1]);
    ad.extend([9u8; 16]);
    ad.extend([0, 3, 0xAA, 0xBB, 0xCC]);
    assert_eq!(
        credential_id_from_auth_data(&ad).unwrap(),
        vec![0xAA, 0xBB, 0xCC]
    );
    ad.truncate(ad.len() - 1);
    assert!(credential_id_from_auth_data(&ad).is_err());
    assert!(credential_id_from_auth_data(&[0u8; 10]).is_err());
}

#[test]
fn get_info_parses_options() {
    let v = int_map(vec![
        (0x01, Value::Array(vec![text("FIDO_2_0"), text("FIDO_2_1")])),
        (0x03, bytes(&[1u8; 16])),
        (
            0x04,
            text_map(vec![
                ("rk", Value::Bool(true)),
                ("clientPin", Value::Bool(false)),
            ]),
        ),
        (0x06, Value::Array(vec![int(1)])),
        (0x14, int(25)),
    ]);
    let gi = GetInfo::parse(&encode(&v)).unwrap();
    assert_eq!(gi.versions, vec!["FIDO_2_0", "FIDO_2_1"]);
    assert_eq!(gi.option("clientPin"), Some(false));
    assert_eq!(gi.option("uv"), None);
    assert_eq!(gi.remaining_discoverable_credentials, Some(25));
    assert!(GetInfo::parse(&[0xFF]).is_err());
}

#[test]
fn make_credential_extensions_are_canonical_cbor() {
    use crate::device::{CredProtect, CredentialExtensions};
    let none = CredentialExtensions::default();
    assert!(make_credential_extensions(&none).is_none());
    let both = CredentialExtensions {
        cred_protect: Some(CredProtect::UserVerificationOptional),
        hmac_secret: true,
    };
    // map(2), text(11) "credProtect", 1, text(11) "hmac-secret", true (CTAP 2.1 §12.1, §12.5).
    assert_eq!(
        encode(&make_credential_extensions(&both).unwrap()),
        b"\xA2\x6BcredProtect\x01\x6Bhmac-secret\xF5"
    );
    let level3 = CredentialExtensions {
        cred_protect: Some(CredProtect::UserVerificationRequired),
        hmac_secret: false,
    };
    assert_eq!(
        encode(&make_credential_extensions(&level3).unwrap()),
        b"\xA1\x6BcredProtect\x03"
    );
    let hmac_only = CredentialExtensions {
        cred_protect: None,
        hmac_secret: true,
    };
    assert_eq!(
        encode(&make_credential_extensions(&hmac_only).unwrap()),
        b"\xA1\x6Bhmac-secret\xF5"
    );
}

/// authData with attested credential data (id `AA BB`, a COSE key) and then `tail`.
fn auth_data_with(flags: u8, tail: &[u8]) -> Vec<u8> {
    let mut ad = vec![0u8; 32];
    ad.push(flags);
    ad.extend([0, 0, 0, 1]);
    ad.extend([9u8; 16]);
    ad.extend([0, 2, 0xAA, 0xBB]);
    let key = p256::SecretKey::from_slice(&[3u8; 32])
        .unwrap()
        .public_key();
    ad.extend(encode(&cose_ec2(&key, -7)));
    ad.extend(tail);
    ad
}

#[test]
fn extension_outputs_are_read_after_the_credential_key() {
    let outputs = b"\xA2\x6BcredProtect\x02\x6Bhmac-secret\xF5";
    let ad = auth_data_with(0x41 | 0x80, outputs);
    let map = auth_data_extensions(&ad).unwrap().unwrap();
    assert_eq!(encode(&map), outputs);
    let typed = crate::device::CreationExtensionOutputs::from_auth_data(&ad).unwrap();
    assert_eq!(
        typed.cred_protect,
        Some(crate::device::CredProtect::UserVerificationOptionalWithCredentialIdList)
    );
    assert_eq!(typed.hmac_secret, Some(true));

    // Without flag ED there are none, whatever follows.
    assert_eq!(
        auth_data_extensions(&auth_data_with(0x41, b"")).unwrap(),
        None
    );
    // Assertion authData: the map right after the counter.
    let mut assertion = vec![0u8; 32];
    assertion.push(0x81);
    assertion.extend([0, 0, 0, 2]);
    assertion.extend(b"\xA1\x6Bhmac-secret\x42\x01\x02");
    let map = auth_data_extensions(&assertion).unwrap().unwrap();
    assert_eq!(
        get_text_key(&map, "hmac-secret")
            .unwrap()
            .as_bytes()
            .unwrap(),
        &vec![1u8, 2]
    );

    // Malformed: ED without a map, trailing bytes, not a map, invalid level.
    for bad in [
        auth_data_with(0xC1, b""),
        auth_data_with(0xC1, b"\xA0\x00"),
        auth_data_with(0xC1, b"\x01"),
    ] {
        assert!(auth_data_extensions(&bad).is_err());
    }
    let bad_level = auth_data_with(0xC1, b"\xA1\x6BcredProtect\x07");
    assert!(crate::device::CreationExtensionOutputs::from_auth_data(&bad_level).is_err());
    assert!(auth_data_extensions(&[0u8; 20]).is_err());
}
