//! The holes found from outside (the hardening issue), each closed and pinned here over real
//! HTTP: every 4xx in keygate's error shape, JSON objects only, the cookie for page sessions
//! only, the one user-name rule on every route, the root and icon of the kiosk page.

mod common;

use common::{code, enc, TestServer};
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, ORIGIN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A raw request; the answer's status, content type and body text.
async fn raw(
    s: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> (StatusCode, String, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut r = client.request(method, format!("{}{}", s.base, path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some((ct, b)) = body {
        r = r.header(CONTENT_TYPE, ct).body(b.to_string());
    }
    let resp = r.send().await.unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, resp.text().await.unwrap())
}

fn assert_envelope(status: StatusCode, ct: &str, body: &str, want: &str) {
    assert!(status.is_client_error(), "{status} {body}");
    assert!(ct.starts_with("application/json"), "{status} {ct}: {body}");
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(code(&v), want, "{body}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn every_4xx_is_in_the_error_envelope() {
    let s = TestServer::start().await;
    let admin = Some(s.admin.as_str());
    // Invalid UTF-8 in a path parameter, on every kind of route that takes one.
    for (m, p) in [
        (Method::GET, "/v1/enrollments/%FF%FE"),
        (Method::DELETE, "/v1/enrollments/%FF%FE"),
        (Method::GET, "/v1/enrollments/%FF%FE/events"),
        (Method::GET, "/v1/assertions/%FF%FE"),
        (Method::GET, "/v1/users/%FF%FE"),
        (Method::GET, "/v1/users/%FF%FE/credentials"),
        (Method::GET, "/v1/users/x/credentials/%FF%FE"),
        (Method::GET, "/v1/sms/challenges/%FF%FE"),
        (Method::GET, "/v1/users/%FF%FE/phones"),
        (Method::POST, "/v1/sim/keys/%FF%FE/unplug"),
    ] {
        let (st, ct, body) = raw(&s, m.clone(), p, admin, None).await;
        assert_envelope(st, &ct, &body, "invalid_request");
        assert_eq!(st, StatusCode::BAD_REQUEST, "{m} {p}");
    }
    // Required query parameters missing.
    let (st, ct, body) = raw(&s, Method::GET, "/v1/sim/sms", admin, None).await;
    assert_envelope(st, &ct, &body, "invalid_request");
    let (st, ct, body) = raw(&s, Method::GET, "/kiosk/session", None, None).await;
    assert_envelope(st, &ct, &body, "invalid_request");
}

#[tokio::test]
async fn a_json_array_or_scalar_is_not_a_request_object() {
    let s = TestServer::start().await;
    let admin = Some(s.admin.as_str());
    for body in ["[]", " [ {\"user\":\"r1\"} ]", "1", "\"x\"", "null", ""] {
        let (st, ct, text) = raw(
            &s,
            Method::POST,
            "/v1/assertions",
            admin,
            Some(("application/json", body)),
        )
        .await;
        assert_envelope(st, &ct, &text, "invalid_request");
    }
    // Nothing was started.
    let (_, v) = s.get("/v1/audit?event=ceremony.started").await;
    assert!(
        !v.to_string().contains("assertion"),
        "no ceremony may start: {v}"
    );
}

#[tokio::test]
async fn the_session_cookie_carries_page_sessions_only() {
    let s = TestServer::start().await;
    for token in [&s.admin, &s.kiosk] {
        let r = s
            .client
            .get(format!("{}/v1/devices", s.base))
            .header(COOKIE, format!("keygate_session={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = s
            .client
            .get(format!("{}/v1/users", s.base))
            .header(COOKIE, format!("keygate_session={token}"))
            .header(ORIGIN, &s.base)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // The same tokens as bearer tokens work.
    let (st, _) = s.get("/v1/users").await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn one_user_name_rule_on_every_route() {
    let s = TestServer::start().await;
    let sub = "an.peeters+kiosk@odisee.be";
    // A sub-addressed name may have a phone as well as a key.
    let (st, v) = s
        .post(
            &format!("/v1/users/{}/phones", enc(sub)),
            json!({ "number": "+32470123456" }),
        )
        .await;
    assert!(st.is_success(), "{st} {v}");
    let long = "x".repeat(128);
    let (st, v) = s
        .post(
            &format!("/v1/users/{long}/phones"),
            json!({ "number": "+32470123457" }),
        )
        .await;
    assert!(st.is_success(), "{st} {v}");
    for bad in ["..", ".", "%2E%2E", "a%E2%80%AEb", &"x".repeat(129)] {
        let (st, v) = s
            .post(
                &format!("/v1/users/{bad}/phones"),
                json!({ "number": "+32470123458" }),
            )
            .await;
        assert!(st.is_client_error(), "{bad}: {st} {v}");
        assert_ne!(st, StatusCode::CREATED);
        for (m, body) in [
            (
                "/v1/enrollments",
                json!({ "user": bad, "display_name": "x" }),
            ),
            (
                "/v1/sms/challenges",
                json!({ "user": bad, "number": "+32470123458" }),
            ),
        ] {
            let decoded = percent_decode(bad);
            let mut body = body;
            body["user"] = decoded.clone().into();
            let (st, v) = s.post(m, body).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{m} {decoded:?}: {v}");
            assert_eq!(code(&v), "invalid_request");
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn the_root_leads_to_the_kiosk_page_and_the_icon_is_served() {
    let s = TestServer::start().await;
    let (st, _, _) = raw(&s, Method::GET, "/", None, None).await;
    assert!(st.is_redirection(), "{st}");
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[LOCATION], "/kiosk/");
    let (st, ct, body) = raw(&s, Method::GET, "/favicon.ico", None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(ct, "image/svg+xml");
    assert!(body.starts_with("<svg"));
    let (_, _, html) = raw(&s, Method::GET, "/kiosk/", None, None).await;
    assert!(html.contains(r#"rel="icon" href="/favicon.ico""#));
    // The visible countdown is not a live region; one polite status region announces.
    assert!(
        html.contains(r#"class="countdown" aria-hidden="true""#),
        "{html}"
    );
    assert_eq!(
        html.matches("aria-live=\"polite\"").count(),
        2,
        "plug status + announcer"
    );
}

/// The code the simulated SMS inbox received last for `number`.
async fn last_code(s: &TestServer, number: &str) -> String {
    for _ in 0..200 {
        let (_, v) = s.get(&format!("/v1/sim/sms?number={}", enc(number))).await;
        if let Some(m) = v["messages"].as_array().and_then(|m| m.last()) {
            return m["code"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no SMS for {number}");
}

#[tokio::test]
async fn challenges_and_ceremonies_belong_to_the_token_that_made_them() {
    let s = TestServer::start_with("[relying_party]\nuser_verification = \"preferred\"\n").await;
    let other =
        keygate::auth::create_token(&s.state.store, keygate::auth::Role::Kiosk, Some("kiosk 2"))
            .await
            .unwrap();
    let (a, b) = (Some(s.kiosk.as_str()), Some(other.as_str()));
    // Kiosk A adds a phone for r1: its registration challenge is A's.
    let (st, v) = s
        .req(
            Method::POST,
            "/v1/users/r1/phones",
            a,
            Some(json!({ "number": "+32470000001" })),
        )
        .await;
    assert!(st.is_success(), "{st} {v}");
    let ch = v["challenge"]["id"].as_str().unwrap().to_string();
    let right = last_code(&s, "+32470000001").await;
    // Kiosk B knows the id and even the right code: it finds nothing and changes nothing.
    let path = format!("/v1/sms/challenges/{ch}");
    for (m, p, body) in [
        (Method::GET, path.clone(), None),
        (
            Method::POST,
            format!("{path}/verify"),
            Some(json!({ "code": right })),
        ),
        (
            Method::POST,
            format!("{path}/verify"),
            Some(json!({ "code": "000000" })),
        ),
        (Method::POST, format!("{path}/resend"), None),
        (Method::DELETE, path.clone(), None),
    ] {
        let (st, v) = s.req(m.clone(), &p, b, body).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{m} {p}: {v}");
        assert_eq!(code(&v), "not_found");
    }
    let (st, v) = s.req(Method::GET, &path, a, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "pending", "untouched: {v}");
    assert_eq!(v["attempts_left"], json!(5), "no attempt burnt: {v}");
    let (st, _) = s.get(&path).await;
    assert_eq!(st, StatusCode::OK, "an admin sees all");
    let (st, v) = s
        .req(
            Method::POST,
            &format!("{path}/verify"),
            a,
            Some(json!({ "code": right })),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "the owner verifies: {v}");

    // A ceremony kiosk A started on a key nobody touches.
    let key = s.sim_key().await;
    s.configure_key(&key, json!({ "touch": "never" })).await;
    let (st, v) = s
        .req(
            Method::POST,
            "/v1/enrollments",
            a,
            Some(json!({ "user": "r1", "display_name": "R One", "timeout_ms": 60000 })),
        )
        .await;
    assert!(st.is_success(), "{st} {v}");
    let id = v["id"].as_str().unwrap().to_string();
    let path = format!("/v1/enrollments/{id}");
    for (m, p, body) in [
        (Method::GET, path.clone(), None),
        (Method::GET, format!("{path}/events"), None),
        (
            Method::POST,
            format!("{path}/pin"),
            Some(json!({ "pin": "1234" })),
        ),
        (Method::DELETE, path.clone(), None),
        (Method::GET, format!("/v1/assertions/{id}"), None),
    ] {
        let (st, v) = s.req(m.clone(), &p, b, body).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{m} {p}: {v}");
    }
    let (st, v) = s.req(Method::GET, &path, a, None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        v["state"] == "pending" || v["state"] == "waiting_touch",
        "not cancelled by B: {v}"
    );
    let (st, _) = s.get(&path).await;
    assert_eq!(st, StatusCode::OK, "an admin sees all");
    let (st, v) = s.req(Method::DELETE, &path, a, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn an_idempotency_key_is_scoped_per_token_and_bound_to_its_request() {
    let s = TestServer::start().await;
    let other =
        keygate::auth::create_token(&s.state.store, keygate::auth::Role::Kiosk, Some("kiosk 2"))
            .await
            .unwrap();
    for (user, number) in [("r1", "+32470000011"), ("r2", "+32470000012")] {
        let (st, v) = s
            .post(
                &format!("/v1/users/{user}/phones"),
                json!({ "number": number }),
            )
            .await;
        assert!(st.is_success(), "{v}");
        let id = v["challenge"]["id"].as_str().unwrap().to_string();
        let c = last_code(&s, number).await;
        let (st, v) = s
            .post(
                &format!("/v1/sms/challenges/{id}/verify"),
                json!({ "code": c }),
            )
            .await;
        assert!(st.is_success(), "{v}");
    }
    let number = |user: &str| {
        if user == "r1" {
            "+32470000011"
        } else {
            "+32470000012"
        }
    };
    let send = |token: String, user: &'static str| {
        let client = s.client.clone();
        let url = format!("{}/v1/sms/challenges", s.base);
        async move {
            let r = client
                .post(url)
                .bearer_auth(token)
                .header("idempotency-key", "req-1")
                .json(&json!({ "user": user, "number": number(user) }))
                .send()
                .await
                .unwrap();
            let st = r.status();
            (st, r.json::<Value>().await.unwrap())
        }
    };
    let (st, first) = send(s.kiosk.clone(), "r1").await;
    assert_eq!(st, StatusCode::CREATED, "{first}");
    let (st, again) = send(s.kiosk.clone(), "r1").await;
    assert_eq!(st, StatusCode::OK, "a replay");
    assert_eq!(again["id"], first["id"]);
    let (st, v) = send(s.kiosk.clone(), "r2").await;
    assert_eq!(st, StatusCode::CONFLICT, "same key, another user: {v}");
    assert_eq!(code(&v), "idempotency_conflict");
    let (st, theirs) = send(other.clone(), "r1").await;
    assert_eq!(
        st,
        StatusCode::CREATED,
        "another token's key is its own: {theirs}"
    );
    assert_ne!(theirs["id"], first["id"]);
}

#[tokio::test]
async fn users_come_a_page_at_a_time() {
    let s = TestServer::start().await;
    for i in 0..5 {
        let (st, v) = s
            .post(
                &format!("/v1/users/u{i}/phones"),
                json!({ "number": format!("+3247000010{i}") }),
            )
            .await;
        assert!(st.is_success(), "{v}");
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/users?limit=2&after={a}"),
            None => "/v1/users?limit=2".to_string(),
        };
        let (st, v) = s.get(&path).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let page = v["users"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|u| u["name"].as_str().unwrap().to_string()));
        match v["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["u0", "u1", "u2", "u3", "u4"]);
    for bad in [
        "/v1/users?limit=0",
        "/v1/users?limit=1001",
        "/v1/users?after=..",
    ] {
        let (st, v) = s.get(bad).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
}
