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
