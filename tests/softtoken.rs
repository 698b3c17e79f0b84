//! Cross-check keygate's relying-party code against an independent software authenticator
//! (webauthn-authenticator-rs `SoftToken`): our ceremony code must accept its credentials and
//! assertions, and its attestation must chain to the CA it was made with.

use crypto_glue::traits::{EncodePem, LineEndingPem};
use keygate::ceremony::rp::{RelyingParty, RpError};
use keygate::config::UserVerification;
use keygate::store::{CredentialRecord, CredentialState, UserRecord};
use std::time::Duration;
use url::Url;
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_authenticator_rs::AuthenticatorBackend;

fn user() -> UserRecord {
    UserRecord {
        name: "r0123456".into(),
        display_name: "An Peeters".into(),
        user_handle: vec![7; 16],
        created_at: time::OffsetDateTime::now_utc(),
    }
}

#[test]
fn softtoken_registers_and_authenticates_through_keygate_rp() {
    let (mut token, ca) = SoftToken::new(true).unwrap();
    let ca_pem = ca.to_pem(LineEndingPem::LF).unwrap();
    let rp = RelyingParty::new(
        "keygate.local",
        "keygate",
        "https://keygate.local",
        &[ca_pem],
        true,
    )
    .unwrap();
    let origin = Url::parse("https://keygate.local").unwrap();

    let (options, state) = rp
        .start_registration(
            &user(),
            &[],
            UserVerification::Required,
            false,
            Duration::from_secs(60),
        )
        .unwrap();
    let reg = token
        .perform_register(origin.clone(), options, 60_000)
        .unwrap();
    let verified = rp.finish_registration(&reg, &state).unwrap();
    assert!(
        verified.attested,
        "SoftToken's attestation chains to its CA"
    );
    assert_eq!(verified.attestation_format, "packed");

    let mut rec = CredentialRecord {
        id: verified.credential_id.clone(),
        user: "r0123456".into(),
        rp_credential: verified.serialised.clone(),
        public_key_cose: vec![],
        counter: 0,
        aaguid: None,
        attestation_format: verified.attestation_format.clone(),
        attested: true,
        discoverable: false,
        user_verified: true,
        nickname: None,
        model: None,
        created_at: time::OffsetDateTime::now_utc(),
        last_used_at: None,
        state: CredentialState::Active,
        state_reason: None,
    };
    let mut last = 0;
    for _ in 0..3 {
        let (options, state) = rp
            .start_authentication(
                std::slice::from_ref(&rec),
                UserVerification::Required,
                Duration::from_secs(60),
            )
            .unwrap();
        let assertion = token.perform_auth(origin.clone(), options, 60_000).unwrap();
        let v = rp.finish_authentication(&assertion, state, &rec).unwrap();
        assert!(v.counter > last, "counter increases");
        assert!(v.user_verified);
        last = v.counter;
        rec.rp_credential = v.serialised;
        rec.counter = v.counter;
    }

    // Replaying an old serialised credential state (higher stored counter) looks like a clone.
    let mut stale: serde_json::Value = serde_json::from_str(&rec.rp_credential).unwrap();
    stale["counter"] = serde_json::json!(last + 100);
    rec.rp_credential = stale.to_string();
    let (options, state) = rp
        .start_authentication(
            std::slice::from_ref(&rec),
            UserVerification::Required,
            Duration::from_secs(60),
        )
        .unwrap();
    let assertion = token.perform_auth(origin, options, 60_000).unwrap();
    assert!(matches!(
        rp.finish_authentication(&assertion, state, &rec),
        Err(RpError::ClonedKey)
    ));
}

#[test]
fn untrusted_attestation_is_rejected_when_trust_is_required() {
    let (mut token, _ca) = SoftToken::new(true).unwrap();
    let (_other, other_ca) = SoftToken::new(true).unwrap();
    let rp = RelyingParty::new(
        "keygate.local",
        "keygate",
        "https://keygate.local",
        &[other_ca.to_pem(LineEndingPem::LF).unwrap()],
        true,
    )
    .unwrap();
    let (options, state) = rp
        .start_registration(
            &user(),
            &[],
            UserVerification::Required,
            false,
            Duration::from_secs(60),
        )
        .unwrap();
    let reg = token
        .perform_register(
            Url::parse("https://keygate.local").unwrap(),
            options,
            60_000,
        )
        .unwrap();
    assert!(matches!(
        rp.finish_registration(&reg, &state),
        Err(RpError::Attestation(_))
    ));
}
