//! No SMS code and no full phone number in the logs (captured at trace level), with a real
//! provider (the console provider, whose job is to print the message, is the one exception).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

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
async fn codes_and_numbers_never_logged() {
    let cap = Capture::default();
    let writer = cap.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace,wiremock=off"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hook)
        .await;
    let s = common::TestServer::start_with(&format!(
        "[sms]\nproviders = [\"webhook\"]\n[sms.webhook]\nurl = \"{}/sms\"\n",
        hook.uri()
    ))
    .await;
    let (_, v) = s
        .post("/v1/users/r1/phones", json!({ "number": "0475 98 76 54" }))
        .await;
    let id = v["challenge"]["id"].as_str().unwrap().to_string();
    let mut reqs = Vec::new();
    for _ in 0..250 {
        reqs = hook.received_requests().await.unwrap();
        if !reqs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body: Value = serde_json::from_slice(&reqs[0].body).unwrap();
    let code: String = body["text"].as_str().unwrap().chars().take(6).collect();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    s.post(
        &format!("/v1/sms/challenges/{id}/verify"),
        json!({ "code": wrong }),
    )
    .await;
    let (st, _) = s
        .post(
            &format!("/v1/sms/challenges/{id}/verify"),
            json!({ "code": code }),
        )
        .await;
    assert!(st.is_success());
    let logs = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("SMS sent") && logs.contains("+32 4•• •• •• 54"),
        "the log is captured and masked:\n{logs}"
    );
    for secret in [code.as_str(), wrong, "475987654", "0475 98 76 54"] {
        assert!(
            !logs.contains(secret),
            "`{secret}` leaked into the log:\n{logs}"
        );
    }
}
