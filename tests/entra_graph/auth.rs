//! Client-secret and certificate auth, the token cache (single flight, refresh before expiry
//! and after a 401) and the token endpoint's refusals.

use std::sync::Arc;
use std::time::Duration;

use crate::common::fake_entra::{self, graph_error, FakeEntraOptions, Route};
use crate::*;
use keygate::base::clock::SystemClock;
use keygate::entra::{EntraClient, EntraError};
use serde_json::json;

#[tokio::test]
async fn the_token_is_cached_single_flight_and_refreshed_before_expiry() {
    let clock = now_clock();
    let (fake, entra) = tenant_with(FakeEntraOptions::default(), clock.clone()).await;
    let calls: Vec<_> = (0..5).map(|_| entra.list_fido2(UPN)).collect();
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    entra.creation_options(UPN).await.unwrap();
    assert_eq!(fake.count(Route::Token), 1);
    // Lifetime 3599 s: still cached 55 minutes on, refreshed within the last 2 minutes.
    clock.advance(Duration::from_secs(55 * 60));
    entra.list_fido2(UPN).await.unwrap();
    assert_eq!(fake.count(Route::Token), 1);
    clock.advance(Duration::from_secs(4 * 60));
    entra.list_fido2(UPN).await.unwrap();
    assert_eq!(fake.count(Route::Token), 2);
}

#[tokio::test]
async fn a_401_fetches_a_new_token_once() {
    let (fake, entra) = tenant().await;
    entra.list_fido2(UPN).await.unwrap();
    fake.revoke_tokens();
    entra.list_fido2(UPN).await.unwrap();
    assert_eq!(fake.count(Route::Token), 2);
    assert_eq!(fake.count(Route::ListFido2), 3);

    let expired = graph_error("InvalidAuthenticationToken", "Access token has expired.");
    fake.fail_next(Route::ListFido2, 401, expired.clone(), None);
    fake.fail_next(Route::ListFido2, 401, expired, None);
    let e = entra.list_fido2(UPN).await.unwrap_err();
    assert!(
        matches!(&e, EntraError::AuthFailed(m) if m.contains("Access token has expired")),
        "{e:?}"
    );
    assert_eq!(fake.count(Route::Token), 3);
}

#[tokio::test]
async fn certificate_credentials_sign_a_client_assertion() {
    let (pem, der) = client_certificate(KEY_A);
    let dir = tempfile::tempdir().unwrap();
    let opts = FakeEntraOptions {
        client_secret: None,
        client_certificate_der: Some(der),
        ..Default::default()
    };
    let fake = fake_entra::start(opts).await;
    fake.add_user(UPN, "Student One");
    for (name, text) in [
        ("pkcs8.pem", pem.clone()),
        ("pkcs1.pem", pem.replace(KEY_A, KEY_A_PKCS1)),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let mut cfg = fake.entra_config();
        cfg.client_secret = Default::default();
        cfg.client_certificate = Some(path);
        let entra = EntraClient::new(&cfg, Arc::new(SystemClock)).unwrap();
        entra.list_fido2(UPN).await.unwrap();
        entra.list_fido2(UPN).await.unwrap();
    }
    assert_eq!(fake.count(Route::Token), 2);
    let sent = &fake.requests_for(Route::Token)[0].body;
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(sent.as_bytes())
            .into_owned()
            .collect();
    assert!(!form.contains_key("client_secret"));
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    use base64::Engine;
    let header = form["client_assertion"].split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "PS256");
    assert!(header["x5t#S256"].is_string());

    // A certificate the app registration does not know is refused.
    let path = dir.path().join("other.pem");
    std::fs::write(&path, client_certificate(KEY_B).0).unwrap();
    let mut cfg = fake.entra_config();
    cfg.client_secret = Default::default();
    cfg.client_certificate = Some(path);
    let entra = EntraClient::new(&cfg, Arc::new(SystemClock)).unwrap();
    let e = entra.list_fido2(UPN).await.unwrap_err();
    assert!(
        matches!(&e, EntraError::AuthFailed(m) if m.contains("AADSTS700027")),
        "{e:?}"
    );
    // A key that is not the certificate's, at start-up.
    let path = dir.path().join("mismatch.pem");
    std::fs::write(&path, pem.replace(KEY_A, KEY_B)).unwrap();
    cfg.client_certificate = Some(path);
    let e = EntraClient::new(&cfg, Arc::new(SystemClock)).unwrap_err();
    assert!(
        matches!(&e, EntraError::AuthFailed(m) if m.contains("does not belong")),
        "{e:?}"
    );
}

#[tokio::test]
async fn the_token_endpoints_refusals() {
    let (fake, _) = tenant().await;
    let mut cfg = fake.entra_config();
    cfg.client_secret = keygate::config::Secret::new("wrong");
    let entra = EntraClient::new(&cfg, Arc::new(SystemClock)).unwrap();
    let e = entra.list_fido2(UPN).await.unwrap_err();
    assert!(
        matches!(&e, EntraError::AuthFailed(m) if m.starts_with("invalid_client: AADSTS7000215")),
        "{e:?}"
    );
    assert_eq!(fake.count(Route::ListFido2), 0);

    let mut cfg = fake.entra_config();
    cfg.tenant_id = "0d0c0b0a-0000-4000-8000-000000000000".into();
    let entra = EntraClient::new(&cfg, Arc::new(SystemClock)).unwrap();
    let e = entra.list_fido2(UPN).await.unwrap_err();
    assert!(
        matches!(&e, EntraError::AuthFailed(m) if m.contains("AADSTS90002")),
        "{e:?}"
    );

    // 5xx is retried (idempotent), 429 with a long Retry-After is handed back.
    let entra = EntraClient::new(&fake.entra_config(), Arc::new(SystemClock)).unwrap();
    let before = fake.count(Route::Token);
    fake.fail_next(
        Route::Token,
        503,
        json!({"error": "temporarily_unavailable"}),
        None,
    );
    fake.fail_next(Route::Token, 500, json!({}), None);
    entra.list_fido2(UPN).await.unwrap();
    assert_eq!(fake.count(Route::Token) - before, 3);
    let entra = EntraClient::new(&fake.entra_config(), Arc::new(SystemClock)).unwrap();
    fake.fail_next(Route::Token, 429, json!({}), Some(120));
    let e = entra.list_fido2(UPN).await.unwrap_err();
    assert_eq!(
        e,
        EntraError::Throttled {
            retry_after_secs: Some(120)
        }
    );
}
