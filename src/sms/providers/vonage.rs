//! Vonage (Nexmo) SMS API: `POST /sms/json`, form-encoded with api_key/api_secret. It answers
//! 200 with a per-message status: "0" is success, "1" throttled (transient), others rejections.
//! Inbound: delivery receipts (DLRs), as form fields or JSON, signed with `sig` (the "SHA-256
//! HMAC" method) when the account asks for it.

use axum::http::HeaderMap;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};

use super::receipt::{callback_params, param, same};
use super::{
    checked_body, transport_error, DeliveryReport, DeliveryStatus, OutgoingSms, ProviderError,
    ReceiptError, SendReceipt, SmsProvider,
};
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

/// Vonage's `sig` on a signed webhook (such as a delivery receipt) for the "SHA-256 HMAC"
/// signing method: every parameter except `sig`, sorted by name, joined as `&name=value` with
/// `&` and `=` inside values replaced by `_`, HMAC-SHA256 keyed with the account's signature
/// secret, upper-case hex.
pub fn vonage_signature(signature_secret: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().filter(|(k, _)| k != "sig").collect();
    sorted.sort();
    let mut data = String::new();
    for (k, v) in sorted {
        data.push('&');
        data.push_str(k);
        data.push('=');
        data.push_str(&v.replace(['&', '='], "_"));
    }
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(signature_secret.as_bytes())
        .expect("any key length");
    mac.update(data.as_bytes());
    hex::encode_upper(mac.finalize().into_bytes())
}

/// Vonage's delivery receipt status -> keygate's delivery status; `None` for `unknown` (says
/// nothing new) and any status Vonage adds later.
fn vonage_status(s: &str) -> Option<DeliveryStatus> {
    Some(match s {
        "accepted" | "buffered" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        "failed" => DeliveryStatus::Failed,
        "expired" | "rejected" => DeliveryStatus::Undeliverable,
        _ => return None,
    })
}

/// A delivery receipt. Vonage signs webhooks only when the account asks for it: without a
/// configured signature secret no receipt can be authenticated, so none is accepted. An
/// authentic receipt with a status keygate does not act on is `Ok(None)` (acknowledged).
pub(super) fn receipt(
    cfg: &VonageConfig,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<DeliveryReport>, ReceiptError> {
    let secret = &cfg.signature_secret;
    let params = callback_params(headers, body)?;
    let expected = vonage_signature(secret.expose(), &params);
    let sig = param(&params, "sig").unwrap_or("").to_ascii_uppercase();
    if secret.is_empty() || !same(&sig, &expected) {
        return Err(ReceiptError::BadSignature);
    }
    let id = param(&params, "messageId").ok_or(ReceiptError::Missing("messageId"))?;
    let status = param(&params, "status").ok_or(ReceiptError::Missing("status"))?;
    Ok(vonage_status(status).map(|status| DeliveryReport {
        message_id: id.to_string(),
        status,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_covers_sorted_parameters_but_sig() {
        let p = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let a = vonage_signature("s", &p(&[("status", "delivered"), ("messageId", "V1")]));
        let b = vonage_signature(
            "s",
            &p(&[
                ("messageId", "V1"),
                ("sig", "whatever"),
                ("status", "delivered"),
            ]),
        );
        assert_eq!(a, b, "order and `sig` itself do not matter");
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(b"s").unwrap();
        mac.update(b"&messageId=V1&status=delivered");
        assert_eq!(a, hex::encode_upper(mac.finalize().into_bytes()));
        // '&' and '=' inside values are replaced, so they cannot forge other parameters.
        assert_eq!(
            vonage_signature("s", &p(&[("a", "1&b=2")])),
            vonage_signature("s", &p(&[("a", "1_b_2")]))
        );
        assert_ne!(
            a,
            vonage_signature("t", &p(&[("messageId", "V1"), ("status", "delivered")]))
        );
    }
}
