//! hmac-secret at getAssertion (CTAP 2.1 §12.5, PIN/UV auth protocol 1), driven with raw CTAP2
//! requests the way a platform sends them: key agreement through ClientPIN, salts encrypted
//! and authenticated with the shared secret, the output decrypted and checked against
//! HMAC-SHA-256(CredRandom, salt) for the CredRandom the key's documented derivation gives.

use ciborium::value::Value;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, VerifyingKey};
use sha2::{Digest, Sha256};

use super::super::*;
use super::softkey;
use crate::device::ctap2::{
    self, bytes, cmd, get_int_key, get_text_key, int, int_map, pin_protocol_one as pp1, text,
    text_map,
};
use crate::device::CtapStatus;

const RP: &str = "login.example";
const MC_CDH: [u8; 32] = [7; 32];
const GA_CDH: [u8; 32] = [9; 32];

fn call(k: &mut SoftKey, command: u8, params: Value) -> Result<Value, CtapStatus> {
    let mut req = vec![command];
    req.extend(ctap2::encode(&params));
    let raw = k.process(&req, &mut AlwaysPresent);
    let (status, body) = ctap2::split_response(&raw).unwrap();
    if status != CtapStatus::Ok {
        return Err(status);
    }
    Ok(ctap2::decode(body).unwrap())
}

/// makeCredential for RP: the credential id and its public key.
fn make(k: &mut SoftKey, hmac_secret: bool, user: u8) -> (Vec<u8>, VerifyingKey) {
    let mut params = vec![
        (0x01, bytes(&MC_CDH)),
        (0x02, text_map(vec![("id", text(RP)), ("name", text("RP"))])),
        (
            0x03,
            text_map(vec![
                ("id", bytes(&[user])),
                ("name", text("u")),
                ("displayName", text("U")),
            ]),
        ),
        (
            0x04,
            Value::Array(vec![text_map(vec![
                ("alg", int(-7)),
                ("type", text("public-key")),
            ])]),
        ),
    ];
    if hmac_secret {
        params.push((0x06, text_map(vec![("hmac-secret", Value::Bool(true))])));
    }
    params.push((0x07, text_map(vec![("rk", Value::Bool(true))])));
    let resp = call(k, cmd::MAKE_CREDENTIAL, int_map(params)).unwrap();
    let ad = get_int_key(&resp, 0x02).unwrap().as_bytes().unwrap();
    let id = ctap2::credential_id_from_auth_data(ad).unwrap();
    let key_bytes = &ad[55 + id.len()..];
    let cose: Value = ciborium::de::from_reader(key_bytes).unwrap();
    let key = VerifyingKey::from(&ctap2::parse_cose_ec2(&cose).unwrap());
    (id, key)
}

/// The platform's side of one key agreement: the shared secret and its COSE public key.
struct Platform {
    shared: [u8; 32],
    cose: Value,
}

fn key_agreement(k: &mut SoftKey) -> Platform {
    let resp = call(k, cmd::CLIENT_PIN, int_map(vec![(1, int(1)), (2, int(2))])).unwrap();
    let theirs = ctap2::parse_cose_ec2(get_int_key(&resp, 0x01).unwrap()).unwrap();
    let ours = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let z = p256::ecdh::diffie_hellman(ours.to_nonzero_scalar(), theirs.as_affine());
    Platform {
        shared: pp1::kdf(z.raw_secret_bytes()),
        cose: ctap2::cose_ec2(&ours.public_key(), -25),
    }
}

fn hmac_input(p: &Platform, salts: &[u8]) -> Value {
    let salt_enc = pp1::encrypt(&p.shared, salts);
    let salt_auth = pp1::authenticate(&p.shared, &salt_enc);
    int_map(vec![
        (1, p.cose.clone()),
        (2, bytes(&salt_enc)),
        (3, bytes(&salt_auth)),
    ])
}

/// getAssertion for RP with an `hmac-secret` input and, with `pin_token`, UV.
fn assert_with(
    k: &mut SoftKey,
    allow: Option<&[u8]>,
    input: Value,
    pin_token: Option<&[u8]>,
) -> Result<Value, CtapStatus> {
    let mut params = vec![(0x01, text(RP)), (0x02, bytes(&GA_CDH))];
    if let Some(id) = allow {
        params.push((
            0x03,
            Value::Array(vec![text_map(vec![
                ("id", bytes(id)),
                ("type", text("public-key")),
            ])]),
        ));
    }
    params.push((0x04, text_map(vec![("hmac-secret", input)])));
    if let Some(token) = pin_token {
        params.push((0x06, bytes(&pp1::authenticate(token, &GA_CDH))));
        params.push((0x07, int(1)));
    }
    call(k, cmd::GET_ASSERTION, int_map(params))
}

fn auth_data(resp: &Value) -> Vec<u8> {
    get_int_key(resp, 0x02).unwrap().as_bytes().unwrap().clone()
}

/// The decrypted hmac-secret output of an assertion, None without one.
fn output(p: &Platform, resp: &Value) -> Option<Vec<u8>> {
    let ext = ctap2::auth_data_extensions(&auth_data(resp)).unwrap()?;
    let enc = get_text_key(&ext, "hmac-secret")?.as_bytes()?;
    pp1::decrypt(&p.shared, enc)
}

/// HMAC-SHA-256(CredRandom, salt), CredRandom as the key derives it (see `core::credential`).
fn expected(k: &SoftKey, id: &[u8], uv: bool, salt: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let mac = |key: &[u8], parts: &[&[u8]]| {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
        for part in parts {
            m.update(part);
        }
        m.finalize().into_bytes().to_vec()
    };
    let rp_id_hash = Sha256::digest(RP.as_bytes());
    let cred_random = mac(
        &k.state.master,
        &[b"credRandom", &[u8::from(uv)], &id[..32], &rp_id_hash],
    );
    mac(&cred_random, &[salt])
}

fn assert_signed_by(resp: &Value, key: &VerifyingKey) {
    let mut signed = auth_data(resp);
    signed.extend_from_slice(&GA_CDH);
    let sig = get_int_key(resp, 0x03).unwrap().as_bytes().unwrap();
    key.verify(&signed, &DerSignature::try_from(sig.as_slice()).unwrap())
        .expect("assertion signature over authData with its extensions");
}

fn pin_token(k: &mut SoftKey, pin: &str) -> Vec<u8> {
    let p = key_agreement(k);
    let pin_hash_enc = pp1::encrypt(&p.shared, &pp1::pin_hash(pin));
    let resp = call(
        k,
        cmd::CLIENT_PIN,
        int_map(vec![
            (1, int(1)),
            (2, int(5)),
            (3, p.cose.clone()),
            (6, bytes(&pin_hash_enc)),
        ]),
    )
    .unwrap();
    let enc = get_int_key(&resp, 0x02).unwrap().as_bytes().unwrap();
    pp1::decrypt(&p.shared, enc).unwrap()
}

#[test]
fn outputs_are_the_hmacs_of_the_salts_under_the_credentials_cred_random() {
    let mut k = softkey();
    let (id, key) = make(&mut k, true, 1);
    let p = key_agreement(&mut k);
    let (salt1, salt2) = ([0xA5u8; 32], [0x96u8; 32]);

    let one = assert_with(&mut k, Some(&id), hmac_input(&p, &salt1), None).unwrap();
    assert_eq!(auth_data(&one)[32], 0x01 | 0x80, "UP and ED, no UV");
    assert_eq!(output(&p, &one).unwrap(), expected(&k, &id, false, &salt1));
    assert_signed_by(&one, &key);

    let both = [salt1, salt2].concat();
    let two = assert_with(&mut k, Some(&id), hmac_input(&p, &both), None).unwrap();
    let out = output(&p, &two).unwrap();
    assert_eq!(out.len(), 64);
    assert_eq!(out[..32], expected(&k, &id, false, &salt1));
    assert_eq!(out[32..], expected(&k, &id, false, &salt2));
    assert_signed_by(&two, &key);

    // Discoverable (no allow list) gives the same secret for the same credential.
    let disc = assert_with(&mut k, None, hmac_input(&p, &salt1), None).unwrap();
    assert_eq!(output(&p, &disc).unwrap(), expected(&k, &id, false, &salt1));
}

#[test]
fn with_uv_the_other_cred_random_is_used() {
    let mut k = softkey();
    let (id, key) = make(&mut k, true, 1);
    k.force_pin(Some("1234"));
    let token = pin_token(&mut k, "1234");
    let p = key_agreement(&mut k);
    let salt = [3u8; 32];
    let uv = assert_with(&mut k, Some(&id), hmac_input(&p, &salt), Some(&token)).unwrap();
    assert_eq!(auth_data(&uv)[32], 0x01 | 0x04 | 0x80);
    let with_uv = output(&p, &uv).unwrap();
    assert_eq!(with_uv, expected(&k, &id, true, &salt));
    assert_signed_by(&uv, &key);
    let no_uv = assert_with(&mut k, Some(&id), hmac_input(&p, &salt), None).unwrap();
    assert_ne!(output(&p, &no_uv).unwrap(), with_uv);
}

#[test]
fn malformed_inputs_are_refused_with_the_expected_status() {
    let mut k = softkey();
    let (id, _) = make(&mut k, true, 1);
    let p = key_agreement(&mut k);
    let good = hmac_input(&p, &[1u8; 32]);
    let without = |key: i64| {
        let Value::Map(m) = good.clone() else {
            unreachable!()
        };
        Value::Map(
            m.into_iter()
                .filter(|(k, _)| ctap2::as_i64(k) != Some(key))
                .collect(),
        )
    };
    let mut bad_auth = good.clone();
    if let Value::Map(m) = &mut bad_auth {
        m[2].1 = bytes(&[0u8; 16]);
    }
    let mut protocol_two = good.clone();
    if let Value::Map(m) = &mut protocol_two {
        m.push((int(4), int(2)));
    }
    for (input, status) in [
        (bad_auth, CtapStatus::ExtensionFirst),
        (hmac_input(&p, &[1u8; 16]), CtapStatus::InvalidLength),
        (hmac_input(&p, &[1u8; 48]), CtapStatus::InvalidLength),
        (without(3), CtapStatus::MissingParameter),
        (without(2), CtapStatus::MissingParameter),
        (without(1), CtapStatus::MissingParameter),
        (protocol_two, CtapStatus::InvalidParameter),
        (int(1), CtapStatus::CborUnexpectedType),
    ] {
        assert_eq!(
            assert_with(&mut k, Some(&id), input, None).unwrap_err(),
            status
        );
    }
    assert!(assert_with(&mut k, Some(&id), good, None).is_ok());
}

#[test]
fn no_output_for_credentials_or_keys_without_hmac_secret() {
    let mut k = softkey();
    let (plain, _) = make(&mut k, false, 1);
    let p = key_agreement(&mut k);
    let resp = assert_with(&mut k, Some(&plain), hmac_input(&p, &[1u8; 32]), None).unwrap();
    assert_eq!(auth_data(&resp).len(), 37, "no extensions");
    assert_eq!(auth_data(&resp)[32], 0x01);

    let mut old = softkey();
    old.set_extensions(&[]);
    let (id, _) = make(&mut old, true, 1);
    assert_eq!(id.len(), 48, "hmac-secret was ignored at creation");
    let p = key_agreement(&mut old);
    let resp = assert_with(&mut old, Some(&id), hmac_input(&p, &[1u8; 32]), None).unwrap();
    assert_eq!(auth_data(&resp)[32], 0x01);
    // A key without the extension does not even look at the input.
    let resp = assert_with(&mut old, Some(&id), int(1), None).unwrap();
    assert_eq!(auth_data(&resp).len(), 37);
}

#[test]
fn get_next_assertion_carries_each_credentials_output() {
    let mut k = softkey();
    let (first, key1) = make(&mut k, true, 1);
    let (second, key2) = make(&mut k, true, 2);
    let p = key_agreement(&mut k);
    let salt = [0x5Au8; 32];
    let newest = assert_with(&mut k, None, hmac_input(&p, &salt), None).unwrap();
    assert_eq!(get_int_key(&newest, 0x05).and_then(ctap2::as_i64), Some(2));
    let next = call(&mut k, cmd::GET_NEXT_ASSERTION, Value::Map(vec![])).unwrap();
    assert_eq!(
        output(&p, &newest).unwrap(),
        expected(&k, &second, false, &salt)
    );
    assert_eq!(
        output(&p, &next).unwrap(),
        expected(&k, &first, false, &salt)
    );
    assert_signed_by(&newest, &key2);
    assert_signed_by(&next, &key1);
}
