//! Typed, layered configuration: defaults < file (TOML) < environment (`KEYGATE_*`) < flags.
//!
//! [`parse_config`] is pure (a string in, a validated [`Config`] out) so it is unit-tested apart
//! from file I/O, after greetd's `parse_config`.

use std::net::SocketAddr;
use std::path::PathBuf;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

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

/// User verification demanded of a key during enrollment and verification.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UserVerification {
    /// PIN or built-in UV always (Entra ID's policy for FIDO2 keys).
    #[default]
    Required,
    /// UV when the key can, touch-only keys accepted.
    Preferred,
}

/// `Debug` is derived and `keygate check-config` prints it whole: every secret in here (and in
/// the sections below) must be a [`Secret`], whose `Debug` redacts it.
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
}

/// Connection limits of the HTTP listener (any local process can open sockets).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Open connections at most; 0 derives it from the descriptor limit (RLIMIT_NOFILE, raised
    /// to its hard limit at start): that limit minus a reserve for the database, keys and
    /// providers. A client beyond it is answered `503` at once and closed.
    pub max_connections: usize,
    /// Seconds a client has to send a request's head, and that a kept-alive connection may
    /// wait idle for its next request (one timer in the HTTP/1 server).
    pub header_timeout_secs: u64,
    /// Seconds a request body may pause between two reads (a Content-Length larger than the
    /// body sent no longer waits forever).
    pub body_timeout_secs: u64,
    /// Live event streams (`/v1/*/{id}/events`) at most, in all and per ceremony.
    pub max_event_streams: usize,
    pub max_event_streams_per_ceremony: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_connections: 0,
            header_timeout_secs: 10,
            body_timeout_secs: 10,
            max_event_streams: 64,
            max_event_streams_per_ceremony: 4,
        }
    }
}

/// The kiosk page keygate serves at `/kiosk/`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KioskConfig {
    /// The page resets itself after this many seconds without input.
    pub inactivity_secs: u64,
    /// How long the page lets a student touch the key.
    pub touch_timeout_secs: u64,
    /// One-time kiosk URLs (`keygate kiosk-url`) are valid this long.
    pub session_code_ttl_secs: u64,
    /// HMAC key of the signed user handoff from the upstream sign-in. Empty: a key generated
    /// in `<data_dir>/kiosk-handoff.key` (share it with the sign-in service).
    pub handoff_secret: Secret,
    /// Alternatively, a header a reverse proxy on this machine sets to the signed-in user
    /// (e.g. `X-Remote-User`); honoured only on connections from loopback.
    pub trusted_user_header: Option<String>,
}

impl Default for KioskConfig {
    fn default() -> Self {
        KioskConfig {
            inactivity_secs: 60,
            touch_timeout_secs: 30,
            session_code_ttl_secs: 600,
            handoff_secret: Secret::default(),
            trusted_user_header: None,
        }
    }
}

/// A secret from config or env: usable, never printed (`Debug` shows `<redacted>`).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "<empty>"
        } else {
            "<redacted>"
        })
    }
}

/// The SMS factor: code policy, anti-fraud budgets and providers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// Code lifetime in seconds.
    pub code_ttl_secs: u64,
    /// Wrong codes allowed per challenge before it dies (`challenge_failed`).
    pub max_attempts: u32,
    /// Failed verifications in a row that lock a user's SMS verification...
    pub lockout_failures: u32,
    /// ...for this long (seconds).
    pub lockout_secs: u64,
    pub resend_cooldown_secs: u64,
    pub max_resends: u32,
    /// At most this many sends to one number per window.
    pub per_number_limit: u32,
    pub per_number_window_secs: u64,
    /// SMS-pumping guards: sends per hour, in all and per country calling code.
    pub global_hourly_budget: u32,
    pub country_hourly_budget: u32,
    pub default_region: String,
    /// ISO 3166 alpha-2 countries whose numbers are accepted.
    pub allowed_countries: Vec<String>,
    /// Adds the WebOTP line `@<domain> #<code>` to every message.
    pub webotp_domain: Option<String>,
    /// Failover order, e.g. `["twilio", "vonage"]`. Empty: `console` under `--simulate`.
    pub providers: Vec<String>,
    /// Allow the console provider without `--simulate` (development only).
    pub allow_console: bool,
    pub request_timeout_ms: u64,
    /// Retries per provider on transient errors (5xx, timeouts, 429), with backoff and jitter.
    pub max_retries: u32,
    /// First backoff step in milliseconds (doubles per retry, plus up to as much jitter).
    pub retry_base_ms: u64,
    /// Consecutive failures that open a provider's circuit, and how long it stays open.
    pub breaker_failures: u32,
    pub breaker_cooldown_secs: u64,
    pub twilio: TwilioConfig,
    pub vonage: VonageConfig,
    pub webhook: WebhookConfig,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            code_ttl_secs: 300,
            max_attempts: 5,
            lockout_failures: 5,
            lockout_secs: 16 * 60,
            resend_cooldown_secs: 30,
            max_resends: 3,
            per_number_limit: 5,
            per_number_window_secs: 600,
            global_hourly_budget: 1000,
            country_hourly_budget: 500,
            default_region: "BE".into(),
            allowed_countries: ["BE", "NL", "LU", "FR", "DE"].map(String::from).to_vec(),
            webotp_domain: None,
            providers: Vec::new(),
            allow_console: false,
            request_timeout_ms: 5000,
            max_retries: 2,
            retry_base_ms: 250,
            breaker_failures: 3,
            breaker_cooldown_secs: 30,
            twilio: TwilioConfig::default(),
            vonage: VonageConfig::default(),
            webhook: WebhookConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TwilioConfig {
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: Secret,
    /// Either a MessagingServiceSid or a From number.
    pub messaging_service_sid: Option<String>,
    pub from: Option<String>,
    /// Public URL Twilio posts delivery status to (`.../v1/sms/callbacks/twilio`); also the
    /// URL its signatures are computed over.
    pub status_callback_url: Option<String>,
}

impl Default for TwilioConfig {
    fn default() -> Self {
        TwilioConfig {
            base_url: "https://api.twilio.com".into(),
            account_sid: String::new(),
            auth_token: Secret::default(),
            messaging_service_sid: None,
            from: None,
            status_callback_url: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VonageConfig {
    pub base_url: String,
    pub api_key: String,
    pub api_secret: Secret,
    pub from: String,
    /// The account's signature secret (dashboard: signing method "SHA-256 HMAC"): delivery
    /// receipts at `/v1/sms/callbacks/vonage` must carry a valid `sig`; empty refuses them.
    pub signature_secret: Secret,
}

impl Default for VonageConfig {
    fn default() -> Self {
        VonageConfig {
            base_url: "https://rest.nexmo.com".into(),
            api_key: String::new(),
            api_secret: Secret::default(),
            from: "Odisee".into(),
            signature_secret: Secret::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    pub url: String,
    /// HMAC-SHA256 key for the `X-Keygate-Signature` header (and for callbacks).
    pub secret: Secret,
    /// JSON body; `{{to}}`, `{{text}}` and `{{id}}` are replaced (JSON-escaped).
    pub body_template: String,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: String::new(),
            secret: Secret::default(),
            body_template: r#"{"to": "{{to}}", "text": "{{text}}", "id": "{{id}}"}"#.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RelyingPartyConfig {
    /// WebAuthn RP ID (a registrable domain).
    pub id: String,
    pub name: String,
    /// Origin written into clientDataJSON and checked by the RP.
    pub origin: String,
    pub user_verification: UserVerification,
    /// PEM files with attestation root CAs to trust (e.g. vendor roots from FIDO MDS).
    pub attestation_ca_files: Vec<PathBuf>,
    /// Reject keys whose attestation does not chain to a trusted CA.
    pub require_trusted_attestation: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CeremonyConfig {
    /// Default time a student gets to touch the key / type the PIN.
    pub default_timeout_ms: u64,
    /// Upper bound for a client-requested `timeout_ms`.
    pub max_timeout_ms: u64,
    /// How long a finished ceremony stays readable.
    pub retention_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// tracing EnvFilter directive, e.g. `info` or `keygate=debug`.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
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
        }
    }
}

impl Default for RelyingPartyConfig {
    fn default() -> Self {
        RelyingPartyConfig {
            id: "keygate.local".into(),
            name: "keygate".into(),
            origin: "https://keygate.local".into(),
            user_verification: UserVerification::Required,
            attestation_ca_files: Vec::new(),
            require_trusted_attestation: false,
        }
    }
}

impl Default for CeremonyConfig {
    fn default() -> Self {
        CeremonyConfig {
            default_timeout_ms: 30_000,
            max_timeout_ms: 120_000,
            retention_secs: 600,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
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

fn validate(cfg: &Config) -> Result<(), ConfigError> {
    let origin = url::Url::parse(&cfg.relying_party.origin)
        .map_err(|e| ConfigError::Invalid(format!("relying_party.origin: {e}")))?;
    let host = origin
        .host_str()
        .ok_or_else(|| ConfigError::Invalid("relying_party.origin has no host".into()))?;
    let rp = cfg.relying_party.id.as_str();
    if rp.is_empty() || !(host == rp || host.ends_with(&format!(".{rp}"))) {
        return Err(ConfigError::Invalid(format!(
            "relying_party.id `{rp}` must equal or be a suffix of the origin's host `{host}`"
        )));
    }
    if cfg.ceremony.default_timeout_ms == 0
        || cfg.ceremony.default_timeout_ms > cfg.ceremony.max_timeout_ms
    {
        return Err(ConfigError::Invalid(
            "ceremony.default_timeout_ms must be > 0 and <= ceremony.max_timeout_ms".into(),
        ));
    }
    let sms = &cfg.sms;
    if let Some(region) =
        crate::sms::phone::unknown_region(&sms.default_region, &sms.allowed_countries)
    {
        return Err(ConfigError::Invalid(format!(
            "sms.allowed_countries / sms.default_region: `{region}` is not an ISO 3166 region libphonenumber knows"
        )));
    }
    if sms.code_ttl_secs == 0 || sms.max_attempts == 0 || sms.lockout_failures == 0 {
        return Err(ConfigError::Invalid(
            "sms.code_ttl_secs, sms.max_attempts and sms.lockout_failures must be > 0".into(),
        ));
    }
    for p in &sms.providers {
        if !matches!(p.as_str(), "twilio" | "vonage" | "webhook" | "console") {
            return Err(ConfigError::Invalid(format!(
                "sms.providers: unknown provider `{p}` (twilio, vonage, webhook, console)"
            )));
        }
    }
    if sms.providers.iter().any(|p| p == "console") && !cfg.simulate && !sms.allow_console {
        return Err(ConfigError::Invalid(
            "sms.providers: `console` prints codes to the log; it needs --simulate or sms.allow_console = true".into(),
        ));
    }
    if cfg.max_body_bytes < 1024 {
        return Err(ConfigError::Invalid(
            "max_body_bytes must be >= 1024".into(),
        ));
    }
    let h = &cfg.http;
    if h.header_timeout_secs == 0
        || h.body_timeout_secs == 0
        || h.max_event_streams == 0
        || h.max_event_streams_per_ceremony == 0
    {
        return Err(ConfigError::Invalid(
            "http: timeouts and event-stream limits must be at least 1".into(),
        ));
    }
    if !matches!(cfg.log.format.as_str(), "text" | "json") {
        return Err(ConfigError::Invalid(
            "log.format must be `text` or `json`".into(),
        ));
    }
    for o in &cfg.allowed_origins {
        url::Url::parse(o)
            .map_err(|e| ConfigError::Invalid(format!("allowed_origins `{o}`: {e}")))?;
    }
    Ok(())
}

/// Read the file (if any) and the process environment, then [`parse_config`].
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
    parse_config(text.as_deref(), &env, overrides)
}

#[cfg(test)]
mod tests {
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
            Some(include_str!("../dist/keygate.toml")),
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
}
