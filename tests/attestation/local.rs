//! Local enrollments under each mode, the lists, and self attestation.

use super::*;

#[tokio::test]
async fn enforce_accepts_a_key_that_chains_to_a_configured_root() {
    let e = Env::start("[attestation]\nmode = \"enforce\"\nca_files = [\"{sim_ca}\"]\n").await;
    let v = e.enroll("r1").await;
    assert_eq!(v["state"], "succeeded", "{v}");
    let a = &v["result"]["attestation"];
    assert_eq!(a["trusted"], true, "{v}");
    assert_eq!(a["aaguid"], SIM_AAGUID.to_string());
    assert_eq!(a["findings"], json!([]));
    assert_eq!(e.credentials("r1").await.len(), 1);
    assert!(e.findings("r1").await.is_empty());
}

#[tokio::test]
async fn enforce_refuses_an_unproven_model_and_stores_nothing() {
    // The simulated key's CA is not configured: its chain leads nowhere trusted.
    let e = Env::start("[attestation]\nmode = \"enforce\"\n").await;
    let v = e.enroll("r2").await;
    assert_eq!(rejected(&v), "untrusted");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("not proven"), "{message}");
    assert!(e.credentials("r2").await.is_empty());
    let f = e.findings("r2").await;
    assert_eq!(f.len(), 1, "{f:?}");
    let d = &f[0]["detail"];
    assert_eq!(d["action"], "rejected");
    assert_eq!(d["reason"], "untrusted");
    assert_eq!(d["aaguid"], SIM_AAGUID.to_string());
    assert_eq!(d["attestation"], "certificate");
    assert_eq!(d["target"], "local");
    assert_eq!(f[0]["ceremony_id"], v["id"]);

    // Self attestation proves nothing, even with the CA configured.
    let e = Env::start("[attestation]\nmode = \"enforce\"\nca_files = [\"{sim_ca}\"]\n").await;
    e.self_attest().await;
    let v = e.enroll("r3").await;
    assert_eq!(rejected(&v), "untrusted");
    let f = e.findings("r3").await;
    assert_eq!(f[0]["detail"]["attestation"], "self", "{f:?}");
    assert_eq!(f[0]["detail"]["format"], "packed");
}

#[tokio::test]
async fn monitor_enrolls_and_audits_the_finding_off_does_neither() {
    // monitor is the default.
    let e = Env::start("").await;
    e.self_attest().await;
    let v = e.enroll("r4").await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["result"]["attestation"]["trusted"], false);
    assert_eq!(v["result"]["attestation"]["aaguid"], Value::Null);
    assert_eq!(v["result"]["attestation"]["findings"], json!(["untrusted"]));
    let f = e.findings("r4").await;
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0]["detail"]["action"], "recorded");
    assert_eq!(f[0]["detail"]["mode"], "monitor");
    assert_eq!(f[0]["detail"]["aaguid"], SIM_AAGUID.to_string());
    assert_eq!(
        f[0]["credential_id"], v["result"]["credential"]["id"],
        "{f:?}"
    );

    let e = Env::start("[attestation]\nmode = \"off\"\n").await;
    e.self_attest().await;
    let v = e.enroll("r5").await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert!(v["result"].get("attestation").is_none(), "{v}");
    assert!(e.findings("r5").await.is_empty());
}

#[tokio::test]
async fn the_allow_and_block_lists_judge_the_proven_model() {
    let other = "ee882879-721c-4913-9775-3dfcce97072a";
    let cases = [
        (
            format!("allowed_aaguids = [\"{other}\"]"),
            Some("not_allowed"),
        ),
        (
            format!("allowed_aaguids = [\"{other}\", \"{SIM_AAGUID}\"]"),
            None,
        ),
        (
            format!("blocked_aaguids = [\"{SIM_AAGUID}\"]"),
            Some("blocked"),
        ),
        (format!("blocked_aaguids = [\"{other}\"]"), None),
    ];
    for (list, want) in cases {
        let e = Env::start(&format!(
            "[attestation]\nmode = \"enforce\"\nca_files = [\"{{sim_ca}}\"]\n{list}\n"
        ))
        .await;
        let v = e.enroll("r6").await;
        match want {
            Some(reason) => {
                assert_eq!(rejected(&v), reason, "{list}");
                assert!(e.credentials("r6").await.is_empty());
            }
            None => assert_eq!(v["state"], "succeeded", "{list}: {v}"),
        }
    }
    // monitor with the key blocked: enrolled, the finding recorded with its reason.
    let e = Env::start(&format!(
        "[attestation]\nca_files = [\"{{sim_ca}}\"]\nblocked_aaguids = [\"{SIM_AAGUID}\"]\n"
    ))
    .await;
    let v = e.enroll("r7").await;
    assert_eq!(v["state"], "succeeded", "{v}");
    let f = e.findings("r7").await;
    assert_eq!(f[0]["detail"]["reason"], "blocked", "{f:?}");
    assert_eq!(f[0]["detail"]["trusted_by"], "ca_files");
}
