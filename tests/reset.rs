//! Factory reset at the kiosk through the HTTP API with the simulated key: the power-up
//! window, the touch, cancel, and what keygate does with the credentials it knew.

mod common;

use common::{code, enc, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn a_replugged_key_is_reset_and_its_credentials_revoked() {
    let s = TestServer::start().await;
    let key = s.sim_key().await;
    s.set_pin("123456").await;
    let e = s
        .enroll(json!({ "user": "r0100001", "display_name": "An Peeters", "pin": "123456", "discoverable": true }))
        .await;
    assert_eq!(e["state"], "succeeded", "{e}");
    let cred = e["result"]["credential"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let r = s.start_reset(&key).await;
    let id = r["id"].as_str().unwrap();
    s.replug(&key).await;
    let done = s.reset_ended(id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["revoked_credentials"], 1, "{done}");

    // The key: no PIN, no discoverable credentials.
    let (_, keys) = s.get("/v1/sim/keys").await;
    assert_eq!(keys["keys"][0]["pin_set"], false, "{keys}");
    assert_eq!(keys["keys"][0]["discoverable_credentials"], 0, "{keys}");
    // keygate: the credential is revoked because of the reset.
    let (_, c) = s
        .get(&format!("/v1/users/r0100001/credentials/{cred}"))
        .await;
    assert_eq!(c["credential"]["state"], "revoked", "{c}");
    assert_eq!(c["credential"]["state_reason"], "key_reset", "{c}");
    // A user-less assertion finds nothing on the key any more.
    let (_, a) = s.post("/v1/assertions?wait=true", json!({})).await;
    assert_ne!(a["state"], "succeeded", "{a}");
    // The audit log records the reset with its outcome.
    let (_, audit) = s.get("/v1/audit").await;
    let text = audit.to_string();
    assert!(
        text.contains("device.reset") && text.contains("succeeded"),
        "{audit}"
    );
}

/// A kiosk's port is used by many keys in turn, of the same model: the reset revokes the
/// credentials the reset key held, never those another key enrolled in the same port.
#[tokio::test]
async fn a_reset_revokes_only_what_the_key_held_not_what_its_port_saw() {
    let s = TestServer::start().await;
    let first = s.sim_key().await;
    s.set_pin("123456").await;
    let e = s
        .enroll(json!({ "user": "r0100001", "display_name": "An Peeters", "pin": "123456" }))
        .await;
    assert_eq!(e["state"], "succeeded", "{e}");
    let theirs = e["result"]["credential"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // That student leaves with their key; the next one plugs a key of the same model into
    // the same port, which gets the port's device id.
    let (st, v) = s.delete(&format!("/v1/sim/keys/{}", enc(&first))).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (st, v) = s
        .post("/v1/sim/keys", json!({ "touch": { "auto_after_ms": 0 } }))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let key = v["key"]["id"].as_str().unwrap().to_string();
    assert_eq!(key, first, "the port's id again");
    s.set_pin("123456").await;
    let mut ours = Vec::new();
    for (user, discoverable) in [("r0100002", false), ("r0100003", true), ("r0100004", false)] {
        let e = s
            .enroll(json!({
                "user": user, "display_name": "Bram Claes", "pin": "123456",
                "discoverable": discoverable,
            }))
            .await;
        assert_eq!(e["state"], "succeeded", "{e}");
        ours.push((
            user,
            e["result"]["credential"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        ));
    }

    let r = s.start_reset(&key).await;
    s.replug(&key).await;
    let done = s.reset_ended(r["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["revoked_credentials"], 3, "{done}");
    for (user, cred) in &ours {
        let (_, c) = s.get(&format!("/v1/users/{user}/credentials/{cred}")).await;
        assert_eq!(c["credential"]["state"], "revoked", "{c}");
        assert_eq!(c["credential"]["state_reason"], "key_reset", "{c}");
    }
    let (_, c) = s
        .get(&format!("/v1/users/r0100001/credentials/{theirs}"))
        .await;
    assert_eq!(
        c["credential"]["state"], "active",
        "another key's credential: {c}"
    );
}

#[tokio::test]
async fn a_key_back_after_its_window_fails_with_reset_window_missed() {
    let s = TestServer::start().await;
    let key = s.sim_key().await;
    s.set_pin("123456").await;
    // An older key model: a window so short the reset always arrives after it.
    s.configure_key(&key, json!({ "reset_window_ms": 0 })).await;
    let r = s.start_reset(&key).await;
    s.replug(&key).await;
    let done = s.reset_ended(r["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "reset_window_missed", "{done}");
    let (_, keys) = s.get("/v1/sim/keys").await;
    assert_eq!(
        keys["keys"][0]["pin_set"], true,
        "the key kept its PIN: {keys}"
    );
}

#[tokio::test]
async fn a_denied_touch_fails_and_a_reset_can_be_cancelled() {
    let s = TestServer::start().await;
    let key = s.sim_key().await;
    s.configure_key(&key, json!({ "touch": "deny" })).await;
    let r = s.start_reset(&key).await;
    s.replug(&key).await;
    let done = s.reset_ended(r["id"].as_str().unwrap()).await;
    assert_eq!(done["error"]["code"], "operation_denied", "{done}");

    // Cancel while waiting for the replug.
    let r = s.start_reset(&key).await;
    let id = r["id"].as_str().unwrap();
    let (st, v) = s.delete(&format!("/v1/resets/{id}")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "cancelled", "{v}");
    assert_eq!(v["error"]["code"], "cancelled", "{v}");

    // Cancel while the key waits for a touch.
    s.configure_key(&key, json!({ "touch": "never" })).await;
    let r = s.start_reset(&key).await;
    let id = r["id"].as_str().unwrap().to_string();
    s.replug(&key).await;
    let mut state = Value::Null;
    for _ in 0..200 {
        let (_, v) = s.get(&format!("/v1/resets/{id}")).await;
        state = v["state"].clone();
        if state == "waiting_touch" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(state, "waiting_touch");
    let (_, v) = s.delete(&format!("/v1/resets/{id}")).await;
    assert_eq!(v["state"], "cancelled", "{v}");
}

#[tokio::test]
async fn only_an_admin_may_reset_a_key() {
    let s = TestServer::start().await;
    let key = s.sim_key().await;
    let kiosk = s.kiosk.clone();
    let (st, v) = s
        .req(
            Method::POST,
            &format!("/v1/devices/{}/reset", enc(&key)),
            Some(&kiosk),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(code(&v), "forbidden");
    let (st, v) = s.get("/v1/resets/nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
}
