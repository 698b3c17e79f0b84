//! `[store]`: the SQLite file in the data dir (the default) or the campus store (PostgreSQL).

use serde::{Deserialize, Serialize};

/// `[store]`: where the durable state lives. Absent (or `url = "sqlite"`): the SQLite file in
/// the data dir. `url = "postgres://user@host:port/db?sslmode=require"`: the campus store,
/// PostgreSQL shared by every kiosk of the campus.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub url: Option<String>,
    /// The most one campus-store call (or connecting) may take before the request answers
    /// `503 store_unavailable`.
    pub timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            timeout_ms: 5000,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url.as_deref().map(redact_url_password))
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// `url` with its password (if any) replaced by `***`.
pub fn redact_url_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable>".into(),
    }
}

impl StoreConfig {
    /// The PostgreSQL URL when the campus store is configured.
    pub fn postgres_url(&self) -> Option<&str> {
        self.url.as_deref().filter(|u| *u != "sqlite")
    }

    pub fn check(&self) -> Result<(), String> {
        if let Some(u) = self.postgres_url() {
            let parsed = url::Url::parse(u).map_err(|e| format!("store.url: {e}"))?;
            if !matches!(parsed.scheme(), "postgres" | "postgresql") {
                return Err(format!(
                    "store.url: `{}` is neither \"sqlite\" nor a postgres:// URL",
                    parsed.scheme()
                ));
            }
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err("store.url: the PostgreSQL URL names no host".into());
            }
        }
        if !(100..=120_000).contains(&self.timeout_ms) {
            return Err("store.timeout_ms must be 100..=120000".into());
        }
        Ok(())
    }
}
