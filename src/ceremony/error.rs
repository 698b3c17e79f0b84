//! The ceremony layer's one error type, and what clients see of it: each variant maps itself to
//! its stable [`ErrorCode`] (hence HTTP status) and a public message with no internal detail.

use crate::attestation::AttestationError;
use crate::base::error::{ErrorCode, PublicError};
use crate::device::DeviceError;
use crate::entra::EntraError;
use crate::store::StoreError;

use super::rp::RpError;

#[derive(Debug, thiserror::Error)]
pub enum CeremonyError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("not found")]
    NotFound,
    #[error("no active security key is enrolled for this user")]
    NoCredentials,
    #[error("this key is not enrolled here")]
    UnknownCredential,
    #[error("the key's signature counter went backwards: it may be a cloned key")]
    PossibleClonedKey,
    #[error("this key is in quarantine; ask the service desk")]
    CredentialQuarantined,
    #[error("this account is closed: an administrator must reopen it first")]
    UserClosed,
    #[error("the key's attestation was not accepted")]
    AttestationRejected,
    #[error("the ceremony expired")]
    CeremonyExpired,
    #[error("the key has no PIN yet; set one first")]
    PinNotSet,
    #[error("this key cannot store discoverable credentials")]
    DiscoverableUnsupported,
    #[error("the ceremony is not waiting for a PIN")]
    NotWaitingForPin,
    #[error("the ceremony has already ended")]
    AlreadyEnded,
    #[error(transparent)]
    Rp(#[from] RpError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Microsoft Entra ID (Graph) refused or failed; its own code and public message.
    #[error(transparent)]
    Entra(#[from] EntraError),
    /// The key lacks what the enrollment target needs; the text names the missing feature.
    #[error("{0}")]
    KeyUnsupported(String),
    /// `[attestation]` refused the key (`attestation_rejected` with its `reason`).
    #[error(transparent)]
    Attestation(#[from] AttestationError),
}

impl CeremonyError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CeremonyError::Device(d) => d.code(),
            CeremonyError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            CeremonyError::NotFound => ErrorCode::NotFound,
            CeremonyError::NoCredentials => ErrorCode::NoCredentials,
            CeremonyError::UnknownCredential => ErrorCode::UnknownCredential,
            CeremonyError::PossibleClonedKey => ErrorCode::PossibleClonedKey,
            CeremonyError::CredentialQuarantined => ErrorCode::CredentialQuarantined,
            CeremonyError::UserClosed => ErrorCode::UserClosed,
            CeremonyError::AttestationRejected => ErrorCode::AttestationRejected,
            CeremonyError::CeremonyExpired => ErrorCode::CeremonyExpired,
            CeremonyError::PinNotSet => ErrorCode::PinNotSet,
            CeremonyError::DiscoverableUnsupported => ErrorCode::DiscoverableUnsupported,
            CeremonyError::NotWaitingForPin => ErrorCode::NotWaitingForPin,
            CeremonyError::AlreadyEnded => ErrorCode::CeremonyEnded,
            CeremonyError::Rp(RpError::Verification(_)) => ErrorCode::VerificationFailed,
            CeremonyError::Rp(RpError::Attestation(_)) => ErrorCode::AttestationRejected,
            CeremonyError::Rp(RpError::Excluded) => ErrorCode::CredentialExcluded,
            CeremonyError::Rp(RpError::ClonedKey) => ErrorCode::PossibleClonedKey,
            CeremonyError::Rp(RpError::Internal(_)) => ErrorCode::Internal,
            // The store's own mapping: a full disk is `store_unavailable`, not a 500.
            CeremonyError::Store(e) => PublicError::code(e),
            CeremonyError::Entra(e) => e.code(),
            CeremonyError::KeyUnsupported(_) => ErrorCode::KeyUnsupported,
            CeremonyError::Attestation(e) => e.code(),
        }
    }

    /// Text safe to show a client: no internal detail.
    pub fn public_message(&self) -> String {
        match self {
            CeremonyError::InvalidRequest(m) => m.clone(),
            CeremonyError::Rp(RpError::Internal(_)) => "internal error".into(),
            CeremonyError::Store(e) => e.public_message(),
            CeremonyError::Rp(RpError::Verification(_)) => {
                "the key's response could not be verified".into()
            }
            CeremonyError::Rp(RpError::Attestation(_)) => {
                "the key's attestation was not accepted".into()
            }
            CeremonyError::Device(DeviceError::Ctap(_))
            | CeremonyError::Device(DeviceError::Protocol(_))
            | CeremonyError::Device(DeviceError::Io(_)) => {
                "the security key reported an error".into()
            }
            CeremonyError::Entra(e) => e.public_message(),
            CeremonyError::Attestation(e) => e.public_message(),
            other => other.to_string(),
        }
    }

    pub fn retries_left(&self) -> Option<u32> {
        match self {
            CeremonyError::Device(DeviceError::PinInvalid { retries_left }) => *retries_left,
            _ => None,
        }
    }

    /// `entra_rejected`: Graph's own reason (sanitised by the adapter), without our wording.
    /// `attestation_rejected`: the policy's machine reason (`untrusted`, `blocked`, ...).
    pub fn reason(&self) -> Option<String> {
        match self {
            CeremonyError::Entra(EntraError::Rejected(reason)) => Some(reason.clone()),
            CeremonyError::Attestation(e) => e.reason().map(|r| r.as_str().to_string()),
            _ => None,
        }
    }

    /// `entra_throttled`: seconds until Graph takes requests again (its `Retry-After`).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            CeremonyError::Entra(EntraError::Throttled { retry_after_secs }) => *retry_after_secs,
            _ => None,
        }
    }
}

impl PublicError for CeremonyError {
    fn code(&self) -> ErrorCode {
        CeremonyError::code(self)
    }
    fn public_message(&self) -> String {
        CeremonyError::public_message(self)
    }
    fn details(&self) -> Vec<(&'static str, serde_json::Value)> {
        let mut d = Vec::new();
        if let Some(r) = self.retries_left() {
            d.push(("retries_left", r.into()));
        }
        if let Some(s) = self.retry_after() {
            d.push(("retry_after", s.into()));
        }
        if let CeremonyError::Attestation(e) = self {
            d.extend(e.details());
        }
        d
    }
}
