//! [`SmsError`]: every way an SMS request can fail, and how each maps to its public
//! [`ErrorCode`] (with `attempts_left` / `retry_after` details) through [`PublicError`].
//! Leaf of the `sms` layer: imports only `base` and `store`.

use crate::base::error::{ErrorCode, PublicError};
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmsError {
    #[error("wrong code")]
    WrongCode { attempts_left: u32 },
    #[error("the code has expired; ask for a new one")]
    ChallengeExpired,
    #[error("too many wrong codes for this challenge; ask for a new one")]
    ChallengeFailed,
    #[error("this code was already used")]
    ChallengeUsed,
    #[error("this challenge was cancelled")]
    ChallengeCancelled,
    #[error("too many wrong codes: SMS verification is locked for a while")]
    UserLocked { retry_after_secs: u64 },
    #[error("wait before asking for the code again")]
    ResendTooSoon { retry_after_secs: u64 },
    #[error("the code cannot be sent again; start over")]
    ResendLimit,
    #[error("too many messages; try again later")]
    RateLimited { retry_after_secs: u64 },
    #[error("this is not a valid phone number")]
    InvalidPhoneNumber,
    #[error("numbers from this country are not accepted")]
    CountryNotAllowed,
    #[error("this is not a mobile number")]
    NotAMobileNumber,
    #[error("this phone number has not been verified")]
    PhoneNotVerified,
    #[error("no SMS provider is available")]
    ProviderUnavailable,
    #[error("messages to numbers like this one are blocked for a while (suspected SMS fraud)")]
    FraudSuspected { retry_after_secs: u64 },
    #[error("this month's SMS budget is used up; SMS codes are unavailable until it renews")]
    BudgetExhausted { retry_after_secs: u64 },
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyConflict,
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("internal SMS error: {0}")]
    Internal(String),
    /// The store's disk is full: nothing of the request was stored (and no code sent).
    #[error(
        "keygate's storage is full: nothing was stored; try again once an operator has freed disk space"
    )]
    StoreUnavailable,
}

impl SmsError {
    pub fn code(&self) -> ErrorCode {
        match self {
            SmsError::WrongCode { .. } => ErrorCode::WrongCode,
            SmsError::ChallengeExpired => ErrorCode::ChallengeExpired,
            SmsError::ChallengeFailed => ErrorCode::ChallengeFailed,
            SmsError::ChallengeUsed => ErrorCode::ChallengeUsed,
            SmsError::ChallengeCancelled => ErrorCode::ChallengeCancelled,
            SmsError::UserLocked { .. } => ErrorCode::UserLocked,
            SmsError::ResendTooSoon { .. } => ErrorCode::ResendTooSoon,
            SmsError::ResendLimit => ErrorCode::ResendLimit,
            SmsError::RateLimited { .. } => ErrorCode::RateLimited,
            SmsError::InvalidPhoneNumber => ErrorCode::InvalidPhoneNumber,
            SmsError::CountryNotAllowed => ErrorCode::CountryNotAllowed,
            SmsError::NotAMobileNumber => ErrorCode::NotAMobileNumber,
            SmsError::PhoneNotVerified => ErrorCode::PhoneNotVerified,
            SmsError::ProviderUnavailable => ErrorCode::ProviderUnavailable,
            SmsError::FraudSuspected { .. } => ErrorCode::FraudSuspected,
            SmsError::BudgetExhausted { .. } => ErrorCode::BudgetExhausted,
            SmsError::IdempotencyConflict => ErrorCode::IdempotencyConflict,
            SmsError::NotFound => ErrorCode::NotFound,
            SmsError::Invalid(_) => ErrorCode::InvalidRequest,
            SmsError::Internal(_) => ErrorCode::Internal,
            SmsError::StoreUnavailable => ErrorCode::StoreUnavailable,
        }
    }

    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            SmsError::UserLocked { retry_after_secs }
            | SmsError::ResendTooSoon { retry_after_secs }
            | SmsError::RateLimited { retry_after_secs }
            | SmsError::FraudSuspected { retry_after_secs }
            | SmsError::BudgetExhausted { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }
}

impl PublicError for SmsError {
    fn code(&self) -> ErrorCode {
        SmsError::code(self)
    }
    fn public_message(&self) -> String {
        match self {
            SmsError::Internal(_) => "internal error".into(),
            other => other.to_string(),
        }
    }
    fn details(&self) -> Vec<(&'static str, serde_json::Value)> {
        let mut d = Vec::new();
        if let SmsError::WrongCode { attempts_left } = self {
            d.push(("attempts_left", (*attempts_left).into()));
        }
        if let Some(s) = self.retry_after_secs() {
            d.push(("retry_after", s.into()));
        }
        d
    }
}

impl From<StoreError> for SmsError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => SmsError::NotFound,
            StoreError::StorageFull => SmsError::StoreUnavailable,
            other => SmsError::Internal(other.to_string()),
        }
    }
}
