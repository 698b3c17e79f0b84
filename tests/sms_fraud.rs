//! The SMS fraud guard (`[sms.fraud]`) through the real HTTP API, a real SQLite file, the
//! console provider's simulated inbox and a manual clock: a pumped prefix is blocked while
//! others keep working, blocks end, are shown and lifted by admins, survive a restart, and the
//! monthly cap stops every send until the month turns.
//!
//! The pumped range is Latvian (+371 2123 xxxx, prefix `3712123`): the stand-in for a premium
//! range like +882 16 (a non-geographic code no `allowed_countries` entry can admit).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{code, TestServer};
use keygate::sms::ManualClock;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// 2026-09-21T14:13:20Z.
const START: i64 = 1_790_000_000_000;
const PUMPED: &str = "3712123";

fn config(fraud: &str) -> String {
    format!("[sms]\nallowed_countries = [\"BE\", \"LV\"]\n[sms.fraud]\n{fraud}\n")
}

async fn server(fraud: &str) -> (TestServer, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(START));
    let s = TestServer::start_with_clock(&config(fraud), clock.clone()).await;
    (s, clock)
}

fn pumped(i: u32) -> String {
    format!("+{PUMPED}{i:04}")
}

fn belgian(i: u32) -> String {
    format!("+3247534{i:04}")
}

fn urlenc(s: &str) -> String {
    s.replace('+', "%2B")
}

async fn messages_to(s: &TestServer, number: &str) -> Vec<Value> {
    let (st, v) = s
        .get(&format!("/v1/sim/sms?number={}", urlenc(number)))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["messages"].as_array().unwrap().clone()
}

/// Wait until the outbox worker (real) delivered `n` messages to `number`.
async fn inbox(s: &TestServer, number: &str, n: usize) -> Vec<Value> {
    for _ in 0..300 {
        let msgs = messages_to(s, number).await;
        if msgs.len() >= n {
            return msgs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{number} did not receive {n} messages");
}

/// Register `number` for `user` (an unverified phone and its code): the status and body.
async fn add_phone(s: &TestServer, user: &str, number: &str) -> (StatusCode, Value) {
    s.post(
        &format!("/v1/users/{user}/phones"),
        json!({ "number": number }),
    )
    .await
}

async fn add_phone_ok(s: &TestServer, user: &str, number: &str) -> Value {
    let (st, v) = add_phone(s, user, number).await;
    assert_eq!(st, StatusCode::CREATED, "{number}: {v}");
    v
}

/// Type the code `number` received for challenge `v["challenge"]`.
async fn verify(s: &TestServer, added: &Value, number: &str) {
    let ch = added["challenge"]["id"].as_str().unwrap();
    let msgs = inbox(s, number, 1).await;
    let (st, r) = s
        .post(
            &format!("/v1/sms/challenges/{ch}/verify"),
            json!({ "code": msgs[0]["code"] }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{r}");
}

async fn phones_of(s: &TestServer, user: &str) -> Vec<Value> {
    let (st, v) = s.get(&format!("/v1/users/{user}/phones")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["phones"].as_array().unwrap().clone()
}

async fn fraud_view(s: &TestServer) -> Value {
    let (st, v) = s.get("/v1/sms/fraud").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

async fn audit_lines(s: &TestServer, event: &str) -> Vec<Value> {
    let (st, v) = s.get("/v1/audit?limit=1000").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["events"]
        .as_array()
        .expect("audit events")
        .iter()
        .filter(|e| e["event"] == event)
        .cloned()
        .collect()
}

fn assert_refused(st: StatusCode, e: &Value, status: StatusCode, expect: &str) -> u64 {
    assert_eq!((st, code(e)), (status, expect), "{e}");
    e["error"]["retry_after"]
        .as_u64()
        .unwrap_or_else(|| panic!("retry_after: {e}"))
}

#[tokio::test]
async fn a_pumped_prefix_is_blocked_and_other_prefixes_keep_working() {
    let (s, clock) = server("").await;
    // Belgian students: 24 codes to one prefix, every third one typed (conversion 1/3 > 0.25).
    for i in 0..24 {
        let added = add_phone_ok(&s, &format!("be{i}"), &belgian(i)).await;
        if i % 3 == 0 {
            verify(&s, &added, &belgian(i)).await;
        }
    }
    // Pumping: 20 codes (min_sends) to a premium-like range, none ever typed.
    let mut pumped_challenges = Vec::new();
    for i in 0..20 {
        let added = add_phone_ok(&s, &format!("p{i}"), &pumped(i)).await;
        pumped_challenges.push(added["challenge"]["id"].as_str().unwrap().to_string());
    }
    // The 20th judged the prefix: the next number in it is refused before anything is stored.
    let (st, e) = add_phone(&s, "p20", &pumped(20)).await;
    let retry = assert_refused(st, &e, StatusCode::TOO_MANY_REQUESTS, "fraud_suspected");
    assert_eq!(retry, 43_200, "the whole block_secs: {e}");
    assert!(
        phones_of(&s, "p20").await.is_empty(),
        "no phone row written"
    );
    // Other prefixes, Latvian or Belgian, are unaffected.
    add_phone_ok(&s, "lv-other", "+37129990001").await;
    let added = add_phone_ok(&s, "be-late", &belgian(999)).await;
    verify(&s, &added, &belgian(999)).await;
    let (st, ch) = s
        .post(
            "/v1/sms/challenges",
            json!({ "user": "be0", "number": belgian(0) }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "a Belgian sign-in: {ch}");
    // A resend to the blocked prefix sends nothing either.
    clock.advance(Duration::from_secs(31));
    let (st, e) = s
        .post(
            &format!("/v1/sms/challenges/{}/resend", pumped_challenges[5]),
            json!({}),
        )
        .await;
    let retry = assert_refused(st, &e, StatusCode::TOO_MANY_REQUESTS, "fraud_suspected");
    assert_eq!(retry, 43_200 - 31);

    // The provider got the 20 messages sent before the block and nothing more: a message
    // queued after the refusals arrived, and the refused numbers' inboxes stay as they were.
    let (st, ch) = s
        .post(
            "/v1/sms/challenges",
            json!({ "user": "be3", "number": belgian(3) }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{ch}");
    inbox(&s, &belgian(3), 2).await;
    for i in 0..20 {
        assert_eq!(inbox(&s, &pumped(i), 1).await.len(), 1, "{}", pumped(i));
    }
    assert!(messages_to(&s, &pumped(20)).await.is_empty());

    // Audited once, with the prefix and the counts, never a whole number.
    let blocked = audit_lines(&s, "sms.fraud.prefix_blocked").await;
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    let d = &blocked[0]["detail"];
    assert_eq!(d["prefix"], PUMPED);
    assert_eq!(
        (d["sends"].as_u64(), d["verified"].as_u64()),
        (Some(20), Some(0))
    );
    assert_eq!(d["conversion"].as_f64(), Some(0.0));
    assert!(!d.to_string().contains(&format!("{PUMPED}00")), "{d}");
    let view = fraud_view(&s).await;
    assert_eq!(
        view["blocked_prefixes"].as_array().unwrap().len(),
        1,
        "{view}"
    );
    assert_eq!(view["blocked_prefixes"][0]["prefix"], PUMPED);

    // The block ends after block_secs (12 h); by then the window has no counts left either.
    clock.advance(Duration::from_secs(43_200 - 31 - 1));
    let (st, e) = add_phone(&s, "p21", &pumped(21)).await;
    assert_refused(st, &e, StatusCode::TOO_MANY_REQUESTS, "fraud_suspected");
    clock.advance(Duration::from_secs(1));
    add_phone_ok(&s, "p21", &pumped(21)).await;
    add_phone_ok(&s, "p22", &pumped(22)).await;
    assert!(fraud_view(&s).await["blocked_prefixes"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn min_sends_and_min_conversion_are_thresholds() {
    let (s, _clock) = server("min_sends = 5").await;
    // Four unverified messages: not judged yet.
    for i in 0..4 {
        add_phone_ok(&s, &format!("p{i}"), &pumped(i)).await;
    }
    assert!(
        fraud_view(&s).await["blocked_prefixes"]
            .as_array()
            .unwrap()
            .is_empty(),
        "judged before min_sends"
    );
    // Belgian: 2 of 8 verified is exactly 0.25, not below it; the 9th message (2/9) goes out
    // and blocks the prefix, the 10th is refused.
    for i in 0..8 {
        let added = add_phone_ok(&s, &format!("be{i}"), &belgian(i)).await;
        if i < 2 {
            verify(&s, &added, &belgian(i)).await;
        }
    }
    assert!(
        fraud_view(&s).await["blocked_prefixes"]
            .as_array()
            .unwrap()
            .is_empty(),
        "a conversion equal to min_conversion is not below it"
    );
    add_phone_ok(&s, "be8", &belgian(8)).await;
    let (st, e) = add_phone(&s, "be9", &belgian(9)).await;
    assert_refused(st, &e, StatusCode::TOO_MANY_REQUESTS, "fraud_suspected");
    let view = fraud_view(&s).await;
    let blocks = view["blocked_prefixes"].as_array().unwrap();
    assert_eq!(blocks.len(), 1, "{view}");
    assert_eq!(blocks[0]["prefix"], "3247534");
    assert_eq!(
        (blocks[0]["sends"].as_u64(), blocks[0]["verified"].as_u64()),
        (Some(9), Some(2))
    );
    // The Latvian prefix, still under min_sends, works.
    add_phone_ok(&s, "p4", &pumped(4)).await;
}

#[tokio::test]
async fn admins_see_and_lift_blocks() {
    let (s, clock) = server("min_sends = 5\nblock_secs = 600").await;
    for i in 0..5 {
        add_phone_ok(&s, &format!("p{i}"), &pumped(i)).await;
    }
    let (st, e) = add_phone(&s, "p5", &pumped(5)).await;
    assert_refused(st, &e, StatusCode::TOO_MANY_REQUESTS, "fraud_suspected");
    clock.advance(Duration::from_secs(60));

    let view = fraud_view(&s).await;
    let b = &view["blocked_prefixes"][0];
    assert_eq!(b["prefix"], PUMPED, "{view}");
    assert_eq!(
        (b["sends"].as_u64(), b["verified"].as_u64()),
        (Some(5), Some(0))
    );
    assert_eq!(b["conversion"].as_f64(), Some(0.0));
    assert_eq!(b["blocked_at"], "2026-09-21T14:13:20Z");
    assert_eq!(b["blocked_until"], "2026-09-21T14:23:20Z");
    assert_eq!(view["monthly"]["month"], "2026-09");
    assert_eq!(
        view["monthly"]["messages"], 5,
        "five messages reserved, none refused"
    );
    assert_eq!(view["monthly"]["cap"], 20_000);
    assert_eq!(view["monthly"]["renews_at"], "2026-10-01T00:00:00Z");

    // Kiosks may neither see nor lift.
    let kiosk = Some(s.kiosk.as_str());
    let (st, e) = s.req(Method::GET, "/v1/sms/fraud", kiosk, None).await;
    assert_eq!((st, code(&e)), (StatusCode::FORBIDDEN, "forbidden"));
    let path = format!("/v1/sms/fraud/blocks/{PUMPED}");
    let (st, e) = s.req(Method::DELETE, &path, kiosk, None).await;
    assert_eq!((st, code(&e)), (StatusCode::FORBIDDEN, "forbidden"));
    let (st, e) = add_phone(&s, "p5", &pumped(5)).await;
    assert_refused(st, &e, StatusCode::TOO_MANY_REQUESTS, "fraud_suspected");

    // An admin lifts it: audited with the admin's actor; the prefix starts again from zero.
    let (st, v) = s.delete(&path).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let lifted = audit_lines(&s, "sms.fraud.block_lifted").await;
    assert_eq!(lifted.len(), 1, "{lifted:?}");
    let admin_actor = audit_lines(&s, "phone.added").await[0]["actor"].clone();
    assert_eq!(lifted[0]["actor"], admin_actor);
    assert_eq!(lifted[0]["detail"]["prefix"], PUMPED);
    assert_eq!(lifted[0]["detail"]["sends"], 5);
    for i in 5..9 {
        add_phone_ok(&s, &format!("p{i}"), &pumped(i)).await;
    }
    assert!(
        fraud_view(&s).await["blocked_prefixes"]
            .as_array()
            .unwrap()
            .is_empty(),
        "not blocked again at once"
    );
    let (st, e) = s.delete(&path).await;
    assert_eq!((st, code(&e)), (StatusCode::NOT_FOUND, "not_found"));
    let (st, e) = s.delete("/v1/sms/fraud/blocks/37x").await;
    assert_eq!((st, code(&e)), (StatusCode::BAD_REQUEST, "invalid_request"));
}

#[tokio::test]
async fn the_monthly_cap_stops_every_send_until_the_month_turns() {
    let (s, clock) = server("monthly_message_cap = 3").await;
    let a = add_phone_ok(&s, "a", &belgian(1)).await;
    let b = add_phone_ok(&s, "b", &belgian(2)).await;
    // A resend is a message too: the third, which reaches the cap.
    clock.advance(Duration::from_secs(31));
    let a_ch = a["challenge"]["id"].as_str().unwrap();
    let (st, v) = s
        .post(&format!("/v1/sms/challenges/{a_ch}/resend"), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    inbox(&s, &belgian(1), 2).await;

    let next_month = time::macros::datetime!(2026-10-01 0:00 UTC).unix_timestamp();
    let until_next_month = (next_month - (START / 1000 + 31)) as u64;
    let (st, e) = add_phone(&s, "c", &belgian(3)).await;
    let retry = assert_refused(st, &e, StatusCode::SERVICE_UNAVAILABLE, "budget_exhausted");
    assert_eq!(retry, until_next_month);
    assert!(phones_of(&s, "c").await.is_empty());
    let b_ch = b["challenge"]["id"].as_str().unwrap();
    let (st, e) = s
        .post(&format!("/v1/sms/challenges/{b_ch}/resend"), json!({}))
        .await;
    assert_refused(st, &e, StatusCode::SERVICE_UNAVAILABLE, "budget_exhausted");
    let view = fraud_view(&s).await;
    assert_eq!(view["monthly"]["messages"], 3, "{view}");
    assert_eq!(view["monthly"]["cap"], 3);
    assert_eq!(view["monthly"]["cap_reached_at"], "2026-09-21T14:13:51Z");
    let reached = audit_lines(&s, "sms.monthly_cap_reached").await;
    assert_eq!(reached.len(), 1, "audited once: {reached:?}");
    assert_eq!(reached[0]["detail"]["month"], "2026-09");
    assert_eq!(reached[0]["detail"]["cap"], 3);
    assert!(messages_to(&s, &belgian(3)).await.is_empty());

    // The next month starts from zero.
    clock.advance(Duration::from_secs(until_next_month));
    add_phone_ok(&s, "c", &belgian(3)).await;
    inbox(&s, &belgian(3), 1).await;
    let view = fraud_view(&s).await;
    assert_eq!(view["monthly"]["month"], "2026-10", "{view}");
    assert_eq!(view["monthly"]["messages"], 1);
    assert_eq!(view["monthly"]["cap_reached_at"], Value::Null);
    assert_eq!(audit_lines(&s, "sms.monthly_cap_reached").await.len(), 1);
}

#[tokio::test]
async fn blocks_and_the_monthly_count_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let cfg = config("min_sends = 3\nmonthly_message_cap = 100");
    {
        let s = TestServer::start_in_with_clock(dir.path(), &cfg, clock.clone()).await;
        for i in 0..3 {
            add_phone_ok(&s, &format!("p{i}"), &pumped(i)).await;
        }
        let (st, e) = add_phone(&s, "p3", &pumped(3)).await;
        assert_refused(st, &e, StatusCode::TOO_MANY_REQUESTS, "fraud_suspected");
    }
    clock.advance(Duration::from_secs(3600));
    let s = TestServer::start_in_with_clock(dir.path(), &cfg, clock.clone()).await;
    let (st, e) = add_phone(&s, "p3", &pumped(3)).await;
    let retry = assert_refused(st, &e, StatusCode::TOO_MANY_REQUESTS, "fraud_suspected");
    assert_eq!(retry, 43_200 - 3600);
    let view = fraud_view(&s).await;
    assert_eq!(view["blocked_prefixes"][0]["prefix"], PUMPED, "{view}");
    assert_eq!(view["monthly"]["messages"], 3);
    add_phone_ok(&s, "be", &belgian(1)).await;
}

#[tokio::test]
async fn a_cap_lowered_below_the_count_is_audited_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    {
        let s = TestServer::start_in_with_clock(dir.path(), &config(""), clock.clone()).await;
        for i in 0..3 {
            add_phone_ok(&s, &format!("be{i}"), &belgian(i)).await;
        }
    }
    let lowered = config("monthly_message_cap = 2");
    let s = TestServer::start_in_with_clock(dir.path(), &lowered, clock.clone()).await;
    let (st, e) = add_phone(&s, "be3", &belgian(3)).await;
    assert_refused(st, &e, StatusCode::SERVICE_UNAVAILABLE, "budget_exhausted");
    let reached = audit_lines(&s, "sms.monthly_cap_reached").await;
    assert_eq!(reached.len(), 1, "{reached:?}");
    assert_eq!(reached[0]["detail"]["messages"], 3);
    drop(s);
    let s = TestServer::start_in_with_clock(dir.path(), &lowered, clock.clone()).await;
    assert_eq!(
        audit_lines(&s, "sms.monthly_cap_reached").await.len(),
        1,
        "once per month"
    );
}
