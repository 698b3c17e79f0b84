//! Replays the W3C WebAuthn Level 3 test vector §16.2 "ES256 Credential with No Attestation"
//! (RP ID `example.org`, origin `https://example.org`) through keygate's parsers and its
//! relying party: bytes made by someone else, not by our simulated key.

use std::time::Duration;

use keygate::ceremony::client::{
    assertion_credential, b64, parse_auth_data, registration_credential,
};
use keygate::ceremony::rp::RelyingParty;
use keygate::config::UserVerification;
use keygate::device::ctap2::{credential_id_from_auth_data, decode, get_text_key, parse_cose_ec2};
use keygate::device::{AssertionOutput, MakeCredentialOutput};
use keygate::store::{CredentialRecord, CredentialState, UserRecord};
use p256::ecdsa::signature::Verifier;
use serde_json::Value;
use sha2::{Digest, Sha256};

const REG_CHALLENGE: &str = "00c30fb78531c464d2b6771dab8d7b603c01162f2fa486bea70f283ae556e130";
const REG_CLIENT_DATA: &str = concat!(
    "7b2274797065223a22776562617574686e2e637265617465222c226368616c6c656e6765223a2241",
    "4d4d507434557878475453746e63647134313759447742466938767049612d7077386f4f75565734",
    "5441222c226f726967696e223a2268747470733a2f2f6578616d706c652e6f7267222c2263726f73",
    "734f726967696e223a66616c73652c22657874726144617461223a22636c69656e74446174614a53",
    "4f4e206d617920626520657874656e6465642077697468206164646974696f6e616c206669656c64",
    "7320696e20746865206675747572652c207375636820617320746869733a20426b5165446a646354",
    "427258426941774a544c453551227d"
);
const ATTESTATION_OBJECT: &str = concat!(
    "a363666d74646e6f6e656761747453746d74a068617574684461746158a4bfabc37432958b063360",
    "d3ad6461c9c4735ae7f8edd46592a5e0f01452b2e4b559000000008446ccb9ab1db374750b2367ff",
    "6f3a1f0020f91f391db4c9b2fde0ea70189cba3fb63f579ba6122b33ad94ff3ec330084be4a50102",
    "03262001215820afefa16f97ca9b2d23eb86ccb64098d20db90856062eb249c33a9b672f26df6122",
    "5820930a56b87a2fca66334b03458abf879717c12cc68ed73290af2e2664796b9220"
);
const CREDENTIAL_ID: &str = "f91f391db4c9b2fde0ea70189cba3fb63f579ba6122b33ad94ff3ec330084be4";
const AUTH_CHALLENGE: &str = "39c0e7521417ba54d43e8dc95174f423dee9bf3cd804ff6d65c857c9abf4d408";
const AUTHENTICATOR_DATA: &str =
    "bfabc37432958b063360d3ad6461c9c4735ae7f8edd46592a5e0f01452b2e4b51900000000";
const AUTH_CLIENT_DATA: &str = concat!(
    "7b2274797065223a22776562617574686e2e676574222c226368616c6c656e6765223a224f63446e",
    "55685158756c5455506f334a5558543049393770767a7a59425039745a6368587961763031416722",
    "2c226f726967696e223a2268747470733a2f2f6578616d706c652e6f7267222c2263726f73734f72",
    "6967696e223a66616c73657d"
);
const SIGNATURE: &str = concat!(
    "3046022100f50a4e2e4409249c4a853ba361282f09841df4dd4547a13a87780218deffcd38022100",
    "8480ac0f0b93538174f575bf11a1dd5d78c6e486013f937295ea13653e331e87"
);

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn auth_data_of(attestation_object: &[u8]) -> Vec<u8> {
    let v = decode(attestation_object).unwrap();
    get_text_key(&v, "authData")
        .unwrap()
        .as_bytes()
        .unwrap()
        .clone()
}

#[test]
fn parsers_read_the_vector() {
    let ad = auth_data_of(&h(ATTESTATION_OBJECT));
    assert_eq!(credential_id_from_auth_data(&ad).unwrap(), h(CREDENTIAL_ID));
    let summary = parse_auth_data(&ad).expect("authData parses");
    assert!(summary.user_present());
    assert!(!summary.user_verified());
    assert_eq!(&ad[..32], &Sha256::digest(b"example.org")[..]);
    // The COSE key follows the credential id; verify the assertion with it.
    let cose_start = 37 + 16 + 2 + 32;
    let key = parse_cose_ec2(&decode(&ad[cose_start..]).unwrap()).unwrap();
    let vk = p256::ecdsa::VerifyingKey::from(&key);
    let mut signed = h(AUTHENTICATOR_DATA);
    signed.extend(Sha256::digest(h(AUTH_CLIENT_DATA)));
    let sig = p256::ecdsa::DerSignature::try_from(h(SIGNATURE).as_slice()).unwrap();
    vk.verify(&signed, &sig)
        .expect("the published signature verifies");
    signed[0] ^= 1;
    assert!(vk.verify(&signed, &sig).is_err());
}

/// Replace every JSON string equal to `from` with `to` (the ceremony state's challenge).
fn swap_strings(v: &mut Value, from: &str, to: &str) -> usize {
    match v {
        Value::String(s) if s == from => {
            *s = to.to_string();
            1
        }
        Value::Array(a) => a.iter_mut().map(|x| swap_strings(x, from, to)).sum(),
        Value::Object(o) => o.values_mut().map(|x| swap_strings(x, from, to)).sum(),
        _ => 0,
    }
}

fn with_challenge<T: serde::Serialize + serde::de::DeserializeOwned>(
    state: T,
    issued: &[u8],
    wanted: &[u8],
) -> T {
    let mut v = serde_json::to_value(&state).unwrap();
    let n = swap_strings(&mut v, &b64(issued), &b64(wanted));
    assert!(n >= 1, "the challenge is in the state: {v}");
    serde_json::from_value(v).unwrap()
}

#[test]
fn relying_party_accepts_the_vector_and_rejects_a_forgery() {
    let rp =
        RelyingParty::new("example.org", "Example", "https://example.org", &[], false).unwrap();
    let user = UserRecord {
        name: "ada".into(),
        display_name: "Ada".into(),
        user_handle: vec![1, 2, 3, 4],
        created_at: time::OffsetDateTime::now_utc(),
    };
    let (options, state) = rp
        .start_registration(
            &user,
            &[],
            UserVerification::Preferred,
            false,
            Duration::from_secs(60),
        )
        .unwrap();
    let state = with_challenge(state, options.challenge.as_ref(), &h(REG_CHALLENGE));
    let out = MakeCredentialOutput {
        attestation_object: h(ATTESTATION_OBJECT),
        credential_id: h(CREDENTIAL_ID),
    };
    let reg = rp
        .finish_registration(&registration_credential(&h(REG_CLIENT_DATA), &out), &state)
        .expect("registration of the vector verifies");
    assert_eq!(reg.credential_id, h(CREDENTIAL_ID));
    assert_eq!(reg.attestation_format, "none");
    assert!(!reg.attested);

    let rec = CredentialRecord {
        id: h(CREDENTIAL_ID),
        user: "ada".into(),
        rp_credential: reg.serialised.clone(),
        public_key_cose: vec![],
        counter: 0,
        aaguid: None,
        attestation_format: "none".into(),
        attested: false,
        discoverable: false,
        user_verified: false,
        nickname: None,
        model: None,
        created_at: time::OffsetDateTime::now_utc(),
        last_used_at: None,
        state: CredentialState::Active,
        state_reason: None,
    };
    let assertion = |sig: Vec<u8>| AssertionOutput {
        credential_id: h(CREDENTIAL_ID),
        authenticator_data: h(AUTHENTICATOR_DATA),
        signature: sig,
        user_handle: None,
    };
    let fresh_state = || {
        let (o, s) = rp
            .start_authentication(
                std::slice::from_ref(&rec),
                UserVerification::Preferred,
                Duration::from_secs(60),
            )
            .unwrap();
        with_challenge(s, o.challenge.as_ref(), &h(AUTH_CHALLENGE))
    };
    let ok = rp
        .finish_authentication(
            &assertion_credential(&h(AUTH_CLIENT_DATA), &assertion(h(SIGNATURE))),
            fresh_state(),
            &rec,
        )
        .expect("the published assertion verifies");
    assert_eq!(ok.counter, 0);
    assert!(!ok.user_verified);
    let mut forged = h(SIGNATURE);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert!(rp
        .finish_authentication(
            &assertion_credential(&h(AUTH_CLIENT_DATA), &assertion(forged)),
            fresh_state(),
            &rec
        )
        .is_err());
}
