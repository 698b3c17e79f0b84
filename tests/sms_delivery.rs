//! Delivery through real providers (local mock servers) behind the real API: status callbacks
//! with signatures, and `provider_unavailable` when every provider's circuit is open.

mod common;

use std::time::Duration;

use common::{code, TestServer};
use keygate::sms::providers::{twilio_signature, webhook_signature};
use reqwest::StatusCode;
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn wait_delivery(s: &TestServer, id: &str, status: &str) -> Value {
    for _ in 0..250 {
        let (_, v) = s.get(&format!("/v1/sms/challenges/{id}")).await;
        if v["delivery"]["status"] == status {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("challenge {id} never reached delivery status {status}");
}

#[tokio::test]
async fn webhook_delivery_reports_are_signature_checked() {
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({ "id": "H-77" })))
        .mount(&hook)
        .await;
    let s = TestServer::start_with(&format!(
        "[sms]\nproviders = [\"webhook\"]\n[sms.webhook]\nurl = \"{}/sms\"\nsecret = \"s3cret\"\n",
        hook.uri()
    ))
    .await;
    let (st, v) = s
        .post("/v1/users/r1/phones", json!({ "number": "0475 00 00 21" }))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["challenge"]["id"].as_str().unwrap();
    wait_delivery(&s, id, "sent").await;
    // The code reached the provider and nowhere else: verify with it.
    let body: Value =
        serde_json::from_slice(&hook.received_requests().await.unwrap()[0].body).unwrap();
    let text = body["text"].as_str().unwrap();
    let c: String = text.chars().take(6).collect();
    assert_eq!(body["to"], "+32475000021");

    let post_cb = |body: String, sig: String| {
        s.client
            .post(format!("{}/v1/sms/callbacks/webhook", s.base))
            .header("content-type", "application/json")
            .header("x-keygate-signature", sig)
            .body(body)
            .send()
    };
    let report = json!({ "id": "H-77", "status": "delivered" }).to_string();
    let r = post_cb(report.clone(), "sha256=00".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = post_cb(
        report.clone(),
        webhook_signature("s3cret", report.as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let v = wait_delivery(&s, id, "delivered").await;
    assert_eq!(v["state"], "pending");
    let unknown = json!({ "id": "nope", "status": "failed" }).to_string();
    let r = post_cb(
        unknown.clone(),
        webhook_signature("s3cret", unknown.as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (st, _) = s
        .post(
            &format!("/v1/sms/challenges/{id}/verify"),
            json!({ "code": c }),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    // No such provider.
    let r = s
        .client
        .post(format!("{}/v1/sms/callbacks/carrier-pigeon", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn twilio_status_callbacks_are_signature_checked() {
    let tw = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "sid": "SM42" })))
        .mount(&tw)
        .await;
    let cb_url = "https://kiosk.odisee.example/v1/sms/callbacks/twilio";
    let s = TestServer::start_with(&format!(
        "[sms]\nproviders = [\"twilio\"]\n[sms.twilio]\nbase_url = \"{}\"\naccount_sid = \"AC1\"\nauth_token = \"tok\"\nfrom = \"+32470000000\"\nstatus_callback_url = \"{cb_url}\"\n",
        tw.uri()
    ))
    .await;
    let (_, v) = s
        .post("/v1/users/r2/phones", json!({ "number": "0475 00 00 22" }))
        .await;
    let id = v["challenge"]["id"].as_str().unwrap();
    wait_delivery(&s, id, "sent").await;
    let params = vec![
        ("MessageSid".to_string(), "SM42".to_string()),
        ("MessageStatus".to_string(), "undelivered".to_string()),
        ("AccountSid".to_string(), "AC1".to_string()),
    ];
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&params)
        .finish();
    let send = |sig: String| {
        s.client
            .post(format!("{}/v1/sms/callbacks/twilio", s.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", sig)
            .body(body.clone())
            .send()
    };
    assert_eq!(
        send("AAAA".into()).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let r = send(twilio_signature("tok", cb_url, &params))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    wait_delivery(&s, id, "undeliverable").await;
}

#[tokio::test]
async fn provider_unavailable_when_every_circuit_is_open() {
    let s = TestServer::start_with(
        "[sms]\nproviders = [\"webhook\"]\nmax_retries = 0\nbreaker_failures = 1\n[sms.webhook]\nurl = \"http://127.0.0.1:1/sms\"\n",
    )
    .await;
    let (st, v) = s
        .post("/v1/users/r3/phones", json!({ "number": "0475 00 00 23" }))
        .await;
    assert_eq!(st, StatusCode::CREATED, "accepted into the outbox: {v}");
    for _ in 0..250 {
        let (_, p) = s.get("/v1/sms/providers").await;
        if p["providers"][0]["circuit"] == "open" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, p) = s.get("/v1/sms/providers").await;
    assert_eq!(p["providers"][0]["circuit"], "open", "{p}");
    assert_eq!(p["providers"][0]["last_error"], "connection failed");
    let (st, e) = s
        .post("/v1/users/r4/phones", json!({ "number": "0475 00 00 24" }))
        .await;
    assert_eq!(
        (st, code(&e)),
        (StatusCode::SERVICE_UNAVAILABLE, "provider_unavailable")
    );
}
