//! The campus PIN policy (`[enrollment]`) on the key: PINs keygate generates for the service
//! desk, and the policy written after a successful enrollment with authenticatorConfig
//! setMinPINLength (minimum length, and forcePINChange for a key whose PIN keygate generated).
//! The enrollment succeeds whether or not the key took the policy; its result says which
//! (`pin_policy`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::base::sync::lock;
use crate::device::actor::{DeviceActor, DeviceStatus};
use crate::device::{DeviceError, OpContext, Pin};
use crate::store::NewAudit;

use super::pin_gen::generate_pin;
use super::{CeremonyError, CeremonyService};

impl CeremonyService {
    /// Set a PIN keygate draws (6-8 digits, at least `min_pin_length`) on a key without one.
    /// The caller shows it once; keygate keeps only the mark that this key's PIN was generated
    /// (for `force_pin_change` at its enrollment).
    pub async fn set_generated_pin(
        &self,
        device: &str,
        who: &str,
    ) -> Result<(DeviceStatus, Pin), CeremonyError> {
        let min = self.cfg.enrollment.min_pin_length;
        if min > 8 {
            return Err(CeremonyError::InvalidRequest(
                "generated PINs have 6 to 8 digits: enrollment.min_pin_length is longer".into(),
            ));
        }
        let pin = generate_pin(&mut rand::rngs::OsRng, min.max(6) as usize);
        let status = self
            .set_pin(device, pin.expose().to_string(), None, who)
            .await?;
        lock(&self.generated_pins).insert(status.info.id.clone());
        Ok((status, pin))
    }

    /// Write `[enrollment]` onto the key after an enrollment; None when there is no policy
    /// to write. Never fails the enrollment: the outcome is reported and audited.
    pub(super) async fn write_pin_policy(
        &self,
        actor: &Arc<DeviceActor>,
        writable: bool,
        pin: Option<Pin>,
        who: &str,
    ) -> Option<serde_json::Value> {
        let policy = &self.cfg.enrollment;
        let generated = lock(&self.generated_pins).remove(actor.id());
        if !policy.writes_policy() {
            return None;
        }
        let min = policy.min_pin_length;
        let force = policy.force_pin_change && generated;
        let outcome = match (writable, pin) {
            (false, _) => Err("the key does not support CTAP 2.1 authenticatorConfig \
                 (setMinPINLength); the PIN policy could not be written to it"
                .to_string()),
            (true, None) => Err("the enrollment used no PIN; the PIN policy could not be \
                 written to the key"
                .to_string()),
            (true, Some(pin)) => {
                let ctx =
                    OpContext::new(Instant::now() + Duration::from_secs(10), Arc::new(|_| {}));
                actor
                    .run(ctx, move |a, _| a.set_pin_policy(&pin, min, force))
                    .await
                    .map_err(|e: DeviceError| {
                        format!(
                            "the key refused the PIN policy ({}); it was not written",
                            e.code()
                        )
                    })
            }
        };
        let written = outcome.is_ok();
        let audit = NewAudit::new("device.pin_policy", who).detail(serde_json::json!({
            "device": actor.id(), "written": written, "min_pin_length": min,
            "force_pin_change": force,
        }));
        if let Err(e) = self.store.append_audit(&audit).await {
            tracing::error!(error = %e, "cannot audit the PIN policy write");
        }
        Some(match outcome {
            Ok(()) => serde_json::json!({
                "written": true, "min_pin_length": min, "force_pin_change": force,
            }),
            Err(note) => serde_json::json!({
                "written": false, "min_pin_length": min, "force_pin_change": force,
                "note": note,
            }),
        })
    }
}
