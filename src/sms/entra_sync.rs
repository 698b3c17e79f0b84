//! A phone verified by SMS becomes the user's Microsoft Entra ID `mobile` method (`[entra]
//! sync_phones`), in the background: the verification answers at once, the phone shows
//! `entra.state` `pending`, then `synced` (with Graph's method id) or `failed` (with the code).
//!
//! Contract: `pending` is written in the same transaction as the verification, so a restart
//! between the two finds it ([`SmsService::resume_entra_syncs`]) and syncs again. Adding a
//! mobile number Entra already has answers the existing method, so a second attempt is
//! harmless; throttling and unavailability are retried a few times with backoff.

use std::sync::Arc;
use std::time::Duration;

use crate::entra::EntraError;
use crate::store::{NewAudit, PhoneEntraSync};

use super::SmsService;

/// Attempts per sync on `entra_throttled` / `entra_unavailable`, and the longest wait between
/// two (a longer `Retry-After` ends the sync as failed; the service desk can verify again).
const ATTEMPTS: u32 = 3;
const LONGEST_WAIT: Duration = Duration::from_secs(30);

/// One phone to add to Entra.
#[derive(Debug, Clone)]
pub(super) struct PhoneSync {
    pub(super) phone_id: String,
    pub(super) user: String,
    pub(super) e164: String,
    pub(super) actor: String,
}

impl SmsService {
    /// Whether a verified phone is added to Entra (`[entra]` with `sync_phones`).
    pub(super) fn entra_sync_enabled(&self) -> bool {
        self.entra.as_ref().is_some_and(|e| e.sync_phones())
    }

    pub(super) fn spawn_entra_sync(self: &Arc<Self>, job: PhoneSync) {
        let svc = self.clone();
        tokio::spawn(async move { svc.sync_phone(job).await });
    }

    /// Restart the syncs a restart cut short (phones left `pending`). Inside a tokio runtime.
    pub fn resume_entra_syncs(self: &Arc<Self>) {
        if !self.entra_sync_enabled() {
            return;
        }
        match self.store.phones_pending_entra_sync() {
            Ok(pending) => {
                for (phone_id, user, e164) in pending {
                    self.spawn_entra_sync(PhoneSync {
                        phone_id,
                        user,
                        e164,
                        actor: "system".into(),
                    });
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot list phones waiting for their Entra sync")
            }
        }
    }

    async fn sync_phone(&self, job: PhoneSync) {
        let Some(entra) = self.entra.clone() else {
            return;
        };
        let upn = entra.upn_for(&job.user);
        let mut attempt = 1;
        let outcome = loop {
            match entra.add_mobile_phone(&upn, &job.e164).await {
                Ok(m) => break Ok(m),
                Err(e @ (EntraError::Throttled { .. } | EntraError::Unavailable(_)))
                    if attempt < ATTEMPTS =>
                {
                    let wait = match e {
                        EntraError::Throttled {
                            retry_after_secs: Some(s),
                        } => Duration::from_secs(s),
                        _ => Duration::from_millis(500) * 2u32.pow(attempt - 1),
                    };
                    if wait > LONGEST_WAIT {
                        break Err(e);
                    }
                    tracing::info!(phone = %job.phone_id, attempt, error = %e, "Entra phone sync: retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => break Err(e),
            }
        };
        let to = self.masked(&job.e164);
        let (sync, audit) = match outcome {
            Ok(method) => {
                tracing::info!(phone = %job.phone_id, user = %job.user, "phone added to Microsoft Entra ID");
                (
                    PhoneEntraSync {
                        state: "synced".into(),
                        method_id: Some(method.id.clone()),
                        error: None,
                    },
                    NewAudit::new("phone.entra_synced", &job.actor)
                        .user(&job.user)
                        .detail(serde_json::json!({
                            "phone": job.phone_id, "to": to, "upn": upn, "method_id": method.id,
                        })),
                )
            }
            Err(e) => {
                let code = crate::base::error::PublicError::code(&e).to_string();
                tracing::warn!(phone = %job.phone_id, user = %job.user, code = %code, detail = %e,
                    "cannot add the phone to Microsoft Entra ID");
                (
                    PhoneEntraSync {
                        state: "failed".into(),
                        method_id: None,
                        error: Some(code.clone()),
                    },
                    NewAudit::new("phone.entra_sync_failed", &job.actor)
                        .user(&job.user)
                        .detail(serde_json::json!({
                            "phone": job.phone_id, "to": to, "upn": upn, "code": code,
                        })),
                )
            }
        };
        match self
            .store
            .set_phone_entra_state(&job.phone_id, &sync, Some(&audit))
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(phone = %job.phone_id, "phone removed before its Entra sync ended")
            }
            Err(e) => {
                tracing::error!(phone = %job.phone_id, error = %e, "cannot record the Entra sync")
            }
        }
    }
}
