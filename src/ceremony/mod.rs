//! Ceremonies: enrollment (registration) and verification (assertion) of security keys.
//!
//! keygate is both the WebAuthn client ([`client`]: clientDataJSON, CTAP arguments) and the
//! relying party ([`rp`]: webauthn-rs verifies attestation and assertions). A ceremony runs as
//! a task that drives the device actor and publishes its [`CeremonyView`] on a watch channel,
//! which the API returns, long-polls and streams as Server-Sent Events.

pub mod client;
pub mod rp;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch, Notify};

use crate::base::error::{ErrorCode, PublicError};
use crate::base::sync::lock;
use crate::config::{Config, UserVerification};
use crate::device::actor::{DeviceActor, DeviceManager, DeviceStatus};
use crate::device::{DeviceError, OpContext, Pin, Progress};
use crate::store::{
    CeremonyRecord, CredentialRecord, CredentialState, NewAudit, Store, StoreError,
};
use client::b64;
use rp::{RelyingParty, RpError};

#[derive(Debug, thiserror::Error)]
pub enum CeremonyError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("not found")]
    NotFound,
    #[error("no active security key is enrolled for this user")]
    NoCredentials,
    #[error("this key is not enrolled here")]
    UnknownCredential,
    #[error("the key's signature counter went backwards: it may be a cloned key")]
    PossibleClonedKey,
    #[error("this key is in quarantine; ask the service desk")]
    CredentialQuarantined,
    #[error("the key's attestation was not accepted")]
    AttestationRejected,
    #[error("the ceremony expired")]
    CeremonyExpired,
    #[error("the key has no PIN yet; set one first")]
    PinNotSet,
    #[error("this key cannot store discoverable credentials")]
    DiscoverableUnsupported,
    #[error("the ceremony is not waiting for a PIN")]
    NotWaitingForPin,
    #[error("the ceremony has already ended")]
    AlreadyEnded,
    #[error(transparent)]
    Rp(#[from] RpError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CeremonyError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CeremonyError::Device(d) => d.code(),
            CeremonyError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            CeremonyError::NotFound => ErrorCode::NotFound,
            CeremonyError::NoCredentials => ErrorCode::NoCredentials,
            CeremonyError::UnknownCredential => ErrorCode::UnknownCredential,
            CeremonyError::PossibleClonedKey => ErrorCode::PossibleClonedKey,
            CeremonyError::CredentialQuarantined => ErrorCode::CredentialQuarantined,
            CeremonyError::AttestationRejected => ErrorCode::AttestationRejected,
            CeremonyError::CeremonyExpired => ErrorCode::CeremonyExpired,
            CeremonyError::PinNotSet => ErrorCode::PinNotSet,
            CeremonyError::DiscoverableUnsupported => ErrorCode::DiscoverableUnsupported,
            CeremonyError::NotWaitingForPin => ErrorCode::NotWaitingForPin,
            CeremonyError::AlreadyEnded => ErrorCode::CeremonyEnded,
            CeremonyError::Rp(RpError::Verification(_)) => ErrorCode::VerificationFailed,
            CeremonyError::Rp(RpError::Attestation(_)) => ErrorCode::AttestationRejected,
            CeremonyError::Rp(RpError::Excluded) => ErrorCode::CredentialExcluded,
            CeremonyError::Rp(RpError::ClonedKey) => ErrorCode::PossibleClonedKey,
            CeremonyError::Rp(RpError::Internal(_)) | CeremonyError::Store(_) => {
                ErrorCode::Internal
            }
        }
    }

    /// Text safe to show a client: no internal detail.
    pub fn public_message(&self) -> String {
        match self {
            CeremonyError::InvalidRequest(m) => m.clone(),
            CeremonyError::Rp(RpError::Internal(_)) | CeremonyError::Store(_) => {
                "internal error".into()
            }
            CeremonyError::Rp(RpError::Verification(_)) => {
                "the key's response could not be verified".into()
            }
            CeremonyError::Rp(RpError::Attestation(_)) => {
                "the key's attestation was not accepted".into()
            }
            CeremonyError::Device(DeviceError::Ctap(_))
            | CeremonyError::Device(DeviceError::Protocol(_))
            | CeremonyError::Device(DeviceError::Io(_)) => {
                "the security key reported an error".into()
            }
            other => other.to_string(),
        }
    }

    pub fn retries_left(&self) -> Option<u32> {
        match self {
            CeremonyError::Device(DeviceError::PinInvalid { retries_left }) => *retries_left,
            _ => None,
        }
    }
}

impl PublicError for CeremonyError {
    fn code(&self) -> ErrorCode {
        CeremonyError::code(self)
    }
    fn public_message(&self) -> String {
        CeremonyError::public_message(self)
    }
    fn details(&self) -> Vec<(&'static str, serde_json::Value)> {
        self.retries_left()
            .map(|r| vec![("retries_left", r.into())])
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Enrollment,
    Assertion,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Enrollment => "enrollment",
            Kind::Assertion => "assertion",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    WaitingTouch,
    NeedsPin,
    Processing,
    Succeeded,
    Failed,
    Cancelled,
}

impl State {
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Succeeded | State::Failed | State::Cancelled)
    }
    /// Terminal, or waiting for the client (long-polls return here).
    pub fn needs_client_or_done(self) -> bool {
        self.is_terminal() || self == State::NeedsPin
    }
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::WaitingTouch => "waiting_touch",
            State::NeedsPin => "needs_pin",
            State::Processing => "processing",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }
    fn parse(s: &str) -> State {
        match s {
            "pending" => State::Pending,
            "waiting_touch" => State::WaitingTouch,
            "needs_pin" => State::NeedsPin,
            "processing" => State::Processing,
            "succeeded" => State::Succeeded,
            "cancelled" => State::Cancelled,
            _ => State::Failed,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorView {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries_left: Option<u32>,
}

impl From<&CeremonyError> for ErrorView {
    fn from(e: &CeremonyError) -> Self {
        ErrorView {
            code: e.code().to_string(),
            message: e.public_message(),
            retries_left: e.retries_left(),
        }
    }
}

/// What clients see of a ceremony.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CeremonyView {
    pub id: String,
    pub kind: Kind,
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// While `needs_pin`: PIN retries left on the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_retries: Option<u32>,
    /// `failed`/`cancelled`: why. `needs_pin` after a wrong PIN: the `pin_invalid` error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentRequest {
    pub user: String,
    pub display_name: String,
    #[serde(default)]
    pub nickname: Option<String>,
    #[serde(default)]
    pub discoverable: Option<bool>,
    #[serde(default)]
    pub user_verification: Option<UserVerification>,
    #[serde(default)]
    pub pin: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionRequest {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub user_verification: Option<UserVerification>,
    #[serde(default)]
    pub pin: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The one user-name rule ([`crate::base::user`]).
pub fn validate_user_name(u: &str) -> Result<(), CeremonyError> {
    crate::base::user::UserName::parse(u)
        .map(|_| ())
        .map_err(|e| CeremonyError::InvalidRequest(e.to_string()))
}

fn validate_text(field: &str, v: &str, max: usize) -> Result<(), CeremonyError> {
    crate::base::text::check_text(v, max)
        .map_err(|_| CeremonyError::InvalidRequest(crate::base::text::text_message(field, max)))
}

fn parse_pin(p: Option<String>) -> Result<Option<Pin>, CeremonyError> {
    match p {
        None => Ok(None),
        Some(p) => {
            let pin = Pin::new(p);
            pin.check_policy(4)?;
            Ok(Some(pin))
        }
    }
}

/// One running (or recently finished) ceremony.
struct Ceremony {
    view: watch::Sender<CeremonyView>,
    pin_tx: mpsc::Sender<Pin>,
    cancelled: AtomicBool,
    cancel_notify: Notify,
    actor: Arc<DeviceActor>,
    ended_at: Mutex<Option<Instant>>,
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
    live: Mutex<HashMap<String, Arc<Ceremony>>>,
    /// When [`CeremonyService::prune`] last walked `live`.
    pruned_at: Mutex<Option<Instant>>,
}

enum Waited {
    Pin(Pin),
    Cancelled,
    Expired,
}

impl CeremonyService {
    pub fn new(cfg: Config, rp: RelyingParty, store: Store, devices: Arc<DeviceManager>) -> Self {
        CeremonyService {
            cfg,
            rp,
            store,
            devices,
            live: Mutex::new(HashMap::new()),
            pruned_at: Mutex::new(None),
        }
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
    /// ceremony: a busy bench keeps thousands of ended ceremonies around.
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

    async fn select_device(
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

    #[allow(clippy::too_many_arguments)]
    fn register(
        &self,
        id: &str,
        kind: Kind,
        user: Option<&str>,
        actor: Arc<DeviceActor>,
        timeout: Duration,
        who: &str,
    ) -> Result<(Arc<Ceremony>, mpsc::Receiver<Pin>), CeremonyError> {
        let now = OffsetDateTime::now_utc();
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
        };
        let mut audit = NewAudit::new(&format!("{}.started", kind.as_str()), who)
            .ceremony(id)
            .detail(serde_json::json!({ "device": actor.id() }));
        audit.user = user.map(str::to_string);
        self.store.insert_ceremony(
            &CeremonyRecord {
                id: id.to_string(),
                kind: kind.as_str().into(),
                user: user.map(str::to_string),
                state: "pending".into(),
                error_code: None,
                created_at: now,
                updated_at: now,
                expires_at: expires,
            },
            &audit,
        )?;
        let (pin_tx, pin_rx) = mpsc::channel(1);
        let c = Arc::new(Ceremony {
            view: watch::channel(view).0,
            pin_tx,
            cancelled: AtomicBool::new(false),
            cancel_notify: Notify::new(),
            actor,
            ended_at: Mutex::new(None),
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

    pub async fn start_enrollment(
        self: &Arc<Self>,
        req: EnrollmentRequest,
        who: &str,
    ) -> Result<CeremonyView, CeremonyError> {
        validate_user_name(&req.user)?;
        validate_text("display_name", &req.display_name, 128)?;
        if let Some(n) = &req.nickname {
            validate_text("nickname", n, 64)?;
        }
        let timeout = self.timeout(req.timeout_ms)?;
        let pin = parse_pin(req.pin.clone())?;
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
        let (user, existing) = match self.store.get_user(&req.user)? {
            Some(u) => {
                let existing = self.store.list_credentials(&u.name, false)?;
                let user = crate::store::UserRecord {
                    display_name: req.display_name.clone(),
                    ..u
                };
                (user, existing)
            }
            None => {
                let mut handle = [0u8; 16];
                rand::rngs::OsRng.fill_bytes(&mut handle);
                let user = crate::store::UserRecord {
                    name: req.user.clone(),
                    display_name: req.display_name.clone(),
                    user_handle: handle.to_vec(),
                    created_at: OffsetDateTime::now_utc(),
                };
                (user, Vec::new())
            }
        };
        let (options, reg_state) =
            self.rp
                .start_registration(&user, &existing, uv, discoverable, timeout)?;
        let (cdj, args) =
            client::make_credential_args(&options, &self.rp.origin, key_can_verify, pin);

        let id = crate::store::new_row_id();
        let (c, pin_rx) =
            self.register(&id, Kind::Enrollment, Some(&user.name), actor, timeout, who)?;
        let svc = self.clone();
        let model = info.model.clone();
        let nickname = req.nickname.clone();
        let deadline = Instant::now() + timeout;
        let who = who.to_string();
        let task_c = c.clone();
        tokio::spawn(async move {
            let c = task_c;
            let outcome = svc
                .drive(&c, deadline, pin_rx, args, |a, args, ctx| {
                    a.make_credential(args, ctx)
                })
                .await;
            let result = match outcome {
                Ok(out) => svc.finish_enrollment(
                    &c,
                    &user,
                    &cdj,
                    &out,
                    &reg_state,
                    discoverable,
                    nickname,
                    model,
                    &who,
                ),
                Err(e) => Err(e),
            };
            svc.conclude(&c, result, &who);
        });
        let view = c.view.borrow().clone();
        Ok(view)
    }

    pub async fn start_assertion(
        self: &Arc<Self>,
        req: AssertionRequest,
        who: &str,
    ) -> Result<CeremonyView, CeremonyError> {
        if let Some(u) = &req.user {
            validate_user_name(u)?;
        }
        let timeout = self.timeout(req.timeout_ms)?;
        let pin = parse_pin(req.pin.clone())?;
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
        let (c, pin_rx) = self.register(
            &id,
            Kind::Assertion,
            req.user.as_deref(),
            actor,
            timeout,
            who,
        )?;
        let svc = self.clone();
        let deadline = Instant::now() + timeout;
        let who = who.to_string();
        let named_user = req.user.clone();
        let task_c = c.clone();
        tokio::spawn(async move {
            let c = task_c;
            let outcome = svc
                .drive(&c, deadline, pin_rx, args, |a, args, ctx| {
                    a.get_assertion(args, ctx)
                })
                .await;
            let result = match outcome {
                Ok(outs) => {
                    svc.finish_assertion(&c, named_user.as_deref(), &cdj, outs, auth_state, &who)
                }
                Err(e) => Err(e),
            };
            svc.conclude(&c, result, &who);
        });
        let view = c.view.borrow().clone();
        Ok(view)
    }

    /// Run the device operation, asking the client for a PIN when the key needs one and
    /// retrying after a wrong PIN, until success, a terminal error, cancel or the deadline.
    async fn drive<A, T, F>(
        &self,
        c: &Arc<Ceremony>,
        deadline: Instant,
        mut pin_rx: mpsc::Receiver<Pin>,
        mut args: A,
        op: F,
    ) -> Result<T, CeremonyError>
    where
        A: PinArgs + Clone + Send + 'static,
        T: Send + 'static,
        F: Fn(&dyn crate::device::Authenticator, &A, &OpContext) -> Result<T, DeviceError>
            + Send
            + Sync
            + Copy
            + 'static,
    {
        let mut last_error: Option<CeremonyError> = None;
        let mut need_pin = false;
        loop {
            if c.cancelled.load(Ordering::SeqCst) {
                return Err(DeviceError::Cancelled.into());
            }
            if std::mem::take(&mut need_pin) {
                let retries = self.pin_retries(&c.actor, deadline).await;
                let err_view = last_error.as_ref().map(ErrorView::from);
                c.update(|v| {
                    v.state = State::NeedsPin;
                    v.pin_retries = retries;
                    v.error = err_view;
                });
                self.persist_state(c, State::NeedsPin);
                match self.wait_for_pin(c, deadline, &mut pin_rx).await {
                    Waited::Pin(p) => args.set_pin(Some(p)),
                    Waited::Cancelled => return Err(DeviceError::Cancelled.into()),
                    Waited::Expired => return Err(CeremonyError::CeremonyExpired),
                }
                c.update(|v| {
                    v.state = State::Pending;
                    v.pin_retries = None;
                    v.error = None;
                });
            }
            let view = c.view.clone();
            let progress: Arc<dyn Fn(Progress) + Send + Sync> = Arc::new(move |p| {
                let state = match p {
                    Progress::WaitingTouch => State::WaitingTouch,
                    Progress::Processing => State::Processing,
                    _ => return,
                };
                view.send_modify(|v| {
                    if !v.state.is_terminal() {
                        v.state = state;
                    }
                });
            });
            let ctx = OpContext::new(deadline, progress);
            let call_args = args.clone();
            let r = c
                .actor
                .run_ceremony(ctx, move |a, ctx| op(a, &call_args, ctx))
                .await;
            match r {
                Ok(t) => return Ok(t),
                Err(DeviceError::PinRequired) if !args.has_pin() => {
                    need_pin = true;
                    last_error = None;
                }
                Err(e @ DeviceError::PinInvalid { .. }) => {
                    args.set_pin(None);
                    need_pin = true;
                    last_error = Some(e.into());
                }
                Err(DeviceError::Cancelled) if !c.cancelled.load(Ordering::SeqCst) => {
                    return Err(DeviceError::TouchTimeout.into())
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn pin_retries(&self, actor: &Arc<DeviceActor>, deadline: Instant) -> Option<u32> {
        let ctx = OpContext::new(
            deadline.min(Instant::now() + Duration::from_secs(5)),
            Arc::new(|_| {}),
        );
        actor.run(ctx, |a, _| a.pin_retries()).await.ok()
    }

    async fn wait_for_pin(
        &self,
        c: &Arc<Ceremony>,
        deadline: Instant,
        pin_rx: &mut mpsc::Receiver<Pin>,
    ) -> Waited {
        let notified = c.cancel_notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if c.cancelled.load(Ordering::SeqCst) {
            return Waited::Cancelled;
        }
        tokio::select! {
            p = pin_rx.recv() => match p { Some(p) => Waited::Pin(p), None => Waited::Cancelled },
            _ = &mut notified => Waited::Cancelled,
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => Waited::Expired,
        }
    }

    fn persist_state(&self, c: &Ceremony, state: State) {
        let id = c.view.borrow().id.clone();
        if let Err(e) = self.store.update_ceremony(&id, state.as_str(), None, None) {
            tracing::error!(ceremony = %id, error = %e, "cannot persist ceremony state");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_enrollment(
        &self,
        c: &Ceremony,
        user: &crate::store::UserRecord,
        cdj: &[u8],
        out: &crate::device::MakeCredentialOutput,
        reg_state: &rp::RegistrationState,
        discoverable: bool,
        nickname: Option<String>,
        model: Option<String>,
        who: &str,
    ) -> Result<serde_json::Value, CeremonyError> {
        c.update(|v| v.state = State::Processing);
        let reg = client::registration_credential(cdj, out);
        let verified = self.rp.finish_registration(&reg, reg_state)?;
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
            model,
            created_at: OffsetDateTime::now_utc(),
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
            }));
        match self.store.insert_credential(user, &record, &id, &audit) {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(DeviceError::CredentialExcluded.into());
            }
            Err(e) => return Err(e.into()),
        }
        Ok(serde_json::json!({
            "credential": credential_json(&record, false),
            "registration_response": client::registration_response_json(cdj, out),
        }))
    }

    fn finish_assertion(
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
                self.store.quarantine_credential(
                    &rec.id,
                    &format!("counter {counter} not above stored {}", rec.counter),
                    &id,
                    &audit,
                )?;
                tracing::warn!(user = %rec.user, credential = %cred_b64, "possible cloned key: credential quarantined");
                Err(CeremonyError::PossibleClonedKey)
            }
            e => Err(e.into()),
        }
    }

    /// Publish the end of a ceremony and persist it (a success was already persisted together
    /// with its credential).
    fn conclude(&self, c: &Ceremony, result: Result<serde_json::Value, CeremonyError>, who: &str) {
        let (id, kind, user) = {
            let v = c.view.borrow();
            (v.id.clone(), v.kind, v.user.clone())
        };
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
                    if let Err(se) = self.store.update_ceremony(
                        &id,
                        state.as_str(),
                        Some(&view.code),
                        Some(&audit),
                    ) {
                        tracing::error!(ceremony = %id, error = %se, "cannot persist ceremony end");
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

    fn find(&self, id: &str, kind: Kind) -> Option<Arc<Ceremony>> {
        self.live()
            .get(id)
            .filter(|c| c.view.borrow().kind == kind)
            .cloned()
    }

    /// The current view; falls back to the stored record for ceremonies no longer in memory
    /// (e.g. ended by a restart).
    pub fn get(&self, id: &str, kind: Kind) -> Result<CeremonyView, CeremonyError> {
        if let Some(c) = self.find(id, kind) {
            return Ok(c.view.borrow().clone());
        }
        let rec = self
            .store
            .get_ceremony(id)?
            .ok_or(CeremonyError::NotFound)?;
        if rec.kind != kind.as_str() {
            return Err(CeremonyError::NotFound);
        }
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
            }),
            result: None,
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
        let _ = tokio::time::timeout(max, rx.wait_for(|v| v.state.needs_client_or_done())).await;
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
        pin.check_policy(4)?;
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
        let (actor, status) = self.select_device(Some(device)).await?;
        new_pin.check_policy(status.info.min_pin_length.unwrap_or(4))?;
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
        self.store.append_audit(
            &NewAudit::new(event, who)
                .detail(serde_json::json!({ "device": device, "outcome": outcome })),
        )?;
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

/// Arguments that may carry a PIN.
trait PinArgs {
    fn has_pin(&self) -> bool;
    fn set_pin(&mut self, pin: Option<Pin>);
}

macro_rules! impl_pin_args {
    ($t:ty) => {
        impl PinArgs for $t {
            fn has_pin(&self) -> bool {
                self.pin.is_some()
            }
            fn set_pin(&mut self, pin: Option<Pin>) {
                self.pin = pin;
            }
        }
    };
}
impl_pin_args!(crate::device::MakeCredentialArgs);
impl_pin_args!(crate::device::GetAssertionArgs);

pub fn time_json(t: OffsetDateTime) -> String {
    crate::store::fmt_time(t)
}

/// The API representation of a stored credential. `with_public_key` adds the COSE key (admin).
pub fn credential_json(r: &CredentialRecord, with_public_key: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": b64(&r.id),
        "user": r.user,
        "nickname": r.nickname,
        "aaguid": r.aaguid,
        "model": r.model,
        "attestation_format": r.attestation_format,
        "attested": r.attested,
        "discoverable": r.discoverable,
        "user_verified": r.user_verified,
        "counter": r.counter,
        "created_at": time_json(r.created_at),
        "last_used_at": r.last_used_at.map(time_json),
        "state": r.state,
        "state_reason": r.state_reason,
    });
    if with_public_key {
        v["public_key_cose"] = serde_json::Value::String(b64(&r.public_key_cose));
    }
    v
}
