//! Registrations verified end to end with the software authenticator, and the fake refusing
//! each broken variant (rp hash, origin, type, UP, UV, extensions, signature, challenge).

use std::sync::Arc;
use std::time::Duration;

use crate::common::fake_entra::softkey::{SoftAttestation, SoftKey, Tamper, YUBIKEY_5_NFC};
use crate::common::fake_entra::{FakeEntraOptions, Route};
use crate::*;
use keygate::base::clock::{Clock, SystemClock};
use keygate::entra::EntraError;
use serde_json::json;

#[tokio::test]
async fn a_registration_verifies_end_to_end() {
    let (fake, entra) = tenant().await;
    let options = entra.creation_options(UPN).await.unwrap();
    assert_eq!(options.rp_id, "login.microsoft.com");
    assert_eq!(options.cred_protect, Some(1));
    assert!(options.enforce_cred_protect && options.hmac_secret && options.resident_key);
    assert!(options.exclude_credentials.is_empty());
    let new = SoftKey::yubikey_like().register(&options, "YubiKey 5 2026-12-06");
    let method = entra.register_fido2(UPN, &new).await.unwrap();
    assert_eq!(method.model.as_deref(), Some("YubiKey 5 Series with NFC"));
    assert_eq!(
        method.aaguid.as_deref(),
        Some(YUBIKEY_5_NFC.to_string().as_str())
    );
    assert_eq!(method.attestation_level.as_deref(), Some("attested"));
    assert_eq!(method.display_name.as_deref(), Some("YubiKey 5 2026-12-06"));
    assert!(method.created_at.is_some());

    // The body as posted: base64url without padding, the extension results, the name.
    let body = fake.last_registration().unwrap();
    let pkc = &body["publicKeyCredential"];
    for v in [
        &pkc["id"],
        &pkc["response"]["clientDataJSON"],
        &pkc["response"]["attestationObject"],
    ] {
        let s = v.as_str().unwrap();
        assert!(!s.contains(['=', '+', '/']), "{s}");
    }
    assert_eq!(
        pkc["clientExtensionResults"],
        json!({"hmacCreateSecret": true, "credProtect": 1})
    );
    assert_eq!(body["displayName"], "YubiKey 5 2026-12-06");

    // Listed, and excluded from the next creation options.
    let listed = entra.list_fido2(UPN).await.unwrap();
    assert_eq!(listed, vec![method]);
    let again = entra.creation_options(UPN).await.unwrap();
    assert!(again.excludes(&new.credential_id));
    assert_eq!(fake.count(Route::Token), 1, "one token for every call");
}

#[tokio::test]
async fn self_and_none_attestation_are_not_attested_and_refused_when_enforced() {
    let (_fake, entra) = tenant().await;
    for mode in [
        SoftAttestation::SelfAttestation,
        SoftAttestation::NoAttestation,
    ] {
        let o = entra.creation_options(UPN).await.unwrap();
        let m = entra
            .register_fido2(UPN, &SoftKey::new(YUBIKEY_5_NFC, mode).register(&o, "k"))
            .await
            .unwrap();
        assert_eq!(
            m.attestation_level.as_deref(),
            Some("notAttested"),
            "{mode:?}"
        );
    }
    let opts = FakeEntraOptions {
        enforce_attestation: true,
        ..Default::default()
    };
    let (_fake, entra) = tenant_with(opts, Arc::new(SystemClock)).await;
    let o = entra.creation_options(UPN).await.unwrap();
    let none = SoftKey::new(YUBIKEY_5_NFC, SoftAttestation::NoAttestation);
    let e = entra
        .register_fido2(UPN, &none.register(&o, "k"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, EntraError::Rejected(m) if m.contains("attestation is enforced")),
        "{e:?}"
    );
}

#[tokio::test]
async fn key_restrictions_refuse_other_aaguids() {
    let opts = FakeEntraOptions {
        allowed_aaguids: Some(vec![uuid::Uuid::from_u128(7)]),
        ..Default::default()
    };
    let (_fake, entra) = tenant_with(opts, Arc::new(SystemClock)).await;
    let o = entra.creation_options(UPN).await.unwrap();
    let e = entra
        .register_fido2(UPN, &SoftKey::yubikey_like().register(&o, "k"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, EntraError::Rejected(m) if m.contains("AAGUID")),
        "{e:?}"
    );
}

#[tokio::test]
async fn the_fake_refuses_each_broken_registration() {
    let (fake, entra) = tenant().await;
    let key = SoftKey::yubikey_like();
    let o = entra.creation_options(UPN).await.unwrap();
    let cases: Vec<(Tamper, &str)> = vec![
        (
            Tamper {
                rp_id: Some("evil.example".into()),
                ..Default::default()
            },
            "relying party ID hash",
        ),
        (
            Tamper {
                origin: Some("https://evil.example".into()),
                ..Default::default()
            },
            "origin",
        ),
        (
            Tamper {
                client_data_type: Some("webauthn.get".into()),
                ..Default::default()
            },
            "webauthn.create",
        ),
        (
            Tamper {
                cross_origin: true,
                ..Default::default()
            },
            "Cross-origin",
        ),
        (
            Tamper {
                challenge: Some("bm90LWlzc3VlZA".into()),
                ..Default::default()
            },
            "challenge is invalid",
        ),
        (
            Tamper {
                no_up: true,
                ..Default::default()
            },
            "User presence",
        ),
        (
            Tamper {
                no_uv: true,
                ..Default::default()
            },
            "User verification",
        ),
        (
            Tamper {
                omit_extensions: true,
                ..Default::default()
            },
            "credProtect",
        ),
        (
            Tamper {
                cred_protect: Some(2),
                ..Default::default()
            },
            "credProtect level 1",
        ),
        (
            Tamper {
                hmac_secret: Some(false),
                ..Default::default()
            },
            "hmac-secret",
        ),
        (
            Tamper {
                bad_signature: true,
                ..Default::default()
            },
            "signature is invalid",
        ),
    ];
    for (tamper, expected) in &cases {
        let e = entra
            .register_fido2(UPN, &key.register_tampered(&o, "k", tamper))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, EntraError::Rejected(m) if m.contains(expected)),
            "{tamper:?}: {e:?}"
        );
    }
    let self_signed = SoftKey::new(YUBIKEY_5_NFC, SoftAttestation::SelfAttestation);
    let bad = Tamper {
        bad_signature: true,
        ..Default::default()
    };
    let e = entra
        .register_fido2(UPN, &self_signed.register_tampered(&o, "k", &bad))
        .await;
    assert!(
        matches!(&e, Err(EntraError::Rejected(m)) if m.contains("signature")),
        "{e:?}"
    );

    // None of the failures used the challenge up; the correct registration still goes through,
    // once: the same challenge again is refused, as is the same credential id.
    let good = key.register(&o, "k");
    entra.register_fido2(UPN, &good).await.unwrap();
    let e = entra
        .register_fido2(UPN, &key.register(&o, "k"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, EntraError::Rejected(m) if m.contains("already been used")),
        "{e:?}"
    );
    let o2 = entra.creation_options(UPN).await.unwrap();
    let same_id = Tamper {
        credential_id: Some(good.credential_id.clone()),
        ..Default::default()
    };
    let e = entra
        .register_fido2(UPN, &key.register_tampered(&o2, "k", &same_id))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, EntraError::Rejected(m) if m.contains("already registered")),
        "{e:?}"
    );
    assert_eq!(fake.fido2_methods(UPN).len(), 1);
}

#[tokio::test]
async fn a_stale_challenge_is_challenge_expired() {
    let clock = now_clock();
    let opts = FakeEntraOptions {
        clock: clock.clone(),
        ..Default::default()
    };
    let (fake, entra) = tenant_with(opts, Arc::new(SystemClock)).await;
    let o = entra.creation_options(UPN).await.unwrap();
    assert_eq!(
        (o.expires_at - keygate::base::clock::ms_to_time(clock.now_ms())).whole_seconds(),
        300
    );
    clock.advance(Duration::from_secs(301));
    let e = entra
        .register_fido2(UPN, &SoftKey::yubikey_like().register(&o, "k"))
        .await
        .unwrap_err();
    assert_eq!(e, EntraError::ChallengeExpired);
    assert!(fake.fido2_methods(UPN).is_empty());
}
