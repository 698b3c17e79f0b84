//! The decision: a statement (`statement.rs`), the roots it may chain to (configured, and the
//! Metadata Service's for the claimed model), then the lists and the model's MDS status; and
//! [`AttestationPolicy::check`], the one call both enrollment paths make, which audits a
//! finding and, in `enforce`, refuses the key.

use std::sync::Arc;

use crypto_glue::x509::Certificate;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::base::clock::Clock;
use crate::config::{AttestationMode, Config};
use crate::store::{NewAudit, Store};

use super::mds::{MdsSource, MdsState};
use super::roots::{chain_root, read_pem_certificates};
use super::statement::{read_statement, ProofKind};
use super::{mds_roots, system_time, AttestationError, Reason};

/// Which roots a trusted chain led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustedBy {
    /// `[attestation] ca_files` or `[relying_party] attestation_ca_files`.
    Configured,
    /// The Metadata Service entry of the key's model.
    Metadata,
}

impl TrustedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            TrustedBy::Configured => "ca_files",
            TrustedBy::Metadata => "mds",
        }
    }
}

/// What the policy made of one attestation.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub format: String,
    pub proof: ProofKind,
    /// The AAGUID in the attested credential data, proven or not.
    pub claimed_aaguid: Option<uuid::Uuid>,
    pub trusted_by: Option<TrustedBy>,
    /// The model's name from the Metadata Service (a proven model only).
    pub model: Option<String>,
    /// The BLOB's state (`absent`, `current`, `stale`, `invalid`).
    pub mds: &'static str,
    /// The model's newest MDS status (a proven model only).
    pub mds_status: Option<String>,
    /// Every objection, the first being the `reason`. Empty: the key passes.
    pub findings: Vec<Reason>,
    /// Why the statement or its chain did not verify (log and audit only).
    pub note: Option<String>,
}

impl Judgement {
    /// The AAGUID, when the attestation proved it.
    pub fn aaguid(&self) -> Option<uuid::Uuid> {
        self.trusted_by.and(self.claimed_aaguid)
    }

    /// `result.attestation` of an enrollment.
    pub fn result_json(&self) -> Value {
        json!({
            "trusted": self.trusted_by.is_some(),
            "aaguid": self.aaguid(),
            "model": self.model,
            "mds_status": self.mds_status,
            "findings": self.findings,
        })
    }

    fn audit_detail(&self, mode: AttestationMode, input: &CheckInput<'_>) -> Value {
        json!({
            "mode": mode.as_str(),
            "action": if mode == AttestationMode::Enforce { "rejected" } else { "recorded" },
            "stage": "attestation",
            "reason": self.findings.first(),
            "reasons": self.findings,
            "target": input.target,
            "aaguid": self.claimed_aaguid,
            "trusted": self.trusted_by.is_some(),
            "trusted_by": self.trusted_by.map(TrustedBy::as_str),
            "format": self.format,
            "attestation": self.proof.as_str(),
            "model": self.model,
            "mds": self.mds,
            "mds_status": self.mds_status,
            "note": self.note,
            "device": input.device,
        })
    }
}

/// One enrollment's attestation and where it happens (for the audit).
pub struct CheckInput<'a> {
    pub attestation_object: &'a [u8],
    /// The clientDataJSON the key signed over (its SHA-256).
    pub client_data_json: &'a [u8],
    /// `local` or `entra`.
    pub target: &'static str,
    pub user: &'a str,
    pub ceremony: &'a str,
    pub credential_id: &'a [u8],
    pub device: &'a str,
    pub who: &'a str,
}

pub struct AttestationPolicy {
    mode: AttestationMode,
    allowed: Vec<uuid::Uuid>,
    blocked: Vec<uuid::Uuid>,
    /// Roots trusted for every model.
    roots: Vec<Certificate>,
    mds: MdsSource,
    clock: Arc<dyn Clock>,
}

impl AttestationPolicy {
    /// Read the roots `cfg` names and the installed BLOB. An installed BLOB that does not verify
    /// is an error (replace it with `keygate mds update`); a stale or absent one is logged.
    pub fn from_config(cfg: &Config, clock: Arc<dyn Clock>) -> Result<Self, AttestationError> {
        let a = &cfg.attestation;
        let mut roots = Vec::new();
        for path in a
            .ca_files
            .iter()
            .chain(&cfg.relying_party.attestation_ca_files)
        {
            roots.extend(read_pem_certificates(path).map_err(AttestationError::File)?);
        }
        let policy = AttestationPolicy {
            mode: a.mode,
            allowed: a.allowed_aaguids.clone(),
            blocked: a.blocked_aaguids.clone(),
            roots,
            mds: MdsSource::new(a.mds_blob_path(&cfg.data_dir), mds_roots(a)?),
            clock,
        };
        match policy.mds_state() {
            MdsState::Invalid(e) => return Err(AttestationError::File(e)),
            MdsState::Stale(d) => tracing::warn!(
                path = %policy.mds.path().display(), no = d.no, next_update = %d.next_update,
                "FIDO metadata BLOB is stale: its entries are not used; run `keygate mds update`"
            ),
            _ => {}
        }
        Ok(policy)
    }

    pub fn mode(&self) -> AttestationMode {
        self.mode
    }

    /// `allowed_aaguids` and `blocked_aaguids`.
    pub(super) fn lists(&self) -> (&[uuid::Uuid], &[uuid::Uuid]) {
        (&self.allowed, &self.blocked)
    }

    pub fn mds_state(&self) -> MdsState {
        self.mds.state(system_time(&*self.clock))
    }

    /// One line for `check-config` and the start-up log.
    pub fn summary(&self) -> String {
        let describe = |state: &str, d: &super::MdsData| {
            format!(
                "{state}, no {}, next update {}, {} entries",
                d.no, d.next_update, d.entries
            )
        };
        let blob = match self.mds_state() {
            MdsState::Absent => "none installed".to_string(),
            MdsState::Invalid(e) => format!("invalid: {e}"),
            MdsState::Current(d) => describe("current", &d),
            MdsState::Stale(d) => describe("stale", &d),
        };
        format!(
            "attestation: {}; {} configured root(s), {} allowed and {} blocked AAGUID(s); FIDO metadata BLOB {}: {blob}",
            self.mode.as_str(),
            self.roots.len(),
            self.allowed.len(),
            self.blocked.len(),
            self.mds.path().display(),
        )
    }

    /// Judge the attestation in `attestation_object`, made over `client_data_hash`.
    pub fn judge(&self, attestation_object: &[u8], client_data_hash: &[u8; 32]) -> Judgement {
        let now = system_time(&*self.clock);
        let st = read_statement(attestation_object, client_data_hash);
        let mds = self.mds_state();
        let entry = mds
            .current()
            .and_then(|d| d.entry(st.aaguid, st.u2f_key_id.as_deref()));
        let mut note = st.problem.clone();
        let mut trusted_by = None;
        if let (ProofKind::Certificate, Some((leaf, intermediates))) =
            (st.kind, st.chain.split_first())
        {
            let roots: Vec<&Certificate> = self
                .roots
                .iter()
                .chain(entry.iter().flat_map(|e| e.roots.iter()))
                .collect();
            match chain_root(leaf, intermediates, &roots, now) {
                Ok(i) if i < self.roots.len() => trusted_by = Some(TrustedBy::Configured),
                Ok(_) => trusted_by = Some(TrustedBy::Metadata),
                Err(e) => note = Some(format!("no trusted chain: {e}")),
            }
        }
        let proven_entry = entry.filter(|_| trusted_by.is_some());
        let mds_status = proven_entry.and_then(|e| e.status.clone());
        let mut findings = Vec::new();
        match (trusted_by, st.aaguid) {
            (None, _) => findings.push(Reason::Untrusted),
            (Some(_), aaguid) => {
                let aaguid = aaguid.unwrap_or_default();
                if self.blocked.contains(&aaguid) {
                    findings.push(Reason::Blocked);
                }
                if !self.allowed.is_empty() && !self.allowed.contains(&aaguid) {
                    findings.push(Reason::NotAllowed);
                }
                findings.extend(mds_status.as_deref().and_then(Reason::of_mds_status));
            }
        }
        Judgement {
            format: st.format,
            proof: st.kind,
            claimed_aaguid: st.aaguid,
            trusted_by,
            model: proven_entry.and_then(|e| e.description.clone()),
            mds: mds.as_str(),
            mds_status,
            findings,
            note,
        }
    }

    /// The policy on one enrollment: nothing when `off`; else the judgement, with a finding
    /// audited as `attestation.finding` and, in `enforce`, the key refused.
    pub async fn check(
        &self,
        store: &Store,
        input: &CheckInput<'_>,
    ) -> Result<Option<Judgement>, AttestationError> {
        if self.mode == AttestationMode::Off {
            return Ok(None);
        }
        let client_data_hash: [u8; 32] = Sha256::digest(input.client_data_json).into();
        let judgement = self.judge(input.attestation_object, &client_data_hash);
        let Some(&reason) = judgement.findings.first() else {
            return Ok(Some(judgement));
        };
        tracing::info!(
            ceremony = %input.ceremony, user = %input.user, reason = %reason,
            aaguid = ?judgement.claimed_aaguid, mode = self.mode.as_str(),
            note = judgement.note.as_deref().unwrap_or(""), "attestation finding"
        );
        let audit = NewAudit::new("attestation.finding", input.who)
            .user(input.user)
            .ceremony(input.ceremony)
            .credential(&crate::ceremony::client::b64(input.credential_id))
            .detail(judgement.audit_detail(self.mode, input));
        if let Err(e) = store.append_audit(&audit).await {
            tracing::error!(ceremony = %input.ceremony, error = %e, "cannot audit the attestation finding");
        }
        if self.mode == AttestationMode::Enforce {
            return Err(AttestationError::Rejected {
                reason,
                aaguid: judgement.claimed_aaguid,
            });
        }
        Ok(Some(judgement))
    }
}
