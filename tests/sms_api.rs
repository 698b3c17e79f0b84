//! The SMS factor through the real HTTP API, a real SQLite file, the console provider's
//! simulated inbox and a manual clock (expiry, cooldowns and lockouts without waiting).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{code, TestServer};
use keygate::sms::ManualClock;
use reqwest::StatusCode;
use serde_json::{json, Value};

const START: i64 = 1_790_000_000_000;

async fn server(extra: &str) -> (TestServer, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(START));
    let s = TestServer::start_with_clock(extra, clock.clone()).await;
    (s, clock)
}

/// Wait until the outbox worker delivered `n` messages to `number` (the worker is real).
async fn inbox(s: &TestServer, number: &str, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let (st, v) = s
            .get(&format!("/v1/sim/sms?number={}", urlenc(number)))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let msgs = v["messages"].as_array().unwrap().clone();
        if msgs.len() >= n {
            return msgs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{number} did not receive {n} messages");
}

fn urlenc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn add_phone(s: &TestServer, user: &str, number: &str) -> Value {
    let (st, v) = s
        .post(
            &format!("/v1/users/{user}/phones"),
            json!({ "number": number, "label": "gsm" }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v
}

/// Register and verify a phone; returns its id.
async fn verified_phone(s: &TestServer, user: &str, number: &str) -> String {
    let v = add_phone(s, user, number).await;
    let ch = v["challenge"]["id"].as_str().unwrap().to_string();
    let msgs = inbox(s, number, 1).await;
    let c = msgs[0]["code"].as_str().unwrap();
    let (st, r) = s
        .post(
            &format!("/v1/sms/challenges/{ch}/verify"),
            json!({ "code": c }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    v["phone"]["id"].as_str().unwrap().to_string()
}

fn wrong(c: &str) -> String {
    let d = (c.as_bytes()[0] - b'0' + 1) % 10;
    format!("{d}{}", &c[1..])
}

#[tokio::test]
async fn register_a_phone_then_sign_in_with_a_code() {
    let (s, _clock) = server("").await;
    let v = add_phone(&s, "r0123456", "0475/34.56.78").await;
    assert_eq!(v["phone"]["masked_number"], "+32 4•• •• •• 78");
    assert_eq!(v["phone"]["verified"], false);
    assert!(
        !v.to_string().contains("345678"),
        "no full number in responses: {v}"
    );
    let ch = &v["challenge"];
    assert_eq!(ch["purpose"], "verify_phone");
    assert_eq!(ch["attempts_left"], 5);
    let id = ch["id"].as_str().unwrap();
    let msgs = inbox(&s, "+32475345678", 1).await;
    let text = msgs[0]["text"].as_str().unwrap();
    let c = msgs[0]["code"].as_str().unwrap().to_string();
    assert!(
        text.contains("Odisee-verificatiecode"),
        "Dutch by default: {text}"
    );
    assert_eq!(c.len(), 6);
    // A wrong code counts down.
    let (st, e) = s
        .post(
            &format!("/v1/sms/challenges/{id}/verify"),
            json!({ "code": wrong(&c) }),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&e), "wrong_code");
    assert_eq!(e["error"]["attempts_left"], 4);
    let (st, e) = s
        .post(
            &format!("/v1/sms/challenges/{id}/verify"),
            json!({ "code": "12ab56" }),
        )
        .await;
    assert_eq!((st, code(&e)), (StatusCode::BAD_REQUEST, "invalid_request"));
    let (st, r) = s
        .post(
            &format!("/v1/sms/challenges/{id}/verify"),
            json!({ "code": c }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["verified"], true);
    assert_eq!(r["challenge"]["state"], "verified");
    // Single use.
    let (st, e) = s
        .post(
            &format!("/v1/sms/challenges/{id}/verify"),
            json!({ "code": c }),
        )
        .await;
    assert_eq!((st, code(&e)), (StatusCode::CONFLICT, "challenge_used"));
    let (_, phones) = s.get("/v1/users/r0123456/phones").await;
    assert_eq!(phones["phones"][0]["verified"], true, "{phones}");

    // Sign in: by the number typed the international way, in English.
    let (st, ch) = s
        .post(
            "/v1/sms/challenges",
            json!({ "user": "r0123456", "number": "+32 475 34 56 78", "locale": "en" }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{ch}");
    assert_eq!(ch["purpose"], "sign_in");
    assert_eq!(ch["delivery"]["status"], "queued");
    let msgs = inbox(&s, "+32475345678", 2).await;
    assert!(msgs[0]["text"]
        .as_str()
        .unwrap()
        .contains("your Odisee verification code"));
    let id = ch["id"].as_str().unwrap();
    let (st, _) = s
        .post(
            &format!("/v1/sms/challenges/{id}/verify"),
            json!({ "code": msgs[0]["code"] }),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, g) = s.get(&format!("/v1/sms/challenges/{id}")).await;
    assert_eq!(g["state"], "verified");
    assert_eq!(g["delivery"]["status"], "sent");
    // Audit: masked numbers only.
    let (_, audit) = s.get("/v1/audit?user=r0123456").await;
    let a = audit.to_string();
    assert!(
        a.contains("sms.verified") && a.contains("phone.added"),
        "{a}"
    );
    assert!(
        !a.contains("475345678") && !a.contains(msgs[0]["code"].as_str().unwrap()),
        "{a}"
    );
}

#[tokio::test]
async fn numbers_are_checked() {
    let (s, _) = server("").await;
    for (number, expect) in [
        ("hello", "invalid_phone_number"),
        ("0475", "invalid_phone_number"),
        ("+1 415 555 2671", "country_not_allowed"),
        ("02 555 12 34", "not_a_mobile_number"),
    ] {
        let (st, e) = s
            .post("/v1/users/r1/phones", json!({ "number": number }))
            .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{number}: {e}");
        assert_eq!(code(&e), expect, "{number}");
    }
    // Dutch and French mobiles are fine.
    add_phone(&s, "r1", "+31 6 12345678").await;
    add_phone(&s, "r1", "+33 6 12 34 56 78").await;
    // Unverified phones cannot receive sign-in codes.
    let (st, e) = s
        .post(
            "/v1/sms/challenges",
            json!({ "user": "r1", "number": "+31612345678" }),
        )
        .await;
    assert_eq!((st, code(&e)), (StatusCode::CONFLICT, "phone_not_verified"));
    let (st, e) = s
        .post(
            "/v1/sms/challenges",
            json!({ "user": "r1", "number": "0475 11 22 33" }),
        )
        .await;
    assert_eq!(
        (st, code(&e)),
        (StatusCode::CONFLICT, "phone_not_verified"),
        "a number the user never registered"
    );
    let (st, e) = s.post("/v1/sms/challenges", json!({ "user": "r1" })).await;
    assert_eq!((st, code(&e)), (StatusCode::BAD_REQUEST, "invalid_request"));
    let (st, e) = s
        .post(
            "/v1/sms/challenges",
            json!({ "user": "r1", "phone_id": "nope" }),
        )
        .await;
    assert_eq!((st, code(&e)), (StatusCode::NOT_FOUND, "not_found"));
    let (st, e) = s.get("/v1/sms/challenges/nope").await;
    assert_eq!((st, code(&e)), (StatusCode::NOT_FOUND, "not_found"));
    let (st, e) = s
        .post(
            "/v1/users/a%20b/phones",
            json!({ "number": "0475 34 56 78" }),
        )
        .await;
    assert_eq!((st, code(&e)), (StatusCode::BAD_REQUEST, "invalid_request"));
}

#[tokio::test]
async fn codes_expire_after_five_minutes() {
    let (s, clock) = server("").await;
    let v = add_phone(&s, "r2", "0475 00 00 02").await;
    let id = v["challenge"]["id"].as_str().unwrap();
    let c = inbox(&s, "+32475000002", 1).await[0]["code"]
        .as_str()
        .unwrap()
        .to_string();
    clock.advance(Duration::from_secs(299));
    let (_, g) = s.get(&format!("/v1/sms/challenges/{id}")).await;
    assert_eq!(g["state"], "pending");
    clock.advance(Duration::from_secs(1));
    let (st, e) = s
        .post(
            &format!("/v1/sms/challenges/{id}/verify"),
            json!({ "code": c }),
        )
        .await;
    assert_eq!((st, code(&e)), (StatusCode::GONE, "challenge_expired"));
    let (_, g) = s.get(&format!("/v1/sms/challenges/{id}")).await;
    assert_eq!(g["state"], "expired");
    let (st, e) = s
        .post(&format!("/v1/sms/challenges/{id}/resend"), json!({}))
        .await;
    assert_eq!((st, code(&e)), (StatusCode::GONE, "challenge_expired"));
}

#[tokio::test]
async fn five_wrong_codes_lock_the_user_for_sixteen_minutes() {
    let (s, clock) = server("").await;
    let phone = verified_phone(&s, "r3", "0475 00 00 03").await;
    let (_, ch) = s
        .post(
            "/v1/sms/challenges",
            json!({ "user": "r3", "phone_id": phone }),
        )
        .await;
    let id = ch["id"].as_str().unwrap().to_string();
    let c = inbox(&s, "+32475000003", 2).await[0]["code"]
        .as_str()
        .unwrap()
        .to_string();
    for left in [4, 3, 2, 1] {
        let (_, e) = s
            .post(
                &format!("/v1/sms/challenges/{id}/verify"),
                json!({ "code": wrong(&c) }),
            )
            .await;
        assert_eq!(code(&e), "wrong_code");
        assert_eq!(e["error"]["attempts_left"], left);
    }
    let (st, e) = s
        .post(
            &format!("/v1/sms/challenges/{id}/verify"),
            json!({ "code": wrong(&c) }),
        )
        .await;
    assert_eq!(
        (st, code(&e)),
        (StatusCode::TOO_MANY_REQUESTS, "user_locked")
    );
    assert_eq!(e["error"]["retry_after"], 960);
    // Even the right code, even a new challenge: locked.
    let (_, e) = s
        .post(
            &format!("/v1/sms/challenges/{id}/verify"),
            json!({ "code": c }),
        )
        .await;
    assert_eq!(code(&e), "challenge_failed", "the challenge itself is dead");
    let (st, e) = s
        .post(
            "/v1/sms/challenges",
            json!({ "user": "r3", "phone_id": phone }),
        )
        .await;
    assert_eq!(
        (st, code(&e)),
        (StatusCode::TOO_MANY_REQUESTS, "user_locked")
    );
    clock.advance(Duration::from_secs(15 * 60));
    let (_, e) = s
        .post(
            "/v1/sms/challenges",
            json!({ "user": "r3", "phone_id": phone }),
        )
        .await;
    assert_eq!(code(&e), "user_locked");
    assert_eq!(e["error"]["retry_after"], 60);
    clock.advance(Duration::from_secs(60));
    // The lock is over. A success resets the streak: 4 wrong codes, then the right one on a
    // new challenge, then 4 wrong codes again are not a lock (9 in all, 4 in a row); the 5th is.
    let new_challenge = |n: usize| {
        let (s, phone) = (&s, &phone);
        async move {
            let (st, ch) = s
                .post(
                    "/v1/sms/challenges",
                    json!({ "user": "r3", "phone_id": phone }),
                )
                .await;
            assert_eq!(st, StatusCode::CREATED, "{ch}");
            let c = inbox(s, "+32475000003", n).await[0]["code"]
                .as_str()
                .unwrap()
                .to_string();
            (ch["id"].as_str().unwrap().to_string(), c)
        }
    };
    let wrong_codes = |id: String, c: String, n: u32| {
        let s = &s;
        async move {
            for left in (5 - n..5).rev() {
                let (st, e) = s
                    .post(
                        &format!("/v1/sms/challenges/{id}/verify"),
                        json!({ "code": wrong(&c) }),
                    )
                    .await;
                assert_eq!(
                    (st, code(&e)),
                    (StatusCode::UNPROCESSABLE_ENTITY, "wrong_code"),
                    "{e}"
                );
                assert_eq!(e["error"]["attempts_left"], left);
            }
        }
    };
    let (id, c) = new_challenge(3).await;
    wrong_codes(id, c, 4).await;
    let (id, c) = new_challenge(4).await;
    let (st, r) = s
        .post(
            &format!("/v1/sms/challenges/{id}/verify"),
            json!({ "code": c }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    let (id, c) = new_challenge(5).await;
    wrong_codes(id.clone(), c.clone(), 4).await;
    let (st, e) = s
        .post(
            &format!("/v1/sms/challenges/{id}/verify"),
            json!({ "code": wrong(&c) }),
        )
        .await;
    assert_eq!(
        (st, code(&e)),
        (StatusCode::TOO_MANY_REQUESTS, "user_locked"),
        "5 in a row since the success: {e}"
    );
    let (_, audit) = s.get("/v1/audit?user=r3").await;
    assert!(audit.to_string().contains("sms.user_locked"));
}

#[tokio::test]
async fn a_challenge_dies_after_its_attempts_without_locking_the_user() {
    // With a laxer lockout, the per-challenge limit is what stops the guessing.
    let (s, _) = server("[sms]\nmax_attempts = 3\nlockout_failures = 10\n").await;
    let v = add_phone(&s, "r4", "0475 00 00 04").await;
    let id = v["challenge"]["id"].as_str().unwrap();
    let c = inbox(&s, "+32475000004", 1).await[0]["code"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..2 {
        let (_, e) = s
            .post(
                &format!("/v1/sms/challenges/{id}/verify"),
                json!({ "code": wrong(&c) }),
            )
            .await;
        assert_eq!(code(&e), "wrong_code");
    }
    let (st, e) = s
        .post(
            &format!("/v1/sms/challenges/{id}/verify"),
            json!({ "code": wrong(&c) }),
        )
        .await;
    assert_eq!((st, code(&e)), (StatusCode::GONE, "challenge_failed"));
    let (_, e) = s
        .post(
            &format!("/v1/sms/challenges/{id}/verify"),
            json!({ "code": c }),
        )
        .await;
    assert_eq!(code(&e), "challenge_failed");
}

#[tokio::test]
async fn resend_sends_the_same_code_after_a_cooldown_three_times_at_most() {
    let (s, clock) = server("").await;
    let v = add_phone(&s, "r5", "0475 00 00 05").await;
    let id = v["challenge"]["id"].as_str().unwrap();
    let first = inbox(&s, "+32475000005", 1).await[0]["code"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, e) = s
        .post(&format!("/v1/sms/challenges/{id}/resend"), json!({}))
        .await;
    assert_eq!(
        (st, code(&e)),
        (StatusCode::TOO_MANY_REQUESTS, "resend_too_soon")
    );
    assert_eq!(e["error"]["retry_after"], 30);
    clock.advance(Duration::from_secs(12));
    let (_, e) = s
        .post(&format!("/v1/sms/challenges/{id}/resend"), json!({}))
        .await;
    assert_eq!(e["error"]["retry_after"], 18);
    for n in 1..=3 {
        clock.advance(Duration::from_secs(30));
        let (st, v) = s
            .post(&format!("/v1/sms/challenges/{id}/resend"), json!({}))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["resends_left"], 3 - n);
        let msgs = inbox(&s, "+32475000005", 1 + n as usize).await;
        assert_eq!(msgs[0]["code"], first.as_str(), "the same code again");
    }
    clock.advance(Duration::from_secs(30));
    let (st, e) = s
        .post(&format!("/v1/sms/challenges/{id}/resend"), json!({}))
        .await;
    assert_eq!(
        (st, code(&e)),
        (StatusCode::TOO_MANY_REQUESTS, "resend_limit")
    );
    // "Back": cancel, then the challenge is gone for good.
    let (st, v) = s.delete(&format!("/v1/sms/challenges/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["state"], "cancelled");
    let (st, e) = s
        .post(
            &format!("/v1/sms/challenges/{id}/verify"),
            json!({ "code": first }),
        )
        .await;
    assert_eq!((st, code(&e)), (StatusCode::GONE, "challenge_cancelled"));
}

#[tokio::test]
async fn send_budgets_stop_sms_pumping() {
    let (s, clock) = server("[sms]\nglobal_hourly_budget = 8\ncountry_hourly_budget = 7\n").await;
    let phone = verified_phone(&s, "r6", "0475 00 00 06").await;
    // 1 send so far to this number; 4 more are allowed in 10 minutes.
    for _ in 0..4 {
        let (st, v) = s
            .post(
                "/v1/sms/challenges",
                json!({ "user": "r6", "phone_id": phone }),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        clock.advance(Duration::from_secs(10));
    }
    let (st, e) = s
        .post(
            "/v1/sms/challenges",
            json!({ "user": "r6", "phone_id": phone }),
        )
        .await;
    assert_eq!(
        (st, code(&e)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(e["error"]["retry_after"], 600 - 40, "{e}");
    clock.advance(Duration::from_secs(600));
    // Country budget (7 per hour for +32): 5 sent; two more numbers use it up.
    add_phone(&s, "r7", "0475 00 00 07").await;
    add_phone(&s, "r8", "0475 00 00 08").await;
    let (_, e) = s
        .post("/v1/users/r9/phones", json!({ "number": "0475 00 00 09" }))
        .await;
    assert_eq!(code(&e), "rate_limited", "country budget: {e}");
    // A Dutch number still fits the global budget (8), once.
    add_phone(&s, "r10", "+31 6 12345670").await;
    let (_, e) = s
        .post(
            "/v1/users/r11/phones",
            json!({ "number": "+31 6 12345671" }),
        )
        .await;
    assert_eq!(code(&e), "rate_limited", "global budget: {e}");
}

#[tokio::test]
async fn idempotent_creation_sends_once() {
    let (s, _) = server("").await;
    let phone = verified_phone(&s, "r12", "0475 00 00 12").await;
    let send = || async {
        s.client
            .post(format!("{}/v1/sms/challenges", s.base))
            .bearer_auth(&s.kiosk)
            .header("idempotency-key", "kiosk-7-req-42")
            .json(&json!({ "user": "r12", "phone_id": phone }))
            .send()
            .await
            .unwrap()
    };
    let a = send().await;
    assert_eq!(a.status(), StatusCode::CREATED);
    let a: Value = a.json().await.unwrap();
    let b = send().await;
    assert_eq!(b.status(), StatusCode::OK, "a replay");
    let b: Value = b.json().await.unwrap();
    assert_eq!(a["id"], b["id"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        inbox(&s, "+32475000012", 2).await.len(),
        2,
        "the registration code and one sign-in code"
    );
}

#[tokio::test]
async fn fifty_concurrent_right_answers_verify_once() {
    let (s, _) = server("").await;
    let v = add_phone(&s, "r13", "0475 00 00 13").await;
    let id = v["challenge"]["id"].as_str().unwrap().to_string();
    let c = inbox(&s, "+32475000013", 1).await[0]["code"]
        .as_str()
        .unwrap()
        .to_string();
    let s = Arc::new(s);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (s, id, c) = (s.clone(), id.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            s.post(
                &format!("/v1/sms/challenges/{id}/verify"),
                json!({ "code": c }),
            )
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (st, e) = t.await.unwrap();
        if st == StatusCode::OK {
            ok += 1;
        } else {
            assert_eq!(code(&e), "challenge_used", "{e}");
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn service_desk_reset_removes_phones_and_admin_routes_need_admin() {
    let (s, _) = server("").await;
    let phone = verified_phone(&s, "r14", "0475 00 00 14").await;
    let (_, ch) = s
        .post(
            "/v1/sms/challenges",
            json!({ "user": "r14", "phone_id": phone }),
        )
        .await;
    let id = ch["id"].as_str().unwrap();
    // The kiosk cannot list or delete phones, nor see provider health.
    let (st, _) = s
        .req(
            reqwest::Method::GET,
            "/v1/users/r14/phones",
            Some(&s.kiosk.clone()),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s
        .req(
            reqwest::Method::GET,
            "/v1/sms/providers",
            Some(&s.kiosk.clone()),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, p) = s.get("/v1/sms/providers").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(p["providers"][0]["name"], "console");
    assert_eq!(p["providers"][0]["circuit"], "closed");
    let (st, r) = s.delete("/v1/users/r14").await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["receipt"]["phones_removed"], 1, "{r}");
    let (_, phones) = s.get("/v1/users/r14/phones").await;
    assert_eq!(phones["phones"].as_array().unwrap().len(), 0);
    let (_, g) = s.get(&format!("/v1/sms/challenges/{id}")).await;
    assert_eq!(g["state"], "cancelled");
}

#[tokio::test]
async fn inbox_exists_only_under_simulate() {
    let (s, _) = server("").await;
    let (st, _) = s.get("/v1/sim/sms?number=%2B32475000099").await;
    assert_eq!(st, StatusCode::OK);
    let dir = tempfile::tempdir().unwrap();
    let cfg = keygate::config::parse_config(
        Some("[sms]\nproviders = [\"webhook\"]\n[sms.webhook]\nurl = \"http://127.0.0.1:9/\"\n"),
        &[],
        &keygate::config::Overrides {
            data_dir: Some(dir.path().to_path_buf()),
            simulate: Some(false),
            listen: Some("127.0.0.1:0".parse().unwrap()),
        },
    )
    .unwrap();
    let state = keygate::daemon::build_state(cfg).unwrap();
    let app = keygate::http::router(state.clone());
    let token = keygate::auth::create_token(&state.store, keygate::auth::Role::Admin, None)
        .await
        .unwrap();
    let resp = tower::ServiceExt::oneshot(
        app,
        axum::http::Request::get("/v1/sim/sms?number=%2B32475000099")
            .header("host", "127.0.0.1")
            .header("authorization", format!("Bearer {token}"))
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // And the console provider is refused outside --simulate unless enabled explicitly.
    let refused = keygate::config::parse_config(
        Some("[sms]\nproviders = [\"console\"]\n"),
        &[],
        &keygate::config::Overrides::default(),
    );
    assert!(refused.unwrap_err().to_string().contains("console"));
}

#[tokio::test]
async fn an_idempotency_key_is_bound_to_its_request() {
    let (s, _) = server("").await;
    let a = verified_phone(&s, "r15", "0475 00 00 15").await;
    let b = verified_phone(&s, "r15", "0475 00 00 16").await;
    let send = |key: &'static str, body: Value| {
        let s = &s;
        async move {
            let r = s
                .client
                .post(format!("{}/v1/sms/challenges", s.base))
                .bearer_auth(&s.kiosk)
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let st = r.status();
            (st, r.json::<Value>().await.unwrap())
        }
    };
    let (st, first) = send("k-1", json!({ "user": "r15", "phone_id": a })).await;
    assert_eq!(st, StatusCode::CREATED, "{first}");
    // The same request again, however it is spelt: the first challenge.
    for same in [
        json!({ "user": "r15", "phone_id": a }),
        json!({ "user": "r15", "phone_id": a, "locale": "nl" }),
        json!({ "user": "r15", "number": "+32 475 00 00 15" }),
    ] {
        let (st, v) = send("k-1", same.clone()).await;
        assert_eq!(st, StatusCode::OK, "{same}: {v}");
        assert_eq!(v["id"], first["id"], "{same}");
    }
    // The same key with another phone, number or locale: a conflict, nothing sent.
    for other in [
        json!({ "user": "r15", "phone_id": b }),
        json!({ "user": "r15", "number": "0475 00 00 16" }),
        json!({ "user": "r15", "phone_id": a, "locale": "en" }),
    ] {
        let (st, e) = send("k-1", other.clone()).await;
        assert_eq!(
            (st, code(&e)),
            (StatusCode::CONFLICT, "idempotency_conflict"),
            "{other}: {e}"
        );
    }
    // Keys are per token: the same token's key with another user is a conflict too; another
    // token's "k-1" is its own.
    let c = verified_phone(&s, "r16", "0475 00 00 17").await;
    let (st, v) = send("k-1", json!({ "user": "r16", "phone_id": c })).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let st = s
        .client
        .post(format!("{}/v1/sms/challenges", s.base))
        .bearer_auth(&s.admin)
        .header("idempotency-key", "k-1")
        .json(&json!({ "user": "r16", "phone_id": c }))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, StatusCode::CREATED, "another token's key");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(inbox(&s, "+32475000015", 2).await.len(), 2);
    assert_eq!(
        inbox(&s, "+32475000016", 1).await.len(),
        1,
        "only the registration code went to the other phone"
    );
}

#[tokio::test]
async fn a_phone_whose_code_cannot_be_sent_is_not_registered() {
    let (s, _) = server("[sms]\nglobal_hourly_budget = 1\n").await;
    add_phone(&s, "r17", "0475 00 00 18").await;
    let (st, e) = s
        .post("/v1/users/r17/phones", json!({ "number": "0475 00 00 19" }))
        .await;
    assert_eq!(
        (st, code(&e)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        "{e}"
    );
    let (st, e) = s
        .post("/v1/users/r18/phones", json!({ "number": "0475 00 00 20" }))
        .await;
    assert_eq!(code(&e), "rate_limited", "{st} {e}");
    let (_, phones) = s.get("/v1/users/r17/phones").await;
    let phones = phones["phones"].as_array().unwrap().clone();
    assert_eq!(phones.len(), 1, "only the first phone: {phones:?}");
    assert_eq!(phones[0]["masked_number"], "+32 4•• •• •• 18");
    let (_, phones) = s.get("/v1/users/r18/phones").await;
    assert_eq!(phones["phones"], json!([]));
    let (_, audit) = s.get("/v1/audit?user=r18").await;
    assert!(
        !audit.to_string().contains("phone.added"),
        "no audit of a phone that was not added: {audit}"
    );
}

#[tokio::test]
async fn the_encrypted_code_is_wiped_when_the_challenge_expires_untouched() {
    let (s, clock) = server("").await;
    let v = add_phone(&s, "r19", "0475 00 00 21").await;
    let id = v["challenge"]["id"].as_str().unwrap().to_string();
    inbox(&s, "+32475000021", 1).await;
    let store = &s.state.store;
    let code_enc = || store.sms_challenge(&id).unwrap().unwrap().code_enc;
    assert!(code_enc().is_some(), "kept while the challenge lives");
    clock.advance(Duration::from_secs(299));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(code_enc().is_some(), "a sweep before expiry keeps it");
    clock.advance(Duration::from_secs(1));
    // Nobody touches the challenge: the worker's sweep alone wipes the code.
    for _ in 0..250 {
        if code_enc().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the expired challenge's encrypted code was never wiped");
}
