//! `GET /metrics` through the real HTTP stack and the real binary: who may read it, and what
//! it counts after real ceremonies on a simulated key and a real SMS flow, read back by a real
//! exposition parser in both formats the route speaks. Also: the dashboard and the alert rules
//! in `dist/` name only metrics keygate exposes.

mod common;
#[path = "metrics/dist.rs"]
mod dist;
#[path = "metrics/exposition.rs"]
mod exposition;

use std::time::Duration;

use common::{code, enc, TestServer};
use exposition::Scrape;
use keygate::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// What Prometheus 2.x sends.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

async fn metrics_token(s: &TestServer) -> String {
    keygate::auth::create_token(&s.state.store, Role::Metrics, Some("prometheus"))
        .await
        .unwrap()
}

/// GET /metrics: status, Content-Type, body.
async fn get_metrics(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    accept: Option<&str>,
) -> (StatusCode, String, String) {
    let mut r = client.get(format!("{base}/metrics"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(a) = accept {
        r = r.header("accept", a);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, resp.text().await.unwrap())
}

/// Both formats of one moment, parsed; they must hold the same series (but for the timing of
/// the scrapes themselves, which the second one adds to).
async fn scrape(s: &TestServer, token: &str) -> Scrape {
    let (st, ct, text) = get_metrics(&s.client, &s.base, Some(token), None).await;
    assert_eq!(st, StatusCode::OK, "{text}");
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    let prometheus = Scrape::prometheus(&text);
    let (st, ct, text) =
        get_metrics(&s.client, &s.base, Some(token), Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        ct,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let openmetrics = Scrape::openmetrics(&text);
    let not_scrapes = |s: &Scrape| {
        s.sorted()
            .into_iter()
            .filter(|x| x.labels.get("route").map(String::as_str) != Some("/metrics"))
            .collect::<Vec<_>>()
    };
    assert_eq!(not_scrapes(&prometheus), not_scrapes(&openmetrics));
    openmetrics
}

#[tokio::test]
async fn metrics_need_a_metrics_or_admin_token_and_a_metrics_token_does_nothing_else() {
    let s = TestServer::start().await;
    let metrics = metrics_token(&s).await;

    let (st, _, body) = get_metrics(&s.client, &s.base, None, None).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((st, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (st, _, body) = get_metrics(&s.client, &s.base, Some(&s.kiosk), None).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "forbidden"), "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`metrics`"));
    let (st, _, body) = get_metrics(&s.client, &s.base, Some("kg_nope_x"), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
    for token in [&metrics, &s.admin] {
        let (st, _, body) = get_metrics(&s.client, &s.base, Some(token), None).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        assert!(Scrape::prometheus(&body)
            .get("keygate_build_info", &[])
            .is_some());
    }

    // Everywhere else a metrics token is refused, whatever the route's group.
    let elsewhere: [(Method, String, Option<Value>); 8] = [
        (Method::GET, "/v1/users".into(), None),
        (Method::GET, "/v1/audit".into(), None),
        (Method::GET, "/v1/users/r1/phones".into(), None),
        (Method::GET, "/v1/devices".into(), None),
        (Method::GET, "/v1/sim/keys".into(), None),
        (
            Method::POST,
            "/v1/enrollments".into(),
            Some(json!({ "user": "r1", "display_name": "R" })),
        ),
        (
            Method::POST,
            "/v1/assertions".into(),
            Some(json!({ "user": "r1" })),
        ),
        (Method::GET, "/v1/sms/providers".into(), None),
    ];
    for (method, path, body) in elsewhere {
        let (st, v) = s.req(method.clone(), &path, Some(&metrics), body).await;
        assert_eq!(
            (st, code(&v)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{method} {path}: {v}"
        );
    }
}

async fn sms_code_for(s: &TestServer, number: &str) -> String {
    for _ in 0..500 {
        let (st, v) = s.get(&format!("/v1/sim/sms?number={}", enc(number))).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        if let Some(m) = v["messages"].as_array().unwrap().first() {
            return m["code"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no SMS reached {number}");
}

fn wrong(c: &str) -> String {
    let d = (c.as_bytes()[0] - b'0' + 1) % 10;
    format!("{d}{}", &c[1..])
}

async fn add_phone(s: &TestServer, user: &str, number: &str) -> String {
    let (st, v) = s
        .post(
            &format!("/v1/users/{user}/phones"),
            json!({ "number": number }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v["challenge"]["id"].as_str().unwrap().to_string()
}

async fn type_code(s: &TestServer, challenge: &str, code_text: &str) -> (StatusCode, Value) {
    s.post(
        &format!("/v1/sms/challenges/{challenge}/verify"),
        json!({ "code": code_text }),
    )
    .await
}

/// Scrape until `done` holds (the outbox worker records a send after the provider took it).
async fn scrape_until(s: &TestServer, token: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    for _ in 0..500 {
        let m = scrape(s, token).await;
        if done(&m) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the metrics never settled");
}

#[tokio::test]
async fn ceremonies_sms_codes_and_requests_are_counted() {
    let s = TestServer::start_with("[sms]\nlockout_failures = 2\n").await;
    let token = metrics_token(&s).await;
    let key = s.sim_key().await;
    s.set_pin("1234").await;

    // A local enrollment and a verification, both succeeded.
    let body = json!({ "user": "r0123456", "display_name": "An Peeters", "pin": "1234" });
    let enrolled = s.enroll(body).await;
    assert_eq!(enrolled["state"], "succeeded", "{enrolled}");
    let ceremony = enrolled["id"].as_str().unwrap().to_string();
    let (st, _) = s.get(&format!("/v1/enrollments/{ceremony}")).await;
    assert_eq!(st, StatusCode::OK);
    let verified = s.verify(json!({ "user": "r0123456", "pin": "1234" })).await;
    assert_eq!(verified["state"], "succeeded", "{verified}");
    // One the user declines on the key, one cancelled while it waits for a touch.
    s.configure_key(&key, json!({ "touch": "deny" })).await;
    let denied = s
        .enroll(json!({ "user": "r0999", "display_name": "R", "pin": "1234" }))
        .await;
    assert_eq!(denied["error"]["code"], "operation_denied", "{denied}");
    s.configure_key(&key, json!({ "touch": "never" })).await;
    let (st, started) = s
        .post(
            "/v1/enrollments",
            json!({ "user": "r0888", "display_name": "R", "pin": "1234" }),
        )
        .await;
    assert!(st.is_success(), "{started}");
    let waiting = started["id"].as_str().unwrap();
    // Cancelled once it is in the key (so that its time there counts).
    let mut in_key = false;
    for _ in 0..500 {
        let (_, v) = s.get(&format!("/v1/enrollments/{waiting}")).await;
        in_key = v["state"] == "waiting_touch";
        if in_key {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(in_key, "the enrollment never waited for a touch");
    let (st, cancelled) = s.delete(&format!("/v1/enrollments/{waiting}")).await;
    assert_eq!(
        (st, &cancelled["state"]),
        (StatusCode::OK, &json!("cancelled"))
    );

    // SMS: a wrong code then the right one; another user locked by two wrong codes.
    let first = add_phone(&s, "r0123456", "0475 12 34 56").await;
    let right = sms_code_for(&s, "+32475123456").await;
    let (st, v) = type_code(&s, &first, &wrong(&right)).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "wrong_code")
    );
    let (st, v) = type_code(&s, &first, &right).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let second = add_phone(&s, "r0777", "0475 65 43 21").await;
    let other = sms_code_for(&s, "+32475654321").await;
    assert_eq!(
        type_code(&s, &second, &wrong(&other)).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (st, v) = type_code(&s, &second, &wrong(&other)).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "user_locked")
    );
    // A path no route matches.
    let (st, _) = s.get("/v1/nope/r0123456").await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let sent = [("provider", "console"), ("status", "sent")];
    let m = scrape_until(&s, &token, |m| {
        m.get("keygate_sms_messages_total", &sent) == Some(2.0)
            && m.get("keygate_sms_outbox_pending", &[]) == Some(0.0)
    })
    .await;

    // Ceremonies, by kind, target and outcome.
    let ceremonies = |kind: &str, outcome: &str| {
        m.get(
            "keygate_ceremonies_total",
            &[("kind", kind), ("target", "local"), ("outcome", outcome)],
        )
    };
    assert_eq!(ceremonies("enrollment", "succeeded"), Some(1.0));
    assert_eq!(ceremonies("assertion", "succeeded"), Some(1.0));
    assert_eq!(ceremonies("enrollment", "operation_denied"), Some(1.0));
    assert_eq!(ceremonies("enrollment", "cancelled"), Some(1.0));
    assert_eq!(ceremonies("assertion", "operation_denied"), None);
    let took = |kind: &str, state: &str| {
        m.value(
            "keygate_ceremony_duration_seconds_count",
            &[("kind", kind), ("target", "local"), ("state", state)],
        )
    };
    assert_eq!(took("enrollment", "succeeded"), 1.0);
    assert_eq!(took("enrollment", "failed"), 1.0);
    assert_eq!(took("enrollment", "cancelled"), 1.0);
    assert_eq!(took("assertion", "succeeded"), 1.0);
    // All four reached the key; the cancelled one waited in it for a touch.
    let in_key = |kind: &str| m.value("keygate_ceremony_key_seconds_count", &[("kind", kind)]);
    assert_eq!((in_key("enrollment"), in_key("assertion")), (3.0, 1.0));
    assert!(
        m.value(
            "keygate_ceremony_key_seconds_sum",
            &[("kind", "enrollment")]
        ) > 0.0
    );
    let whole = m.value(
        "keygate_ceremony_duration_seconds_sum",
        &[("kind", "assertion"), ("state", "succeeded")],
    );
    let key_part = m.value("keygate_ceremony_key_seconds_sum", &[("kind", "assertion")]);
    assert!(
        key_part <= whole,
        "the key's time is part of the ceremony's: {key_part} > {whole}"
    );
    let buckets = m.label_values("keygate_ceremony_key_seconds_bucket", "le");
    assert!(buckets.contains(&"+Inf".to_string()), "{buckets:?}");
    assert_eq!(
        m.value(
            "keygate_ceremony_key_seconds_bucket",
            &[("kind", "enrollment"), ("le", "+Inf")]
        ),
        3.0
    );

    // SMS challenges by purpose and outcome, messages by provider, the gauges.
    let sms = |outcome: &str| {
        m.get(
            "keygate_sms_challenges_total",
            &[("purpose", "verify_phone"), ("outcome", outcome)],
        )
    };
    assert_eq!(sms("created"), Some(2.0));
    assert_eq!(sms("wrong_code"), Some(2.0));
    assert_eq!(sms("verified"), Some(1.0));
    assert_eq!(sms("user_locked"), Some(1.0));
    assert_eq!(
        m.label_values("keygate_sms_challenges_total", "purpose"),
        ["verify_phone"]
    );
    assert_eq!(m.value("keygate_sms_messages_total", &sent), 2.0);
    assert_eq!(
        m.value(
            "keygate_sms_provider_circuit_open",
            &[("provider", "console")]
        ),
        0.0
    );
    assert_eq!(m.value("keygate_lockouts_active", &[]), 1.0);
    assert_eq!(m.value("keygate_devices_plugged", &[]), 1.0);
    assert_eq!(
        m.value(
            "keygate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // HTTP: routes are the router's templates; no id, user name or number is a label.
    let routes = m.label_values("keygate_http_request_duration_seconds_count", "route");
    let doc = keygate::http::openapi::document(&keygate::config::Config::default());
    for r in &routes {
        assert!(
            r == "unmatched" || doc["paths"].get(r).is_some(),
            "{r} is not a documented route template ({routes:?})"
        );
    }
    for want in [
        "/v1/enrollments",
        "/v1/enrollments/{id}",
        "/v1/sms/challenges/{id}/verify",
        "/v1/users/{user}/phones",
        "unmatched",
    ] {
        assert!(
            routes.iter().any(|r| r == want),
            "{want} missing: {routes:?}"
        );
    }
    let private = [
        ceremony.as_str(),
        waiting,
        first.as_str(),
        "r0123456",
        "r0777",
        "+32475",
        "nope",
    ];
    for series in &m.series {
        for value in series.labels.values() {
            assert!(
                !private.iter().any(|p| value.contains(p)),
                "{} carries {value}",
                series.name
            );
        }
    }
    let verify = |status: &str| {
        m.value(
            "keygate_http_request_duration_seconds_count",
            &[
                ("method", "POST"),
                ("route", "/v1/sms/challenges/{id}/verify"),
                ("status", status),
            ],
        )
    };
    assert_eq!(
        (verify("422"), verify("200"), verify("429")),
        (2.0, 1.0, 1.0)
    );
    assert_eq!(
        m.value(
            "keygate_http_request_duration_seconds_count",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "keygate_http_request_duration_seconds_count",
            &[("method", "DELETE"), ("route", "/v1/enrollments/{id}")]
        ),
        1.0
    );
    // Every family's TYPE is what its name says.
    for (family, kind) in &m.families {
        let want = if family.ends_with("_seconds") {
            "histogram"
        } else if matches!(
            family.as_str(),
            "keygate_ceremonies"
                | "keygate_sms_challenges"
                | "keygate_sms_messages"
                | "keygate_entra_requests"
        ) {
            "counter"
        } else {
            "gauge"
        };
        assert_eq!(kind, want, "{family}");
    }
}

/// An enrollment into Microsoft Entra ID (against the fake tenant): the ceremony under
/// `target="entra"`, and each call to the identity platform and Graph by its path template.
#[tokio::test]
async fn entra_ceremonies_and_calls_are_counted_by_template() {
    let fake = common::fake_entra::start(Default::default()).await;
    fake.add_user("s1@student.odisee.be", "Student One");
    let s = TestServer::start_with(&fake.entra_toml()).await;
    s.set_pin("1234").await;
    let body =
        json!({ "user": "s1", "display_name": "Student One", "pin": "1234", "target": "entra" });
    let v = s.enroll(body).await;
    assert_eq!(v["state"], "succeeded", "{v}");
    let m = scrape(&s, &metrics_token(&s).await).await;
    let ended = [
        ("kind", "enrollment"),
        ("target", "entra"),
        ("outcome", "succeeded"),
    ];
    assert_eq!(m.value("keygate_ceremonies_total", &ended), 1.0);
    assert_eq!(
        m.value(
            "keygate_ceremony_key_seconds_count",
            &[("kind", "enrollment")]
        ),
        1.0
    );
    let calls = |method: &str, call: &str, status: &str| {
        m.get(
            "keygate_entra_requests_total",
            &[("method", method), ("call", call), ("status", status)],
        )
    };
    assert_eq!(
        calls("POST", "{tenant}/oauth2/v2.0/token", "200"),
        Some(1.0)
    );
    let options = "users/{upn}/authentication/fido2Methods/creationOptions";
    assert_eq!(calls("GET", options, "200"), Some(1.0));
    let register = "users/{upn}/authentication/fido2Methods";
    assert_eq!(calls("POST", register, "201"), Some(1.0));
    let tenant = fake.options().tenant_id.clone();
    for series in &m.series {
        for value in series.labels.values() {
            assert!(
                !value.contains("s1") && !value.contains(&tenant),
                "{} carries {value}",
                series.name
            );
        }
    }
}

/// The real binary: a token made by `keygate token create --role metrics`, OpenMetrics for
/// Prometheus's Accept header, and the same refusals.
#[tokio::test]
async fn the_daemon_serves_metrics_to_a_metrics_token() {
    const BIN: &str = env!("CARGO_BIN_EXE_keygate");
    let tmp = tempfile::tempdir().unwrap();
    let token = |role: &str| keygate::harness::cli_token(BIN, tmp.path(), role, &[]);
    let (metrics, kiosk) = (token("metrics"), token("kiosk"));
    let daemon =
        keygate::harness::Spawned::spawn(&mut keygate::harness::Spawned::command(BIN, tmp.path()));
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{}/healthz", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let (st, ct, text) = get_metrics(
        &client,
        &daemon.base,
        Some(&metrics),
        Some(PROMETHEUS_ACCEPT),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{text}");
    assert_eq!(
        ct,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(text.ends_with("# EOF\n"));
    let m = Scrape::openmetrics(&text);
    assert_eq!(m.value("keygate_devices_plugged", &[]), 1.0);
    assert_eq!(m.value("keygate_sms_outbox_pending", &[]), 0.0);
    assert_eq!(
        m.value(
            "keygate_http_request_duration_seconds_count",
            &[("method", "GET"), ("route", "/healthz"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        m.label_values("keygate_build_info", "version"),
        [env!("CARGO_PKG_VERSION")]
    );

    let (st, _, _) = get_metrics(&client, &daemon.base, None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _, _) = get_metrics(&client, &daemon.base, Some(&kiosk), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let users = client
        .get(format!("{}/v1/users", daemon.base))
        .bearer_auth(&metrics)
        .send()
        .await
        .unwrap();
    assert_eq!(users.status(), StatusCode::FORBIDDEN);
    drop(daemon);
}

#[test]
fn the_dashboard_and_the_alerts_name_only_exposed_metrics() {
    dist::check_dashboard();
    dist::check_alerts();
}
