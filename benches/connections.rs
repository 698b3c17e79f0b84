//! Connection load on the listener (the hardening issue, hole 1): N idle sockets plus N that
//! drip a request head one byte at a time, against the default limits. Prints /healthz
//! latency from a fresh client while they are held, how many the server closed by itself,
//! and the process's RSS before, during and after (memory must come back): resident memory
//! less the pages already freed lazily (`LazyFree`), which the kernel reclaims on demand.
//!
//! `cargo bench --bench connections [-- SOCKETS]` (default 800 of each kind).

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A field of /proc/self/smaps_rollup in MiB.
fn smaps_mib(field: &str) -> f64 {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    rollup
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resident memory less what the allocator has already given back with MADV_FREE (the kernel
/// takes those pages whenever it needs them; until then RSS still counts them).
fn rss_mib() -> f64 {
    smaps_mib("Rss") - smaps_mib("LazyFree")
}

async fn healthz_ms(base: &str, client: &reqwest::Client, n: usize) -> (f64, f64, usize) {
    let mut ms = Vec::new();
    let mut failed = 0;
    for _ in 0..n {
        let t = Instant::now();
        match client.get(format!("{base}/healthz")).send().await {
            Ok(r) if r.status().is_success() => ms.push(t.elapsed().as_secs_f64() * 1e3),
            _ => failed += 1,
        }
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        ms.get(((ms.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    (at(0.5), at(0.99), failed)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(800);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let tmp = tempfile::tempdir().unwrap();
    let cfg = keygate::config::parse_config(
        Some("simulate_seed = 7\n"),
        &[],
        &keygate::config::Overrides {
            data_dir: Some(tmp.path().to_path_buf()),
            simulate: Some(true),
            listen: Some("127.0.0.1:0".parse().unwrap()),
        },
    )
    .unwrap();
    let limits = keygate::http::server::Limits::resolve(&cfg.http);
    let state = keygate::daemon::build_state(cfg).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let addr = listener.local_addr().unwrap();
    println!(
        "machine: {cores} cores, {}; connection cap {} (from RLIMIT_NOFILE), header timeout {:?}",
        std::env::consts::ARCH,
        limits.max_connections,
        limits.header_timeout
    );
    let app = keygate::http::router(state);
    tokio::spawn(keygate::http::server::serve(
        listener,
        app,
        limits.clone(),
        std::future::pending(),
    ));
    // A fresh client each time: no kept-alive connection to reuse.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let (p50, p99, _) = healthz_ms(&base, &fresh, 200).await;
    let idle_rss = rss_mib();
    println!("idle:            RSS {idle_rss:.1} MiB | /healthz p50 {p50:.2} ms p99 {p99:.2} ms");

    let mut idle = Vec::new();
    for _ in 0..n {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut drips = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\n").await;
        drips.push(s);
    }
    let drip_task = tokio::spawn(async move {
        let mut alive = drips.len();
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            alive = 0;
            for s in &mut drips {
                if s.write_all(b"x").await.is_ok() {
                    alive += 1;
                }
            }
        }
        alive
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (p50, p99, failed) = healthz_ms(&base, &fresh, 200).await;
    println!(
        "{n} idle + {n} dripping sockets held: RSS {:.1} MiB | fresh /healthz p50 {p50:.2} ms p99 {p99:.2} ms, {failed} of 200 not 200 OK (503 when over the cap)",
        rss_mib()
    );
    let alive = drip_task.await.unwrap();
    println!(
        "after 15 s: {alive} of {n} dripping sockets still accepted by the server (header timeout {:?})",
        limits.header_timeout
    );
    drop(idle);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (p50, p99, _) = healthz_ms(&base, &fresh, 200).await;
    let after = rss_mib();
    println!(
        "after every socket closed: RSS (less LazyFree) {after:.1} MiB ({:+.1} MiB vs idle) | /healthz p50 {p50:.2} ms p99 {p99:.2} ms",
        after - idle_rss
    );
}
