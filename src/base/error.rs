//! The error contract of every layer: each layer's error enum implements [`PublicError`],
//! mapping each of its variants to one [`ErrorCode`]; the code carries its HTTP status. A code
//! is an enum variant, not a string, so a typo is a compile error instead of a silent 500.

use axum::http::StatusCode;
use serde_json::Value;

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal => $status:ident,)*) => {
        /// Every stable error code keygate answers with (`{"error":{"code":...}}`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// All codes, for documentation and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The stable code as clients see it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The HTTP status every answer with this code carries.
            pub const fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)*
                }
            }
        }
    };
}

error_codes! {
    // Requests
    InvalidRequest = "invalid_request" => BAD_REQUEST,
    PayloadTooLarge = "payload_too_large" => PAYLOAD_TOO_LARGE,
    UnsupportedMediaType = "unsupported_media_type" => UNSUPPORTED_MEDIA_TYPE,
    MethodNotAllowed = "method_not_allowed" => METHOD_NOT_ALLOWED,
    NotFound = "not_found" => NOT_FOUND,
    Conflict = "conflict" => CONFLICT,
    IdempotencyConflict = "idempotency_conflict" => CONFLICT,
    // Callers
    Unauthorized = "unauthorized" => UNAUTHORIZED,
    Forbidden = "forbidden" => FORBIDDEN,
    HostNotAllowed = "host_not_allowed" => FORBIDDEN,
    OriginNotAllowed = "origin_not_allowed" => FORBIDDEN,
    HandoffInvalid = "handoff_invalid" => FORBIDDEN,
    TooManyConnections = "too_many_connections" => SERVICE_UNAVAILABLE,
    TooManyStreams = "too_many_streams" => TOO_MANY_REQUESTS,
    // Keys and ceremonies
    NoDevice = "no_device" => CONFLICT,
    MultipleDevices = "multiple_devices" => CONFLICT,
    DeviceBusy = "device_busy" => CONFLICT,
    DeviceRemoved = "device_removed" => CONFLICT,
    Cancelled = "cancelled" => CONFLICT,
    CredentialExcluded = "credential_excluded" => CONFLICT,
    PinNotSet = "pin_not_set" => CONFLICT,
    PinAlreadySet = "pin_already_set" => CONFLICT,
    NotWaitingForPin = "not_waiting_for_pin" => CONFLICT,
    CeremonyEnded = "ceremony_ended" => CONFLICT,
    KeyStoreFull = "key_store_full" => CONFLICT,
    TouchTimeout = "touch_timeout" => REQUEST_TIMEOUT,
    OperationDenied = "operation_denied" => FORBIDDEN,
    PossibleClonedKey = "possible_cloned_key" => FORBIDDEN,
    CredentialQuarantined = "credential_quarantined" => FORBIDDEN,
    UnknownCredential = "unknown_credential" => NOT_FOUND,
    CeremonyExpired = "ceremony_expired" => GONE,
    CeremonyInterrupted = "ceremony_interrupted" => GONE,
    PinRequired = "pin_required" => PRECONDITION_REQUIRED,
    PinBlocked = "pin_blocked" => LOCKED,
    PinAuthBlocked = "pin_auth_blocked" => LOCKED,
    PinInvalid = "pin_invalid" => UNPROCESSABLE_ENTITY,
    PinPolicyViolation = "pin_policy_violation" => UNPROCESSABLE_ENTITY,
    UvUnsupported = "uv_unsupported" => UNPROCESSABLE_ENTITY,
    NoCredentials = "no_credentials" => UNPROCESSABLE_ENTITY,
    /// The key's attestation was refused: by `[attestation]` in `enforce` (with a `reason`:
    /// `untrusted`, `blocked`, `not_allowed`, `revoked`, `compromised`, `uv_bypass`) or by
    /// `require_trusted_attestation`. 422 like the other verification failures.
    AttestationRejected = "attestation_rejected" => UNPROCESSABLE_ENTITY,
    VerificationFailed = "verification_failed" => UNPROCESSABLE_ENTITY,
    DiscoverableUnsupported = "discoverable_unsupported" => UNPROCESSABLE_ENTITY,
    DeviceError = "device_error" => BAD_GATEWAY,
    // SMS
    WrongCode = "wrong_code" => UNPROCESSABLE_ENTITY,
    InvalidPhoneNumber = "invalid_phone_number" => UNPROCESSABLE_ENTITY,
    CountryNotAllowed = "country_not_allowed" => UNPROCESSABLE_ENTITY,
    NotAMobileNumber = "not_a_mobile_number" => UNPROCESSABLE_ENTITY,
    UserLocked = "user_locked" => TOO_MANY_REQUESTS,
    ResendTooSoon = "resend_too_soon" => TOO_MANY_REQUESTS,
    ResendLimit = "resend_limit" => TOO_MANY_REQUESTS,
    RateLimited = "rate_limited" => TOO_MANY_REQUESTS,
    ChallengeExpired = "challenge_expired" => GONE,
    ChallengeFailed = "challenge_failed" => GONE,
    ChallengeCancelled = "challenge_cancelled" => GONE,
    ChallengeUsed = "challenge_used" => CONFLICT,
    PhoneNotVerified = "phone_not_verified" => CONFLICT,
    ProviderUnavailable = "provider_unavailable" => SERVICE_UNAVAILABLE,
    /// The number's prefix is blocked by the fraud guard (`[sms.fraud]`): too many messages
    /// that were never verified. 429 like the other send limits: it names this traffic, and
    /// `retry_after` tells when the block ends.
    FraudSuspected = "fraud_suspected" => TOO_MANY_REQUESTS,
    /// The monthly message cap is reached. 503, not 429: no caller sent too much, SMS is out
    /// of service for everyone until the month turns (`retry_after`) or the cap is raised.
    BudgetExhausted = "budget_exhausted" => SERVICE_UNAVAILABLE,
    /// A factory reset reached the key after its power-up window (CTAP 2.1 §6.6: ~10 s, 5 s
    /// on older YubiKeys): unplug and replug the key, then reset at once.
    ResetWindowMissed = "reset_window_missed" => CONFLICT,
    /// `PATCH /v1/keys/{id}` names a state an admin cannot set (only `lost`: the others
    /// follow from what happens to the key).
    KeyStateNotSettable = "key_state_not_settable" => BAD_REQUEST,
    // Microsoft Entra ID (Graph), the upstream directory
    /// `[entra]` is not configured on this daemon.
    EntraNotConfigured = "entra_not_configured" => NOT_IMPLEMENTED,
    /// The identity platform refused keygate's client credentials.
    EntraAuthFailed = "entra_auth_failed" => BAD_GATEWAY,
    /// Graph answered 403: an application permission is missing or a policy forbids it.
    EntraForbidden = "entra_forbidden" => BAD_GATEWAY,
    EntraUserNotFound = "entra_user_not_found" => NOT_FOUND,
    /// Graph refused the registration (400): attestation enforcement, AAGUID restriction...
    EntraRejected = "entra_rejected" => UNPROCESSABLE_ENTITY,
    /// The 5-minute window of Entra's creationOptions challenge closed.
    EntraChallengeExpired = "entra_challenge_expired" => GONE,
    EntraThrottled = "entra_throttled" => TOO_MANY_REQUESTS,
    EntraUnavailable = "entra_unavailable" => SERVICE_UNAVAILABLE,
    /// The key lacks a feature the enrollment target needs (named in the message): for Entra
    /// a PIN, discoverable credentials, credProtect, hmac-secret, ES256.
    KeyUnsupported = "key_unsupported" => UNPROCESSABLE_ENTITY,
    // Accounts
    /// The user's account is closed (`POST /v1/users/{user}/close`): no enrollment, phone or
    /// SMS code until it is reopened.
    UserClosed = "user_closed" => CONFLICT,
    // The daemon itself
    StoreUnavailable = "store_unavailable" => SERVICE_UNAVAILABLE,
    Internal = "internal" => INTERNAL_SERVER_ERROR,
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a layer's error tells the outside world. Contract: [`public_message`] never carries
/// internal detail (paths, SQL, provider answers); the `Display` text may, and is only logged.
///
/// [`public_message`]: PublicError::public_message
pub trait PublicError: std::fmt::Display {
    fn code(&self) -> ErrorCode;

    /// Text safe to show a client.
    fn public_message(&self) -> String {
        self.to_string()
    }

    /// Extra members of the error object (`retries_left`, `attempts_left`, `retry_after`).
    fn details(&self) -> Vec<(&'static str, Value)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_only_internal_is_a_5xx_of_ours() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate code {c}");
            assert!(c
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
            if c.status().is_server_error() {
                assert!(
                    matches!(
                        c,
                        ErrorCode::Internal
                            | ErrorCode::DeviceError
                            | ErrorCode::ProviderUnavailable
                            | ErrorCode::BudgetExhausted
                            | ErrorCode::StoreUnavailable
                            | ErrorCode::TooManyConnections
                            | ErrorCode::EntraNotConfigured
                            | ErrorCode::EntraAuthFailed
                            | ErrorCode::EntraForbidden
                            | ErrorCode::EntraUnavailable
                    ),
                    "{c} is a 5xx"
                );
            }
        }
    }
}
