//! The SMS factor: six-digit codes relayed through pluggable providers, with server-side
//! attempts, expiry, lockout, resend rules and SMS-pumping budgets, and a durable outbox
//! (a message is queued in the same transaction as its challenge and sent by a worker).
//!
//! Policy decisions take the time from a [`Clock`], so tests drive expiry and lockouts with a
//! [`ManualClock`]. Every state change (its reads, checks and writes) is one atomic unit on the
//! store's writer thread ([`Store::atomic`]), so concurrent verifies cannot both win; the
//! `state = 'pending'` guards in the SQL hold the same line.
//!
//! This file holds the service, its constructor and its views; the jobs live in `challenge`
//! (create/verify/resend/cancel), `phones`, `outbox` (the worker and delivery reports),
//! `numbers` (the per-number policy cache), `fraud` (the per-prefix and monthly guards) and
//! `error`. Leaves import downward only.

pub mod code;
pub mod dispatch;
pub mod phone;
pub mod providers;
pub mod template;

mod budget;
mod challenge;
mod entra_sync;
mod error;
mod fraud;
mod numbers;
mod outbox;
mod phones;
mod send_check;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::Config;
use crate::store::{SmsChallengeRecord, Store};
use budget::RecentSends;
use challenge::HOUR_MS;
use code::CodeKeys;
use dispatch::{Dispatcher, ProviderHealth};
use numbers::{load_numbering, NumberCache};
use providers::SimInbox;

pub use crate::base::clock::{ms_to_time, Clock, ManualClock, SystemClock};
pub use challenge::{ChallengeView, Delivery, NewChallenge};
pub use error::SmsError;
pub use fraud::{FraudBlockView, FraudView, MonthlyUsageView};
pub use phones::PhoneView;

/// The one user-name rule ([`crate::base::user`]).
pub fn validate_user(user: &str) -> Result<(), SmsError> {
    crate::base::user::UserName::parse(user)
        .map(|_| ())
        .map_err(|e| SmsError::Invalid(e.to_string()))
}

pub struct SmsService {
    cfg: Config,
    store: Store,
    keys: CodeKeys,
    clock: Arc<dyn Clock>,
    dispatcher: Dispatcher,
    /// Present under `--simulate`: what the console provider "sent".
    pub inbox: Option<Arc<SimInbox>>,
    /// Per stored number: the policy check of [`phone::Numbering::parse`] and the masked form,
    /// so that the hot path does not run libphonenumber again. Trimmed to the numbers used in
    /// the last hour, and bounded.
    numbers: std::sync::Mutex<NumberCache>,
    /// The allowed countries' numbering plans; see [`SmsService::numbering`].
    numbering: Arc<std::sync::OnceLock<phone::Numbering>>,
    wake: Notify,
    /// Set once the outbox worker runs: a new message is then claimed by this daemon when it
    /// is stored and sent right after its commit, at most this many at once (see
    /// [`SmsService::send_new`]).
    direct_sends: std::sync::OnceLock<Arc<tokio::sync::Semaphore>>,
    /// Sends of the last hour: the global and per-country budgets are counted here instead of
    /// scanning the send log on every request.
    recent: std::sync::Mutex<RecentSends>,
    /// `[entra]`: verified phones are added as the user's Entra mobile method (`sync_phones`).
    entra: Option<crate::entra::EntraClient>,
    metrics: crate::metrics::Metrics,
}

impl SmsService {
    pub fn new(
        cfg: Config,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<SmsService>, SmsError> {
        Self::with_entra(cfg, store, clock, None, crate::metrics::Metrics::default())
    }

    /// [`SmsService::new`] that adds verified phones to Microsoft Entra ID (`[entra]
    /// sync_phones`) through `entra`, and counts into the daemon's `metrics`.
    pub fn with_entra(
        cfg: Config,
        store: Store,
        clock: Arc<dyn Clock>,
        entra: Option<crate::entra::EntraClient>,
        metrics: crate::metrics::Metrics,
    ) -> Result<Arc<SmsService>, SmsError> {
        if let Some(region) =
            phone::unknown_region(&cfg.sms.default_region, &cfg.sms.allowed_countries)
        {
            return Err(SmsError::Invalid(format!(
                "sms: `{region}` is not a region libphonenumber knows"
            )));
        }
        // Loading the numbering plans takes a few milliseconds: done off the start-up path, and
        // a request that needs them first waits for it.
        let numbering = Arc::new(std::sync::OnceLock::new());
        {
            let (numbering, sms_cfg) = (numbering.clone(), cfg.sms.clone());
            std::thread::spawn(move || {
                numbering.get_or_init(|| load_numbering(&sms_cfg));
            });
        }
        let keys = CodeKeys::load_or_create(&cfg.data_dir)?;
        let inbox = cfg.simulate.then(|| Arc::new(SimInbox::default()));
        let chain = providers::build_chain(&cfg.sms, cfg.simulate, inbox.clone())?;
        let dispatcher = Dispatcher::new(
            chain,
            clock.clone(),
            cfg.sms.max_retries,
            Duration::from_millis(cfg.sms.retry_base_ms),
            cfg.sms.breaker_failures,
            Duration::from_secs(cfg.sms.breaker_cooldown_secs),
        )
        .with_metrics(metrics.clone())
        .with_audit(store.clone());
        let recent = RecentSends::from_log(store.sms_recent_sends(clock.now_ms() - HOUR_MS)?);
        fraud::audit_cap_at_start(&store, &cfg.sms.fraud, clock.now_ms())?;
        let recovered = store.sms_outbox_recover()?;
        if recovered > 0 {
            tracing::info!(
                recovered,
                "SMS messages caught mid-send by a restart are queued again"
            );
        }
        Ok(Arc::new(SmsService {
            cfg,
            numbering,
            store,
            keys,
            clock,
            dispatcher,
            inbox,
            numbers: std::sync::Mutex::new(NumberCache::default()),
            wake: Notify::new(),
            direct_sends: std::sync::OnceLock::new(),
            recent: std::sync::Mutex::new(recent),
            entra,
            metrics,
        }))
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn view(&self, ch: &SmsChallengeRecord) -> ChallengeView {
        let now = self.now();
        let state = if ch.state == "pending" && now >= ch.expires_at {
            "expired".to_string()
        } else {
            ch.state.clone()
        };
        ChallengeView {
            id: ch.id.clone(),
            user: ch.user.clone(),
            phone_id: ch.phone_id.clone(),
            purpose: ch.purpose.clone(),
            state,
            masked_number: self.masked(&ch.e164),
            locale: ch.locale.clone(),
            expires_at: ms_to_time(ch.expires_at),
            resend_available_at: ms_to_time(
                ch.last_sent_at + self.cfg.sms.resend_cooldown_secs as i64 * 1000,
            ),
            resends_left: self.cfg.sms.max_resends.saturating_sub(ch.resends),
            attempts_left: self.cfg.sms.max_attempts.saturating_sub(ch.attempts),
            delivery: Delivery {
                status: ch.delivery_status.clone(),
            },
        }
    }

    fn new_id() -> String {
        crate::store::new_row_id()
    }

    pub fn providers(&self) -> Vec<ProviderHealth> {
        self.dispatcher.health()
    }

    /// Outbox messages not sent yet.
    pub fn outbox_pending(&self) -> Result<u64, SmsError> {
        Ok(self.store.sms_outbox_pending()?)
    }

    /// Users locked out of SMS codes now, on this service's clock.
    pub fn users_locked(&self) -> Result<u64, SmsError> {
        Ok(self.store.sms_users_locked(self.now())?)
    }
}
