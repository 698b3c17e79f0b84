//! SMS providers: one trait, one file each. Only this folder names reqwest. Each provider
//! file also owns its inbound side, the parsing of its signed delivery callbacks
//! ([`receipt`]).

mod console;
mod receipt;
mod twilio;
mod vonage;
mod webhook;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use futures::future::BoxFuture;

pub use console::{ConsoleProvider, SimInbox, SimMessage};
pub use receipt::{DeliveryReport, DeliveryStatus, ReceiptError};
pub use twilio::{twilio_signature, TwilioProvider};
pub use vonage::{vonage_signature, VonageProvider};
pub use webhook::{webhook_signature, WebhookProvider};

use super::error::SmsError;
use crate::config::SmsConfig;

/// One message to send. `id` is keygate's message id (the outbox row), given to providers
/// that accept a client reference or idempotency key.
#[derive(Clone)]
pub struct OutgoingSms {
    pub id: String,
    pub to: String,
    pub text: String,
}

impl std::fmt::Debug for OutgoingSms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingSms")
            .field("id", &self.id)
            .field("to", &super::phone::redact(&self.to))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    pub provider_message_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying (5xx, timeout, refused connection, 429 with its Retry-After).
    #[error("transient provider error: {detail}")]
    Transient {
        detail: String,
        retry_after: Option<Duration>,
    },
    /// The provider refused this message (4xx): retrying or failing over will not help.
    #[error("provider rejected the message: {0}")]
    Rejected(String),
}

pub trait SmsProvider: Send + Sync {
    fn name(&self) -> &'static str;
    fn send<'a>(
        &'a self,
        msg: &'a OutgoingSms,
    ) -> BoxFuture<'a, Result<SendReceipt, ProviderError>>;
}

/// Classify a provider's HTTP status: 2xx ok, 429/5xx transient, other 4xx rejected.
pub(crate) fn classify_status(
    status: u16,
    retry_after: Option<&str>,
    body: &str,
) -> Result<(), ProviderError> {
    match status {
        200..=299 => Ok(()),
        429 | 500..=599 => Err(ProviderError::Transient {
            detail: format!("HTTP {status}"),
            retry_after: retry_after.and_then(|v| parse_retry_after(v, SystemTime::now())),
        }),
        _ => Err(ProviderError::Rejected(format!("HTTP {status}: {body}"))),
    }
}

/// `Retry-After` in either form RFC 9110 allows: delay-seconds or an HTTP-date (a date in the
/// past means "now").
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Longest provider error detail kept, in characters (after masking).
const MAX_DETAIL_CHARS: usize = 200;

/// What may leave the provider layer of a provider's error text: every run of 5 or more digits
/// (optionally after `+`, and counting digits across the separators people write numbers with:
/// space, `.`, `-`, `/`, parentheses) becomes `•••`, so no phone number (E.164 or national) and
/// no code survives; then the text is cut to [`MAX_DETAIL_CHARS`]. Providers quote the
/// recipient in their 4xx bodies (Twilio: "The 'To' number +32... is not a valid phone number").
pub fn sanitize_detail(detail: &str) -> String {
    const SEPARATORS: &[char] = &[' ', '.', '-', '/', '(', ')'];
    let chars: Vec<char> = detail.chars().collect();
    let mut out = String::with_capacity(detail.len().min(MAX_DETAIL_CHARS * 4));
    let mut i = 0;
    while i < chars.len() {
        let starts_number = chars[i].is_ascii_digit()
            || (chars[i] == '+' && chars.get(i + 1).is_some_and(char::is_ascii_digit));
        if !starts_number {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // The longest stretch of digits and separators from here, ending on a digit.
        let (mut end, mut j, mut digits) = (i, i, 0);
        if chars[j] == '+' {
            j += 1;
        }
        while j < chars.len() && (chars[j].is_ascii_digit() || SEPARATORS.contains(&chars[j])) {
            if chars[j].is_ascii_digit() {
                digits += 1;
                end = j + 1;
            }
            j += 1;
        }
        if digits >= 5 {
            out.push_str("•••");
        } else {
            out.extend(&chars[i..end]);
        }
        i = end;
    }
    if out.chars().count() > MAX_DETAIL_CHARS {
        out = out.chars().take(MAX_DETAIL_CHARS - 1).collect();
        out.push('…');
    }
    out
}

impl ProviderError {
    fn sanitized(self) -> ProviderError {
        match self {
            ProviderError::Transient {
                detail,
                retry_after,
            } => ProviderError::Transient {
                detail: sanitize_detail(&detail),
                retry_after,
            },
            ProviderError::Rejected(detail) => ProviderError::Rejected(sanitize_detail(&detail)),
        }
    }
}

/// Send through one provider. The one way callers reach a provider: every error detail that
/// comes back has passed [`sanitize_detail`], whatever the provider put in it, so it is safe to
/// log, to store in the outbox and to show in `GET /v1/sms/providers`.
pub async fn send_via(
    provider: &dyn SmsProvider,
    msg: &OutgoingSms,
) -> Result<SendReceipt, ProviderError> {
    provider.send(msg).await.map_err(ProviderError::sanitized)
}

/// The body of a provider's answer, once its status (and Retry-After) says it was accepted.
pub(crate) async fn checked_body(resp: reqwest::Response) -> Result<String, ProviderError> {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.text().await.unwrap_or_default();
    classify_status(status, retry_after.as_deref(), &body)?;
    Ok(body)
}

pub(crate) fn transport_error(e: reqwest::Error) -> ProviderError {
    ProviderError::Transient {
        detail: if e.is_timeout() {
            "timeout".into()
        } else if e.is_connect() {
            "connection failed".into()
        } else {
            "request failed".into()
        },
        retry_after: None,
    }
}

/// The HTTP client the HTTP providers share (timeouts from the config). Building it can fail
/// (TLS backend, system configuration): that is a start-up error, reported by
/// [`SmsService::new`](crate::sms::SmsService::new), not a panic.
pub(crate) fn http_client(cfg: &SmsConfig) -> Result<reqwest::Client, SmsError> {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(cfg.request_timeout_ms))
        .connect_timeout(Duration::from_millis(cfg.request_timeout_ms.min(3000)))
        .build()
        .map_err(|e| SmsError::Internal(format!("building the providers' HTTP client: {e}")))
}

/// The configured failover chain, in order. Empty `sms.providers` means `console` under
/// `--simulate` and nothing otherwise.
pub fn build_chain(
    cfg: &SmsConfig,
    simulate: bool,
    inbox: Option<Arc<SimInbox>>,
) -> Result<Vec<Arc<dyn SmsProvider>>, SmsError> {
    let names: Vec<String> = if cfg.providers.is_empty() && simulate {
        vec!["console".into()]
    } else {
        cfg.providers.clone()
    };
    // One HTTP client (TLS roots and all) shared by the HTTP providers, built only if one is
    // configured: the console provider needs none.
    let mut shared: Option<reqwest::Client> = None;
    let mut client = || -> Result<reqwest::Client, SmsError> {
        if let Some(c) = &shared {
            return Ok(c.clone());
        }
        let c = http_client(cfg)?;
        shared = Some(c.clone());
        Ok(c)
    };
    let mut chain: Vec<Arc<dyn SmsProvider>> = Vec::with_capacity(names.len());
    for n in &names {
        match n.as_str() {
            "twilio" => chain.push(Arc::new(TwilioProvider::new(cfg.twilio.clone(), client()?))),
            "vonage" => chain.push(Arc::new(VonageProvider::new(cfg.vonage.clone(), client()?))),
            "webhook" => chain.push(Arc::new(WebhookProvider::new(
                cfg.webhook.clone(),
                client()?,
            ))),
            "console" => chain.push(Arc::new(ConsoleProvider::new(inbox.clone()))),
            _ => {}
        }
    }
    Ok(chain)
}

/// A delivery callback addressed to `provider`, authenticated and parsed by that provider's
/// file. Looked up in the configuration, not the failover chain, so that reports still
/// arriving for a provider taken out of the chain are recorded. `Ok(None)`: authentic, but
/// nothing to record.
pub fn receipt(
    cfg: &SmsConfig,
    provider: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<DeliveryReport>, ReceiptError> {
    match provider {
        "twilio" => twilio::receipt(&cfg.twilio, headers, body),
        "vonage" => vonage::receipt(&cfg.vonage, headers, body),
        "webhook" => webhook::receipt(&cfg.webhook, headers, body),
        _ => Err(ReceiptError::UnknownProvider),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past: retry now"
        );
        // The obsolete forms RFC 9110 still asks recipients to accept.
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:57 1994", now),
            Some(Duration::from_secs(20))
        );
        for bad in ["", "soon", "-5", "1.5"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad}");
        }
        let in_an_hour = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
        match classify_status(503, Some(&in_an_hour), "") {
            Err(ProviderError::Transient {
                retry_after: Some(d),
                ..
            }) => assert!(d > Duration::from_secs(3500) && d <= Duration::from_secs(3600)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn provider_details_lose_numbers_and_codes() {
        for (raw, want) in [
            (
                "HTTP 400: The 'To' number +32475112233 is not a valid phone number.",
                "HTTP 400: The 'To' number ••• is not a valid phone number.",
            ),
            ("to 0475 11 22 33, ok", "to •••, ok"),
            ("to 0475/11.22.33", "to •••"),
            ("(0475) 11-22-33", "(•••"),
            ("32475112233 rejected", "••• rejected"),
            ("code 042917 sent", "code ••• sent"),
            (
                "HTTP 404: 1234 items, 3 left",
                "HTTP 404: 1234 items, 3 left",
            ),
            ("a + b", "a + b"),
        ] {
            assert_eq!(sanitize_detail(raw), want, "{raw}");
        }
        let long = sanitize_detail(&"x".repeat(1000));
        assert_eq!(long.chars().count(), MAX_DETAIL_CHARS);
        assert!(long.ends_with('…'));
    }

    struct Quoting;

    impl SmsProvider for Quoting {
        fn name(&self) -> &'static str {
            "quoting"
        }
        fn send<'a>(
            &'a self,
            msg: &'a OutgoingSms,
        ) -> BoxFuture<'a, Result<SendReceipt, ProviderError>> {
            Box::pin(async move { Err(ProviderError::Rejected(format!("bad To {}", msg.to))) })
        }
    }

    #[tokio::test]
    async fn send_via_sanitizes_whatever_a_provider_returns() {
        let msg = OutgoingSms {
            id: "m".into(),
            to: "+32475112233".into(),
            text: "t".into(),
        };
        assert_eq!(
            send_via(&Quoting, &msg).await,
            Err(ProviderError::Rejected("bad To •••".into()))
        );
    }
}
