//! The attestation policy (`[attestation]`): what a key *is*, decided from proof at enrollment.
//!
//! A key's AAGUID counts only when its attestation statement chains to a trusted root: a root
//! of `[attestation] ca_files` (or `[relying_party] attestation_ca_files`), trusted for every
//! model, or a root the FIDO Metadata Service BLOB lists for that model. Self attestation,
//! `none` and unknown chains prove nothing (a key can claim any AAGUID: the Keycloak
//! allow-list bypass). Then the block list, the allow list and the model's MDS status decide.
//! `enforce` fails the enrollment with `attestation_rejected` and a machine `reason`,
//! `monitor` lets it succeed and audits the finding (`attestation.finding`), `off` does
//! neither. The same check runs for local and Microsoft Entra ID enrollments, for Entra before
//! the registration is posted to Graph. An Entra enrollment is also checked before Graph is
//! asked for creationOptions, against the AAGUID the key claims in GetInfo (`early.rs`): that
//! check can only refuse early what the lists refuse, never accept.
//!
//! Files: `statement.rs` reads and checks the attestation statement, `roots.rs` the
//! certificates and the chain check, `mds/` the Metadata Service BLOB, `policy.rs` the decision
//! and its audit, `early.rs` the Entra enrollment's check before Graph, `testing.rs` a
//! throwaway PKI for tests.

mod early;
mod mds;
mod policy;
mod roots;
mod statement;
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime};

use crypto_glue::x509::Certificate;

use crate::base::clock::Clock;
use crate::base::error::{ErrorCode, PublicError};
use crate::config::AttestationConfig;

pub use early::ClaimedInput;
pub use mds::{install_blob, verify_blob, Installed, MdsData, MdsEntry, MdsSource, MdsState};
pub use policy::{AttestationPolicy, CheckInput, Judgement, TrustedBy};
pub use roots::{pem_certificates, FIDO_MDS_ROOT_PEM};
pub use statement::{read_statement, ProofKind, Statement};

/// Why the policy objects to a key: the `reason` of `attestation_rejected` and of the audit's
/// `attestation.finding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The attestation does not chain to a trusted root: the key's model is not proven.
    Untrusted,
    /// The (proven) model is in `blocked_aaguids`.
    Blocked,
    /// The (proven) model is not in a non-empty `allowed_aaguids`.
    NotAllowed,
    /// The Metadata Service's newest status for the model: `REVOKED`.
    Revoked,
    /// `ATTESTATION_KEY_COMPROMISE`, `USER_KEY_REMOTE_COMPROMISE`, `USER_KEY_PHYSICAL_COMPROMISE`.
    Compromised,
    /// `USER_VERIFICATION_BYPASS`.
    UvBypass,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Untrusted => "untrusted",
            Reason::Blocked => "blocked",
            Reason::NotAllowed => "not_allowed",
            Reason::Revoked => "revoked",
            Reason::Compromised => "compromised",
            Reason::UvBypass => "uv_bypass",
        }
    }

    /// The reason an MDS status report status gives to refuse a model, if any.
    pub fn of_mds_status(status: &str) -> Option<Reason> {
        match status {
            "REVOKED" => Some(Reason::Revoked),
            "ATTESTATION_KEY_COMPROMISE"
            | "USER_KEY_REMOTE_COMPROMISE"
            | "USER_KEY_PHYSICAL_COMPROMISE" => Some(Reason::Compromised),
            "USER_VERIFICATION_BYPASS" => Some(Reason::UvBypass),
            _ => None,
        }
    }

    fn public_message(self) -> &'static str {
        match self {
            Reason::Untrusted => {
                "the key's attestation does not lead to a trusted root, so its make and model are not proven"
            }
            Reason::Blocked => "this key model is blocked here",
            Reason::NotAllowed => "this key model is not on the list of allowed models",
            Reason::Revoked => "the FIDO Alliance revoked this key model's certification",
            Reason::Compromised => "the FIDO Alliance reports this key model's keys as compromised",
            Reason::UvBypass => {
                "the FIDO Alliance reports that this key model's PIN or biometric check can be bypassed"
            }
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The attestation layer's errors: a rejected key, and the files and BLOB it reads.
#[derive(Debug, thiserror::Error)]
pub enum AttestationError {
    #[error("attestation rejected ({reason}), AAGUID {aaguid:?}")]
    Rejected {
        reason: Reason,
        aaguid: Option<uuid::Uuid>,
    },
    /// A file named by `[attestation]` (or given to `mds update`) is unreadable or holds no
    /// certificate.
    #[error("{0}")]
    File(String),
    #[error("FIDO metadata BLOB malformed: {0}")]
    BlobMalformed(String),
    #[error("FIDO metadata BLOB not signed under the configured root (mds_root_ca): {0}")]
    BlobUntrusted(String),
    #[error("FIDO metadata BLOB signature does not verify")]
    BlobSignature,
    #[error("FIDO metadata BLOB is stale: its nextUpdate {next_update} has passed; download the current one")]
    BlobStale { next_update: time::Date },
    #[error("FIDO metadata BLOB no {offered} is older than the installed no {installed}")]
    BlobOlder { offered: u64, installed: u64 },
}

impl AttestationError {
    /// `attestation_rejected`: the machine reason.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            AttestationError::Rejected { reason, .. } => Some(*reason),
            _ => None,
        }
    }
}

impl PublicError for AttestationError {
    fn code(&self) -> ErrorCode {
        match self {
            AttestationError::Rejected { .. } => ErrorCode::AttestationRejected,
            _ => ErrorCode::Internal,
        }
    }

    fn public_message(&self) -> String {
        match self {
            AttestationError::Rejected { reason, .. } => {
                format!("the key was not accepted: {}", reason.public_message())
            }
            _ => "internal error".into(),
        }
    }

    fn details(&self) -> Vec<(&'static str, serde_json::Value)> {
        self.reason()
            .map(|r| vec![("reason", r.as_str().into())])
            .unwrap_or_default()
    }
}

/// [`pem_certificates`] of a file (for `check-config`).
pub fn read_pem_certificates(path: &std::path::Path) -> Result<Vec<Certificate>, String> {
    roots::read_pem_certificates(path)
}

/// The roots the BLOB's chain must lead to: `mds_root_ca`, else the FIDO Alliance's.
pub fn mds_roots(cfg: &AttestationConfig) -> Result<Vec<Certificate>, AttestationError> {
    match &cfg.mds_root_ca {
        Some(p) => roots::read_pem_certificates(p)
            .map_err(|e| AttestationError::File(format!("attestation.mds_root_ca: {e}"))),
        None => Ok(vec![roots::fido_mds_root()]),
    }
}

/// The clock's time for certificate validity checks.
pub(crate) fn system_time(clock: &dyn Clock) -> SystemTime {
    let ms = clock.now_ms();
    if ms >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}
