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

#[path = "support/fill.rs"]
mod fill;
#[path = "support/flat.rs"]
mod flat;
#[path = "support/settle.rs"]
mod settle;
#[path = "support/sms.rs"]
mod sms;

use sms::{env_or, full_run, mib, SmsBench};

fn main() {
    let full = full_run();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("{}", sms::machine());
    println!("durable SQLite (WAL) in a temp dir; mock provider over loopback HTTP");
    rt.block_on(levels(full));
    rt.block_on(flat::flat_cost(full, flat::FlatStore::Sqlite));
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
