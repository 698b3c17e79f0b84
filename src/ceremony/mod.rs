//! Ceremonies: enrollment (registration) and verification (assertion) of security keys.
//!
//! keygate is both the WebAuthn client ([`client`]: clientDataJSON, CTAP arguments) and the
//! relying party ([`rp`]: webauthn-rs verifies attestation and assertions). A ceremony runs as
//! a task that drives the device actor and publishes its [`CeremonyView`] on a watch channel,
//! which the API returns, long-polls and streams as Server-Sent Events.
//!
//! This file holds the service and its registry of live ceremonies (register, find, get, wait,
//! subscribe, submit_pin, cancel, conclude, prune). The jobs live next to it: `enroll.rs` and
//! `assert.rs` (the two ceremonies), `drive.rs` (the device conversation), `keys.rs` (device
//! choice, PIN administration), `view.rs` (the JSON shapes) and `error.rs`.
//!
//! Time: every wall-clock time the service produces (`created_at`/`expires_at` in views,
//! ceremony, user and credential records) comes from its injected [`Clock`], so tests run it on
//! a [`crate::base::clock::ManualClock`]. Deadlines of the device conversation and the in-memory
//! retention of ended ceremonies are monotonic ([`Instant`] / tokio time) and do not follow it.

mod assert;
pub mod client;
mod drive;
mod enroll;
mod entra;
mod error;
mod keys;
pub mod pin_gen;
mod pin_policy;
pub mod reset;
pub mod rp;
#[cfg(test)]
mod tests;
mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Notify};

use crate::base::clock::Clock;
use crate::base::sync::lock;
use crate::config::{Config, EnrollTarget, UserVerification};
use crate::device::actor::{DeviceActor, DeviceManager};
use crate::device::{DeviceError, Pin};
use crate::store::{CeremonyRecord, NewAudit, Store};
use rp::{RelyingParty, RpError};

pub use error::CeremonyError;
pub use view::{
    credential_json, time_json, validate_user_name, AssertionRequest, AssertionResult,
    CeremonyResult, CeremonyView, CredentialView, EnrollmentRequest, EnrollmentResult,
    EntraAssertionResult, EntraCredentialView, EntraEnrollmentResult, EntraMethodView,
    EntraOwnerView, EntraWindow, ErrorView, Kind, State,
};

/// One running (or recently finished) ceremony.
struct Ceremony {
    view: watch::Sender<CeremonyView>,
    pin_tx: mpsc::Sender<Pin>,
    cancelled: AtomicBool,
    cancel_notify: Notify,
    actor: Arc<DeviceActor>,
    ended_at: Mutex<Option<Instant>>,
    /// Who started it (`token:<id>`) and for whom: only they (or an admin) may see it.
    owner: String,
    user: Option<String>,
    /// Where the key is registered or verified (a metrics label).
    target: EnrollTarget,
    /// When it was registered, and the time its key operations took so far (drive.rs).
    started: Instant,
    key_nanos: AtomicU64,
}

impl Ceremony {
    fn update(&self, f: impl FnOnce(&mut CeremonyView)) {
        self.view.send_modify(f);
    }
    fn state(&self) -> State {
        self.view.borrow().state
    }
}

pub struct CeremonyService {
    cfg: Config,
    rp: RelyingParty,
    store: Store,
    devices: Arc<DeviceManager>,
    /// The source of every wall-clock time this service writes or shows.
    clock: Arc<dyn Clock>,
    /// `[entra]`: enrollments into users' Microsoft Entra ID accounts (`target: "entra"`).
    entra: Option<crate::entra::EntraClient>,
    live: Mutex<HashMap<String, Arc<Ceremony>>>,
    /// When [`CeremonyService::prune`] last walked `live`.
    pruned_at: Mutex<Option<Instant>>,
    metrics: crate::metrics::Metrics,
    /// Keys whose PIN keygate generated, until their enrollment writes the PIN policy.
    generated_pins: Mutex<std::collections::HashSet<String>>,
    /// Factory resets (`reset.rs`), a registry of their own.
    resets: reset::Resets,
    /// `[attestation]`, checked by both enrollment paths; None: no check.
    attestation: Option<Arc<crate::attestation::AttestationPolicy>>,
}

impl CeremonyService {
    pub fn new(
        cfg: Config,
        rp: RelyingParty,
        store: Store,
        devices: Arc<DeviceManager>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        CeremonyService {
            cfg,
            rp,
            store,
            devices,
            clock,
            entra: None,
            live: Mutex::new(HashMap::new()),
            pruned_at: Mutex::new(None),
            metrics: crate::metrics::Metrics::default(),
            generated_pins: Mutex::new(Default::default()),
            resets: reset::Resets::default(),
            attestation: None,
        }
    }

    /// The service with the attestation policy (`[attestation]`).
    pub fn with_attestation(mut self, policy: Arc<crate::attestation::AttestationPolicy>) -> Self {
        self.attestation = Some(policy);
        self
    }

    /// The service counting into the daemon's metrics.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The service with Entra enrollments (`[entra]` configured).
    pub fn with_entra(mut self, entra: Option<crate::entra::EntraClient>) -> Self {
        self.entra = entra;
        self
    }

    pub fn devices(&self) -> &Arc<DeviceManager> {
        &self.devices
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Ceremony>>> {
        lock(&self.live)
    }

    fn timeout(&self, requested: Option<u64>) -> Result<Duration, CeremonyError> {
        let ms = requested.unwrap_or(self.cfg.ceremony.default_timeout_ms);
        if ms == 0 || ms > self.cfg.ceremony.max_timeout_ms {
            return Err(CeremonyError::InvalidRequest(format!(
                "`timeout_ms` must be between 1 and {}",
                self.cfg.ceremony.max_timeout_ms
            )));
        }
        Ok(Duration::from_millis(ms))
    }

    /// Drop finished ceremonies older than the retention period from memory. Walks the map at
    /// most every tenth of the retention period (and at most every second), not on every
    /// ceremony: a busy bench keeps thousands of ended ceremonies around. Measured on the
    /// monotonic clock: it bounds memory, not a time anyone reads.
    fn prune(&self) {
        let keep = Duration::from_secs(self.cfg.ceremony.retention_secs);
        {
            let mut at = lock(&self.pruned_at);
            if at.is_some_and(|t| t.elapsed() < (keep / 10).min(Duration::from_secs(1))) {
                return;
            }
            *at = Some(Instant::now());
        }
        self.live()
            .retain(|_, c| lock(&c.ended_at).is_none_or(|t| t.elapsed() < keep));
    }

    #[allow(clippy::too_many_arguments)]
    async fn register(
        &self,
        id: &str,
        kind: Kind,
        target: EnrollTarget,
        user: Option<&str>,
        actor: Arc<DeviceActor>,
        timeout: Duration,
        who: &str,
    ) -> Result<(Arc<Ceremony>, mpsc::Receiver<Pin>), CeremonyError> {
        let now = self.clock.now();
        let expires = now + timeout;
        let view = CeremonyView {
            id: id.to_string(),
            kind,
            state: State::Pending,
            user: user.map(str::to_string),
            device: Some(actor.id().to_string()),
            created_at: now,
            expires_at: expires,
            pin_retries: None,
            error: None,
            result: None,
            entra: None,
        };
        let mut audit = NewAudit::new(&format!("{}.started", kind.as_str()), who)
            .ceremony(id)
            .detail(serde_json::json!({ "device": actor.id() }));
        audit.user = user.map(str::to_string);
        self.store
            .insert_ceremony(
                &CeremonyRecord {
                    id: id.to_string(),
                    kind: kind.as_str().into(),
                    user: user.map(str::to_string),
                    state: "pending".into(),
                    error_code: None,
                    created_at: now,
                    updated_at: now,
                    expires_at: expires,
                    created_by: Some(who.to_string()),
                },
                &audit,
            )
            .await?;
        let (pin_tx, pin_rx) = mpsc::channel(1);
        let c = Arc::new(Ceremony {
            view: watch::channel(view).0,
            pin_tx,
            cancelled: AtomicBool::new(false),
            cancel_notify: Notify::new(),
            actor,
            ended_at: Mutex::new(None),
            owner: who.to_string(),
            user: user.map(str::to_string),
            target,
            started: Instant::now(),
            key_nanos: AtomicU64::new(0),
        });
        self.prune();
        self.live().insert(id.to_string(), c.clone());
        Ok((c, pin_rx))
    }

    /// The user-verification level of a ceremony. The configured level is a floor: a request
    /// may ask for more (`required` where the config says `preferred`), never for less, so a
    /// kiosk cannot drop the PIN that the campus policy requires.
    fn effective_uv(
        &self,
        requested: Option<UserVerification>,
    ) -> Result<UserVerification, CeremonyError> {
        let floor = self.cfg.relying_party.user_verification;
        match (floor, requested) {
            (_, None) => Ok(floor),
            (UserVerification::Required, Some(UserVerification::Preferred)) => {
                Err(CeremonyError::InvalidRequest(
                    "user_verification \"preferred\" is not allowed: this relying party requires user verification".into(),
                ))
            }
            (_, Some(r)) => Ok(r),
        }
    }

    /// Publish the end of a ceremony and persist it (a success was already persisted together
    /// with its credential).
    async fn conclude(
        &self,
        c: &Ceremony,
        result: Result<serde_json::Value, CeremonyError>,
        who: &str,
    ) {
        let (id, kind, user) = {
            let v = c.view.borrow();
            (v.id.clone(), v.kind, v.user.clone())
        };
        self.count_end(c, kind, &result);
        match result {
            Ok(value) => c.update(|v| {
                v.state = State::Succeeded;
                v.error = None;
                v.pin_retries = None;
                v.result = Some(value);
            }),
            Err(e) => {
                let cancelled = matches!(e, CeremonyError::Device(DeviceError::Cancelled));
                let state = if cancelled {
                    State::Cancelled
                } else {
                    State::Failed
                };
                match &e {
                    CeremonyError::Rp(RpError::Internal(d)) => {
                        tracing::error!(ceremony = %id, detail = %d, "ceremony failed internally")
                    }
                    CeremonyError::Store(d) => {
                        tracing::error!(ceremony = %id, detail = %d, "ceremony failed in store")
                    }
                    CeremonyError::Device(
                        d @ (DeviceError::Ctap(_) | DeviceError::Protocol(_) | DeviceError::Io(_)),
                    ) => {
                        tracing::warn!(ceremony = %id, detail = %d, "device error")
                    }
                    CeremonyError::Rp(d) => {
                        tracing::warn!(ceremony = %id, detail = %d, "verification failed")
                    }
                    CeremonyError::Entra(d) => {
                        tracing::warn!(ceremony = %id, detail = %d, "Microsoft Entra ID refused or failed")
                    }
                    _ => {}
                }
                let view = ErrorView::from(&e);
                // The quarantine path persisted its failure together with the quarantine.
                if !matches!(e, CeremonyError::PossibleClonedKey) {
                    let mut audit =
                        NewAudit::new(&format!("{}.{}", kind.as_str(), state.as_str()), who)
                            .ceremony(&id)
                            .detail(serde_json::json!({ "code": view.code }));
                    audit.user = user;
                    if let Err(se) = self
                        .store
                        .update_ceremony(&id, state.as_str(), Some(&view.code), Some(&audit))
                        .await
                    {
                        tracing::error!(ceremony = %id, error = %se, "cannot persist ceremony end; retrying");
                        persist_end_later(&self.store, &id, state, &view.code, audit);
                    }
                }
                c.update(|v| {
                    v.state = state;
                    v.pin_retries = None;
                    v.error = Some(view);
                });
            }
        }
        *lock(&c.ended_at) = Some(Instant::now());
    }

    fn count_end(
        &self,
        c: &Ceremony,
        kind: Kind,
        result: &Result<serde_json::Value, CeremonyError>,
    ) {
        let (outcome, state) = match result {
            Ok(_) => ("succeeded", State::Succeeded),
            Err(e @ CeremonyError::Device(DeviceError::Cancelled)) => {
                (e.code().as_str(), State::Cancelled)
            }
            Err(e) => (e.code().as_str(), State::Failed),
        };
        self.metrics.ceremony_ended(crate::metrics::CeremonyEnd {
            kind: kind.as_str(),
            target: match c.target {
                EnrollTarget::Local => "local",
                EnrollTarget::Entra => "entra",
            },
            outcome,
            state: state.as_str(),
            elapsed: c.started.elapsed(),
            in_key: Duration::from_nanos(c.key_nanos.load(Ordering::Relaxed)),
        });
    }

    fn find(&self, id: &str, kind: Kind) -> Option<Arc<Ceremony>> {
        self.live()
            .get(id)
            .filter(|c| c.view.borrow().kind == kind)
            .cloned()
    }

    /// Who started ceremony `id` (None for stored rows older than that record) and for
    /// which user; `NotFound` for an unknown id or another kind.
    pub fn owner(
        &self,
        id: &str,
        kind: Kind,
    ) -> Result<(Option<String>, Option<String>), CeremonyError> {
        if let Some(c) = self.find(id, kind) {
            return Ok((Some(c.owner.clone()), c.user.clone()));
        }
        let rec = self.stored(id, kind)?;
        Ok((rec.created_by, rec.user))
    }

    /// The stored record of ceremony `id` of `kind`; `NotFound` for another kind.
    fn stored(&self, id: &str, kind: Kind) -> Result<CeremonyRecord, CeremonyError> {
        self.store
            .get_ceremony(id)?
            .filter(|rec| rec.kind == kind.as_str())
            .ok_or(CeremonyError::NotFound)
    }

    /// The current view; falls back to the stored record for ceremonies no longer in memory
    /// (e.g. ended by a restart).
    pub fn get(&self, id: &str, kind: Kind) -> Result<CeremonyView, CeremonyError> {
        if let Some(c) = self.find(id, kind) {
            return Ok(c.view.borrow().clone());
        }
        let rec = self.stored(id, kind)?;
        let state = State::parse(&rec.state);
        Ok(CeremonyView {
            id: rec.id,
            kind,
            state,
            user: rec.user,
            device: None,
            created_at: rec.created_at,
            expires_at: rec.expires_at,
            pin_retries: None,
            error: rec.error_code.map(|code| ErrorView {
                message: match code.as_str() {
                    "ceremony_interrupted" => {
                        "the ceremony was interrupted by a restart of keygate; start again".into()
                    }
                    _ => "the ceremony ended".into(),
                },
                code,
                retries_left: None,
                retry_after: None,
                reason: None,
            }),
            result: None,
            entra: None,
        })
    }

    /// Wait until the ceremony ended or needs the client, or `max` elapsed.
    pub async fn wait(
        &self,
        id: &str,
        kind: Kind,
        max: Duration,
    ) -> Result<CeremonyView, CeremonyError> {
        let Some(c) = self.find(id, kind) else {
            return self.get(id, kind);
        };
        let mut rx = c.view.subscribe();
        // A cancelled ceremony still in `needs_pin` is winding down: wait for its end.
        let settled = |v: &CeremonyView| {
            v.state.is_terminal()
                || (v.state.needs_client_or_done() && !c.cancelled.load(Ordering::SeqCst))
        };
        let _ = tokio::time::timeout(max, rx.wait_for(settled)).await;
        let v = rx.borrow().clone();
        Ok(v)
    }

    pub fn subscribe(
        &self,
        id: &str,
        kind: Kind,
    ) -> Result<watch::Receiver<CeremonyView>, CeremonyError> {
        self.find(id, kind)
            .map(|c| c.view.subscribe())
            .ok_or(CeremonyError::NotFound)
    }

    pub fn submit_pin(
        &self,
        id: &str,
        kind: Kind,
        pin: String,
    ) -> Result<CeremonyView, CeremonyError> {
        let c = self.find(id, kind).ok_or(CeremonyError::NotFound)?;
        let pin = Pin::new(pin);
        pin.check_policy(match kind {
            Kind::Enrollment => self.cfg.enrollment.min_pin_length,
            _ => 4,
        })?;
        if c.state() != State::NeedsPin {
            return Err(if c.state().is_terminal() {
                CeremonyError::AlreadyEnded
            } else {
                CeremonyError::NotWaitingForPin
            });
        }
        c.pin_tx
            .try_send(pin)
            .map_err(|_| CeremonyError::NotWaitingForPin)?;
        let view = c.view.borrow().clone();
        Ok(view)
    }

    pub fn cancel(&self, id: &str, kind: Kind) -> Result<CeremonyView, CeremonyError> {
        let c = self.find(id, kind).ok_or(CeremonyError::NotFound)?;
        if c.state().is_terminal() {
            return Ok(c.view.borrow().clone());
        }
        c.cancelled.store(true, Ordering::SeqCst);
        c.cancel_notify.notify_waiters();
        c.actor.cancel();
        let view = c.view.borrow().clone();
        Ok(view)
    }
}

/// How long a ceremony's end that the store refused (the campus store down, a full disk) is
/// retried, once a second, before keygate gives up on recording it.
const PERSIST_END_RETRY: Duration = Duration::from_secs(600);

/// Record a ceremony's end once the store takes it again: the ceremony ended on the key, so its
/// row must not stay in a live state (`needs_pin`, `waiting_touch`) that another kiosk or a
/// service desk would read as still running. Its audit line lands with it.
fn persist_end_later(store: &Store, id: &str, state: State, code: &str, audit: NewAudit) {
    let (store, id, code) = (store.clone(), id.to_string(), code.to_string());
    tokio::spawn(async move {
        let give_up = Instant::now() + PERSIST_END_RETRY;
        while Instant::now() < give_up {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match store
                .update_ceremony(&id, state.as_str(), Some(&code), Some(&audit))
                .await
            {
                Ok(()) => {
                    tracing::info!(ceremony = %id, "ceremony end recorded after the store came back");
                    return;
                }
                Err(e) => {
                    tracing::debug!(ceremony = %id, error = %e, "ceremony end not recorded yet")
                }
            }
        }
        tracing::error!(ceremony = %id, "gave up recording the ceremony's end");
    });
}
