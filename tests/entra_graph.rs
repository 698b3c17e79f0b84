//! The Entra adapter against the fake identity platform + Graph (tests/common/fake_entra.rs)
//! over real loopback HTTP.

mod common;

use std::sync::Arc;

use common::fake_entra::softkey::SoftKey;
use common::fake_entra::{self, FakeEntra, FakeEntraOptions, Route};
use keygate::base::clock::SystemClock;
use keygate::entra::EntraClient;

const UPN: &str = "s1@student.odisee.be";

async fn tenant(opts: FakeEntraOptions) -> (FakeEntra, EntraClient) {
    let fake = fake_entra::start(opts).await;
    fake.add_user(UPN, "Student One");
    let client = EntraClient::new(&fake.entra_config(), Arc::new(SystemClock)).unwrap();
    (fake, client)
}

#[tokio::test]
async fn a_registration_verifies_end_to_end() {
    let (fake, entra) = tenant(FakeEntraOptions::default()).await;
    let options = entra.creation_options(UPN).await.unwrap();
    assert_eq!(options.rp_id, "login.microsoft.com");
    let key = SoftKey::yubikey_like();
    let method = entra
        .register_fido2(UPN, &key.register(&options, "YubiKey 2026-12-06"))
        .await
        .unwrap();
    assert_eq!(method.model.as_deref(), Some("YubiKey 5 Series with NFC"));
    assert_eq!(method.attestation_level.as_deref(), Some("attested"));
    assert_eq!(fake.count(Route::Token), 1);
}
