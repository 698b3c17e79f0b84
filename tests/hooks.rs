//! Event hooks through the real HTTP stack: signed POSTs to a receiver on 127.0.0.1 (an axum
//! server recording what it gets), subscriptions, retries, a dead delivery replayed by an
//! admin, and the real binary killed with SIGKILL while the receiver is down.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{code, enc, TestServer};
use keygate::harness::Spawned;
use keygate::hooks::verify_hook_signature;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_keygate");
const SECRET: &str = "hook-secret-7f3a9c";

/// One POST as the receiver saw it.
#[derive(Clone, Debug)]
struct Received {
    timestamp: String,
    signature: String,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Log {
    got: Vec<Received>,
    /// Statuses to answer, in order; 200 once they are used up.
    script: VecDeque<u16>,
}

/// A receiver on 127.0.0.1 that records every POST to `/hook`.
struct Receiver {
    url: String,
    log: Arc<Mutex<Log>>,
    notify: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, script)
    }

    /// On a given port (the daemon's configured URL), e.g. after it was down.
    async fn start_on(port: u16) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        Self::serve(listener, &[])
    }

    fn serve(listener: tokio::net::TcpListener, script: &[u16]) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Log {
            got: Vec::new(),
            script: script.iter().copied().collect(),
        }));
        let notify = Arc::new(tokio::sync::Notify::new());
        let state = (log.clone(), notify.clone());
        let app = axum::Router::new()
            .route("/hook", post(record))
            .with_state(state);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            log,
            notify,
            task,
        }
    }

    fn got(&self) -> Vec<Received> {
        self.log.lock().unwrap().got.clone()
    }

    /// Answer 200 from now on (the receiver is back).
    fn accept_all(&self) {
        self.log.lock().unwrap().script.clear();
    }

    /// Wait until `n` POSTs arrived (the test's own timeout bounds it).
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        loop {
            let notified = self.notify.notified();
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type ReceiverState = (Arc<Mutex<Log>>, Arc<tokio::sync::Notify>);

async fn record(
    State((log, notify)): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let status = {
        let mut log = log.lock().unwrap();
        log.got.push(Received {
            timestamp: h("x-keygate-timestamp"),
            signature: h("x-keygate-signature"),
            body: String::from_utf8(body.to_vec()).unwrap(),
        });
        log.script.pop_front().unwrap_or(200)
    };
    notify.notify_waiters();
    StatusCode::from_u16(status).unwrap()
}

fn hook_toml(url: &str, events: &[&str]) -> String {
    format!("[[hooks]]\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nevents = {events:?}\n")
}

/// Every key of `v`, recursively.
fn keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.push(k.clone());
                keys(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

/// The POST is signed with the secret over its timestamp and body, and says nothing secret.
fn check_signed_and_clean(r: &Received) {
    assert!(
        verify_hook_signature(SECRET, &r.timestamp, r.body.as_bytes(), &r.signature),
        "signature of {r:?}"
    );
    assert!(!verify_hook_signature(
        "another secret",
        &r.timestamp,
        r.body.as_bytes(),
        &r.signature
    ));
    assert!(!r.body.contains(SECRET));
    let mut names = Vec::new();
    keys(&r.json(), &mut names);
    for k in names {
        let k = k.to_ascii_lowercase();
        assert!(
            !["pin", "secret", "token", "tap", "code", "password"]
                .iter()
                .any(|bad| k.contains(bad)),
            "field `{k}` in {}",
            r.body
        );
    }
}

async fn enroll(s: &TestServer, user: &str) -> Value {
    let v = s
        .enroll(json!({ "user": user, "display_name": "An Peeters", "pin": "1234" }))
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    v
}

#[tokio::test]
async fn an_enrollment_and_a_reset_arrive_signed_and_unsubscribed_events_do_not() {
    let desk = Receiver::start(&[]).await;
    let security = Receiver::start(&[]).await;
    let toml = hook_toml(&desk.url, &["enrollment.succeeded", "user.reset"])
        + &hook_toml(&security.url, &["assertion.succeeded"]);
    let s = TestServer::start_with(&toml).await;
    s.set_pin("1234").await;
    let v = enroll(&s, "r0123456").await;
    let cred = v["result"]["credential"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.verify(json!({ "user": "r0123456", "pin": "1234" })).await;
    let (st, r) = s.delete("/v1/users/r0123456").await;
    assert_eq!(st, StatusCode::OK, "{r}");

    let got = desk.wait_for(2).await;
    let bodies: Vec<Value> = got.iter().map(Received::json).collect();
    assert_eq!(bodies[0]["event"], "enrollment.succeeded");
    assert_eq!(bodies[0]["data"]["user"], "r0123456");
    assert_eq!(bodies[0]["data"]["credential_id"], cred.as_str());
    assert_eq!(bodies[1]["event"], "user.reset");
    assert_eq!(bodies[1]["data"]["credentials_revoked"], 1);
    assert_ne!(bodies[0]["id"], bodies[1]["id"]);
    for r in &got {
        check_signed_and_clean(r);
        assert!(time::OffsetDateTime::parse(
            r.json()["at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok());
    }
    let seen = security.wait_for(1).await;
    assert_eq!(seen[0].json()["event"], "assertion.succeeded");
    check_signed_and_clean(&seen[0]);

    // Everything is delivered: nothing else can still be on its way to either receiver. A
    // receiver has the body before the worker records the 2xx: wait for the records.
    let hooks = settled_hooks(&s).await;
    assert_eq!(hooks["hooks"][0]["url"], desk.url.as_str());
    assert_eq!(hooks["hooks"][0]["pending"], 0, "{hooks}");
    assert_eq!(hooks["hooks"][0]["delivered"], 2, "{hooks}");
    assert_eq!(hooks["hooks"][1]["delivered"], 1, "{hooks}");
    assert!(!hooks.to_string().contains(SECRET));
    assert_eq!(
        desk.got().len(),
        2,
        "the assertion and the revocations are not the desk's"
    );
    assert_eq!(security.got().len(), 1);
    let (st, _) = s
        .req(
            reqwest::Method::GET,
            "/v1/hooks",
            Some(&s.kiosk.clone()),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_refused_delivery_is_retried_until_accepted_and_then_not_again() {
    let desk = Receiver::start(&[500]).await;
    let s = TestServer::start_with(&hook_toml(&desk.url, &["user.reset"])).await;
    s.set_pin("1234").await;
    enroll(&s, "r1").await;
    enroll(&s, "r2").await;
    assert_eq!(s.delete("/v1/users/r1").await.0, StatusCode::OK);
    let got = desk.wait_for(2).await;
    assert_eq!(got[0].body, got[1].body, "the same delivery, byte for byte");
    check_signed_and_clean(&got[1]);
    let first = got[0].json()["id"].clone();

    // A later event arriving means the worker has had its rounds since the success.
    assert_eq!(s.delete("/v1/users/r2").await.0, StatusCode::OK);
    let got = desk.wait_for(3).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2].json()["data"]["user"], "r2");
    assert_eq!(
        got.iter().filter(|r| r.json()["id"] == first).count(),
        2,
        "once refused, once accepted, never again"
    );
    let hooks = settled_hooks(&s).await;
    assert_eq!(hooks["hooks"][0]["pending"], 0, "{hooks}");
    assert_eq!(hooks["hooks"][0]["dead"], 0, "{hooks}");
}

#[tokio::test]
async fn a_dead_delivery_is_replayed_by_an_admin_and_then_delivered_once() {
    let clock = Arc::new(keygate::sms::ManualClock::new(1_790_000_000_000));
    // The receiver refuses everything until it is told it is back.
    let desk = Receiver::start(&[503; 64]).await;
    let s =
        TestServer::start_with_clock(&hook_toml(&desk.url, &["user.reset"]), clock.clone()).await;
    s.set_pin("1234").await;
    enroll(&s, "r5").await;
    enroll(&s, "r6").await;
    assert_eq!(s.delete("/v1/users/r5").await.0, StatusCode::OK);
    let first = desk.wait_for(1).await[0].clone();
    let id = first.json()["id"].as_str().unwrap().to_string();
    let replay = format!("/v1/hooks/deliveries/{id}/replay");

    // Still being retried: nothing to replay.
    let (st, e) = s.post(&replay, json!({})).await;
    assert_eq!((st, code(&e)), (StatusCode::CONFLICT, "conflict"), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("pending"));

    // A day later the worker gives it up (its next failed attempt ends the 24-hour window).
    clock.advance(Duration::from_secs(24 * 3600));
    let mut dead = Value::Null;
    for _ in 0..400 {
        let (st, v) = s.get("/v1/hooks/deliveries").await;
        assert_eq!(st, StatusCode::OK, "{v}");
        dead = v;
        if !dead["deliveries"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let d = &dead["deliveries"][0];
    assert_eq!(d["id"], id.as_str(), "{dead}");
    assert_eq!(d["state"], "dead");
    assert_eq!(d["event"], "user.reset");
    assert_eq!(d["url"], desk.url.as_str());
    assert_eq!(d["last_error"], "HTTP 503");
    assert!(d["attempts"].as_u64().unwrap() >= 1, "{d}");
    assert_eq!(d["delivered_at"], Value::Null);
    assert_eq!(settled_hooks(&s).await["hooks"][0]["dead"], 1);

    // Only an admin replays.
    let (st, _) = s
        .req(reqwest::Method::POST, &replay, Some(&s.kiosk.clone()), None)
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s
        .req(
            reqwest::Method::GET,
            "/v1/hooks/deliveries",
            Some(&s.kiosk.clone()),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // The receiver is back; the admin replays: the same body, signed afresh, accepted.
    desk.accept_all();
    let before = desk.got().len();
    let (st, v) = s.post(&replay, json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["attempts"], 0);
    assert_eq!(v["last_error"], Value::Null);
    let got = desk.wait_for(before + 1).await;
    let again = &got[before];
    assert_eq!(again.body, first.body, "the same delivery, byte for byte");
    check_signed_and_clean(again);
    let hooks = settled_hooks(&s).await;
    assert_eq!(hooks["hooks"][0]["dead"], 0, "{hooks}");
    assert_eq!(hooks["hooks"][0]["delivered"], 1, "{hooks}");
    let (_, delivered) = s.get("/v1/hooks/deliveries?state=delivered").await;
    assert_eq!(delivered["deliveries"][0]["id"], id.as_str(), "{delivered}");
    assert_ne!(delivered["deliveries"][0]["delivered_at"], Value::Null);

    // Delivered: not replayed again, and not sent again by the worker (a later event arriving
    // means it has had its rounds since).
    let (st, e) = s.post(&replay, json!({})).await;
    assert_eq!((st, code(&e)), (StatusCode::CONFLICT, "conflict"), "{e}");
    assert_eq!(s.delete("/v1/users/r6").await.0, StatusCode::OK);
    let got = desk.wait_for(before + 2).await;
    assert_eq!(got[before + 1].json()["data"]["user"], "r6");
    assert_eq!(got.len(), before + 2, "{got:?}");
    let (st, e) = s
        .post(
            "/v1/hooks/deliveries/0190c1d2-0000-7000-8000-000000000000/replay",
            json!({}),
        )
        .await;
    assert_eq!((st, code(&e)), (StatusCode::NOT_FOUND, "not_found"), "{e}");
    let (st, e) = s.get("/v1/hooks/deliveries?limit=0").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");

    // The replay is audited, naming the delivery and the admin's token.
    let (_, audit) = s.get("/v1/audit?limit=1000").await;
    let line = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "hook.delivery_replayed")
        .cloned()
        .unwrap_or_else(|| panic!("no replay in {audit}"));
    assert_eq!(line["detail"]["delivery_id"], id.as_str(), "{line}");
    assert_eq!(line["detail"]["event"], "user.reset");
    assert!(line["actor"].as_str().unwrap().starts_with("token:"));
}

/// `GET /v1/hooks` once no delivery is pending (at most ~10 s): a receiver has a body before
/// the worker records its 2xx.
async fn settled_hooks(s: &TestServer) -> serde_json::Value {
    let mut hooks = serde_json::Value::Null;
    for _ in 0..200 {
        let (st, h) = s.get("/v1/hooks").await;
        assert_eq!(st, StatusCode::OK, "{h}");
        hooks = h;
        let pending = hooks["hooks"]
            .as_array()
            .is_some_and(|all| all.iter().any(|h| h["pending"] != 0));
        if !pending {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    hooks
}

fn admin_token(dir: &std::path::Path) -> String {
    keygate::harness::cli_token(BIN, dir, "admin", &[])
}

#[tokio::test]
async fn an_event_survives_sigkill_while_the_receiver_is_down() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let token = admin_token(&dir);
    // A port nothing listens on until the receiver starts there after the restart.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let config = tmp.path().join("keygate.toml");
    std::fs::write(&config, hook_toml(&url, &["enrollment.succeeded"])).unwrap();
    let spawn = || Spawned::spawn(Spawned::command(BIN, &dir).arg("--config").arg(&config));

    let mut daemon = spawn();
    let c = reqwest::Client::new();
    let base = daemon.base.clone();
    let keys: Value = c
        .get(format!("{base}/v1/sim/keys"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = keys["keys"][0]["id"].as_str().unwrap().to_string();
    let r = c
        .post(format!("{base}/v1/devices/{}/pin", enc(&key)))
        .bearer_auth(&token)
        .json(&json!({ "new_pin": "1234" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let v: Value = c
        .post(format!("{base}/v1/enrollments?wait=true"))
        .bearer_auth(&token)
        .json(&json!({ "user": "r7", "display_name": "Rik", "pin": "1234" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["state"], "succeeded", "{v}");
    daemon.kill();

    let desk = Receiver::start_on(port).await;
    let _daemon = spawn();
    let got = desk.wait_for(1).await;
    assert_eq!(got[0].json()["event"], "enrollment.succeeded");
    assert_eq!(got[0].json()["data"]["user"], "r7");
    check_signed_and_clean(&got[0]);
}

#[tokio::test]
async fn an_sms_provider_circuit_opening_and_closing_are_events() {
    let desk = Receiver::start(&[]).await;
    // The SMS provider: down for the first send, up from then on.
    let sms = Receiver::start(&[503]).await;
    let toml = format!(
        "[sms]\nproviders = [\"webhook\"]\nmax_retries = 0\nbreaker_failures = 1\n\
         breaker_cooldown_secs = 1\n[sms.webhook]\nurl = \"{}\"\nsecret = \"sms-secret\"\n{}",
        sms.url,
        hook_toml(
            &desk.url,
            &["sms.provider.circuit_open", "sms.provider.circuit_closed"]
        )
    );
    let s = TestServer::start_with(&toml).await;
    let (st, v) = s
        .post("/v1/users/r3/phones", json!({ "number": "0475 00 00 23" }))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");

    let got = desk.wait_for(2).await;
    let events: Vec<Value> = got.iter().map(Received::json).collect();
    assert_eq!(
        events[0]["event"], "sms.provider.circuit_open",
        "{events:?}"
    );
    assert_eq!(events[0]["data"]["provider"], "webhook");
    assert_eq!(events[0]["data"]["consecutive_failures"], 1);
    assert_eq!(
        events[1]["event"], "sms.provider.circuit_closed",
        "{events:?}"
    );
    assert_eq!(events[1]["data"]["provider"], "webhook");
    // The message (with its code) went out on the retry, and no hook body carries its text.
    let sent = sms.wait_for(2).await;
    let text = sent[1].json()["text"].as_str().unwrap().to_string();
    for r in &got {
        check_signed_and_clean(r);
        assert!(!r.body.contains(&text));
    }
    let (_, audit) = s.get("/v1/audit?limit=1000").await;
    let names: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"sms.circuit_opened") && names.contains(&"sms.circuit_closed"));
}
