//! Entra enrollments run the same policy, before the registration is posted to Graph: a key
//! keygate refuses is explained at once and Graph never sees it.

use common::fake_entra::{self, FakeEntraOptions, Route};

use super::*;

const UPN: &str = "s1@student.odisee.be";

async fn entra_env(attestation: &str) -> (fake_entra::FakeEntra, Env) {
    let fake = fake_entra::start(FakeEntraOptions::default()).await;
    fake.add_user(UPN, "Student One");
    let e = Env::start(&format!(
        "{}\n[attestation]\n{attestation}\n",
        fake.entra_toml()
    ))
    .await;
    (fake, e)
}

async fn enroll_into_entra(e: &Env) -> Value {
    let body =
        json!({ "user": "s1", "display_name": "Student One", "pin": PIN, "target": "entra" });
    let (_, v) = e.s.post("/v1/enrollments?wait=true", body).await;
    v
}

#[tokio::test]
async fn a_refused_key_never_reaches_graph() {
    let (fake, e) = entra_env("mode = \"enforce\"").await;
    let v = enroll_into_entra(&e).await;
    assert_eq!(rejected(&v), "untrusted");
    // Graph issued its challenge (the key needs it to attest), but got no registration.
    assert_eq!(fake.count(Route::CreationOptions), 1);
    assert_eq!(fake.count(Route::RegisterFido2), 0);
    assert!(fake.fido2_methods(UPN).is_empty());
    let f = e.findings("s1").await;
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0]["detail"]["target"], "entra");
    assert_eq!(f[0]["detail"]["aaguid"], SIM_AAGUID.to_string());

    let blocked = format!(
        "mode = \"enforce\"\nca_files = [\"{{sim_ca}}\"]\nblocked_aaguids = [\"{SIM_AAGUID}\"]"
    );
    let (fake, e) = entra_env(&blocked).await;
    assert_eq!(rejected(&enroll_into_entra(&e).await), "blocked");
    assert_eq!(fake.count(Route::RegisterFido2), 0);
}

#[tokio::test]
async fn an_accepted_or_monitored_key_is_registered_with_graph() {
    let (fake, e) = entra_env("mode = \"enforce\"\nca_files = [\"{sim_ca}\"]").await;
    let v = enroll_into_entra(&e).await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["result"]["attestation"]["trusted"], true, "{v}");
    assert_eq!(fake.count(Route::RegisterFido2), 1);
    assert!(e.findings("s1").await.is_empty());

    let (fake, e) = entra_env("mode = \"monitor\"").await;
    let v = enroll_into_entra(&e).await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(fake.count(Route::RegisterFido2), 1);
    let f = e.findings("s1").await;
    assert_eq!(f[0]["detail"]["action"], "recorded", "{f:?}");
    assert_eq!(f[0]["detail"]["target"], "entra");
}

/// A model the current Metadata Service BLOB reports revoked is refused on the AAGUID the key
/// claims in GetInfo, before Graph is asked for creationOptions (whose 5-minute window the
/// student would otherwise spend touching a key keygate then refuses); the same key with its
/// model certified goes on to Graph and is registered.
#[tokio::test]
async fn a_model_the_mds_revoked_is_refused_before_graph() {
    let pki = TestPki::new("fido");
    for (status, refused) in [("REVOKED", true), ("FIDO_CERTIFIED_L1", false)] {
        let fake = fake_entra::start(FakeEntraOptions::default()).await;
        fake.add_user(UPN, "Student One");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let sim_ca = sim_ca_pem(&dir);
        std::fs::write(dir.join("mds-root.pem"), &pki.root_pem).unwrap();
        std::fs::write(dir.join("mds-blob.jwt"), sim_blob(&pki, 1, &sim_ca, status)).unwrap();
        let toml = format!(
            "{}\n[attestation]\nmode = \"enforce\"\nmds_root_ca = \"{}\"\n",
            fake.entra_toml(),
            dir.join("mds-root.pem").display()
        );
        let e = Env::start_in(tmp, &toml).await;
        let v = enroll_into_entra(&e).await;
        if refused {
            assert_eq!(rejected(&v), "revoked");
            assert_eq!(
                fake.count(Route::CreationOptions),
                0,
                "refused before Graph"
            );
            let f = e.findings("s1").await;
            assert_eq!(f.len(), 1, "{f:?}");
            assert_eq!(f[0]["detail"]["stage"], "get_info");
            assert_eq!(f[0]["detail"]["mds_status"], "REVOKED");
        } else {
            assert_eq!(v["state"], "succeeded", "{v}");
            assert_eq!(fake.count(Route::RegisterFido2), 1);
            assert!(e.findings("s1").await.is_empty());
        }
    }
}
