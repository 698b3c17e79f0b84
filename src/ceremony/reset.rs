//! The factory-reset ceremony at the kiosk. CTAP 2.1 §6.6 lets a key accept authenticatorReset
//! only within a few seconds of powering up (~10 s; 5 s on older YubiKeys), so keygate cannot
//! reset a key that has sat in the port: it asks the student to unplug and replug it
//! (`needs_replug`), watches the device list for the key coming back, sends the reset at once
//! (`waiting_touch`: the key wants a touch), and ends `succeeded`, `failed` (with the error:
//! `reset_window_missed`, `operation_denied`, `touch_timeout`, ...) or `cancelled`.
//!
//! "Coming back": the key's device id vanished from the list and a device reappeared under that
//! id or under an id that was not plugged when the reset started (a USB key may get another
//! hidraw path), or a simulated key reports a new power-up. A key of another model (AAGUID)
//! is not reset. Before the replug keygate asks the key, without a touch, which of the
//! credentials enrolled in its port it holds (`device::held_credentials`); after a success
//! those are revoked (`state_reason: "key_reset"`, see `store/key_reset.rs`) and
//! `device.reset` is audited with the outcome. Resets live in memory only (their audit entry
//! is the record).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{watch, Notify};

use super::{CeremonyError, CeremonyService, ErrorView};
use crate::base::error::PublicError;
use crate::base::sync::lock;
use crate::device::actor::DeviceActor;
use crate::device::{held_credentials, DeviceError, DeviceInfo, OpContext};
use crate::store::NewAudit;

/// How long the kiosk gives the student to replug and touch, unless the request says.
pub const DEFAULT_RESET_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the device list is polled while waiting for the replug: well inside the
/// shortest power-up window (5 s).
const REPLUG_POLL: Duration = Duration::from_millis(100);
/// How long ended resets stay readable.
const RETENTION: Duration = Duration::from_secs(3600);
/// How long asking the key which credentials it holds may take (one silent request per
/// maxCredentialCountInList candidates, a few milliseconds each on a USB key).
const HELD_CHECK: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResetState {
    /// Ask the student to unplug the key and plug it back in.
    NeedsReplug,
    /// The reset was sent; the key waits for a touch.
    WaitingTouch,
    Succeeded,
    Failed,
    Cancelled,
}

impl ResetState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NeedsReplug => "needs_replug",
            Self::WaitingTouch => "waiting_touch",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// What clients see of a reset.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ResetView {
    pub id: String,
    pub state: ResetState,
    /// The key's device id when the reset started.
    pub device: String,
    /// The id the key came back under (a USB key may get another path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replugged_device: Option<String>,
    pub aaguid: Option<uuid::Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// `failed`/`cancelled`: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorView>,
    /// `succeeded`: how many of keygate's credentials were revoked with `key_reset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_credentials: Option<usize>,
}

struct Reset {
    view: watch::Sender<ResetView>,
    cancelled: AtomicBool,
    cancel_notify: Notify,
    /// The actor the reset command went to, once sent (a cancel interrupts it).
    sent_to: Mutex<Option<Arc<DeviceActor>>>,
    /// The credentials keygate knows that the key held before the reset: revoked after it.
    held: Vec<Vec<u8>>,
    ended_at: Mutex<Option<Instant>>,
}

/// The live resets.
#[derive(Default)]
pub struct Resets {
    live: Mutex<HashMap<String, Arc<Reset>>>,
}

fn error_view(e: &DeviceError) -> ErrorView {
    ErrorView {
        code: e.code().to_string(),
        message: e.public_message(),
        retries_left: None,
        retry_after: None,
        reason: None,
    }
}

impl CeremonyService {
    /// Start resetting device `device` (which must be plugged): answers the `needs_replug` view.
    pub async fn start_reset(
        self: &Arc<Self>,
        device: &str,
        timeout: Option<Duration>,
        who: &str,
    ) -> Result<ResetView, CeremonyError> {
        let timeout = timeout.unwrap_or(DEFAULT_RESET_TIMEOUT);
        if timeout.is_zero() || timeout > Duration::from_secs(600) {
            return Err(CeremonyError::InvalidRequest(
                "`timeout_ms` must be between 1 and 600000".into(),
            ));
        }
        let actor = self.devices.select(Some(device))?;
        let info = actor.status().await?.info;
        let held = self.credentials_on_key(&actor, &info).await?;
        let others: BTreeSet<String> = self
            .devices
            .ids()
            .into_iter()
            .filter(|i| i != device)
            .collect();
        let now = self.clock.now();
        let id = crate::store::new_row_id();
        let view = ResetView {
            id: id.clone(),
            state: ResetState::NeedsReplug,
            device: device.to_string(),
            replugged_device: None,
            aaguid: info.aaguid,
            created_at: now,
            expires_at: now + timeout,
            error: None,
            revoked_credentials: None,
        };
        let reset = Arc::new(Reset {
            view: watch::channel(view.clone()).0,
            cancelled: AtomicBool::new(false),
            cancel_notify: Notify::new(),
            sent_to: Mutex::new(None),
            held,
            ended_at: Mutex::new(None),
        });
        {
            let mut live = lock(&self.resets.live);
            live.retain(|_, r| lock(&r.ended_at).is_none_or(|t| t.elapsed() < RETENTION));
            live.insert(id, reset.clone());
        }
        let svc = self.clone();
        let who = who.to_string();
        let start_power = actor.power_ups();
        let deadline = Instant::now() + timeout;
        tokio::spawn(async move {
            let outcome = svc
                .run_reset(&reset, actor, start_power, others, deadline)
                .await;
            svc.conclude_reset(&reset, outcome, &who).await;
        });
        Ok(view)
    }

    /// Which of the credentials enrolled in the key's port with its AAGUID the key holds,
    /// asked without a touch now (after the reset nothing can tell): see `store/key_reset.rs`.
    async fn credentials_on_key(
        &self,
        actor: &Arc<DeviceActor>,
        info: &DeviceInfo,
    ) -> Result<Vec<Vec<u8>>, CeremonyError> {
        let candidates = self.store.reset_candidates(actor.id(), info.aaguid)?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let rp_id = self.cfg.relying_party.id.clone();
        let per_request = info.max_credentials_in_list.unwrap_or(1) as usize;
        let ctx = OpContext::new(Instant::now() + HELD_CHECK, Arc::new(|_| {}));
        Ok(actor
            .run(ctx, move |a, ctx| {
                held_credentials(a, &rp_id, &candidates, per_request, ctx)
            })
            .await?)
    }

    async fn run_reset(
        &self,
        reset: &Reset,
        actor: Arc<DeviceActor>,
        start_power: u64,
        others: BTreeSet<String>,
        deadline: Instant,
    ) -> Result<(), DeviceError> {
        let device = actor.id().to_string();
        let aaguid = reset.view.borrow().aaguid;
        let mut gone = false;
        let back = loop {
            if reset.cancelled.load(Ordering::SeqCst) {
                return Err(DeviceError::Cancelled);
            }
            if Instant::now() >= deadline {
                return Err(DeviceError::TouchTimeout);
            }
            let plugged = self.devices.refresh()?;
            let same = plugged.iter().find(|a| a.id() == device);
            gone |= same.is_none();
            let candidate = match same {
                Some(a) if gone || a.power_ups() != start_power => Some(a.clone()),
                Some(_) => None,
                None if gone => plugged.iter().find(|a| !others.contains(a.id())).cloned(),
                None => None,
            };
            if let Some(a) = candidate {
                break a;
            }
            tokio::select! {
                _ = tokio::time::sleep(REPLUG_POLL) => {}
                _ = reset.cancel_notify.notified() => {}
            }
        };
        // The window is running: no getInfo round trip before the reset when the key is the
        // same device; a key under a new id is checked to be the same model first.
        if back.id() != device {
            let info = back.status().await?.info;
            if info.aaguid != aaguid {
                return Err(DeviceError::NoDevice);
            }
        }
        *lock(&reset.sent_to) = Some(back.clone());
        reset.view.send_modify(|v| {
            v.state = ResetState::WaitingTouch;
            v.replugged_device = Some(back.id().to_string());
        });
        if reset.cancelled.load(Ordering::SeqCst) {
            return Err(DeviceError::Cancelled);
        }
        let ctx = OpContext::new(deadline, Arc::new(|_| {}));
        back.run(ctx, |a, ctx| a.reset(ctx)).await
    }

    async fn conclude_reset(&self, reset: &Reset, outcome: Result<(), DeviceError>, who: &str) {
        let view = reset.view.borrow().clone();
        let device = view.replugged_device.clone().unwrap_or(view.device.clone());
        let outcome_name = match &outcome {
            Ok(()) => "succeeded".to_string(),
            Err(DeviceError::Cancelled) => "cancelled".to_string(),
            Err(e) => e.code().to_string(),
        };
        let audit = NewAudit::new("device.reset", who)
            .ceremony(&view.id)
            .detail(serde_json::json!({
                "device": device, "aaguid": view.aaguid, "outcome": outcome_name,
            }));
        let (state, error, revoked) = match outcome {
            Ok(()) => {
                match self
                    .store
                    .revoke_credentials_of_reset_key(&view.device, reset.held.clone(), &audit)
                    .await
                {
                    Ok(r) => (ResetState::Succeeded, None, Some(r.len())),
                    Err(e) => {
                        tracing::error!(reset = %view.id, error = %e, "the key was reset but its credentials could not be revoked");
                        (ResetState::Succeeded, None, None)
                    }
                }
            }
            Err(e) => {
                if let Err(se) = self.store.append_audit(&audit).await {
                    tracing::error!(reset = %view.id, error = %se, "cannot audit device.reset");
                }
                let state = if e == DeviceError::Cancelled {
                    ResetState::Cancelled
                } else {
                    ResetState::Failed
                };
                (state, Some(error_view(&e)), None)
            }
        };
        self.devices.forget_info();
        *lock(&reset.ended_at) = Some(Instant::now());
        reset.view.send_modify(|v| {
            v.state = state;
            v.error = error;
            v.revoked_credentials = revoked;
        });
    }

    fn find_reset(&self, id: &str) -> Result<Arc<Reset>, CeremonyError> {
        lock(&self.resets.live)
            .get(id)
            .cloned()
            .ok_or(CeremonyError::NotFound)
    }

    pub fn get_reset(&self, id: &str) -> Result<ResetView, CeremonyError> {
        Ok(self.find_reset(id)?.view.borrow().clone())
    }

    pub fn subscribe_reset(&self, id: &str) -> Result<watch::Receiver<ResetView>, CeremonyError> {
        Ok(self.find_reset(id)?.view.subscribe())
    }

    /// Wait until the reset ended or `d` passed; answers its view then.
    pub async fn wait_reset(&self, id: &str, d: Duration) -> Result<ResetView, CeremonyError> {
        let mut rx = self.subscribe_reset(id)?;
        let _ = tokio::time::timeout(d, rx.wait_for(|v| v.state.is_terminal())).await;
        let view = rx.borrow().clone();
        Ok(view)
    }

    /// Cancel a reset: stops waiting for the replug, or interrupts the key waiting for a touch.
    pub fn cancel_reset(&self, id: &str) -> Result<ResetView, CeremonyError> {
        let reset = self.find_reset(id)?;
        if !reset.view.borrow().state.is_terminal() {
            reset.cancelled.store(true, Ordering::SeqCst);
            reset.cancel_notify.notify_waiters();
            if let Some(actor) = lock(&reset.sent_to).as_ref() {
                actor.cancel();
            }
        }
        let view = reset.view.borrow().clone();
        Ok(view)
    }
}
