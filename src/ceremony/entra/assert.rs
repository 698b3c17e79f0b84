//! "Whose key is this?" for Entra passkeys (`POST /v1/assertions {"target": "entra"}`): a
//! discoverable, user-verified getAssertion for the rp id(s) of the stored Entra passkeys (or,
//! with `user`, for that user's passkeys by credential id), with a fresh challenge and the
//! origin Entra uses, verified locally (`verify.rs`) and answered with the user and the
//! passkey. A counter that does not go up fails as `possible_cloned_key` (audited); the Entra
//! passkey itself is Graph's to remove (admin `DELETE .../entra/methods/{id}`).

use std::sync::Arc;
use std::time::Instant;

use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::{EnrollTarget, UserVerification};
use crate::device::{AssertionOutput, DeviceError, GetAssertionArgs, Pin};
use crate::entra::EntraError;
use crate::store::{EntraPasskeyRecord, NewAudit, StoreError};

use super::super::client::{self, b64};
use super::super::drive::parse_pin;
use super::super::view::{time_json, validate_user_name};
use super::super::{AssertionRequest, Ceremony, CeremonyError, CeremonyService, CeremonyView};
use super::super::{Kind, State};
use super::origin_of;
use super::verify::{counter_suggests_clone, verify_assertion};

/// One getAssertion of the ceremony: the rp id and, with a named user, their credential ids.
struct Probe {
    rp_id: String,
    allow_list: Vec<Vec<u8>>,
}

impl CeremonyService {
    /// `POST /v1/assertions` with `target: "entra"`.
    pub(in crate::ceremony) async fn start_entra_assertion(
        self: &Arc<Self>,
        req: AssertionRequest,
        who: &str,
    ) -> Result<CeremonyView, CeremonyError> {
        if self.entra.is_none() {
            return Err(EntraError::NotConfigured.into());
        }
        if let Some(u) = &req.user {
            validate_user_name(u)?;
        }
        if req.user_verification == Some(UserVerification::Preferred) {
            return Err(CeremonyError::InvalidRequest(
                "an Entra passkey is identified only with its PIN: `user_verification` must be \
                 \"required\" or absent"
                    .into(),
            ));
        }
        let timeout = self.timeout(req.timeout_ms)?;
        let pin = parse_pin(req.pin.clone(), 4)?;
        let probes = match &req.user {
            Some(u) => {
                let mut probes: Vec<Probe> = Vec::new();
                for rec in self.store.list_entra_passkeys(u)? {
                    match probes.iter_mut().find(|p| p.rp_id == rec.rp_id) {
                        Some(p) => p.allow_list.push(rec.credential_id),
                        None => probes.push(Probe {
                            rp_id: rec.rp_id,
                            allow_list: vec![rec.credential_id],
                        }),
                    }
                }
                probes
            }
            None => self
                .store
                .entra_rp_ids()?
                .into_iter()
                .map(|rp_id| Probe {
                    rp_id,
                    allow_list: Vec::new(),
                })
                .collect(),
        };
        if probes.is_empty() {
            return Err(CeremonyError::NoCredentials);
        }
        let (actor, status) = self.select_device(req.device.as_deref()).await?;
        match status.info.pin_set {
            Some(true) => {}
            Some(false) => return Err(CeremonyError::PinNotSet),
            None => return Err(DeviceError::UvUnsupported.into()),
        }
        let id = crate::store::new_row_id();
        let (c, pin_rx) = self
            .register(
                &id,
                Kind::Assertion,
                EnrollTarget::Entra,
                req.user.as_deref(),
                actor,
                timeout,
                who,
            )
            .await?;
        // Monotonic on purpose: it bounds the device conversation (see drive.rs).
        let deadline = Instant::now() + timeout;
        let (svc, task_c, who, user) = (self.clone(), c.clone(), who.to_string(), req.user);
        tokio::spawn(async move {
            let c = task_c;
            let result = svc
                .run_entra_assertion(&c, probes, user.as_deref(), deadline, pin_rx, pin, &who)
                .await;
            svc.conclude(&c, result, &who).await;
        });
        let view = c.view.borrow().clone();
        Ok(view)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_entra_assertion(
        &self,
        c: &Arc<Ceremony>,
        probes: Vec<Probe>,
        user: Option<&str>,
        deadline: Instant,
        mut pin_rx: tokio::sync::mpsc::Receiver<Pin>,
        pin: Option<Pin>,
        who: &str,
    ) -> Result<serde_json::Value, CeremonyError> {
        let pin = match pin {
            Some(p) => p,
            None => self.ask_pin(c, deadline, &mut pin_rx, None).await?,
        };
        let last = probes.len() - 1;
        for (i, probe) in probes.into_iter().enumerate() {
            let mut challenge = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut challenge);
            let cdj =
                client::client_data_json("webauthn.get", &challenge, &origin_of(&probe.rp_id));
            let args = GetAssertionArgs {
                client_data_hash: Sha256::digest(&cdj).into(),
                client_data_json: cdj.clone(),
                rp_id: probe.rp_id.clone(),
                allow_list: probe.allow_list,
                user_verification: true,
                pin: Some(pin.clone()),
                user_presence: true,
            };
            let outs = match self
                .drive(c, deadline, &mut pin_rx, args, |a, args, ctx| {
                    a.get_assertion(args, ctx)
                })
                .await
            {
                Ok(outs) => outs,
                // Another rp id may still find it.
                Err(CeremonyError::Device(DeviceError::NoCredentials)) if i < last => continue,
                Err(CeremonyError::Device(DeviceError::NoCredentials)) => {
                    return Err(CeremonyError::UnknownCredential)
                }
                Err(e) => return Err(e),
            };
            return self
                .finish_entra_assertion(c, user, &cdj, &challenge, outs, who)
                .await;
        }
        Err(CeremonyError::UnknownCredential)
    }

    async fn finish_entra_assertion(
        &self,
        c: &Ceremony,
        user: Option<&str>,
        cdj: &[u8],
        challenge: &[u8],
        outs: Vec<AssertionOutput>,
        who: &str,
    ) -> Result<serde_json::Value, CeremonyError> {
        c.update(|v| v.state = State::Processing);
        let id = c.view.borrow().id.clone();
        // A discoverable request may return several credentials for the rp: the first one
        // keygate recorded (for the named user, when there is one) and that is in use; a key
        // reported lost still holds its credential, and is an unknown credential.
        let mut chosen: Option<(AssertionOutput, EntraPasskeyRecord)> = None;
        for out in outs {
            if let Some(rec) = self.store.entra_passkey_in_use(&out.credential_id)? {
                if user.is_none_or(|u| u == rec.user) {
                    chosen = Some((out, rec));
                    break;
                }
            }
        }
        let (out, rec) = chosen.ok_or(CeremonyError::UnknownCredential)?;
        if out
            .user_handle
            .as_ref()
            .is_some_and(|h| *h != rec.entra_user_id)
        {
            return Err(CeremonyError::UnknownCredential);
        }
        let ad = verify_assertion(&rec, cdj, challenge, &out, true)?;
        let cred_b64 = b64(&rec.credential_id);
        let base_audit = |event: &str| {
            NewAudit::new(event, who)
                .user(&rec.user)
                .credential(&cred_b64)
                .ceremony(&id)
        };
        let recorded = if counter_suggests_clone(rec.counter, ad.sign_count) {
            Err(StoreError::CounterNotAbove)
        } else {
            let audit = base_audit("entra.passkey_verified").detail(json!({
                "upn": rec.upn, "method_id": rec.method_id, "counter": ad.sign_count,
                "user_verified": ad.user_verified(), "device": c.actor.id(),
            }));
            self.store
                .record_entra_assertion(&rec.credential_id, ad.sign_count, &id, &audit)
                .await
        };
        match recorded {
            Ok(()) => Ok(json!({
                "user": rec.user,
                "entra": {
                    "method_id": rec.method_id,
                    "display_name": rec.display_name,
                    "upn": rec.upn,
                },
                "credential_id": cred_b64,
                "counter": ad.sign_count,
                "user_verified": ad.user_verified(),
                "enrolled_at": time_json(rec.created_at),
            })),
            Err(StoreError::CounterNotAbove) => {
                let audit = base_audit("entra.possible_cloned_key").detail(json!({
                    "upn": rec.upn, "method_id": rec.method_id, "stored_counter": rec.counter,
                    "presented_counter": ad.sign_count, "device": c.actor.id(),
                }));
                // `conclude` leaves this code's persistence to the path that found it.
                self.store
                    .update_ceremony(&id, "failed", Some("possible_cloned_key"), Some(&audit))
                    .await?;
                tracing::warn!(user = %rec.user, credential = %cred_b64, method_id = %rec.method_id,
                    "possible cloned key: an Entra passkey presented a counter that did not go up");
                Err(CeremonyError::PossibleClonedKey)
            }
            Err(e) => Err(e.into()),
        }
    }
}
