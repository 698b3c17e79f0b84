//! The real binary, killed with SIGKILL in the middle of a ceremony: on restart the database is
//! consistent, the ceremony ended as `failed` with `ceremony_interrupted`, nothing half-stored,
//! and earlier credentials still verify.

use std::time::Duration;

use keygate::harness::Spawned;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_keygate");

fn token(dir: &std::path::Path) -> String {
    keygate::harness::cli_token(BIN, dir, "admin", &[])
}

fn start(dir: &std::path::Path) -> (Spawned, String) {
    let daemon = Spawned::spawn(&mut Spawned::command(BIN, dir));
    let base = daemon.base.clone();
    (daemon, base)
}

async fn call(
    c: &reqwest::Client,
    t: &str,
    m: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Value {
    let mut r = c.request(m, url).bearer_auth(t);
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn sigkill_during_a_ceremony_leaves_a_consistent_database() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t = token(dir);
    let c = reqwest::Client::new();
    let (mut child, base) = start(dir);
    use reqwest::Method as M;
    let keys = call(&c, &t, M::GET, format!("{base}/v1/sim/keys"), None).await;
    let key = keys["keys"][0]["id"].as_str().unwrap().to_string();
    let v = call(
        &c,
        &t,
        M::POST,
        format!("{base}/v1/devices/{}/pin", key.replace(':', "%3A")),
        Some(json!({"new_pin": "1234"})),
    )
    .await;
    assert_eq!(v["device"]["pin_set"], true, "{v}");
    let body = json!({"user": "r1", "display_name": "R", "pin": "1234"});
    let v = call(
        &c,
        &t,
        M::POST,
        format!("{base}/v1/enrollments?wait=true"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(v["state"], "succeeded", "{v}");

    call(
        &c,
        &t,
        M::PATCH,
        format!("{base}/v1/sim/keys/{}", key.replace(':', "%3A")),
        Some(json!({"touch": "never"})),
    )
    .await;
    let v = call(
        &c,
        &t,
        M::POST,
        format!("{base}/v1/enrollments"),
        Some(json!({"user": "r2", "display_name": "R", "pin": "1234"})),
    )
    .await;
    let id = v["id"].as_str().unwrap().to_string();
    let v = call(
        &c,
        &t,
        M::GET,
        format!("{base}/v1/enrollments/{id}?wait=1"),
        None,
    )
    .await;
    assert_eq!(v["state"], "waiting_touch", "{v}");
    child.kill(); // SIGKILL

    let (mut child, base) = start(dir);
    let v = call(&c, &t, M::GET, format!("{base}/v1/enrollments/{id}"), None).await;
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "ceremony_interrupted");
    let v = call(
        &c,
        &t,
        M::GET,
        format!("{base}/v1/users/r2/credentials?include_revoked=true"),
        None,
    )
    .await;
    assert_eq!(v["credentials"].as_array().unwrap().len(), 0);
    call(
        &c,
        &t,
        M::PATCH,
        format!("{base}/v1/sim/keys/{}", key.replace(':', "%3A")),
        Some(json!({"touch": {"auto_after_ms": 10}})),
    )
    .await;
    let v = call(
        &c,
        &t,
        M::POST,
        format!("{base}/v1/assertions?wait=true"),
        Some(json!({"user": "r1", "pin": "1234"})),
    )
    .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    child.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let store = keygate::store::Store::open(&dir.join("keygate.db")).unwrap();
    store.check_integrity().unwrap();
}
