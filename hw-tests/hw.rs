//! Tests against a REAL security key through the real HID adapter and the real HTTP API.
//! Never run by default. Opt in twice:
//!
//!   KEYGATE_HW_KEY=<hid path, e.g. /dev/hidraw3, or the key's AAGUID> \
//!   cargo test --test hw -- --ignored --test-threads=1 --nocapture
//!
//! `KEYGATE_HW_PIN` is the key's PIN (for the user-verification tests). Tests that change the
//! key for good (setting a PIN on a key without one) also need `KEYGATE_HW_DESTRUCTIVE=1`, and
//! refuse a key that already has a PIN (a key in use) unless `KEYGATE_HW_ALLOW_CREDENTIALS=1`.
//! `KEYGATE_HW_ATTESTATION_CA=<pem>` trusts an attestation CA (needed for discoverable enrollment).
//! `KEYGATE_HW_UNPLUG=1` enables the test that asks the operator to pull the key out. The
//! tests tell the operator what to do ("touch the key now") and time out cleanly.

use std::time::Duration;

use keygate::config::{parse_config, Overrides};
use serde_json::{json, Value};

struct Hw {
    base: String,
    token: String,
    http: reqwest::Client,
    device: Value,
    _tmp: tempfile::TempDir,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn say(msg: &str) {
    eprintln!("\n>>> {msg}");
}

impl Hw {
    /// The daemon on real HID keys, and the key the operator named.
    async fn start() -> Hw {
        let wanted = env("KEYGATE_HW_KEY").expect(
            "set KEYGATE_HW_KEY to the key's hidraw path or AAGUID: these tests talk to a real key",
        );
        let tmp = tempfile::tempdir().unwrap();
        // KEYGATE_HW_ATTESTATION_CA: a PEM file of attestation roots to trust (the virtual key's
        // test CA in the VM run; a vendor's CA on a bench) — discoverable enrollment needs one.
        let mut toml = String::from("[relying_party]\nuser_verification = \"preferred\"\n");
        if let Some(ca) = env("KEYGATE_HW_ATTESTATION_CA") {
            toml.push_str(&format!("attestation_ca_files = [{ca:?}]\n"));
        }
        let cfg = parse_config(
            Some(&toml),
            &[],
            &Overrides {
                data_dir: Some(tmp.path().to_path_buf()),
                simulate: Some(false),
                listen: Some("127.0.0.1:0".parse().unwrap()),
            },
        )
        .unwrap();
        let state = keygate::daemon::build_state(cfg).unwrap();
        let token =
            keygate::auth::create_token(&state.store, keygate::auth::Role::Admin, None).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, keygate::http::router(state)).await });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()
            .unwrap();
        let devices: Value = http
            .get(format!("{base}/v1/devices"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let device = devices["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| {
                let id = d["id"].as_str().unwrap_or("");
                id == wanted
                    || id == format!("hid:{wanted}")
                    || d["aaguid"].as_str() == Some(wanted.as_str())
            })
            .cloned()
            .unwrap_or_else(|| {
                panic!("no plugged key matches KEYGATE_HW_KEY={wanted}; plugged: {devices}")
            });
        eprintln!("key under test: {device}");
        Hw {
            base,
            token,
            http,
            device,
            _tmp: tmp,
        }
    }

    fn id(&self) -> String {
        self.device["id"].as_str().unwrap().to_string()
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn delete(&self, path: &str) -> Value {
        let r = self
            .http
            .delete(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap_or(Value::Null)
    }

    fn pin(&self) -> Option<String> {
        if self.device["pin_set"] == true {
            Some(env("KEYGATE_HW_PIN").expect("the key has a PIN: set KEYGATE_HW_PIN"))
        } else {
            None
        }
    }

    async fn enroll(&self, user: &str, extra: Value) -> Value {
        let mut body = json!({ "user": user, "display_name": "HW test", "device": self.id(), "timeout_ms": 30000 });
        if let Some(p) = self.pin() {
            body["pin"] = json!(p);
        }
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        say("touch the key now (30 s)");
        self.post("/v1/enrollments?wait=true", body).await.1
    }

    async fn verify(&self, user: Option<&str>) -> Value {
        let mut body = json!({ "device": self.id(), "timeout_ms": 30000 });
        if let Some(u) = user {
            body["user"] = json!(u);
        }
        if let Some(p) = self.pin() {
            body["pin"] = json!(p);
        }
        say("touch the key now (30 s)");
        self.post("/v1/assertions?wait=true", body).await.1
    }
}

#[tokio::test]
#[ignore = "needs a real key: KEYGATE_HW_KEY=... cargo test --test hw -- --ignored"]
async fn hw_get_info() {
    let hw = Hw::start().await;
    assert!(hw.device["versions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v.as_str().unwrap().starts_with("FIDO_2")));
    assert_eq!(hw.device["transport"], "hid");
}

#[tokio::test]
#[ignore = "needs a real key"]
async fn hw_enroll_verify_and_counter() {
    let hw = Hw::start().await;
    let v = hw.enroll("hw-user-1", json!({})).await;
    assert_eq!(v["state"], "succeeded", "{v}");
    let a = hw.verify(Some("hw-user-1")).await;
    assert_eq!(a["state"], "succeeded", "{a}");
    let b = hw.verify(Some("hw-user-1")).await;
    assert_eq!(b["state"], "succeeded", "{b}");
    let (c1, c2) = (
        a["result"]["counter"].as_u64().unwrap(),
        b["result"]["counter"].as_u64().unwrap(),
    );
    assert!(c2 > c1 || (c1 == 0 && c2 == 0), "counter {c1} -> {c2}");
    assert_eq!(a["result"]["user_verified"], hw.pin().is_some());
}

#[tokio::test]
#[ignore = "needs a real key with a PIN"]
async fn hw_discoverable_and_userless() {
    let hw = Hw::start().await;
    if hw.pin().is_none() {
        eprintln!("SKIPPED: user-less verification needs a key with a PIN");
        return;
    }
    let v = hw
        .enroll(
            "hw-user-rk",
            json!({ "discoverable": true, "user_verification": "required" }),
        )
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    let a = hw.verify(None).await;
    assert_eq!(a["state"], "succeeded", "{a}");
    assert_eq!(a["result"]["user"], "hw-user-rk");
}

#[tokio::test]
#[ignore = "needs a real key with a PIN; uses one PIN retry and restores it"]
async fn hw_wrong_pin_counts_down() {
    let hw = Hw::start().await;
    let Some(pin) = hw.pin() else {
        eprintln!("SKIPPED: the key has no PIN");
        return;
    };
    let retries = hw.device["pin_retries"].as_u64().unwrap_or(0);
    assert!(
        retries >= 4,
        "refusing: only {retries} PIN retries left on this key"
    );
    let wrong = if pin == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    let (_, v) = hw
        .post(
            "/v1/assertions?wait=true",
            json!({ "device": hw.id(), "pin": wrong, "user_verification": "required" }),
        )
        .await;
    assert_eq!(v["error"]["code"], "pin_invalid", "{v}");
    assert_eq!(v["error"]["retries_left"].as_u64(), Some(retries - 1));
    hw.delete(&format!("/v1/assertions/{}", v["id"].as_str().unwrap()))
        .await;
    // The right PIN resets the counter (the key has no credential for this RP: no_credentials is fine).
    say("touch the key now (30 s)");
    let (_, v) = hw
        .post(
            "/v1/assertions?wait=true",
            json!({ "device": hw.id(), "pin": pin }),
        )
        .await;
    assert!(
        matches!(v["state"].as_str(), Some("succeeded" | "failed")),
        "{v}"
    );
}

#[tokio::test]
#[ignore = "needs a real key and an operator who does NOT touch it"]
async fn hw_touch_timeout_and_cancel() {
    let hw = Hw::start().await;
    say("do NOT touch the key for the next 10 seconds");
    let (_, v) = hw
        .post("/v1/enrollments?wait=true", json!({ "user": "hw-user-2", "display_name": "HW", "device": hw.id(), "pin": hw.pin(), "timeout_ms": 3000 }))
        .await;
    assert_eq!(v["error"]["code"], "touch_timeout", "{v}");
    let (_, v) = hw
        .post("/v1/enrollments", json!({ "user": "hw-user-2", "display_name": "HW", "device": hw.id(), "pin": hw.pin(), "timeout_ms": 30000 }))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let c = hw
        .delete(&format!("/v1/enrollments/{}", v["id"].as_str().unwrap()))
        .await;
    assert_eq!(c["state"], "cancelled", "{c}");
}

#[tokio::test]
#[ignore = "needs a real key and KEYGATE_HW_UNPLUG=1: asks the operator to pull the key out"]
async fn hw_unplug_mid_ceremony() {
    if env("KEYGATE_HW_UNPLUG").as_deref() != Some("1") {
        eprintln!("SKIPPED: set KEYGATE_HW_UNPLUG=1 to run the unplug test");
        return;
    }
    let hw = Hw::start().await;
    let (_, v) = hw
        .post("/v1/enrollments", json!({ "user": "hw-user-3", "display_name": "HW", "device": hw.id(), "pin": hw.pin(), "timeout_ms": 30000 }))
        .await;
    say("UNPLUG the key now (do not touch it)");
    let r: Value = hw
        .http
        .get(format!(
            "{}/v1/enrollments/{}?wait=30",
            hw.base,
            v["id"].as_str().unwrap()
        ))
        .bearer_auth(&hw.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        matches!(
            r["error"]["code"].as_str(),
            Some("device_removed" | "device_error")
        ),
        "{r}"
    );
}

#[tokio::test]
#[ignore = "DESTRUCTIVE: sets a PIN; needs KEYGATE_HW_DESTRUCTIVE=1"]
async fn hw_set_pin_destructive() {
    if env("KEYGATE_HW_DESTRUCTIVE").as_deref() != Some("1") {
        eprintln!(
            "SKIPPED: setting a PIN cannot be undone without a reset; set KEYGATE_HW_DESTRUCTIVE=1"
        );
        return;
    }
    let hw = Hw::start().await;
    if hw.device["pin_set"] == true {
        assert_eq!(
            env("KEYGATE_HW_ALLOW_CREDENTIALS").as_deref(),
            Some("1"),
            "refusing: this key already has a PIN (it is in use); set KEYGATE_HW_ALLOW_CREDENTIALS=1 to go on"
        );
        eprintln!("SKIPPED: the key already has a PIN");
        return;
    }
    let new_pin =
        env("KEYGATE_HW_NEW_PIN").expect("set KEYGATE_HW_NEW_PIN to the PIN to give the key");
    let (st, v) = hw
        .post(
            &format!("/v1/devices/{}/pin", hw.id().replace('/', "%2F")),
            json!({ "new_pin": new_pin }),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["device"]["pin_set"], true);
}

#[tokio::test]
#[ignore = "needs the VM's faulty virtual key (keygate-uhid --fault garbage) and KEYGATE_HW_FAULT=garbage"]
async fn hw_garbage_answer_is_a_typed_error() {
    if env("KEYGATE_HW_FAULT").as_deref() != Some("garbage") {
        eprintln!(
            "SKIPPED: only against `keygate-uhid --fault garbage` (KEYGATE_HW_FAULT=garbage)"
        );
        return;
    }
    let hw = Hw::start().await;
    let started = std::time::Instant::now();
    let (_, v) = hw
        .post("/v1/enrollments?wait=true", json!({ "user": "hw-user-4", "display_name": "HW", "device": hw.id(), "pin": hw.pin(), "timeout_ms": 20000 }))
        .await;
    // A response that is not CBOR: a typed error, no panic, and nothing past the deadline.
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "device_error", "{v}");
    assert!(started.elapsed() < Duration::from_secs(25), "{v}");
}
