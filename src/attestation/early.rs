//! The early check of a Microsoft Entra ID enrollment: the lists against the AAGUID the key
//! claims in authenticatorGetInfo, before Graph is asked for creationOptions (whose 5-minute
//! window would otherwise be spent on a key keygate refuses after makeCredential).
//!
//! The GetInfo AAGUID is self-claimed: any key can report any AAGUID. So this check may only
//! refuse, never accept: a key that passes it still has its attestation judged after
//! makeCredential ([`AttestationPolicy::check`]), as every enrollment does. It refuses what
//! the claim alone decides: a blocked model, one outside a non-empty allow list, and one whose
//! newest status in the current Metadata Service BLOB is revoked, compromised or a UV bypass
//! (a key that falsely claims such a model loses nothing by being refused); nothing that needs
//! proof. A key that reports no AAGUID, or the all-zero one (some keys hide their
//! model until attestation), is left to the full check.

use serde_json::json;
use uuid::Uuid;

use crate::config::AttestationMode;
use crate::store::{NewAudit, Store};

use super::policy::AttestationPolicy;
use super::{AttestationError, Reason};

/// One Entra enrollment's key as GetInfo described it, and where the enrollment happens (for
/// the audit).
pub struct ClaimedInput<'a> {
    /// The AAGUID of the key's authenticatorGetInfo.
    pub aaguid: Option<Uuid>,
    /// `entra`.
    pub target: &'static str,
    pub user: &'a str,
    pub ceremony: &'a str,
    pub device: &'a str,
    pub who: &'a str,
}

impl AttestationPolicy {
    /// What the lists and the current MDS BLOB say of a claimed AAGUID: every objection, the
    /// first being the `reason`. Empty: nothing to refuse early (which proves nothing).
    pub fn claimed_findings(&self, claimed: Option<Uuid>) -> Vec<Reason> {
        let Some(aaguid) = claimed.filter(|a| !a.is_nil()) else {
            return Vec::new();
        };
        let (allowed, blocked) = self.lists();
        let mut findings = Vec::new();
        if blocked.contains(&aaguid) {
            findings.push(Reason::Blocked);
        }
        if !allowed.is_empty() && !allowed.contains(&aaguid) {
            findings.push(Reason::NotAllowed);
        }
        findings.extend(
            self.claimed_mds_status(aaguid)
                .as_deref()
                .and_then(Reason::of_mds_status),
        );
        findings
    }

    /// The newest status the current MDS BLOB gives the model `aaguid` (None: no current BLOB,
    /// or the model is not in it).
    fn claimed_mds_status(&self, aaguid: Uuid) -> Option<String> {
        self.mds_state()
            .current()
            .and_then(|blob| blob.entry(Some(aaguid), None))
            .and_then(|e| e.status.clone())
    }

    /// The early check: nothing when `off` or when the lists do not object; else the finding
    /// audited as `attestation.finding` (`stage: get_info`, `self_claimed: true`) and, in
    /// `enforce`, the key refused with `attestation_rejected` and the same `reason` the full
    /// check would give. In `monitor` the enrollment goes on.
    pub async fn check_claimed(
        &self,
        store: &Store,
        input: &ClaimedInput<'_>,
    ) -> Result<(), AttestationError> {
        let mode = self.mode();
        if mode == AttestationMode::Off {
            return Ok(());
        }
        let findings = self.claimed_findings(input.aaguid);
        let Some(&reason) = findings.first() else {
            return Ok(());
        };
        tracing::info!(
            ceremony = %input.ceremony, user = %input.user, reason = %reason,
            aaguid = ?input.aaguid, mode = mode.as_str(),
            "attestation finding before Graph (the AAGUID the key claims in GetInfo)"
        );
        let detail = json!({
            "mode": mode.as_str(),
            "action": if mode == AttestationMode::Enforce { "rejected" } else { "recorded" },
            "stage": "get_info",
            "reason": reason,
            "reasons": findings,
            "mds_status": input.aaguid.and_then(|a| self.claimed_mds_status(a)),
            "target": input.target,
            "aaguid": input.aaguid,
            "self_claimed": true,
            "trusted": false,
            "device": input.device,
        });
        let audit = NewAudit::new("attestation.finding", input.who)
            .user(input.user)
            .ceremony(input.ceremony)
            .detail(detail);
        if let Err(e) = store.append_audit(&audit).await {
            tracing::error!(ceremony = %input.ceremony, error = %e, "cannot audit the attestation finding");
        }
        if mode == AttestationMode::Enforce {
            return Err(AttestationError::Rejected {
                reason,
                aaguid: input.aaguid,
            });
        }
        Ok(())
    }
}
