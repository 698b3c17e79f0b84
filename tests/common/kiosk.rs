//! The kiosk page's side of a test: page sessions (a one-time code exchanged for the session
//! cookie), requests as the page makes them, and signed handoffs.

use keygate::kiosk::{handoff_secret, sign_handoff, Handoff};
use reqwest::header::{COOKIE, ORIGIN, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::TestServer;

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// What `keygate kiosk-url` does: a one-time code, stored as its hash.
pub async fn session_code(s: &TestServer) -> String {
    let (code, hash) = keygate::kiosk::new_session_code();
    s.state
        .store
        .insert_kiosk_code(
            &hash,
            time::OffsetDateTime::now_utc() + time::Duration::minutes(10),
        )
        .await
        .unwrap();
    code
}

pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Use a one-time code; returns the `Set-Cookie` header.
pub async fn exchange(s: &TestServer, code: &str) -> reqwest::Response {
    no_redirects()
        .get(format!("{}/kiosk/session?code={code}", s.base))
        .send()
        .await
        .unwrap()
}

/// A fresh page session; returns its `Cookie` header value (`keygate_session=kg_...`).
pub async fn page_session(s: &TestServer) -> String {
    let r = exchange(s, &session_code(s).await).await;
    assert!(r.status().is_redirection(), "{}", r.status());
    let set = r.headers()[SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().trim().to_string()
}

pub fn token_of(cookie: &str) -> &str {
    cookie.split_once('=').unwrap().1
}

/// A request as the kiosk page makes it: the session cookie, and for anything but GET the
/// page's own Origin.
pub async fn page(
    s: &TestServer,
    cookie: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = s
        .client
        .request(method.clone(), format!("{}{}", s.base, path))
        .header(COOKIE, cookie);
    if method != Method::GET {
        r = r.header(ORIGIN, &s.base);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub fn handoff(s: &TestServer, user: &str, exp: i64) -> String {
    let secret = handoff_secret(&s.state.cfg).unwrap();
    sign_handoff(
        &secret,
        &Handoff {
            user: user.into(),
            display_name: format!("Student {user}"),
            exp,
        },
    )
}

pub async fn sign_in(s: &TestServer, cookie: &str, user: &str) {
    let token = handoff(s, user, now() + 300);
    let (st, v) = page(
        s,
        cookie,
        Method::POST,
        "/v1/kiosk/handoff",
        Some(json!({ "token": token })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["user"], user);
}
