//! Shared by the SMS benches: a mock webhook provider on loopback, a keygate served in this
//! process on a clock the bench can pin (to write back-dated rows), verified phones registered
//! over HTTP, and rounds of flows (create challenge -> the provider receives the SMS -> verify
//! with the code it carried) over the real HTTP API with the durable SQLite store.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use keygate::auth::Role;
use keygate::base::clock::{Clock, SystemClock};
use keygate::harness::InProcess;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// The mock provider: the latest text per number, and a wake-up for waiting clients.
#[derive(Default)]
pub struct Mock {
    latest: Mutex<HashMap<String, (u64, String)>>,
    seq: std::sync::atomic::AtomicU64,
    notify: Notify,
}

async fn receive(State(m): State<Arc<Mock>>, Json(body): Json<Value>) -> Json<Value> {
    let to = body["to"].as_str().unwrap_or_default().to_string();
    let text = body["text"].as_str().unwrap_or_default().to_string();
    let n = m.seq.fetch_add(1, Ordering::SeqCst);
    m.latest.lock().unwrap().insert(to, (n, text));
    m.notify.notify_waiters();
    Json(json!({ "id": format!("mock-{n}") }))
}

impl Mock {
    /// Serve a mock provider on a loopback port; its webhook URL.
    pub async fn start() -> (Arc<Mock>, String) {
        let mock = Arc::new(Mock::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/sms", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/sms", post(receive))
            .with_state(mock.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (mock, url)
    }

    pub fn current(&self, to: &str) -> Option<u64> {
        self.latest.lock().unwrap().get(to).map(|(n, _)| *n)
    }

    /// Wait for a message to `to` newer than `after`; returns (seq, code).
    pub async fn wait(&self, to: &str, after: Option<u64>) -> (u64, String) {
        loop {
            let notified = self.notify.notified();
            if let Some((n, text)) = self.latest.lock().unwrap().get(to).cloned() {
                if Some(n) != after && after.is_none_or(|a| n > a) {
                    return (n, text.chars().take(6).collect());
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }
}

/// The system clock, or a pinned instant while the bench writes back-dated rows: keygate's
/// store stamps audit lines and sweeps by it, as the daemon's does by the system clock.
#[derive(Default)]
pub struct BenchClock {
    /// Unix ms the clock is pinned at; 0 when it follows the system clock.
    pinned: AtomicI64,
}

impl BenchClock {
    pub fn pin(&self, ms: i64) {
        self.pinned.store(ms, Ordering::SeqCst);
    }
    pub fn release(&self) {
        self.pinned.store(0, Ordering::SeqCst);
    }
}

impl Clock for BenchClock {
    fn now_ms(&self) -> i64 {
        match self.pinned.load(Ordering::SeqCst) {
            0 => SystemClock.now_ms(),
            ms => ms,
        }
    }
}

/// The config of an SMS bench: the webhook provider at `mock_url`, errors-only logs, and the
/// hourly global and per-country budgets raised (a campus sizes them to its own volume, and
/// this is thousands of flows a second). The fraud guard would judge the bench's one number
/// range (codes verified only after many more are sent): off, as a pumping range is not what
/// this measures. `extra` is appended to `[sms]`.
pub fn sms_toml(mock_url: &str, extra: &str) -> String {
    format!(
        "[log]\nlevel = \"error\"\n[sms]\nproviders = [\"webhook\"]\n\
         global_hourly_budget = 1000000000\ncountry_hourly_budget = 1000000000\n{extra}\n\
         [sms.webhook]\nurl = \"{mock_url}\"\n\
         [sms.fraud]\nmin_sends = 1000000000\nmonthly_message_cap = 0\n"
    )
}

/// A keygate in this process with its mock provider, a kiosk token, and registered phones.
pub struct SmsBench {
    pub server: InProcess,
    pub clock: Arc<BenchClock>,
    pub mock: Arc<Mock>,
    pub client: reqwest::Client,
    pub token: String,
    /// (user, phone id, number), verified: the phones the flows take in turn.
    phones: Mutex<Arc<Vec<(String, String, String)>>>,
    next_phone: Arc<AtomicUsize>,
}

/// One round of flows: wall time and each step's latencies.
pub struct Round {
    pub flows: usize,
    pub wall: Duration,
    pub create: Vec<Duration>,
    pub deliver: Vec<Duration>,
    pub verify: Vec<Duration>,
}

/// The `p` quantile in milliseconds (sorts `v`).
pub fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)].as_secs_f64() * 1000.0
}

/// The median of `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl Round {
    pub fn flows_per_s(&self) -> f64 {
        self.flows as f64 / self.wall.as_secs_f64()
    }

    /// "N flows in S s = R flows/s | create/provider receives/verify p50 p99": the line every
    /// SMS bench prints per round.
    #[allow(dead_code)]
    pub fn summary(&mut self) -> String {
        format!(
            "{} flows in {:.2} s = {:>6.0} flows/s | create p50 {:.2} p99 {:.2} ms | provider receives p50 {:.2} p99 {:.2} ms | verify p50 {:.2} p99 {:.2} ms",
            self.flows,
            self.wall.as_secs_f64(),
            self.flows_per_s(),
            pct(&mut self.create, 0.5),
            pct(&mut self.create, 0.99),
            pct(&mut self.deliver, 0.5),
            pct(&mut self.deliver, 0.99),
            pct(&mut self.verify, 0.5),
            pct(&mut self.verify, 0.99),
        )
    }
}

/// Type the code a challenge's SMS carried; the bench expects it to be right.
pub async fn verify_code(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    challenge: &str,
    code: &str,
) {
    let r = client
        .post(format!("{base}/v1/sms/challenges/{challenge}/verify"))
        .bearer_auth(token)
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// POST `body` as JSON with the bench's token; the JSON answer.
pub async fn post_json(client: &reqwest::Client, url: String, token: &str, body: Value) -> Value {
    client
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

impl SmsBench {
    /// Start keygate on `dir` with [`sms_toml`] (`extra` in `[sms]`) and register `phones`
    /// verified phones, one per student (`bench<i>`), 32 at a time.
    pub async fn start(dir: &Path, extra: &str, phones: usize) -> SmsBench {
        Self::start_with_mock(dir, extra, phones, Mock::start().await).await
    }

    /// [`SmsBench::start`] with a given mock provider (several keygates sharing one campus
    /// store share one provider too: any of them may send a flow's message).
    #[allow(dead_code)]
    pub async fn start_with_mock(
        dir: &Path,
        extra: &str,
        phones: usize,
        (mock, mock_url): (Arc<Mock>, String),
    ) -> SmsBench {
        let clock = Arc::new(BenchClock::default());
        let cfg = keygate::harness::config(dir, &sms_toml(&mock_url, extra), true);
        let state = keygate::daemon::build_state_with_clock(cfg, clock.clone()).expect("state");
        let server = InProcess::start(state).await;
        let token = keygate::auth::create_token(&server.state.store, Role::Kiosk, None)
            .await
            .unwrap();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap();
        let mut bench = SmsBench {
            server,
            clock,
            mock,
            client,
            token,
            phones: Mutex::new(Arc::new(Vec::new())),
            next_phone: Arc::new(AtomicUsize::new(0)),
        };
        bench.register_phones(phones).await;
        bench
    }

    pub fn base(&self) -> &str {
        &self.server.base
    }

    pub fn store(&self) -> &keygate::store::Store {
        &self.server.state.store
    }

    async fn register_phones(&mut self, count: usize) {
        let registered = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for _ in 0..32 {
            let (client, base, token, mock, registered, next) = (
                self.client.clone(),
                self.base().to_string(),
                self.token.clone(),
                self.mock.clone(),
                registered.clone(),
                next.clone(),
            );
            workers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= count {
                        return;
                    }
                    let user = format!("bench{i}");
                    let number = format!("+324750{i:05}");
                    let v = post_json(
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
                    verify_code(&client, &base, &token, &ch, &code).await;
                    let phone = v["phone"]["id"].as_str().unwrap().to_string();
                    registered.lock().unwrap().push((user, phone, number));
                }
            }));
        }
        for w in workers {
            w.await.unwrap();
        }
        self.use_phones(std::mem::take(&mut *registered.lock().unwrap()));
    }

    /// From now on the flows take these phones in turn (user, phone id, number; verified).
    pub fn use_phones(&self, phones: Vec<(String, String, String)>) {
        *self.phones.lock().unwrap() = Arc::new(phones);
        self.next_phone.store(0, Ordering::SeqCst);
    }

    /// The phones the flows take (user, phone id, number).
    #[allow(dead_code)]
    pub fn phones(&self) -> Vec<(String, String, String)> {
        self.phones.lock().unwrap().as_ref().clone()
    }

    pub fn phone_count(&self) -> usize {
        self.phones.lock().unwrap().len()
    }

    /// One flow on the next phone (no two flows in flight share a number): its step latencies
    /// (create, the provider receives, verify).
    pub async fn flow(&self) -> [Duration; 3] {
        let phones = self.phones.lock().unwrap().clone();
        flow(
            &self.client,
            self.base(),
            &self.token,
            &self.mock,
            &phones,
            &self.next_phone,
        )
        .await
    }

    /// `flows` flows spread over `clients` concurrent clients.
    pub async fn round(self: &Arc<Self>, clients: usize, flows: usize) -> Round {
        let per_client = flows.div_ceil(clients);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let bench = self.clone();
            tasks.push(tokio::spawn(async move {
                let mut steps = (Vec::new(), Vec::new(), Vec::new());
                for _ in 0..per_client {
                    let [c, d, v] = bench.flow().await;
                    steps.0.push(c);
                    steps.1.push(d);
                    steps.2.push(v);
                }
                steps
            }));
        }
        let (mut create, mut deliver, mut verify) = (Vec::new(), Vec::new(), Vec::new());
        for t in tasks {
            let (c, d, v) = t.await.unwrap();
            create.extend(c);
            deliver.extend(d);
            verify.extend(v);
        }
        Round {
            flows: create.len(),
            wall: started.elapsed(),
            create,
            deliver,
            verify,
        }
    }
}

/// One flow over HTTP on the next phone of `phones`; its step latencies.
pub async fn flow(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    mock: &Mock,
    phones: &[(String, String, String)],
    next_phone: &AtomicUsize,
) -> [Duration; 3] {
    let k = next_phone.fetch_add(1, Ordering::SeqCst);
    let (user, phone, number) = &phones[k % phones.len()];
    let last = mock.current(number);
    let t = Instant::now();
    let v = post_json(
        client,
        format!("{base}/v1/sms/challenges"),
        token,
        json!({ "user": user, "phone_id": phone }),
    )
    .await;
    let id = v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    let create = t.elapsed();
    let t = Instant::now();
    let (_, code) = mock.wait(number, last).await;
    let deliver = t.elapsed();
    let t = Instant::now();
    verify_code(client, base, token, &id, &code).await;
    [create, deliver, t.elapsed()]
}

/// Whether the bench runs in full (`cargo bench`) or as the test suite's smoke pass.
pub fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// An environment override of a bench figure.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The machine line every bench prints.
pub fn machine() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "machine: {} cores, {}, load average {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::env::consts::ARCH,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}
