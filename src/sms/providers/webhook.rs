//! Generic webhook: `POST <url>` with a JSON body from a template, signed with
//! `X-Keygate-Signature: sha256=<hex HMAC-SHA256(secret, body)>`, and `Idempotency-Key: <id>`
//! so that a message re-sent after a crash can be recognised by the receiver. Inbound: delivery
//! reports `{"id", "status"}` signed the same way over the raw body.

use axum::http::HeaderMap;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::receipt::{header, same};
use super::{
    checked_body, transport_error, DeliveryReport, DeliveryStatus, OutgoingSms, ProviderError,
    ReceiptError, SendReceipt, SmsProvider,
};
use crate::config::WebhookConfig;

pub struct WebhookProvider {
    cfg: WebhookConfig,
    client: reqwest::Client,
}

impl WebhookProvider {
    pub fn new(cfg: WebhookConfig, client: reqwest::Client) -> Self {
        WebhookProvider { cfg, client }
    }

    /// The body template with `{{to}}`, `{{text}}`, `{{id}}` replaced by JSON-escaped values.
    pub fn body(&self, msg: &OutgoingSms) -> String {
        let esc = |s: &str| {
            let quoted = serde_json::to_string(s).unwrap_or_default();
            quoted[1..quoted.len() - 1].to_string()
        };
        self.cfg
            .body_template
            .replace("{{to}}", &esc(&msg.to))
            .replace("{{text}}", &esc(&msg.text))
            .replace("{{id}}", &esc(&msg.id))
    }
}

pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl SmsProvider for WebhookProvider {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(
        &'a self,
        msg: &'a OutgoingSms,
    ) -> BoxFuture<'a, Result<SendReceipt, ProviderError>> {
        Box::pin(async move {
            let body = self.body(msg);
            let resp = self
                .client
                .post(&self.cfg.url)
                .header("content-type", "application/json")
                .header("idempotency-key", &msg.id)
                .header(
                    "x-keygate-signature",
                    webhook_signature(self.cfg.secret.expose(), body.as_bytes()),
                )
                .body(body)
                .send()
                .await
                .map_err(transport_error)?;
            let text = checked_body(resp).await?;
            let id = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_string))
                .or_else(|| Some(msg.id.clone()));
            Ok(SendReceipt {
                provider_message_id: id,
            })
        })
    }
}

/// A delivery report: `status` is keygate's own vocabulary (sent, delivered, failed,
/// undeliverable), checked strictly since the receiver is written for keygate.
pub(super) fn receipt(
    cfg: &WebhookConfig,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<DeliveryReport>, ReceiptError> {
    let secret = &cfg.secret;
    let expected = webhook_signature(secret.expose(), body);
    if secret.is_empty() || !same(header(headers, "x-keygate-signature"), &expected) {
        return Err(ReceiptError::BadSignature);
    }
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| ReceiptError::NotJson)?;
    let id = v["id"].as_str().ok_or(ReceiptError::Missing("`id`"))?;
    let status = match v["status"].as_str() {
        Some("sent") => DeliveryStatus::Sent,
        Some("delivered") => DeliveryStatus::Delivered,
        Some("failed") => DeliveryStatus::Failed,
        Some("undeliverable") => DeliveryStatus::Undeliverable,
        _ => {
            return Err(ReceiptError::BadStatus(
                "`status` must be sent, delivered, failed or undeliverable",
            ))
        }
    };
    Ok(Some(DeliveryReport {
        message_id: id.to_string(),
        status,
    }))
}
