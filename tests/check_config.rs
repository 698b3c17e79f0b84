//! `keygate check-config` prints the whole effective configuration, every section included,
//! with every secret redacted.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_keygate");

#[test]
fn check_config_prints_every_section_and_no_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("keygate.toml");
    std::fs::write(
        &file,
        r#"
listen = "127.0.0.1:8899"
simulate_seed = 4242
allowed_hosts = ["kiosk.example"]
allowed_origins = ["https://kiosk.odisee.be"]
max_body_bytes = 4096

[relying_party]
id = "odisee.be"
origin = "https://kiosk.odisee.be"

[ceremony]
default_timeout_ms = 31000

[log]
level = "debug"

[sms]
code_ttl_secs = 123
providers = ["twilio", "vonage", "webhook"]

[sms.twilio]
account_sid = "AC0123"
auth_token = "twilio-auth-SECRET-1"

[sms.vonage]
api_key = "vonage-key"
api_secret = "vonage-api-SECRET-2"
signature_secret = "vonage-sig-SECRET-3"

[sms.webhook]
url = "https://sms.example/send"
secret = "webhook-hmac-SECRET-4"

[kiosk]
inactivity_secs = 77
handoff_secret = "kiosk-handoff-SECRET-5"
"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&file)
        .env("KEYGATE_SMS__WEBHOOK__SECRET", "env-webhook-SECRET-6")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("configuration OK"), "{stdout}");
    for section in [
        "listen: ",
        "data_dir: ",
        "simulate: ",
        "simulate_seed: ",
        "allowed_hosts: ",
        "allowed_origins: ",
        "max_body_bytes: ",
        "relying_party: ",
        "ceremony: ",
        "log: ",
        "sms: ",
        "twilio: ",
        "vonage: ",
        "webhook: ",
        "kiosk: ",
    ] {
        assert!(stdout.contains(section), "no `{section}` in: {stdout}");
    }
    for value in [
        "4242",
        "31000",
        "code_ttl_secs: 123",
        "AC0123",
        "inactivity_secs: 77",
    ] {
        assert!(stdout.contains(value), "no `{value}` in: {stdout}");
    }
    assert!(stdout.contains("<redacted>"), "{stdout}");
    assert!(
        !stdout.contains("SECRET"),
        "a secret value was printed: {stdout}"
    );
}
