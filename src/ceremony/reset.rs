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
use crate::store::{EntraPasskeyRecord, NewAudit};

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
    /// `succeeded`: how many of the key's Microsoft Entra ID passkeys are now `reset` (each
    /// deleted from its user's Entra account where Graph answered; see the audit line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entra_passkeys_reset: Option<usize>,
}

/// What keygate knows of that a key held, asked before its reset.
#[derive(Default)]
struct HeldOnKey {
    /// Local credentials (keygate's relying party).
    local: Vec<Vec<u8>>,
    /// Passkeys in users' Microsoft Entra ID accounts.
    entra: Vec<EntraPasskeyRecord>,
}

struct Reset {
    view: watch::Sender<ResetView>,
    cancelled: AtomicBool,
    cancel_notify: Notify,
    /// The actor the reset command went to, once sent (a cancel interrupts it).
    sent_to: Mutex<Option<Arc<DeviceActor>>>,
    /// The credentials keygate knows that the key held before the reset: revoked after it.
    held: HeldOnKey,
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
            entra_passkeys_reset: None,
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

    /// Which of the credentials and Entra passkeys enrolled in the key's port with its AAGUID
    /// the key holds, asked without a touch now (after the reset nothing can tell): see
    /// `store/key_reset.rs`.
    async fn credentials_on_key(
        &self,
        actor: &Arc<DeviceActor>,
        info: &DeviceInfo,
    ) -> Result<HeldOnKey, CeremonyError> {
        let local = self.store.reset_candidates(actor.id(), info.aaguid)?;
        let entra = self.store.reset_entra_candidates(actor.id(), info.aaguid)?;
        if local.is_empty() && entra.is_empty() {
            return Ok(HeldOnKey::default());
        }
        // One request names one RP: keygate's own, then each RP of the Entra passkeys.
        let mut asks: Vec<(String, Vec<Vec<u8>>)> =
            vec![(self.cfg.relying_party.id.clone(), local)];
        for p in &entra {
            match asks[1..].iter_mut().find(|(rp, _)| *rp == p.rp_id) {
                Some((_, ids)) => ids.push(p.credential_id.clone()),
                None => asks.push((p.rp_id.clone(), vec![p.credential_id.clone()])),
            }
        }
        let per_request = info.max_credentials_in_list.unwrap_or(1) as usize;
        let ctx = OpContext::new(Instant::now() + HELD_CHECK, Arc::new(|_| {}));
        let mut held = actor
            .run(ctx, move |a, ctx| {
                asks.iter()
                    .map(|(rp_id, ids)| held_credentials(a, rp_id, ids, per_request, ctx))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?
            .into_iter();
        let local = held.next().unwrap_or_default();
        let entra_held: Vec<Vec<u8>> = held.flatten().collect();
        Ok(HeldOnKey {
            local,
            entra: entra
                .into_iter()
                .filter(|p| entra_held.contains(&p.credential_id))
                .collect(),
        })
    }

    /// The Entra passkeys of a key that was reset: each deleted from its user's Entra account
    /// (a dead method there would be offered at every sign-in) and kept as `reset`. A Graph
    /// failure is logged and audited (`entra_method_deleted: false`): the passkey is dead
    /// either way, and the service desk deletes the method (`DELETE
    /// /v1/users/{user}/entra/methods/{id}`). Returns how many were marked.
    async fn reset_entra_passkeys(&self, reset: &Reset, device: &str, who: &str) -> usize {
        let mut marked = 0;
        for p in &reset.held.entra {
            let deleted = match &self.entra {
                Some(entra) => match entra.delete_fido2(&p.upn, &p.method_id).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(user = %p.user, upn = %p.upn, method_id = %p.method_id,
                            error = %e, "the reset key's Entra passkey could not be deleted from Entra");
                        false
                    }
                },
                None => false,
            };
            match self
                .store
                .mark_entra_passkey_reset(p, device, who, deleted)
                .await
            {
                Ok(true) => marked += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(user = %p.user, method_id = %p.method_id, error = %e,
                        "the reset key's Entra passkey could not be marked reset")
                }
            }
        }
        marked
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
        let (state, error, revoked, entra) = match outcome {
            Ok(()) => {
                let revoked = match self
                    .store
                    .revoke_credentials_of_reset_key(&view.device, reset.held.local.clone(), &audit)
                    .await
                {
                    Ok(r) => Some(r.len()),
                    Err(e) => {
                        tracing::error!(reset = %view.id, error = %e, "the key was reset but its credentials could not be revoked");
                        None
                    }
                };
                let entra = self.reset_entra_passkeys(reset, &device, who).await;
                (ResetState::Succeeded, None, revoked, Some(entra))
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
                (state, Some(error_view(&e)), None, None)
            }
        };
        self.devices.forget_info();
        *lock(&reset.ended_at) = Some(Instant::now());
        reset.view.send_modify(|v| {
            v.state = state;
            v.error = error;
            v.revoked_credentials = revoked;
            v.entra_passkeys_reset = entra;
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
