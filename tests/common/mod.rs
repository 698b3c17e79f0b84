//! Shared harness for the black-box API tests: a real keygate (router + SQLite file + simulated
//! keys) on a real loopback socket, driven with a real HTTP client.
#![allow(dead_code)]

pub mod fake_entra;
pub mod kiosk;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keygate::auth::Role;
use keygate::harness::InProcess;
use keygate::http::SharedState;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub struct TestServer {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub admin: String,
    pub kiosk: String,
    pub client: reqwest::Client,
    pub state: SharedState,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    _server: InProcess,
}

/// A config for tests: simulated keys, seeded, in `dir`.
pub fn test_config(dir: &Path, extra_toml: &str) -> keygate::config::Config {
    keygate::harness::config(dir, &format!("simulate_seed = 7\n{extra_toml}"), true)
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with("").await
    }

    pub async fn start_with(extra_toml: &str) -> TestServer {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_in(&dir, extra_toml).await;
        s._tmp = Some(tmp);
        s
    }

    /// Start on an existing data dir (restart tests). Tokens are created fresh.
    pub async fn start_in(dir: &Path, extra_toml: &str) -> TestServer {
        Self::start_in_with_clock(dir, extra_toml, Arc::new(keygate::sms::SystemClock)).await
    }

    /// A server whose SMS layer reads time from `clock` (expiry, cooldowns, lockouts).
    pub async fn start_with_clock(
        extra_toml: &str,
        clock: Arc<dyn keygate::sms::Clock>,
    ) -> TestServer {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_in_with_clock(&dir, extra_toml, clock).await;
        s._tmp = Some(tmp);
        s
    }

    pub async fn start_in_with_clock(
        dir: &Path,
        extra_toml: &str,
        clock: Arc<dyn keygate::sms::Clock>,
    ) -> TestServer {
        // KG_TEST_LOG=error (or any filter) shows the servers' logs in a test's output.
        if let Ok(filter) = std::env::var("KG_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let cfg = test_config(dir, extra_toml);
        let state = keygate::daemon::build_state_with_clock(cfg, clock).expect("state");
        let admin = keygate::auth::create_token(&state.store, Role::Admin, Some("test"))
            .await
            .unwrap();
        let kiosk = keygate::auth::create_token(&state.store, Role::Kiosk, Some("test"))
            .await
            .unwrap();
        let server = InProcess::start(state.clone()).await;
        TestServer {
            base: server.base.clone(),
            addr: server.addr,
            admin,
            kiosk,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            state,
            data_dir: dir.to_path_buf(),
            _tmp: None,
            _server: server,
        }
    }

    pub async fn req(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.req(Method::GET, path, Some(&self.admin.clone()), None)
            .await
    }
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.req(Method::POST, path, Some(&self.admin.clone()), Some(body))
            .await
    }
    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.req(Method::PATCH, path, Some(&self.admin.clone()), Some(body))
            .await
    }
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.req(Method::DELETE, path, Some(&self.admin.clone()), None)
            .await
    }

    /// Enroll and wait for the end (or needs_pin).
    pub async fn enroll(&self, body: Value) -> Value {
        let (st, v) = self.post("/v1/enrollments?wait=true", body).await;
        assert!(st.is_success(), "enroll: {st} {v}");
        v
    }

    pub async fn verify(&self, body: Value) -> Value {
        let (st, v) = self.post("/v1/assertions?wait=true", body).await;
        assert!(st.is_success(), "verify: {st} {v}");
        v
    }

    /// The first simulated key's id.
    pub async fn sim_key(&self) -> String {
        let (_, v) = self.get("/v1/sim/keys").await;
        v["keys"][0]["id"].as_str().unwrap().to_string()
    }

    pub async fn configure_key(&self, id: &str, patch: Value) -> Value {
        let (st, v) = self.patch(&format!("/v1/sim/keys/{id}"), patch).await;
        assert!(st.is_success(), "configure: {st} {v}");
        v
    }

    /// Start a factory reset of `key` (admin): the `needs_replug` view.
    pub async fn start_reset(&self, key: &str) -> Value {
        let (st, v) = self
            .post(&format!("/v1/devices/{}/reset", enc(key)), json!({}))
            .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["state"], "needs_replug", "{v}");
        v
    }

    /// Pull the simulated `key` out and plug it back in (its power-up window starts).
    pub async fn replug(&self, key: &str) {
        let (st, v) = self
            .post(&format!("/v1/sim/keys/{}/replug", enc(key)), json!({}))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }

    /// The reset `id` once it ended (or its last view after a minute).
    pub async fn reset_ended(&self, id: &str) -> Value {
        let mut v = Value::Null;
        for _ in 0..12 {
            let (st, got) = self.get(&format!("/v1/resets/{id}?wait=5")).await;
            assert_eq!(st, StatusCode::OK, "{got}");
            v = got;
            if ["succeeded", "failed", "cancelled"].contains(&v["state"].as_str().unwrap_or("")) {
                break;
            }
        }
        v
    }

    /// Set a PIN on the (only) key.
    pub async fn set_pin(&self, pin: &str) {
        let id = self.sim_key().await;
        let (st, v) = self
            .post(
                &format!("/v1/devices/{}/pin", enc(&id)),
                json!({ "new_pin": pin }),
            )
            .await;
        assert!(st.is_success(), "set pin: {st} {v}");
    }
}

/// Percent-encode a path segment (device ids contain ':' and, for HID, '/').
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}
