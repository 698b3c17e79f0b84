//! The BLOB: signature and chain (ES256 and RS256), payload reading, staleness, installation
//! and reloading, on BLOBs signed at run time by `testing.rs`.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;

use super::super::roots::pem_certificates;
use super::super::testing::{entry, payload, TestPki};
use super::super::AttestationError;
use super::*;
use crate::base::clock::ManualClock;
use crate::config::{parse_config, Overrides};

const MODEL: uuid::Uuid = uuid::Uuid::from_u128(0x1234_5678_0000_4000_8000_0000_0000_0001);
/// 2026-03-01T00:00:00Z.
const NOW_MS: i64 = 1_772_323_200_000;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(NOW_MS as u64)
}

fn date(s: &str) -> time::Date {
    time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).unwrap()
}

fn roots(pki: &TestPki) -> Vec<Certificate> {
    pem_certificates(&pki.root_pem).unwrap()
}

fn blob(pki: &TestPki, no: u64, next_update: &str) -> String {
    pki.sign_blob(&payload(
        no,
        date(next_update),
        vec![entry(MODEL, "Test Key", &[&pki.root_pem], "REVOKED")],
    ))
}

#[test]
fn a_signed_blob_verifies_under_its_root_only() {
    let pki = TestPki::new("fido");
    let data = verify_blob(&blob(&pki, 5, "2026-04-01"), &roots(&pki), now()).unwrap();
    assert_eq!(
        (data.no, data.next_update, data.entries),
        (5, date("2026-04-01"), 1)
    );
    let e = data.entry(Some(MODEL), None).unwrap();
    assert_eq!(e.description.as_deref(), Some("Test Key"));
    assert_eq!(e.status.as_deref(), Some("REVOKED"));
    assert_eq!(e.roots.len(), 1);
    assert!(data.entry(Some(uuid::Uuid::nil()), None).is_none());

    // RS256, as the FIDO Alliance signs.
    let rsa = TestPki::new_rs256(
        "fido rsa",
        include_str!("../../../tests/fixtures/entra/rsa-a.key.pem"),
    );
    let text = blob(&rsa, 6, "2026-04-01");
    assert!(text.starts_with(&URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256""#)[..10]));
    assert_eq!(verify_blob(&text, &roots(&rsa), now()).unwrap().no, 6);

    // Signed under another root.
    let err = verify_blob(&text, &roots(&pki), now()).unwrap_err();
    assert!(matches!(err, AttestationError::BlobUntrusted(_)), "{err}");

    // A changed payload, or signature: the signature fails.
    let good = blob(&pki, 5, "2026-04-01");
    let parts: Vec<&str> = good.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(payload(99, date("2026-04-01"), vec![]).to_string());
    let tampered = format!("{}.{forged}.{}", parts[0], parts[2]);
    assert!(matches!(
        verify_blob(&tampered, &roots(&pki), now()),
        Err(AttestationError::BlobSignature)
    ));
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[10] ^= 1;
    let tampered = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
    assert!(matches!(
        verify_blob(&tampered, &roots(&pki), now()),
        Err(AttestationError::BlobSignature)
    ));

    // Past the chain's validity (2049) nothing verifies.
    let later = SystemTime::UNIX_EPOCH + Duration::from_secs(2_600_000_000);
    assert!(matches!(
        verify_blob(&good, &roots(&pki), later),
        Err(AttestationError::BlobUntrusted(_))
    ));
}

#[test]
fn malformed_blobs_are_named() {
    let pki = TestPki::new("fido");
    let r = roots(&pki);
    let header = |h: serde_json::Value| URL_SAFE_NO_PAD.encode(h.to_string());
    let body = URL_SAFE_NO_PAD.encode("{}");
    for (text, why) in [
        ("not a jwt".to_string(), "three"),
        (
            format!("{}.{body}.AAAA", header(json!({"alg": "ES256"}))),
            "no x5c",
        ),
        (format!("!!.{body}.AAAA"), "header base64url"),
        (
            format!(
                "{}.{body}.AAAA",
                header(json!({"alg": "ES256", "x5c": ["AAAA"]}))
            ),
            "x5c",
        ),
    ] {
        let err = verify_blob(&text, &r, now()).unwrap_err();
        assert!(
            matches!(&err, AttestationError::BlobMalformed(m) if m.contains(why)),
            "{text}: {err}"
        );
    }
    // A signed payload without nextUpdate, or with a date in another form.
    for p in [
        json!({ "no": 1, "entries": [] }),
        json!({ "no": 1, "nextUpdate": "1 April 2026" }),
    ] {
        let err = verify_blob(&pki.sign_blob(&p), &r, now()).unwrap_err();
        assert!(matches!(err, AttestationError::BlobMalformed(_)), "{err}");
    }
    // alg that does not fit the key, alg not allowed by MDS3.
    let good = blob(&pki, 1, "2026-04-01");
    let (_, rest) = good.split_once('.').unwrap();
    for (alg, why) in [("RS256", "does not match"), ("none", "unsupported alg")] {
        let h: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(good.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        let mut h = h;
        h["alg"] = alg.into();
        let err = verify_blob(&format!("{}.{rest}", header(h)), &r, now()).unwrap_err();
        assert!(err.to_string().contains(why), "{alg}: {err}");
    }
}

#[test]
fn entries_it_cannot_read_are_skipped_and_the_newest_status_counts() {
    let pki = TestPki::new("fido");
    let mut newer_first = entry(MODEL, "Key", &[], "REVOKED");
    newer_first["statusReports"] = json!([
        { "status": "FIDO_CERTIFIED_L1", "effectiveDate": "2025-06-01" },
        { "status": "USER_VERIFICATION_BYPASS", "effectiveDate": "2024-02-01" },
        { "status": "NOT_FIDO_CERTIFIED" },
    ]);
    newer_first["someFutureField"] = json!({ "x": 1 });
    let p = payload(
        3,
        date("2026-04-01"),
        vec![
            newer_first,
            json!({ "aaguid": "not-a-uuid", "metadataStatement": {} }),
            json!({ "aaid": "4e4e#4005", "metadataStatement": { "description": "UAF" } }),
        ],
    );
    let data = verify_blob(&pki.sign_blob(&p), &roots(&pki), now()).unwrap();
    assert_eq!(data.entries, 1);
    let e = data.entry(Some(MODEL), None).unwrap();
    assert_eq!(e.status.as_deref(), Some("FIDO_CERTIFIED_L1"));
}

fn config(dir: &std::path::Path, root: &std::path::Path) -> crate::config::Config {
    parse_config(
        Some(&format!("[attestation]\nmds_root_ca = {root:?}\n")),
        &[],
        &Overrides {
            data_dir: Some(dir.to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn install_verifies_refuses_stale_or_older_blobs_and_writes_0600() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("fido");
    let root = dir.path().join("root.pem");
    std::fs::write(&root, &pki.root_pem).unwrap();
    let cfg = config(dir.path(), &root);
    let clock = ManualClock::new(NOW_MS);
    let offer = |name: &str, text: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, text).unwrap();
        install_blob(&cfg, &f, &clock)
    };

    let done = offer("b5.jwt", &blob(&pki, 5, "2026-04-01")).unwrap();
    assert_eq!((done.no, done.replaced), (5, None));
    assert_eq!(done.path, dir.path().join("mds-blob.jwt"));
    let mode = std::fs::metadata(&done.path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let err = offer("b4.jwt", &blob(&pki, 4, "2026-04-01")).unwrap_err();
    assert!(
        matches!(
            err,
            AttestationError::BlobOlder {
                offered: 4,
                installed: 5
            }
        ),
        "{err}"
    );
    let err = offer("stale.jwt", &blob(&pki, 6, "2026-02-28")).unwrap_err();
    assert!(matches!(err, AttestationError::BlobStale { .. }), "{err}");
    let err = offer("other.jwt", &blob(&TestPki::new("x"), 7, "2026-04-01")).unwrap_err();
    assert!(matches!(err, AttestationError::BlobUntrusted(_)), "{err}");
    // The installed one is still no 5; the same serial again and a newer one are accepted.
    assert_eq!(
        offer("again.jwt", &blob(&pki, 5, "2026-04-01"))
            .unwrap()
            .replaced,
        Some(5)
    );
    assert_eq!(
        offer("b8.jwt", &blob(&pki, 8, "2026-04-01"))
            .unwrap()
            .replaced,
        Some(5)
    );
    let installed = std::fs::read_to_string(dir.path().join("mds-blob.jwt")).unwrap();
    assert_eq!(unverified_serial(&installed), Some(8));
}

#[test]
fn the_source_reloads_a_changed_file_and_keeps_the_last_good_blob() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("fido");
    let path = dir.path().join("mds-blob.jwt");
    let source = MdsSource::new(path.clone(), roots(&pki));
    assert!(matches!(source.state(now()), MdsState::Absent));

    crate::base::fs::replace_private(&path, blob(&pki, 1, "2026-04-01").as_bytes()).unwrap();
    assert!(matches!(source.state(now()), MdsState::Current(d) if d.no == 1));
    crate::base::fs::replace_private(&path, blob(&pki, 2, "2026-04-01").as_bytes()).unwrap();
    assert!(matches!(source.state(now()), MdsState::Current(d) if d.no == 2));
    // A file that does not verify: the last verified BLOB stays in use.
    let forged = blob(&TestPki::new("x"), 3, "2026-04-01");
    crate::base::fs::replace_private(&path, forged.as_bytes()).unwrap();
    assert!(matches!(source.state(now()), MdsState::Current(d) if d.no == 2));
    // Past its nextUpdate: stale.
    let later = now() + Duration::from_secs(40 * 86_400);
    assert!(matches!(source.state(later), MdsState::Stale(d) if d.no == 2));
    // A fresh source with only the bad file: invalid.
    let fresh = MdsSource::new(path.clone(), roots(&pki));
    assert!(matches!(fresh.state(now()), MdsState::Invalid(e) if e.contains("not signed")));
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(source.state(now()), MdsState::Absent));
}
