//! The Metadata Service BLOB at enrollment (model names, statuses, roots, staleness) and
//! `keygate mds update` / `check-config` through the real binary, next to a running keygate
//! that picks up each installed BLOB at its next enrollment.

use std::process::{Command, Output};

use super::*;

const BIN: &str = env!("CARGO_BIN_EXE_keygate");

/// A data dir holding the simulated keys' CA, and the MDS PKI's root in `mds-root.pem`.
fn prepared(pki: &TestPki) -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let sim_ca = sim_ca_pem(tmp.path());
    std::fs::write(tmp.path().join("mds-root.pem"), &pki.root_pem).unwrap();
    (tmp, sim_ca)
}

fn mds_toml(dir: &Path, extra: &str) -> String {
    format!(
        "[attestation]\nmds_root_ca = \"{}\"\n{extra}\n",
        dir.join("mds-root.pem").display()
    )
}

fn mds_update(dir: &Path, blob: &str, name: &str) -> Output {
    let file = dir.join(name);
    std::fs::write(&file, blob).unwrap();
    let config = dir.join("keygate.toml");
    std::fs::write(&config, mds_toml(dir, "")).unwrap();
    Command::new(BIN)
        .args(["mds", "update"])
        .arg(&file)
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn the_blob_proves_the_model_names_it_and_refuses_a_revoked_one() {
    let pki = TestPki::new("fido");
    let (tmp, sim_ca) = prepared(&pki);
    let dir = tmp.path().to_path_buf();
    std::fs::write(
        dir.join("mds-blob.jwt"),
        sim_blob(&pki, 1, &sim_ca, "FIDO_CERTIFIED_L1"),
    )
    .unwrap();
    let e = Env::start_in(tmp, &mds_toml(&dir, "mode = \"enforce\"")).await;
    let v = e.enroll("m1").await;
    assert_eq!(v["state"], "succeeded", "{v}");
    let a = &v["result"]["attestation"];
    assert_eq!(a["model"], "Simulated Key (from MDS)", "{v}");
    assert_eq!(a["mds_status"], "FIDO_CERTIFIED_L1");
    assert_eq!(
        v["result"]["credential"]["model"],
        "Simulated Key (from MDS)"
    );
    assert_eq!(
        e.credentials("m1").await[0]["model"],
        "Simulated Key (from MDS)"
    );

    // The next BLOB revokes the model: installed by hand here (the CLI is tested below).
    keygate::base::fs::replace_private(
        &dir.join("mds-blob.jwt"),
        sim_blob(&pki, 2, &sim_ca, "REVOKED").as_bytes(),
    )
    .unwrap();
    let v = e.enroll("m2").await;
    assert_eq!(rejected(&v), "revoked");
    let f = e.findings("m2").await;
    assert_eq!(f[0]["detail"]["mds_status"], "REVOKED", "{f:?}");
    assert_eq!(f[0]["detail"]["trusted_by"], "mds");
    assert!(e.credentials("m2").await.is_empty());
}

#[tokio::test]
async fn a_stale_blob_proves_nothing() {
    use keygate::attestation::testing::{entry, payload};
    let pki = TestPki::new("fido");
    let (tmp, sim_ca) = prepared(&pki);
    let dir = tmp.path().to_path_buf();
    let stale = pki.sign_blob(&payload(
        1,
        date_in(-1),
        vec![entry(
            SIM_AAGUID,
            "Simulated Key",
            &[&sim_ca],
            "FIDO_CERTIFIED_L1",
        )],
    ));
    std::fs::write(dir.join("mds-blob.jwt"), stale).unwrap();
    let e = Env::start_in(tmp, &mds_toml(&dir, "mode = \"enforce\"")).await;
    let v = e.enroll("m3").await;
    assert_eq!(rejected(&v), "untrusted");
    let f = e.findings("m3").await;
    assert_eq!(f[0]["detail"]["mds"], "stale", "{f:?}");
}

#[tokio::test]
async fn mds_update_installs_verified_blobs_into_a_running_keygate() {
    let pki = TestPki::new("fido");
    let (tmp, sim_ca) = prepared(&pki);
    let dir = tmp.path().to_path_buf();
    let e = Env::start_in(tmp, &mds_toml(&dir, "mode = \"enforce\"")).await;
    // No BLOB yet: the key's model is not proven.
    assert_eq!(rejected(&e.enroll("u1").await), "untrusted");

    let out = mds_update(
        &dir,
        &sim_blob(&pki, 5, &sim_ca, "FIDO_CERTIFIED_L1"),
        "b5.jwt",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("installed FIDO metadata BLOB no 5"),
        "{}",
        text(&out)
    );
    let installed = dir.join("mds-blob.jwt");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&installed).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let v = e.enroll("u2").await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(
        v["result"]["attestation"]["model"],
        "Simulated Key (from MDS)"
    );

    let out = mds_update(&dir, &sim_blob(&pki, 6, &sim_ca, "REVOKED"), "b6.jwt");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("replacing no 5"), "{}", text(&out));
    assert_eq!(rejected(&e.enroll("u3").await), "revoked");

    // Each bad BLOB is refused by name and leaves no 6 in place.
    let good = sim_blob(&pki, 7, &sim_ca, "FIDO_CERTIFIED_L1");
    let (head, rest) = good.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let forged_payload = good.split('.').nth(1).unwrap().replace('A', "B");
    let cases = [
        (
            sim_blob(&pki, 4, &sim_ca, "FIDO_CERTIFIED_L1"),
            "older than the installed no 6",
        ),
        (
            format!("{head}.{forged_payload}.{signature}"),
            "signature does not verify",
        ),
        (
            sim_blob(&TestPki::new("impostor"), 8, &sim_ca, "FIDO_CERTIFIED_L1"),
            "not signed under the configured root",
        ),
        (
            pki.sign_blob(&keygate::attestation::testing::payload(
                9,
                date_in(-2),
                vec![],
            )),
            "stale",
        ),
        ("garbage".to_string(), "malformed"),
    ];
    let before = std::fs::read(&installed).unwrap();
    for (blob, why) in cases {
        let out = mds_update(&dir, &blob, "bad.jwt");
        assert!(!out.status.success(), "{why}: {}", text(&out));
        assert!(text(&out).contains(why), "{why}: {}", text(&out));
        assert_eq!(std::fs::read(&installed).unwrap(), before, "{why}");
    }
    assert_eq!(rejected(&e.enroll("u4").await), "revoked");
}

#[test]
fn check_config_reports_the_policy_and_refuses_a_blob_that_does_not_verify() {
    let pki = TestPki::new("fido");
    let (tmp, sim_ca) = prepared(&pki);
    let dir = tmp.path();
    let config = dir.join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n{}",
            dir.display(),
            mds_toml(
                dir,
                "mode = \"enforce\"\nallowed_aaguids = [\"6b657967-6174-652d-7369-6d2d6b657931\"]"
            )
        ),
    )
    .unwrap();
    let check = || {
        Command::new(BIN)
            .arg("check-config")
            .arg(&config)
            .output()
            .unwrap()
    };

    let out = check();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("attestation: enforce"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("none installed"), "{}", text(&out));

    std::fs::write(
        dir.join("mds-blob.jwt"),
        sim_blob(&pki, 3, &sim_ca, "FIDO_CERTIFIED_L1"),
    )
    .unwrap();
    let out = check();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("current, no 3"), "{}", text(&out));

    let impostor = sim_blob(&TestPki::new("impostor"), 4, &sim_ca, "FIDO_CERTIFIED_L1");
    std::fs::write(dir.join("mds-blob.jwt"), impostor).unwrap();
    let out = check();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("not signed under the configured root"),
        "{}",
        text(&out)
    );

    // A ca_files entry that is not a certificate.
    std::fs::write(
        &config,
        "[attestation]\nca_files = [\"/nonexistent/ca.pem\"]\n",
    )
    .unwrap();
    let out = check();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("attestation.ca_files[0]"),
        "{}",
        text(&out)
    );
}
