//! No PIN, token or other secret ever reaches a log line, even at trace level; and logs written
//! to a file or the journal carry no terminal colour codes.

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

#[test]
fn logs_to_a_file_carry_no_colour_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let log_path = tmp.path().join("keygate.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let data_dir = tmp.path().join("data");
    let mut daemon = keygate::harness::Spawned::spawn(
        keygate::harness::Spawned::command(env!("CARGO_BIN_EXE_keygate"), &data_dir)
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .stderr(log),
    );
    daemon.kill();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("keygate ready"), "{logs}");
    assert!(
        !logs.contains("\x1b["),
        "ANSI escape codes in the log file: {logs:?}"
    );
}
