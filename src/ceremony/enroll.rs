//! Enrollment (WebAuthn registration): check the request and the key, start the relying party's
//! registration, run `authenticatorMakeCredential` through [`CeremonyService::drive`], then
//! verify the attestation and store the credential (with its user row, in one commit).

use std::sync::Arc;
use std::time::Instant;

use rand::RngCore;

use crate::config::{EnrollTarget, UserVerification};
use crate::device::DeviceError;
use crate::store::{CredentialRecord, CredentialState, NewAudit, StoreError, UserRecord};

use super::client::{self, b64};
use super::drive::parse_pin;
use super::rp::{self, RpError};
use super::view::{credential_json, validate_text, validate_user_name};
use super::{
    Ceremony, CeremonyError, CeremonyService, CeremonyView, EnrollmentRequest, Kind, State,
};

impl CeremonyService {
    /// The user row an enrollment writes with its credential (in one commit; no row for an
    /// enrollment that fails), with the display name of this request, and whether the user
    /// existed. A new user gets a random handle: the key stores it, and a discoverable
    /// verification identifies the user by it.
    pub(super) fn user_row(
        &self,
        name: &str,
        display_name: &str,
    ) -> Result<(UserRecord, bool), StoreError> {
        Ok(match self.store.get_user(name)? {
            Some(u) => (
                UserRecord {
                    display_name: display_name.to_string(),
                    ..u
                },
                true,
            ),
            None => {
                let mut handle = [0u8; 16];
                rand::rngs::OsRng.fill_bytes(&mut handle);
                let user = UserRecord {
                    name: name.to_string(),
                    display_name: display_name.to_string(),
                    user_handle: handle.to_vec(),
                    created_at: self.clock.now(),
                };
                (user, false)
            }
        })
    }

    pub async fn start_enrollment(
        self: &Arc<Self>,
        req: EnrollmentRequest,
        who: &str,
    ) -> Result<CeremonyView, CeremonyError> {
        if req.target == Some(EnrollTarget::Entra) {
            return self.start_entra_enrollment(req, who).await;
        }
        validate_user_name(&req.user)?;
        validate_text("display_name", &req.display_name, 128)?;
        if let Some(n) = &req.nickname {
            validate_text("nickname", n, 64)?;
        }
        let timeout = self.timeout(req.timeout_ms)?;
        let pin = parse_pin(req.pin.clone(), self.cfg.enrollment.min_pin_length)?;
        let uv = self.effective_uv(req.user_verification)?;
        let (actor, status) = self.select_device(req.device.as_deref()).await?;
        let info = &status.info;
        let key_can_verify = info.pin_set == Some(true) || info.uv_supported;
        if uv == UserVerification::Required && !key_can_verify {
            return Err(match info.pin_set {
                Some(false) => CeremonyError::PinNotSet,
                _ => DeviceError::UvUnsupported.into(),
            });
        }
        let discoverable = req.discoverable.unwrap_or(false);
        if discoverable && !info.discoverable_supported {
            return Err(CeremonyError::DiscoverableUnsupported);
        }

        // The user row is written with the credential (one commit; no row for an enrollment
        // that fails). A new user gets a random handle: the key stores it, and a discoverable
        // verification identifies the user by it.
        let (user, known) = self.user_row(&req.user, &req.display_name)?;
        let existing = if known {
            self.store.list_credentials(&user.name, false)?
        } else {
            Vec::new()
        };
        let (options, reg_state) =
            self.rp
                .start_registration(&user, &existing, uv, discoverable, timeout)?;
        let (cdj, args) =
            client::make_credential_args(&options, &self.rp.origin, key_can_verify, pin);

        let id = crate::store::new_row_id();
        let (c, mut pin_rx) = self
            .register(
                &id,
                Kind::Enrollment,
                EnrollTarget::Local,
                Some(&user.name),
                actor,
                timeout,
                who,
            )
            .await?;
        let svc = self.clone();
        let model = info.model.clone();
        let firmware = info.firmware.clone();
        let policy_writable = info.pin_policy_writable;
        let nickname = req.nickname.clone();
        // Monotonic on purpose: it bounds the device conversation (see drive.rs).
        let deadline = Instant::now() + timeout;
        let who = who.to_string();
        let task_c = c.clone();
        tokio::spawn(async move {
            let c = task_c;
            let outcome = svc
                .drive_keeping_pin(&c, deadline, &mut pin_rx, args, |a, args, ctx| {
                    a.make_credential(args, ctx)
                })
                .await;
            let result = match outcome {
                Ok((out, pin)) => {
                    let mut result = svc
                        .finish_enrollment(
                            &c,
                            &user,
                            &cdj,
                            &out,
                            &reg_state,
                            discoverable,
                            nickname,
                            model,
                            firmware,
                            &who,
                        )
                        .await;
                    if let Ok(serde_json::Value::Object(r)) = &mut result {
                        let policy = svc.write_pin_policy(&c.actor, policy_writable, pin, &who);
                        if let Some(p) = policy.await {
                            r.insert("pin_policy".into(), p);
                        }
                    }
                    result
                }
                Err(e) => Err(e),
            };
            svc.conclude(&c, result, &who).await;
        });
        let view = c.view.borrow().clone();
        Ok(view)
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish_enrollment(
        &self,
        c: &Ceremony,
        user: &crate::store::UserRecord,
        cdj: &[u8],
        out: &crate::device::MakeCredentialOutput,
        reg_state: &rp::RegistrationState,
        discoverable: bool,
        nickname: Option<String>,
        model: Option<String>,
        firmware: Option<String>,
        who: &str,
    ) -> Result<serde_json::Value, CeremonyError> {
        c.update(|v| v.state = State::Processing);
        let reg = client::registration_credential(cdj, out);
        let verified = self.rp.finish_registration(&reg, reg_state)?;
        let attestation = self
            .check_attestation(c, "local", &user.name, cdj, out, who)
            .await?;
        let summary = client::attestation_auth_data(&out.attestation_object)
            .and_then(|ad| client::parse_auth_data(&ad))
            .ok_or_else(|| RpError::Verification("authenticator data unreadable".into()))?;
        let cose_key = summary
            .cose_key
            .clone()
            .ok_or_else(|| RpError::Verification("no credential public key".into()))?;
        let id = c.view.borrow().id.clone();
        let record = CredentialRecord {
            id: verified.credential_id.clone(),
            user: user.name.clone(),
            rp_credential: verified.serialised.clone(),
            public_key_cose: cose_key,
            counter: summary.sign_count,
            aaguid: summary.aaguid,
            attestation_format: verified.attestation_format.clone(),
            attested: verified.attested,
            discoverable,
            user_verified: summary.user_verified(),
            nickname,
            // The Metadata Service names a proven model; GetInfo's AAGUID is only a claim.
            model: attestation.as_ref().and_then(|j| j.model.clone()).or(model),
            created_at: self.clock.now(),
            last_used_at: None,
            state: CredentialState::Active,
            state_reason: None,
        };
        let cred_b64 = b64(&record.id);
        let audit = NewAudit::new("credential.enrolled", who)
            .user(&user.name)
            .credential(&cred_b64)
            .ceremony(&id)
            .detail(serde_json::json!({
                "aaguid": record.aaguid, "attestation_format": record.attestation_format,
                "attested": record.attested, "discoverable": discoverable,
                "user_verified": record.user_verified, "device": c.actor.id(),
                "firmware": firmware,
            }));
        match self
            .store
            .insert_credential(user, &record, &id, &audit)
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(DeviceError::CredentialExcluded.into());
            }
            Err(e) => return Err(e.into()),
        }
        let mut result = serde_json::json!({
            "credential": credential_json(&record, false),
            "registration_response": client::registration_response_json(cdj, out),
        });
        if let Some(j) = &attestation {
            result["attestation"] = j.result_json();
        }
        Ok(result)
    }

    /// `[attestation]` on a new credential, for both enrollment paths (Entra: before anything
    /// is posted to Graph). None when no policy is set or its mode is `off`; in `enforce` a
    /// finding is the error `attestation_rejected`.
    pub(super) async fn check_attestation(
        &self,
        c: &Ceremony,
        target: &'static str,
        user: &str,
        cdj: &[u8],
        out: &crate::device::MakeCredentialOutput,
        who: &str,
    ) -> Result<Option<crate::attestation::Judgement>, CeremonyError> {
        let Some(policy) = &self.attestation else {
            return Ok(None);
        };
        let ceremony = c.view.borrow().id.clone();
        let input = crate::attestation::CheckInput {
            attestation_object: &out.attestation_object,
            client_data_json: cdj,
            target,
            user,
            ceremony: &ceremony,
            credential_id: &out.credential_id,
            device: c.actor.id(),
            who,
        };
        Ok(policy.check(&self.store, &input).await?)
    }
}
