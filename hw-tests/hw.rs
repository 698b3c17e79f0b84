//! Tests against a REAL security key through the real HID adapter and the real HTTP API.
//! Never run by default. Opt in twice:
//!
//!   KEYGATE_HW_KEY=<hid path, e.g. /dev/hidraw3, or the key's AAGUID> \
//!   cargo test --test hw -- --ignored --test-threads=1 --nocapture
//!
//! `KEYGATE_HW_PIN` is the key's PIN (for the user-verification tests). An AAGUID names a model,
//! not a key: when two plugged keys match it, the tests refuse to guess. The test that touches
//! the key's PIN (sets one, which only a reset undoes; on a key with a PIN, changes it to
//! `KEYGATE_HW_NEW_PIN` and back) also needs `KEYGATE_HW_DESTRUCTIVE=1`, and refuses a key that
//! looks in use (see [`in_use`]) unless `KEYGATE_HW_ALLOW_CREDENTIALS=1`.
//! `KEYGATE_HW_ATTESTATION_CA=<pem>` trusts an attestation CA (needed for discoverable enrollment).
//! `KEYGATE_HW_ENTRA=1` enables the Entra test: it enrolls the key into a FAKE tenant (a local
//! fake Microsoft Graph), which leaves a discoverable credential for `login.microsoft.com` on
//! the key that no real tenant knows (credential management or a reset removes it).
//! `KEYGATE_HW_UNPLUG=1` enables the test that asks the operator to pull the key out. The
//! tests tell the operator what to do ("touch the key now") and time out cleanly.

use std::time::Duration;

#[path = "../tests/common/mod.rs"]
mod common;
mod pin_policy;
mod reset;

use keygate::harness::InProcess;
use serde_json::{json, Value};

struct Hw {
    base: String,
    token: String,
    http: reqwest::Client,
    device: Value,
    _server: InProcess,
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
        Self::start_with("").await
    }

    /// The same, with more configuration (TOML appended to the test's own).
    async fn start_with(extra_toml: &str) -> Hw {
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
        toml.push_str(extra_toml);
        let server = InProcess::start_config(tmp.path(), &toml, false).await;
        let token =
            keygate::auth::create_token(&server.state.store, keygate::auth::Role::Admin, None)
                .await
                .unwrap();
        let base = server.base.clone();
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
        let matching: Vec<&Value> = devices["devices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                let id = d["id"].as_str().unwrap_or("");
                id == wanted
                    || id == format!("hid:{wanted}")
                    || d["aaguid"].as_str() == Some(wanted.as_str())
            })
            .collect();
        let device = match matching[..] {
            [one] => one.clone(),
            [] => panic!("no plugged key matches KEYGATE_HW_KEY={wanted}; plugged: {devices}"),
            _ => panic!(
                "refusing: {} plugged keys match KEYGATE_HW_KEY={wanted} (an AAGUID names a model, \
                 not a key): {}; name the key under test by its hidraw path, or unplug the others",
                matching.len(),
                matching
                    .iter()
                    .map(|d| d["id"].as_str().unwrap_or("?"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        eprintln!("key under test: {device}");
        Hw {
            base,
            token,
            http,
            device,
            _server: server,
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

    /// The key under test as `GET /v1/devices` shows it now.
    async fn device_now(&self) -> Value {
        let all: Value = self
            .http
            .get(format!("{}/v1/devices", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        all["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == self.device["id"])
            .cloned()
            .unwrap_or_else(|| panic!("the key under test is gone: {all}"))
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

/// Why the key looks in use, or `None` for a key that shows no sign of use. `count` is
/// [`discoverable_count`]'s answer, asked before the daemon opened the key.
///
/// A key cannot list the non-discoverable credentials it made (they live, wrapped, in each
/// relying party's database), and GetInfo reports only the *remaining* discoverable slots
/// (CTAP 2.1 `remainingDiscoverableCredentials`), never how many there were, so "holds
/// credentials" is judged from what the key can tell:
/// - a set PIN: someone set the key up for use. This is the deciding signal, and conservative:
///   a key with a PIN and no credential at all is refused too;
/// - with the PIN (`KEYGATE_HW_PIN`) and CTAP 2.1 credential management (`credMgmt` or
///   `credentialMgmtPreview` in GetInfo's options): the exact number of discoverable
///   credentials, named in the refusal.
///
/// A key without a PIN shows no sign of use: it holds no PIN-protected credential, and the
/// non-discoverable (or UV-less discoverable) ones it may hold cannot be seen, but setting a PIN
/// leaves them working.
fn in_use(device: &Value, count: &Option<Result<Option<u32>, String>>) -> Option<String> {
    if device["pin_set"] != true {
        return None;
    }
    let mut why = String::from("it has a PIN");
    match count {
        Some(Ok(Some(n))) => why.push_str(&format!(" and holds {n} discoverable credential(s)")),
        Some(Ok(None)) => why.push_str(" (it offers no credential management to count them)"),
        Some(Err(e)) => why.push_str(&format!(" (counting its credentials failed: {e})")),
        None => why.push_str(" (set KEYGATE_HW_PIN to count its credentials)"),
    }
    if let Some(left) = device["remaining_discoverable_credentials"].as_u64() {
        why.push_str(&format!("; {left} discoverable slot(s) left"));
    }
    Some(why)
}

/// How many discoverable credentials the key named by `KEYGATE_HW_KEY` holds (CTAP 2.1
/// credential management, getCredsMetadata, with `KEYGATE_HW_PIN`): `None` without a PIN to
/// ask with, `Ok(None)` when the key has no PIN or offers no credential management.
///
/// Must run before the daemon opens the key: hidraw hands every input report to every open
/// handle and ctap-hid-fido2 reads the next report without checking its channel id, so this
/// handle's traffic would sit in the daemon's queue and be read as the answers to its next
/// requests. It talks to ctap-hid-fido2 directly because keygate's adapter has no credential
/// management (keygate never lists or deletes a key's credentials).
fn discoverable_count() -> Option<Result<Option<u32>, String>> {
    use ctap_hid_fido2::{FidoKeyHid, HidParam, LibCfg};
    let pin = env("KEYGATE_HW_PIN")?;
    let wanted = env("KEYGATE_HW_KEY")?;
    let run = || -> anyhow::Result<Option<u32>> {
        let mut cfg = LibCfg::init();
        cfg.enable_log = false;
        cfg.enable_keep_alive_msg = false;
        let open = |path: &str, cfg: &LibCfg| FidoKeyHid::new(&[HidParam::Path(path.into())], cfg);
        let path = match wanted.strip_prefix("hid:").unwrap_or(&wanted) {
            p if p.starts_with('/') => p.to_string(),
            aaguid => {
                let mut found = Vec::new();
                for dev in ctap_hid_fido2::get_fidokey_devices() {
                    let HidParam::Path(p) = dev.param else {
                        continue;
                    };
                    let info = open(&p, &cfg)?.get_info()?;
                    if uuid::Uuid::from_slice(&info.aaguid)
                        .is_ok_and(|u| u.to_string() == aaguid.to_lowercase())
                    {
                        found.push(p);
                    }
                }
                match <[String; 1]>::try_from(found) {
                    Ok([p]) => p,
                    Err(found) => {
                        anyhow::bail!("{} plugged keys have AAGUID {aaguid}", found.len())
                    }
                }
            }
        };
        let info = open(&path, &cfg)?.get_info()?;
        let offered = |name: &str| info.options.iter().any(|(k, v)| k == name && *v);
        if !offered("clientPin") || (!offered("credMgmt") && !offered("credentialMgmtPreview")) {
            return Ok(None);
        }
        cfg.use_pre_credential_management = !offered("credMgmt");
        let count = open(&path, &cfg)?.credential_management_get_creds_metadata(Some(&pin))?;
        Ok(Some(count.existing_resident_credentials_count))
    };
    // hidapi panics instead of failing where it has no hidraw access.
    Some(match std::panic::catch_unwind(run) {
        Ok(r) => r.map_err(|e| format!("{e:#}")),
        Err(_) => Err("the HID library panicked".into()),
    })
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
    // A credential to verify with afterwards (the right PIN also resets the counter here).
    let e = hw.enroll("hw-user-pin", json!({})).await;
    assert_eq!(e["state"], "succeeded", "{e}");
    let start = hw.device_now().await["pin_retries"]
        .as_u64()
        .expect("a key with a PIN reports its retries");
    let wrong = if pin == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    let (_, v) = hw
        .post(
            "/v1/assertions?wait=true",
            json!({ "device": hw.id(), "user": "hw-user-pin", "pin": wrong, "user_verification": "required" }),
        )
        .await;
    assert_eq!(v["error"]["code"], "pin_invalid", "{v}");
    assert_eq!(v["error"]["retries_left"].as_u64(), Some(start - 1), "{v}");
    assert_eq!(
        hw.device_now().await["pin_retries"].as_u64(),
        Some(start - 1)
    );
    hw.delete(&format!("/v1/assertions/{}", v["id"].as_str().unwrap()))
        .await;
    // The right PIN verifies and puts the retries back where they were.
    let a = hw.verify(Some("hw-user-pin")).await;
    assert_eq!(a["state"], "succeeded", "{a}");
    assert_eq!(a["result"]["user_verified"], true, "{a}");
    assert_eq!(
        hw.device_now().await["pin_retries"].as_u64(),
        Some(start),
        "the retries are restored after the right PIN"
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
#[ignore = "DESTRUCTIVE: sets a PIN (or changes it and back); needs KEYGATE_HW_DESTRUCTIVE=1"]
async fn hw_set_pin_destructive() {
    if env("KEYGATE_HW_DESTRUCTIVE").as_deref() != Some("1") {
        eprintln!(
            "SKIPPED: setting a PIN cannot be undone without a reset; set KEYGATE_HW_DESTRUCTIVE=1"
        );
        return;
    }
    let count = discoverable_count();
    let hw = Hw::start().await;
    if let Some(why) = in_use(&hw.device, &count) {
        assert_eq!(
            env("KEYGATE_HW_ALLOW_CREDENTIALS").as_deref(),
            Some("1"),
            "refusing: the key looks in use: {why}; set KEYGATE_HW_ALLOW_CREDENTIALS=1 to go on"
        );
        eprintln!("going on with a key in use ({why}): KEYGATE_HW_ALLOW_CREDENTIALS=1");
    }
    let new_pin =
        env("KEYGATE_HW_NEW_PIN").expect("set KEYGATE_HW_NEW_PIN to the PIN to give the key");
    let pin_path = format!("/v1/devices/{}/pin", hw.id().replace('/', "%2F"));
    let Some(current) = hw.pin() else {
        let (st, v) = hw.post(&pin_path, json!({ "new_pin": new_pin })).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["device"]["pin_set"], true, "{v}");
        assert_eq!(hw.device_now().await["pin_set"], true);
        return;
    };
    // The key has a PIN: change it, then change it back, which works only if the new PIN took.
    assert_ne!(
        current, new_pin,
        "KEYGATE_HW_NEW_PIN must differ from KEYGATE_HW_PIN"
    );
    let (st, v) = hw
        .post(
            &pin_path,
            json!({ "current_pin": current, "new_pin": new_pin }),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["device"]["pin_set"], true, "{v}");
    let (st, v) = hw
        .post(
            &pin_path,
            json!({ "current_pin": new_pin, "new_pin": current }),
        )
        .await;
    assert_eq!(st, 200, "the new PIN works, and the old one is back: {v}");
}

#[tokio::test]
#[ignore = "needs a real key with a PIN and KEYGATE_HW_ENTRA=1: enrolls it into a FAKE Entra tenant"]
async fn hw_entra_enroll_and_identify() {
    use common::fake_entra::{self, FakeEntraOptions, Route};
    assert!(
        env("KEYGATE_HW_ENTRA").as_deref() == Some("1"),
        "set KEYGATE_HW_ENTRA=1: this test leaves a discoverable credential for \
         login.microsoft.com (of a fake tenant) on the key"
    );
    let fake = fake_entra::start(FakeEntraOptions::default()).await;
    let upn = "hw-entra-1@student.odisee.be";
    fake.add_user(upn, "HW Entra");
    let hw = Hw::start_with(&fake.entra_toml()).await;
    let pin = hw
        .pin()
        .expect("Entra passkeys need the key's PIN: set one first (KEYGATE_HW_PIN)");
    say("Entra enrollment: touch the key now (30 s)");
    let (_, v) = hw
        .post(
            "/v1/enrollments?wait=true",
            json!({ "user": "hw-entra-1", "display_name": "HW Entra", "pin": pin,
                    "target": "entra", "device": hw.id(), "timeout_ms": 30000 }),
        )
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    let entra = &v["result"]["entra"];
    let method_id = entra["method_id"].as_str().expect("an Entra method id");
    // The fake verified the registration as Entra does (rp id hash, origin, challenge, UV,
    // credProtect 1 + hmac-secret outputs, attestation signature) before answering 201.
    let methods = fake.fido2_methods(upn);
    assert_eq!(methods.len(), 1, "{methods:?}");
    assert_eq!(methods[0]["id"], method_id);
    assert_eq!(fake.count(Route::RegisterFido2), 1);

    say("whose key is this? touch the key now (30 s)");
    let (_, a) = hw
        .post(
            "/v1/assertions?wait=true",
            json!({ "pin": pin, "target": "entra", "device": hw.id(), "timeout_ms": 30000 }),
        )
        .await;
    assert_eq!(a["state"], "succeeded", "{a}");
    assert_eq!(a["result"]["user"], "hw-entra-1", "{a}");
    assert_eq!(a["result"]["entra"]["method_id"], method_id, "{a}");

    say("a second enrollment of the same key is refused from Graph's excludeCredentials (touch)");
    let (_, again) = hw
        .post(
            "/v1/enrollments?wait=true",
            json!({ "user": "hw-entra-1", "display_name": "HW Entra", "pin": pin,
                    "target": "entra", "device": hw.id(), "timeout_ms": 30000 }),
        )
        .await;
    assert_eq!(again["state"], "failed", "{again}");
    assert_eq!(again["error"]["code"], "credential_excluded", "{again}");
    assert_eq!(
        fake.count(Route::RegisterFido2),
        1,
        "nothing more was posted"
    );
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
