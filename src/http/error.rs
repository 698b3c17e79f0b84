//! One error type for the HTTP layer, mapped to `{"error": {"code", "message", ...}}` with a
//! stable code and a status. Internal details are logged here and never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

pub use crate::base::error::{ErrorCode, PublicError};

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Extra members of the error object (e.g. `retries_left`, `devices`, `retry_after`).
    pub extra: serde_json::Map<String, Value>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            extra: Default::default(),
        }
    }
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }
    pub fn not_found() -> Self {
        Self::new(ErrorCode::NotFound, "no such resource")
    }
    pub fn unauthorized() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            "a valid `Authorization: Bearer <token>` header is required",
        )
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn too_large() -> Self {
        Self::new(ErrorCode::PayloadTooLarge, "the request body is too large")
    }
    /// Log the detail, answer `internal`.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(detail = %detail, "internal error");
        Self::new(ErrorCode::Internal, "internal error; see the keygate log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("code".into(), json!(self.code.as_str()));
        body.insert("message".into(), json!(self.message));
        body.extend(self.extra);
        (self.code.status(), Json(json!({ "error": body }))).into_response()
    }
}

/// Every layer's error becomes an answer the same way: its code (and so its status), its
/// public message and its details; internal detail is logged, never sent.
impl<E: PublicError> From<E> for ApiError {
    fn from(e: E) -> Self {
        let code = e.code();
        match code {
            ErrorCode::Internal => return ApiError::internal(&e),
            // The store logs a storage-full episode once (`storage_full`), not per request.
            ErrorCode::StoreUnavailable => tracing::debug!(detail = %e, "store unavailable"),
            ErrorCode::DeviceError => tracing::warn!(detail = %e, "device error"),
            _ => {}
        }
        let mut err = ApiError::new(code, e.public_message());
        for (k, v) in e.details() {
            err = err.with(k, v);
        }
        err
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The outermost layer's guarantee: every 4xx keygate answers is `{"error":{"code","message"}}`.
/// Handlers and keygate's extractors already answer so; this catches what axum or a foreign
/// extractor answers in plain text (a rejection keygate does not wrap yet), keeping its text
/// as the message (extractor rejections describe the request, never internals).
pub async fn envelope_rejections(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !status.is_client_error() || is_json(res.headers()) {
        return res;
    }
    let code = match status {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        _ => ErrorCode::InvalidRequest,
    };
    let text = axum::body::to_bytes(res.into_body(), 4096)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "the request was not understood".into());
    ApiError::new(code, text).into_response()
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"))
}
