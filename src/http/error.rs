//! One error type for the HTTP layer, mapped to `{"error": {"code", "message", ...}}` with a
//! stable code and a status. Internal details are logged here and never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::ceremony::CeremonyError;
use crate::device::DeviceError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra members of the error object (e.g. `retries_left`, `devices`, `retry_after`).
    pub extra: serde_json::Map<String, Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Default::default(),
        }
    }
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <token>` header is required",
        )
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// Log the detail, answer `internal`.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(detail = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the keygate log",
        )
    }
}

/// HTTP status of each stable error code.
pub fn status_of(code: &str) -> StatusCode {
    match code {
        "invalid_request" => StatusCode::BAD_REQUEST,
        "invalid_phone_number" | "country_not_allowed" | "not_a_mobile_number" | "wrong_code" => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        "user_locked" | "resend_too_soon" | "resend_limit" | "rate_limited" => {
            StatusCode::TOO_MANY_REQUESTS
        }
        "challenge_expired" | "challenge_failed" | "challenge_cancelled" => StatusCode::GONE,
        "challenge_used" | "phone_not_verified" => StatusCode::CONFLICT,
        "provider_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "unauthorized" => StatusCode::UNAUTHORIZED,
        "forbidden" | "host_not_allowed" | "origin_not_allowed" => StatusCode::FORBIDDEN,
        "possible_cloned_key" | "credential_quarantined" | "operation_denied" => {
            StatusCode::FORBIDDEN
        }
        "not_found" | "unknown_credential" => StatusCode::NOT_FOUND,
        "touch_timeout" => StatusCode::REQUEST_TIMEOUT,
        "no_device"
        | "multiple_devices"
        | "device_busy"
        | "device_removed"
        | "cancelled"
        | "credential_excluded"
        | "pin_not_set"
        | "pin_already_set"
        | "not_waiting_for_pin"
        | "ceremony_ended"
        | "key_store_full"
        | "conflict" => StatusCode::CONFLICT,
        "ceremony_expired" | "ceremony_interrupted" => StatusCode::GONE,
        "payload_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "unsupported_media_type" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "pin_required" => StatusCode::PRECONDITION_REQUIRED,
        "pin_blocked" | "pin_auth_blocked" => StatusCode::LOCKED,
        "pin_invalid"
        | "pin_policy_violation"
        | "uv_unsupported"
        | "no_credentials"
        | "attestation_rejected"
        | "verification_failed"
        | "discoverable_unsupported" => StatusCode::UNPROCESSABLE_ENTITY,
        "device_error" => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("code".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        body.extend(self.extra);
        (self.status, Json(json!({ "error": body }))).into_response()
    }
}

impl From<CeremonyError> for ApiError {
    fn from(e: CeremonyError) -> Self {
        let code = e.code();
        if code == "internal" {
            return ApiError::internal(&e);
        }
        if code == "device_error" {
            tracing::warn!(detail = %e, "device error");
        }
        let mut err = ApiError::new(status_of(code), code, e.public_message());
        if let Some(r) = e.retries_left() {
            err = err.with("retries_left", r);
        }
        err
    }
}

impl From<DeviceError> for ApiError {
    fn from(e: DeviceError) -> Self {
        CeremonyError::from(e).into()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found(),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            other => ApiError::internal(other),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
