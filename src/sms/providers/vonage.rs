//! Vonage (Nexmo) SMS API: `POST /sms/json`, form-encoded with api_key/api_secret. It answers
//! 200 with a per-message status: "0" is success, "1" throttled (transient), others rejections.

use futures::future::BoxFuture;

use super::{checked_body, transport_error, OutgoingSms, ProviderError, SendReceipt, SmsProvider};
use crate::config::VonageConfig;

pub struct VonageProvider {
    cfg: VonageConfig,
    client: reqwest::Client,
}

impl VonageProvider {
    pub fn new(cfg: VonageConfig, client: reqwest::Client) -> Self {
        VonageProvider { cfg, client }
    }
}

impl SmsProvider for VonageProvider {
    fn name(&self) -> &'static str {
        "vonage"
    }

    fn send<'a>(
        &'a self,
        msg: &'a OutgoingSms,
    ) -> BoxFuture<'a, Result<SendReceipt, ProviderError>> {
        Box::pin(async move {
            let url = format!("{}/sms/json", self.cfg.base_url.trim_end_matches('/'));
            // Vonage wants the number without the leading '+'.
            let to = msg.to.trim_start_matches('+');
            let form = [
                ("api_key", self.cfg.api_key.as_str()),
                ("api_secret", self.cfg.api_secret.expose()),
                ("from", self.cfg.from.as_str()),
                ("to", to),
                ("text", msg.text.as_str()),
                ("client-ref", msg.id.as_str()),
            ];
            let resp = self
                .client
                .post(url)
                .form(&form)
                .send()
                .await
                .map_err(transport_error)?;
            let body = checked_body(resp).await?;
            let v: serde_json::Value =
                serde_json::from_str(&body).map_err(|_| ProviderError::Transient {
                    detail: "vonage: unreadable answer".into(),
                    retry_after: None,
                })?;
            let first = &v["messages"][0];
            match first["status"].as_str() {
                Some("0") => Ok(SendReceipt {
                    provider_message_id: first["message-id"].as_str().map(str::to_string),
                }),
                Some("1") => Err(ProviderError::Transient {
                    detail: "vonage: throttled".into(),
                    retry_after: None,
                }),
                other => Err(ProviderError::Rejected(format!(
                    "vonage status {}: {}",
                    other.unwrap_or("?"),
                    first["error-text"].as_str().unwrap_or("")
                ))),
            }
        })
    }
}
