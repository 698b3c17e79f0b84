//! Twilio Programmable Messaging: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`,
//! form-encoded, HTTP basic auth (AccountSid, AuthToken), `MessagingServiceSid` or `From`.
//! Inbound: status callbacks, form-encoded to `status_callback_url`, signed with
//! `X-Twilio-Signature` over that exact URL and every form parameter.

use axum::http::HeaderMap;
use base64::Engine;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};

use super::receipt::{form_params, header, param, same};
use super::{
    checked_body, transport_error, DeliveryReport, DeliveryStatus, OutgoingSms, ProviderError,
    ReceiptError, SendReceipt, SmsProvider,
};
use crate::config::TwilioConfig;

pub struct TwilioProvider {
    cfg: TwilioConfig,
    client: reqwest::Client,
}

impl TwilioProvider {
    pub fn new(cfg: TwilioConfig, client: reqwest::Client) -> Self {
        TwilioProvider { cfg, client }
    }
}

impl SmsProvider for TwilioProvider {
    fn name(&self) -> &'static str {
        "twilio"
    }

    fn send<'a>(
        &'a self,
        msg: &'a OutgoingSms,
    ) -> BoxFuture<'a, Result<SendReceipt, ProviderError>> {
        Box::pin(async move {
            let url = format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                self.cfg.base_url.trim_end_matches('/'),
                self.cfg.account_sid
            );
            let mut form: Vec<(&str, &str)> = vec![("To", &msg.to), ("Body", &msg.text)];
            match (&self.cfg.messaging_service_sid, &self.cfg.from) {
                (Some(sid), _) => form.push(("MessagingServiceSid", sid)),
                (None, Some(from)) => form.push(("From", from)),
                (None, None) => {
                    return Err(ProviderError::Rejected(
                        "twilio: neither messaging_service_sid nor from is configured".into(),
                    ))
                }
            }
            if let Some(cb) = &self.cfg.status_callback_url {
                form.push(("StatusCallback", cb));
            }
            let resp = self
                .client
                .post(url)
                .basic_auth(&self.cfg.account_sid, Some(self.cfg.auth_token.expose()))
                .form(&form)
                .send()
                .await
                .map_err(transport_error)?;
            let body = checked_body(resp).await?;
            let sid = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["sid"].as_str().map(str::to_string));
            Ok(SendReceipt {
                provider_message_id: sid,
            })
        })
    }
}

/// X-Twilio-Signature: base64(HMAC-SHA1(auth_token, url + every POST parameter's name and
/// value, sorted by name)).
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac =
        <Hmac<sha1::Sha1> as Mac>::new_from_slice(auth_token.as_bytes()).expect("any key length");
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Twilio's MessageStatus -> keygate's delivery status; `None` for a status keygate does not
/// act on: `partially_delivered` (RCS/WhatsApp), `receiving`/`received` (inbound messages)
/// and any status Twilio adds later.
fn twilio_status(s: &str) -> Option<DeliveryStatus> {
    Some(match s {
        "accepted" | "queued" | "sending" | "sent" | "scheduled" => DeliveryStatus::Sent,
        "delivered" | "read" => DeliveryStatus::Delivered,
        "failed" | "canceled" => DeliveryStatus::Failed,
        "undelivered" => DeliveryStatus::Undeliverable,
        _ => return None,
    })
}

/// A status callback. Refused unless `status_callback_url` and the auth token are configured
/// and the signature over both matches. An authentic callback with a status keygate does not
/// act on is `Ok(None)`: acknowledged, since Twilio counts any non-2xx as a failed webhook.
pub(super) fn receipt(
    cfg: &TwilioConfig,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<DeliveryReport>, ReceiptError> {
    let url = cfg
        .status_callback_url
        .as_deref()
        .ok_or(ReceiptError::NotConfigured)?;
    let params = form_params(body);
    let expected = twilio_signature(cfg.auth_token.expose(), url, &params);
    if cfg.auth_token.is_empty() || !same(header(headers, "x-twilio-signature"), &expected) {
        return Err(ReceiptError::BadSignature);
    }
    let sid = param(&params, "MessageSid").ok_or(ReceiptError::Missing("MessageSid"))?;
    let status = param(&params, "MessageStatus").ok_or(ReceiptError::Missing("MessageStatus"))?;
    Ok(twilio_status(status).map(|status| DeliveryReport {
        message_id: sid.to_string(),
        status,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_twilios_documented_example() {
        // From Twilio's "Webhooks security" documentation.
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            twilio_signature(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }
}
