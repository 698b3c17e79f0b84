//! No SMS code and no full phone number in the logs (captured at trace level), with a real
//! provider (the console provider, whose job is to print the message, is the one exception).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
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

/// One trace-level capture for the whole test binary (a global subscriber can be set once).
fn capture() -> &'static Capture {
    static CAP: OnceLock<Capture> = OnceLock::new();
    CAP.get_or_init(|| {
        let cap = Capture::default();
        let writer = cap.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "trace,wiremock=off,tokio_postgres=info",
            ))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        cap
    })
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[tokio::test]
async fn codes_and_numbers_never_logged() {
    let cap = capture();
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
    let logs = cap.text();
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

/// A provider's 4xx body quoting the recipient (as Twilio's do) reaches neither the log, nor
/// the outbox row, nor the provider health: the number is masked in every format.
#[tokio::test]
async fn a_rejection_quoting_the_number_is_masked_everywhere() {
    let cap = capture();
    let tw = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 21211,
            "message": "The 'To' number +32475112233 is not a valid phone number \
                        (0475112233, 0475 11 22 33, 0475/11.22.33, 32475112233).",
            "more_info": "https://www.twilio.com/docs/errors/21211",
            "status": 400
        })))
        .mount(&tw)
        .await;
    let s = common::TestServer::start_with(&format!(
        "[sms]\nproviders = [\"twilio\"]\n[sms.twilio]\nbase_url = \"{}\"\naccount_sid = \"AC1\"\n\
         auth_token = \"tok\"\nfrom = \"+32470000000\"\n",
        tw.uri()
    ))
    .await;
    let (st, v) = s
        .post("/v1/users/r2/phones", json!({ "number": "0475 11 22 33" }))
        .await;
    assert!(st.is_success(), "{v}");
    let id = v["challenge"]["id"].as_str().unwrap().to_string();
    let mut delivery = Value::Null;
    for _ in 0..250 {
        let (_, g) = s.get(&format!("/v1/sms/challenges/{id}")).await;
        delivery = g["delivery"]["status"].clone();
        if delivery == "undeliverable" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(delivery, "undeliverable", "the provider's 400 was final");
    let (_, health) = s.get("/v1/sms/providers").await;
    let last_error = health["providers"][0]["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("{health}"))
        .to_string();
    assert!(
        last_error.starts_with("HTTP 400") && last_error.contains("not a valid phone number"),
        "the detail stays useful: {last_error}"
    );
    let db = keygate::harness::raw_db(&s.data_dir);
    let stored: String = db
        .query_row(
            "SELECT last_error FROM sms_outbox WHERE challenge_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    let logs = cap.text();
    assert!(
        logs.contains("SMS rejected by the provider"),
        "the rejection is logged:\n{logs}"
    );
    let everywhere = [
        ("log", logs.as_str()),
        ("provider health", &health.to_string()),
        ("outbox.last_error", &stored),
    ];
    for (place, text) in everywhere {
        for number in [
            "+32475112233",
            "32475112233",
            "475112233",
            "0475112233",
            "0475 11 22 33",
            "0475/11.22.33",
        ] {
            assert!(
                !text.contains(number),
                "`{number}` leaked into the {place}:\n{text}"
            );
        }
    }
}
