//! Replays captured CTAP sessions (`hw-tests/captures/*.jsonl`, recorded with
//! `keygate bench --capture`) offline: every response goes through keygate's parsers, every
//! assertion signature is verified against the credential key its capture enrolled, and the
//! platform-side client (`Ctap2Authenticator`) runs against a transport that plays the capture
//! back. Bench operators can drop real captures into the folder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keygate::device::capture::{parse, Exchange};
use keygate::device::ctap2::{
    attestation_object, cmd, credential_id_from_auth_data, decode, get_int_key, parse_assertion,
    parse_cose_ec2, split_response, Ctap2Authenticator, CtapTransport, GetInfo,
};
use keygate::device::{Authenticator, CtapStatus, DeviceError, OpContext};
use p256::ecdsa::signature::Verifier;

fn captures() -> Vec<(String, Vec<Exchange>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/hw-tests/captures");
    let mut out: Vec<(String, Vec<Exchange>)> = std::fs::read_dir(dir)
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
