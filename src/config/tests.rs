//! Unit tests of the configuration: defaults, the shipped service config, layer order and the
//! validation errors.

use super::*;

#[test]
fn defaults_are_loopback_and_valid() {
    let c = parse_config(None, &[], &Overrides::default()).unwrap();
    assert!(c.listen.ip().is_loopback());
    assert_eq!(
        c.relying_party.user_verification,
        UserVerification::Required
    );
}

#[test]
fn the_shipped_service_config_is_valid() {
    let c = parse_config(
        Some(include_str!("../../dist/keygate.toml")),
        &[],
        &Overrides::default(),
    )
    .unwrap();
    assert!(c.listen.ip().is_loopback());
    assert!(!c.simulate);
    assert_eq!(
        c.relying_party.user_verification,
        UserVerification::Required
    );
}

#[test]
fn layers_apply_in_order() {
    let file = "listen = \"127.0.0.1:9000\"\n[relying_party]\nid = \"odisee.be\"\norigin = \"https://kiosk.odisee.be\"\n";
    let env = vec![
        ("KEYGATE_LISTEN".to_string(), "127.0.0.1:9100".to_string()),
        (
            "KEYGATE_RELYING_PARTY__USER_VERIFICATION".to_string(),
            "preferred".to_string(),
        ),
    ];
    let c = parse_config(Some(file), &env, &Overrides::default()).unwrap();
    assert_eq!(c.listen.port(), 9100);
    assert_eq!(c.relying_party.id, "odisee.be");
    assert_eq!(
        c.relying_party.user_verification,
        UserVerification::Preferred
    );
    let o = Overrides {
        listen: Some("127.0.0.1:9200".parse().unwrap()),
        ..Default::default()
    };
    let c = parse_config(Some(file), &env, &o).unwrap();
    assert_eq!(c.listen.port(), 9200);
}

#[test]
fn rejects_bad_values() {
    assert!(parse_config(Some("bogus = 1"), &[], &Overrides::default()).is_err());
    let bad_rp = "[relying_party]\nid = \"evil.com\"\norigin = \"https://kiosk.odisee.be\"\n";
    let e = parse_config(Some(bad_rp), &[], &Overrides::default()).unwrap_err();
    assert!(e.to_string().contains("suffix"));
    assert!(parse_config(Some("max_body_bytes = 10"), &[], &Overrides::default()).is_err());
    assert!(parse_config(Some("listen = \"nope\""), &[], &Overrides::default()).is_err());
    for sms in [
        "[sms]\nallowed_countries = [\"BE\", \"XX\"]\n",
        "[sms]\ndefault_region = \"ZZ\"\n",
    ] {
        let e = parse_config(Some(sms), &[], &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("libphonenumber knows"), "{e}");
    }
    let nl = "[sms]\ndefault_region = \"nl\"\nallowed_countries = [\"nl\", \"BE\"]\n";
    assert!(parse_config(Some(nl), &[], &Overrides::default()).is_ok());
}

const ENTRA: &str = r#"
[entra]
tenant_id = "8f0c7d5e-3b1a-4c2d-9e6f-0a1b2c3d4e5f"
client_id = "4a1b2c3d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
client_secret = "entra-SECRET-value"
upn_template = "{user}@student.odisee.be"
"#;

fn entra_err(toml: &str) -> String {
    parse_config(Some(toml), &[], &Overrides::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn an_entra_section_parses_with_defaults_and_a_redacted_secret() {
    let c = parse_config(Some(ENTRA), &[], &Overrides::default()).unwrap();
    let e = c.entra.as_ref().unwrap();
    assert_eq!(e.graph_url, "https://graph.microsoft.com/v1.0");
    assert_eq!(e.authority_url, "https://login.microsoftonline.com");
    assert_eq!(e.request_timeout_ms, 10_000);
    assert!(e.sync_phones);
    assert!(!format!("{c:?}").contains("entra-SECRET-value"));
    assert!(parse_config(None, &[], &Overrides::default())
        .unwrap()
        .entra
        .is_none());
}

#[test]
fn the_entra_secret_can_come_from_the_environment() {
    let file = ENTRA.replace("client_secret = \"entra-SECRET-value\"\n", "");
    assert!(entra_err(&file).contains("client_secret or client_certificate"));
    let env = vec![(
        "KEYGATE_ENTRA__CLIENT_SECRET".to_string(),
        "from-env-SECRET".to_string(),
    )];
    let c = parse_config(Some(&file), &env, &Overrides::default()).unwrap();
    assert_eq!(c.entra.unwrap().client_secret.expose(), "from-env-SECRET");
}

#[test]
fn entra_settings_are_checked() {
    let with = |from: &str, to: &str| {
        assert!(ENTRA.contains(from), "{from}");
        ENTRA.replace(from, to)
    };
    let cases = [
        (
            with("8f0c7d5e-3b1a-4c2d-9e6f-0a1b2c3d4e5f", "not a tenant"),
            "tenant_id",
        ),
        (
            with("8f0c7d5e-3b1a-4c2d-9e6f-0a1b2c3d4e5f", ""),
            "tenant_id",
        ),
        (
            with("4a1b2c3d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "keygate"),
            "client_id",
        ),
        (with("{user}@student", "student"), "{user}"),
        (
            format!("{ENTRA}client_certificate = \"/etc/keygate/entra.pem\"\n"),
            "not both",
        ),
        (
            format!("{ENTRA}graph_url = \"http://graph.example.com/v1.0\"\n"),
            "must be https",
        ),
        (
            format!("{ENTRA}authority_url = \"ftp://login.example.com\"\n"),
            "must be https",
        ),
        (
            format!("{ENTRA}graph_url = \"https://graph.microsoft.com/v1.0?x=1\"\n"),
            "query",
        ),
        (
            format!("{ENTRA}request_timeout_ms = 50\n"),
            "request_timeout_ms",
        ),
        (
            format!("{ENTRA}request_timeout_ms = 120001\n"),
            "request_timeout_ms",
        ),
        (
            "[kiosk]\nenroll_target = \"entra\"\n".to_string(),
            "needs an [entra]",
        ),
    ];
    for (toml, expected) in &cases {
        let e = entra_err(toml);
        assert!(e.contains(expected), "{toml}: {e}");
    }
    for ok in [
        with("8f0c7d5e-3b1a-4c2d-9e6f-0a1b2c3d4e5f", "odisee.onmicrosoft.com"),
        format!("{ENTRA}graph_url = \"http://127.0.0.1:9000/graph/v1.0\"\nauthority_url = \"http://localhost:9000/authority\"\n"),
        format!("{ENTRA}graph_url = \"http://[::1]:9000/graph/v1.0\"\n"),
        format!("{ENTRA}graph_url = \"https://graph.microsoft.us/v1.0\"\nauthority_url = \"https://login.microsoftonline.us\"\n"),
        format!("[kiosk]\nenroll_target = \"entra\"\n{ENTRA}"),
    ] {
        parse_config(Some(&ok), &[], &Overrides::default()).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[test]
fn the_client_certificate_is_read_by_check_entra_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("entra.pem");
    let toml = ENTRA.replace(
        "client_secret = \"entra-SECRET-value\"",
        &format!("client_certificate = {:?}", path.display().to_string()),
    );
    // Pure parsing does not touch the file...
    let cfg = parse_config(Some(&toml), &[], &Overrides::default()).unwrap();
    // ...the file check does.
    let e = check_entra_files(&cfg).unwrap_err().to_string();
    assert!(e.contains("entra.client_certificate"), "{e}");
    let key = include_str!("../../tests/fixtures/entra/rsa-a.key.pem");
    let kp = rcgen::KeyPair::from_pem(key).unwrap();
    let cert = rcgen::CertificateParams::default()
        .self_signed(&kp)
        .unwrap();
    std::fs::write(&path, format!("{}{key}", cert.pem())).unwrap();
    check_entra_files(&cfg).unwrap();
    std::fs::write(&path, cert.pem()).unwrap();
    let e = check_entra_files(&cfg).unwrap_err().to_string();
    assert!(e.contains("PRIVATE KEY"), "{e}");
}
