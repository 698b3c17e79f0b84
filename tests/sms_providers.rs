//! Each SMS provider's exact HTTP request against a local mock server, and the failover chain:
//! retries on 5xx/timeouts/refused connections, no retry or failover on a 4xx rejection,
//! Retry-After honoured, and a circuit breaker that opens and closes (manual clock).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use keygate::config::{Secret, SmsConfig};
use keygate::sms::dispatch::{CircuitState, Dispatched, Dispatcher};
use keygate::sms::providers::{build_chain, webhook_signature, OutgoingSms};
use keygate::sms::ManualClock;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn msg() -> OutgoingSms {
    OutgoingSms {
        id: "msg-1".into(),
        to: "+32475345678".into(),
        text: "042917 is je Odisee-verificatiecode.".into(),
    }
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn cfg(twilio: &str, vonage: &str, providers: &[&str]) -> SmsConfig {
    let mut c = SmsConfig {
        providers: providers.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    c.twilio.base_url = twilio.into();
    c.twilio.account_sid = "AC123".into();
    c.twilio.auth_token = Secret::new("tw-secret");
    c.twilio.messaging_service_sid = Some("MG999".into());
    c.twilio.status_callback_url = Some("https://kiosk.example/v1/sms/callbacks/twilio".into());
    c.vonage.base_url = vonage.into();
    c.vonage.api_key = "vk".into();
    c.vonage.api_secret = Secret::new("vs");
    c.request_timeout_ms = 300;
    c.max_retries = 1;
    c.retry_base_ms = 1;
    c
}

fn dispatcher(c: &SmsConfig, clock: Arc<ManualClock>) -> Dispatcher {
    Dispatcher::new(
        build_chain(c, false, None).expect("the providers' HTTP client"),
        clock,
        c.max_retries,
        Duration::from_millis(c.retry_base_ms),
        c.breaker_failures,
        Duration::from_secs(c.breaker_cooldown_secs),
    )
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_790_000_000_000))
}

const TWILIO_PATH: &str = "/2010-04-01/Accounts/AC123/Messages.json";

async fn twilio_ok(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path(TWILIO_PATH))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({ "sid": "SM1", "status": "queued" })),
        )
        .mount(server)
        .await;
}

async fn vonage_ok(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/sms/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({ "message-count": "1", "messages": [{ "status": "0", "message-id": "V1" }] }),
        ))
        .mount(server)
        .await;
}

#[tokio::test]
async fn twilio_request_is_exact() {
    let tw = MockServer::start().await;
    twilio_ok(&tw).await;
    let d = dispatcher(&cfg(&tw.uri(), "http://127.0.0.1:1", &["twilio"]), clock());
    let out = d.send(&msg()).await;
    assert_eq!(
        out,
        Dispatched::Sent {
            provider: "twilio",
            receipt: keygate::sms::providers::SendReceipt {
                provider_message_id: Some("SM1".into())
            }
        }
    );
    let reqs = tw.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method.as_str(), "POST");
    assert_eq!(r.url.path(), TWILIO_PATH);
    let expect_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("AC123:tw-secret")
    );
    assert_eq!(
        r.headers.get("authorization").unwrap().to_str().unwrap(),
        expect_auth
    );
    assert!(r
        .headers
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("application/x-www-form-urlencoded"));
    let f = form(&r.body);
    assert_eq!(f["To"], "+32475345678");
    assert_eq!(f["Body"], msg().text);
    assert_eq!(f["MessagingServiceSid"], "MG999");
    assert_eq!(
        f["StatusCallback"],
        "https://kiosk.example/v1/sms/callbacks/twilio"
    );
    assert!(!f.contains_key("From"));
}

#[tokio::test]
async fn vonage_request_is_exact() {
    let vo = MockServer::start().await;
    vonage_ok(&vo).await;
    let d = dispatcher(&cfg("http://127.0.0.1:1", &vo.uri(), &["vonage"]), clock());
    assert!(matches!(
        d.send(&msg()).await,
        Dispatched::Sent {
            provider: "vonage",
            ..
        }
    ));
    let reqs = vo.received_requests().await.unwrap();
    let f = form(&reqs[0].body);
    assert_eq!(reqs[0].url.path(), "/sms/json");
    assert_eq!(f["api_key"], "vk");
    assert_eq!(f["api_secret"], "vs");
    assert_eq!(f["to"], "32475345678", "Vonage wants no '+'");
    assert_eq!(f["from"], "Odisee");
    assert_eq!(f["text"], msg().text);
    assert_eq!(f["client-ref"], "msg-1");
}

#[tokio::test]
async fn vonage_status_in_a_200_is_honoured() {
    let vo = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sms/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({ "messages": [{ "status": "3", "error-text": "Invalid to number" }] }),
        ))
        .mount(&vo)
        .await;
    let d = dispatcher(&cfg("http://127.0.0.1:1", &vo.uri(), &["vonage"]), clock());
    assert!(matches!(
        d.send(&msg()).await,
        Dispatched::Rejected {
            provider: "vonage",
            ..
        }
    ));
}

#[tokio::test]
async fn webhook_request_is_signed_and_templated() {
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sms"))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({ "id": "H1" })))
        .mount(&hook)
        .await;
    let mut c = cfg("http://127.0.0.1:1", "http://127.0.0.1:1", &["webhook"]);
    c.webhook.url = format!("{}/sms", hook.uri());
    c.webhook.secret = Secret::new("hook-secret");
    c.webhook.body_template =
        r#"{"recipient": "{{to}}", "message": "{{text}}", "ref": "{{id}}", "channel": "sms"}"#
            .into();
    let mut m = msg();
    m.text = "line \"one\"\nline two".into();
    let d = dispatcher(&c, clock());
    assert!(matches!(
        d.send(&m).await,
        Dispatched::Sent {
            provider: "webhook",
            ..
        }
    ));
    let r = &hook.received_requests().await.unwrap()[0];
    let body: serde_json::Value =
        serde_json::from_slice(&r.body).expect("valid JSON despite quotes and newlines");
    assert_eq!(
        body,
        json!({ "recipient": "+32475345678", "message": "line \"one\"\nline two", "ref": "msg-1", "channel": "sms" })
    );
    assert_eq!(r.headers.get("idempotency-key").unwrap(), "msg-1");
    assert_eq!(
        r.headers
            .get("x-keygate-signature")
            .unwrap()
            .to_str()
            .unwrap(),
        webhook_signature("hook-secret", &r.body)
    );
}

#[tokio::test]
async fn failover_on_500_after_retries() {
    let (tw, vo) = (MockServer::start().await, MockServer::start().await);
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&tw)
        .await;
    vonage_ok(&vo).await;
    let d = dispatcher(&cfg(&tw.uri(), &vo.uri(), &["twilio", "vonage"]), clock());
    assert!(matches!(
        d.send(&msg()).await,
        Dispatched::Sent {
            provider: "vonage",
            ..
        }
    ));
    assert_eq!(
        tw.received_requests().await.unwrap().len(),
        2,
        "one try and one retry"
    );
    let h = d.health();
    assert_eq!(h[0].failed, 2);
    assert_eq!(h[1].sent, 1);
}

#[tokio::test]
async fn failover_on_timeout_and_on_refused_connection() {
    let (tw, vo) = (MockServer::start().await, MockServer::start().await);
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_secs(3)))
        .mount(&tw)
        .await;
    vonage_ok(&vo).await;
    let mut c = cfg(&tw.uri(), &vo.uri(), &["twilio", "vonage"]);
    c.max_retries = 0;
    let d = dispatcher(&c, clock());
    assert!(matches!(
        d.send(&msg()).await,
        Dispatched::Sent {
            provider: "vonage",
            ..
        }
    ));
    assert_eq!(d.health()[0].last_error.as_deref(), Some("timeout"));

    // Nothing listens on port 1.
    let d = dispatcher(
        &cfg("http://127.0.0.1:1", &vo.uri(), &["twilio", "vonage"]),
        clock(),
    );
    assert!(matches!(
        d.send(&msg()).await,
        Dispatched::Sent {
            provider: "vonage",
            ..
        }
    ));
    assert_eq!(
        d.health()[0].last_error.as_deref(),
        Some("connection failed")
    );
}

#[tokio::test]
async fn a_4xx_rejection_is_final() {
    let (tw, vo) = (MockServer::start().await, MockServer::start().await);
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({ "code": 21211, "message": "Invalid 'To' Phone Number" })),
        )
        .mount(&tw)
        .await;
    vonage_ok(&vo).await;
    let d = dispatcher(&cfg(&tw.uri(), &vo.uri(), &["twilio", "vonage"]), clock());
    match d.send(&msg()).await {
        Dispatched::Rejected { provider, detail } => {
            assert_eq!(provider, "twilio");
            assert!(detail.contains("400"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(tw.received_requests().await.unwrap().len(), 1, "no retry");
    assert_eq!(
        vo.received_requests().await.unwrap().len(),
        0,
        "no failover"
    );
    assert_eq!(
        d.health()[0].circuit,
        CircuitState::Closed,
        "a rejection is not an outage"
    );
}

#[tokio::test]
async fn a_429_is_retried_after_retry_after() {
    let tw = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .mount(&tw)
        .await;
    twilio_ok(&tw).await;
    let d = dispatcher(&cfg(&tw.uri(), "http://127.0.0.1:1", &["twilio"]), clock());
    let started = std::time::Instant::now();
    assert!(matches!(
        d.send(&msg()).await,
        Dispatched::Sent {
            provider: "twilio",
            ..
        }
    ));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for Retry-After"
    );
    assert_eq!(tw.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn the_circuit_opens_skips_the_provider_and_closes_again() {
    let (tw, vo) = (MockServer::start().await, MockServer::start().await);
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .mount(&tw)
        .await;
    twilio_ok(&tw).await;
    vonage_ok(&vo).await;
    let mut c = cfg(&tw.uri(), &vo.uri(), &["twilio", "vonage"]);
    c.max_retries = 0;
    c.breaker_failures = 2;
    c.breaker_cooldown_secs = 30;
    let clk = clock();
    let d = dispatcher(&c, clk.clone());
    for _ in 0..2 {
        assert!(matches!(
            d.send(&msg()).await,
            Dispatched::Sent {
                provider: "vonage",
                ..
            }
        ));
    }
    assert_eq!(d.health()[0].circuit, CircuitState::Open);
    // While open, twilio is not even tried.
    assert!(matches!(
        d.send(&msg()).await,
        Dispatched::Sent {
            provider: "vonage",
            ..
        }
    ));
    assert_eq!(tw.received_requests().await.unwrap().len(), 2);
    clk.advance(Duration::from_secs(30));
    assert_eq!(d.health()[0].circuit, CircuitState::HalfOpen);
    // The trial request succeeds (the mock now answers 201): closed again.
    assert!(matches!(
        d.send(&msg()).await,
        Dispatched::Sent {
            provider: "twilio",
            ..
        }
    ));
    assert_eq!(d.health()[0].circuit, CircuitState::Closed);
    assert_eq!(d.health()[0].consecutive_failures, 0);
}

#[tokio::test]
async fn every_provider_down_is_unavailable() {
    let mut c = cfg(
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
        &["twilio", "vonage"],
    );
    c.max_retries = 0;
    let d = dispatcher(&c, clock());
    assert!(matches!(
        d.send(&msg()).await,
        Dispatched::Unavailable { .. }
    ));
}
