//! Two kiosks, one campus store: two real daemons (`keygate serve`), each with its own data
//! dir, sharing one database on a real PostgreSQL server (the test cluster of
//! `keygate::harness::pg`, started here whatever `KG_TEST_STORE` says). Every guarantee of one
//! kiosk must hold across both: tokens, credentials, lockouts, the outbox, the audit log; and a
//! database that stops answering costs a bounded `503 store_unavailable`, not a hang.

use std::process::Command;
use std::time::{Duration, Instant};

mod common;
#[path = "campus/kiosk.rs"]
mod kiosk;

use keygate::harness::{pg, Spawned};
use kiosk::{
    add_phone, call, copy_campus_keys, copy_dir, kiosk, sms_mock, texts_to, token, urlencode,
    wait_for_text, BIN,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn a_token_a_key_and_the_audit_log_are_the_campus_s() {
    let cluster = pg::cluster();
    let url = cluster.url(&cluster.new_database());
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let hook = sms_mock().await;
    let sms = format!("{}/sms", hook.uri());
    let a = kiosk(a_dir.path(), &url, &sms);
    let admin = token(a_dir.path(), &url, "admin");

    // A key enrolled at A.
    let (_, keys) = call(&a.base, &admin, Method::GET, "/v1/sim/keys", None).await;
    let key = keys["keys"][0]["id"].as_str().unwrap().to_string();
    let (st, v) = call(
        &a.base,
        &admin,
        Method::POST,
        &format!("/v1/devices/{}/pin", urlencode(&key)),
        Some(json!({ "new_pin": "1234" })),
    )
    .await;
    assert!(st.is_success(), "{v}");
    let (st, v) = call(
        &a.base,
        &admin,
        Method::POST,
        "/v1/enrollments?wait=true",
        Some(json!({ "user": "r0100001", "display_name": "An", "pin": "1234" })),
    )
    .await;
    assert!(st.is_success() && v["state"] == "succeeded", "{v}");

    // B: a second kiosk; the same key is carried over to it (its simulated state copied).
    copy_campus_keys(a_dir.path(), b_dir.path());
    copy_dir(&a_dir.path().join("sim"), &b_dir.path().join("sim"));
    let b = kiosk(b_dir.path(), &url, &sms);

    // The token made at A works at B.
    let (st, users) = call(&b.base, &admin, Method::GET, "/v1/users", None).await;
    assert_eq!(st, StatusCode::OK, "{users}");
    assert!(users.to_string().contains("r0100001"), "{users}");
    // The key enrolled at A verifies at B (B knows the credential from the campus store).
    let (st, v) = call(
        &b.base,
        &admin,
        Method::POST,
        "/v1/assertions?wait=true",
        Some(json!({ "user": "r0100001", "pin": "1234" })),
    )
    .await;
    assert!(st.is_success(), "{v}");
    assert_eq!(v["state"], "succeeded", "{v}");
    // A kiosk token made at A works at B too.
    let kiosk_token = token(a_dir.path(), &url, "kiosk");
    let (st, _) = call(&b.base, &kiosk_token, Method::GET, "/v1/devices", None).await;
    assert_eq!(st, StatusCode::OK);

    // The audit at A shows what B did, and the chain verifies from either data dir.
    let (_, audit) = call(
        &a.base,
        &admin,
        Method::GET,
        "/v1/audit?user=r0100001",
        None,
    )
    .await;
    let events: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(events.contains(&"credential.enrolled"), "{events:?}");
    assert!(events.contains(&"credential.verified"), "{events:?}");
    for dir in [a_dir.path(), b_dir.path()] {
        let out = Command::new(BIN)
            .args(["audit", "verify", "--data-dir"])
            .arg(dir)
            .env("KEYGATE_STORE__URL", &url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn a_kiosk_whose_sms_key_differs_refuses_to_start() {
    let cluster = pg::cluster();
    let url = cluster.url(&cluster.new_database());
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let _a = kiosk(a_dir.path(), &url, "http://127.0.0.1:1/sms");
    // B has keys of its own: its codes could not be checked at A, nor A's at B.
    let out = Command::new(BIN)
        .args([
            "serve",
            "--simulate",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(b_dir.path())
        .env("KEYGATE_STORE__URL", &url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sms.key") && err.contains("copy"), "{err}");
}

#[tokio::test]
async fn wrong_codes_split_over_two_kiosks_lock_the_user_at_both() {
    let cluster = pg::cluster();
    let url = cluster.url(&cluster.new_database());
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let hook = sms_mock().await;
    let sms = format!("{}/sms", hook.uri());
    let a = kiosk(a_dir.path(), &url, &sms);
    copy_campus_keys(a_dir.path(), b_dir.path());
    let b = kiosk(b_dir.path(), &url, &sms);
    let t = token(a_dir.path(), &url, "kiosk");

    // The phone is registered at A and verified at B.
    let id = add_phone(&a.base, &t, "r2", "0475 00 00 41").await;
    let texts = wait_for_text(&[&hook], "+32475000041", 1).await;
    assert_eq!(texts.len(), 1, "one message for one challenge: {texts:?}");
    let code: String = texts[0].chars().take(6).collect();
    let (st, v) = call(
        &b.base,
        &t,
        Method::POST,
        &format!("/v1/sms/challenges/{id}/verify"),
        Some(json!({ "code": code })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");

    // A sign-in challenge, and five wrong codes: three at A, two at B.
    let (st, v) = call(
        &b.base,
        &t,
        Method::POST,
        "/v1/sms/challenges",
        Some(json!({ "user": "r2", "number": "0475 00 00 41" })),
    )
    .await;
    assert!(st.is_success(), "{v}");
    let id = v["id"]
        .as_str()
        .unwrap_or_else(|| v["challenge"]["id"].as_str().unwrap())
        .to_string();
    for (i, base) in [&a.base, &a.base, &a.base, &b.base, &b.base]
        .into_iter()
        .enumerate()
    {
        let (st, v) = call(
            base,
            &t,
            Method::POST,
            &format!("/v1/sms/challenges/{id}/verify"),
            Some(json!({ "code": "000000" })),
        )
        .await;
        assert!(
            st.is_client_error(),
            "wrong code {} is refused: {st} {v}",
            i + 1
        );
    }
    // Locked at both kiosks.
    for base in [&a.base, &b.base] {
        let (st, v) = call(
            base,
            &t,
            Method::POST,
            "/v1/sms/challenges",
            Some(json!({ "user": "r2", "number": "0475 00 00 41" })),
        )
        .await;
        assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{v}");
        assert_eq!(v["error"]["code"], "user_locked", "{v}");
    }
}

#[tokio::test]
async fn messages_of_a_killed_kiosk_are_sent_by_the_other_once() {
    let cluster = pg::cluster();
    let url = cluster.url(&cluster.new_database());
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A's provider takes the message and never answers: A is mid-send when it dies.
    let stuck = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(600)))
        .mount(&stuck)
        .await;
    let hook = sms_mock().await;
    let mut a = kiosk(a_dir.path(), &url, &format!("{}/sms", stuck.uri()));
    copy_campus_keys(a_dir.path(), b_dir.path());
    let t = token(a_dir.path(), &url, "kiosk");
    let id = add_phone(&a.base, &t, "r3", "0475 00 00 51").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while stuck.received_requests().await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "A never tried to send");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill();

    // B (started after the kill) sends it once A's claim has run out, and the code verifies.
    let b = kiosk(b_dir.path(), &url, &format!("{}/sms", hook.uri()));
    let texts = wait_for_text(&[&hook], "+32475000051", 1).await;
    assert_eq!(texts.len(), 1, "{texts:?}");
    let code: String = texts[0].chars().take(6).collect();
    let (st, v) = call(
        &b.base,
        &t,
        Method::POST,
        &format!("/v1/sms/challenges/{id}/verify"),
        Some(json!({ "code": code })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");

    // With both kiosks up, every message of many challenges goes out exactly once.
    let a = kiosk(a_dir.path(), &url, &format!("{}/sms", hook.uri()));
    for i in 0..12 {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        add_phone(base, &t, &format!("m{i}"), &format!("0475 00 01 {i:02}")).await;
    }
    for i in 0..12 {
        let to = format!("+324750001{:02}", i);
        let texts = wait_for_text(&[&hook], &to, 1).await;
        assert_eq!(texts.len(), 1, "{to}: {texts:?}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..12 {
        let to = format!("+324750001{:02}", i);
        assert_eq!(texts_to(&hook, &to).await.len(), 1, "{to} sent once");
    }
}

#[tokio::test]
async fn a_sqlite_kiosk_moves_to_the_campus_store_with_everything() {
    let dir = tempfile::tempdir().unwrap();
    let hook = sms_mock().await;
    // First life: the kiosk on its own SQLite file.
    let mut solo = Spawned::spawn(
        Spawned::command(BIN, dir.path())
            .env_remove("KEYGATE_STORE__URL")
            .env("KEYGATE_SIMULATE_SEED", "11")
            .env("KEYGATE_SMS__PROVIDERS", "[webhook]")
            .env("KEYGATE_SMS__WEBHOOK__URL", format!("{}/sms", hook.uri())),
    );
    let admin = keygate::harness::cli_token(BIN, dir.path(), "admin", &[]);
    let (_, keys) = call(&solo.base, &admin, Method::GET, "/v1/sim/keys", None).await;
    let key = keys["keys"][0]["id"].as_str().unwrap().to_string();
    let (st, _) = call(
        &solo.base,
        &admin,
        Method::POST,
        &format!("/v1/devices/{}/pin", urlencode(&key)),
        Some(json!({ "new_pin": "1234" })),
    )
    .await;
    assert!(st.is_success());
    let (_, v) = call(
        &solo.base,
        &admin,
        Method::POST,
        "/v1/enrollments?wait=true",
        Some(json!({ "user": "r0200002", "display_name": "Bo", "pin": "1234" })),
    )
    .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    add_phone(&solo.base, &admin, "r0200002", "0475 00 00 61").await;
    assert_eq!(wait_for_text(&[&hook], "+32475000061", 1).await.len(), 1);
    solo.kill();

    // The move.
    let cluster = pg::cluster();
    let url = cluster.url(&cluster.new_database());
    let migrate = || {
        Command::new(BIN)
            .args(["store", "migrate", "--to", &url, "--data-dir"])
            .arg(dir.path())
            .env_remove("KEYGATE_STORE__URL")
            .output()
            .unwrap()
    };
    let out = migrate();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let count = |table: &str| {
        report["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t[0] == table)
            .map(|t| t[1].as_u64().unwrap())
            .unwrap_or(0)
    };
    assert_eq!(count("credentials"), 1, "{report}");
    assert_eq!(count("phones"), 1, "{report}");
    assert_eq!(count("sms_challenges"), 1, "{report}");
    assert!(report["audit_entries"].as_u64().unwrap() >= 3, "{report}");
    // A second move into the same database is refused: it is not empty any more.
    let again = migrate();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // Second life on the campus store: the same token, user, key and audit log.
    let k = kiosk(dir.path(), &url, &format!("{}/sms", hook.uri()));
    let (st, users) = call(&k.base, &admin, Method::GET, "/v1/users", None).await;
    assert_eq!(st, StatusCode::OK, "{users}");
    assert!(users.to_string().contains("r0200002"), "{users}");
    let (_, v) = call(
        &k.base,
        &admin,
        Method::POST,
        "/v1/assertions?wait=true",
        Some(json!({ "user": "r0200002", "pin": "1234" })),
    )
    .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    let out = Command::new(BIN)
        .args(["audit", "verify", "--data-dir"])
        .arg(dir.path())
        .env("KEYGATE_STORE__URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
