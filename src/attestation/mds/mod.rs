//! The FIDO Metadata Service (MDS3) BLOB, verified offline: a JWT whose x5c chain must lead to
//! the configured root (`jws.rs`), whose payload lists key models by AAGUID (FIDO2) or by
//! attestation key identifier (U2F) with their description, certification status reports and
//! attestation roots (this file), reloaded when the file changes (`source.rs`) and installed by
//! `keygate mds update` (`install.rs`).
//!
//! Why not the `fido-mds` crate: it pins the BLOB's trust to its two built-in GlobalSign roots
//! (no test root, no `mds_root_ca`), reads `SystemTime::now()` instead of keygate's clock, does
//! not judge `nextUpdate`, refuses a whole BLOB on any unknown field, and keeps entries in `Rc`
//! (not `Send`). keygate keeps only what its policy reads, in its own `Send` types.

mod install;
mod jws;
mod source;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use crypto_glue::x509::Certificate;
use serde::Deserialize;
use time::{Date, OffsetDateTime};

use super::roots::certificate;
use super::AttestationError;

pub use install::{install_blob, Installed};
pub use jws::verify_blob;
pub use source::{MdsSource, MdsState};

/// What the BLOB says about one key model.
#[derive(Debug, Clone)]
pub struct MdsEntry {
    /// `metadataStatement.description`: the model's name.
    pub description: Option<String>,
    /// The newest status report's status (`FIDO_CERTIFIED_L1`, `REVOKED`, ...).
    pub status: Option<String>,
    /// `metadataStatement.attestationRootCertificates`: roots trusted for this model only.
    pub roots: Vec<Certificate>,
}

/// A verified BLOB's content.
#[derive(Debug, Clone)]
pub struct MdsData {
    /// The BLOB's serial number (`no`): each new BLOB has a higher one.
    pub no: u64,
    /// The date by which the FIDO Alliance publishes the next BLOB: after it this one is stale.
    pub next_update: Date,
    /// Entries kept (FIDO2 and U2F models; UAF entries are skipped).
    pub entries: usize,
    by_aaguid: HashMap<uuid::Uuid, Arc<MdsEntry>>,
    by_key_id: HashMap<String, Arc<MdsEntry>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPayload {
    no: u64,
    next_update: String,
    #[serde(default)]
    entries: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEntry {
    aaguid: Option<uuid::Uuid>,
    #[serde(default)]
    attestation_certificate_key_identifiers: Vec<String>,
    metadata_statement: Option<RawStatement>,
    #[serde(default)]
    status_reports: Vec<RawStatusReport>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStatement {
    description: Option<String>,
    #[serde(default)]
    attestation_root_certificates: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStatusReport {
    status: String,
    effective_date: Option<String>,
}

const DATE: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

/// The newest status of a report list: the latest `effectiveDate` (ISO dates compare as text;
/// a report without one counts as oldest), the later report on a tie.
fn newest_status(reports: &[RawStatusReport]) -> Option<String> {
    reports
        .iter()
        .enumerate()
        .max_by_key(|(i, r)| (r.effective_date.clone().unwrap_or_default(), *i))
        .map(|(_, r)| r.status.clone())
}

impl MdsData {
    /// The payload of a verified BLOB. An entry keygate cannot read (or a root certificate in
    /// it) is skipped, not fatal: the BLOB's entries come from many vendors.
    pub(super) fn parse(payload: &[u8]) -> Result<MdsData, AttestationError> {
        let raw: RawPayload = serde_json::from_slice(payload)
            .map_err(|e| AttestationError::BlobMalformed(format!("payload: {e}")))?;
        let next_update = Date::parse(&raw.next_update, DATE).map_err(|e| {
            AttestationError::BlobMalformed(format!("nextUpdate `{}`: {e}", raw.next_update))
        })?;
        let mut data = MdsData {
            no: raw.no,
            next_update,
            entries: 0,
            by_aaguid: HashMap::new(),
            by_key_id: HashMap::new(),
        };
        for (i, value) in raw.entries.into_iter().enumerate() {
            let e: RawEntry = match serde_json::from_value(value) {
                Ok(e) => e,
                Err(err) => {
                    tracing::debug!(entry = i, error = %err, "FIDO metadata entry skipped");
                    continue;
                }
            };
            let statement = e.metadata_statement.unwrap_or(RawStatement {
                description: None,
                attestation_root_certificates: Vec::new(),
            });
            let roots = statement
                .attestation_root_certificates
                .iter()
                .filter_map(|b64| {
                    let der = STANDARD.decode(b64.trim()).ok()?;
                    certificate(&der).ok()
                })
                .collect();
            let entry = Arc::new(MdsEntry {
                description: statement.description,
                status: newest_status(&e.status_reports),
                roots,
            });
            let mut kept = false;
            if let Some(a) = e.aaguid {
                data.by_aaguid.insert(a, entry.clone());
                kept = true;
            }
            for id in &e.attestation_certificate_key_identifiers {
                data.by_key_id
                    .insert(id.to_ascii_lowercase(), entry.clone());
                kept = true;
            }
            data.entries += usize::from(kept);
        }
        Ok(data)
    }

    /// Whether `now` is on or before `nextUpdate`.
    pub fn is_current(&self, now: OffsetDateTime) -> bool {
        now.date() <= self.next_update
    }

    /// The entry of a FIDO2 model (by AAGUID) or a U2F model (by attestation key identifier).
    pub fn entry(&self, aaguid: Option<uuid::Uuid>, u2f_key_id: Option<&str>) -> Option<&MdsEntry> {
        aaguid
            .filter(|a| !a.is_nil())
            .and_then(|a| self.by_aaguid.get(&a))
            .or_else(|| u2f_key_id.and_then(|k| self.by_key_id.get(k)))
            .map(|e| e.as_ref())
    }
}

/// The `no` of a BLOB, read without verifying it (the serial of the installed BLOB that a new
/// one must not go below). None when unreadable.
pub(super) fn unverified_serial(text: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Serial {
        no: u64,
    }
    let payload = text.trim().split('.').nth(1)?;
    let bytes = jws::b64url(payload).ok()?;
    serde_json::from_slice::<Serial>(&bytes).ok().map(|s| s.no)
}
