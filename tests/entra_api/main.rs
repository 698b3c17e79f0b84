//! Enrolling keys into Microsoft Entra ID end to end: real HTTP to keygate, keygate's real HTTP
//! to the fake identity platform + Graph (tests/common/fake_entra.rs, which verifies a
//! registration the way Entra does), the simulated key speaking real CTAP2. Covers the
//! ceremony (`target: "entra"`) and each failure it surfaces, "whose key is this?", the phone
//! sync, and the service desk's Entra routes.

#[path = "../common/mod.rs"]
mod common;

mod enroll;
mod failures;
mod identify;
mod methods;

use std::sync::Arc;
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
