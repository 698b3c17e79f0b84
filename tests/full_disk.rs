//! A full disk, for real: keygate's data dir is a 2 MiB tmpfs mounted by the test, filled with a
//! filler file until writes fail. Writes then answer `503 store_unavailable`, `/healthz` says
//! `storage_full`, the log says `storage_full` once, reads go on, no code goes out for a
//! challenge that could not be stored; once the filler is gone keygate recovers by itself, and
//! the database is intact.
//!
//! Where mounting is not permitted (not root, or a container without CAP_SYS_ADMIN) the same
//! test runs against SQLite's `max_page_count` on the store's writing connection (a real
//! `SQLITE_FULL`), and says so loudly: it never passes without having filled something.
//! `KEYGATE_TEST_NO_MOUNT=1` forces that mode.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{code, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .matches(needle)
            .count()
    }
}

/// A tmpfs mounted for the test; unmounted when dropped (lazily when files are still open:
/// the store's threads close theirs a moment after the server stops).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        if std::env::var_os("KEYGATE_TEST_NO_MOUNT").is_some() {
            return Err("KEYGATE_TEST_NO_MOUNT is set".into());
        }
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// How the storage is made full and freed again.
enum Filling {
    /// The data dir is a tmpfs: a filler file takes its last byte.
    Disk { filler: PathBuf },
    /// Mounting was refused: the database is capped at its current size.
    PageCap,
}

impl Filling {
    fn fill(&self, s: &TestServer) {
        match self {
            Filling::Disk { filler } => {
                let mut f = std::fs::File::create(filler).unwrap();
                let chunk = vec![0xa5u8; 16 << 10];
                let mut written = 0usize;
                loop {
                    match f.write_all(&chunk).and_then(|_| f.sync_all()) {
                        Ok(()) => written += chunk.len(),
                        Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                        Err(e) => panic!("filler: {e}"),
                    }
                    assert!(written < 4 << 20, "the 2 MiB tmpfs took 4 MiB");
                }
                // Whatever a 16 KiB chunk left over, byte by byte.
                while f.write_all(&[0xa5]).and_then(|_| f.sync_all()).is_ok() {}
            }
            Filling::PageCap => {
                s.state.store.limit_database_pages(0).unwrap();
            }
        }
    }

    fn free(&self, s: &TestServer) {
        match self {
            Filling::Disk { filler } => std::fs::remove_file(filler).unwrap(),
            Filling::PageCap => {
                s.state.store.limit_database_pages(1 << 30).unwrap();
            }
        }
    }
}

fn number(i: u32) -> String {
    format!("0476 10 {:02} {:02}", i / 100, i % 100)
}

async fn add_phone(s: &TestServer, user: &str, number: &str) -> (StatusCode, Value) {
    s.post(
        &format!("/v1/users/{user}/phones"),
        json!({ "number": number }),
    )
    .await
}

async fn store_health(s: &TestServer) -> String {
    let (st, v) = s.req(Method::GET, "/healthz", None, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "ok", "{v}");
    v["store"].as_str().unwrap().to_string()
}

async fn inbox(s: &TestServer, number: &str) -> Vec<Value> {
    let (st, v) = s
        .get(&format!(
            "/v1/sim/sms?number={}",
            number.replace(' ', "%20")
        ))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["messages"].as_array().unwrap().clone()
}

/// Poll `check` until it holds; a generous deadline only turns a hang into a failure.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_keeps_reads_sends_nothing_and_recovers() {
    let logs = Capture::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let (_tmpfs, filling) = match Tmpfs::mount(&data, "2M") {
        Ok(m) => {
            eprintln!(
                "=== full-disk test: REAL DISK mode, a 2 MiB tmpfs at {} ===",
                data.display()
            );
            let filler = data.join("filler");
            (Some(m), Filling::Disk { filler })
        }
        Err(why) => {
            eprintln!(
                "=== full-disk test: FALLBACK mode (mount refused: {why}); the database is \
                 capped with PRAGMA max_page_count instead of filling a disk ==="
            );
            (None, Filling::PageCap)
        }
    };
    let s = TestServer::start_in(&data, "").await;
    let user = "r0123456";

    // Before: a phone whose code went out and was recorded as sent.
    let (st, before) = add_phone(&s, user, "0475 00 00 01").await;
    assert_eq!(st, StatusCode::CREATED, "{before}");
    let before_id = before["challenge"]["id"].as_str().unwrap().to_string();
    eventually("the first code is recorded as sent", || async {
        let (_, v) = s.get(&format!("/v1/sms/challenges/{before_id}")).await;
        v["delivery"]["status"] == "sent"
    })
    .await;
    assert_eq!(store_health(&s).await, "ok");

    filling.fill(&s);

    // Writes go on while SQLite finds room in what it already holds; then one is refused.
    let mut stored = Vec::new();
    let mut refused = None;
    for i in 1..=200 {
        let n = number(i);
        let (st, v) = add_phone(&s, user, &n).await;
        match st {
            StatusCode::CREATED => stored.push(n),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(code(&v), "store_unavailable", "{v}");
                let msg = v["error"]["message"].as_str().unwrap();
                assert!(msg.contains("storage is full"), "{msg}");
                refused = Some(n);
                break;
            }
            other => panic!("a write on a full disk answered {other}: {v}"),
        }
    }
    let refused = refused.expect("200 challenges fit on a full disk");
    eprintln!(
        "{} challenges still fit in what SQLite held; the next was refused",
        stored.len()
    );
    assert_eq!(store_health(&s).await, "storage_full");

    // Every write now answers 503 at once: a sign-in code, a new phone, a resend.
    let (st, v) = add_phone(&s, user, &number(900)).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        "{v}"
    );
    let (st, v) = s
        .post(&format!("/v1/sms/challenges/{before_id}/resend"), json!({}))
        .await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        "{v}"
    );

    // Reads go on, and show nothing of what was refused.
    let (st, v) = s.get(&format!("/v1/users/{user}/phones")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let phones = v["phones"].as_array().unwrap().len();
    assert_eq!(phones, 1 + stored.len(), "{v}");
    let (st, v) = s.get(&format!("/v1/sms/challenges/{before_id}")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = s.get("/v1/users").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = s.get("/v1/audit?limit=5").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        logs.count("storage_full:"),
        1,
        "one storage_full warning for the episode, not one per request"
    );

    // Space returns: keygate notices by itself, and writes work again.
    filling.free(&s);
    eventually("/healthz reports the store ok again", || async {
        store_health(&s).await == "ok"
    })
    .await;
    let after = number(901);
    let (st, v) = add_phone(&s, user, &after).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    for n in stored.iter().chain([&after]) {
        eventually(&format!("a code reaches {n}"), || async {
            !inbox(&s, n).await.is_empty()
        })
        .await;
    }
    // The refused challenge was never stored, so its code never went out (and never will: no
    // row of it exists for the outbox to find).
    assert!(
        inbox(&s, &refused).await.is_empty(),
        "a code went to {refused}"
    );
    assert_eq!(inbox(&s, "0475 00 00 01").await.len(), 1);
    assert_eq!(logs.count("storage_full:"), 1);
    assert_eq!(logs.count("storage available again"), 1);

    // Nothing is half-written.
    s.state.store.check_integrity().unwrap();
    let raw = rusqlite::Connection::open(data.join("keygate.db")).unwrap();
    let integrity: String = raw
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}
