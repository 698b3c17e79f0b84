//! Replays captured CTAP sessions (`hw-tests/captures/*.jsonl`, recorded with
//! `keygate bench --capture`) offline: every response goes through keygate's parsers, every
//! assertion signature is verified against the credential key its capture enrolled, and the
//! platform-side client (`Ctap2Authenticator`) runs against a transport that plays the capture
//! back. Where a capture holds the clientDataJSON behind its requests (bench captures do), each
//! MakeCredential and GetAssertion also goes through the WebAuthn client's response builders
//! (`ceremony::client`) and keygate's relying party (`ceremony::rp`): attestation statement and
//! chain (to `<capture>.ca.pem` when present), assertion signature, RP ID hash, origin, type,
//! challenge, flags and counter. Captures without it (`uhid-*`, recorded behind the daemon's
//! ceremonies) get the signature check against the COSE key only. Bench operators can drop real
//! captures into the folder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate::ceremony::client::{
    assertion_credential, attestation_auth_data, parse_auth_data, registration_credential,
};
use keygate::ceremony::rp::{AuthenticationState, RegistrationState, RelyingParty};
use keygate::config::UserVerification;
use keygate::device::capture::{parse, parse_client_data, Exchange};
use keygate::device::ctap2::{
    attestation_object, cmd, credential_id_from_auth_data, decode, get_int_key, parse_assertion,
    parse_cose_ec2, split_response, Ctap2Authenticator, CtapTransport, GetInfo,
};
use keygate::device::{Authenticator, CtapStatus, DeviceError, OpContext};
use keygate::store::{CredentialRecord, CredentialState, UserRecord};
use p256::ecdsa::signature::Verifier;
use sha2::{Digest, Sha256};

const CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hw-tests/captures");

fn captures() -> Vec<(String, Vec<Exchange>)> {
    let mut out: Vec<(String, Vec<Exchange>)> = std::fs::read_dir(CAPTURES)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().to_string(),
                parse(&std::fs::read_to_string(e.path()).unwrap()),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 2, "captures are committed");
    out
}

fn verify(cose: &[u8], auth_data: &[u8], cdh: &[u8], sig: &[u8]) -> bool {
    let key = parse_cose_ec2(&decode(cose).unwrap()).unwrap();
    let vk = p256::ecdsa::VerifyingKey::from(&key);
    let Ok(sig) = p256::ecdsa::DerSignature::try_from(sig) else {
        return false;
    };
    let mut msg = auth_data.to_vec();
    msg.extend_from_slice(cdh);
    vk.verify(&msg, &sig).is_ok()
}

#[test]
fn captured_responses_parse_and_signatures_verify() {
    for (name, session) in captures() {
        let mut keys: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut counters = Vec::new();
        let (mut made, mut asserted) = (0, 0);
        for ex in &session {
            let req = ex.request_bytes();
            let raw = ex.response_bytes();
            let (status, body) = split_response(&raw).unwrap();
            if status != CtapStatus::Ok {
                continue;
            }
            match req[0] {
                cmd::GET_INFO => {
                    let gi = GetInfo::parse(body).unwrap();
                    assert!(
                        gi.versions.iter().any(|v| v.starts_with("FIDO_2")),
                        "{name}"
                    );
                }
                cmd::MAKE_CREDENTIAL => {
                    let out = attestation_object(&decode(body).unwrap()).unwrap();
                    let obj = decode(&out.attestation_object).unwrap();
                    let ad = keygate::device::ctap2::get_text_key(&obj, "authData")
                        .unwrap()
                        .as_bytes()
                        .unwrap()
                        .clone();
                    let id = credential_id_from_auth_data(&ad).unwrap();
                    assert_eq!(id, out.credential_id);
                    keys.insert(id.clone(), ad[55 + id.len()..].to_vec());
                    made += 1;
                }
                cmd::GET_ASSERTION | cmd::GET_NEXT_ASSERTION => {
                    let a = parse_assertion(&decode(body).unwrap(), &[]).unwrap();
                    let Some(cose) = keys.get(&a.credential_id) else {
                        continue; // a credential made before this capture began
                    };
                    // clientDataHash is parameter 2 of authenticatorGetAssertion (CTAP 2.1 §6.2).
                    let cdh = get_int_key(&decode(&req[1..]).unwrap(), 2)
                        .unwrap()
                        .as_bytes()
                        .unwrap()
                        .clone();
                    assert!(
                        verify(cose, &a.authenticator_data, &cdh, &a.signature),
                        "{name}: signature"
                    );
                    let mut bad = a.signature.clone();
                    let last = bad.len() - 1;
                    bad[last] ^= 1;
                    assert!(
                        !verify(cose, &a.authenticator_data, &cdh, &bad),
                        "{name}: a flipped bit fails"
                    );
                    counters.push(u32::from_be_bytes(
                        a.authenticator_data[33..37].try_into().unwrap(),
                    ));
                    asserted += 1;
                }
                cmd::CLIENT_PIN => {
                    decode(body).unwrap();
                }
                _ => {}
            }
        }
        assert!(
            made >= 1 && asserted >= 2,
            "{name}: {made} credentials, {asserted} assertions"
        );
        assert!(
            counters
                .windows(2)
                .all(|w| w[1] > w[0] || (w[0] == 0 && w[1] == 0)),
            "{name}: {counters:?}"
        );
    }
}

/// Plays a capture back: each request must have the command byte the capture recorded next.
struct Replay(Mutex<std::vec::IntoIter<Exchange>>);

impl CtapTransport for Replay {
    fn transact(&self, request: &[u8], _ctx: &OpContext) -> Result<Vec<u8>, DeviceError> {
        let next = self.0.lock().unwrap().next().ok_or(DeviceError::Removed)?;
        assert_eq!(
            next.request_bytes()[0],
            request[0],
            "the client sends what the capture expects"
        );
        Ok(next.response_bytes())
    }
    fn cancel(&self) {}
    fn product(&self) -> String {
        "replay".into()
    }
    fn kind(&self) -> &'static str {
        "replay"
    }
}

#[test]
fn the_client_runs_against_a_played_back_session() {
    // Captures recorded by keygate's own CTAP client only (`keygate bench --capture`): a capture
    // taken behind another client (`uhid-*`: ctap-hid-fido2 in the VM, which e.g. sends GetInfo
    // twice) has that client's request order, which `Ctap2Authenticator` need not repeat.
    for (name, session) in captures()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("uhid-"))
    {
        let auth = Ctap2Authenticator::new(
            "replay:1".into(),
            Arc::new(Replay(Mutex::new(session.into_iter()))),
            keygate::device::model_name,
        );
        let info = auth.info().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            info.model.as_deref(),
            Some("keygate Simulated Key"),
            "{name}"
        );
        assert!(info.pin_retries.is_some(), "{name}");
    }
}

/// The RP's state for a challenge it issued, rebuilt for a replay: the state the RP kept when
/// it sent `challenge` (webauthn-rs states serialise; the challenge is base64url, as in
/// clientDataJSON). Only the challenge is replaced; every check runs as in a live ceremony.
fn with_challenge<T: serde::Serialize + serde::de::DeserializeOwned>(
    state: T,
    challenge: &str,
) -> T {
    let mut v = serde_json::to_value(state).unwrap();
    assert!(
        v.get("challenge").is_some(),
        "the RP state keeps its challenge: {v}"
    );
    v["challenge"] = challenge.into();
    serde_json::from_value(v).unwrap()
}

/// The RP refuses, for the reason named (a webauthn-rs error variant).
fn refused<T>(r: Result<T, keygate::ceremony::rp::RpError>, why: &str, name: &str) {
    match r {
        Ok(_) => panic!("{name}: accepted, expected {why}"),
        Err(e) => assert!(e.to_string().contains(why), "{name}: {e}, expected {why}"),
    }
}

fn challenge_of(cdj: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(cdj).unwrap();
    v["challenge"].as_str().unwrap().to_string()
}

fn origin_of(cdj: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(cdj).unwrap();
    v["origin"].as_str().unwrap().to_string()
}

fn bytes_at(v: &ciborium::Value, key: i64) -> Vec<u8> {
    get_int_key(v, key).unwrap().as_bytes().unwrap().clone()
}

fn text_in<'a>(v: &'a ciborium::Value, key: &str) -> &'a str {
    keygate::device::ctap2::get_text_key(v, key)
        .unwrap()
        .as_text()
        .unwrap()
}

fn record(
    user: &str,
    reg: keygate::ceremony::rp::VerifiedRegistration,
    cose: Vec<u8>,
) -> CredentialRecord {
    CredentialRecord {
        id: reg.credential_id,
        user: user.into(),
        rp_credential: reg.serialised,
        public_key_cose: cose,
        counter: 0,
        aaguid: None,
        attestation_format: reg.attestation_format,
        attested: reg.attested,
        discoverable: false,
        user_verified: false,
        nickname: None,
        model: None,
        created_at: time::OffsetDateTime::now_utc(),
        last_used_at: None,
        state: CredentialState::Active,
        state_reason: None,
    }
}

#[test]
fn captured_ceremonies_pass_the_relying_party() {
    let timeout = Duration::from_secs(60);
    let mut replayed = 0;
    for (name, session) in captures() {
        let text = std::fs::read_to_string(format!("{CAPTURES}/{name}")).unwrap();
        let client_data: HashMap<[u8; 32], Vec<u8>> = parse_client_data(&text)
            .into_iter()
            .map(|c| {
                let cdj = c.client_data_json.into_bytes();
                (Sha256::digest(&cdj).into(), cdj)
            })
            .collect();
        if client_data.is_empty() {
            assert!(
                name.starts_with("uhid-"),
                "{name}: bench captures carry their clientDataJSON (re-record with `keygate bench --capture`)"
            );
            eprintln!("{name}: no clientDataJSON in the capture: signatures checked against the COSE key only");
            continue;
        }
        let ca = std::fs::read_to_string(format!(
            "{CAPTURES}/{}.ca.pem",
            name.trim_end_matches(".jsonl")
        ))
        .ok();
        // One relying party per (RP ID, origin) of the capture.
        let mut rps: HashMap<(String, String), RelyingParty> = HashMap::new();
        let mut records: HashMap<Vec<u8>, CredentialRecord> = HashMap::new();
        let (mut registered, mut verified) = (0, 0);
        for ex in &session {
            let req = ex.request_bytes();
            let raw = ex.response_bytes();
            let (status, body) = split_response(&raw).unwrap();
            if status != CtapStatus::Ok
                || !matches!(req[0], cmd::MAKE_CREDENTIAL | cmd::GET_ASSERTION)
            {
                continue;
            }
            let params = decode(&req[1..]).unwrap();
            // clientDataHash is parameter 1 of authenticatorMakeCredential and 2 of
            // authenticatorGetAssertion (CTAP 2.1 §6.1, §6.2).
            let cdh_key = if req[0] == cmd::MAKE_CREDENTIAL { 1 } else { 2 };
            let cdh: [u8; 32] = bytes_at(&params, cdh_key).try_into().unwrap();
            let cdj = client_data
                .get(&cdh)
                .unwrap_or_else(|| panic!("{name}: a ceremony without its clientDataJSON"));
            let rp_id = if req[0] == cmd::MAKE_CREDENTIAL {
                text_in(get_int_key(&params, 2).unwrap(), "id").to_string()
            } else {
                get_int_key(&params, 1)
                    .unwrap()
                    .as_text()
                    .unwrap()
                    .to_string()
            };
            let origin = origin_of(cdj);
            let rp = rps
                .entry((rp_id.clone(), origin.clone()))
                .or_insert_with(|| {
                    RelyingParty::new(
                        &rp_id,
                        "replay",
                        &origin,
                        &ca.iter().cloned().collect::<Vec<_>>(),
                        false,
                    )
                    .unwrap()
                });
            if req[0] == cmd::MAKE_CREDENTIAL {
                let out = attestation_object(&decode(body).unwrap()).unwrap();
                let ad = parse_auth_data(&attestation_auth_data(&out.attestation_object).unwrap())
                    .unwrap_or_else(|| panic!("{name}: attested authData parses"));
                assert_eq!(
                    ad.credential_id.as_deref(),
                    Some(&out.credential_id[..]),
                    "{name}"
                );
                let user_entity = get_int_key(&params, 3).unwrap();
                let user = UserRecord {
                    name: text_in(user_entity, "name").into(),
                    display_name: text_in(user_entity, "displayName").into(),
                    user_handle: keygate::device::ctap2::get_text_key(user_entity, "id")
                        .unwrap()
                        .as_bytes()
                        .unwrap()
                        .clone(),
                    created_at: time::OffsetDateTime::now_utc(),
                };
                let (_, state): (_, RegistrationState) = rp
                    .start_registration(&user, &[], UserVerification::Preferred, false, timeout)
                    .unwrap();
                let reg = registration_credential(cdj, &out);
                // A state for another challenge: refused.
                refused(
                    rp.finish_registration(&reg, &state),
                    "MismatchedChallenge",
                    &name,
                );
                let state = with_challenge(state, &challenge_of(cdj));
                // Other client data under the right challenge: the attestation signature
                // (over authData || SHA-256(clientDataJSON)) no longer verifies.
                let forged = String::from_utf8(cdj.clone())
                    .unwrap()
                    .replace("\"crossOrigin\":false", "\"crossOrigin\":false ");
                refused(
                    rp.finish_registration(
                        &registration_credential(forged.as_bytes(), &out),
                        &state,
                    ),
                    "AttestationStatementSigInvalid",
                    &name,
                );
                let v = rp
                    .finish_registration(&reg, &state)
                    .unwrap_or_else(|e| panic!("{name}: registration: {e}"));
                assert_eq!(v.credential_id, out.credential_id, "{name}");
                assert_eq!(v.attestation_format, "packed", "{name}");
                assert_eq!(
                    v.attested,
                    ca.is_some(),
                    "{name}: the chain ends at the capture's CA"
                );
                records.insert(
                    out.credential_id.clone(),
                    record(&user.name, v, ad.cose_key.unwrap()),
                );
                registered += 1;
            } else {
                let allow: Vec<Vec<u8>> = get_int_key(&params, 3)
                    .and_then(|l| l.as_array())
                    .map(|l| {
                        l.iter()
                            .map(|d| {
                                keygate::device::ctap2::get_text_key(d, "id")
                                    .unwrap()
                                    .as_bytes()
                                    .unwrap()
                                    .clone()
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let a = parse_assertion(&decode(body).unwrap(), &allow).unwrap();
                let rec = records.get_mut(&a.credential_id).unwrap_or_else(|| {
                    panic!("{name}: an assertion by a credential the capture did not make")
                });
                let flags = parse_auth_data(&a.authenticator_data).unwrap();
                let (_, state): (_, AuthenticationState) = rp
                    .start_authentication(
                        std::slice::from_ref(rec),
                        UserVerification::Preferred,
                        timeout,
                    )
                    .unwrap();
                let pc = assertion_credential(cdj, &a);
                refused(
                    rp.finish_authentication(&pc, state.clone(), rec),
                    "MismatchedChallenge",
                    &name,
                );
                let state = with_challenge(state, &challenge_of(cdj));
                let mut bad = a.clone();
                let last = bad.signature.len() - 1;
                bad.signature[last] ^= 1;
                refused(
                    rp.finish_authentication(&assertion_credential(cdj, &bad), state.clone(), rec),
                    "AuthenticationFailure",
                    &name,
                );
                let v = rp
                    .finish_authentication(&pc, state, rec)
                    .unwrap_or_else(|e| panic!("{name}: assertion: {e}"));
                assert_eq!(v.counter, flags.sign_count, "{name}");
                assert_eq!(v.user_verified, flags.user_verified(), "{name}");
                rec.rp_credential = v.serialised;
                rec.counter = v.counter;
                verified += 1;
            }
        }
        eprintln!("{name}: {registered} registrations, {verified} assertions through the RP");
        assert!(
            registered >= 1 && verified >= 2,
            "{name}: {registered} registrations, {verified} assertions through the RP"
        );
        replayed += 1;
    }
    assert!(replayed >= 2, "the bench captures went through the RP");
}
