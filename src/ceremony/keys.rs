//! Key administration: choosing the key a ceremony talks to, and setting or changing its PIN.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::device::actor::{DeviceActor, DeviceStatus};
use crate::device::{DeviceError, OpContext, Pin};
use crate::store::NewAudit;

use super::rp::RpError;
use super::{CeremonyError, CeremonyService};

impl CeremonyService {
    pub(super) async fn select_device(
        &self,
        requested: Option<&str>,
    ) -> Result<(Arc<DeviceActor>, DeviceStatus), CeremonyError> {
        let devices = self.devices.clone();
        let requested = requested.map(str::to_string);
        let actor = tokio::task::spawn_blocking(move || devices.select(requested.as_deref()))
            .await
            .map_err(|e| RpError::Internal(e.to_string()))??;
        let status = actor.ceremony_status().await?;
        if status.busy {
            return Err(DeviceError::Busy.into());
        }
        Ok((actor, status))
    }

    /// Set or change a key's PIN (kiosk: before enrolling a key that has none).
    pub async fn set_pin(
        &self,
        device: &str,
        new_pin: String,
        current_pin: Option<String>,
        who: &str,
    ) -> Result<DeviceStatus, CeremonyError> {
        let new_pin = Pin::new(new_pin);
        let current = current_pin.map(Pin::new);
        // The campus policy first: a PIN it refuses never reaches the key.
        new_pin.check_policy(self.cfg.enrollment.min_pin_length)?;
        let (actor, status) = self.select_device(Some(device)).await?;
        let key_min = status.info.min_pin_length.unwrap_or(4);
        new_pin.check_policy(key_min.max(self.cfg.enrollment.min_pin_length))?;
        let changing = current.is_some();
        let ctx = OpContext::new(Instant::now() + Duration::from_secs(10), Arc::new(|_| {}));
        let r = actor
            .run(ctx, move |a, _| match &current {
                Some(cur) => a.change_pin(cur, &new_pin),
                None => a.set_pin(&new_pin),
            })
            .await;
        let event = if changing {
            "device.pin_changed"
        } else {
            "device.pin_set"
        };
        let outcome = match &r {
            Ok(()) => "ok".to_string(),
            Err(e) => e.code().to_string(),
        };
        self.store
            .append_audit(
                &NewAudit::new(event, who)
                    .detail(serde_json::json!({ "device": device, "outcome": outcome })),
            )
            .await?;
        match r {
            Ok(()) => Ok(actor.status().await?),
            Err(DeviceError::PinAlreadySet)
            | Err(DeviceError::Ctap(crate::device::CtapStatus::NotAllowed))
                if !changing =>
            {
                Err(DeviceError::PinRequired.into())
            }
            Err(e) => Err(e.into()),
        }
    }
}
