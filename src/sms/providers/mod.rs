//! SMS providers: one trait, one file each. Only this folder names reqwest.

mod console;
mod twilio;
mod vonage;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

pub use console::{ConsoleProvider, SimInbox, SimMessage};
pub use twilio::{twilio_signature, TwilioProvider};
pub use vonage::VonageProvider;
pub use webhook::{webhook_signature, WebhookProvider};

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
            .field("to", &super::phone::mask(&self.to))
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
            retry_after: retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        }),
        _ => Err(ProviderError::Rejected(format!(
            "HTTP {status}: {}",
            body.chars().take(200).collect::<String>()
        ))),
    }
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

pub(crate) fn http_client(cfg: &SmsConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(cfg.request_timeout_ms))
        .connect_timeout(Duration::from_millis(cfg.request_timeout_ms.min(3000)))
        .build()
        .expect("building an HTTP client")
}

/// The configured failover chain, in order. Empty `sms.providers` means `console` under
/// `--simulate` and nothing otherwise.
pub fn build_chain(
    cfg: &SmsConfig,
    simulate: bool,
    inbox: Option<Arc<SimInbox>>,
) -> Vec<Arc<dyn SmsProvider>> {
    let names: Vec<String> = if cfg.providers.is_empty() && simulate {
        vec!["console".into()]
    } else {
        cfg.providers.clone()
    };
    let client = http_client(cfg);
    names
        .iter()
        .filter_map(|n| -> Option<Arc<dyn SmsProvider>> {
            match n.as_str() {
                "twilio" => Some(Arc::new(TwilioProvider::new(
                    cfg.twilio.clone(),
                    client.clone(),
                ))),
                "vonage" => Some(Arc::new(VonageProvider::new(
                    cfg.vonage.clone(),
                    client.clone(),
                ))),
                "webhook" => Some(Arc::new(WebhookProvider::new(
                    cfg.webhook.clone(),
                    client.clone(),
                ))),
                "console" => Some(Arc::new(ConsoleProvider::new(inbox.clone()))),
                _ => None,
            }
        })
        .collect()
}
