//! Every way an Entra enrollment fails, each with its own code and nothing registered.

use super::*;

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

/// Poll until the fake received a request on `route`.
async fn until_received(fake: &fake_entra::FakeEntra, route: Route) {
    for _ in 0..500 {
        if fake.count(route) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no request on {route:?}");
}

#[tokio::test]
async fn a_ceremony_waiting_for_graph_can_be_cancelled_and_posts_nothing() {
    let e = env().await;
    e.fake
        .delay(Route::CreationOptions, Duration::from_secs(20));
    let (st, v) = e.s.post("/v1/enrollments", entra_enrollment()).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    until_received(&e.fake, Route::CreationOptions).await;
    let (st, v) = e.s.delete(&format!("/v1/enrollments/{id}")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, v) = e.s.get(&format!("/v1/enrollments/{id}?wait=true")).await;
    assert_eq!(v["state"], "cancelled", "{v}");
    assert_eq!(v["error"]["code"], "cancelled", "{v}");
    assert_eq!(e.fake.count(Route::RegisterFido2), 0);
    // The key is free again.
    e.fake.delay(Route::CreationOptions, Duration::ZERO);
    let (_, v) = enroll(&e.s, entra_enrollment()).await;
    assert_eq!(v["state"], "succeeded", "{v}");
}

#[tokio::test]
async fn a_key_unplugged_during_the_touch_fails_cleanly_and_posts_nothing() {
    let e = env().await;
    let key = e.s.sim_key().await;
    e.s.configure_key(&key, json!({ "touch": "never" })).await;
    let (_, v) = e.s.post("/v1/enrollments", entra_enrollment()).await;
    let id = v["id"].as_str().unwrap().to_string();
    until_state(&e.s, &format!("/v1/enrollments/{id}"), "waiting_touch").await;
    let (st, _) =
        e.s.post(
            &format!("/v1/sim/keys/{}/unplug", common::enc(&key)),
            json!({}),
        )
        .await;
    assert!(st.is_success());
    let (_, v) = e.s.get(&format!("/v1/enrollments/{id}?wait=true")).await;
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "device_removed", "{v}");
    assert_eq!(e.fake.count(Route::RegisterFido2), 0);
    assert!(e.fake.fido2_methods(UPN).is_empty());
}
