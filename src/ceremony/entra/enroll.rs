//! Enrollment into a user's Microsoft Entra ID account: check the request and the key (with
//! `[attestation]`, the AAGUID it claims in GetInfo against the lists: a key refused there is
//! refused before the PIN and before Graph), take the PIN, ask Graph for creationOptions (its
//! 5-minute window starts there), run
//! MakeCredential through [`CeremonyService::drive`] within the window, then register the
//! attestation with Graph (`register.rs`).
//!
//! The PIN comes before Graph: from the request, else the ceremony asks for it (`needs_pin`),
//! and it is checked on the key without a touch (getPinToken). A wrong PIN is asked for again
//! (`needs_pin` with `pin_invalid` and the retries left) and costs no call to Graph, so the
//! window never starts on it. Should the key still refuse the PIN at MakeCredential, the
//! ceremony asks again there and reuses Graph's challenge while the window lasts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{EnrollTarget, UserVerification};
use crate::device::{DeviceError, Pin};
use crate::entra::{CreationOptions, EntraClient, EntraError};

use super::super::drive::parse_pin;
use super::super::view::{validate_text, validate_user_name, EntraWindow};
use super::super::{
    Ceremony, CeremonyError, CeremonyService, CeremonyView, EnrollmentRequest, Kind,
};
use super::{make_credential_args, precheck};

/// What an Entra enrollment carries from its request into its task.
pub(super) struct EntraEnrollment {
    pub(super) entra: EntraClient,
    pub(super) user: String,
    pub(super) display_name: String,
    pub(super) upn: String,
    /// The key's model (from its AAGUID), for the passkey's name in Entra.
    pub(super) model: Option<String>,
    /// The AAGUID the key claims in GetInfo (self-claimed: it may only refuse the key early).
    pub(super) claimed_aaguid: Option<uuid::Uuid>,
    pub(super) who: String,
    /// The key takes the `[enrollment]` PIN policy (authenticatorConfig).
    pub(super) policy_writable: bool,
}

fn invalid(m: &str) -> CeremonyError {
    CeremonyError::InvalidRequest(m.into())
}

impl CeremonyService {
    /// `POST /v1/enrollments` with `target: "entra"`.
    pub(in crate::ceremony) async fn start_entra_enrollment(
        self: &Arc<Self>,
        req: EnrollmentRequest,
        who: &str,
    ) -> Result<CeremonyView, CeremonyError> {
        let entra = self.entra.clone().ok_or(EntraError::NotConfigured)?;
        validate_user_name(&req.user)?;
        validate_text("display_name", &req.display_name, 128)?;
        if req.nickname.is_some() {
            return Err(invalid(
                "`nickname` does not apply to `target: \"entra\"`: Microsoft Entra ID names the \
                 passkey after `[entra] display_name_template`",
            ));
        }
        if req.discoverable == Some(false) {
            return Err(invalid(
                "Microsoft Entra ID passkeys are discoverable: `discoverable` must be true or absent",
            ));
        }
        if req.user_verification == Some(UserVerification::Preferred) {
            return Err(invalid(
                "Microsoft Entra ID passkeys need the key's PIN: `user_verification` must be \
                 \"required\" or absent",
            ));
        }
        let timeout = self.timeout(req.timeout_ms)?;
        let pin = parse_pin(req.pin.clone(), self.cfg.enrollment.min_pin_length)?;
        let (actor, status) = self.select_device(req.device.as_deref()).await?;
        precheck(&status.info)?;
        if let (Some(p), Some(min)) = (&pin, status.info.min_pin_length) {
            p.check_policy(min)?;
        }
        let job = EntraEnrollment {
            upn: entra.upn_for(&req.user),
            entra,
            user: req.user.clone(),
            display_name: req.display_name.clone(),
            model: status.info.model.clone(),
            claimed_aaguid: status.info.aaguid,
            who: who.to_string(),
            policy_writable: status.info.pin_policy_writable,
        };
        let id = crate::store::new_row_id();
        let (c, pin_rx) = self
            .register(
                &id,
                Kind::Enrollment,
                EnrollTarget::Entra,
                Some(&req.user),
                actor,
                timeout,
                who,
            )
            .await?;
        // Monotonic on purpose: it bounds the device conversation (see drive.rs).
        let deadline = Instant::now() + timeout;
        let svc = self.clone();
        let task_c = c.clone();
        tokio::spawn(async move {
            let c = task_c;
            let result = svc
                .run_entra_enrollment(&c, &job, deadline, pin_rx, pin)
                .await;
            svc.conclude(&c, result, &job.who).await;
        });
        let view = c.view.borrow().clone();
        Ok(view)
    }

    async fn run_entra_enrollment(
        &self,
        c: &Arc<Ceremony>,
        job: &EntraEnrollment,
        deadline: Instant,
        mut pin_rx: tokio::sync::mpsc::Receiver<Pin>,
        pin: Option<Pin>,
    ) -> Result<serde_json::Value, CeremonyError> {
        self.check_claimed_aaguid(c, job).await?;
        let pin = self.checked_pin(c, deadline, &mut pin_rx, pin).await?;
        let opts = self
            .unless_cancelled(c, job.entra.creation_options(&job.upn))
            .await??;
        let (deadline, window_binds) = self.open_window(c, job, &opts, deadline)?;
        let (cdj, args) = make_credential_args(&opts, pin)?;
        let (out, pin) = self
            .drive_keeping_pin(c, deadline, &mut pin_rx, args, |a, args, ctx| {
                a.make_credential(args, ctx)
            })
            .await
            .map_err(|e| match e {
                // The deadline that ran out was Graph's window.
                CeremonyError::Device(DeviceError::TouchTimeout)
                | CeremonyError::CeremonyExpired
                    if window_binds =>
                {
                    EntraError::ChallengeExpired.into()
                }
                other => other,
            })?;
        let mut result = self
            .register_entra_passkey(c, job, &opts, &cdj, &out)
            .await?;
        let policy = self.write_pin_policy(&c.actor, job.policy_writable, pin, &job.who);
        if let (serde_json::Value::Object(r), Some(p)) = (&mut result, policy.await) {
            r.insert("pin_policy".into(), p);
        }
        Ok(result)
    }

    /// `[attestation]` on the AAGUID the key claims in GetInfo, before Graph is asked for
    /// anything: a key the lists refuse is refused now (`enforce`) or audited (`monitor`).
    async fn check_claimed_aaguid(
        &self,
        c: &Ceremony,
        job: &EntraEnrollment,
    ) -> Result<(), CeremonyError> {
        let Some(policy) = &self.attestation else {
            return Ok(());
        };
        let ceremony = c.view.borrow().id.clone();
        let input = crate::attestation::ClaimedInput {
            aaguid: job.claimed_aaguid,
            target: "entra",
            user: &job.user,
            ceremony: &ceremony,
            device: c.actor.id(),
            who: &job.who,
        };
        Ok(policy.check_claimed(&self.store, &input).await?)
    }

    /// Graph issued its challenge: show the window (`entra` in the view) and bound the
    /// ceremony by it. Returns the device deadline, min(touch timeout, window), and whether
    /// the window is the nearer of the two.
    fn open_window(
        &self,
        c: &Ceremony,
        job: &EntraEnrollment,
        opts: &CreationOptions,
        deadline: Instant,
    ) -> Result<(Instant, bool), CeremonyError> {
        let left = opts.expires_at - self.clock.now();
        if left <= time::Duration::ZERO {
            return Err(EntraError::ChallengeExpired.into());
        }
        let window_end = Instant::now() + Duration::try_from(left).unwrap_or(Duration::ZERO);
        let window_binds = window_end < deadline;
        c.update(|v| {
            v.entra = Some(EntraWindow {
                upn: job.upn.clone(),
                challenge_expires_at: opts.expires_at,
            });
            if window_binds {
                v.expires_at = v.expires_at.min(opts.expires_at);
            }
        });
        Ok((deadline.min(window_end), window_binds))
    }
}
