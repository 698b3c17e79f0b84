//! Delivery through real providers (local mock servers) behind the real API: status callbacks
//! with signatures, and `provider_unavailable` when every provider's circuit is open.

mod common;

use std::time::Duration;

use common::{code, TestServer};
use hmac::{Hmac, Mac};
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

/// Post a signed webhook delivery report; returns the HTTP status.
async fn webhook_report(s: &TestServer, id: &str, status: &str) -> StatusCode {
    let body = json!({ "id": id, "status": status }).to_string();
    s.client
        .post(format!("{}/v1/sms/callbacks/webhook", s.base))
        .header("content-type", "application/json")
        .header(
            "x-keygate-signature",
            webhook_signature("s3cret", body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn delivery_status_only_moves_forward() {
    let hook = MockServer::start().await;
    for id in ["H-1", "H-2"] {
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(202).set_body_json(json!({ "id": id })))
            .up_to_n_times(1)
            .mount(&hook)
            .await;
    }
    let s = TestServer::start_with(&format!(
        "[sms]\nproviders = [\"webhook\"]\n[sms.webhook]\nurl = \"{}/sms\"\nsecret = \"s3cret\"\n",
        hook.uri()
    ))
    .await;
    let (_, v) = s
        .post("/v1/users/r5/phones", json!({ "number": "0475 00 00 25" }))
        .await;
    let one = v["challenge"]["id"].as_str().unwrap().to_string();
    wait_delivery(&s, &one, "sent").await;
    let (_, v) = s
        .post("/v1/users/r6/phones", json!({ "number": "0475 00 00 26" }))
        .await;
    let two = v["challenge"]["id"].as_str().unwrap().to_string();
    wait_delivery(&s, &two, "sent").await;
    let status = |id: String| {
        let s = &s;
        async move {
            let (_, v) = s.get(&format!("/v1/sms/challenges/{id}")).await;
            v["delivery"]["status"].as_str().unwrap().to_string()
        }
    };
    // delivered is final: a late "sent" (reports arrive out of order) or "failed" is ignored;
    // undeliverable beats sent and is terminal too.
    for (message, last, late_reports) in [
        ("H-1", "delivered", ["sent", "failed", "undeliverable"]),
        ("H-2", "undeliverable", ["sent", "delivered", "failed"]),
    ] {
        let challenge = if message == "H-1" {
            one.clone()
        } else {
            two.clone()
        };
        assert_eq!(
            webhook_report(&s, message, last).await,
            StatusCode::NO_CONTENT
        );
        assert_eq!(status(challenge.clone()).await, last);
        for late in late_reports {
            assert_eq!(
                webhook_report(&s, message, late).await,
                StatusCode::NO_CONTENT
            );
            assert_eq!(
                status(challenge.clone()).await,
                last,
                "{message}: after a late {late}"
            );
        }
    }
}

/// Vonage's "SHA-256 HMAC" webhook signature, computed here independently of keygate's.
fn vonage_sig(secret: &str, params: &[(&str, &str)]) -> String {
    let mut sorted: Vec<_> = params.iter().filter(|(k, _)| *k != "sig").collect();
    sorted.sort();
    let data: String = sorted
        .iter()
        .map(|(k, v)| format!("&{k}={}", v.replace(['&', '='], "_")))
        .collect();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    hex::encode_upper(mac.finalize().into_bytes())
}

async fn vonage_form(s: &TestServer, params: &[(&str, &str)]) -> StatusCode {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    s.client
        .post(format!("{}/v1/sms/callbacks/vonage", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

async fn vonage_server(signature_secret: &str) -> (MockServer, TestServer) {
    let vo = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({ "message-count": "1", "messages": [{ "status": "0", "message-id": "0A00000123ABCD1" }] }),
        ))
        .mount(&vo)
        .await;
    let s = TestServer::start_with(&format!(
        "[sms]\nproviders = [\"vonage\"]\n[sms.vonage]\nbase_url = \"{}\"\napi_key = \"vk\"\n\
         api_secret = \"vs\"\nsignature_secret = \"{signature_secret}\"\n",
        vo.uri()
    ))
    .await;
    (vo, s)
}

#[tokio::test]
async fn vonage_delivery_receipts_are_signature_checked() {
    let (_vo, s) = vonage_server("vonage-sig-secret").await;
    let (_, v) = s
        .post("/v1/users/r7/phones", json!({ "number": "0475 00 00 27" }))
        .await;
    let id = v["challenge"]["id"].as_str().unwrap().to_string();
    wait_delivery(&s, &id, "sent").await;
    // A DLR as Vonage posts it (form fields; `msisdn` is the recipient).
    let mut params = vec![
        ("msisdn", "32475000027"),
        ("to", "Odisee"),
        ("network-code", "20601"),
        ("messageId", "0A00000123ABCD1"),
        ("price", "0.06"),
        ("status", "delivered"),
        ("scts", "2611251200"),
        ("err-code", "0"),
        ("api-key", "vk"),
        ("client-ref", "x&y=z"),
        ("message-timestamp", "2026-11-25 12:00:00"),
        ("timestamp", "1795608000"),
        ("nonce", "2c1f3a1e-8f35-4c5d-9f1b-6c8d8e9f0a1b"),
    ];
    assert_eq!(
        vonage_form(&s, &params).await,
        StatusCode::UNAUTHORIZED,
        "no sig"
    );
    let wrong = vonage_sig("another-secret", &params);
    let mut forged = params.clone();
    forged.push(("sig", &wrong));
    assert_eq!(
        vonage_form(&s, &forged).await,
        StatusCode::UNAUTHORIZED,
        "wrong secret"
    );
    let right = vonage_sig("vonage-sig-secret", &params);
    let mut tampered = params.clone();
    tampered.push(("sig", &right));
    tampered[5] = ("status", "failed");
    assert_eq!(
        vonage_form(&s, &tampered).await,
        StatusCode::UNAUTHORIZED,
        "changed after signing"
    );
    assert_eq!(
        wait_delivery(&s, &id, "sent").await["delivery"]["status"],
        "sent"
    );
    params.push(("sig", &right));
    assert_eq!(vonage_form(&s, &params).await, StatusCode::NO_CONTENT);
    wait_delivery(&s, &id, "delivered").await;
    // A receipt posted as JSON (Vonage's "POST-JSON" webhook method), with a lower-case sig.
    let fields = [
        ("messageId", "0A00000123ABCD1"),
        ("status", "delivered"),
        ("msisdn", "32475000027"),
        ("timestamp", "1795608001"),
    ];
    let mut obj: serde_json::Map<String, Value> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    obj.insert(
        "sig".into(),
        json!(vonage_sig("vonage-sig-secret", &fields).to_ascii_lowercase()),
    );
    let r = s
        .client
        .post(format!("{}/v1/sms/callbacks/vonage", s.base))
        .json(&Value::Object(obj))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // An authentic receipt for a message keygate never sent.
    let mut unknown = vec![("messageId", "nope"), ("status", "delivered")];
    let sig = vonage_sig("vonage-sig-secret", &unknown);
    unknown.push(("sig", &sig));
    assert_eq!(vonage_form(&s, &unknown).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn vonage_receipts_are_refused_without_a_signature_secret() {
    let (_vo, s) = vonage_server("").await;
    let (_, v) = s
        .post("/v1/users/r8/phones", json!({ "number": "0475 00 00 28" }))
        .await;
    let id = v["challenge"]["id"].as_str().unwrap().to_string();
    wait_delivery(&s, &id, "sent").await;
    let mut params = vec![("messageId", "0A00000123ABCD1"), ("status", "delivered")];
    // Signed with the empty secret: still refused, there is nothing to check it against.
    let sig = vonage_sig("", &params);
    params.push(("sig", &sig));
    assert_eq!(vonage_form(&s, &params).await, StatusCode::UNAUTHORIZED);
    let (_, g) = s.get(&format!("/v1/sms/challenges/{id}")).await;
    assert_eq!(g["delivery"]["status"], "sent");
}

/// Twilio counts any non-2xx answer to a status callback as a failed webhook: statuses keygate
/// does not act on (`partially_delivered`, `receiving`, `received`, and any new one) are
/// acknowledged like the others, and change nothing; a wrong signature is still refused.
#[tokio::test]
async fn twilio_statuses_keygate_does_not_act_on_are_acknowledged() {
    let tw = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "sid": "SM43" })))
        .mount(&tw)
        .await;
    let cb_url = "https://kiosk.odisee.example/v1/sms/callbacks/twilio";
    let s = TestServer::start_with(&format!(
        "[sms]\nproviders = [\"twilio\"]\n[sms.twilio]\nbase_url = \"{}\"\naccount_sid = \"AC1\"\nauth_token = \"tok\"\nfrom = \"+32470000000\"\nstatus_callback_url = \"{cb_url}\"\n",
        tw.uri()
    ))
    .await;
    let (_, v) = s
        .post("/v1/users/r9/phones", json!({ "number": "0475 00 00 29" }))
        .await;
    let id = v["challenge"]["id"].as_str().unwrap().to_string();
    wait_delivery(&s, &id, "sent").await;
    let send = |status: &str, sig: Option<&str>| {
        let params = vec![
            ("MessageSid".to_string(), "SM43".to_string()),
            ("MessageStatus".to_string(), status.to_string()),
            ("AccountSid".to_string(), "AC1".to_string()),
        ];
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&params)
            .finish();
        let sig = sig
            .map(str::to_string)
            .unwrap_or_else(|| twilio_signature("tok", cb_url, &params));
        s.client
            .post(format!("{}/v1/sms/callbacks/twilio", s.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", sig)
            .body(body)
            .send()
    };
    for status in [
        "partially_delivered",
        "receiving",
        "received",
        "a_status_twilio_adds_later",
    ] {
        assert_eq!(
            send(status, Some("AAAA")).await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "{status}, wrong signature"
        );
        assert_eq!(
            send(status, None).await.unwrap().status(),
            StatusCode::NO_CONTENT,
            "{status}"
        );
        let (_, g) = s.get(&format!("/v1/sms/challenges/{id}")).await;
        assert_eq!(g["delivery"]["status"], "sent", "after {status}");
    }
    // Statuses keygate acts on still move it.
    assert_eq!(
        send("delivered", None).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    wait_delivery(&s, &id, "delivered").await;
}

/// The same for Vonage receipts: a status keygate does not know is acknowledged and changes
/// nothing.
#[tokio::test]
async fn vonage_statuses_keygate_does_not_act_on_are_acknowledged() {
    let (_vo, s) = vonage_server("vonage-sig-secret").await;
    let (_, v) = s
        .post("/v1/users/r10/phones", json!({ "number": "0475 00 00 30" }))
        .await;
    let id = v["challenge"]["id"].as_str().unwrap().to_string();
    wait_delivery(&s, &id, "sent").await;
    for status in ["unknown", "a_status_vonage_adds_later"] {
        let mut params = vec![("messageId", "0A00000123ABCD1"), ("status", status)];
        let wrong = vonage_sig("another-secret", &params);
        let mut forged = params.clone();
        forged.push(("sig", &wrong));
        assert_eq!(
            vonage_form(&s, &forged).await,
            StatusCode::UNAUTHORIZED,
            "{status}, wrong signature"
        );
        let sig = vonage_sig("vonage-sig-secret", &params);
        params.push(("sig", &sig));
        assert_eq!(
            vonage_form(&s, &params).await,
            StatusCode::NO_CONTENT,
            "{status}"
        );
        let (_, g) = s.get(&format!("/v1/sms/challenges/{id}")).await;
        assert_eq!(g["delivery"]["status"], "sent", "after {status}");
    }
}
