//! The JSON shapes of the ceremony API: what a client sends ([`EnrollmentRequest`],
//! [`AssertionRequest`]) and the checks on its text fields, and what it gets back
//! ([`CeremonyView`], [`ErrorView`], [`CredentialView`]). Each derives its OpenAPI schema
//! (`utoipa::ToSchema`); the `#[schema]` attributes state the limits the ceremony service
//! enforces, so that the document served at `/openapi.json` says what the server checks.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::{EnrollTarget, UserVerification};
use crate::store::CredentialRecord;

use super::client::b64;
use super::error::CeremonyError;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
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

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
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

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ErrorView {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries_left: Option<u32>,
    /// `entra_throttled`: seconds until Microsoft Entra ID takes requests again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// `entra_rejected`: Microsoft Entra ID's own reason, as Graph worded it (English).
    /// `attestation_rejected`: the policy's reason (`untrusted`, `blocked`, `not_allowed`,
    /// `revoked`, `compromised`, `uv_bypass`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<&CeremonyError> for ErrorView {
    fn from(e: &CeremonyError) -> Self {
        ErrorView {
            code: e.code().to_string(),
            message: e.public_message(),
            retries_left: e.retries_left(),
            retry_after: e.retry_after(),
            reason: e.reason(),
        }
    }
}

/// An Entra enrollment's registration window, once Graph issued its challenge: the kiosk shows
/// the countdown. The ceremony ends by `challenge_expires_at` at the latest.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct EntraWindow {
    /// The user principal name the key is registered for.
    pub upn: String,
    #[serde(with = "time::serde::rfc3339")]
    pub challenge_expires_at: OffsetDateTime,
}

/// What clients see of a ceremony.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
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
    /// `succeeded`: what the ceremony produced.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<CeremonyResult>)]
    pub result: Option<serde_json::Value>,
    /// An Entra enrollment, once Microsoft issued its challenge: the registration window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entra: Option<EntraWindow>,
}

/// The `result` of a succeeded ceremony (documentation of the shapes `enroll` and `assert`
/// build): an enrollment's credential, or a verified assertion.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum CeremonyResult {
    Enrollment(EnrollmentResult),
    Assertion(AssertionResult),
    EntraEnrollment(EntraEnrollmentResult),
    EntraAssertion(EntraAssertionResult),
}

/// The passkey as Microsoft Entra ID registered it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EntraMethodView {
    /// Graph's fido2AuthenticationMethod id.
    pub method_id: String,
    pub display_name: String,
    pub model: Option<String>,
    /// `attested`, `notAttested`, ... as Graph reports it.
    pub attestation_level: Option<String>,
}

/// The key's credential as keygate recorded it (an Entra passkey).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EntraCredentialView {
    /// The credential id, base64url without padding.
    pub id: String,
    pub aaguid: Option<uuid::Uuid>,
    pub rp_id: String,
    pub counter: u32,
    pub user_verified: bool,
    /// The credProtect level the key reported (1 = userVerificationOptional).
    pub cred_protect: Option<u8>,
    pub hmac_secret: bool,
}

/// `target: "entra"` enrollment result.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EntraEnrollmentResult {
    pub entra: EntraMethodView,
    pub credential: EntraCredentialView,
    pub upn: String,
    /// The WebAuthn RegistrationResponseJSON keygate posted to Graph.
    #[schema(value_type = Object)]
    pub registration_response: serde_json::Value,
}

/// The Entra passkey a verified key belongs to.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EntraOwnerView {
    pub method_id: String,
    pub display_name: String,
    pub upn: String,
}

/// `target: "entra"` assertion result: whose Entra passkey this key holds (verified locally
/// against the public key recorded at enrollment).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EntraAssertionResult {
    pub user: String,
    pub entra: EntraOwnerView,
    pub credential_id: String,
    pub counter: u32,
    pub user_verified: bool,
    #[schema(format = DateTime)]
    pub enrolled_at: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnrollmentResult {
    pub credential: CredentialView,
    /// The WebAuthn RegistrationResponseJSON the key's answer amounts to.
    #[schema(value_type = Object)]
    pub registration_response: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AssertionResult {
    pub user: String,
    pub credential_id: String,
    pub counter: u32,
    pub user_verified: bool,
    pub nickname: Option<String>,
    #[schema(format = DateTime)]
    pub enrolled_at: String,
    /// The WebAuthn AuthenticationResponseJSON the key's answer amounts to.
    #[schema(value_type = Object)]
    pub authentication_response: serde_json::Value,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentRequest {
    #[schema(pattern = "^(?!\\.\\.?$)[A-Za-z0-9._@+-]{1,128}$")]
    pub user: String,
    #[schema(
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]*[^\s\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069][^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub display_name: String,
    #[serde(default)]
    #[schema(
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]*[^\s\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069][^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]*$"
    )]
    pub nickname: Option<String>,
    #[serde(default)]
    pub discoverable: Option<bool>,
    #[serde(default)]
    pub user_verification: Option<UserVerification>,
    /// The key's PIN: 4 or more characters, at most 63 bytes of UTF-8 (CTAP 2.1).
    #[serde(default)]
    #[schema(min_length = 4, max_length = 63)]
    pub pin: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    /// Milliseconds; the maximum is the daemon's `ceremony.max_timeout_ms`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 600000)]
    pub timeout_ms: Option<u64>,
    /// Where the key is registered: `local` (default, keygate's relying party) or `entra`
    /// (the user's Microsoft Entra ID account; needs `[entra]`, a PIN and a discoverable
    /// credential: `nickname`, `discoverable: false` and `user_verification: "preferred"` are
    /// refused).
    #[serde(default)]
    pub target: Option<EnrollTarget>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssertionRequest {
    /// Absent or null: a user-less ("test my key") assertion with a discoverable credential.
    #[serde(default)]
    #[schema(pattern = "^(?!\\.\\.?$)[A-Za-z0-9._@+-]{1,128}$")]
    pub user: Option<String>,
    #[serde(default)]
    pub user_verification: Option<UserVerification>,
    /// The key's PIN: 4 or more characters, at most 63 bytes of UTF-8 (CTAP 2.1).
    #[serde(default)]
    #[schema(min_length = 4, max_length = 63)]
    pub pin: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    /// Milliseconds; the maximum is the daemon's `ceremony.max_timeout_ms`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 600000)]
    pub timeout_ms: Option<u64>,
    /// `entra`: whose Entra passkey the key holds (a PIN is required; with `user`, only that
    /// user's Entra passkeys). Default `local`.
    #[serde(default)]
    pub target: Option<EnrollTarget>,
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

/// The API representation of a stored credential.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CredentialView {
    /// The credential id, base64url without padding.
    pub id: String,
    pub user: String,
    pub nickname: Option<String>,
    pub aaguid: Option<uuid::Uuid>,
    pub model: Option<String>,
    pub attestation_format: String,
    pub attested: bool,
    pub discoverable: bool,
    pub user_verified: bool,
    pub counter: u32,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
    pub state: crate::store::CredentialState,
    pub state_reason: Option<String>,
    /// The COSE public key, base64url (single-credential admin view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key_cose: Option<String>,
}

impl CredentialView {
    /// `with_public_key` adds the COSE key (admin).
    pub fn new(r: &CredentialRecord, with_public_key: bool) -> CredentialView {
        CredentialView {
            id: b64(&r.id),
            user: r.user.clone(),
            nickname: r.nickname.clone(),
            aaguid: r.aaguid,
            model: r.model.clone(),
            attestation_format: r.attestation_format.clone(),
            attested: r.attested,
            discoverable: r.discoverable,
            user_verified: r.user_verified,
            counter: r.counter,
            created_at: time_json(r.created_at),
            last_used_at: r.last_used_at.map(time_json),
            state: r.state,
            state_reason: r.state_reason.clone(),
            public_key_cose: with_public_key.then(|| b64(&r.public_key_cose)),
        }
    }
}

/// [`CredentialView`] as JSON.
pub fn credential_json(r: &CredentialRecord, with_public_key: bool) -> serde_json::Value {
    serde_json::to_value(CredentialView::new(r, with_public_key))
        .expect("a credential view serialises")
}
