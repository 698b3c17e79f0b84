//! The campus tests' kiosks: a `keygate serve` on a data dir and a campus store URL, its
//! tokens, calls to its API, and the SMS webhook it sends to.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use keygate::harness::Spawned;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Percent-encode a path segment (the simulated keys' ids hold ':').
pub use crate::common::enc as urlencode;

pub const BIN: &str = env!("CARGO_BIN_EXE_keygate");

/// A kiosk daemon on `dir` with the campus store at `url` and the webhook SMS provider.
pub fn kiosk(dir: &Path, url: &str, webhook: &str) -> Spawned {
    Spawned::spawn(
        Spawned::command(BIN, dir)
            .env("KEYGATE_STORE__URL", url)
            .env("KEYGATE_STORE__TIMEOUT_MS", "1500")
            .env("KEYGATE_SMS__PROVIDERS", "[webhook]")
            .env("KEYGATE_SMS__WEBHOOK__URL", webhook)
            .env("KEYGATE_SMS__OUTBOX_LEASE_SECS", "2")
            // The simulated keys' secrets follow the seed: the same key on either kiosk.
            .env("KEYGATE_SIMULATE_SEED", "11"),
    )
}

/// The campus's shared keys, copied from the first kiosk's data dir into the next one's (as
/// the README tells an operator to).
pub fn copy_campus_keys(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in ["sms.key", "audit-head.key"] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

pub fn token(dir: &Path, url: &str, role: &str) -> String {
    keygate::harness::cli_token(BIN, dir, role, &[("KEYGATE_STORE__URL", url)])
}

pub async fn call(
    base: &str,
    t: &str,
    m: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let c = reqwest::Client::new();
    let mut r = c.request(m, format!("{base}{path}")).bearer_auth(t);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// Register `number` for `user` at the kiosk `base`: the new challenge's id (201 asserted).
pub async fn add_phone(base: &str, t: &str, user: &str, number: &str) -> String {
    let (st, v) = call(
        base,
        t,
        Method::POST,
        &format!("/v1/users/{user}/phones"),
        Some(json!({ "number": number })),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v["challenge"]["id"].as_str().unwrap().to_string()
}

pub async fn sms_mock() -> MockServer {
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hook)
        .await;
    hook
}

/// The texts the mock received for `to`, oldest first.
pub async fn texts_to(hook: &MockServer, to: &str) -> Vec<String> {
    hook.received_requests()
        .await
        .unwrap()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .filter(|b| b["to"] == to)
        .map(|b| b["text"].as_str().unwrap_or("").to_string())
        .collect()
}

pub async fn wait_for_text(hooks: &[&MockServer], to: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut all = Vec::new();
        for h in hooks {
            all.extend(texts_to(h, to).await);
        }
        if all.len() >= n || Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
