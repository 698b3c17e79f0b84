//! The durable outbox: the real binary accepts a challenge and is killed (SIGKILL) before the
//! message could go out; on restart the worker sends it, once, and the code verifies.

use std::time::Duration;

use keygate::harness::Spawned;
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const BIN: &str = env!("CARGO_BIN_EXE_keygate");

fn start(dir: &std::path::Path, webhook: &str) -> (Spawned, String) {
    let daemon = Spawned::spawn(
        Spawned::command(BIN, dir)
            .env("KEYGATE_SMS__PROVIDERS", "[webhook]")
            .env("KEYGATE_SMS__WEBHOOK__URL", webhook),
    );
    let base = daemon.base.clone();
    (daemon, base)
}

fn token(dir: &std::path::Path) -> String {
    keygate::harness::cli_token(BIN, dir, "kiosk", &[])
}

#[tokio::test]
async fn a_challenge_accepted_before_a_kill_is_sent_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t = token(dir.path());
    let c = reqwest::Client::new();
    // First life: the provider is unreachable, so nothing can be sent before the kill.
    let (mut child, base) = start(dir.path(), "http://127.0.0.1:1/sms");
    let r = c
        .post(format!("{base}/v1/users/r1/phones"))
        .bearer_auth(&t)
        .json(&json!({ "number": "0475 00 00 31" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let id = v["challenge"]["id"].as_str().unwrap().to_string();
    child.kill();

    // Second life: the provider is back.
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hook)
        .await;
    let (mut child, base) = start(dir.path(), &format!("{}/sms", hook.uri()));
    let mut sent = Vec::new();
    for _ in 0..300 {
        sent = hook.received_requests().await.unwrap();
        if !sent.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sent.len(), 1, "sent once after the restart");
    let body: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(body["to"], "+32475000031");
    let code: String = body["text"].as_str().unwrap().chars().take(6).collect();
    let r = c
        .post(format!("{base}/v1/sms/challenges/{id}/verify"))
        .bearer_auth(&t)
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        hook.received_requests().await.unwrap().len(),
        1,
        "and not again"
    );
    child.kill();
}
