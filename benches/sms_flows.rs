//! SMS flow benchmark: create challenge -> the provider (a local mock HTTP server) receives the
//! SMS -> verify with the code it carried, over the real HTTP API with the durable SQLite store.
//!
//! Two parts:
//! - throughput at 1, 8 and 32 concurrent clients (`KEYGATE_BENCH_FLOWS` flows per level,
//!   default 2000), flows/s and p50/p99 per step;
//! - flat cost: flows/s and verify p99 at 32 clients on an empty database, then again once a
//!   million flows are stored (`KEYGATE_BENCH_FILL_FLOWS`, made as `support/fill.rs` says),
//!   and their ratio (target: within 1.2x). Two keygates, one per state, in alternating
//!   rounds of `KEYGATE_BENCH_FLAT_FLOWS` (default 5000), five per state, medians compared.
//!
//! `cargo bench --bench sms_flows` runs the full measurement; under `cargo test` it runs a small
//! smoke pass of both parts.

use std::sync::Arc;
use std::time::Duration;

#[path = "support/fill.rs"]
mod fill;
#[path = "support/settle.rs"]
mod settle;
#[path = "support/sms.rs"]
mod sms;

use sms::{env_or, full_run, median, mib, pct, SmsBench};

fn main() {
    let full = full_run();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("{}", sms::machine());
    println!("durable SQLite (WAL) in a temp dir; mock provider over loopback HTTP");
    rt.block_on(levels(full));
    rt.block_on(flat_cost(full));
}

async fn levels(full: bool) {
    let flows: usize = if full {
        env_or("KEYGATE_BENCH_FLOWS", 2000)
    } else {
        8
    };
    let levels: &[usize] = if full { &[1, 8, 32] } else { &[1, 4] };
    let tmp = tempfile::tempdir().unwrap();
    // Every flow is a different student's phone, as on a campus, so the per-number limit keeps
    // its default (5 per 10 minutes): enough phones that none gets more than 4 flows (plus its
    // registration) in the run.
    let total_flows = flows * levels.len() + 32 * levels.len();
    let bench = Arc::new(SmsBench::start(tmp.path(), "", total_flows.div_ceil(4) + 64).await);
    for &clients in levels {
        let mut r = bench.round(clients, flows).await;
        println!(
            "{clients:>2} clients: {} | WAL {:.1} MiB",
            r.summary(),
            mib(bench.store().wal_bytes()),
        );
    }
}

/// One round of `flows` flows at 32 clients: (flows/s, verify p99 ms, create p99 ms), printed.
async fn measured_round(bench: &Arc<SmsBench>, what: &str, i: usize, flows: usize) -> [f64; 3] {
    let mut r = bench.round(32, flows).await;
    let (v, c) = (pct(&mut r.verify, 0.99), pct(&mut r.create, 0.99));
    println!(
        "flat cost, {what}, round {i}: {} flows at 32 clients in {:.2} s = {:.0} flows/s | create p99 {c:.2} ms | verify p50 {:.2} p99 {v:.2} ms | WAL {:.1} MiB",
        r.flows,
        r.wall.as_secs_f64(),
        r.flows_per_s(),
        pct(&mut r.verify, 0.5),
        mib(bench.store().wal_bytes()),
    );
    [r.flows_per_s(), v, c]
}

/// Two keygates side by side, one on an empty database and one with `KEYGATE_BENCH_FILL_FLOWS`
/// flows stored, measured in alternating rounds (so that the machine's other load falls on
/// both alike); medians compared.
async fn flat_cost(full: bool) {
    let (rounds, flows, stored) = if full {
        (
            5,
            env_or("KEYGATE_BENCH_FLAT_FLOWS", 5000usize),
            env_or("KEYGATE_BENCH_FILL_FLOWS", 1_000_000u64),
        )
    } else {
        (1, 16, 2000)
    };
    let (empty_dir, stored_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // The empty database's rounds (and warm-up) on fresh phones: at most 4 flows per number.
    let phones = (rounds * flows + flows / 4) / 4 + 64;
    let empty = Arc::new(SmsBench::start(empty_dir.path(), "", phones).await);
    let filled_bench = Arc::new(SmsBench::start(stored_dir.path(), "", 0).await);
    // A campus: twenty flows per student over a hundred days (students sign in again after
    // the fill, so the hundred days end two hours ago: the per-number window has passed).
    let students = (stored / 20).max(1);
    let filled = fill::fill_sms(
        filled_bench.store(),
        &stored_dir.path().join("keygate.db"),
        &filled_bench.clock,
        stored,
        students,
        Duration::from_secs(100 * 86400),
    )
    .await;
    println!("flat cost, the stored flows: {}", filled.describe());
    // Returning students: the flows take the stored students' phones in turn.
    filled_bench.use_phones(filled.phones);
    let stored_what = format!("{stored} flows stored");
    empty.round(32, flows / 4).await;
    filled_bench.round(32, flows / 4).await;
    let (mut e, mut f) = (Vec::new(), Vec::new());
    for i in 1..=rounds {
        e.push(measured_round(&empty, "empty database", i, flows).await);
        f.push(measured_round(&filled_bench, &stored_what, i, flows).await);
    }
    let med = |v: &[[f64; 3]], k: usize| median(v.iter().map(|r| r[k]).collect());
    let (e, a) = (
        [med(&e, 0), med(&e, 1), med(&e, 2)],
        [med(&f, 0), med(&f, 1), med(&f, 2)],
    );
    println!(
        "flat cost, medians of {rounds} alternating rounds: empty {:.0} flows/s, verify p99 {:.2} ms, create p99 {:.2} ms | {stored} stored {:.0} flows/s, verify p99 {:.2} ms, create p99 {:.2} ms",
        e[0], e[1], e[2], a[0], a[1], a[2]
    );
    println!(
        "flat cost, ratio stored vs empty (target <= 1.2x): flows/s {:.2}x | verify p99 {:.2}x | create p99 {:.2}x",
        e[0] / a[0],
        a[1] / e[1],
        a[2] / e[2],
    );
}
