//! The tamper-evident audit log through the real binary: entries made over the API and the
//! command line, the daemon stopped, then the database file attacked with its triggers
//! dropped (an edit, a deletion, a reorder, a cut tail): `keygate audit verify` names the first
//! bad entry of each and passes the untouched log. `GET /v1/audit/head` is admin-only and its
//! signature checks out with the key file; the periodic head reaches the log.

use std::path::{Path, PathBuf};
use std::process::Command;

use hmac::{Hmac, Mac};
use keygate::harness::Spawned;
use reqwest::StatusCode;
use rusqlite::Connection;
use serde_json::{json, Value};
use sha2::Sha256;

const BIN: &str = env!("CARGO_BIN_EXE_keygate");

fn token(dir: &Path, role: &str) -> String {
    keygate::harness::cli_token(BIN, dir, role, &[])
}

/// `keygate audit verify --data-dir dir [args]`: exit code and stdout.
fn verify(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), format!("{stdout}{stderr}"))
}

/// The signature as documented: HMAC-SHA256 under the key file's 32 bytes over the tag, seq
/// (8 bytes big-endian) and hash.
fn signature_checks(key_file: &Path, seq: i64, hash_hex: &str, signature_hex: &str) -> bool {
    let key = std::fs::read(key_file).unwrap();
    assert_eq!(key.len(), 32);
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(b"keygate.audit.head.v1");
    mac.update(&seq.to_be_bytes());
    mac.update(&hex::decode(hash_hex).unwrap());
    mac.verify_slice(&hex::decode(signature_hex).unwrap())
        .is_ok()
}

async fn get_head(base: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut r = reqwest::Client::new().get(format!("{base}/v1/audit/head"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    (resp.status(), resp.json().await.unwrap())
}

/// A copy of the stopped daemon's data dir (database with its WAL, head key), to attack.
fn copy_of(dir: &Path, name: &str) -> PathBuf {
    let copy = dir.parent().unwrap().join(name);
    std::fs::create_dir(&copy).unwrap();
    for f in ["keygate.db", "keygate.db-wal", "audit-head.key"] {
        if f == "keygate.db-wal" && !dir.join(f).exists() {
            continue;
        }
        std::fs::copy(dir.join(f), copy.join(f)).unwrap();
    }
    copy
}

/// Open the copy as an attacker would: a plain connection, the triggers dropped.
fn attack(dir: &Path, sql: &str) {
    let c = Connection::open(dir.join("keygate.db")).unwrap();
    c.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
        .unwrap();
    c.execute_batch(sql).unwrap();
}

fn assert_broken_at(dir: &Path, args: &[&str], expected: &str) {
    let (code, out) = verify(dir, args);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("audit chain broken at {expected}")),
        "expected {expected:?} in {out}"
    );
}

#[tokio::test]
async fn verify_names_the_first_bad_entry_of_each_attack() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let admin = token(&dir, "admin");
    let kiosk = token(&dir, "kiosk");
    let log_path = tmp.path().join("keygate.log");
    let mut daemon = Spawned::spawn(
        Spawned::command(BIN, &dir)
            .env("RUST_LOG", "warn,keygate::audit=info")
            .stderr(std::fs::File::create(&log_path).unwrap()),
    );
    let base = daemon.base.clone();

    assert_eq!(get_head(&base, None).await.0, StatusCode::UNAUTHORIZED);
    let (st, v) = get_head(&base, Some(&kiosk)).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, first) = get_head(&base, Some(&admin)).await;
    assert_eq!(st, StatusCode::OK, "{first}");
    assert_eq!(first["seq"], 2, "the two tokens' lines: {first}");

    let c = reqwest::Client::new();
    let keys: Value = c
        .get(format!("{base}/v1/sim/keys"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = keys["keys"][0]["id"].as_str().unwrap().replace(':', "%3A");
    let resp = c
        .post(format!("{base}/v1/devices/{key}/pin"))
        .bearer_auth(&admin)
        .json(&json!({ "new_pin": "1234" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let enrolled: Value = c
        .post(format!("{base}/v1/enrollments?wait=true"))
        .bearer_auth(&admin)
        .json(&json!({ "user": "r1", "display_name": "R", "pin": "1234" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(enrolled["state"], "succeeded", "{enrolled}");
    let cred = enrolled["result"]["credential"]["id"].as_str().unwrap();
    for i in 0..100 {
        let resp = c
            .patch(format!("{base}/v1/users/r1/credentials/{cred}"))
            .bearer_auth(&admin)
            .json(&json!({ "nickname": format!("key {i}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let (_, head) = get_head(&base, Some(&admin)).await;
    let seq = head["seq"].as_i64().unwrap();
    let hash = head["hash"].as_str().unwrap().to_string();
    assert!(
        seq > 103,
        "the cut tail below stays past the stored head: {head}"
    );
    assert!(head["at"].is_string(), "{head}");
    let key_file = dir.join("audit-head.key");
    assert!(signature_checks(
        &key_file,
        seq,
        &hash,
        head["signature"].as_str().unwrap()
    ));
    assert!(!signature_checks(
        &key_file,
        seq - 1,
        &hash,
        head["signature"].as_str().unwrap()
    ));
    daemon.kill();

    // The head at seq 100 went to the log, signed, for an external copy.
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let line = logs
        .lines()
        .find(|l| l.contains("audit head") && l.contains("seq=100"))
        .unwrap_or_else(|| panic!("no head line for seq 100 in {logs}"));
    let field = |name: &str| {
        let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        line[start..].split_whitespace().next().unwrap().to_string()
    };
    let (hash100, sig100) = (field("hash"), field("signature"));
    assert!(
        signature_checks(&key_file, 100, &hash100, &sig100),
        "{line}"
    );

    // Untouched: intact, and it reaches both the head taken over the API and the logged one.
    let (code, out) = verify(&dir, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "audit chain intact: {seq} entries, head {seq} {hash}"
        )),
        "{out}"
    );
    let given = format!("{seq}:{hash}");
    assert_eq!(verify(&dir, &["--head", &given]).0, 0);
    assert_eq!(verify(&dir, &["--head", &format!("100:{hash100}")]).0, 0);
    let (code, out) = verify(&dir, &["--head", &format!("100:{hash}")]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("seq 100: hash differs from the given head"),
        "{out}"
    );

    let edited = copy_of(&dir, "edited");
    attack(
        &edited,
        r#"UPDATE audit SET detail = '{"nickname":"innocent"}' WHERE seq = 50"#,
    );
    assert_broken_at(&edited, &[], "seq 50: content edited (hash mismatch)");

    let deleted = copy_of(&dir, "deleted");
    attack(&deleted, "DELETE FROM audit WHERE seq = 40");
    assert_broken_at(&deleted, &[], "seq 40: entry deleted");

    let reordered = copy_of(&dir, "reordered");
    attack(
        &reordered,
        "UPDATE audit SET seq = -1 WHERE seq = 30; UPDATE audit SET seq = 30 WHERE seq = 33; \
         UPDATE audit SET seq = 33 WHERE seq = -1;",
    );
    assert_broken_at(
        &reordered,
        &[],
        "seq 30: entries reordered (this entry was chained at seq 33)",
    );

    // A cut tail, the table's sequence counter wound back too: only the head kept elsewhere
    // shows it (the stored signed head, at seq 100, is still in the chain).
    let cut = copy_of(&dir, "cut");
    attack(
        &cut,
        &format!(
            "DELETE FROM audit WHERE seq > {keep}; \
             UPDATE sqlite_sequence SET seq = {keep} WHERE name = 'audit';",
            keep = seq - 3
        ),
    );
    assert_eq!(verify(&cut, &[]).0, 0, "no head given");
    assert_broken_at(
        &cut,
        &["--head", &given],
        &format!("seq {}: tail cut", seq - 2),
    );
    // Left as it was, the counter gives the cut away without a head.
    let cut_plain = copy_of(&dir, "cut_plain");
    attack(
        &cut_plain,
        &format!("DELETE FROM audit WHERE seq > {}", seq - 3),
    );
    assert_broken_at(&cut_plain, &[], &format!("seq {}: tail cut", seq - 2));

    // Cut below the stored signed head: caught by it.
    let cut_deep = copy_of(&dir, "cut_deep");
    attack(
        &cut_deep,
        "DELETE FROM audit WHERE seq > 90; \
         UPDATE sqlite_sequence SET seq = 90 WHERE name = 'audit';",
    );
    assert_broken_at(&cut_deep, &[], "seq 91: tail cut");

    let (code, out) = verify(&dir, &["--head", "12:nothex"]);
    assert_eq!(code, 2, "{out}");
    let (code, out) = verify(&tmp.path().join("nowhere"), &[]);
    assert_eq!(code, 2, "{out}");
}
