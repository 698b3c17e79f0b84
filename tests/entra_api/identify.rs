//! "Whose key is this?" for Entra passkeys, verified locally.

use super::*;

#[tokio::test]
async fn whose_key_is_this_finds_the_entra_user_and_catches_a_clone() {
    let e = env().await;
    let body = json!({ "pin": PIN, "target": "entra" });
    // Nothing enrolled into Entra yet.
    let (st, v) = e.s.post("/v1/assertions?wait=true", body.clone()).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "no_credentials"),
        "{v}"
    );
    let (_, enrolled) = enroll(&e.s, entra_enrollment()).await;
    assert_eq!(enrolled["state"], "succeeded", "{enrolled}");
    let original = e.s.sim_key().await;
    let (st, c) =
        e.s.post(&format!("/v1/sim/keys/{}/clone", enc(&original)), json!({}))
            .await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    let clone = c["key"]["id"].as_str().unwrap().to_string();

    let mut body = body;
    body["device"] = json!(original);
    let v = e.s.verify(body.clone()).await;
    assert_eq!(v["state"], "succeeded", "{v}");
    let r = &v["result"];
    assert_eq!(r["user"], "s1");
    assert_eq!(r["entra"]["upn"], UPN);
    assert_eq!(
        r["entra"]["method_id"],
        enrolled["result"]["entra"]["method_id"]
    );
    assert_eq!(
        r["entra"]["display_name"],
        enrolled["result"]["entra"]["display_name"]
    );
    assert_eq!(r["user_verified"], true);
    assert_eq!(
        e.fake.count(Route::CreationOptions),
        1,
        "verified locally, not by Graph"
    );
    // The clone presents a counter the original already passed.
    body["device"] = json!(clone);
    let v = e.s.verify(body).await;
    assert_eq!(v["error"]["code"], "possible_cloned_key", "{v}");
    let (_, audit) = e.s.get("/v1/audit?user=s1").await;
    let events = audit_events(&audit);
    assert!(
        events.contains(&"entra.passkey_verified".to_string()),
        "{events:?}"
    );
    assert!(
        events.contains(&"entra.possible_cloned_key".to_string()),
        "{events:?}"
    );

    // With a user named: only their Entra passkeys are asked for.
    let named = json!({ "user": "s1", "pin": PIN, "target": "entra", "device": original });
    let v = e.s.verify(named.clone()).await;
    assert_eq!(
        (v["state"].clone(), v["result"]["user"].clone()),
        (json!("succeeded"), json!("s1")),
        "{v}"
    );
    let mut other = named;
    other["user"] = json!("s2");
    let (st, v) = e.s.post("/v1/assertions", other).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "no_credentials"),
        "{v}"
    );

    // Without [entra]: not configured.
    let s = TestServer::start().await;
    let (st, v) = s
        .post("/v1/assertions", json!({ "pin": PIN, "target": "entra" }))
        .await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::NOT_IMPLEMENTED, "entra_not_configured")
    );
    let (st, v) = s.post("/v1/enrollments", entra_enrollment()).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::NOT_IMPLEMENTED, "entra_not_configured")
    );
}
