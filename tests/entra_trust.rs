//! Entra passkeys and the trust features, end to end: real HTTP to keygate, keygate's real
//! HTTP to the fake identity platform + Graph (tests/common/fake_entra.rs), the simulated key
//! speaking real CTAP2.
//!
//! - The key inventory (`GET /v1/keys`) lists Entra passkeys beside local credentials, in one
//!   order paged by one cursor, as JSON and CSV; `PATCH /v1/keys/entra:{id}` with `lost`
//!   deletes the passkey from the user's Entra account (the DELETE reaches Graph) and keeps it
//!   as lost, and a Graph failure changes nothing.
//! - `[attestation]` refuses an Entra enrollment whose key claims a refused AAGUID in GetInfo
//!   before Graph is asked for creationOptions; a key the lists allow goes on as before.

mod common;

use common::fake_entra::{self, graph_error, FakeEntra, FakeEntraOptions, Route};
use common::{code, TestServer};
use keygate::device::sim::SIM_AAGUID;
use reqwest::StatusCode;
use serde_json::{json, Value};

const PIN: &str = "1234";
const UPN: &str = "s1@student.odisee.be";
/// An AAGUID that is not the simulated key's.
const OTHER_AAGUID: &str = "ee882879-721c-4913-9775-3dfcce97072a";

struct Env {
    fake: FakeEntra,
    s: TestServer,
    dir: tempfile::TempDir,
}

/// A fake tenant with the user `s1`, a keygate pointed at it with `extra` after `[entra]`
/// (`{sim_ca}`: the simulated keys' attestation CA of the data dir), the simulated key with
/// PIN [`PIN`].
async fn env_with(extra: &str) -> Env {
    let fake = fake_entra::start(FakeEntraOptions::default()).await;
    fake.add_user(UPN, "Student One");
    let dir = tempfile::tempdir().unwrap();
    // The daemon makes the simulated keys' CA here at start.
    let ca = dir.path().join("sim").join("attestation-ca.pem");
    let extra = extra.replace("{sim_ca}", &ca.display().to_string());
    let s = TestServer::start_in(dir.path(), &format!("{}{extra}\n", fake.entra_toml())).await;
    s.set_pin(PIN).await;
    Env { fake, s, dir }
}

async fn enroll_into_entra(s: &TestServer) -> Value {
    let body =
        json!({ "user": "s1", "display_name": "Student One", "pin": PIN, "target": "entra" });
    let (_, v) = s.post("/v1/enrollments?wait=true", body).await;
    v
}

fn events(audit: &Value, event: &str) -> Vec<Value> {
    audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == event)
        .cloned()
        .collect()
}

/// Every key, walked page by page at `limit` (`query` added to each request).
async fn walk(s: &TestServer, query: &str, limit: usize) -> Vec<Value> {
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..50 {
        let cursor = after
            .as_deref()
            .map(|a| format!("&after={a}"))
            .unwrap_or_default();
        let (st, page) = s
            .get(&format!("/v1/keys?limit={limit}{query}{cursor}"))
            .await;
        assert_eq!(st, StatusCode::OK, "{page}");
        let got = page["keys"].as_array().unwrap();
        assert!(got.len() <= limit, "{page}");
        keys.extend(got.iter().cloned());
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => return keys,
        }
    }
    panic!("the pages never ended");
}

/// A local credential and an Entra passkey on the same key: both listed, told apart by kind,
/// in enrollment order (one AAGUID), paged by one cursor whatever the page size, filtered by
/// kind, and exported with the new columns.
#[tokio::test]
async fn entra_passkeys_are_listed_beside_local_keys() {
    let e = env_with("").await;
    let local =
        e.s.enroll(json!({ "user": "r1", "display_name": "Local One", "pin": PIN }))
            .await;
    assert_eq!(local["state"], "succeeded", "{local}");
    let entra = enroll_into_entra(&e.s).await;
    assert_eq!(entra["state"], "succeeded", "{entra}");
    let local_id = local["result"]["credential"]["id"].as_str().unwrap();
    let entra_cred = entra["result"]["credential"]["id"].as_str().unwrap();
    let method_id = entra["result"]["entra"]["method_id"].as_str().unwrap();

    let all = walk(&e.s, "", 100).await;
    assert_eq!(all.len(), 2, "{all:?}");
    let (l, k) = (&all[0], &all[1]);
    assert_eq!(
        (l["id"].as_str(), l["kind"].as_str()),
        (Some(local_id), Some("local"))
    );
    assert!(l["rp_id"].is_null() && l["entra"].is_null(), "{l}");
    assert_eq!(k["id"], format!("entra:{entra_cred}"));
    assert_eq!(k["kind"], "entra");
    assert_eq!(k["credential_id"], entra_cred);
    assert_eq!(k["rp_id"], "login.microsoft.com");
    assert_eq!(k["aaguid"], SIM_AAGUID.to_string());
    assert!(k["model"].as_str().is_some_and(|m| !m.is_empty()), "{k}");
    assert_eq!(k["owners"], json!(["s1"]));
    assert_eq!(k["state"], "active");
    assert_eq!(k["entra"]["upn"], UPN);
    assert_eq!(k["entra"]["method_id"], method_id);
    assert!(
        k["device"].as_str().is_some_and(|d| d.starts_with("sim:")),
        "{k}"
    );
    assert_eq!(k["first_seen"], k["last_seen"]);
    assert!(k["first_seen"].as_str().unwrap() >= l["first_seen"].as_str().unwrap());
    // One cursor over both kinds: the same order at every page size.
    assert_eq!(walk(&e.s, "", 1).await, all);
    let only_entra = walk(&e.s, "&kind=entra", 1).await;
    assert_eq!(only_entra, vec![k.clone()]);
    let only_local = walk(&e.s, "&kind=local&state=active", 1).await;
    assert_eq!(only_local, vec![l.clone()]);
    let by_model = walk(&e.s, &format!("&aaguid={SIM_AAGUID}"), 1).await;
    assert_eq!(by_model.len(), 2);

    // CSV: the kind and the Entra place in their columns.
    let text =
        e.s.client
            .get(format!("{}/v1/keys?format=csv", e.s.base))
            .bearer_auth(&e.s.admin)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let records: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    assert_eq!(records.len(), 2, "{text}");
    let row = &records[1];
    assert_eq!(&row[col("id")], format!("entra:{entra_cred}"));
    assert_eq!(&row[col("kind")], "entra");
    assert_eq!(&row[col("rp_id")], "login.microsoft.com");
    assert_eq!(&row[col("entra_upn")], UPN);
    assert_eq!(&row[col("entra_method_id")], method_id);
    assert_eq!(&records[0][col("kind")], "local");
    assert_eq!(&records[0][col("rp_id")], "");
}

/// `lost` on an Entra passkey deletes it from the user's Entra account (the DELETE reaches
/// Graph for its method id), keeps it listed as lost, audits it once; repeating it changes
/// and calls nothing; the key, which still holds the credential, is then an unknown
/// credential to "whose key is this?".
#[tokio::test]
async fn a_lost_entra_passkey_is_deleted_from_entra() {
    let e = env_with("").await;
    let entra = enroll_into_entra(&e.s).await;
    assert_eq!(entra["state"], "succeeded", "{entra}");
    let cred = entra["result"]["credential"]["id"].as_str().unwrap();
    let method_id = entra["result"]["entra"]["method_id"].as_str().unwrap();
    assert_eq!(e.fake.fido2_methods(UPN).len(), 1);
    // The credential id alone names a local key, and there is none.
    let (st, v) =
        e.s.patch(&format!("/v1/keys/{cred}"), json!({ "state": "lost" }))
            .await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "not_found"), "{v}");
    assert_eq!(e.fake.count(Route::DeleteFido2), 0);

    let id = format!("entra:{cred}");
    let (st, v) =
        e.s.patch(&format!("/v1/keys/{id}"), json!({ "state": "lost" }))
            .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["key"]["state"], "lost");
    assert_eq!(v["key"]["state_reason"], "lost");
    assert_eq!(v["key"]["kind"], "entra");
    let deletes = e.fake.requests_for(Route::DeleteFido2);
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].method, "DELETE");
    assert!(
        deletes[0]
            .path
            .ends_with(&format!("/fido2Methods/{method_id}")),
        "{:?}",
        deletes[0].path
    );
    assert!(e.fake.fido2_methods(UPN).is_empty());

    let (st, again) =
        e.s.patch(&format!("/v1/keys/{id}"), json!({ "state": "lost" }))
            .await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(again["key"], v["key"]);
    assert_eq!(e.fake.count(Route::DeleteFido2), 1);

    let (_, audit) = e.s.get("/v1/audit?user=s1").await;
    let revoked = events(&audit, "credential.revoked");
    assert_eq!(revoked.len(), 1, "{audit}");
    assert_eq!(revoked[0]["detail"]["reason"], "lost");
    assert_eq!(revoked[0]["detail"]["target"], "entra");
    assert_eq!(revoked[0]["detail"]["method_id"], method_id);
    assert_eq!(revoked[0]["detail"]["entra_method_deleted"], true);
    assert_eq!(revoked[0]["credential_id"], cred);
    let lost = walk(&e.s, "&state=lost", 10).await;
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0]["id"], id);
    assert!(walk(&e.s, "&state=active", 10).await.is_empty());

    // The key still holds the credential: "whose key is this?" no longer names its owner.
    let (st, a) =
        e.s.post(
            "/v1/assertions?wait=true",
            json!({ "pin": PIN, "target": "entra" }),
        )
        .await;
    assert!(st.is_success(), "{st} {a}");
    assert_eq!(a["state"], "failed", "{a}");
    assert_eq!(a["error"]["code"], "unknown_credential", "{a}");
    assert!(a["result"].is_null(), "{a}");
}

/// Graph refusing the DELETE: a clear `entra_*` error with the key's unchanged state, nothing
/// changed or audited here; the service desk's retry completes it. Without `[entra]` the
/// key cannot be marked lost either.
#[tokio::test]
async fn a_graph_failure_leaves_the_entra_passkey_active() {
    let e = env_with("").await;
    let entra = enroll_into_entra(&e.s).await;
    assert_eq!(entra["state"], "succeeded", "{entra}");
    let id = format!(
        "entra:{}",
        entra["result"]["credential"]["id"].as_str().unwrap()
    );
    e.fake.fail_next(
        Route::DeleteFido2,
        403,
        graph_error("accessDenied", "Request Authorization failed"),
        None,
    );
    let (st, v) =
        e.s.patch(&format!("/v1/keys/{id}"), json!({ "state": "lost" }))
            .await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::BAD_GATEWAY, "entra_forbidden"),
        "{v}"
    );
    assert_eq!(v["error"]["key_state"], "active", "{v}");
    assert_eq!(e.fake.count(Route::DeleteFido2), 1);
    assert_eq!(e.fake.fido2_methods(UPN).len(), 1);
    let keys = walk(&e.s, "&kind=entra", 10).await;
    assert_eq!(keys[0]["state"], "active");
    let (_, audit) = e.s.get("/v1/audit?user=s1").await;
    assert!(events(&audit, "credential.revoked").is_empty(), "{audit}");

    // A keygate on the same store without `[entra]`: nothing it can delete, nothing changes.
    let Env { fake, s, dir } = e;
    drop(s);
    let s = TestServer::start_in(dir.path(), "").await;
    let (st, v) = s
        .patch(&format!("/v1/keys/{id}"), json!({ "state": "lost" }))
        .await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::NOT_IMPLEMENTED, "entra_not_configured"),
        "{v}"
    );
    assert_eq!(walk(&s, "&kind=entra", 10).await[0]["state"], "active");
    drop(s);

    // Back with `[entra]`: the retry deletes it.
    let s = TestServer::start_in(dir.path(), &fake.entra_toml()).await;
    let (st, v) = s
        .patch(&format!("/v1/keys/{id}"), json!({ "state": "lost" }))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["key"]["state"], "lost");
    assert!(fake.fido2_methods(UPN).is_empty());
}

/// The enrollment's `attestation_rejected` reason.
fn rejected(v: &Value) -> &str {
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "attestation_rejected", "{v}");
    v["error"]["reason"].as_str().unwrap()
}

fn findings(audit: &Value) -> Vec<Value> {
    events(audit, "attestation.finding")
}

/// `enforce` with the simulated key's model blocked, or outside the allow list: refused from
/// the AAGUID it claims in GetInfo, before Graph is asked for anything (no creationOptions,
/// no registration), with the reason the full check gives and an audited finding.
#[tokio::test]
async fn a_refused_model_is_refused_before_graph() {
    let e = env_with(&format!(
        "[attestation]\nmode = \"enforce\"\nca_files = [\"{{sim_ca}}\"]\nblocked_aaguids = [\"{SIM_AAGUID}\"]"
    ))
    .await;
    let v = enroll_into_entra(&e.s).await;
    assert_eq!(rejected(&v), "blocked");
    assert_eq!(e.fake.count(Route::CreationOptions), 0);
    assert_eq!(e.fake.count(Route::RegisterFido2), 0);
    assert!(e.fake.fido2_methods(UPN).is_empty());
    let (_, audit) = e.s.get("/v1/audit?user=s1").await;
    let f = findings(&audit);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0]["detail"]["stage"], "get_info");
    assert_eq!(f[0]["detail"]["self_claimed"], true);
    assert_eq!(f[0]["detail"]["action"], "rejected");
    assert_eq!(f[0]["detail"]["target"], "entra");
    assert_eq!(f[0]["detail"]["aaguid"], SIM_AAGUID.to_string());

    let e = env_with(&format!(
        "[attestation]\nmode = \"enforce\"\nca_files = [\"{{sim_ca}}\"]\nallowed_aaguids = [\"{OTHER_AAGUID}\"]"
    ))
    .await;
    assert_eq!(rejected(&enroll_into_entra(&e.s).await), "not_allowed");
    assert_eq!(e.fake.count(Route::CreationOptions), 0);
}

/// Lists that do not refuse the key's claimed model let the enrollment go on to Graph as
/// before (the full check after makeCredential still decides); `monitor` audits the early
/// finding and goes on.
#[tokio::test]
async fn a_model_the_lists_do_not_refuse_goes_on_to_graph() {
    for lists in [
        format!("blocked_aaguids = [\"{OTHER_AAGUID}\"]"),
        format!("allowed_aaguids = [\"{SIM_AAGUID}\"]"),
    ] {
        let e = env_with(&format!(
            "[attestation]\nmode = \"enforce\"\nca_files = [\"{{sim_ca}}\"]\n{lists}"
        ))
        .await;
        let v = enroll_into_entra(&e.s).await;
        assert_eq!(v["state"], "succeeded", "{lists}: {v}");
        assert_eq!(v["result"]["attestation"]["trusted"], true, "{v}");
        assert_eq!(e.fake.count(Route::CreationOptions), 1);
        assert_eq!(e.fake.count(Route::RegisterFido2), 1);
        let (_, audit) = e.s.get("/v1/audit?user=s1").await;
        assert!(findings(&audit).is_empty(), "{audit}");
    }

    let e = env_with(&format!(
        "[attestation]\nmode = \"monitor\"\nca_files = [\"{{sim_ca}}\"]\nblocked_aaguids = [\"{SIM_AAGUID}\"]"
    ))
    .await;
    let v = enroll_into_entra(&e.s).await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(e.fake.count(Route::CreationOptions), 1);
    assert_eq!(e.fake.count(Route::RegisterFido2), 1);
    let (_, audit) = e.s.get("/v1/audit?user=s1").await;
    let stages: Vec<(String, String)> = findings(&audit)
        .iter()
        .map(|f| {
            (
                f["detail"]["stage"].as_str().unwrap().to_string(),
                f["detail"]["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Both stages found the blocked model; neither refused it.
    assert_eq!(stages.len(), 2, "{audit}");
    assert!(stages.contains(&("get_info".into(), "recorded".into())));
    assert!(stages.contains(&("attestation".into(), "recorded".into())));
}

/// Reset the (only) simulated key at the kiosk: start, replug, wait for the end.
async fn reset_the_key(s: &TestServer) -> Value {
    let key = s.sim_key().await;
    let r = s.start_reset(&key).await;
    s.replug(&key).await;
    s.reset_ended(r["id"].as_str().unwrap()).await
}

/// A factory reset kills the key's Entra passkey: keygate deletes it from the user's Entra
/// account (the DELETE reaches Graph for its method id) and shows it `reset`; when Graph
/// refuses, the reset still succeeds and the passkey is `reset` here, audited with
/// `entra_method_deleted: false` for the service desk to delete it in Entra.
#[tokio::test]
async fn a_reset_keys_entra_passkey_is_deleted_from_entra() {
    for graph_refuses in [false, true] {
        let e = env_with("").await;
        let entra = enroll_into_entra(&e.s).await;
        assert_eq!(entra["state"], "succeeded", "{entra}");
        let cred = entra["result"]["credential"]["id"].as_str().unwrap();
        let method_id = entra["result"]["entra"]["method_id"].as_str().unwrap();
        if graph_refuses {
            e.fake.fail_next(
                Route::DeleteFido2,
                403,
                graph_error("accessDenied", "Request Authorization failed"),
                None,
            );
        }
        let done = reset_the_key(&e.s).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["entra_passkeys_reset"], 1, "{done}");
        let deletes = e.fake.requests_for(Route::DeleteFido2);
        assert_eq!(deletes.len(), 1);
        assert!(deletes[0]
            .path
            .ends_with(&format!("/fido2Methods/{method_id}")));
        assert_eq!(e.fake.fido2_methods(UPN).len(), usize::from(graph_refuses));

        let reset = walk(&e.s, "&state=reset", 10).await;
        assert_eq!(reset.len(), 1, "{reset:?}");
        assert_eq!(reset[0]["id"], format!("entra:{cred}"));
        assert_eq!(reset[0]["state_reason"], "key_reset");
        assert!(walk(&e.s, "&state=active", 10).await.is_empty());
        let (_, audit) = e.s.get("/v1/audit?user=s1").await;
        let revoked = events(&audit, "credential.revoked");
        assert_eq!(revoked.len(), 1, "{audit}");
        assert_eq!(revoked[0]["detail"]["reason"], "key_reset");
        assert_eq!(revoked[0]["detail"]["target"], "entra");
        assert_eq!(revoked[0]["detail"]["method_id"], method_id);
        assert_eq!(revoked[0]["detail"]["entra_method_deleted"], !graph_refuses);
    }
}
