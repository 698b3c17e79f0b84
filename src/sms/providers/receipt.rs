//! The inbound half of the providers: what every delivery callback shares. A provider file
//! turns its callback (headers and raw body, signature included) into a [`DeliveryReport`] or
//! a typed [`ReceiptError`]; `Ok(None)` is an authentic callback that carries no status
//! keygate acts on (acknowledged, nothing changes).

use axum::http::HeaderMap;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::base::error::{ErrorCode, PublicError};

/// keygate's delivery status of a message, as a challenge shows it (`delivery.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Sent,
    Delivered,
    Failed,
    Undeliverable,
}

impl DeliveryStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Undeliverable => "undeliverable",
        }
    }
}

/// An authenticated delivery callback: which message (the provider's id for it, as its send
/// answered) reached which status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub message_id: String,
    pub status: DeliveryStatus,
}

/// Why a delivery callback is refused. Contract: the signature is checked before anything in
/// the body is believed, so only [`ReceiptError::NotJson`] and [`ReceiptError::NotAnObject`]
/// (for providers that sign parsed parameters) can come before [`ReceiptError::BadSignature`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// No provider of that name.
    #[error("no such resource")]
    UnknownProvider,
    /// The provider takes no callbacks under this configuration (Twilio without a
    /// `status_callback_url`, whose exact URL its signature covers).
    #[error("no such resource")]
    NotConfigured,
    /// Missing, wrong, or nothing to check it against (no secret configured).
    #[error("missing or wrong signature")]
    BadSignature,
    #[error("the body is not JSON")]
    NotJson,
    #[error("the body is not a JSON object")]
    NotAnObject,
    /// A required parameter, named as the provider spells it.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// A status the provider's protocol does not have.
    #[error("{0}")]
    BadStatus(&'static str),
}

impl PublicError for ReceiptError {
    fn code(&self) -> ErrorCode {
        match self {
            ReceiptError::UnknownProvider | ReceiptError::NotConfigured => ErrorCode::NotFound,
            ReceiptError::BadSignature => ErrorCode::Unauthorized,
            ReceiptError::NotJson
            | ReceiptError::NotAnObject
            | ReceiptError::Missing(_)
            | ReceiptError::BadStatus(_) => ErrorCode::InvalidRequest,
        }
    }
}

/// Constant-time comparison of a received signature with the expected one.
pub(super) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A header's value, or `""` when it is absent or not visible ASCII.
pub(super) fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The first parameter of that name.
pub(super) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Form fields of an `application/x-www-form-urlencoded` body.
pub(super) fn form_params(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// A callback's parameters: a JSON object (strings kept, other values as JSON text) when the
/// content type says JSON, form fields otherwise.
pub(super) fn callback_params(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<(String, String)>, ReceiptError> {
    let json = header(headers, "content-type")
        .trim_start()
        .starts_with("application/json");
    if !json {
        return Ok(form_params(body));
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| ReceiptError::NotJson)?;
    let obj = v.as_object().ok_or(ReceiptError::NotAnObject)?;
    Ok(obj
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect())
}
