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
