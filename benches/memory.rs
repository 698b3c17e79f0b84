//! Memory of the real binary (the bench profile's `keygate serve`, spawned with
//! `keygate::harness::Spawned`, webhook provider to a mock on loopback): resident set size idle
//! on an empty data dir, idle on a data dir holding a million stored flows, and after serving
//! `KEYGATE_BENCH_MEMORY_FLOWS` more over HTTP at 32 clients (default 200,000; the rest of the
//! million is stored before start-up as `support/fill.rs` says, back-dated so that their
//! windows have passed). Target: within 8 MiB of idle once the retention windows have passed.
//!
//! The daemon reads only the system clock and has no override. To let the windows of the flows
//! it served pass within a bench run, the daemon runs under libfaketime when it is installed
//! (Debian's `libfaketime`; its real-time clock follows an offset file, monotonic time stays
//! real): once the live load is done the offset jumps 25 hours, the daemon's own sweeper (every
//! minute) moves the day's rows to history, a few more flows let the budgets forget the hour
//! of sends, and RSS is read again. Without libfaketime that step is skipped, and said so.
//!
//! `cargo bench --bench memory`; under `cargo test` a smoke pass with a few thousand flows.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/fill.rs"]
mod fill;
#[path = "support/settle.rs"]
mod settle;
#[path = "support/sms.rs"]
mod sms;

use keygate::auth::Role;
use keygate::harness::Spawned;
use serde_json::json;
use sms::{env_or, full_run, Mock};

/// A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`, `RssAnon`, `RssFile`), in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn rss_line(what: &str, pid: u32) -> f64 {
    let rss = status_mib(pid, "VmRSS:");
    println!(
        "memory, {what}: RSS {rss:.1} MiB ({:.1} MiB anonymous, {:.1} MiB file-backed), peak {:.1} MiB",
        status_mib(pid, "RssAnon:"),
        status_mib(pid, "RssFile:"),
        status_mib(pid, "VmHWM:"),
    );
    rss
}

fn main() {
    let full = full_run();
    let (stored, live) = if full {
        let live = env_or("KEYGATE_BENCH_MEMORY_FLOWS", 200_000u64);
        (
            env_or("KEYGATE_BENCH_FILL_FLOWS", 1_000_000u64).saturating_sub(live),
            live,
        )
    } else {
        (2000, 500)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("{}", sms::machine());
    rt.block_on(memory(stored, live, full));
}

/// The daemon's config file in `dir`: the mock provider, budgets sized for the load, the
/// per-number limit at 20 a minute so that a pool of phones carries the load.
fn write_config(dir: &Path, mock_url: &str) -> std::path::PathBuf {
    let path = dir.join("keygate.toml");
    let toml = sms::sms_toml(
        mock_url,
        "per_number_limit = 20\nper_number_window_secs = 60",
    );
    std::fs::write(&path, toml).unwrap();
    path
}

/// libfaketime's multi-threaded build, where Debian installs it.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Start the binary on `data` with `conf` (its real-time clock offset by what `faketime`
/// names, when given), wait a second for it to settle; the daemon.
fn spawn(data: &Path, conf: &Path, faketime: Option<&Path>) -> Spawned {
    let bin = env!("CARGO_BIN_EXE_keygate");
    let mut cmd = Spawned::command(bin, data);
    cmd.arg("--config").arg(conf).env("RUST_LOG", "error");
    if let Some(offset) = faketime {
        cmd.env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME_TIMESTAMP_FILE", offset)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("FAKETIME_CACHE_DURATION", "1");
    }
    let d = Spawned::spawn(&mut cmd);
    std::thread::sleep(Duration::from_secs(1));
    d
}

async fn memory(stored: u64, live: u64, full: bool) {
    let (mock, mock_url) = Mock::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let conf = write_config(tmp.path(), &mock_url);

    let empty_dir = tmp.path().join("empty");
    let mut daemon = spawn(&empty_dir, &conf, None);
    let idle = rss_line("idle, empty data dir", daemon.pid());
    daemon.kill();

    // The stored flows and a kiosk token, written before the daemon starts.
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("keygate.db");
    let clock = Arc::new(sms::BenchClock::default());
    let store = keygate::store::Store::open_with_clock(&db, clock.clone()).unwrap();
    let token = keygate::auth::create_token(&store, Role::Kiosk, None)
        .await
        .unwrap();
    let filled = fill::fill_sms(
        &store,
        fill::FillTarget::Sqlite(&db),
        &clock,
        stored,
        (stored / 20).max(1),
        Duration::from_secs(100 * 86400),
    )
    .await;
    drop(store);
    println!("memory, the stored flows: {}", filled.describe());

    let offset = tmp.path().join("faketime-offset");
    let faketime = Path::new(LIBFAKETIME).exists().then(|| {
        std::fs::write(&offset, "+0\n").unwrap();
        offset.as_path()
    });
    let daemon = spawn(&data, &conf, faketime);
    let base = daemon.base.clone();
    let idle_filled = rss_line(
        &format!("idle, {stored} flows stored (windows passed)"),
        daemon.pid(),
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let phones = register(
        &client,
        &base,
        &token,
        &mock,
        16_000.min(live as usize + 64),
    )
    .await;
    let started = Instant::now();
    let load = Load {
        client,
        base,
        token,
        mock,
        phones,
        next: Arc::new(AtomicUsize::new(0)),
    };
    load.run(live as usize).await;
    println!(
        "memory, live load: {live} flows through HTTP at 32 clients in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_line(
        &format!("after {live} more flows served (their windows open)"),
        daemon.pid(),
    );
    println!(
        "memory, RSS: idle {idle:.1} MiB | idle with {stored} stored {idle_filled:.1} MiB ({:+.1} MiB) | after the live load {after:.1} MiB ({:+.1} MiB; target within 8 MiB once windows passed)",
        idle_filled - idle,
        after - idle,
    );
    if !full {
        println!("memory, after the windows: skipped in the smoke pass");
        return;
    }
    if faketime.is_none() {
        println!(
            "memory, after the windows: skipped (libfaketime is not installed at {LIBFAKETIME}; the daemon has no clock override)"
        );
        return;
    }
    std::fs::write(&offset, "+25h\n").unwrap();
    // The daemon's sweeper runs every minute; then flows let the budgets drop the old hour.
    tokio::time::sleep(Duration::from_secs(65)).await;
    load.run(64).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let windows = rss_line(
        "25 h later (libfaketime), after the daemon's sweep and 64 more flows",
        daemon.pid(),
    );
    println!(
        "memory, once the windows passed: RSS {windows:.1} MiB, {:+.1} MiB from idle (target within 8 MiB); hot challenges left: {}",
        windows - idle,
        hot_challenges(&db)
    );
}

/// SMS challenges still in the hot table, read on a connection of the bench's own.
fn hot_challenges(db: &Path) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.query_row("SELECT COUNT(*) FROM sms_challenges", [], |r| r.get(0))
        .unwrap()
}

/// Flows against the spawned daemon, on a pool of its verified phones.
struct Load {
    client: reqwest::Client,
    base: String,
    token: String,
    mock: Arc<Mock>,
    phones: Arc<Vec<(String, String, String)>>,
    next: Arc<AtomicUsize>,
}

impl Load {
    /// `flows` flows at 32 clients.
    async fn run(&self, flows: usize) {
        let done = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (client, base, token, mock, phones, next, done) = (
                self.client.clone(),
                self.base.clone(),
                self.token.clone(),
                self.mock.clone(),
                self.phones.clone(),
                self.next.clone(),
                done.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while done.fetch_add(1, Ordering::SeqCst) < flows {
                    sms::flow(&client, &base, &token, &mock, &phones, &next).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
}

/// Register `count` verified phones (`student-live<i>`) on the spawned daemon, 32 at a time.
async fn register(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    mock: &Arc<Mock>,
    count: usize,
) -> Arc<Vec<(String, String, String)>> {
    let out = Arc::new(std::sync::Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..32 {
        let (client, base, token, mock, out, next) = (
            client.clone(),
            base.to_string(),
            token.to_string(),
            mock.clone(),
            out.clone(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count {
                    return;
                }
                let (user, number) = (format!("live{i}"), format!("+324750{i:05}"));
                let v = sms::post_json(
                    &client,
                    format!("{base}/v1/users/{user}/phones"),
                    &token,
                    json!({ "number": number }),
                )
                .await;
                let ch = v["challenge"]["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("phone added: {v}"))
                    .to_string();
                let (_, code) = mock.wait(&number, None).await;
                sms::verify_code(&client, &base, &token, &ch, &code).await;
                let phone = v["phone"]["id"].as_str().unwrap().to_string();
                out.lock().unwrap().push((user, phone, number));
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let v = std::mem::take(&mut *out.lock().unwrap());
    Arc::new(v)
}
