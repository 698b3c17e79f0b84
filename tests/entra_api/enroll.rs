//! A key enrolled into Entra: what Graph receives and keygate keeps, the default target, the
//! exclude list, and the PIN checked before Graph.

use super::*;

#[tokio::test]
async fn a_key_is_enrolled_into_entra_and_registered_as_entra_verifies_it() {
    let e = env_with(
        FakeEntraOptions::default(),
        "display_name_template = \"{model} of {user}\"",
    )
    .await;
    let (st, v) = enroll(&e.s, entra_enrollment()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "succeeded", "{v}");
    let result = &v["result"];
    let registered = e.fake.fido2_methods(UPN);
    assert_eq!(registered.len(), 1, "{registered:?}");
    assert_eq!(result["entra"]["method_id"], registered[0]["id"]);
    assert_eq!(result["upn"], UPN);
    let model = result["entra"]["model"].as_str().unwrap().to_string();
    assert_eq!(result["entra"]["display_name"], format!("{model} of s1"));
    assert_eq!(result["entra"]["attestation_level"], "attested");
    assert_eq!(result["credential"]["rp_id"], "login.microsoft.com");
    assert_eq!(result["credential"]["cred_protect"], 1);
    assert_eq!(result["credential"]["hmac_secret"], true);
    // The view showed Graph's window.
    assert_eq!(v["entra"]["upn"], UPN);
    assert!(v["entra"]["challenge_expires_at"].is_string(), "{v}");

    // What Graph received: the template's name, the extension results, Entra's origin.
    let posted = e.fake.last_registration().unwrap();
    assert_eq!(posted["displayName"], format!("{model} of s1"));
    let cred = &posted["publicKeyCredential"];
    assert_eq!(
        cred["clientExtensionResults"],
        json!({ "hmacCreateSecret": true, "credProtect": 1 })
    );
    let cd: Value = serde_json::from_slice(&unb64(&cred["response"]["clientDataJSON"])).unwrap();
    assert_eq!(cd["type"], "webauthn.create");
    assert_eq!(cd["origin"], "https://login.microsoft.com");
    assert_eq!(unb64(&cred["id"]), e.fake.credential_ids(UPN)[0]);
    assert_eq!(e.fake.count(Route::CreationOptions), 1);
    assert_eq!(e.fake.count(Route::RegisterFido2), 1);

    // The local record: the user row, no local credential, the audit line without secrets.
    let (st, u) = e.s.get("/v1/users/s1").await;
    assert_eq!(st, StatusCode::OK, "{u}");
    assert_eq!(u["user"]["display_name"], "Student One");
    assert_eq!(u["credentials"], json!([]));
    let (_, audit) = e.s.get("/v1/audit?user=s1").await;
    assert!(audit_events(&audit).contains(&"entra.passkey_registered".to_string()));
    let line = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["event"] == "entra.passkey_registered")
        .unwrap();
    assert_eq!(line["detail"]["method_id"], registered[0]["id"]);
    assert_eq!(line["ceremony_id"], v["id"]);
    assert!(!audit.to_string().contains(PIN), "{audit}");
}

#[tokio::test]
async fn the_target_defaults_to_local_and_the_kiosk_is_told_its_target() {
    let e = env_with(FakeEntraOptions::default(), "").await;
    let (st, v) = enroll(
        &e.s,
        json!({ "user": "s2", "display_name": "Two", "pin": PIN }),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["result"]["credential"]["user"], "s2");
    assert!(v.get("entra").is_none(), "{v}");
    assert!(e.fake.requests().is_empty(), "Graph was not asked");
    let (_, cfg) = e.s.get("/v1/kiosk/config").await;
    assert_eq!(
        (cfg["enroll_target"].clone(), cfg["entra"].clone()),
        (json!("local"), json!(true))
    );

    let fake = fake_entra::start(FakeEntraOptions::default()).await;
    let s = TestServer::start_with(&format!(
        "[kiosk]\nenroll_target = \"entra\"\n{}",
        fake.entra_toml()
    ))
    .await;
    let (_, cfg) = s.get("/v1/kiosk/config").await;
    assert_eq!(cfg["enroll_target"], "entra", "{cfg}");
}

#[tokio::test]
async fn the_same_key_twice_is_credential_excluded_by_graphs_exclude_list() {
    let e = env().await;
    let (_, v) = enroll(&e.s, entra_enrollment()).await;
    assert_eq!(v["state"], "succeeded", "{v}");
    let (_, v) = enroll(&e.s, entra_enrollment()).await;
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "credential_excluded", "{v}");
    assert_eq!(e.fake.count(Route::RegisterFido2), 1);
    assert_eq!(e.fake.fido2_methods(UPN).len(), 1);
}

#[tokio::test]
async fn the_pin_is_checked_before_graph_and_a_wrong_one_costs_no_graph_call() {
    let e = env().await;
    // A wrong PIN in the request: checked on the key (no touch), asked for again.
    let mut body = entra_enrollment();
    body["pin"] = json!("9999");
    let (_, v) = enroll(&e.s, body.clone()).await;
    assert_eq!(v["state"], "needs_pin", "{v}");
    assert_eq!(v["error"]["code"], "pin_invalid", "{v}");
    assert_eq!(v["error"]["retries_left"], 7, "{v}");
    assert_eq!(v["pin_retries"], 7, "{v}");
    assert!(v.get("entra").is_none(), "no window yet: {v}");
    assert!(e.fake.requests().is_empty(), "Graph was not asked");
    let id = v["id"].as_str().unwrap().to_string();
    let (_, v) =
        e.s.post(
            &format!("/v1/enrollments/{id}/pin?wait=true"),
            json!({ "pin": "8888" }),
        )
        .await;
    assert_eq!(
        (v["state"].clone(), v["error"]["retries_left"].clone()),
        (json!("needs_pin"), json!(6)),
        "{v}"
    );
    assert_eq!(e.fake.count(Route::CreationOptions), 0);
    let (_, v) =
        e.s.post(
            &format!("/v1/enrollments/{id}/pin?wait=true"),
            json!({ "pin": PIN }),
        )
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(e.fake.count(Route::CreationOptions), 1);
    assert_eq!(e.fake.fido2_methods(UPN).len(), 1);

    // No PIN in the request: asked for before Graph is.
    let e = env().await;
    body.as_object_mut().unwrap().remove("pin");
    let (_, v) = enroll(&e.s, body).await;
    assert_eq!(v["state"], "needs_pin", "{v}");
    assert!(v["error"].is_null(), "{v}");
    assert!(e.fake.requests().is_empty());
    let id = v["id"].as_str().unwrap().to_string();
    let (st, v) = e.s.delete(&format!("/v1/enrollments/{id}")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, v) = e.s.get(&format!("/v1/enrollments/{id}?wait=true")).await;
    assert_eq!(v["state"], "cancelled", "{v}");
    assert!(e.fake.requests().is_empty());
}
