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
