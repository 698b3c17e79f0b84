//! The configuration's sections (`[http]`, `[relying_party]`, `[ceremony]`, `[log]`, `[sms]`
//! with its providers and `[sms.fraud]`, `[kiosk]`) and their defaults. Every secret in a
//! section is a [`Secret`], since `keygate check-config` prints the whole configuration with
//! `Debug`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Secret;

/// User verification demanded of a key during enrollment and verification.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserVerification {
    /// PIN or built-in UV always (Entra ID's policy for FIDO2 keys).
    #[default]
    Required,
    /// UV when the key can, touch-only keys accepted.
    Preferred,
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
    /// Where the kiosk page enrolls keys: keygate's own relying party or the student's
    /// Microsoft Entra ID account (needs `[entra]`).
    pub enroll_target: EnrollTarget,
}

/// Where an enrollment registers the key.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnrollTarget {
    /// keygate's own relying party (`[relying_party]`).
    #[default]
    Local,
    /// Microsoft Entra ID through Graph's passkey provisioning (`[entra]`).
    Entra,
}

impl Default for KioskConfig {
    fn default() -> Self {
        KioskConfig {
            inactivity_secs: 60,
            touch_timeout_secs: 30,
            session_code_ttl_secs: 600,
            handoff_secret: Secret::default(),
            trusted_user_header: None,
            enroll_target: EnrollTarget::Local,
        }
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
    /// On a campus store, a daemon claims the messages it sends for this long: another
    /// daemon sends a message whose sender died mid-send once the claim runs out.
    pub outbox_lease_secs: u64,
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
    /// The fraud guard: per-prefix conversion and the monthly message cap.
    pub fraud: SmsFraudConfig,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            code_ttl_secs: 300,
            outbox_lease_secs: 30,
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
            fraud: SmsFraudConfig::default(),
        }
    }
}

/// `[sms.fraud]`: slow SMS pumping (traffic to premium ranges that never verifies) and the
/// monthly bill. A prefix is the first `prefix_digits` digits of the E.164 number (country
/// code included, no `+`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SmsFraudConfig {
    /// E.164 digits that form a prefix (1-15); a number keeps at least 4 digits out of it.
    pub prefix_digits: u32,
    /// A prefix is judged only once it had this many messages in the window.
    pub min_sends: u32,
    /// Verified codes per message (0-1) below which a judged prefix is blocked.
    pub min_conversion: f64,
    /// The window sends and verifications are counted in (60 s to 7 days).
    pub window_secs: u64,
    /// How long a block lasts (1 s to 90 days) unless an admin lifts it.
    pub block_secs: u64,
    /// Messages handed to providers per calendar month (UTC), resends included; 0: no cap.
    pub monthly_message_cap: u64,
}

impl Default for SmsFraudConfig {
    fn default() -> Self {
        SmsFraudConfig {
            prefix_digits: 7,
            min_sends: 20,
            min_conversion: 0.25,
            window_secs: 3600,
            block_secs: 43_200,
            monthly_message_cap: 20_000,
        }
    }
}

impl SmsFraudConfig {
    /// What configuration validation refuses, naming the setting.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=15).contains(&self.prefix_digits) {
            return Err(
                "sms.fraud.prefix_digits must be 1-15 (E.164 has at most 15 digits)".into(),
            );
        }
        if self.min_sends == 0 {
            return Err("sms.fraud.min_sends must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.min_conversion) {
            return Err("sms.fraud.min_conversion must be between 0 and 1".into());
        }
        if !(60..=7 * 86_400).contains(&self.window_secs) {
            return Err("sms.fraud.window_secs must be 60 s to 7 days (604800)".into());
        }
        if !(1..=90 * 86_400).contains(&self.block_secs) {
            return Err("sms.fraud.block_secs must be 1 s to 90 days (7776000)".into());
        }
        Ok(())
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

/// Microsoft Entra ID: Graph passkey provisioning on a user's behalf, phone-method sync and
/// service-desk actions. Absent (the default): every Entra feature answers `entra_not_configured`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EntraConfig {
    pub tenant_id: String,
    /// The app registration's application (client) id.
    pub client_id: String,
    /// Client secret; or `client_certificate` (one of the two).
    pub client_secret: Secret,
    /// PEM file with the certificate and its private key (private_key_jwt client assertion).
    pub client_certificate: Option<PathBuf>,
    /// The user principal name of a keygate user: `{user}` is replaced.
    pub upn_template: String,
    pub authority_url: String,
    pub graph_url: String,
    /// The passkey's name in Entra: `{model}`, `{date}` (YYYY-MM-DD), `{user}`.
    pub display_name_template: String,
    /// Add a phone verified by SMS at the kiosk as the user's Entra `mobile` method.
    pub sync_phones: bool,
    /// Bound on each call to the identity platform or Graph.
    pub request_timeout_ms: u64,
    /// Retries of idempotent calls (GET, DELETE, token) on 5xx and timeouts.
    pub max_retries: u32,
    pub retry_base_ms: u64,
}

impl Default for EntraConfig {
    fn default() -> Self {
        EntraConfig {
            tenant_id: String::new(),
            client_id: String::new(),
            client_secret: Secret::default(),
            client_certificate: None,
            upn_template: "{user}".into(),
            authority_url: "https://login.microsoftonline.com".into(),
            graph_url: "https://graph.microsoft.com/v1.0".into(),
            display_name_template: "{model} {date}".into(),
            sync_phones: true,
            request_timeout_ms: 10_000,
            max_retries: 2,
            retry_base_ms: 200,
        }
    }
}

#[cfg(test)]
mod fraud_tests {
    use super::super::{parse_config, Overrides};

    #[test]
    fn the_fraud_guard_is_layered_and_validated() {
        let c = parse_config(None, &[], &Overrides::default()).unwrap();
        assert_eq!(c.sms.fraud, super::SmsFraudConfig::default());
        assert_eq!(c.sms.fraud.monthly_message_cap, 20_000);
        let file = "[sms.fraud]\nmin_sends = 30\nmin_conversion = 0.5\n";
        let env = vec![(
            "KEYGATE_SMS__FRAUD__MIN_SENDS".to_string(),
            "40".to_string(),
        )];
        let c = parse_config(Some(file), &env, &Overrides::default()).unwrap();
        assert_eq!(
            (c.sms.fraud.min_sends, c.sms.fraud.min_conversion),
            (40, 0.5)
        );
        for bad in [
            "prefix_digits = 0",
            "prefix_digits = 16",
            "min_sends = 0",
            "min_conversion = 1.5",
            "min_conversion = -0.1",
            "min_conversion = nan",
            "window_secs = 10",
            "block_secs = 0",
            "bogus = 1",
        ] {
            let r = parse_config(
                Some(&format!("[sms.fraud]\n{bad}\n")),
                &[],
                &Overrides::default(),
            );
            assert!(r.is_err(), "{bad} accepted");
        }
        let ok = "[sms.fraud]\nmonthly_message_cap = 0\nmin_conversion = 0\n";
        assert!(parse_config(Some(ok), &[], &Overrides::default()).is_ok());
    }
}

/// `[retention]`: how long keygate keeps what it no longer needs (`keygate purge`, and the
/// daemon once a day). Days count back from the purge's time (`--as-of`, else the store's
/// clock).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// SMS challenges, their outbox messages and the send log (history tables included).
    pub sms_days: u32,
    /// Audit entries (the chain keeps verifying from an anchor at the first kept entry).
    pub audit_days: u32,
    /// Finished ceremony records (history included).
    pub ceremony_days: u32,
    /// A closed user's credentials, phones, SMS history and personal data go this long after
    /// the closure (until then `DELETE /v1/users/{user}/close` reopens the account).
    pub closed_user_grace_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            sms_days: 30,
            audit_days: 400,
            ceremony_days: 30,
            closed_user_grace_days: 14,
        }
    }
}

impl RetentionConfig {
    /// The upper bound of every `*_days` setting (100 years: a typo such as a number of
    /// seconds is refused rather than keeping data forever by accident).
    pub const MAX_DAYS: u32 = 36_500;

    /// Each setting must be 1..=[`Self::MAX_DAYS`]; the error names the first that is not.
    pub fn check(&self) -> Result<(), String> {
        for (name, days) in [
            ("sms_days", self.sms_days),
            ("audit_days", self.audit_days),
            ("ceremony_days", self.ceremony_days),
            ("closed_user_grace_days", self.closed_user_grace_days),
        ] {
            if days == 0 || days > Self::MAX_DAYS {
                return Err(format!(
                    "retention.{name} must be 1-{} days (got {days})",
                    Self::MAX_DAYS
                ));
            }
        }
        Ok(())
    }
}

/// `[enrollment]`: the campus PIN policy, checked before a PIN reaches a key and written onto
/// keys that take it (CTAP 2.1 authenticatorConfig setMinPINLength) after an enrollment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EnrollmentConfig {
    /// Shortest PIN keygate accepts (`pin_policy_violation` otherwise) and the minimum it sets
    /// on the key. 4 is CTAP's own floor: keygate then refuses nothing more and writes nothing.
    /// Campus policy: 6.
    pub min_pin_length: u32,
    /// After enrolling a key whose PIN keygate generated (service desk), make the key demand a
    /// new PIN at its next use (forcePINChange).
    pub force_pin_change: bool,
}

impl Default for EnrollmentConfig {
    fn default() -> Self {
        EnrollmentConfig {
            min_pin_length: 4,
            force_pin_change: false,
        }
    }
}

impl EnrollmentConfig {
    /// A policy keygate writes onto keys (anything beyond CTAP's defaults).
    pub fn writes_policy(&self) -> bool {
        self.min_pin_length > 4 || self.force_pin_change
    }

    pub(super) fn check(&self) -> Result<(), String> {
        // CTAP: at least 4 code points; a 63-byte PIN limit; generated PINs are 6 to 8 digits.
        if !(4..=63).contains(&self.min_pin_length) {
            return Err("enrollment.min_pin_length must be between 4 and 63".into());
        }
        Ok(())
    }
}
