//! The campus store against the embedded one, same machine, same run: SMS flows (create ->
//! the provider receives -> verify, over the real HTTP API) at 32 clients on
//! - one keygate on its SQLite file,
//! - one keygate on PostgreSQL (the test cluster of `keygate::harness::pg`: a throwaway
//!   server on loopback, started here),
//! - two keygates sharing one PostgreSQL database, 16 clients each, one provider,
//!
//! printing flows/s and p50/p99 of each step, and PostgreSQL's flows/s as a share of
//! SQLite's (target: at least half).
//!
//! Then the flat cost on PostgreSQL (`support/flat.rs`): an empty campus database against one
//! holding `KEYGATE_BENCH_FILL_FLOWS` stored flows (default a million), autovacuum at its
//! defaults; `KEYGATE_BENCH_SKIP_FLAT` skips it.
//!
//! `cargo bench --bench campus` (`KEYGATE_BENCH_FLOWS`, default 4000 per setup); under
//! `cargo test` a smoke pass of a few flows.
//!
//! Where PostgreSQL's time goes: `KEYGATE_BENCH_PG_STATS=1` prints the statements of the
//! one-keygate run by total time (`pg_stat_statements`, which the cluster must load:
//! `KEYGATE_TEST_PG_OPTS="-c shared_preload_libraries=pg_stat_statements"`).

#[path = "support/fill.rs"]
mod fill;
#[path = "support/flat.rs"]
mod flat;
#[path = "support/settle.rs"]
mod settle;
#[path = "support/sms.rs"]
mod sms;

use std::path::Path;
use std::sync::Arc;

use sms::{env_or, full_run, Mock, Round, SmsBench};

fn main() {
    let full = full_run();
    let flows: usize = if full {
        env_or("KEYGATE_BENCH_FLOWS", 4000)
    } else {
        16
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("{}", sms::machine());
    println!("mock provider over loopback HTTP; PostgreSQL: a local cluster on loopback TCP");
    rt.block_on(run(flows, full));
    if std::env::var("KEYGATE_BENCH_SKIP_FLAT").is_err() {
        rt.block_on(flat::flat_cost(full, flat::FlatStore::Postgres));
    }
}

fn report(label: &str, r: &mut Round) -> f64 {
    println!("{label:<34} {}", r.summary());
    r.flows_per_s()
}

fn store_toml(url: &str) -> String {
    format!("\n[store]\nurl = \"{url}\"\n")
}

fn copy_campus_keys(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in ["sms.key", "audit-head.key"] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

async fn run(flows: usize, full: bool) {
    // Every flow takes a different student's phone in turn: no number passes the per-number
    // limit (5 per 10 minutes) in a run.
    let phones = flows.div_ceil(4) + 64;
    let warm = 64.min(flows);

    let sqlite_dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SmsBench::start(sqlite_dir.path(), "", phones).await);
    sqlite.round(32, warm).await;
    let mut r = sqlite.round(32, flows).await;
    let sqlite_rate = report("SQLite, one keygate, 32 clients", &mut r);
    drop(sqlite);

    let cluster = keygate::harness::pg::cluster();
    let pg_dir = tempfile::tempdir().unwrap();
    let url = cluster.url(&cluster.new_database());
    let pg = Arc::new(SmsBench::start(pg_dir.path(), &store_toml(&url), phones).await);
    pg.round(32, warm).await;
    let sent_before = keygate::store::db::statements_sent();
    let mut r = pg.round(32, flows).await;
    let per_flow = (keygate::store::db::statements_sent() - sent_before) as f64 / flows as f64;
    let pg_rate = report("PostgreSQL, one keygate, 32 clients", &mut r);
    if std::env::var("KEYGATE_BENCH_PG_STATS").is_ok() {
        let u = url.replace("?sslmode=disable", "");
        let out = std::process::Command::new("psql").arg(&u).arg("-c").arg("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").arg("-c").arg(
            "SELECT calls, round(total_exec_time::numeric,1) AS exec_ms, round(total_plan_time::numeric,1) AS plan_ms, rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 150) AS q FROM pg_stat_statements ORDER BY total_exec_time + total_plan_time DESC LIMIT 60").output().unwrap();
        println!("{}", String::from_utf8_lossy(&out.stdout));
    }
    drop(pg);

    // Two keygates, one database, one provider; each drives its own half of the phones.
    let url = cluster.url(&cluster.new_database());
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mock = Mock::start().await;
    let a = Arc::new(
        SmsBench::start_with_mock(a_dir.path(), &store_toml(&url), 2 * phones, mock.clone()).await,
    );
    copy_campus_keys(a_dir.path(), b_dir.path());
    let b = Arc::new(SmsBench::start_with_mock(b_dir.path(), &store_toml(&url), 0, mock).await);
    let all = a.phones();
    let (even, odd): (Vec<_>, Vec<_>) = all
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    a.use_phones(even.into_iter().map(|(_, p)| p).collect());
    b.use_phones(odd.into_iter().map(|(_, p)| p).collect());
    let (ra, rb) = tokio::join!(a.round(16, warm / 2), b.round(16, warm / 2));
    drop((ra, rb));
    let started = std::time::Instant::now();
    let (mut ra, mut rb) = tokio::join!(a.round(16, flows / 2), b.round(16, flows / 2));
    let wall = started.elapsed();
    report("PostgreSQL, keygate A of two, 16", &mut ra);
    report("PostgreSQL, keygate B of two, 16", &mut rb);
    let both_rate = (ra.flows + rb.flows) as f64 / wall.as_secs_f64();
    println!("PostgreSQL, two keygates together:  {both_rate:.0} flows/s");
    println!(
        "PostgreSQL / SQLite flows/s: one keygate {:.2}x, two keygates {:.2}x (target >= 0.5x)",
        pg_rate / sqlite_rate,
        both_rate / sqlite_rate
    );
    if full {
        bound(cluster, per_flow, sqlite_rate);
    }
}

/// What this machine allows at all: PostgreSQL's own statement ceiling here (pgbench, the
/// leanest client, on the same cores) over the statements keygate sends per flow is the most
/// flows/s a campus store on this machine could give, were keygate, HTTP, the clients and the
/// provider free.
fn bound(cluster: &keygate::harness::pg::Cluster, per_flow: f64, sqlite_rate: f64) {
    let ceiling = cluster.pgbench_statements_per_s(2, 5);
    let most = ceiling / per_flow;
    println!(
        "PostgreSQL's ceiling on this machine (pgbench TPC-B-like, 2 clients, prepared): \
         {ceiling:.0} statements/s"
    );
    println!(
        "keygate sends {per_flow:.1} statements per flow (transaction control and savepoints \
         included): at most {most:.0} flows/s here, {:.2}x SQLite, were everything but \
         PostgreSQL free",
        most / sqlite_rate
    );
}
