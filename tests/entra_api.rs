//! Enrolling keys into Microsoft Entra ID end to end: real HTTP to keygate, keygate's real HTTP
//! to the fake identity platform + Graph (tests/common/fake_entra.rs, which verifies a
//! registration the way Entra does), the simulated key speaking real CTAP2. Covers the
//! ceremony (`target: "entra"`) and each failure it surfaces, "whose key is this?", the phone
//! sync, and the service desk's Entra routes.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::fake_entra::{self, graph_error, FakeEntra, FakeEntraOptions, Route};
use common::{code, enc, TestServer};
use keygate::base::clock::Clock;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const PIN: &str = "1234";
const UPN: &str = "s1@student.odisee.be";

struct Env {
    fake: FakeEntra,
    s: TestServer,
}

/// A fake tenant with the user `s1` and a keygate whose `[entra]` points at it (`entra_extra`
/// goes into that section); the simulated key has PIN [`PIN`].
async fn env_with(opts: FakeEntraOptions, entra_extra: &str) -> Env {
    let fake = fake_entra::start(opts).await;
    fake.add_user(UPN, "Student One");
    let s = TestServer::start_with(&format!("{}{entra_extra}\n", fake.entra_toml())).await;
    s.set_pin(PIN).await;
    Env { fake, s }
}

async fn env() -> Env {
    env_with(FakeEntraOptions::default(), "").await
}

fn entra_enrollment() -> Value {
    json!({ "user": "s1", "display_name": "Student One", "pin": PIN, "target": "entra" })
}

/// POST an Entra enrollment and wait for its end (or `needs_pin`).
async fn enroll(s: &TestServer, body: Value) -> (StatusCode, Value) {
    s.post("/v1/enrollments?wait=true", body).await
}

fn unb64(s: &Value) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s.as_str().unwrap()).unwrap()
}

fn audit_events(v: &Value) -> Vec<String> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

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

/// Each Graph failure fails the ceremony with its own code and nothing is registered.
#[tokio::test]
async fn graph_failures_end_the_ceremony_with_their_codes() {
    let cases: Vec<(&str, Route, u16, Value, Option<u64>)> = vec![
        (
            "entra_forbidden",
            Route::CreationOptions,
            403,
            graph_error("accessDenied", "Request Authorization failed"),
            None,
        ),
        (
            "entra_throttled",
            Route::CreationOptions,
            429,
            graph_error("TooManyRequests", "Too many requests"),
            Some(120),
        ),
        (
            "entra_unavailable",
            Route::RegisterFido2,
            503,
            graph_error("serviceNotAvailable", "Service unavailable"),
            None,
        ),
    ];
    for (want, route, status, body, retry_after) in cases {
        let e = env().await;
        e.fake.fail_next(route, status, body, retry_after);
        let (_, v) = enroll(&e.s, entra_enrollment()).await;
        assert_eq!(v["state"], "failed", "{want}: {v}");
        assert_eq!(v["error"]["code"], want, "{v}");
        if want == "entra_throttled" {
            assert_eq!(v["error"]["retry_after"], 120, "{v}");
        }
        assert!(e.fake.fido2_methods(UPN).is_empty(), "{want}");
    }
    // A user Entra does not know.
    let e = env().await;
    let (_, v) = enroll(
        &e.s,
        json!({ "user": "nobody", "display_name": "N", "pin": PIN, "target": "entra" }),
    )
    .await;
    assert_eq!(v["error"]["code"], "entra_user_not_found", "{v}");
    // keygate's credentials refused by the token endpoint.
    let fake = fake_entra::start(FakeEntraOptions::default()).await;
    fake.add_user(UPN, "Student One");
    let secret = fake.options().client_secret.clone().unwrap();
    let s = TestServer::start_with(&fake.entra_toml().replace(&secret, "not-the-secret")).await;
    s.set_pin(PIN).await;
    let (_, v) = enroll(&s, entra_enrollment()).await;
    assert_eq!(v["error"]["code"], "entra_auth_failed", "{v}");
    assert!(!v.to_string().contains("not-the-secret"), "{v}");
    assert_eq!(fake.count(Route::CreationOptions), 0);
}

#[tokio::test]
async fn a_registration_graph_refuses_carries_graphs_message() {
    let e = env_with(
        FakeEntraOptions {
            allowed_aaguids: Some(vec![uuid::Uuid::nil()]),
            ..Default::default()
        },
        "",
    )
    .await;
    let (_, v) = enroll(&e.s, entra_enrollment()).await;
    assert_eq!(v["error"]["code"], "entra_rejected", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("key restriction policy"), "{message}");
    assert_eq!(e.fake.count(Route::RegisterFido2), 1);
    let (_, audit) = e.s.get("/v1/audit?user=s1").await;
    assert!(!audit_events(&audit).contains(&"entra.passkey_registered".to_string()));
}

#[tokio::test]
async fn a_window_that_closes_before_the_touch_ends_the_ceremony_without_posting() {
    let e = env_with(
        FakeEntraOptions {
            challenge_window: Duration::from_secs(1),
            ..Default::default()
        },
        "",
    )
    .await;
    let key = e.s.sim_key().await;
    e.s.configure_key(&key, json!({ "touch": "never" })).await;
    let (_, v) = enroll(&e.s, entra_enrollment()).await;
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "entra_challenge_expired", "{v}");
    assert!(v["entra"]["challenge_expires_at"].is_string(), "{v}");
    assert_eq!(v["expires_at"], v["entra"]["challenge_expires_at"], "{v}");
    assert_eq!(e.fake.count(Route::RegisterFido2), 0);
}

#[tokio::test]
async fn a_window_that_closed_during_the_touch_is_not_posted() {
    // keygate and the tenant share a clock that the test moves past the window mid-touch.
    let clock = Arc::new(keygate::sms::ManualClock::new(
        keygate::base::clock::SystemClock.now_ms(),
    ));
    let fake = fake_entra::start(FakeEntraOptions {
        clock: clock.clone(),
        ..Default::default()
    })
    .await;
    fake.add_user(UPN, "Student One");
    let s = TestServer::start_with_clock(&fake.entra_toml(), clock.clone()).await;
    s.set_pin(PIN).await;
    let key = s.sim_key().await;
    s.configure_key(&key, json!({ "touch": { "auto_after_ms": 1500 } }))
        .await;
    let (st, v) = s.post("/v1/enrollments", entra_enrollment()).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let v = until_state(&s, &format!("/v1/enrollments/{id}"), "waiting_touch").await;
    assert!(v["entra"]["challenge_expires_at"].is_string(), "{v}");
    clock.advance(Duration::from_secs(301));
    let (_, v) = s.get(&format!("/v1/enrollments/{id}?wait=true")).await;
    assert_eq!(v["error"]["code"], "entra_challenge_expired", "{v}");
    assert_eq!(fake.count(Route::RegisterFido2), 0);
}

/// Poll `path` until its `state` is `state` (the ceremony runs on its own).
async fn until_state(s: &TestServer, path: &str, state: &str) -> Value {
    for _ in 0..500 {
        let (_, v) = s.get(path).await;
        if v["state"] == state {
            return v;
        }
        assert!(
            !["succeeded", "failed", "cancelled"].contains(&v["state"].as_str().unwrap_or("")),
            "{v}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{path} never reached {state}");
}

#[tokio::test]
async fn a_key_without_the_extensions_is_key_unsupported_before_graph_is_asked() {
    let e = env().await;
    let key = e.s.sim_key().await;
    e.s.configure_key(&key, json!({ "extensions": [] })).await;
    let (st, v) = enroll(&e.s, entra_enrollment()).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(code(&v), "key_unsupported");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("hmac-secret") && m.contains("credProtect"),
        "{m}"
    );
    assert!(e.fake.requests().is_empty());
    // A key without a PIN: the student sets one first.
    let e = env().await;
    let key = e.s.sim_key().await;
    e.s.configure_key(&key, json!({ "pin": null })).await;
    let (st, v) = enroll(&e.s, entra_enrollment()).await;
    assert_eq!((st, code(&v)), (StatusCode::CONFLICT, "pin_not_set"), "{v}");
    assert!(e.fake.requests().is_empty());
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

/// Register and verify `number` (`e164` in full) for `user` through the simulated SMS inbox;
/// the phone's id.
async fn verified_phone(s: &TestServer, user: &str, number: &str, e164: &str) -> String {
    let (st, v) = s
        .post(
            &format!("/v1/users/{user}/phones"),
            json!({ "number": number }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let ch = v["challenge"]["id"].as_str().unwrap().to_string();
    let mut sms = None;
    for _ in 0..500 {
        let (_, m) = s
            .get(&format!("/v1/sim/sms?number={}", e164.replace('+', "%2B")))
            .await;
        if let Some(first) = m["messages"].as_array().and_then(|a| a.first()).cloned() {
            sms = Some(first);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sms = sms.expect("the verification code arrived");
    let (st, r) = s
        .post(
            &format!("/v1/sms/challenges/{ch}/verify"),
            json!({ "code": sms["code"] }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    v["phone"]["id"].as_str().unwrap().to_string()
}

/// The phone's `entra` member once its sync ended.
async fn synced_state(s: &TestServer, user: &str) -> Value {
    for _ in 0..500 {
        let (_, v) = s.get(&format!("/v1/users/{user}/phones")).await;
        let entra = v["phones"][0]["entra"].clone();
        if !entra.is_null() && entra["state"] != "pending" {
            return entra;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the phone's Entra sync never ended");
}

#[tokio::test]
async fn a_verified_phone_becomes_the_entra_mobile_method() {
    let e = env().await;
    verified_phone(&e.s, "s1", "0475 34 56 78", "+32475345678").await;
    let entra = synced_state(&e.s, "s1").await;
    assert_eq!(entra["state"], "synced", "{entra}");
    let phones = e.fake.phone_methods(UPN);
    assert_eq!(phones.len(), 1, "{phones:?}");
    assert_eq!(phones[0]["phoneNumber"], "+32 475345678");
    assert_eq!(phones[0]["phoneType"], "mobile");
    assert_eq!(entra["method_id"], phones[0]["id"]);
    let (_, audit) = e.s.get("/v1/audit?user=s1").await;
    assert!(audit_events(&audit).contains(&"phone.entra_synced".to_string()));

    // Graph refusing: the phone stays verified, its Entra state says why.
    let e = env().await;
    e.fake.fail_next(
        Route::AddPhone,
        403,
        graph_error("accessDenied", "Request Authorization failed"),
        None,
    );
    verified_phone(&e.s, "s1", "+32475345679", "+32475345679").await;
    let entra = synced_state(&e.s, "s1").await;
    assert_eq!(
        entra,
        json!({ "state": "failed", "method_id": null, "error": "entra_forbidden" })
    );
    let (_, v) = e.s.get("/v1/users/s1/phones").await;
    assert_eq!(v["phones"][0]["verified"], true);
    assert!(e.fake.phone_methods(UPN).is_empty());
    let (_, audit) = e.s.get("/v1/audit?user=s1").await;
    assert!(audit_events(&audit).contains(&"phone.entra_sync_failed".to_string()));
}

#[tokio::test]
async fn the_service_desk_lists_and_deletes_entra_passkeys() {
    let e = env().await;
    let (_, enrolled) = enroll(&e.s, entra_enrollment()).await;
    let ours = enrolled["result"]["entra"]["method_id"]
        .as_str()
        .unwrap()
        .to_string();
    let theirs = e.fake.add_fido2_method(UPN, "Registered elsewhere");
    let (st, v) = e.s.get("/v1/users/s1/entra/methods").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["upn"], UPN);
    let methods = v["methods"].as_array().unwrap();
    assert_eq!(methods.len(), 2, "{v}");
    for m in methods {
        assert_eq!(m["known_locally"], m["id"] == ours.as_str(), "{m}");
    }
    for bad in ["a%20b", &"x".repeat(129), "..%2F..%2Fx"] {
        let (st, v) =
            e.s.delete(&format!("/v1/users/s1/entra/methods/{bad}"))
                .await;
        assert_eq!(
            (st, code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{bad}"
        );
    }
    let (st, v) =
        e.s.delete(&format!("/v1/users/s1/entra/methods/{ours}"))
            .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["deleted"]["local_record_removed"], true);
    let (_, v) =
        e.s.delete(&format!("/v1/users/s1/entra/methods/{theirs}"))
            .await;
    assert_eq!(v["deleted"]["local_record_removed"], false, "{v}");
    assert!(e.fake.fido2_methods(UPN).is_empty());
    // Gone locally too: "whose key is this?" has nothing left to find.
    let (_, v) =
        e.s.post("/v1/assertions", json!({ "pin": PIN, "target": "entra" }))
            .await;
    assert_eq!(code(&v), "no_credentials", "{v}");
    let (_, audit) = e.s.get("/v1/audit?user=s1").await;
    let deleted = audit_events(&audit)
        .iter()
        .filter(|e| *e == "entra.passkey_deleted")
        .count();
    assert_eq!(deleted, 2);
    // The service-desk reset leaves Entra alone, and says so.
    let (st, r) = e.s.delete("/v1/users/s1").await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert!(r["entra"].as_str().unwrap().contains("separate"), "{r}");
}

#[tokio::test]
async fn entra_routes_are_for_admins_and_answer_not_configured_without_entra() {
    let e = env().await;
    let routes = [
        (Method::GET, "/v1/users/s1/entra/methods", None),
        (Method::DELETE, "/v1/users/s1/entra/methods/abc", None),
        (
            Method::POST,
            "/v1/users/s1/entra/temporary-access-pass",
            Some(json!({})),
        ),
    ];
    for (m, path, body) in routes.clone() {
        let (st, v) = e.s.req(m, path, Some(&e.s.kiosk.clone()), body).await;
        assert_eq!(
            (st, code(&v)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{path}"
        );
    }
    assert!(e.fake.requests().is_empty());
    let s = TestServer::start().await;
    for (m, path, body) in routes {
        let (st, v) = s.req(m, path, Some(&s.admin.clone()), body).await;
        assert_eq!(
            (st, code(&v)),
            (StatusCode::NOT_IMPLEMENTED, "entra_not_configured"),
            "{path}"
        );
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this test binary from the first call on (trace level).
fn captured_logs() -> Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let cap = Capture::default();
            let writer = cap.clone();
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .init();
            cap
        })
        .clone()
}

#[tokio::test]
async fn a_temporary_access_pass_is_shown_once_and_kept_nowhere() {
    let logs = captured_logs();
    let e = env().await;
    for bad in [
        json!({ "lifetime_minutes": 9 }),
        json!({ "lifetime_minutes": 43_201 }),
        json!({ "usable_once": "yes" }),
        json!({ "pin": 1 }),
    ] {
        let (st, v) =
            e.s.post("/v1/users/s1/entra/temporary-access-pass", bad.clone())
                .await;
        assert_eq!(
            (st, code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{bad}"
        );
    }
    let resp =
        e.s.client
            .post(format!(
                "{}/v1/users/s1/entra/temporary-access-pass",
                e.s.base
            ))
            .bearer_auth(&e.s.admin)
            .json(&json!({ "lifetime_minutes": 120, "usable_once": false }))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let v: Value = resp.json().await.unwrap();
    let pass = v["temporary_access_pass"].as_str().unwrap().to_string();
    assert!(pass.len() >= 8, "{v}");
    assert_eq!(
        (v["lifetime_minutes"].clone(), v["usable_once"].clone()),
        (json!(120), json!(false))
    );
    let issued = e.fake.temporary_access_passes(UPN);
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0]["temporaryAccessPass"], pass.as_str());
    // The fact is audited, the pass is not.
    let (_, audit) = e.s.get("/v1/audit?user=s1").await;
    assert!(audit_events(&audit).contains(&"entra.tap_issued".to_string()));
    assert!(!audit.to_string().contains(&pass));
    // Nowhere in the logs, nowhere in the database files.
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(
        text.contains("Temporary Access Pass issued"),
        "the logs were captured"
    );
    assert!(!text.contains(&pass), "the pass was logged");
    for f in ["keygate.db", "keygate.db-wal"] {
        let bytes = std::fs::read(e.s.data_dir.join(f)).unwrap_or_default();
        assert!(
            !bytes.windows(pass.len()).any(|w| w == pass.as_bytes()),
            "the pass is in {f}"
        );
    }
}
