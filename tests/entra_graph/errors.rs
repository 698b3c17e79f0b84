//! Graph's refusals mapped onto EntraError; retries, timeouts and paging.

use std::sync::Arc;
use std::time::Duration;

use crate::common::fake_entra::softkey::SoftKey;
use crate::common::fake_entra::{graph_error, FakeEntraOptions, Route};
use crate::*;
use keygate::base::clock::SystemClock;
use keygate::entra::{EntraClient, EntraError};
use serde_json::json;

#[tokio::test]
async fn graphs_refusals_map_to_their_errors() {
    let (fake, entra) = tenant().await;
    let err = |code: &str, msg: &str| graph_error(code, msg);
    fake.fail_next(
        Route::CreationOptions,
        403,
        err(
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        ),
        None,
    );
    let e = entra.creation_options(UPN).await.unwrap_err();
    assert_eq!(
        e,
        EntraError::Forbidden("Insufficient privileges to complete the operation.".into())
    );
    assert_eq!(
        entra
            .creation_options("nobody@student.odisee.be")
            .await
            .unwrap_err(),
        EntraError::UserNotFound
    );
    fake.fail_next(
        Route::ListFido2,
        429,
        err("TooManyRequests", "Slow down."),
        Some(30),
    );
    let e = entra.list_fido2(UPN).await.unwrap_err();
    assert_eq!(
        e,
        EntraError::Throttled {
            retry_after_secs: Some(30)
        }
    );
    assert_eq!(
        fake.count(Route::ListFido2),
        1,
        "a Retry-After beyond the bound is not waited out"
    );
    fake.fail_next(
        Route::ListFido2,
        429,
        err("TooManyRequests", "Slow down."),
        Some(0),
    );
    entra.list_fido2(UPN).await.unwrap();
    assert_eq!(
        fake.count(Route::ListFido2),
        3,
        "a short Retry-After is waited out"
    );

    for _ in 0..3 {
        fake.fail_next(Route::ListFido2, 500, err("generalException", "boom"), None);
    }
    let e = entra.list_fido2(UPN).await.unwrap_err();
    assert!(matches!(e, EntraError::Unavailable(_)), "{e:?}");
    assert_eq!(
        fake.count(Route::ListFido2),
        6,
        "GET: 1 + max_retries (2) attempts"
    );

    let o = entra.creation_options(UPN).await.unwrap();
    let new = SoftKey::yubikey_like().register(&o, "k");
    fake.fail_next(
        Route::RegisterFido2,
        503,
        err("serviceNotAvailable", "try later"),
        None,
    );
    let e = entra.register_fido2(UPN, &new).await.unwrap_err();
    assert!(matches!(e, EntraError::Unavailable(_)), "{e:?}");
    assert_eq!(
        fake.count(Route::RegisterFido2),
        1,
        "a POST is never retried"
    );
    fake.fail_next(
        Route::RegisterFido2,
        400,
        err(
            "badRequest",
            "Attestation\u{0} failed:\n AAGUID\u{202E} not allowed",
        ),
        None,
    );
    let e = entra.register_fido2(UPN, &new).await.unwrap_err();
    assert_eq!(
        e,
        EntraError::Rejected("Attestation failed: AAGUID not allowed".into())
    );
    fake.fail_next(
        Route::RegisterFido2,
        400,
        err("badRequest", "x".repeat(2000).as_str()),
        None,
    );
    let e = entra.register_fido2(UPN, &new).await.unwrap_err();
    assert!(
        matches!(&e, EntraError::Rejected(m) if m.chars().count() == 300),
        "{e:?}"
    );
    // The challenge is still unused after all that: the registration goes through.
    entra.register_fido2(UPN, &new).await.unwrap();

    fake.fail_next(Route::CreationOptions, 200, json!({"challengeTimeoutDateTime": "2026-01-01T00:00:00Z", "publicKey": {"rp": {"id": "login.microsoft.com"}}}), None);
    let e = entra.creation_options(UPN).await.unwrap_err();
    assert!(
        matches!(&e, EntraError::Unavailable(m) if m.starts_with("malformed")),
        "{e:?}"
    );
}

#[tokio::test]
async fn timeouts_are_unavailable_and_retried_only_when_idempotent() {
    let (fake, _) = tenant().await;
    let mut cfg = fake.entra_config();
    cfg.request_timeout_ms = 200;
    cfg.max_retries = 1;
    let entra = EntraClient::new(&cfg, Arc::new(SystemClock)).unwrap();
    let o = entra.creation_options(UPN).await.unwrap();
    fake.delay(Route::ListFido2, Duration::from_secs(3));
    let e = entra.list_fido2(UPN).await.unwrap_err();
    assert!(
        matches!(&e, EntraError::Unavailable(m) if m.contains("timed out")),
        "{e:?}"
    );
    assert_eq!(fake.count(Route::ListFido2), 2);
    fake.delay(Route::RegisterFido2, Duration::from_secs(3));
    let e = entra
        .register_fido2(UPN, &SoftKey::yubikey_like().register(&o, "k"))
        .await
        .unwrap_err();
    assert!(matches!(e, EntraError::Unavailable(_)), "{e:?}");
    assert_eq!(fake.count(Route::RegisterFido2), 1);
}

#[tokio::test]
async fn lists_follow_next_links_on_graphs_origin_only() {
    let opts = FakeEntraOptions {
        page_size: 2,
        ..Default::default()
    };
    let (fake, entra) = tenant_with(opts, Arc::new(SystemClock)).await;
    let ids: Vec<String> = (0..5)
        .map(|i| fake.add_fido2_method(UPN, &format!("key {i}")))
        .collect();
    let listed = entra.list_fido2(UPN).await.unwrap();
    assert_eq!(listed.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), ids);
    assert_eq!(fake.count(Route::ListFido2), 3);
    fake.fail_next(
        Route::ListFido2,
        200,
        json!({"value": [], "@odata.nextLink": "https://evil.example/next"}),
        None,
    );
    let e = entra.list_fido2(UPN).await.unwrap_err();
    assert!(matches!(e, EntraError::Unavailable(_)), "{e:?}");
    assert_eq!(
        fake.count(Route::ListFido2),
        4,
        "the token was not sent elsewhere"
    );
}
