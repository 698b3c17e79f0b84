//! Ceremony benchmark: N enroll + verify ceremonies through the HTTP API against a simulated key
//! whose touch is immediate, plus idle RSS and start-to-ready time of the real binary.
//!
//! Flat cost: the same N ceremonies again (new users) once 100,000 users with 300,000
//! credentials, their ceremonies and audit lines are stored (`support/ceremony_fill.rs`;
//! `KEYGATE_BENCH_SCALE_USERS`, `KEYGATE_BENCH_SCALE_KEYS_PER_USER`), and the ratio of the
//! daemon's overhead (target: within 1.2x).
//!
//! `cargo bench --bench ceremonies` runs the full measurement (N = 200, or `KEYGATE_BENCH_N`);
//! under `cargo test` (no `--bench` flag) it runs a 3-ceremony smoke pass.

use std::time::{Duration, Instant};

#[path = "support/ceremony_fill.rs"]
mod ceremony_fill;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/settle.rs"]
mod settle;

use keygate::auth::Role;
use keygate::harness::{InProcess, Spawned};
use serde_json::{json, Value};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A `kB` field of /proc/PID/status: `VmRSS`, `RssAnon` (heap, stacks), `RssFile` (mapped
/// pages of the binary and libraries, shared with the page cache).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// One kind of ceremony's timings: wall time, time inside the key, and their difference.
struct Samples {
    wall: Vec<Duration>,
    key: Vec<Duration>,
    overhead: Vec<Duration>,
}

impl Samples {
    fn new(n: usize) -> Samples {
        Samples {
            wall: Vec::with_capacity(n),
            key: Vec::with_capacity(n),
            overhead: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, wall: Duration, key: Duration) {
        self.wall.push(wall);
        self.key.push(key);
        self.overhead.push(wall.saturating_sub(key));
    }

    fn report(&mut self, kind: &str) {
        for (what, d) in [
            ("end to end through HTTP:       ", &mut self.wall),
            ("inside the simulated key:      ", &mut self.key),
            ("daemon overhead (wall - key):  ", &mut self.overhead),
        ] {
            d.sort();
            println!(
                "{kind}, {what} p50 {:.2} ms  p99 {:.2} ms",
                ms(pct(d, 0.5)),
                ms(pct(d, 0.99))
            );
        }
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = if full {
        std::env::var("KEYGATE_BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200)
    } else {
        3
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(ceremonies(n, full));
    // Each Entra enrollment leaves a discoverable credential on the key (1000 slots at most).
    rt.block_on(entra_enrollments(n.min(200)));
    if full {
        process_figures();
    }
}

/// What a ceremony run needs: the server's base URL, an admin token, the simulated keys.
struct Ctx {
    c: reqwest::Client,
    base: String,
    token: String,
    sim: std::sync::Arc<keygate::device::sim::SimBench>,
}

impl Ctx {
    async fn post(&self, path: String, body: Value) -> Value {
        self.c
            .post(path)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    }

    /// Enroll + verify ceremonies of users `<prefix><i>` for `i` in `users`, added to
    /// `enroll` and `verify`; the wall time.
    async fn run_into(
        &self,
        prefix: &str,
        users: std::ops::Range<usize>,
        enroll: &mut Samples,
        verify: &mut Samples,
    ) -> Duration {
        // Per ceremony: wall time through HTTP, and that minus the time spent inside the
        // simulated key during it (its CTAP processing, P-256, state-file write): the daemon's
        // overhead, which includes our CTAP client and the PIN protocol's platform half, as with
        // a real key.
        let base = &self.base;
        let started = Instant::now();
        for i in users {
            let user = format!("{prefix}{i}");
            for (samples, path, body) in [
                (
                    &mut *enroll,
                    "enrollments",
                    json!({ "user": user, "display_name": "Bench", "pin": "1234" }),
                ),
                (
                    &mut *verify,
                    "assertions",
                    json!({ "user": user, "pin": "1234" }),
                ),
            ] {
                let in_key = self.sim.time_in_keys();
                let t = Instant::now();
                let v = self.post(format!("{base}/v1/{path}?wait=true"), body).await;
                let wall = t.elapsed();
                assert_eq!(v["state"], "succeeded", "{v}");
                samples.push(wall, self.sim.time_in_keys() - in_key);
            }
        }
        started.elapsed()
    }

    /// `n` enroll + verify ceremonies of users `<prefix><i>`: their samples and the wall time.
    async fn run(&self, prefix: &str, n: usize) -> (Samples, Samples, Duration) {
        let (mut enroll, mut verify) = (Samples::new(n), Samples::new(n));
        let wall = self.run_into(prefix, 0..n, &mut enroll, &mut verify).await;
        (enroll, verify, wall)
    }
}

/// A keygate in this process on a fresh data dir with simulated keys (`seed`), its first key's
/// touch immediate and PIN set to 1234; the server (stops when dropped), its data dir and how
/// to drive it.
async fn start(seed: u64) -> (InProcess, tempfile::TempDir, Ctx) {
    let tmp = tempfile::tempdir().unwrap();
    let server = InProcess::start_config(
        tmp.path(),
        &format!("simulate_seed = {seed}\n[log]\nlevel = \"error\"\n"),
        true,
    )
    .await;
    let sim = server
        .state
        .sim
        .clone()
        .expect("--simulate has a sim bench");
    let token = keygate::auth::create_token(&server.state.store, Role::Admin, None)
        .await
        .unwrap();
    let ctx = Ctx {
        c: reqwest::Client::new(),
        base: server.base.clone(),
        token,
        sim,
    };
    let base = &ctx.base;
    let keys: Value = ctx
        .c
        .get(format!("{base}/v1/sim/keys"))
        .bearer_auth(&ctx.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = keys["keys"][0]["id"].as_str().unwrap().replace(':', "%3A");
    ctx.c
        .patch(format!("{base}/v1/sim/keys/{key}"))
        .bearer_auth(&ctx.token)
        .json(&json!({ "touch": { "auto_after_ms": 0 } }))
        .send()
        .await
        .unwrap();
    ctx.post(
        format!("{base}/v1/devices/{key}/pin"),
        json!({ "new_pin": "1234" }),
    )
    .await;
    (server, tmp, ctx)
}

async fn ceremonies(n: usize, full: bool) {
    let (_server, _tmp, ctx) = start(1).await;
    let (mut enroll, mut verify, total) = ctx.run("bench", n).await;
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::env::consts::ARCH
    );
    println!(
        "ceremonies: {n} enroll + {n} verify in {:.2} s = {:.1} ceremonies/s",
        total.as_secs_f64(),
        (2 * n) as f64 / total.as_secs_f64()
    );
    enroll.report("enroll");
    verify.report("verify");
    let (key_mc, key_ga) = key_only(n);
    println!(
        "for reference, our CTAP client + the simulated key without the daemon (CBOR, ClientPIN both halves, P-256, state file): make_credential p50 {:.2} ms, get_assertion p50 {:.2} ms",
        ms(key_mc),
        ms(key_ga)
    );
    flat_cost(n, full, &ctx).await;
}

/// Flat cost: ceremonies on the empty keygate (`empty`) and on one with the campus's keys
/// stored, alternating one user at a time (so that the machine's other load falls on both
/// alike); the daemon's overhead compared.
async fn flat_cost(n: usize, full: bool, empty: &Ctx) {
    let (users, per_user) = if full {
        (
            env_u64("KEYGATE_BENCH_SCALE_USERS", 100_000),
            env_u64("KEYGATE_BENCH_SCALE_KEYS_PER_USER", 3),
        )
    } else {
        (200, 3)
    };
    let (stored_server, stored_tmp, stored) = start(3).await;
    stored.run("template", 1).await;
    let filled = ceremony_fill::fill_ceremonies(
        &stored_server.state.store,
        &stored_tmp.path().join("keygate.db"),
        "template0",
        users,
        per_user,
    )
    .await;
    println!("flat cost, stored: {filled}");
    let (mut e_enroll, mut e_verify) = (Samples::new(n), Samples::new(n));
    let (mut s_enroll, mut s_verify) = (Samples::new(n), Samples::new(n));
    for i in 0..n {
        empty
            .run_into("flat", i..i + 1, &mut e_enroll, &mut e_verify)
            .await;
        stored
            .run_into("flat", i..i + 1, &mut s_enroll, &mut s_verify)
            .await;
    }
    for (kind, empty, after) in [
        ("enroll", &mut e_enroll, &mut s_enroll),
        ("verify", &mut e_verify, &mut s_verify),
    ] {
        empty.overhead.sort();
        after.overhead.sort();
        let (e50, e99) = (
            ms(pct(&empty.overhead, 0.5)),
            ms(pct(&empty.overhead, 0.99)),
        );
        let (a50, a99) = (
            ms(pct(&after.overhead, 0.5)),
            ms(pct(&after.overhead, 0.99)),
        );
        println!(
            "flat cost, {kind} daemon overhead ({n} alternating): empty p50 {e50:.2} p99 {e99:.2} ms | {users} users, {} credentials p50 {a50:.2} p99 {a99:.2} ms | ratio (target <= 1.2x) p50 {:.2}x p99 {:.2}x",
            users * per_user,
            a50 / e50,
            a99 / e99
        );
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Entra enrollments (`target: "entra"`) against the fake tenant on loopback: per enrollment,
/// wall time through HTTP, the tenant's own time (token, creationOptions, the registration it
/// verifies), the simulated key's, and what is left: keygate's own time.
async fn entra_enrollments(n: usize) {
    use common::fake_entra::{self, FakeEntraOptions};
    let fake = fake_entra::start(FakeEntraOptions::default()).await;
    let tmp = tempfile::tempdir().unwrap();
    let server = InProcess::start_config(
        tmp.path(),
        &format!(
            "simulate_seed = 2\n[log]\nlevel = \"error\"\n{}",
            fake.entra_toml()
        ),
        true,
    )
    .await;
    let sim = server.state.sim.clone().expect("a sim bench");
    let token = keygate::auth::create_token(&server.state.store, Role::Admin, None)
        .await
        .unwrap();
    let base = server.base.clone();
    let c = reqwest::Client::new();
    let send = |req: reqwest::RequestBuilder, body: Value| {
        let token = token.clone();
        async move {
            req.bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let key = "sim%3A1";
    send(
        c.patch(format!("{base}/v1/sim/keys/{key}")),
        json!({ "touch": { "auto_after_ms": 0 }, "resident_slots": 1000 }),
    )
    .await;
    send(
        c.post(format!("{base}/v1/devices/{key}/pin")),
        json!({ "new_pin": "1234" }),
    )
    .await;
    let (mut wall, mut graph, mut in_key, mut own) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let user = format!("entra{i}");
        fake.add_user(&format!("{user}@student.odisee.be"), "Bench");
        let (k0, g0) = (sim.time_in_keys(), fake.time_spent());
        let t = Instant::now();
        let v = send(
            c.post(format!("{base}/v1/enrollments?wait=true")),
            json!({ "user": user, "display_name": "Bench", "pin": "1234", "target": "entra" }),
        )
        .await;
        let w = t.elapsed();
        assert_eq!(v["state"], "succeeded", "{v}");
        let (k, g) = (sim.time_in_keys() - k0, fake.time_spent() - g0);
        wall.push(w);
        graph.push(g);
        in_key.push(k);
        own.push(w.saturating_sub(g + k));
    }
    println!("entra enrollments: {n} against the fake tenant on loopback");
    for (what, d) in [
        ("end to end through HTTP:             ", &mut wall),
        ("the fake Graph + identity platform:  ", &mut graph),
        ("inside the simulated key:            ", &mut in_key),
        ("keygate's own (wall - Graph - key):  ", &mut own),
    ] {
        d.sort();
        println!(
            "entra enroll, {what} p50 {:.2} ms  p99 {:.2} ms",
            ms(pct(d, 0.5)),
            ms(pct(d, 0.99))
        );
    }
}

/// The same operations through our CTAP client straight on the simulated key, without the rest
/// of the daemon (for reference: both halves of the PIN protocol are in it). Returns the p50s.
fn key_only(n: usize) -> (Duration, Duration) {
    use keygate::device::sim::{SimBench, SimKeyOptions, Touch};
    use keygate::device::{DeviceSource, GetAssertionArgs, MakeCredentialArgs, OpContext, Pin};
    let tmp = tempfile::tempdir().unwrap();
    let bench = SimBench::open(tmp.path(), Some(1)).unwrap();
    bench
        .configure(
            "sim:1",
            SimKeyOptions {
                touch: Some(Touch::AutoAfterMs(0)),
                ..Default::default()
            },
        )
        .unwrap();
    let key = bench.enumerate().unwrap().remove(0);
    key.set_pin(&Pin::new("1234")).unwrap();
    let ctx = || {
        OpContext::new(
            Instant::now() + Duration::from_secs(10),
            std::sync::Arc::new(|_| {}),
        )
    };
    let (mut mc, mut ga) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let t = Instant::now();
        let out = key
            .make_credential(
                &MakeCredentialArgs {
                    client_data_hash: [1; 32],
                    client_data_json: vec![],
                    rp_id: "keygate.local".into(),
                    rp_name: "keygate".into(),
                    user_id: (i as u64).to_be_bytes().to_vec(),
                    user_name: format!("bench{i}"),
                    user_display_name: "Bench".into(),
                    algorithms: vec![-7],
                    exclude_list: vec![],
                    resident_key: false,
                    user_verification: true,
                    pin: Some(Pin::new("1234")),
                    extensions: Default::default(),
                },
                &ctx(),
            )
            .unwrap();
        mc.push(t.elapsed());
        let t = Instant::now();
        key.get_assertion(
            &GetAssertionArgs {
                client_data_hash: [2; 32],
                client_data_json: vec![],
                rp_id: "keygate.local".into(),
                allow_list: vec![out.credential_id],
                user_verification: true,
                pin: Some(Pin::new("1234")),
                user_presence: true,
            },
            &ctx(),
        )
        .unwrap();
        ga.push(t.elapsed());
    }
    mc.sort();
    ga.sort();
    (pct(&mc, 0.5), pct(&ga, 0.5))
}

/// Idle RSS and start-to-ready of the binary built with the bench profile.
fn process_figures() {
    let bin = env!("CARGO_BIN_EXE_keygate");
    let tmp = tempfile::tempdir().unwrap();
    let mut readies = Vec::new();
    let (mut rss, mut anon, mut file) = (0, 0, 0);
    for _ in 0..5 {
        let t = Instant::now();
        let mut daemon = Spawned::spawn(Spawned::command(bin, tmp.path()).env("RUST_LOG", "error"));
        readies.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(500));
        rss = status_kib(daemon.pid(), "VmRSS:").unwrap_or(0);
        anon = status_kib(daemon.pid(), "RssAnon:").unwrap_or(0);
        file = status_kib(daemon.pid(), "RssFile:").unwrap_or(0);
        daemon.kill();
    }
    readies.sort();
    println!(
        "start-to-ready (warm data dir, median of 5): {:.1} ms",
        ms(readies[2])
    );
    println!(
        "idle RSS: {:.1} MiB ({:.1} MiB anonymous, {:.1} MiB file-backed: the binary's mapped code and data)",
        rss as f64 / 1024.0,
        anon as f64 / 1024.0,
        file as f64 / 1024.0
    );
}
