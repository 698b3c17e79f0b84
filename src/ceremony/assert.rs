//! Verification (WebAuthn assertion): check the request, start the relying party's
//! authentication, run `authenticatorGetAssertion` through [`CeremonyService::drive`], then
//! verify the signature and the counter. A counter that does not go up is evidence of a cloned
//! key: the credential is quarantined (with its audit line, in one commit).

use std::sync::Arc;
use std::time::Instant;

use crate::config::{EnrollTarget, UserVerification};
use crate::device::DeviceError;
use crate::store::{CredentialState, NewAudit, StoreError};

use super::client::{self, b64};
use super::drive::parse_pin;
use super::rp::{self, RpError};
use super::view::{time_json, validate_user_name};
use super::{
    AssertionRequest, Ceremony, CeremonyError, CeremonyService, CeremonyView, Kind, State,
};

impl CeremonyService {
    pub async fn start_assertion(
        self: &Arc<Self>,
        req: AssertionRequest,
        who: &str,
    ) -> Result<CeremonyView, CeremonyError> {
        if req.target == Some(EnrollTarget::Entra) {
            return self.start_entra_assertion(req, who).await;
        }
        if let Some(u) = &req.user {
            validate_user_name(u)?;
        }
        let timeout = self.timeout(req.timeout_ms)?;
        let pin = parse_pin(req.pin.clone(), 4)?;
        let uv = self.effective_uv(req.user_verification)?;
        let creds = match &req.user {
            Some(u) => {
                let active: Vec<_> = self
                    .store
                    .list_credentials(u, false)?
                    .into_iter()
                    .filter(|c| c.state == CredentialState::Active)
                    .collect();
                if active.is_empty() {
                    return Err(CeremonyError::NoCredentials);
                }
                active
            }
            None => Vec::new(),
        };
        let (actor, status) = self.select_device(req.device.as_deref()).await?;
        let info = &status.info;
        let key_can_verify = info.pin_set == Some(true) || info.uv_supported;
        // A discoverable (user-less) verification always requires UV: without it anyone
        // holding the key would be identified as its owner.
        let uv = if req.user.is_none() {
            UserVerification::Required
        } else {
            uv
        };
        if uv == UserVerification::Required && !key_can_verify {
            return Err(match info.pin_set {
                Some(false) => CeremonyError::PinNotSet,
                _ => DeviceError::UvUnsupported.into(),
            });
        }
        let (options, auth_state) = self.rp.start_authentication(&creds, uv, timeout)?;
        let (cdj, args) =
            client::get_assertion_args(&options, &self.rp.origin, key_can_verify, pin);
        let id = crate::store::new_row_id();
        let (c, mut pin_rx) = self
            .register(
                &id,
                Kind::Assertion,
                EnrollTarget::Local,
                req.user.as_deref(),
                actor,
                timeout,
                who,
            )
            .await?;
        let svc = self.clone();
        // Monotonic on purpose: it bounds the device conversation (see drive.rs).
        let deadline = Instant::now() + timeout;
        let who = who.to_string();
        let named_user = req.user.clone();
        let task_c = c.clone();
        tokio::spawn(async move {
            let c = task_c;
            let outcome = svc
                .drive(&c, deadline, &mut pin_rx, args, |a, args, ctx| {
                    a.get_assertion(args, ctx)
                })
                .await;
            let result = match outcome {
                Ok(outs) => {
                    svc.finish_assertion(&c, named_user.as_deref(), &cdj, outs, auth_state, &who)
                        .await
                }
                Err(e) => Err(e),
            };
            svc.conclude(&c, result, &who).await;
        });
        let view = c.view.borrow().clone();
        Ok(view)
    }

    async fn finish_assertion(
        &self,
        c: &Ceremony,
        named_user: Option<&str>,
        cdj: &[u8],
        outs: Vec<crate::device::AssertionOutput>,
        auth_state: rp::AuthenticationState,
        who: &str,
    ) -> Result<serde_json::Value, CeremonyError> {
        c.update(|v| v.state = State::Processing);
        let id = c.view.borrow().id.clone();
        // A discoverable request may return several credentials of this RP: use the first one
        // keygate knows.
        let mut chosen = None;
        for out in outs {
            if let Some(rec) = self.store.get_credential(&out.credential_id)? {
                chosen = Some((out, rec));
                break;
            }
        }
        let (out, rec) = chosen.ok_or(CeremonyError::UnknownCredential)?;
        if let Some(u) = named_user {
            if rec.user != u {
                return Err(CeremonyError::UnknownCredential);
            }
        }
        if let Some(handle) = &out.user_handle {
            let owner = self.store.find_user_by_handle(handle)?;
            if owner.as_ref().map(|o| o.name.as_str()) != Some(rec.user.as_str()) {
                return Err(CeremonyError::UnknownCredential);
            }
        }
        match rec.state {
            CredentialState::Active => {}
            CredentialState::Quarantined => return Err(CeremonyError::CredentialQuarantined),
            CredentialState::Revoked => return Err(CeremonyError::UnknownCredential),
        }
        // A user-less verification names the user only now: a closed account is refused here
        // as a named one is at the start.
        if self.store.user_closed(&rec.user)? {
            return Err(CeremonyError::UserClosed);
        }
        let cred_b64 = b64(&rec.id);
        let assertion = client::assertion_credential(cdj, &out);
        let rejection = match self.rp.finish_authentication(&assertion, auth_state, &rec) {
            Ok(v) => {
                let audit = NewAudit::new("credential.verified", who)
                    .user(&rec.user)
                    .credential(&cred_b64)
                    .ceremony(&id)
                    .detail(serde_json::json!({
                        "counter": v.counter, "user_verified": v.user_verified, "device": c.actor.id(),
                    }));
                match self
                    .store
                    .record_assertion(&rec.id, v.counter, &v.serialised, &id, &audit)
                    .await
                {
                    Ok(()) => {
                        return Ok(serde_json::json!({
                            "user": rec.user,
                            "credential_id": cred_b64,
                            "counter": v.counter,
                            "user_verified": v.user_verified,
                            "nickname": rec.nickname,
                            "enrolled_at": time_json(rec.created_at),
                            "authentication_response": client::authentication_response_json(cdj, &out),
                        }))
                    }
                    // A concurrent ceremony got there first with the same or a higher counter:
                    // the same evidence of a clone as a counter that went backwards.
                    Err(StoreError::CounterNotAbove) => RpError::ClonedKey,
                    Err(StoreError::Conflict(_)) => {
                        return Err(CeremonyError::CredentialQuarantined)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => e,
        };
        match rejection {
            RpError::ClonedKey => {
                let counter = client::parse_auth_data(&out.authenticator_data)
                    .map(|s| s.sign_count)
                    .unwrap_or(0);
                let audit = NewAudit::new("credential.quarantined", who)
                    .user(&rec.user)
                    .credential(&cred_b64)
                    .ceremony(&id)
                    .detail(serde_json::json!({
                        "reason": "possible_cloned_key", "stored_counter": rec.counter,
                        "presented_counter": counter, "device": c.actor.id(),
                    }));
                self.store
                    .quarantine_credential(
                        &rec.id,
                        &format!("counter {counter} not above stored {}", rec.counter),
                        &id,
                        &audit,
                    )
                    .await?;
                tracing::warn!(user = %rec.user, credential = %cred_b64, "possible cloned key: credential quarantined");
                Err(CeremonyError::PossibleClonedKey)
            }
            e => Err(e.into()),
        }
    }
}
