//! Errors of the Entra adapter: each maps to one stable API code.

use crate::base::error::{ErrorCode, PublicError};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EntraError {
    #[error("Microsoft Entra ID is not configured on this kiosk")]
    NotConfigured,
    /// The token endpoint refused the client (AADSTS code and text are logged, not shown).
    #[error("Microsoft Entra ID refused keygate's credentials: {0}")]
    AuthFailed(String),
    #[error("Microsoft Graph refused the operation (permission or policy): {0}")]
    Forbidden(String),
    #[error("the user does not exist in Microsoft Entra ID")]
    UserNotFound,
    /// Graph's own message, safe to show (e.g. "attestation enforcement ... AAGUID ...").
    #[error("Microsoft Entra ID rejected the registration: {0}")]
    Rejected(String),
    #[error("the Microsoft Entra ID registration window closed; start again")]
    ChallengeExpired,
    #[error("Microsoft Entra ID is throttling requests")]
    Throttled { retry_after_secs: Option<u64> },
    #[error("Microsoft Entra ID is unavailable: {0}")]
    Unavailable(String),
}

impl PublicError for EntraError {
    fn code(&self) -> ErrorCode {
        match self {
            EntraError::NotConfigured => ErrorCode::EntraNotConfigured,
            EntraError::AuthFailed(_) => ErrorCode::EntraAuthFailed,
            EntraError::Forbidden(_) => ErrorCode::EntraForbidden,
            EntraError::UserNotFound => ErrorCode::EntraUserNotFound,
            EntraError::Rejected(_) => ErrorCode::EntraRejected,
            EntraError::ChallengeExpired => ErrorCode::EntraChallengeExpired,
            EntraError::Throttled { .. } => ErrorCode::EntraThrottled,
            EntraError::Unavailable(_) => ErrorCode::EntraUnavailable,
        }
    }
    fn public_message(&self) -> String {
        match self {
            EntraError::AuthFailed(_) => {
                "Microsoft Entra ID refused keygate's credentials; ask the service desk".into()
            }
            EntraError::Forbidden(_) => "keygate may not do this in Microsoft Entra ID \
                 (a permission or policy is missing); ask the service desk"
                .into(),
            EntraError::Unavailable(_) => {
                "Microsoft Entra ID did not answer; try again in a moment".into()
            }
            other => other.to_string(),
        }
    }
    fn details(&self) -> Vec<(&'static str, serde_json::Value)> {
        match self {
            EntraError::Throttled {
                retry_after_secs: Some(s),
            } => vec![("retry_after", (*s).into())],
            EntraError::Rejected(reason) => vec![("reason", reason.clone().into())],
            _ => Vec::new(),
        }
    }
}
