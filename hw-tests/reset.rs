//! Factory reset through the real HID stack: keygate's own CTAPHID authenticatorReset (the
//! library has none), sent when the key comes back from a replug, with the library's handle
//! closed meanwhile. Destroys everything on the key (PIN, every credential of every site), so
//! it needs `KEYGATE_HW_DESTRUCTIVE=1` and `KEYGATE_HW_RESET=1`, and an operator (or the VM's
//! harness) who replugs the key when told. `KEYGATE_HW_RESET_WINDOW_MS`: the key's power-up
//! window (default 10000; 5000 for older YubiKeys).

use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate::device::hid::HidSource;
use keygate::device::{DeviceError, DeviceSource, OpContext};
use serde_json::{json, Value};

use super::common::enc;
use super::{env, say, Hw};

fn opted_in() -> bool {
    let yes = env("KEYGATE_HW_DESTRUCTIVE").as_deref() == Some("1")
        && env("KEYGATE_HW_RESET").as_deref() == Some("1");
    if !yes {
        eprintln!(
            "SKIPPED: a factory reset wipes the key's PIN and every credential on it; set \
             KEYGATE_HW_DESTRUCTIVE=1 and KEYGATE_HW_RESET=1"
        );
    }
    yes
}

impl Hw {
    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Start a reset of the key under test: `needs_replug`.
    async fn start_reset(&self) -> String {
        let (st, r) = self
            .post(
                &format!("/v1/devices/{}/reset", enc(&self.id())),
                json!({ "timeout_ms": 90000 }),
            )
            .await;
        assert_eq!(st, 202, "{r}");
        assert_eq!(r["state"], "needs_replug", "{r}");
        r["id"].as_str().unwrap().to_string()
    }

    /// Poll the reset until it is in one of `states` (at most 120 s).
    async fn reset_reaching(&self, id: &str, states: &[&str]) -> Value {
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let v = self.get(&format!("/v1/resets/{id}?wait=1")).await;
            if states.contains(&v["state"].as_str().unwrap_or("")) || Instant::now() > until {
                return v;
            }
        }
    }
}

#[tokio::test]
#[ignore = "DESTRUCTIVE: factory-resets the key; needs KEYGATE_HW_DESTRUCTIVE=1, KEYGATE_HW_RESET=1 and a replug"]
async fn hw_factory_reset_destructive() {
    if !opted_in() {
        return;
    }
    let hw = Hw::start().await;
    let e = hw.enroll("hw-reset-1", json!({})).await;
    assert_eq!(e["state"], "succeeded", "{e}");
    let cred = e["result"]["credential"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let id = hw.start_reset().await;
    say("REPLUG the key now (pull it out, plug it back in), then touch it");
    let done = hw
        .reset_reaching(&id, &["succeeded", "failed", "cancelled"])
        .await;
    eprintln!("reset: {done}");
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(done["revoked_credentials"].as_u64() >= Some(1), "{done}");
    let back = done["replugged_device"].as_str().unwrap().to_string();

    // GetInfo through the library's fresh handle: the key has no PIN any more.
    let all = hw.get("/v1/devices").await;
    let key = all["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == back.as_str())
        .unwrap_or_else(|| panic!("the reset key is not listed: {all}"));
    eprintln!("after the reset: {key}");
    assert_eq!(
        key["pin_set"], false,
        "clientPin false after the reset: {key}"
    );
    let c = hw
        .get(&format!("/v1/users/hw-reset-1/credentials/{cred}"))
        .await;
    assert_eq!(c["credential"]["state"], "revoked", "{c}");
    assert_eq!(c["credential"]["state_reason"], "key_reset", "{c}");
    drop(hw);

    // A second reset without a replug, once the power-up window has passed: the key refuses
    // it with CTAP2_ERR_NOT_ALLOWED. Sent straight through the adapter: the kiosk's ceremony
    // always waits for a replug first.
    let window_ms: u64 = env("KEYGATE_HW_RESET_WINDOW_MS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    say(&format!(
        "do NOT replug the key: waiting {} s for its power-up window to pass",
        window_ms / 1000 + 1
    ));
    tokio::time::sleep(Duration::from_millis(window_ms + 1000)).await;
    let outcome = tokio::task::spawn_blocking(move || {
        let key = HidSource::new()
            .enumerate()
            .unwrap()
            .into_iter()
            .find(|a| a.id() == back)
            .expect("the key is still plugged");
        let ctx = OpContext::new(Instant::now() + Duration::from_secs(30), Arc::new(|_| {}));
        let refused = key.reset(&ctx);
        // The library's handle answers again after keygate's own exchange.
        (refused, key.info())
    })
    .await
    .unwrap();
    let (refused, info) = outcome;
    eprintln!("reset without a replug: {refused:?}");
    assert_eq!(refused, Err(DeviceError::ResetWindowMissed));
    assert_eq!(refused.unwrap_err().code().as_str(), "reset_window_missed");
    let info = info.unwrap();
    assert_eq!(info.pin_set, Some(false), "{info:?}");
}

#[tokio::test]
#[ignore = "needs a key that may be reset (KEYGATE_HW_DESTRUCTIVE=1, KEYGATE_HW_RESET=1), a replug and NO touch"]
async fn hw_factory_reset_cancelled() {
    if !opted_in() {
        return;
    }
    let hw = Hw::start().await;
    let id = hw.start_reset().await;
    say("REPLUG the key now (pull it out, plug it back in), and do NOT touch it");
    let waiting = hw
        .reset_reaching(&id, &["waiting_touch", "succeeded", "failed", "cancelled"])
        .await;
    assert_eq!(waiting["state"], "waiting_touch", "{waiting}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let v = hw.delete(&format!("/v1/resets/{id}")).await;
    eprintln!("cancelled reset: {v}");
    assert_eq!(v["state"], "cancelled", "{v}");
    assert_eq!(v["error"]["code"], "cancelled", "{v}");
    // The key answers GetInfo through the library's fresh handle.
    let back = waiting["replugged_device"].as_str().unwrap();
    let all = hw.get("/v1/devices").await;
    assert!(
        all["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == back && d["versions"].as_array().is_some_and(|v| !v.is_empty())),
        "{all}"
    );
}
