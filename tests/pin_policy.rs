//! The campus PIN policy (`[enrollment]`) over the real HTTP API with simulated keys: short
//! PINs refused before the key sees them, setMinPINLength (and forcePINChange for generated
//! PINs) written onto CTAP 2.1 keys after enrollment and read back from GetInfo in
//! `/v1/devices`, the key enforcing it itself, generated PINs shown once and nowhere else, and
//! CTAP 2.0 keys enrolled with a note that the policy could not be written.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{code, enc, TestServer};
use keygate::device::{DeviceError, OpContext, Pin};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const POLICY_6: &str = "[enrollment]\nmin_pin_length = 6\n";

async fn device(s: &TestServer, id: &str) -> Value {
    let (st, d) = s.get("/v1/devices").await;
    assert_eq!(st, StatusCode::OK, "{d}");
    d["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap_or_else(|| panic!("{id} in {d}"))
        .clone()
}

async fn sim_status(s: &TestServer, id: &str) -> Value {
    let (_, v) = s.get("/v1/sim/keys").await;
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap()
        .clone()
}

/// Run one Authenticator call on the key's actor: real CTAP bytes to the simulated key,
/// without keygate's own checks in front.
async fn on_key<T: Send + 'static>(
    s: &TestServer,
    id: &str,
    op: impl FnOnce(&dyn keygate::device::Authenticator) -> Result<T, DeviceError> + Send + 'static,
) -> Result<T, DeviceError> {
    let devices = s.state.ceremonies.devices().clone();
    let wanted = id.to_string();
    let actor = tokio::task::spawn_blocking(move || devices.select(Some(&wanted)))
        .await
        .unwrap()
        .unwrap();
    let ctx = OpContext::new(Instant::now() + Duration::from_secs(10), Arc::new(|_| {}));
    actor.run(ctx, move |a, _| op(a)).await
}

#[tokio::test]
async fn a_short_pin_is_refused_before_the_key_sees_it() {
    let s = TestServer::start_with(POLICY_6).await;
    let id = s.sim_key().await;
    let (st, e) = s
        .post(
            &format!("/v1/devices/{}/pin", enc(&id)),
            json!({ "new_pin": "4826" }),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(code(&e), "pin_policy_violation");
    assert_eq!(sim_status(&s, &id).await["pin_set"], false);

    // A key whose PIN predates the policy: the enrollment refuses that PIN without a try.
    s.configure_key(&enc(&id), json!({ "pin": "4826" })).await;
    let (st, e) = s
        .post(
            "/v1/enrollments",
            json!({ "user": "short1", "display_name": "S", "pin": "4826" }),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(code(&e), "pin_policy_violation");
    let key = sim_status(&s, &id).await;
    assert_eq!(key["pin_retries"], 8, "no PIN try was spent: {key}");
    assert_eq!(key["discoverable_credentials"], 0);
    let (_, users) = s.get("/v1/users/short1").await;
    assert_eq!(code(&users), "not_found", "{users}");
}

#[tokio::test]
async fn an_enrollment_writes_min_pin_length_and_the_key_enforces_it() {
    let s = TestServer::start_with(POLICY_6).await;
    let id = s.sim_key().await;
    let before = device(&s, &id).await;
    assert_eq!(before["min_pin_length"], 4);
    assert_eq!(before["force_pin_change"], false);
    assert_eq!(before["pin_policy_writable"], true);

    s.set_pin("739154").await;
    let v = s
        .enroll(json!({ "user": "policy1", "display_name": "P", "pin": "739154" }))
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(
        v["result"]["pin_policy"],
        json!({ "written": true, "min_pin_length": 6, "force_pin_change": false })
    );
    let after = device(&s, &id).await;
    assert_eq!(after["min_pin_length"], 6, "GetInfo readback: {after}");
    assert_eq!(after["force_pin_change"], false);

    // keygate refuses a shorter PIN change before the key, by the key's own minimum too ...
    let (st, e) = s
        .post(
            &format!("/v1/devices/{}/pin", enc(&id)),
            json!({ "new_pin": "58203", "current_pin": "739154" }),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(code(&e), "pin_policy_violation");
    // ... and the key refuses it itself (changePIN straight to the key).
    let r = on_key(&s, &id, |a| {
        a.change_pin(&Pin::new("739154"), &Pin::new("58203"))
    })
    .await;
    assert_eq!(r, Err(DeviceError::PinPolicyViolation));
    // The key never lowers its minimum.
    let r = on_key(&s, &id, |a| a.set_pin_policy(&Pin::new("739154"), 5, false)).await;
    assert_eq!(r, Err(DeviceError::PinPolicyViolation));
    // A long-enough change works, and the PIN still verifies.
    let (st, v) = s
        .post(
            &format!("/v1/devices/{}/pin", enc(&id)),
            json!({ "new_pin": "582039", "current_pin": "739154" }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["device"]["min_pin_length"], 6);
    let a = s
        .verify(json!({ "user": "policy1", "pin": "582039" }))
        .await;
    assert_eq!(a["state"], "succeeded", "{a}");
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test]
async fn a_generated_pin_is_shown_once_and_the_key_forces_its_change() {
    let cap = Capture::default();
    let writer = cap.clone();
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .try_init();
    // 8 digits: long enough that no hex or base64 in the data files matches it by chance.
    let s =
        TestServer::start_with("[enrollment]\nmin_pin_length = 8\nforce_pin_change = true\n").await;
    let id = s.sim_key().await;
    let path = format!("/v1/devices/{}/pin", enc(&id));

    // Service desk only.
    let (st, e) = s
        .req(
            Method::POST,
            &path,
            Some(&s.kiosk.clone()),
            Some(json!({ "generate_pin": true })),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{e}");
    assert_eq!(sim_status(&s, &id).await["pin_set"], false);
    let (st, e) = s
        .post(
            &path,
            json!({ "generate_pin": true, "new_pin": "58203917" }),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");

    let (st, v) = s.post(&path, json!({ "generate_pin": true })).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let pin = v["generated_pin"].as_str().unwrap().to_string();
    assert_eq!(pin.len(), 8);
    assert!(pin.bytes().all(|b| b.is_ascii_digit()), "{pin}");
    assert!(!keygate::ceremony::pin_gen::is_weak(&pin));
    assert_eq!(v["device"]["pin_set"], true);
    // Shown once: the key's status carries no PIN afterwards.
    let (_, list) = s.get("/v1/devices").await;
    assert!(!list.to_string().contains(&pin));

    let e = s
        .enroll(json!({ "user": "desk1", "display_name": "D", "pin": pin }))
        .await;
    assert_eq!(e["state"], "succeeded", "{e}");
    assert_eq!(
        e["result"]["pin_policy"],
        json!({ "written": true, "min_pin_length": 8, "force_pin_change": true })
    );
    assert!(!e.to_string().contains(&pin));
    let d = device(&s, &id).await;
    assert_eq!(d["force_pin_change"], true, "{d}");
    assert_eq!(d["min_pin_length"], 8);

    // The key now takes the generated PIN for nothing but a change.
    let (_, a) = s
        .post(
            "/v1/assertions?wait=true",
            json!({ "user": "desk1", "pin": pin }),
        )
        .await;
    assert_eq!(a["state"], "failed", "{a}");
    assert_eq!(a["error"]["code"], "pin_policy_violation");
    // Not to the same PIN either.
    let r = on_key(&s, &id, {
        let pin = pin.clone();
        move |a| a.change_pin(&Pin::new(pin.clone()), &Pin::new(pin))
    })
    .await;
    assert_eq!(r, Err(DeviceError::PinPolicyViolation));
    let (st, v) = s
        .post(&path, json!({ "current_pin": pin, "new_pin": "58203917" }))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["device"]["force_pin_change"], false);
    let a = s
        .verify(json!({ "user": "desk1", "pin": "58203917" }))
        .await;
    assert_eq!(a["state"], "succeeded", "{a}");

    let logs = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.contains(&pin), "the generated PIN reached the log");
    assert!(
        files_containing(&s.data_dir, pin.as_bytes()).is_empty(),
        "the generated PIN reached a data file"
    );
}

#[tokio::test]
async fn a_ctap20_key_is_enrolled_with_a_note_that_the_policy_was_not_written() {
    let s = TestServer::start_with(POLICY_6).await;
    let (st, k) = s.post("/v1/sim/keys", json!({ "extensions": [] })).await;
    assert_eq!(st, StatusCode::CREATED, "{k}");
    let old = k["key"]["id"].as_str().unwrap().to_string();
    let first = s.sim_key().await;
    s.delete(&format!("/v1/sim/keys/{}", enc(&first))).await;
    let d = device(&s, &old).await;
    assert_eq!(d["pin_policy_writable"], false, "{d}");

    s.set_pin("739154").await;
    let v = s
        .enroll(json!({ "user": "old1", "display_name": "O", "pin": "739154" }))
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    let p = &v["result"]["pin_policy"];
    assert_eq!(p["written"], false, "{v}");
    assert!(
        p["note"].as_str().unwrap().contains("authenticatorConfig"),
        "{p}"
    );
    assert_eq!(device(&s, &old).await["min_pin_length"], 4);
    // The key itself answers authenticatorConfig with CTAP1_ERR_INVALID_COMMAND.
    let r = on_key(&s, &old, |a| {
        a.set_pin_policy(&Pin::new("739154"), 6, false)
    })
    .await;
    assert_eq!(
        r,
        Err(DeviceError::Ctap(
            keygate::device::CtapStatus::InvalidCommand
        ))
    );
}

#[tokio::test]
async fn no_policy_configured_writes_nothing() {
    let s = TestServer::start().await;
    s.set_pin("1234").await;
    let v = s
        .enroll(json!({ "user": "plain1", "display_name": "P", "pin": "1234" }))
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert!(v["result"].get("pin_policy").is_none(), "{v}");
    let id = s.sim_key().await;
    assert_eq!(device(&s, &id).await["min_pin_length"], 4);
}

#[test]
fn the_policy_must_fit_ctap() {
    use keygate::config::{parse_config, Overrides};
    for (toml, ok) in [
        ("[enrollment]\nmin_pin_length = 3\n", false),
        ("[enrollment]\nmin_pin_length = 64\n", false),
        (
            "[enrollment]\nmin_pin_length = 6\nforce_pin_change = true\n",
            true,
        ),
    ] {
        let r = parse_config(Some(toml), &[], &Overrides::default());
        assert_eq!(r.is_ok(), ok, "{toml}: {r:?}");
    }
    let c = parse_config(None, &[], &Overrides::default()).unwrap();
    assert_eq!(c.enrollment.min_pin_length, 4);
    assert!(!c.enrollment.force_pin_change);
}
