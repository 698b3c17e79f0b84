//! The checks a layered [`Config`] must pass before keygate starts: the relying party's ID
//! against its origin, ceremony timeouts, the SMS regions, limits and providers, HTTP limits,
//! the log format, the allowed origins and `[entra]`. A failure names the offending setting.

use super::{Config, ConfigError};

pub(super) fn validate(cfg: &Config) -> Result<(), ConfigError> {
    cfg.store.check().map_err(ConfigError::Invalid)?;
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
    if !(1..=3600).contains(&sms.outbox_lease_secs) {
        return Err(ConfigError::Invalid(
            "sms.outbox_lease_secs must be 1..=3600".into(),
        ));
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
    sms.fraud.check().map_err(ConfigError::Invalid)?;
    cfg.enrollment.check().map_err(ConfigError::Invalid)?;
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
    cfg.retention.check().map_err(ConfigError::Invalid)?;
    super::hooks::validate_hooks(&cfg.hooks)?;
    cfg.attestation.check().map_err(ConfigError::Invalid)?;
    super::entra::validate(cfg)
}
