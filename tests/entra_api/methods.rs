//! Keeping the methods in step: the phone sync, and the service desk's Entra routes (list,
//! delete, Temporary Access Pass).

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use super::*;

/// Register and verify `number` (`e164` in full) for `user` through the simulated SMS inbox;
/// the phone's id.
async fn verified_phone(s: &TestServer, user: &str, number: &str, e164: &str) -> String {
    let (st, v) = s
        .post(
            &format!("/v1/users/{user}/phones"),
            json!({ "number": number }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let ch = v["challenge"]["id"].as_str().unwrap().to_string();
    let mut sms = None;
    for _ in 0..500 {
        let (_, m) = s
            .get(&format!("/v1/sim/sms?number={}", e164.replace('+', "%2B")))
            .await;
        if let Some(first) = m["messages"].as_array().and_then(|a| a.first()).cloned() {
            sms = Some(first);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sms = sms.expect("the verification code arrived");
    let (st, r) = s
        .post(
            &format!("/v1/sms/challenges/{ch}/verify"),
            json!({ "code": sms["code"] }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    v["phone"]["id"].as_str().unwrap().to_string()
}

/// The phone's `entra` member once its sync ended.
async fn synced_state(s: &TestServer, user: &str) -> Value {
    for _ in 0..500 {
        let (_, v) = s.get(&format!("/v1/users/{user}/phones")).await;
        let entra = v["phones"][0]["entra"].clone();
        if !entra.is_null() && entra["state"] != "pending" {
            return entra;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the phone's Entra sync never ended");
}

#[tokio::test]
async fn a_verified_phone_becomes_the_entra_mobile_method() {
    let e = env().await;
    verified_phone(&e.s, "s1", "0475 34 56 78", "+32475345678").await;
    let entra = synced_state(&e.s, "s1").await;
    assert_eq!(entra["state"], "synced", "{entra}");
    let phones = e.fake.phone_methods(UPN);
    assert_eq!(phones.len(), 1, "{phones:?}");
    assert_eq!(phones[0]["phoneNumber"], "+32 475345678");
    assert_eq!(phones[0]["phoneType"], "mobile");
    assert_eq!(entra["method_id"], phones[0]["id"]);
    let (_, audit) = e.s.get("/v1/audit?user=s1").await;
    assert!(audit_events(&audit).contains(&"phone.entra_synced".to_string()));

    // Graph refusing: the phone stays verified, its Entra state says why.
    let e = env().await;
    e.fake.fail_next(
        Route::AddPhone,
        403,
        graph_error("accessDenied", "Request Authorization failed"),
        None,
    );
    verified_phone(&e.s, "s1", "+32475345679", "+32475345679").await;
    let entra = synced_state(&e.s, "s1").await;
    assert_eq!(
        entra,
        json!({ "state": "failed", "method_id": null, "error": "entra_forbidden" })
    );
    let (_, v) = e.s.get("/v1/users/s1/phones").await;
    assert_eq!(v["phones"][0]["verified"], true);
    assert!(e.fake.phone_methods(UPN).is_empty());
    let (_, audit) = e.s.get("/v1/audit?user=s1").await;
    assert!(audit_events(&audit).contains(&"phone.entra_sync_failed".to_string()));
}

#[tokio::test]
async fn the_service_desk_lists_and_deletes_entra_passkeys() {
    let e = env().await;
    let (_, enrolled) = enroll(&e.s, entra_enrollment()).await;
    let ours = enrolled["result"]["entra"]["method_id"]
        .as_str()
        .unwrap()
        .to_string();
    let theirs = e.fake.add_fido2_method(UPN, "Registered elsewhere");
    let (st, v) = e.s.get("/v1/users/s1/entra/methods").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["upn"], UPN);
    let methods = v["methods"].as_array().unwrap();
    assert_eq!(methods.len(), 2, "{v}");
    for m in methods {
        assert_eq!(m["known_locally"], m["id"] == ours.as_str(), "{m}");
    }
    for bad in ["a%20b", &"x".repeat(129), "..%2F..%2Fx"] {
        let (st, v) =
            e.s.delete(&format!("/v1/users/s1/entra/methods/{bad}"))
                .await;
        assert_eq!(
            (st, code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{bad}"
        );
    }
    let (st, v) =
        e.s.delete(&format!("/v1/users/s1/entra/methods/{ours}"))
            .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["deleted"]["local_record_removed"], true);
    let (_, v) =
        e.s.delete(&format!("/v1/users/s1/entra/methods/{theirs}"))
            .await;
    assert_eq!(v["deleted"]["local_record_removed"], false, "{v}");
    assert!(e.fake.fido2_methods(UPN).is_empty());
    // Gone locally too: "whose key is this?" has nothing left to find.
    let (_, v) =
        e.s.post("/v1/assertions", json!({ "pin": PIN, "target": "entra" }))
            .await;
    assert_eq!(code(&v), "no_credentials", "{v}");
    let (_, audit) = e.s.get("/v1/audit?user=s1").await;
    let deleted = audit_events(&audit)
        .iter()
        .filter(|e| *e == "entra.passkey_deleted")
        .count();
    assert_eq!(deleted, 2);
    // The service-desk reset leaves Entra alone, and says so.
    let (st, r) = e.s.delete("/v1/users/s1").await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert!(r["entra"].as_str().unwrap().contains("separate"), "{r}");
}

#[tokio::test]
async fn entra_routes_are_for_admins_and_answer_not_configured_without_entra() {
    let e = env().await;
    let routes = [
        (Method::GET, "/v1/users/s1/entra/methods", None),
        (Method::DELETE, "/v1/users/s1/entra/methods/abc", None),
        (
            Method::POST,
            "/v1/users/s1/entra/temporary-access-pass",
            Some(json!({})),
        ),
    ];
    for (m, path, body) in routes.clone() {
        let (st, v) = e.s.req(m, path, Some(&e.s.kiosk.clone()), body).await;
        assert_eq!(
            (st, code(&v)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{path}"
        );
    }
    assert!(e.fake.requests().is_empty());
    let s = TestServer::start().await;
    for (m, path, body) in routes {
        let (st, v) = s.req(m, path, Some(&s.admin.clone()), body).await;
        assert_eq!(
            (st, code(&v)),
            (StatusCode::NOT_IMPLEMENTED, "entra_not_configured"),
            "{path}"
        );
    }
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

/// Every log line of this test binary from the first call on (trace level).
fn captured_logs() -> Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let cap = Capture::default();
            let writer = cap.clone();
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .init();
            cap
        })
        .clone()
}

#[tokio::test]
async fn a_temporary_access_pass_is_shown_once_and_kept_nowhere() {
    let logs = captured_logs();
    let e = env().await;
    for bad in [
        json!({ "lifetime_minutes": 9 }),
        json!({ "lifetime_minutes": 43_201 }),
        json!({ "usable_once": "yes" }),
        json!({ "pin": 1 }),
    ] {
        let (st, v) =
            e.s.post("/v1/users/s1/entra/temporary-access-pass", bad.clone())
                .await;
        assert_eq!(
            (st, code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{bad}"
        );
    }
    let resp =
        e.s.client
            .post(format!(
                "{}/v1/users/s1/entra/temporary-access-pass",
                e.s.base
            ))
            .bearer_auth(&e.s.admin)
            .json(&json!({ "lifetime_minutes": 120, "usable_once": false }))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let v: Value = resp.json().await.unwrap();
    let pass = v["temporary_access_pass"].as_str().unwrap().to_string();
    assert!(pass.len() >= 8, "{v}");
    assert_eq!(
        (v["lifetime_minutes"].clone(), v["usable_once"].clone()),
        (json!(120), json!(false))
    );
    let issued = e.fake.temporary_access_passes(UPN);
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0]["temporaryAccessPass"], pass.as_str());
    // The fact is audited, the pass is not.
    let (_, audit) = e.s.get("/v1/audit?user=s1").await;
    assert!(audit_events(&audit).contains(&"entra.tap_issued".to_string()));
    assert!(!audit.to_string().contains(&pass));
    // Nowhere in the logs, nowhere in the database files.
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(
        text.contains("Temporary Access Pass issued"),
        "the logs were captured"
    );
    assert!(!text.contains(&pass), "the pass was logged");
    for f in ["keygate.db", "keygate.db-wal"] {
        let bytes = std::fs::read(e.s.data_dir.join(f)).unwrap_or_default();
        assert!(
            !bytes.windows(pass.len()).any(|w| w == pass.as_bytes()),
            "the pass is in {f}"
        );
    }
}
