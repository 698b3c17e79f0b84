//! The durable outbox: the real binary accepts a challenge and is killed (SIGKILL) before the
//! message could go out, or while its send waits for the provider; on restart the worker sends
//! it, once, and the code verifies.

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
    // First life: the provider is unreachable, so nothing can be sent before the kill.
    killed_then_sent_once_after_the_restart("http://127.0.0.1:1/sms", None, "31").await;
}

#[tokio::test]
async fn a_message_in_flight_at_a_kill_is_sent_after_the_restart() {
    // First life: the provider takes the message and never answers, so the daemon is mid-send
    // (on the send it starts right after the commit, with the message claimed for itself) when
    // it dies. The restart releases its claims: the message goes out at once, not after the
    // claim's lease (30 s by default, longer than this test waits).
    let stuck = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(600)))
        .mount(&stuck)
        .await;
    let url = format!("{}/sms", stuck.uri());
    killed_then_sent_once_after_the_restart(&url, Some(&stuck), "32").await;
}

/// A phone added (its verification code queued) on a daemon whose provider is `first`, which
/// is killed once `first` received the message (when given) or at once; the next daemon on
/// the same data dir, with a working provider, sends the message once and the code verifies.
async fn killed_then_sent_once_after_the_restart(
    first: &str,
    in_flight: Option<&MockServer>,
    last_digits: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let t = token(dir.path());
    let c = reqwest::Client::new();
    let (mut child, base) = start(dir.path(), first);
    let r = c
        .post(format!("{base}/v1/users/r1/phones"))
        .bearer_auth(&t)
        .json(&json!({ "number": format!("0475 00 00 {last_digits}") }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let id = v["challenge"]["id"].as_str().unwrap().to_string();
    if let Some(stuck) = in_flight {
        let mut tries = 0;
        while stuck.received_requests().await.unwrap().is_empty() {
            tries += 1;
            assert!(tries < 500, "the first daemon never tried to send");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
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
    assert_eq!(body["to"], format!("+324750000{last_digits}"));
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
