//! The JSON shapes of the ceremony API: what a client sends ([`EnrollmentRequest`],
//! [`AssertionRequest`]) and the checks on its text fields, and what it gets back
//! ([`CeremonyView`], [`ErrorView`], [`credential_json`]).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::UserVerification;
use crate::store::CredentialRecord;

use super::client::b64;
use super::error::CeremonyError;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Enrollment,
    Assertion,
}

impl Kind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::Enrollment => "enrollment",
            Kind::Assertion => "assertion",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    WaitingTouch,
    NeedsPin,
    Processing,
    Succeeded,
    Failed,
    Cancelled,
}

impl State {
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Succeeded | State::Failed | State::Cancelled)
    }
    /// Terminal, or waiting for the client (long-polls return here).
    pub fn needs_client_or_done(self) -> bool {
        self.is_terminal() || self == State::NeedsPin
    }
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::WaitingTouch => "waiting_touch",
            State::NeedsPin => "needs_pin",
            State::Processing => "processing",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }
    pub(super) fn parse(s: &str) -> State {
        match s {
            "pending" => State::Pending,
            "waiting_touch" => State::WaitingTouch,
            "needs_pin" => State::NeedsPin,
            "processing" => State::Processing,
            "succeeded" => State::Succeeded,
            "cancelled" => State::Cancelled,
            _ => State::Failed,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorView {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries_left: Option<u32>,
}

impl From<&CeremonyError> for ErrorView {
    fn from(e: &CeremonyError) -> Self {
        ErrorView {
            code: e.code().to_string(),
            message: e.public_message(),
            retries_left: e.retries_left(),
        }
    }
}

/// What clients see of a ceremony.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CeremonyView {
    pub id: String,
    pub kind: Kind,
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// While `needs_pin`: PIN retries left on the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_retries: Option<u32>,
    /// `failed`/`cancelled`: why. `needs_pin` after a wrong PIN: the `pin_invalid` error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentRequest {
    pub user: String,
    pub display_name: String,
    #[serde(default)]
    pub nickname: Option<String>,
    #[serde(default)]
    pub discoverable: Option<bool>,
    #[serde(default)]
    pub user_verification: Option<UserVerification>,
    #[serde(default)]
    pub pin: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionRequest {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub user_verification: Option<UserVerification>,
    #[serde(default)]
    pub pin: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The one user-name rule ([`crate::base::user`]).
pub fn validate_user_name(u: &str) -> Result<(), CeremonyError> {
    crate::base::user::UserName::parse(u)
        .map(|_| ())
        .map_err(|e| CeremonyError::InvalidRequest(e.to_string()))
}

pub(super) fn validate_text(field: &str, v: &str, max: usize) -> Result<(), CeremonyError> {
    crate::base::text::check_text(v, max)
        .map_err(|_| CeremonyError::InvalidRequest(crate::base::text::text_message(field, max)))
}

pub fn time_json(t: OffsetDateTime) -> String {
    crate::store::fmt_time(t)
}

/// The API representation of a stored credential. `with_public_key` adds the COSE key (admin).
pub fn credential_json(r: &CredentialRecord, with_public_key: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": b64(&r.id),
        "user": r.user,
        "nickname": r.nickname,
        "aaguid": r.aaguid,
        "model": r.model,
        "attestation_format": r.attestation_format,
        "attested": r.attested,
        "discoverable": r.discoverable,
        "user_verified": r.user_verified,
        "counter": r.counter,
        "created_at": time_json(r.created_at),
        "last_used_at": r.last_used_at.map(time_json),
        "state": r.state,
        "state_reason": r.state_reason,
    });
    if with_public_key {
        v["public_key_cose"] = serde_json::Value::String(b64(&r.public_key_cose));
    }
    v
}
