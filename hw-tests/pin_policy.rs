//! The campus PIN policy written through the real HID stack (ctap-hid-fido2's
//! authenticatorConfig setMinPINLength under an `acfg` pinUvAuthToken), read back from GetInfo.

use serde_json::json;

use super::{env, Hw};

#[tokio::test]
#[ignore = "DESTRUCTIVE: raises the key's minimum PIN length (only a reset lowers it); needs KEYGATE_HW_DESTRUCTIVE=1 and KEYGATE_HW_PIN"]
async fn hw_pin_policy_destructive() {
    if env("KEYGATE_HW_DESTRUCTIVE").as_deref() != Some("1") {
        eprintln!(
            "SKIPPED: a key's minimum PIN length goes back down only with a reset; set \
             KEYGATE_HW_DESTRUCTIVE=1"
        );
        return;
    }
    let pin = env("KEYGATE_HW_PIN").expect("set KEYGATE_HW_PIN: the policy needs the key's PIN");
    assert!(
        pin.chars().count() >= 6,
        "KEYGATE_HW_PIN must have at least 6 characters for a 6-character minimum"
    );
    let hw = Hw::start_with("[enrollment]\nmin_pin_length = 6\n").await;
    if hw.device["pin_policy_writable"] != true {
        eprintln!(
            "SKIPPED: the key does not take authenticatorConfig setMinPINLength: {}",
            hw.device
        );
        return;
    }
    // keygate refuses a shorter PIN before the key sees it (no retry spent).
    let retries = hw.device["pin_retries"].clone();
    let (st, e) = hw
        .post(
            "/v1/enrollments",
            json!({ "user": "hw-policy-short", "display_name": "HW", "device": hw.id(), "pin": "4826" }),
        )
        .await;
    assert_eq!(st, 422, "{e}");
    assert_eq!(e["error"]["code"], "pin_policy_violation");
    assert_eq!(hw.device_now().await["pin_retries"], retries);

    let v = hw.enroll("hw-policy-1", json!({})).await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["result"]["pin_policy"]["written"], true, "{v}");
    let d = hw.device_now().await;
    assert_eq!(d["min_pin_length"], 6, "GetInfo readback: {d}");
    assert_eq!(d["force_pin_change"], false, "{d}");
}
