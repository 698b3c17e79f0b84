//! Account closure, the subject export and retention through the real HTTP stack, a real
//! SQLite file, the console provider's simulated inbox, a manual clock, and `keygate purge`
//! / `keygate audit verify` run as the real binary on the same data dir.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{code, TestServer};
use keygate::sms::ManualClock;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;

const BIN: &str = env!("CARGO_BIN_EXE_keygate");
const START: i64 = 1_790_000_000_000;
const DAY: u64 = 24 * 3600;
const TOUCH_ONLY: &str = "[relying_party]\nuser_verification = \"preferred\"\n";

/// `START + days` as RFC 3339.
fn day(days: i64) -> String {
    let t = keygate::base::clock::ms_to_time(START) + time::Duration::days(days);
    t.format(&Rfc3339).unwrap()
}

/// `keygate purge --data-dir dir --as-of AS_OF [extra]`: the JSON report.
fn purge(dir: &Path, as_of: &str, extra: &[&str]) -> Value {
    let out = Command::new(BIN)
        .args(["purge", "--data-dir"])
        .arg(dir)
        .envs(keygate::harness::store_env(dir))
        .args(["--as-of", as_of])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn inbox(s: &TestServer, number: &str, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let (st, v) = s
            .get(&format!("/v1/sim/sms?number=%2B{}", &number[1..]))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let msgs = v["messages"].as_array().unwrap().clone();
        if msgs.len() >= n {
            return msgs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{number} did not receive {n} messages");
}

/// Register and verify a phone; returns the verification challenge's id.
async fn verified_phone(s: &TestServer, user: &str, number: &str, nth: usize) -> String {
    let (st, v) = s
        .post(
            &format!("/v1/users/{user}/phones"),
            json!({ "number": number }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let ch = v["challenge"]["id"].as_str().unwrap().to_string();
    let msgs = inbox(s, number, nth).await;
    let c = msgs[nth - 1]["code"].as_str().unwrap();
    let (st, r) = s
        .post(
            &format!("/v1/sms/challenges/{ch}/verify"),
            json!({ "code": c }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    ch
}

async fn audit_events(s: &TestServer) -> Vec<Value> {
    let (st, v) = s.get("/v1/audit?limit=1000").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn close_export_purge_after_grace_and_sms_retention() {
    let clock = Arc::new(ManualClock::new(START));
    let s = TestServer::start_with_clock(TOUCH_ONLY, clock.clone()).await;
    let enrolled = s
        .enroll(json!({ "user": "ana", "display_name": "Ana" }))
        .await;
    assert_eq!(enrolled["state"], "succeeded", "{enrolled}");
    verified_phone(&s, "ana", "+32475000001", 1).await;
    let bob_old = verified_phone(&s, "bob", "+32475000002", 1).await;

    // Admin only.
    for (m, path) in [
        (Method::POST, "/v1/users/ana/close"),
        (Method::DELETE, "/v1/users/ana/close"),
        (Method::GET, "/v1/users/ana/export"),
    ] {
        let (st, e) = s.req(m, path, Some(&s.kiosk.clone()), None).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{path}: {e}");
    }

    let (st, closed) = s.post("/v1/users/ana/close", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{closed}");
    assert_eq!(closed["user"], "ana");
    assert!(closed["closed_by"].as_str().unwrap().starts_with("token:"));
    clock.advance(Duration::from_secs(60));
    let (_, again) = s.post("/v1/users/ana/close", json!({})).await;
    assert_eq!(again["closed_at"], closed["closed_at"], "idempotent");
    assert_eq!(closed["purge_after"], day(14).replace(".000", ""));

    // A closed user can neither enroll nor get codes.
    let (st, e) = s
        .post(
            "/v1/enrollments",
            json!({ "user": "ana", "display_name": "Ana" }),
        )
        .await;
    assert_eq!((st, code(&e)), (StatusCode::CONFLICT, "user_closed"), "{e}");
    let (st, e) = s
        .post("/v1/users/ana/phones", json!({ "number": "+32475000003" }))
        .await;
    assert_eq!(code(&e), "user_closed", "{st} {e}");
    let (st, e) = s.post("/v1/sms/challenges", json!({ "user": "ana" })).await;
    assert_eq!(code(&e), "user_closed", "{st} {e}");

    // The export: an attachment, never cached, with every kind of record.
    let resp = s
        .client
        .get(format!("{}/v1/users/ana/export", s.base))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers();
    assert!(h["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment;"));
    assert_eq!(h["cache-control"], "no-store");
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["user"]["name"], "ana");
    assert_eq!(doc["user"]["display_name"], "Ana");
    assert_eq!(doc["credentials"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["phones"][0]["e164"], "+32475000001");
    assert_eq!(doc["sms_challenges"][0]["state"], "verified");
    assert!(!doc["sms_messages"].as_array().unwrap().is_empty());
    assert!(!doc["ceremonies"].as_array().unwrap().is_empty());
    let events: Vec<_> = doc["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert!(events.contains(&"user.closed".to_string()), "{events:?}");
    let (st, e) = s.get("/v1/users/nobody/export").await;
    assert_eq!((st, code(&e)), (StatusCode::NOT_FOUND, "not_found"));

    // A newer challenge of bob's, 20 days in: it outlives the first one's 30 days.
    clock.advance(Duration::from_secs(20 * DAY));
    let bob_new = verified_phone(&s, "bob", "+32475000004", 1).await;

    let dir = s.data_dir.clone();
    // Within the grace period nothing of ana's goes.
    let r = purge(&dir, &day(13), &[]);
    assert_eq!(r["closed_users"], json!([]), "{r}");
    let (st, _) = s.get("/v1/users/ana").await;
    assert_eq!(st, StatusCode::OK);

    // Past it, a dry run lists her and removes nothing.
    let r = purge(&dir, &day(15), &["--dry-run"]);
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["closed_users"][0]["user"], "ana", "{r}");
    assert_eq!(r["closed_users"][0]["removed"]["credentials"], 1);
    assert_eq!(r["closed_users"][0]["removed"]["phones"], 1);
    let (_, ana) = s.get("/v1/users/ana").await;
    assert_eq!(ana["credentials"].as_array().unwrap().len(), 1, "{ana}");

    // The real purge.
    let r = purge(&dir, &day(15), &[]);
    let pseudonym = r["closed_users"][0]["pseudonym"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, _) = s.get("/v1/users/ana").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, creds) = s
        .get("/v1/users/ana/credentials?include_revoked=true")
        .await;
    assert_eq!(creds["credentials"], json!([]), "{creds}");
    let (_, phones) = s.get("/v1/users/ana/phones").await;
    assert_eq!(phones["phones"], json!([]), "{phones}");
    let (st, _) = s.get("/v1/users/ana/export").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let audit = audit_events(&s).await;
    let purged: Vec<_> = audit
        .iter()
        .filter(|e| e["event"] == "user.purged")
        .collect();
    assert_eq!(purged.len(), 1);
    assert_eq!(purged[0]["detail"]["pseudonym"], pseudonym.as_str());
    assert_eq!(purged[0]["user"], Value::Null);
    assert!(audit.iter().any(|e| e["event"] == "retention.purged"));

    // SMS retention: bob's first challenge (day 0) goes at day 31, the one of day 20 stays.
    let (st, _) = s.get(&format!("/v1/sms/challenges/{bob_old}")).await;
    assert_eq!(st, StatusCode::OK, "still inside sms_days at day 15");
    let r = purge(&dir, &day(31), &[]);
    assert!(r["tables"]["sms_challenges"].as_u64().unwrap() >= 1, "{r}");
    let (st, _) = s.get(&format!("/v1/sms/challenges/{bob_old}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = s.get(&format!("/v1/sms/challenges/{bob_new}")).await;
    assert_eq!(st, StatusCode::OK, "{v}");

    // The chain still verifies after every purge.
    let out = Command::new(BIN)
        .args(["audit", "verify", "--data-dir"])
        .arg(&dir)
        .envs(keygate::harness::store_env(&dir))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_reopened_account_works_again_and_stays() {
    let clock = Arc::new(ManualClock::new(START));
    let s = TestServer::start_with_clock(TOUCH_ONLY, clock.clone()).await;
    s.enroll(json!({ "user": "cas", "display_name": "Cas" }))
        .await;
    let (st, _) = s.post("/v1/users/cas/close", json!({})).await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = s.delete("/v1/users/cas/close").await;
    assert_eq!((st, v["reopened"].clone()), (StatusCode::OK, json!(true)));
    let (_, v) = s.delete("/v1/users/cas/close").await;
    assert_eq!(v["reopened"], false);
    let (st, v) = s
        .post("/v1/users/cas/phones", json!({ "number": "+32475000005" }))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let r = purge(&s.data_dir, &day(60), &[]);
    assert_eq!(r["closed_users"], json!([]));
    let (st, _) = s.get("/v1/users/cas").await;
    assert_eq!(st, StatusCode::OK);
    let (st, e) = s.post("/v1/users/nobody/close", json!({})).await;
    assert_eq!((st, code(&e)), (StatusCode::NOT_FOUND, "not_found"));
}

#[test]
fn retention_settings_are_validated() {
    let parse = |toml: &str| {
        keygate::config::parse_config(Some(toml), &[], &keygate::config::Overrides::default())
    };
    let cfg = parse("[retention]\nsms_days = 7\n").unwrap();
    assert_eq!(
        (
            cfg.retention.sms_days,
            cfg.retention.audit_days,
            cfg.retention.closed_user_grace_days
        ),
        (7, 400, 14)
    );
    for bad in [
        "sms_days = 0",
        "audit_days = 36501",
        "ceremony_days = 0",
        "closed_user_grace_days = 0",
    ] {
        let e = parse(&format!("[retention]\n{bad}\n"))
            .unwrap_err()
            .to_string();
        let name = bad.split(' ').next().unwrap();
        assert!(e.contains(&format!("retention.{name}")), "{bad}: {e}");
    }
    assert!(
        parse("[retention]\nsms_dayz = 3\n").is_err(),
        "unknown keys are refused"
    );
}

#[tokio::test]
async fn a_closed_users_key_is_refused_when_it_names_the_user_itself() {
    let s = TestServer::start_with(TOUCH_ONLY).await;
    let key = s.sim_key().await.replace(':', "%3A");
    let (st, v) = s
        .post(
            &format!("/v1/devices/{key}/pin"),
            json!({ "new_pin": "1234" }),
        )
        .await;
    assert!(st.is_success(), "{v}");
    let enrolled = s
        .enroll(
            json!({ "user": "dee", "display_name": "Dee", "discoverable": true, "pin": "1234" }),
        )
        .await;
    assert_eq!(enrolled["state"], "succeeded", "{enrolled}");
    let before = s.verify(json!({ "pin": "1234" })).await;
    assert_eq!(
        (before["state"].clone(), before["result"]["user"].clone()),
        (json!("succeeded"), json!("dee")),
        "{before}"
    );
    let (st, _) = s.post("/v1/users/dee/close", json!({})).await;
    assert_eq!(st, StatusCode::OK);
    // User-less ("test my key"): the user is known only from the key's answer.
    let after = s.verify(json!({ "pin": "1234" })).await;
    assert_eq!(after["state"], "failed", "{after}");
    assert_eq!(after["error"]["code"], "user_closed", "{after}");
}
