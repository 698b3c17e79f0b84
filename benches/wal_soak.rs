//! Bounded WAL soak: sustained SMS flows at 32 clients (create -> the mock provider receives
//! -> verify, over the real HTTP API with the durable SQLite store) for
//! `KEYGATE_BENCH_SOAK_SECS` (default 300 under `cargo bench`, 3 in the `cargo test` smoke
//! pass). Every interval (`KEYGATE_BENCH_SOAK_EVERY_SECS`, default 15; 1 in the smoke pass) it
//! prints the WAL file's size, the interval's flows/s and its create and verify p99; at the
//! end the largest WAL size seen (sampled every 100 ms) against the bound: the store truncates
//! the log past 16 MiB, `journal_size_limit` is 64 MiB.
//!
//! Phones: the per-number limit is 20 per minute here (a config a campus may choose) so that a
//! pool of phones can carry minutes of load at thousands of flows a second.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "support/sms.rs"]
mod sms;

use sms::{env_or, full_run, mib, pct, SmsBench};

/// The WAL bound this soak checks against (the store's `journal_size_limit`).
const WAL_BOUND: u64 = 64 << 20;

fn main() {
    let full = full_run();
    let (secs, every, phones) = if full {
        (
            env_or("KEYGATE_BENCH_SOAK_SECS", 300u64),
            env_or("KEYGATE_BENCH_SOAK_EVERY_SECS", 15u64),
            16_000,
        )
    } else {
        (
            env_or("KEYGATE_BENCH_SOAK_SECS", 3u64),
            env_or("KEYGATE_BENCH_SOAK_EVERY_SECS", 1u64),
            256,
        )
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("{}", sms::machine());
    rt.block_on(soak(
        Duration::from_secs(secs),
        Duration::from_secs(every.max(1)),
        phones,
    ));
}

/// Step latencies of the flows finished since the last report.
#[derive(Default)]
struct Interval {
    create: Vec<Duration>,
    verify: Vec<Duration>,
}

async fn soak(length: Duration, every: Duration, phones: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let extra = "per_number_limit = 20\nper_number_window_secs = 60";
    let bench = Arc::new(SmsBench::start(tmp.path(), extra, phones).await);
    println!(
        "WAL soak: 32 clients for {} s, {} phones, WAL bound {:.0} MiB (truncated past 16 MiB)",
        length.as_secs(),
        bench.phone_count(),
        mib(WAL_BOUND)
    );
    let stop = Arc::new(AtomicBool::new(false));
    let interval = Arc::new(Mutex::new(Interval::default()));
    let wal_max = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (bench, stop, wal_max) = (bench.clone(), stop.clone(), wal_max.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                wal_max.fetch_max(bench.store().wal_bytes(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut clients = Vec::new();
    for _ in 0..32 {
        let (bench, stop, interval) = (bench.clone(), stop.clone(), interval.clone());
        clients.push(tokio::spawn(async move {
            let mut flows = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let [c, _, v] = bench.flow().await;
                let mut i = interval.lock().unwrap();
                i.create.push(c);
                i.verify.push(v);
                flows += 1;
            }
            flows
        }));
    }
    let started = Instant::now();
    let mut last = started;
    let (mut worst_create, mut worst_verify) = (0f64, 0f64);
    while started.elapsed() < length {
        tokio::time::sleep(every.min(length.saturating_sub(started.elapsed()))).await;
        let mut i = std::mem::take(&mut *interval.lock().unwrap());
        let (c, v) = (pct(&mut i.create, 0.99), pct(&mut i.verify, 0.99));
        worst_create = worst_create.max(c);
        worst_verify = worst_verify.max(v);
        println!(
            "soak t={:>4.0} s: WAL {:>5.1} MiB (max so far {:.1}) | {:.0} flows/s | create p99 {c:.2} ms | verify p50 {:.2} p99 {v:.2} ms",
            started.elapsed().as_secs_f64(),
            mib(bench.store().wal_bytes()),
            mib(wal_max.load(Ordering::SeqCst)),
            i.verify.len() as f64 / last.elapsed().as_secs_f64(),
            pct(&mut i.verify, 0.5),
        );
        last = Instant::now();
    }
    stop.store(true, Ordering::SeqCst);
    let mut flows = 0;
    for c in clients {
        flows += c.await.unwrap();
    }
    sampler.await.unwrap();
    let max = wal_max.load(Ordering::SeqCst);
    println!(
        "WAL soak: {flows} flows in {:.0} s ({:.0} flows/s) | WAL max {:.1} MiB of the {:.0} MiB bound ({}) | worst interval p99: create {worst_create:.2} ms, verify {worst_verify:.2} ms | database {:.0} MiB",
        started.elapsed().as_secs_f64(),
        flows as f64 / started.elapsed().as_secs_f64(),
        mib(max),
        mib(WAL_BOUND),
        if max <= WAL_BOUND { "within" } else { "OVER" },
        mib(std::fs::metadata(tmp.path().join("keygate.db")).map(|m| m.len()).unwrap_or(0)),
    );
}
