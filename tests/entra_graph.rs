//! The Entra adapter against the fake identity platform + Graph (tests/common/fake_entra.rs)
//! over real loopback HTTP: client-secret and certificate auth, the token cache and its
//! refreshes, every EntraError from the matching Graph or identity-platform answer, retries
//! only where idempotent, paging, delete, phones, TAP, and registrations verified end to end
//! with a software authenticator (and the fake refusing each broken variant).

#[path = "entra_graph/auth.rs"]
mod auth;
mod common;
#[path = "entra_graph/errors.rs"]
mod errors;
#[path = "entra_graph/methods.rs"]
mod methods;
#[path = "entra_graph/registration.rs"]
mod registration;

use std::sync::Arc;

use common::fake_entra::{self, FakeEntra, FakeEntraOptions};
use keygate::base::clock::{Clock, ManualClock, SystemClock};
use keygate::entra::EntraClient;

pub const UPN: &str = "s1@student.odisee.be";

pub async fn tenant_with(
    opts: FakeEntraOptions,
    clock: Arc<dyn Clock>,
) -> (FakeEntra, EntraClient) {
    let fake = fake_entra::start(opts).await;
    fake.add_user(UPN, "Student One");
    let client = EntraClient::new(&fake.entra_config(), clock).unwrap();
    (fake, client)
}

pub async fn tenant() -> (FakeEntra, EntraClient) {
    tenant_with(FakeEntraOptions::default(), Arc::new(SystemClock)).await
}

pub fn now_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(SystemClock.now_ms()))
}

/// A self-signed client certificate for the fixture RSA key: (PEM cert + key, cert DER).
pub fn client_certificate(key_pem: &str) -> (String, Vec<u8>) {
    let kp = rcgen::KeyPair::from_pem(key_pem).expect("fixture RSA key");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "keygate kiosk");
    let cert = params.self_signed(&kp).expect("certificate");
    (format!("{}{key_pem}", cert.pem()), cert.der().to_vec())
}

pub const KEY_A: &str = include_str!("fixtures/entra/rsa-a.key.pem");
pub const KEY_A_PKCS1: &str = include_str!("fixtures/entra/rsa-a.pkcs1.pem");
pub const KEY_B: &str = include_str!("fixtures/entra/rsa-b.key.pem");
