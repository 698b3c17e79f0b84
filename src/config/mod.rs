//! Typed, layered configuration: defaults < file (TOML) < environment (`KEYGATE_*`) < flags.
//!
//! [`parse_config`] is pure (a string in, a validated [`Config`] out) so it is unit-tested apart
//! from file I/O, after greetd's `parse_config`.
//!
//! Files: this one holds the top-level [`Config`], the layering and [`load`]; `sections` the
//! per-section structs and their defaults, `secret` the redacted [`Secret`], `validate` the
//! checks every layered result must pass, `entra` those of `[entra]` (and the one file check,
//! [`check_entra_files`], that [`load`] adds).

mod attestation;
mod entra;
mod hooks;
mod secret;
mod sections;
mod store;
#[cfg(test)]
mod tests;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use attestation::{check_attestation_files, AttestationConfig, AttestationMode};
pub use entra::{check_entra_files, entra_endpoint, validate_entra_section};
pub use hooks::HookConfig;
pub use secret::Secret;
pub use sections::{
    CeremonyConfig, EnrollTarget, EnrollmentConfig, EntraConfig, HttpConfig, KioskConfig,
    LogConfig, RelyingPartyConfig, RetentionConfig, SmsConfig, SmsFraudConfig, TwilioConfig,
    UserVerification, VonageConfig, WebhookConfig,
};
pub use store::{redact_url_password, StoreConfig};
use validate::validate;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `Debug` is derived and `keygate check-config` prints it whole: every secret in here (and in
/// its sections, in `sections.rs`) must be a [`Secret`], whose `Debug` redacts it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on. Loopback unless configured otherwise.
    pub listen: SocketAddr,
    /// Where the SQLite database, secrets and the simulated keys' state live.
    pub data_dir: PathBuf,
    /// Run with simulated keys (and expose `/v1/sim`).
    pub simulate: bool,
    /// Seed for the simulated keys' randomness (deterministic demos and tests).
    pub simulate_seed: Option<u64>,
    /// `Host` header values accepted (DNS-rebinding guard). The listen address is always allowed.
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed to call the API cross-origin (same-origin is always allowed).
    pub allowed_origins: Vec<String>,
    /// Maximum request body size in bytes.
    pub max_body_bytes: usize,
    pub http: HttpConfig,
    pub relying_party: RelyingPartyConfig,
    pub ceremony: CeremonyConfig,
    pub log: LogConfig,
    pub sms: SmsConfig,
    pub kiosk: KioskConfig,
    pub retention: RetentionConfig,
    pub enrollment: EnrollmentConfig,
    /// Microsoft Entra ID (optional section).
    pub entra: Option<EntraConfig>,
    /// `[[hooks]]`: signed event notifications (`crate::hooks`).
    pub hooks: Vec<HookConfig>,
    /// `[store]`: the SQLite file in the data dir, or the campus store (PostgreSQL).
    pub store: StoreConfig,
    /// `[attestation]`: the key-model policy at enrollment (`crate::attestation`).
    pub attestation: AttestationConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8787".parse().expect("static address"),
            data_dir: PathBuf::from("keygate-data"),
            simulate: false,
            simulate_seed: None,
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()],
            allowed_origins: Vec::new(),
            max_body_bytes: 64 * 1024,
            http: HttpConfig::default(),
            relying_party: RelyingPartyConfig::default(),
            ceremony: CeremonyConfig::default(),
            log: LogConfig::default(),
            sms: SmsConfig::default(),
            kiosk: KioskConfig::default(),
            retention: RetentionConfig::default(),
            enrollment: EnrollmentConfig::default(),
            entra: None,
            hooks: Vec::new(),
            store: StoreConfig::default(),
            attestation: AttestationConfig::default(),
        }
    }
}

/// Command-line overrides (the top layer).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulate: Option<bool>,
}

/// Pure layering: defaults < `file_text` (TOML) < `env` pairs (`KEYGATE_LISTEN`,
/// `KEYGATE_RELYING_PARTY__ID`, ...) < `overrides`. Validates the result.
pub fn parse_config(
    file_text: Option<&str>,
    env: &[(String, String)],
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if let Some(text) = file_text {
        fig = fig.merge(Toml::string(text));
    }
    // Environment pairs are passed in (not read here) so that this function stays pure.
    let mut env_dict = figment::value::Dict::new();
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("KEYGATE_") else {
            continue;
        };
        // Not configuration: the bench tool's PIN and the hardware tests' opt-ins.
        if rest.starts_with("BENCH_") || rest.starts_with("HW_") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        insert_path(&mut env_dict, &path, parse_env_value(v));
    }
    fig = fig.merge(Serialized::defaults(env_dict));
    fig = fig.merge(Serialized::defaults(overrides));
    let cfg: Config = fig
        .extract()
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    validate(&cfg)?;
    Ok(cfg)
}

fn parse_env_value(v: &str) -> figment::value::Value {
    use figment::value::Value;
    if let Ok(b) = v.parse::<bool>() {
        return b.into();
    }
    if let Ok(i) = v.parse::<i64>() {
        return i.into();
    }
    if let Some(inner) = v.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let items: Vec<Value> = inner
            .split(',')
            .map(|x| x.trim().trim_matches('"'))
            .filter(|x| !x.is_empty())
            .map(|x| Value::from(x.to_string()))
            .collect();
        return Value::from(items);
    }
    v.to_string().into()
}

fn insert_path(dict: &mut figment::value::Dict, path: &[String], value: figment::value::Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [head, rest @ ..] => {
            let entry = dict
                .entry(head.clone())
                .or_insert_with(|| figment::value::Dict::new().into());
            if let figment::value::Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// Read the file (if any) and the process environment, then [`parse_config`], then check the
/// files the configuration names ([`check_entra_files`]).
pub fn load(path: Option<&std::path::Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let text = match path {
        Some(p) => Some(
            std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?,
        ),
        None => None,
    };
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("KEYGATE_"))
        .collect();
    let cfg = parse_config(text.as_deref(), &env, overrides)?;
    check_entra_files(&cfg)?;
    check_attestation_files(&cfg)?;
    Ok(cfg)
}
