//! Delete, phones, TAP, what reaches the log and which requests carry the secret; names.

use std::sync::Arc;

use crate::common::fake_entra::softkey::SoftKey;
use crate::common::fake_entra::{graph_error, Route};
use crate::*;
use keygate::base::clock::SystemClock;
use keygate::entra::{EntraClient, EntraError};
use serde_json::json;

#[tokio::test]
async fn delete_is_ok_when_the_method_is_gone() {
    let (fake, entra) = tenant().await;
    let id = fake.add_fido2_method(UPN, "old key");
    entra.delete_fido2(UPN, &id).await.unwrap();
    assert!(fake.fido2_methods(UPN).is_empty());
    entra.delete_fido2(UPN, &id).await.unwrap();
    assert_eq!(fake.count(Route::DeleteFido2), 2);
    fake.fail_next(
        Route::DeleteFido2,
        403,
        graph_error("accessDenied", "No."),
        None,
    );
    assert_eq!(
        entra.delete_fido2(UPN, &id).await,
        Err(EntraError::Forbidden("No.".into()))
    );
}

#[tokio::test]
async fn a_mobile_phone_is_added_in_entras_format_once() {
    let (fake, entra) = tenant().await;
    let p = entra.add_mobile_phone(UPN, "+32475345678").await.unwrap();
    assert_eq!(
        (p.phone_number.as_str(), p.phone_type.as_str()),
        ("+32 475345678", "mobile")
    );
    let sent: serde_json::Value =
        serde_json::from_str(&fake.requests_for(Route::AddPhone)[0].body).unwrap();
    assert_eq!(
        sent,
        json!({"phoneNumber": "+32 475345678", "phoneType": "mobile"})
    );
    // Again: Graph refuses a second mobile method; the existing one is the answer.
    let again = entra.add_mobile_phone(UPN, "+32475345678").await.unwrap();
    assert_eq!(again, p);
    assert_eq!(fake.phone_methods(UPN).len(), 1);
    assert_eq!(fake.count(Route::ListPhones), 1);
    let e = entra
        .add_mobile_phone(UPN, "+32470000000")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, EntraError::Rejected(m) if m.contains("another mobile")),
        "{e:?}"
    );
    assert!(entra.add_mobile_phone(UPN, "0475345678").await.is_err());
}

#[tokio::test]
async fn a_temporary_access_pass_is_returned_once_and_never_shown() {
    let (fake, entra) = tenant().await;
    let tap = entra
        .create_temporary_access_pass(UPN, 60, true)
        .await
        .unwrap();
    assert_eq!((tap.lifetime_minutes, tap.usable_once), (60, true));
    assert!(tap.starts_at.is_some());
    let issued = fake.temporary_access_passes(UPN);
    assert_eq!(
        issued[0]["temporaryAccessPass"].as_str(),
        Some(tap.pass.expose())
    );
    assert!(!format!("{tap:?}").contains(tap.pass.expose()));
    let e = entra
        .create_temporary_access_pass(UPN, 5, false)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, EntraError::Rejected(m) if m.contains("lifetimeInMinutes")),
        "{e:?}"
    );
}

#[tokio::test]
async fn the_secret_goes_to_the_token_endpoint_only_and_nothing_secret_is_logged() {
    let logs = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || LogSink(sink.clone()))
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (fake, entra) = tenant().await;
    let o = entra.creation_options(UPN).await.unwrap();
    entra
        .register_fido2(UPN, &SoftKey::yubikey_like().register(&o, "k"))
        .await
        .unwrap();
    let tap = entra
        .create_temporary_access_pass(UPN, 60, false)
        .await
        .unwrap();
    fake.fail_next(
        Route::ListFido2,
        403,
        graph_error("accessDenied", "Denied."),
        None,
    );
    let _ = entra.list_fido2(UPN).await;

    let secret = fake.options().client_secret.clone().unwrap();
    let mut token = String::new();
    for r in fake.requests() {
        let form_decoded: String = url::form_urlencoded::parse(r.body.as_bytes())
            .map(|(k, v)| format!("{k}={v}&"))
            .collect();
        let has_secret = r.body.contains(&secret)
            || form_decoded.contains(&secret)
            || r.headers.iter().any(|(_, v)| v.contains(&secret));
        assert_eq!(has_secret, r.route == Route::Token, "{:?}", r.route);
        if let Some((_, v)) = r.headers.iter().find(|(k, _)| k == "authorization") {
            token = v.trim_start_matches("Bearer ").to_string();
        }
    }
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("Entra call") && logs.contains("fido2Methods/creationOptions"),
        "{logs}"
    );
    for hidden in [secret.as_str(), token.as_str(), tap.pass.expose(), UPN] {
        assert!(
            !hidden.is_empty() && !logs.contains(hidden),
            "{hidden} in the log"
        );
    }
}

struct LogSink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn names_and_unusable_sections() {
    let (fake, entra) = tenant().await;
    assert_eq!(entra.upn_for("s1"), UPN);
    let today = time::OffsetDateTime::now_utc().date().to_string();
    assert_eq!(
        entra.display_name_for(Some("YubiKey 5"), "s1"),
        format!("YubiKey 5 {today}")
    );
    let long = entra.display_name_for(
        Some("Security Key NFC by Yubico - Enterprise Edition"),
        "s1",
    );
    assert_eq!(long.chars().count(), keygate::entra::MAX_DISPLAY_NAME_CHARS);
    assert!(long.ends_with(&today), "{long}");

    let mut cfg = fake.entra_config();
    cfg.graph_url = "http://graph.example.com/v1.0".into();
    assert_eq!(
        EntraClient::new(&cfg, Arc::new(SystemClock)).unwrap_err(),
        EntraError::NotConfigured
    );
    let mut cfg = fake.entra_config();
    cfg.client_secret = Default::default();
    assert_eq!(
        EntraClient::new(&cfg, Arc::new(SystemClock)).unwrap_err(),
        EntraError::NotConfigured
    );
}
