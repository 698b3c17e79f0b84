//! `[[hooks]]`: where keygate POSTs its signed event notifications (`crate::hooks`), and the
//! checks each entry must pass: an https URL (plain http only on a loopback host), a non-empty
//! secret, events from [`crate::hooks::EVENT_NAMES`], and no URL twice (a hook is known by its
//! URL in the delivery outbox).

use serde::{Deserialize, Serialize};

use super::{entra_endpoint, ConfigError, Secret};

/// One event receiver. `Debug` redacts the secret ([`Secret`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// Where the events are POSTed.
    pub url: String,
    /// HMAC-SHA256 key of the `X-Keygate-Signature` header.
    pub secret: Secret,
    /// The events this receiver hears about (names from `crate::hooks::EVENT_NAMES`).
    pub events: Vec<String>,
}

impl HookConfig {
    /// Whether this receiver subscribed to `event`.
    pub fn wants(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }
}

pub(super) fn validate_hooks(hooks: &[HookConfig]) -> Result<(), ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    for (i, h) in hooks.iter().enumerate() {
        let name = format!("hooks[{i}].url");
        entra_endpoint(&name, &h.url).map_err(ConfigError::Invalid)?;
        if h.secret.expose().trim().is_empty() {
            return invalid(format!("hooks[{i}].secret must not be empty"));
        }
        if h.events.is_empty() {
            return invalid(format!("hooks[{i}].events must name at least one event"));
        }
        if let Some(e) = h
            .events
            .iter()
            .find(|e| !crate::hooks::EVENT_NAMES.contains(&e.as_str()))
        {
            return invalid(format!(
                "hooks[{i}].events: unknown event `{e}` (known: {})",
                crate::hooks::EVENT_NAMES.join(", ")
            ));
        }
        if hooks[..i].iter().any(|o| o.url == h.url) {
            return invalid(format!("hooks[{i}].url `{}` is configured twice", h.url));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{parse_config, Overrides};

    fn parse(hooks: &str) -> Result<crate::config::Config, String> {
        parse_config(Some(hooks), &[], &Overrides::default()).map_err(|e| e.to_string())
    }

    fn hook(url: &str, secret: &str, events: &str) -> String {
        format!("[[hooks]]\nurl = \"{url}\"\nsecret = \"{secret}\"\nevents = {events}\n")
    }

    #[test]
    fn https_or_loopback_http_with_a_secret_and_known_events() {
        let ok = hook(
            "https://desk.odisee.be/keygate",
            "s3cret",
            r#"["user.locked", "sms.provider.circuit_open"]"#,
        ) + &hook("http://127.0.0.1:9000/h", "s3cret", r#"["user.reset"]"#);
        let cfg = parse(&ok).unwrap();
        assert_eq!(cfg.hooks.len(), 2);
        assert!(cfg.hooks[0].wants("user.locked") && !cfg.hooks[0].wants("user.reset"));
        let debug = format!("{cfg:?}");
        assert!(debug.contains("<redacted>") && !debug.contains("s3cret"));
    }

    #[test]
    fn bad_entries_are_refused_by_name() {
        let cases = [
            (
                hook("http://desk.odisee.be/h", "s", r#"["user.reset"]"#),
                "must be https",
            ),
            (
                hook("ftp://127.0.0.1/h", "s", r#"["user.reset"]"#),
                "must be https",
            ),
            (
                hook("https://desk.odisee.be/h", "", r#"["user.reset"]"#),
                "secret must not be empty",
            ),
            (
                hook("https://desk.odisee.be/h", "  ", r#"["user.reset"]"#),
                "secret must not be empty",
            ),
            (
                hook("https://desk.odisee.be/h", "s", "[]"),
                "at least one event",
            ),
            (
                hook("https://desk.odisee.be/h", "s", r#"["user.deleted"]"#),
                "unknown event `user.deleted`",
            ),
            (
                hook("https://d.odisee.be/h", "s", r#"["user.reset"]"#)
                    + &hook("https://d.odisee.be/h", "t", r#"["user.locked"]"#),
                "configured twice",
            ),
        ];
        for (toml, why) in cases {
            let err = parse(&toml).expect_err(&toml);
            assert!(err.contains(why), "{toml}: {err}");
        }
        let unknown_key = "[[hooks]]\nurl = \"https://d.odisee.be/h\"\nsecret = \"s\"\nevents = [\"user.reset\"]\nsecrte = \"x\"\n";
        assert!(parse(unknown_key).is_err());
    }
}
