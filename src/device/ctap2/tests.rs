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
