//! No PIN, token or other secret ever reaches a log line, even at trace level.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;

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

#[tokio::test]
async fn pins_and_tokens_never_logged() {
    let cap = Capture::default();
    let writer = cap.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let s = common::TestServer::start().await;
    let pin = "73915468";
    s.set_pin(pin).await;
    let v = s
        .enroll(json!({ "user": "r1", "display_name": "R", "pin": pin }))
        .await;
    assert_eq!(v["state"], "succeeded");
    // A wrong PIN through the interactive path, then the right one.
    let (_, v) = s
        .post("/v1/assertions?wait=true", json!({ "user": "r1" }))
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    s.post(
        &format!("/v1/assertions/{id}/pin?wait=true"),
        json!({ "pin": "24681357" }),
    )
    .await;
    let (_, v) = s
        .post(
            &format!("/v1/assertions/{id}/pin?wait=true"),
            json!({ "pin": pin }),
        )
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    // A request with a bad token.
    s.req(
        reqwest::Method::GET,
        "/v1/devices",
        Some("kg_AAAA_secretsecret"),
        None,
    )
    .await;

    let logs = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
    assert!(logs.len() > 100, "logging was captured");
    for secret in [pin, "24681357", &s.admin, &s.kiosk, "secretsecret"] {
        assert!(!logs.contains(secret), "secret {secret} found in logs");
    }
    let admin_secret = s.admin.rsplit('_').next().unwrap();
    assert!(!logs.contains(admin_secret));
}
