//! Black-box tests of the core API: real HTTP, real SQLite files, simulated keys speaking real
//! CTAP2 CBOR. Each test starts its own daemon on a loopback port.

mod common;

use common::{code, enc, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn enroll_body(user: &str) -> Value {
    json!({ "user": user, "display_name": "An Peeters", "nickname": "blauwe sleutel", "pin": "1234" })
}

async fn enrolled(s: &TestServer, user: &str) -> Value {
    let v = s.enroll(enroll_body(user)).await;
    assert_eq!(v["state"], "succeeded", "{v}");
    v
}

#[tokio::test]
async fn enroll_then_verify_and_check_outside_keygate() {
    let s = TestServer::start().await;
    s.set_pin("1234").await;
    let v = enrolled(&s, "r0123456").await;
    let cred = &v["result"]["credential"];
    assert_eq!(cred["nickname"], "blauwe sleutel");
    assert_eq!(cred["attestation_format"], "packed");
    assert_eq!(cred["attested"], true);
    assert_eq!(cred["user_verified"], true);
    assert_eq!(cred["state"], "active");
    let reg = &v["result"]["registration_response"];
    assert_eq!(reg["type"], "public-key");
    assert!(reg["response"]["attestationObject"].as_str().unwrap().len() > 100);
    let cdj = common_b64(reg["response"]["clientDataJSON"].as_str().unwrap());
    let cd: Value = serde_json::from_slice(&cdj).unwrap();
    assert_eq!(cd["type"], "webauthn.create");
    assert_eq!(cd["origin"], "https://keygate.local");

    let a = s.verify(json!({ "user": "r0123456", "pin": "1234" })).await;
    assert_eq!(a["state"], "succeeded", "{a}");
    assert_eq!(a["result"]["user"], "r0123456");
    assert_eq!(a["result"]["user_verified"], true);
    assert!(a["result"]["counter"].as_u64().unwrap() >= 1);

    // Check the assertion independently with the credential's COSE public key.
    let id = cred["id"].as_str().unwrap();
    let (st, c) = s.get(&format!("/v1/users/r0123456/credentials/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    let cose = common_b64(c["credential"]["public_key_cose"].as_str().unwrap());
    let resp = &a["result"]["authentication_response"]["response"];
    let ad = common_b64(resp["authenticatorData"].as_str().unwrap());
    let cdj = common_b64(resp["clientDataJSON"].as_str().unwrap());
    let sig = common_b64(resp["signature"].as_str().unwrap());
    assert!(verify_es256(&cose, &ad, &cdj, &sig));
    let mut bad = sig.clone();
    let n = bad.len() - 3;
    bad[n] ^= 1;
    assert!(!verify_es256(&cose, &ad, &cdj, &bad));

    // The audit log tells the story.
    let (_, audit) = s.get("/v1/audit?user=r0123456").await;
    let events: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(events.contains(&"credential.enrolled"), "{events:?}");
    assert!(events.contains(&"credential.verified"), "{events:?}");
}

fn common_b64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

fn verify_es256(cose: &[u8], auth_data: &[u8], cdj: &[u8], sig: &[u8]) -> bool {
    use p256::ecdsa::signature::Verifier;
    use sha2::Digest;
    let key: ciborium::Value = ciborium::de::from_reader(cose).unwrap();
    let map = key.as_map().unwrap();
    let get = |k: i64| {
        map.iter()
            .find(|(kk, _)| kk.as_integer() == Some(k.into()))
            .and_then(|(_, v)| v.as_bytes().cloned())
            .unwrap()
    };
    let (x, y) = (get(-2), get(-3));
    let mut sec1 = vec![4u8];
    sec1.extend(x);
    sec1.extend(y);
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).unwrap();
    let mut msg = auth_data.to_vec();
    msg.extend(sha2::Sha256::digest(cdj));
    let Ok(sig) = p256::ecdsa::Signature::from_der(sig) else {
        return false;
    };
    vk.verify(&msg, &sig).is_ok()
}

#[tokio::test]
async fn pin_is_asked_for_and_wrong_pins_count_down() {
    let s = TestServer::start().await;
    s.set_pin("1234").await;
    let (st, v) = s
        .post(
            "/v1/enrollments?wait=true",
            json!({ "user": "r1", "display_name": "R One" }),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["state"], "needs_pin");
    assert_eq!(v["pin_retries"], 8);
    let id = v["id"].as_str().unwrap().to_string();
    let (st, v) = s
        .post(
            &format!("/v1/enrollments/{id}/pin?wait=true"),
            json!({ "pin": "9999" }),
        )
        .await;
    assert!(st.is_success(), "{v}");
    assert_eq!(v["state"], "needs_pin", "{v}");
    assert_eq!(v["error"]["code"], "pin_invalid");
    assert_eq!(v["error"]["retries_left"], 7);
    assert_eq!(v["pin_retries"], 7);
    // A PIN that breaks the policy is refused without touching the key.
    let (st, e) = s
        .post(&format!("/v1/enrollments/{id}/pin"), json!({ "pin": "12" }))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&e), "pin_policy_violation");
    let (_, v) = s
        .post(
            &format!("/v1/enrollments/{id}/pin?wait=true"),
            json!({ "pin": "1234" }),
        )
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    // Retries reset after a correct PIN.
    let (_, d) = s.get("/v1/devices").await;
    assert_eq!(d["devices"][0]["pin_retries"], 8, "{d}");
}

#[tokio::test]
async fn sse_streams_progress_events() {
    let s = TestServer::start().await;
    s.set_pin("1234").await;
    let (_, v) = s.post("/v1/enrollments", enroll_body("r2")).await;
    let id = v["id"].as_str().unwrap();
    let resp = s
        .client
        .get(format!("{}/v1/enrollments/{id}/events", s.base))
        // The token that started the ceremony (another token's stream is a 404 now).
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let body = resp.text().await.unwrap();
    assert!(body.contains("event: waiting_touch"), "{body}");
    assert!(body.contains("event: done"), "{body}");
}

#[tokio::test]
async fn userless_verification_finds_the_user() {
    let s = TestServer::start().await;
    s.set_pin("1234").await;
    let mut b = enroll_body("r0999");
    b["discoverable"] = json!(true);
    let v = s.enroll(b).await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["result"]["credential"]["discoverable"], true);
    let a = s.verify(json!({ "pin": "1234" })).await;
    assert_eq!(a["state"], "succeeded", "{a}");
    assert_eq!(a["result"]["user"], "r0999");
    assert!(a["result"]["authentication_response"]["response"]["userHandle"].is_string());
}

#[tokio::test]
async fn second_key_excluded_key_and_multiple_devices() {
    let s = TestServer::start().await;
    s.set_pin("1234").await;
    enrolled(&s, "r3").await;
    // The same key again for the same user: excluded.
    let v = s.enroll(enroll_body("r3")).await;
    assert_eq!(v["state"], "failed");
    assert_eq!(v["error"]["code"], "credential_excluded");

    let (st, k) = s.post("/v1/sim/keys", json!({ "pin": "5678" })).await;
    assert_eq!(st, StatusCode::CREATED, "{k}");
    let second = k["key"]["id"].as_str().unwrap().to_string();
    let (st, e) = s.post("/v1/enrollments", enroll_body("r3")).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(code(&e), "multiple_devices");
    let mut b = enroll_body("r3");
    b["device"] = json!(second);
    b["pin"] = json!("5678");
    let v = s.enroll(b).await;
    assert_eq!(v["state"], "succeeded", "{v}");
    let (_, l) = s.get("/v1/users/r3/credentials").await;
    assert_eq!(l["credentials"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn device_pin_set_change_wrong_and_blocked() {
    let s = TestServer::start().await;
    let id = s.sim_key().await;
    let path = format!("/v1/devices/{}/pin", enc(&id));
    let (st, e) = s.post(&path, json!({ "new_pin": "12" })).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&e), "pin_policy_violation");
    let (st, v) = s.post(&path, json!({ "new_pin": "1234" })).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["device"]["pin_set"], true);
    // Setting again without the current PIN is refused.
    let (st, e) = s.post(&path, json!({ "new_pin": "4321" })).await;
    assert_eq!(code(&e), "pin_required", "{st} {e}");
    let (st, e) = s
        .post(&path, json!({ "new_pin": "4321", "current_pin": "0000" }))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&e), "pin_invalid");
    assert_eq!(e["error"]["retries_left"], 7);
    let (st, _) = s
        .post(&path, json!({ "new_pin": "4321", "current_pin": "1234" }))
        .await;
    assert_eq!(st, StatusCode::OK);
    // Three wrong PINs in a row: the key needs a power cycle.
    for _ in 0..2 {
        let (_, e) = s
            .post(&path, json!({ "new_pin": "5555", "current_pin": "0000" }))
            .await;
        assert_eq!(code(&e), "pin_invalid");
    }
    let (st, e) = s
        .post(&path, json!({ "new_pin": "5555", "current_pin": "0000" }))
        .await;
    assert_eq!(code(&e), "pin_auth_blocked", "{e}");
    assert_eq!(st, StatusCode::LOCKED);
    // Replug and keep going until the PIN is blocked for good (8 retries in all).
    let mut last = String::new();
    for _ in 0..3 {
        s.post(&format!("/v1/sim/keys/{}/replug", enc(&id)), json!({}))
            .await;
        for _ in 0..3 {
            let (_, e) = s
                .post(&path, json!({ "new_pin": "5555", "current_pin": "0000" }))
                .await;
            last = code(&e).to_string();
            if last == "pin_blocked" || last == "pin_auth_blocked" {
                break;
            }
        }
        if last == "pin_blocked" {
            break;
        }
    }
    assert_eq!(last, "pin_blocked");
    let (_, e) = s
        .post(&path, json!({ "new_pin": "5555", "current_pin": "4321" }))
        .await;
    assert_eq!(code(&e), "pin_blocked");
}

#[tokio::test]
async fn touch_timeout_cancel_and_unplug() {
    let s = TestServer::start().await;
    s.set_pin("1234").await;
    let key = s.sim_key().await;
    s.configure_key(&key, json!({ "touch": "never" })).await;

    let mut b = enroll_body("r4");
    b["timeout_ms"] = json!(400);
    let v = s.enroll(b).await;
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "touch_timeout");

    // Cancel while waiting for the touch.
    let (st, v) = s.post("/v1/enrollments", enroll_body("r4")).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let id = v["id"].as_str().unwrap().to_string();
    let (_, v) = s.get(&format!("/v1/enrollments/{id}?wait=1")).await;
    assert_eq!(v["state"], "waiting_touch", "{v}");
    // The key is busy meanwhile.
    let (st, e) = s.post("/v1/enrollments", enroll_body("r5")).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(code(&e), "device_busy");
    let (st, v) = s.delete(&format!("/v1/enrollments/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["state"], "cancelled", "{v}");
    assert_eq!(v["error"]["code"], "cancelled");

    // Unplug mid-ceremony.
    let (_, v) = s.post("/v1/enrollments", enroll_body("r4")).await;
    let id = v["id"].as_str().unwrap().to_string();
    s.get(&format!("/v1/enrollments/{id}?wait=1")).await;
    let (st, _) = s
        .post(&format!("/v1/sim/keys/{}/unplug", enc(&key)), json!({}))
        .await;
    assert!(st.is_success());
    let (_, v) = s.get(&format!("/v1/enrollments/{id}?wait=true")).await;
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "device_removed");
    // No key at all now.
    let (st, e) = s.post("/v1/enrollments", enroll_body("r4")).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(code(&e), "no_device");
    assert!(s
        .state
        .store
        .list_credentials("r4", true)
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn needs_pin_until_the_ceremony_expires() {
    let s = TestServer::start().await;
    s.set_pin("1234").await;
    let (_, v) = s.post("/v1/assertions", json!({ "user": "nobody" })).await;
    assert_eq!(code(&v), "no_credentials");
    enrolled(&s, "r6").await;
    let (_, v) = s
        .post(
            "/v1/assertions?wait=true",
            json!({ "user": "r6", "timeout_ms": 300 }),
        )
        .await;
    assert_eq!(v["state"], "needs_pin");
    let id = v["id"].as_str().unwrap().to_string();
    let (_, v) = s.get(&format!("/v1/assertions/{id}?wait=true")).await;
    // needs_pin returns at once; wait for the expiry explicitly.
    let _ = v;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (_, v) = s.get(&format!("/v1/assertions/{id}")).await;
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "ceremony_expired");
    let (st, e) = s
        .post(
            &format!("/v1/assertions/{id}/pin"),
            json!({ "pin": "1234" }),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(code(&e), "ceremony_ended");
}

#[tokio::test]
async fn cloned_key_is_quarantined_until_an_admin_releases_it() {
    let s = TestServer::start().await;
    s.set_pin("1234").await;
    let original = s.sim_key().await;
    let v = enrolled(&s, "r7").await;
    let cred_id = v["result"]["credential"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Clone the key now, then let the original sign once more.
    let (st, c) = s
        .post(&format!("/v1/sim/keys/{}/clone", enc(&original)), json!({}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    let clone = c["key"]["id"].as_str().unwrap().to_string();
    let mut body = json!({ "user": "r7", "pin": "1234", "device": original });
    let a = s.verify(body.clone()).await;
    assert_eq!(a["state"], "succeeded", "{a}");
    body["device"] = json!(clone);
    let a = s.verify(body.clone()).await;
    assert_eq!(a["state"], "failed", "{a}");
    assert_eq!(a["error"]["code"], "possible_cloned_key");
    let (_, c) = s.get(&format!("/v1/users/r7/credentials/{cred_id}")).await;
    assert_eq!(c["credential"]["state"], "quarantined");
    // Quarantined: not offered any more.
    body["device"] = json!(original);
    let (_, e) = s.post("/v1/assertions?wait=true", body.clone()).await;
    assert_eq!(code(&e), "no_credentials");
    // Kiosk tokens cannot release; admins can.
    let (st, e) = s
        .req(
            Method::POST,
            &format!("/v1/users/r7/credentials/{cred_id}/release"),
            Some(&s.kiosk),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(code(&e), "forbidden");
    let (st, c) = s
        .post(
            &format!("/v1/users/r7/credentials/{cred_id}/release"),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{c}");
    assert_eq!(c["credential"]["state"], "active");
    let a = s.verify(body).await;
    assert_eq!(a["state"], "succeeded", "{a}");
    let (_, audit) = s.get("/v1/audit?user=r7").await;
    let events: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(events.contains(&"credential.quarantined"));
    assert!(events.contains(&"credential.released"));
}

#[tokio::test]
async fn keys_that_always_count_zero_are_accepted() {
    let s = TestServer::start().await;
    s.set_pin("1234").await;
    let key = s.sim_key().await;
    s.configure_key(&key, json!({ "counter": "zero" })).await;
    enrolled(&s, "r8").await;
    for _ in 0..2 {
        let a = s.verify(json!({ "user": "r8", "pin": "1234" })).await;
        assert_eq!(a["state"], "succeeded", "{a}");
        assert_eq!(a["result"]["counter"], 0);
    }
}

#[tokio::test]
async fn restart_keeps_credentials_and_the_simulated_key() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = TestServer::start_in(tmp.path(), "").await;
        s.set_pin("1234").await;
        enrolled(&s, "r9").await;
    }
    let s = TestServer::start_in(tmp.path(), "").await;
    let a = s.verify(json!({ "user": "r9", "pin": "1234" })).await;
    assert_eq!(a["state"], "succeeded", "{a}");
    s.state.store.check_integrity().unwrap();
}

#[tokio::test]
async fn service_desk_reset_and_credential_admin() {
    let s = TestServer::start().await;
    s.set_pin("1234").await;
    let v = enrolled(&s, "r10").await;
    let id = v["result"]["credential"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, c) = s
        .patch(
            &format!("/v1/users/r10/credentials/{id}"),
            json!({ "nickname": "rood" }),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(c["credential"]["nickname"], "rood");
    let (st, e) = s
        .patch(
            &format!("/v1/users/r10/credentials/{id}"),
            json!({ "nick": "x" }),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(code(&e), "invalid_request");
    let (st, r) = s.delete("/v1/users/r10").await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["receipt"]["credentials_revoked"], 1);
    let (_, l) = s.get("/v1/users/r10/credentials").await;
    assert!(l["credentials"].as_array().unwrap().is_empty());
    let (st, e) = s.delete("/v1/users/nobody").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(code(&e), "not_found");
}

#[tokio::test]
async fn revoked_discoverable_key_is_an_unknown_credential() {
    let s = TestServer::start().await;
    s.set_pin("1234").await;
    let mut b = enroll_body("r11");
    b["discoverable"] = json!(true);
    let v = s.enroll(b).await;
    let id = v["result"]["credential"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, _) = s.delete(&format!("/v1/users/r11/credentials/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    let a = s.verify(json!({ "pin": "1234" })).await;
    assert_eq!(a["state"], "failed");
    assert_eq!(a["error"]["code"], "unknown_credential");
}

#[tokio::test]
async fn key_without_pin_and_uv_required() {
    let s = TestServer::start().await;
    let (st, e) = s
        .post(
            "/v1/enrollments",
            json!({ "user": "r12", "display_name": "R" }),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(code(&e), "pin_not_set");
    // A kiosk cannot lower the configured level: asking for "preferred" is refused.
    let (st, e) = s
        .post(
            "/v1/enrollments",
            json!({ "user": "r12", "display_name": "R", "user_verification": "preferred" }),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(code(&e), "invalid_request");
    let (st, e) = s
        .post(
            "/v1/assertions",
            json!({ "user": "r12", "user_verification": "preferred" }),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(code(&e), "invalid_request");
    // Touch-only enrollment where the configuration allows it.
    let s = TestServer::start_with("[relying_party]\nuser_verification = \"preferred\"\n").await;
    let v = s
        .enroll(json!({ "user": "r12", "display_name": "R" }))
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["result"]["credential"]["user_verified"], false);
    // ... and a request may still ask for more than the configured floor.
    let (st, e) = s
        .post(
            "/v1/enrollments",
            json!({ "user": "r13", "display_name": "R", "user_verification": "required" }),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{e}");
    assert_eq!(code(&e), "pin_not_set");
}

#[tokio::test]
async fn auth_roles_and_unknown_routes() {
    let s = TestServer::start().await;
    let (st, e) = s.req(Method::GET, "/v1/devices", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&e), "unauthorized");
    let (st, _) = s
        .req(Method::GET, "/v1/devices", Some("kg_abc_def"), None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s
        .req(Method::GET, "/v1/devices", Some(&s.kiosk.clone()), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, e) = s
        .req(Method::GET, "/v1/audit", Some(&s.kiosk.clone()), None)
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(code(&e), "forbidden");
    let (st, _) = s.req(Method::GET, "/healthz", None, None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, e) = s
        .get("/v1/enrollments/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(code(&e), "not_found");
    let (st, _) = s.get("/v1/nothing-here").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, doc) = s.req(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(doc["paths"]["/v1/enrollments"].is_object());
}

#[tokio::test]
async fn host_and_origin_are_checked() {
    let s = TestServer::start().await;
    let r = s
        .client
        .get(format!("{}/v1/devices", s.base))
        .header("host", "evil.example")
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), "host_not_allowed");
    let r = s
        .client
        .get(format!("{}/v1/devices", s.base))
        .header("origin", "http://evil.example")
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), "origin_not_allowed");
    // Same origin is fine.
    let r = s
        .client
        .get(format!("{}/v1/devices", s.base))
        .header("origin", s.base.clone())
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn malformed_and_oversized_bodies() {
    let s = TestServer::start().await;
    let post_raw = |body: String, ct: &'static str| {
        s.client
            .post(format!("{}/v1/enrollments", s.base))
            .bearer_auth(&s.admin)
            .header("content-type", ct)
            .body(body)
    };
    let r = post_raw("{not json".into(), "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(code(&r.json::<Value>().await.unwrap()), "invalid_request");
    let r = post_raw(
        format!("{{\"user\":\"{}\"}}", "a".repeat(200_000)),
        "application/json",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code(&r.json::<Value>().await.unwrap()), "payload_too_large");
    let r = post_raw("{}".into(), "text/plain").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        code(&r.json::<Value>().await.unwrap()),
        "unsupported_media_type"
    );
    for bad in [
        json!({ "user": "", "display_name": "x" }),
        json!({ "user": "a b", "display_name": "x" }),
        json!({ "user": "ok", "display_name": "x", "timeout_ms": 0 }),
        json!({ "user": "ok", "display_name": "x", "bogus": 1 }),
        json!({ "user": "ok" }),
    ] {
        let (st, e) = s.post("/v1/enrollments", bad.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad} -> {e}");
        assert_eq!(code(&e), "invalid_request");
        assert!(e["error"]["message"].as_str().unwrap().len() > 5);
    }
    // Malformed query strings and wrong methods answer in the same JSON shape.
    for path in [
        "/v1/audit?limit=abc",
        "/v1/users/r1/credentials?include_revoked=yes",
    ] {
        let (st, e) = s.get(path).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{path} -> {e}");
        assert_eq!(code(&e), "invalid_request", "{path} -> {e}");
    }
    let (st, e) = s
        .req(Method::PUT, "/v1/devices", Some(&s.admin), Some(json!({})))
        .await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED, "{e}");
    assert_eq!(code(&e), "method_not_allowed");
}

#[tokio::test]
async fn internal_errors_do_not_leak() {
    let s = TestServer::start().await;
    s.set_pin("1234").await;
    enrolled(&s, "r13").await;
    // Damage the stored credential behind keygate's back.
    let conn = keygate::harness::raw_db(&s.data_dir);
    conn.execute("UPDATE credentials SET rp_credential = 'garbage'", [])
        .unwrap();
    let (st, e) = s
        .post("/v1/assertions", json!({ "user": "r13", "pin": "1234" }))
        .await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(code(&e), "internal");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        !msg.contains("garbage") && !msg.contains("stored credential"),
        "{msg}"
    );
}

#[tokio::test]
async fn the_user_declines_on_the_key() {
    let s = TestServer::start().await;
    s.set_pin("1234").await;
    let key = s.sim_key().await;
    s.configure_key(&key, json!({ "touch": "deny" })).await;
    let v = s.enroll(enroll_body("r20")).await;
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "operation_denied");
    assert!(s
        .state
        .store
        .list_credentials("r20", true)
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn touch_only_key_cannot_verify_the_user() {
    let s = TestServer::start().await;
    let key = s.sim_key().await;
    s.configure_key(&key, json!({ "pin_supported": false }))
        .await;
    let (_, d) = s.get("/v1/devices").await;
    assert_eq!(d["devices"][0]["pin_set"], Value::Null, "{d}");
    let (st, e) = s
        .post(
            "/v1/enrollments",
            json!({ "user": "r21", "display_name": "R" }),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(code(&e), "uv_unsupported");
    // Setting a PIN on it is refused by the key itself.
    let (st, e) = s
        .post(
            &format!("/v1/devices/{}/pin", enc(&key)),
            json!({ "new_pin": "1234" }),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(code(&e), "uv_unsupported");
    // Where the configuration accepts touch-only keys, it enrolls without user verification.
    let s = TestServer::start_with("[relying_party]\nuser_verification = \"preferred\"\n").await;
    let key = s.sim_key().await;
    s.configure_key(&key, json!({ "pin_supported": false }))
        .await;
    let v = s
        .enroll(json!({ "user": "r21", "display_name": "R" }))
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["result"]["credential"]["user_verified"], false);
}

#[tokio::test]
async fn self_attestation_is_unattested_or_rejected_by_policy() {
    let s = TestServer::start().await;
    s.set_pin("1234").await;
    let key = s.sim_key().await;
    s.configure_key(&key, json!({ "attestation": "self" }))
        .await;
    let v = s.enroll(enroll_body("r22")).await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["result"]["credential"]["attested"], false, "{v}");

    let strict =
        TestServer::start_with("[relying_party]\nrequire_trusted_attestation = true\n").await;
    strict.set_pin("1234").await;
    let key = strict.sim_key().await;
    let v = strict.enroll(enroll_body("r23")).await;
    assert_eq!(v["state"], "succeeded", "the test CA is trusted: {v}");
    assert_eq!(v["result"]["credential"]["attested"], true, "{v}");
    strict
        .configure_key(&key, json!({ "attestation": "self" }))
        .await;
    let v = strict.enroll(enroll_body("r24")).await;
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "attestation_rejected");
    assert!(strict
        .state
        .store
        .list_credentials("r24", true)
        .unwrap()
        .is_empty());
}
