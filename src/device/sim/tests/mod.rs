//! The simulated key on its own: determinism, the PIN state machine, persistence, and fuzzing of
//! the CBOR paths (arbitrary bytes must give a status, never a panic). The extensions have their
//! own files: `extensions` (makeCredential outputs, credProtect, the `extensions` option, old
//! key files) and `hmac_secret` (hmac-secret at getAssertion).

mod extensions;
mod hmac_secret;

use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::attestation::{
    create_attestation, has_non_der_basic_constraints, load_or_create_attestation,
    EMPTY_BASIC_CONSTRAINTS,
};
use super::fixtures::{bench, ctx, ga_args, mc_args, open_bench};
use super::*;
use crate::device::ctap2::{self, attestation_object, GetInfo};
use crate::device::{CtapStatus, OpContext, Pin};

#[test]
fn seeded_keys_are_deterministic() {
    let (_d1, _b1, a1) = bench(Some(42));
    let (_d2, _b2, a2) = bench(Some(42));
    let c1 = a1.make_credential(&mc_args(false, None), &ctx()).unwrap();
    let c2 = a2.make_credential(&mc_args(false, None), &ctx()).unwrap();
    assert_eq!(c1.credential_id, c2.credential_id);
    let s1 = a1
        .get_assertion(&ga_args(vec![c1.credential_id.clone()], None), &ctx())
        .unwrap();
    let s2 = a2
        .get_assertion(&ga_args(vec![c2.credential_id.clone()], None), &ctx())
        .unwrap();
    assert_eq!(
        s1[0].signature, s2[0].signature,
        "RFC 6979 signatures over equal data"
    );
    assert_eq!(s1[0].authenticator_data, s2[0].authenticator_data);
    let (_d3, _b3, a3) = bench(Some(43));
    let c3 = a3.make_credential(&mc_args(false, None), &ctx()).unwrap();
    assert_ne!(c1.credential_id, c3.credential_id);
}

/// The time inside the key grows with each request and stays below the caller's wall time
/// (the platform's CTAP client and PIN protocol run outside it).
#[test]
fn time_in_keys_counts_only_the_keys_side() {
    let (_d, b, a) = bench(Some(1));
    let before = b.time_in_keys();
    let started = Instant::now();
    a.set_pin(&Pin::new("1234")).unwrap();
    let c = a
        .make_credential(&mc_args(false, Some("1234")), &ctx())
        .unwrap();
    let wall = started.elapsed();
    let inside = b.time_in_keys() - before;
    assert!(
        inside > Duration::ZERO && inside < wall,
        "{inside:?} of {wall:?}"
    );
    let mid = b.time_in_keys();
    a.get_assertion(&ga_args(vec![c.credential_id], None), &ctx())
        .unwrap();
    assert!(b.time_in_keys() > mid);
}

#[test]
fn counter_increments_and_foreign_ids_are_unknown() {
    let (_d, _b, a) = bench(Some(1));
    let c = a.make_credential(&mc_args(false, None), &ctx()).unwrap();
    let count = |ad: &[u8]| u32::from_be_bytes([ad[33], ad[34], ad[35], ad[36]]);
    let first = a
        .get_assertion(&ga_args(vec![c.credential_id.clone()], None), &ctx())
        .unwrap();
    let second = a
        .get_assertion(&ga_args(vec![c.credential_id.clone()], None), &ctx())
        .unwrap();
    assert!(count(&second[0].authenticator_data) > count(&first[0].authenticator_data));
    let mut forged = c.credential_id.clone();
    forged[40] ^= 1;
    assert_eq!(
        a.get_assertion(&ga_args(vec![forged], None), &ctx())
            .unwrap_err(),
        DeviceError::NoCredentials
    );
    // Another key does not recognise this one's credential.
    let (_d2, _b2, other) = bench(Some(2));
    assert_eq!(
        other
            .get_assertion(&ga_args(vec![c.credential_id], None), &ctx())
            .unwrap_err(),
        DeviceError::NoCredentials
    );
}

#[test]
fn pin_state_machine_follows_ctap_6_5() {
    let (_d, b, a) = bench(Some(3));
    assert_eq!(
        a.make_credential(&mc_args(false, Some("1234")), &ctx())
            .unwrap_err(),
        DeviceError::PinNotSet
    );
    assert_eq!(
        a.set_pin(&Pin::new("12")).unwrap_err(),
        DeviceError::PinPolicyViolation
    );
    a.set_pin(&Pin::new("1234")).unwrap();
    assert_eq!(
        a.set_pin(&Pin::new("5678")).unwrap_err(),
        DeviceError::PinAlreadySet
    );
    // Without the PIN, a PIN-protected key wants its token.
    let mut no_pin = mc_args(false, None);
    no_pin.user_verification = true;
    assert_eq!(
        a.make_credential(&no_pin, &ctx()).unwrap_err(),
        DeviceError::PinRequired
    );
    assert_eq!(
        a.make_credential(&mc_args(false, Some("0000")), &ctx())
            .unwrap_err(),
        DeviceError::PinInvalid {
            retries_left: Some(7)
        }
    );
    assert!(a
        .make_credential(&mc_args(false, Some("1234")), &ctx())
        .is_ok());
    assert_eq!(
        a.pin_retries().unwrap(),
        8,
        "a correct PIN resets the retries"
    );
    for _ in 0..2 {
        assert!(matches!(
            a.make_credential(&mc_args(false, Some("0000")), &ctx()),
            Err(DeviceError::PinInvalid { .. })
        ));
    }
    assert_eq!(
        a.make_credential(&mc_args(false, Some("0000")), &ctx())
            .unwrap_err(),
        DeviceError::PinAuthBlocked
    );
    assert_eq!(
        a.make_credential(&mc_args(false, Some("1234")), &ctx())
            .unwrap_err(),
        DeviceError::PinAuthBlocked,
        "even the right PIN waits for a power cycle"
    );
    b.replug("sim:1").unwrap();
    assert!(a
        .make_credential(&mc_args(false, Some("1234")), &ctx())
        .is_ok());
    a.change_pin(&Pin::new("1234"), &Pin::new("24680")).unwrap();
    assert!(a
        .make_credential(&mc_args(false, Some("24680")), &ctx())
        .is_ok());
}

#[test]
fn discoverable_credentials_persist_and_are_listed_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let id_a;
    {
        let (_b, a) = open_bench(dir.path(), None);
        id_a = a
            .make_credential(&mc_args(true, None), &ctx())
            .unwrap()
            .credential_id;
        let mut second = mc_args(true, None);
        second.user_id = vec![4, 5, 6];
        a.make_credential(&second, &ctx()).unwrap();
    }
    // A restart: the same key, with its credentials, from the data dir.
    let (b, a) = open_bench(dir.path(), None);
    assert_eq!(b.list().len(), 1);
    assert_eq!(b.list()[0].discoverable_credentials, 2);
    let all = a.get_assertion(&ga_args(vec![], None), &ctx()).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].user_handle.as_deref(), Some(&[4u8, 5, 6][..]));
    assert_eq!(all[1].credential_id, id_a);
}

#[test]
fn resident_slots_run_out() {
    let (_d, b, a) = bench(Some(4));
    b.configure(
        "sim:1",
        SimKeyOptions {
            resident_slots: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    a.make_credential(&mc_args(true, None), &ctx()).unwrap();
    let mut other = mc_args(true, None);
    other.user_id = vec![9];
    assert_eq!(
        a.make_credential(&other, &ctx()).unwrap_err(),
        DeviceError::KeyStoreFull
    );
    assert_eq!(
        a.info().unwrap().remaining_discoverable_credentials,
        Some(0)
    );
}

#[test]
fn exclusion_waits_for_touch_then_reports() {
    let (_d, _b, a) = bench(Some(5));
    let c = a.make_credential(&mc_args(false, None), &ctx()).unwrap();
    let mut again = mc_args(false, None);
    again.exclude_list = vec![c.credential_id];
    assert_eq!(
        a.make_credential(&again, &ctx()).unwrap_err(),
        DeviceError::CredentialExcluded
    );
}

#[test]
fn never_touched_runs_into_the_deadline_and_cancel_is_honoured() {
    let (_d, b, a) = bench(Some(6));
    b.configure(
        "sim:1",
        SimKeyOptions {
            touch: Some(Touch::Never),
            ..Default::default()
        },
    )
    .unwrap();
    let short = OpContext::new(Instant::now() + Duration::from_millis(50), Arc::new(|_| {}));
    assert_eq!(
        a.make_credential(&mc_args(false, None), &short)
            .unwrap_err(),
        DeviceError::TouchTimeout
    );
    let c = ctx();
    let c2 = c.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        c2.cancel();
    });
    assert_eq!(
        a.make_credential(&mc_args(false, None), &c).unwrap_err(),
        DeviceError::Cancelled
    );
    t.join().unwrap();
}

/// A bare core with a shared attestation (created once: CA generation is the slow part).
pub(super) fn softkey() -> SoftKey {
    static ATTESTATION: std::sync::OnceLock<Arc<Attestation>> = std::sync::OnceLock::new();
    let att = ATTESTATION.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        SimBench::open(dir.path(), Some(9))
            .unwrap()
            .attestation
            .clone()
    });
    SoftKey::new(KeyState::new([9; 32]), att.clone(), None)
}

#[test]
fn get_info_of_the_core_parses() {
    let mut k = softkey();
    let raw = k.process(&[ctap2::cmd::GET_INFO], &mut AlwaysPresent);
    let (status, body) = ctap2::split_response(&raw).unwrap();
    assert_eq!(status, CtapStatus::Ok);
    let gi = GetInfo::parse(body).unwrap();
    assert_eq!(gi.aaguid, Some(SIM_AAGUID));
    assert_eq!(gi.option("clientPin"), Some(false));
    assert_eq!(
        k.process(&[0x42], &mut AlwaysPresent),
        vec![CtapStatus::InvalidCommand.to_byte()]
    );
    assert_eq!(
        k.process(&[], &mut AlwaysPresent),
        vec![CtapStatus::InvalidLength.to_byte()]
    );
    assert_eq!(
        k.process(&[1, 0xFF], &mut AlwaysPresent),
        vec![CtapStatus::InvalidCbor.to_byte()]
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Arbitrary request bytes after any command byte: a status byte comes back, no panic.
    #[test]
    fn core_survives_arbitrary_requests(command in 0u8..=0x0C, body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut k = softkey();
        let mut req = vec![command];
        req.extend(body);
        let out = k.process(&req, &mut AlwaysPresent);
        prop_assert!(!out.is_empty());
    }

    /// Arbitrary CBOR maps with small integer keys, the shape of real requests.
    #[test]
    fn core_survives_wellformed_cbor_of_the_wrong_shape(
        command in prop_oneof![Just(1u8), Just(2u8), Just(6u8)],
        entries in proptest::collection::vec((0i64..12, prop_oneof![
            any::<i64>().prop_map(ctap2::int),
            proptest::collection::vec(any::<u8>(), 0..80).prop_map(|b| ctap2::bytes(&b)),
            "[a-z]{0,12}".prop_map(|t| ctap2::text(&t)),
            Just(ciborium::value::Value::Bool(true)),
            Just(ctap2::text_map(vec![("id", ctap2::bytes(&[1; 48])), ("uv", ciborium::value::Value::Bool(true))])),
        ]), 0..8),
    ) {
        let mut k = softkey();
        let mut req = vec![command];
        req.extend(ctap2::encode(&ctap2::int_map(entries)));
        let out = k.process(&req, &mut AlwaysPresent);
        prop_assert!(!out.is_empty());
    }

    /// The platform-side parsers on arbitrary responses: errors, never panics.
    #[test]
    fn response_parsers_survive_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = GetInfo::parse(&body);
        let _ = ctap2::credential_id_from_auth_data(&body);
        let _ = ctap2::auth_data_extensions(&body);
        if let Ok(v) = ctap2::decode(&body) {
            let _ = attestation_object(&v);
            let _ = ctap2::parse_assertion(&v, &[]);
            let _ = ctap2::parse_cose_ec2(&v);
        }
    }
}

/// The attestation certificate and its CA are strict DER (RustCrypto's `der`, as strict as
/// Python's `cryptography`), and the leaf says cA FALSE the DER way: an empty, critical
/// basicConstraints (WebAuthn §8.2.1).
#[test]
fn attestation_certificates_are_strict_der_with_ca_false() {
    use x509_cert::der::{Decode, DecodePem};
    use x509_cert::ext::pkix::BasicConstraints;
    let f = create_attestation(Some(7)).unwrap();
    let leaf_der = hex::decode(&f.cert_der_hex).unwrap();
    let leaf = x509_cert::Certificate::from_der(&leaf_der).expect("leaf is DER");
    x509_cert::Certificate::from_pem(f.ca_pem.as_bytes()).expect("CA is DER");
    let bc = leaf
        .tbs_certificate()
        .extensions()
        .unwrap()
        .iter()
        .find(|e| e.extn_id.to_string() == "2.5.29.19")
        .expect("basicConstraints present");
    assert!(bc.critical);
    assert_eq!(bc.extn_value.as_bytes(), &EMPTY_BASIC_CONSTRAINTS);
    let parsed = BasicConstraints::from_der(bc.extn_value.as_bytes()).expect("DER");
    assert!(!parsed.ca);
    assert!(!has_non_der_basic_constraints(&leaf_der));

    // What the old code wrote (rcgen's ExplicitNoCa) is refused by the same parser.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut old = rcgen::CertificateParams::default();
    old.is_ca = rcgen::IsCa::ExplicitNoCa;
    let old_der = old.self_signed(&key).unwrap().der().to_vec();
    assert!(has_non_der_basic_constraints(&old_der));
    let old_cert = x509_cert::Certificate::from_der(&old_der).unwrap();
    let old_bc = old_cert
        .tbs_certificate()
        .extensions()
        .unwrap()
        .iter()
        .find(|e| e.extn_id.to_string() == "2.5.29.19")
        .unwrap();
    assert_ne!(old_bc.extn_value.as_bytes(), &EMPTY_BASIC_CONSTRAINTS);

    // Python's `cryptography` (what python-fido2 checks attestation with) is stricter than
    // `der` about DEFAULT values: it must take the new certificate and refuse the old one.
    match python_cryptography_loads(&leaf_der) {
        None => eprintln!("SKIPPED: python3 with `cryptography` is not installed"),
        Some(ok) => {
            assert!(ok, "cryptography refuses the attestation certificate");
            assert_eq!(python_cryptography_loads(&old_der), Some(false));
        }
    }
}

/// Some(true) when Python's `cryptography` parses `der` and its extensions; None without it.
fn python_cryptography_loads(der: &[u8]) -> Option<bool> {
    let script = "import sys\nfrom cryptography import x509\n\
        c = x509.load_der_x509_certificate(sys.stdin.buffer.read())\n\
        print(c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    use std::io::Write;
    child.stdin.take()?.write_all(der).ok()?;
    let out = child.wait_with_output().ok()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("ModuleNotFoundError") {
        return None;
    }
    Some(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "False")
}

/// A data dir made by an older keygate (`cA FALSE` written out) gets a new attestation file.
#[test]
fn a_stored_non_der_attestation_certificate_is_made_anew() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = create_attestation(Some(7)).unwrap();
    let mut der = hex::decode(&f.cert_der_hex).unwrap();
    // What rcgen's ExplicitNoCa wrote: the extension's OCTET STRING holds 30 03 01 01 00.
    let at = der
        .windows(EMPTY_BASIC_CONSTRAINTS.len() + 2)
        .position(|w| w == [0x04, 0x02, 0x30, 0x00])
        .unwrap();
    der.splice(at..at + 4, [0x04, 0x05, 0x30, 0x03, 0x01, 0x01, 0x00]);
    assert!(has_non_der_basic_constraints(&der));
    f.cert_der_hex = hex::encode(&der);
    std::fs::write(
        dir.path().join("attestation.json"),
        serde_json::to_vec(&f).unwrap(),
    )
    .unwrap();
    let (att, _) = load_or_create_attestation(dir.path(), Some(7)).unwrap();
    assert!(!has_non_der_basic_constraints(&att.cert_der));
}

#[test]
fn verify_pin_takes_a_token_without_a_touch_and_counts_a_wrong_pin() {
    let (_d, b, a) = bench(Some(5));
    // Nobody touches: verify_pin must not need it.
    b.configure(
        "sim:1",
        crate::device::sim::SimKeyOptions {
            touch: Some(crate::device::sim::Touch::Never),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        a.verify_pin(&Pin::new("1234")).unwrap_err(),
        DeviceError::PinNotSet
    );
    a.set_pin(&Pin::new("1234")).unwrap();
    a.verify_pin(&Pin::new("1234")).unwrap();
    assert_eq!(
        a.verify_pin(&Pin::new("0000")).unwrap_err(),
        DeviceError::PinInvalid {
            retries_left: Some(7)
        }
    );
    // The right PIN resets the run of wrong ones, as getPinToken does (§6.5.5.7).
    a.verify_pin(&Pin::new("1234")).unwrap();
    assert_eq!(a.pin_retries().unwrap(), 8);
}
