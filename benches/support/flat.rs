//! Flat cost: flows/s and verify p99 at 32 clients on an empty database, then again once a
//! million flows are stored (`KEYGATE_BENCH_FILL_FLOWS`, made as `fill.rs` says), and their
//! ratio (target: within 1.2x). Two keygates, one per state, in alternating rounds of
//! `KEYGATE_BENCH_FLAT_FLOWS` (default 5000), five per state, medians compared; on SQLite
//! (`sms_flows`) and on PostgreSQL (`campus`).
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use super::fill::{self, FillTarget};
use super::sms::{env_or, median, mib, pct, SmsBench};

/// One round of `flows` flows at 32 clients: (flows/s, verify p99 ms, create p99 ms), printed.
async fn measured_round(
    bench: &Arc<SmsBench>,
    label: &str,
    what: &str,
    i: usize,
    flows: usize,
) -> [f64; 3] {
    let mut r = bench.round(32, flows).await;
    let (v, c) = (pct(&mut r.verify, 0.99), pct(&mut r.create, 0.99));
    let wal = match bench.store().backend() {
        keygate::store::db::Backend::Sqlite => {
            format!(" | WAL {:.1} MiB", mib(bench.store().wal_bytes()))
        }
        keygate::store::db::Backend::Postgres => String::new(),
    };
    println!(
        "{label}, {what}, round {i}: {} flows at 32 clients in {:.2} s = {:.0} flows/s | create p99 {c:.2} ms | verify p50 {:.2} p99 {v:.2} ms{wal}",
        r.flows,
        r.wall.as_secs_f64(),
        r.flows_per_s(),
        pct(&mut r.verify, 0.5),
    );
    [r.flows_per_s(), v, c]
}

/// Which store the two keygates of a flat-cost measurement keep their data in.
pub enum FlatStore {
    /// Each its SQLite file in its data dir.
    Sqlite,
    /// Each a database of the test cluster (`keygate::harness::pg`), autovacuum at its
    /// defaults.
    Postgres,
}

/// Two keygates side by side, one on an empty database and one with `KEYGATE_BENCH_FILL_FLOWS`
/// flows stored, measured in alternating rounds (so that the machine's other load falls on
/// both alike); medians compared.
pub async fn flat_cost(full: bool, store: FlatStore) {
    let label = match store {
        FlatStore::Sqlite => "flat cost",
        FlatStore::Postgres => "flat cost on PostgreSQL",
    };
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
    let (empty_toml, stored_toml, stored_db) = match store {
        FlatStore::Sqlite => (String::new(), String::new(), None),
        FlatStore::Postgres => {
            let cluster = keygate::harness::pg::cluster();
            let (a, b) = (cluster.new_database(), cluster.new_database());
            let toml = |db: &str| format!("\n[store]\nurl = \"{}\"\n", cluster.url(db));
            (toml(&a), toml(&b), Some(b))
        }
    };
    let empty = Arc::new(SmsBench::start(empty_dir.path(), &empty_toml, phones).await);
    let filled_bench = Arc::new(SmsBench::start(stored_dir.path(), &stored_toml, 0).await);
    let sqlite_file = stored_dir.path().join("keygate.db");
    let target = match &stored_db {
        Some(name) => FillTarget::Postgres(name),
        None => FillTarget::Sqlite(&sqlite_file),
    };
    // A campus: twenty flows per student over a hundred days (students sign in again after
    // the fill, so the hundred days end two hours ago: the per-number window has passed).
    let students = (stored / 20).max(1);
    let filled = fill::fill_sms(
        filled_bench.store(),
        target,
        &filled_bench.clock,
        stored,
        students,
        Duration::from_secs(100 * 86400),
    )
    .await;
    println!("{label}, the stored flows: {}", filled.describe());
    // Returning students: the flows take the stored students' phones in turn.
    filled_bench.use_phones(filled.phones);
    let stored_what = format!("{stored} flows stored");
    empty.round(32, flows / 4).await;
    filled_bench.round(32, flows / 4).await;
    let (mut e, mut f) = (Vec::new(), Vec::new());
    for i in 1..=rounds {
        e.push(measured_round(&empty, label, "empty database", i, flows).await);
        f.push(measured_round(&filled_bench, label, &stored_what, i, flows).await);
    }
    let med = |v: &[[f64; 3]], k: usize| median(v.iter().map(|r| r[k]).collect());
    let (e, a) = (
        [med(&e, 0), med(&e, 1), med(&e, 2)],
        [med(&f, 0), med(&f, 1), med(&f, 2)],
    );
    println!(
        "{label}, medians of {rounds} alternating rounds: empty {:.0} flows/s, verify p99 {:.2} ms, create p99 {:.2} ms | {stored} stored {:.0} flows/s, verify p99 {:.2} ms, create p99 {:.2} ms",
        e[0], e[1], e[2], a[0], a[1], a[2]
    );
    println!(
        "{label}, ratio stored vs empty (target <= 1.2x): flows/s {:.2}x | verify p99 {:.2}x | create p99 {:.2}x",
        e[0] / a[0],
        a[1] / e[1],
        a[2] / e[2],
    );
}
