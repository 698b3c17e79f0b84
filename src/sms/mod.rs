//! The SMS factor: six-digit codes relayed through pluggable providers, with server-side
//! attempts, expiry, lockout, resend rules and SMS-pumping budgets, and a durable outbox
//! (a message is queued in the same transaction as its challenge and sent by a worker).
//!
//! Policy decisions take the time from a [`Clock`], so tests drive expiry and lockouts with a
//! [`ManualClock`]. Every state change (its reads, checks and writes) is one atomic unit on the
//! store's writer thread ([`Store::atomic`]), so concurrent verifies cannot both win; the
//! `state = 'pending'` guards in the SQL hold the same line.

pub mod code;
pub mod dispatch;
pub mod phone;
pub mod providers;
pub mod template;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::base::error::{ErrorCode, PublicError};
use crate::base::sync::lock;
use crate::config::Config;
use crate::store::{
    NewAudit, OutboxRecord, PhoneRecord, SendLog, SmsChallengeRecord, SmsUserState, Store,
    StoreError, Tx,
};
use code::{Code, CodeKeys};
use dispatch::{Dispatched, Dispatcher, ProviderHealth};
use providers::{OutgoingSms, SimInbox};
use template::Locale;

pub use crate::base::clock::{ms_to_time, Clock, ManualClock, SystemClock};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmsError {
    #[error("wrong code")]
    WrongCode { attempts_left: u32 },
    #[error("the code has expired; ask for a new one")]
    ChallengeExpired,
    #[error("too many wrong codes for this challenge; ask for a new one")]
    ChallengeFailed,
    #[error("this code was already used")]
    ChallengeUsed,
    #[error("this challenge was cancelled")]
    ChallengeCancelled,
    #[error("too many wrong codes: SMS verification is locked for a while")]
    UserLocked { retry_after_secs: u64 },
    #[error("wait before asking for the code again")]
    ResendTooSoon { retry_after_secs: u64 },
    #[error("the code cannot be sent again; start over")]
    ResendLimit,
    #[error("too many messages; try again later")]
    RateLimited { retry_after_secs: u64 },
    #[error("this is not a valid phone number")]
    InvalidPhoneNumber,
    #[error("numbers from this country are not accepted")]
    CountryNotAllowed,
    #[error("this is not a mobile number")]
    NotAMobileNumber,
    #[error("this phone number has not been verified")]
    PhoneNotVerified,
    #[error("no SMS provider is available")]
    ProviderUnavailable,
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyConflict,
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("internal SMS error: {0}")]
    Internal(String),
}

impl SmsError {
    pub fn code(&self) -> ErrorCode {
        match self {
            SmsError::WrongCode { .. } => ErrorCode::WrongCode,
            SmsError::ChallengeExpired => ErrorCode::ChallengeExpired,
            SmsError::ChallengeFailed => ErrorCode::ChallengeFailed,
            SmsError::ChallengeUsed => ErrorCode::ChallengeUsed,
            SmsError::ChallengeCancelled => ErrorCode::ChallengeCancelled,
            SmsError::UserLocked { .. } => ErrorCode::UserLocked,
            SmsError::ResendTooSoon { .. } => ErrorCode::ResendTooSoon,
            SmsError::ResendLimit => ErrorCode::ResendLimit,
            SmsError::RateLimited { .. } => ErrorCode::RateLimited,
            SmsError::InvalidPhoneNumber => ErrorCode::InvalidPhoneNumber,
            SmsError::CountryNotAllowed => ErrorCode::CountryNotAllowed,
            SmsError::NotAMobileNumber => ErrorCode::NotAMobileNumber,
            SmsError::PhoneNotVerified => ErrorCode::PhoneNotVerified,
            SmsError::ProviderUnavailable => ErrorCode::ProviderUnavailable,
            SmsError::IdempotencyConflict => ErrorCode::IdempotencyConflict,
            SmsError::NotFound => ErrorCode::NotFound,
            SmsError::Invalid(_) => ErrorCode::InvalidRequest,
            SmsError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            SmsError::UserLocked { retry_after_secs }
            | SmsError::ResendTooSoon { retry_after_secs }
            | SmsError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }
}

impl PublicError for SmsError {
    fn code(&self) -> ErrorCode {
        SmsError::code(self)
    }
    fn public_message(&self) -> String {
        match self {
            SmsError::Internal(_) => "internal error".into(),
            other => other.to_string(),
        }
    }
    fn details(&self) -> Vec<(&'static str, serde_json::Value)> {
        let mut d = Vec::new();
        if let SmsError::WrongCode { attempts_left } = self {
            d.push(("attempts_left", (*attempts_left).into()));
        }
        if let Some(s) = self.retry_after_secs() {
            d.push(("retry_after", s.into()));
        }
        d
    }
}

impl From<StoreError> for SmsError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => SmsError::NotFound,
            other => SmsError::Internal(other.to_string()),
        }
    }
}

/// What clients see of a challenge (never the code, never the full number).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChallengeView {
    pub id: String,
    pub user: String,
    pub phone_id: Option<String>,
    pub purpose: String,
    /// `pending`, `verified`, `failed`, `cancelled` or `expired`.
    pub state: String,
    pub masked_number: String,
    pub locale: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub resend_available_at: time::OffsetDateTime,
    pub resends_left: u32,
    pub attempts_left: u32,
    pub delivery: Delivery,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Delivery {
    /// `queued`, `sent`, `delivered`, `failed` or `undeliverable`.
    pub status: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PhoneView {
    pub id: String,
    pub masked_number: String,
    #[serde(flatten)]
    pub record: PhoneRecord,
}

/// A request for a new challenge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewChallenge {
    pub user: String,
    pub phone_id: Option<String>,
    pub number: Option<String>,
    pub locale: Option<Locale>,
}

const HOUR_MS: i64 = 3_600_000;

/// How often (real time) the outbox worker wipes the encrypted codes of ended challenges.
const CODE_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What an Idempotency-Key is bound to: the normalised request (user, the phone it resolved
/// to, the locale with the default applied), as SHA-256 over length-prefixed fields.
fn request_hash(user: &str, phone_id: &str, locale: Locale) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in ["keygate sms challenge v1", user, phone_id, locale.as_str()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().to_vec()
}

#[derive(Clone)]
struct NumberFacts {
    parsed: Result<phone::ParsedPhone, SmsError>,
    masked: String,
}

/// A new challenge that passed every check (lock, providers, budgets), with the rows that
/// must be stored together with it; nothing is stored yet.
struct Prepared {
    ch: SmsChallengeRecord,
    outbox_id: String,
    send: SendLog,
    audit: NewAudit,
    country_code: u16,
}

fn secs_until(now: i64, at: i64) -> u64 {
    ((at - now).max(0) as u64).div_ceil(1000).max(1)
}

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
    /// so that the hot path does not run libphonenumber again. Cleared when it grows past a
    /// bound.
    numbers: std::sync::Mutex<std::collections::HashMap<String, NumberFacts>>,
    /// The allowed countries' numbering plans; see [`SmsService::numbering`].
    numbering: Arc<std::sync::OnceLock<phone::Numbering>>,
    wake: Notify,
    /// Sends of the last hour (time, country code), oldest first: the global and per-country
    /// budgets are counted here instead of scanning the send log on every request.
    recent: std::sync::Mutex<std::collections::VecDeque<(i64, u16)>>,
}

/// Contract: the regions were checked with [`phone::unknown_region`] (in [`SmsService::new`]).
fn load_numbering(sms: &crate::config::SmsConfig) -> phone::Numbering {
    phone::Numbering::new(&sms.default_region, &sms.allowed_countries)
        .expect("regions checked in SmsService::new")
}

impl SmsService {
    pub fn new(
        cfg: Config,
        store: Store,
        clock: Arc<dyn Clock>,
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
        let chain = providers::build_chain(&cfg.sms, cfg.simulate, inbox.clone());
        let dispatcher = Dispatcher::new(
            chain,
            clock.clone(),
            cfg.sms.max_retries,
            Duration::from_millis(cfg.sms.retry_base_ms),
            cfg.sms.breaker_failures,
            Duration::from_secs(cfg.sms.breaker_cooldown_secs),
        );
        let recent = store
            .sms_recent_sends(clock.now_ms() - HOUR_MS)?
            .into_iter()
            .collect();
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
            numbers: std::sync::Mutex::new(std::collections::HashMap::new()),
            wake: Notify::new(),
            recent: std::sync::Mutex::new(recent),
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

    /// A stored number checked again under the current policy (the allow-list may have changed
    /// since it was registered).
    fn stored_number(&self, e164: &str) -> Result<phone::ParsedPhone, SmsError> {
        self.number_facts(e164).parsed
    }

    /// A number as clients and logs may see it.
    fn masked(&self, e164: &str) -> String {
        self.number_facts(e164).masked
    }

    fn number_facts(&self, e164: &str) -> NumberFacts {
        const KEEP_AT_MOST: usize = 100_000;
        let mut numbers = lock(&self.numbers);
        if let Some(f) = numbers.get(e164) {
            return f.clone();
        }
        let facts = NumberFacts {
            parsed: self.parse_number(e164),
            masked: self.numbering().mask(e164),
        };
        if numbers.len() >= KEEP_AT_MOST {
            numbers.clear();
        }
        numbers.insert(e164.to_string(), facts.clone());
        facts
    }

    /// Parse and check a number as typed (national, international, "00..." forms).
    pub fn parse_number(&self, number: &str) -> Result<phone::ParsedPhone, SmsError> {
        self.numbering().parse(number)
    }

    fn numbering(&self) -> &phone::Numbering {
        self.numbering.get_or_init(|| load_numbering(&self.cfg.sms))
    }

    fn check_lock(&self, tx: &Tx<'_>, user: &str, now: i64) -> Result<SmsUserState, SmsError> {
        let st = tx.sms_user_state(user)?;
        if st.locked_until > now {
            return Err(SmsError::UserLocked {
                retry_after_secs: secs_until(now, st.locked_until),
            });
        }
        Ok(st)
    }

    /// SMS-pumping guards: per number per window, per country per hour, in all per hour.
    fn check_budgets(
        &self,
        tx: &Tx<'_>,
        e164: &str,
        country_code: u16,
        now: i64,
    ) -> Result<(), SmsError> {
        let s = &self.cfg.sms;
        let window = s.per_number_window_secs as i64 * 1000;
        let (count, oldest) = tx.sms_number_sends_since(now - window, e164, s.per_number_limit)?;
        let mut exhausted =
            (count >= s.per_number_limit).then(|| (oldest.unwrap_or(now) + window, "number"));
        if exhausted.is_none() {
            let mut recent = lock(&self.recent);
            while recent.front().is_some_and(|(at, _)| *at <= now - HOUR_MS) {
                recent.pop_front();
            }
            let mut in_country = recent.iter().filter(|(_, cc)| *cc == country_code);
            if recent.len() as u32 >= s.global_hourly_budget {
                exhausted = Some((
                    recent.front().map(|(at, _)| *at).unwrap_or(now) + HOUR_MS,
                    "global",
                ));
            } else if in_country.clone().count() as u32 >= s.country_hourly_budget {
                exhausted = Some((
                    in_country.next().map(|(at, _)| *at).unwrap_or(now) + HOUR_MS,
                    "country",
                ));
            }
        }
        if let Some((free_at, which)) = exhausted {
            tracing::warn!(budget = which, masked = %self.masked(e164), "SMS budget exhausted");
            return Err(SmsError::RateLimited {
                retry_after_secs: secs_until(now, free_at),
            });
        }
        Ok(())
    }

    /// Count a send against the in-memory budgets (the store logged it in the same breath).
    fn count_send(&self, at: i64, country_code: u16) {
        lock(&self.recent).push_back((at, country_code));
    }

    fn new_id() -> String {
        crate::store::new_row_id()
    }

    /// Start a challenge: a code to a verified phone of the user (sign-in), or to a phone being
    /// registered (`verify_phone`, used by [`SmsService::add_phone`]).
    pub async fn create_challenge(
        self: &Arc<Self>,
        req: NewChallenge,
        idempotency_key: Option<&str>,
        actor: &str,
    ) -> Result<(ChallengeView, bool), SmsError> {
        validate_user(&req.user)?;
        if let Some(k) = idempotency_key {
            if k.is_empty() || k.len() > 128 {
                return Err(SmsError::Invalid(
                    "Idempotency-Key must be 1-128 characters".into(),
                ));
            }
        }
        let by_number = match (&req.phone_id, &req.number) {
            (Some(_), None) => None,
            (None, Some(n)) => Some(self.parse_number(n)?.e164),
            _ => {
                return Err(SmsError::Invalid(
                    "give exactly one of `phone_id` and `number`".into(),
                ))
            }
        };
        let (svc, key, actor) = (
            self.clone(),
            idempotency_key.map(str::to_string),
            actor.to_string(),
        );
        let (view, created) = self
            .store
            .atomic(move |tx| svc.create_in(tx, req, by_number, key.as_deref(), &actor))
            .await?;
        if created {
            self.wake.notify_one();
        }
        Ok((view, created))
    }

    /// [`SmsService::create_challenge`] as one atomic unit.
    fn create_in(
        &self,
        tx: &Tx<'_>,
        req: NewChallenge,
        by_number: Option<String>,
        idempotency_key: Option<&str>,
        actor: &str,
    ) -> Result<(ChallengeView, bool), SmsError> {
        let phone = match (&req.phone_id, by_number) {
            (Some(id), _) => tx
                .get_phone(id)?
                .filter(|p| p.user == req.user)
                .ok_or(SmsError::NotFound)?,
            (None, Some(e164)) => tx
                .list_phones(&req.user)?
                .into_iter()
                .find(|p| p.e164 == e164)
                .ok_or(SmsError::PhoneNotVerified)?,
            (None, None) => return Err(SmsError::NotFound),
        };
        let locale = req.locale.unwrap_or_default();
        let idempotency = idempotency_key.map(|k| (k, request_hash(&req.user, &phone.id, locale)));
        if let Some((k, hash)) = &idempotency {
            if let Some(existing) = tx.sms_challenge_by_idempotency_key(&req.user, k)? {
                // A replay answers the first challenge; the same key with another request is
                // a client bug. Rows stored before hashes were kept match any request.
                if existing
                    .idempotency_hash
                    .as_ref()
                    .is_some_and(|h| h != hash)
                {
                    return Err(SmsError::IdempotencyConflict);
                }
                return Ok((self.view(&existing), false));
            }
        }
        if !phone.verified {
            return Err(SmsError::PhoneNotVerified);
        }
        let parsed = self.stored_number(&phone.e164)?;
        let p = self.prepare(
            tx,
            &req.user,
            Some(&phone.id),
            &parsed,
            "sign_in",
            locale,
            idempotency,
            actor,
        )?;
        tx.sms_insert_challenge(&p.ch, &p.outbox_id, &p.send, &p.audit)?;
        Ok((self.started(&p), true))
    }

    /// Check that a code may be sent now (lock, providers, budgets) and build the challenge.
    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &self,
        tx: &Tx<'_>,
        user: &str,
        phone_id: Option<&str>,
        parsed: &phone::ParsedPhone,
        purpose: &str,
        locale: Locale,
        idempotency: Option<(&str, Vec<u8>)>,
        actor: &str,
    ) -> Result<Prepared, SmsError> {
        let now = self.now();
        self.check_lock(tx, user, now)?;
        if self.dispatcher.is_empty() || !self.dispatcher.any_available() {
            return Err(SmsError::ProviderUnavailable);
        }
        self.check_budgets(tx, &parsed.e164, parsed.country_code, now)?;
        let id = Self::new_id();
        let code = Code::generate();
        let (idempotency_key, idempotency_hash) = idempotency
            .map(|(k, h)| (Some(k.to_string()), Some(h)))
            .unwrap_or_default();
        let ch = SmsChallengeRecord {
            id: id.clone(),
            user: user.to_string(),
            phone_id: phone_id.map(str::to_string),
            e164: parsed.e164.clone(),
            purpose: purpose.to_string(),
            locale: locale.as_str().to_string(),
            code_mac: self.keys.mac(&id, &code),
            code_enc: Some(self.keys.encrypt(&id, &code)),
            created_at: now,
            expires_at: now + self.cfg.sms.code_ttl_secs as i64 * 1000,
            attempts: 0,
            resends: 0,
            last_sent_at: now,
            state: "pending".into(),
            delivery_status: "queued".into(),
            idempotency_key,
            idempotency_hash,
        };
        let audit = NewAudit::new("sms.challenge_created", actor)
            .user(user)
            .detail(serde_json::json!({
                "challenge": id,
                "purpose": purpose,
                "to": self.masked(&parsed.e164),
            }));
        Ok(Prepared {
            ch,
            outbox_id: Self::new_id(),
            send: SendLog {
                e164: parsed.e164.clone(),
                country_code: parsed.country_code,
                at: now,
            },
            audit,
            country_code: parsed.country_code,
        })
    }

    /// A prepared challenge was stored (inside its unit): count its send. The caller wakes
    /// the worker once the unit committed.
    fn started(&self, p: &Prepared) -> ChallengeView {
        self.count_send(p.send.at, p.country_code);
        tracing::info!(
            challenge = %p.ch.id,
            to = %self.masked(&p.ch.e164),
            purpose = %p.ch.purpose,
            "SMS challenge created"
        );
        self.view(&p.ch)
    }

    pub fn get_challenge(&self, id: &str) -> Result<ChallengeView, SmsError> {
        let ch = self.store.sms_challenge(id)?.ok_or(SmsError::NotFound)?;
        Ok(self.view(&ch))
    }

    fn live(&self, tx: &Tx<'_>, ch: &SmsChallengeRecord, now: i64) -> Result<(), SmsError> {
        match ch.state.as_str() {
            "verified" => return Err(SmsError::ChallengeUsed),
            "failed" => return Err(SmsError::ChallengeFailed),
            "cancelled" => return Err(SmsError::ChallengeCancelled),
            _ => {}
        }
        if now >= ch.expires_at {
            tx.sms_wipe_code(&ch.id)?;
            return Err(SmsError::ChallengeExpired);
        }
        Ok(())
    }

    /// Check a typed code. Exactly one concurrent right answer wins.
    pub async fn verify(
        self: &Arc<Self>,
        id: &str,
        typed: &str,
        actor: &str,
    ) -> Result<ChallengeView, SmsError> {
        let code = Code::parse_typed(typed)
            .ok_or_else(|| SmsError::Invalid("`code` must be 6 digits".into()))?;
        let (svc, id, actor) = (self.clone(), id.to_string(), actor.to_string());
        self.store
            .atomic(move |tx| svc.verify_in(tx, &id, &code, &actor))
            .await?
    }

    /// [`SmsService::verify`] as one atomic unit. The outer error rolls the unit back; the
    /// inner one is an outcome whose writes (a counted attempt, a lock, a wiped code) stay.
    fn verify_in(
        &self,
        tx: &Tx<'_>,
        id: &str,
        code: &Code,
        actor: &str,
    ) -> Result<Result<ChallengeView, SmsError>, SmsError> {
        let now = self.now();
        let ch = tx.sms_challenge(id)?.ok_or(SmsError::NotFound)?;
        if let Err(e) = self.live(tx, &ch, now) {
            return Ok(Err(e));
        }
        let user_state = self.check_lock(tx, &ch.user, now)?;
        if self.keys.matches(&ch.id, code, &ch.code_mac) {
            let audit = NewAudit::new("sms.verified", actor).user(&ch.user).detail(
                serde_json::json!({ "challenge": ch.id, "purpose": ch.purpose, "to": self.masked(&ch.e164) }),
            );
            if !tx.sms_verified(&ch, &audit)? {
                return Err(SmsError::ChallengeUsed);
            }
            tracing::info!(challenge = %ch.id, "SMS code verified");
            let ch = SmsChallengeRecord {
                state: "verified".into(),
                code_enc: None,
                ..ch
            };
            return Ok(Ok(self.view(&ch)));
        }
        let attempts = ch.attempts + 1;
        let failures = user_state.consecutive_failures + 1;
        let s = &self.cfg.sms;
        let locked = failures >= s.lockout_failures;
        let dead = attempts >= s.max_attempts;
        let new_state = SmsUserState {
            consecutive_failures: if locked { 0 } else { failures },
            locked_until: if locked {
                now + s.lockout_secs as i64 * 1000
            } else {
                0
            },
        };
        let audit = (locked || dead).then(|| {
            NewAudit::new(
                if locked {
                    "sms.user_locked"
                } else {
                    "sms.challenge_failed"
                },
                actor,
            )
            .user(&ch.user)
            .detail(serde_json::json!({ "challenge": ch.id, "attempts": attempts }))
        });
        tx.sms_wrong_code(&ch, attempts, dead || locked, new_state, audit.as_ref())?;
        tracing::info!(challenge = %ch.id, attempts, locked, "wrong SMS code");
        Ok(Err(if locked {
            SmsError::UserLocked {
                retry_after_secs: s.lockout_secs,
            }
        } else if dead {
            SmsError::ChallengeFailed
        } else {
            SmsError::WrongCode {
                attempts_left: s.max_attempts - attempts,
            }
        }))
    }

    /// "Resend code": the same code again, after the cooldown, a few times at most.
    pub async fn resend(
        self: &Arc<Self>,
        id: &str,
        actor: &str,
    ) -> Result<ChallengeView, SmsError> {
        let (svc, id, actor) = (self.clone(), id.to_string(), actor.to_string());
        let view = self
            .store
            .atomic(move |tx| svc.resend_in(tx, &id, &actor))
            .await??;
        self.wake.notify_one();
        Ok(view)
    }

    /// [`SmsService::resend`] as one atomic unit (inner error: the expired code was wiped).
    fn resend_in(
        &self,
        tx: &Tx<'_>,
        id: &str,
        actor: &str,
    ) -> Result<Result<ChallengeView, SmsError>, SmsError> {
        let now = self.now();
        let ch = tx.sms_challenge(id)?.ok_or(SmsError::NotFound)?;
        if let Err(e) = self.live(tx, &ch, now) {
            return Ok(Err(e));
        }
        self.check_lock(tx, &ch.user, now)?;
        let s = &self.cfg.sms;
        if ch.resends >= s.max_resends {
            return Err(SmsError::ResendLimit);
        }
        let ready_at = ch.last_sent_at + s.resend_cooldown_secs as i64 * 1000;
        if now < ready_at {
            return Err(SmsError::ResendTooSoon {
                retry_after_secs: secs_until(now, ready_at),
            });
        }
        if !self.dispatcher.any_available() {
            return Err(SmsError::ProviderUnavailable);
        }
        let parsed = self.stored_number(&ch.e164)?;
        self.check_budgets(tx, &parsed.e164, parsed.country_code, now)?;
        let audit = NewAudit::new("sms.resent", actor)
            .user(&ch.user)
            .detail(serde_json::json!({ "challenge": ch.id, "resends": ch.resends + 1 }));
        tx.sms_resend(
            &ch,
            now,
            &Self::new_id(),
            &SendLog {
                e164: parsed.e164,
                country_code: parsed.country_code,
                at: now,
            },
            &audit,
        )
        .map_err(|e| match e {
            StoreError::Conflict(_) => SmsError::ChallengeFailed,
            other => other.into(),
        })?;
        self.count_send(now, parsed.country_code);
        let ch = tx.sms_challenge(id)?.ok_or(SmsError::NotFound)?;
        Ok(Ok(self.view(&ch)))
    }

    pub async fn cancel(
        self: &Arc<Self>,
        id: &str,
        actor: &str,
    ) -> Result<ChallengeView, SmsError> {
        let (svc, id, actor) = (self.clone(), id.to_string(), actor.to_string());
        self.store
            .atomic(move |tx| {
                let ch = tx.sms_challenge(&id)?.ok_or(SmsError::NotFound)?;
                let audit = NewAudit::new("sms.cancelled", &actor)
                    .user(&ch.user)
                    .detail(serde_json::json!({ "challenge": ch.id }));
                tx.sms_end_challenge(&id, "cancelled", Some(&audit))?;
                let ch = tx.sms_challenge(&id)?.ok_or(SmsError::NotFound)?;
                Ok(svc.view(&ch))
            })
            .await
    }

    /// Register a phone (unverified) and send it a verification code. Atomic: when the code
    /// cannot be sent (locked user, budgets, no provider) no phone is registered either.
    pub async fn add_phone(
        self: &Arc<Self>,
        user: &str,
        number: &str,
        label: Option<&str>,
        locale: Locale,
        actor: &str,
    ) -> Result<(PhoneView, ChallengeView), SmsError> {
        validate_user(user)?;
        if let Some(l) = label {
            if l.chars().count() > 64 || l.chars().any(char::is_control) {
                return Err(SmsError::Invalid(
                    "`label` must be at most 64 printable characters".into(),
                ));
            }
        }
        let parsed = self.parse_number(number)?;
        let svc = self.clone();
        let (user, label, actor) = (
            user.to_string(),
            label.map(str::to_string),
            actor.to_string(),
        );
        let out = self
            .store
            .atomic(move |tx| {
                let mut p = svc.prepare(
                    tx,
                    &user,
                    None,
                    &parsed,
                    "verify_phone",
                    locale,
                    None,
                    &actor,
                )?;
                let phone_audit = NewAudit::new("phone.added", &actor)
                    .user(&user)
                    .detail(serde_json::json!({ "to": svc.masked(&parsed.e164) }));
                let phone = tx.sms_add_phone_with_challenge(
                    &parsed.e164,
                    label.as_deref(),
                    &phone_audit,
                    &p.ch,
                    &p.outbox_id,
                    &p.send,
                    &p.audit,
                )?;
                p.ch.phone_id = Some(phone.id.clone());
                let ch = svc.started(&p);
                Ok::<_, SmsError>((svc.phone_view(phone), ch))
            })
            .await?;
        self.wake.notify_one();
        Ok(out)
    }

    fn phone_view(&self, p: PhoneRecord) -> PhoneView {
        PhoneView {
            id: p.id.clone(),
            masked_number: self.masked(&p.e164),
            record: p,
        }
    }

    pub fn list_phones(&self, user: &str) -> Result<Vec<PhoneView>, SmsError> {
        validate_user(user)?;
        Ok(self
            .store
            .list_phones(user)?
            .into_iter()
            .map(|p| self.phone_view(p))
            .collect())
    }

    pub async fn delete_phone(
        self: &Arc<Self>,
        user: &str,
        id: &str,
        actor: &str,
    ) -> Result<(), SmsError> {
        let (svc, user, id, actor) = (
            self.clone(),
            user.to_string(),
            id.to_string(),
            actor.to_string(),
        );
        self.store
            .atomic(move |tx| {
                let p = tx
                    .get_phone(&id)?
                    .filter(|p| p.user == user)
                    .ok_or(SmsError::NotFound)?;
                let audit = NewAudit::new("phone.removed", &actor)
                    .user(&user)
                    .detail(serde_json::json!({ "phone": id, "to": svc.masked(&p.e164) }));
                tx.delete_phone(&user, &id, &audit)?;
                Ok(())
            })
            .await
    }

    pub fn providers(&self) -> Vec<ProviderHealth> {
        self.dispatcher.health()
    }

    /// A provider's delivery report (already authenticated by the caller).
    pub async fn delivery_report(
        &self,
        provider: &str,
        message_id: &str,
        status: &str,
    ) -> Result<bool, SmsError> {
        let (provider, message_id, status) = (
            provider.to_string(),
            message_id.to_string(),
            status.to_string(),
        );
        Ok(self
            .store
            .atomic(move |tx| tx.sms_delivery_report(&provider, &message_id, &status))
            .await?)
    }

    /// Wipe the encrypted code of every challenge that has ended (expired, verified, failed,
    /// cancelled), touched or not. The worker runs it every [`CODE_SWEEP_EVERY`]; public for
    /// tests.
    pub async fn sweep_codes(&self) -> Result<usize, SmsError> {
        let now = self.now();
        let wiped = self
            .store
            .atomic(move |tx| tx.sms_wipe_ended_codes(now))
            .await?;
        if wiped > 0 {
            tracing::debug!(wiped, "encrypted codes of ended SMS challenges wiped");
        }
        Ok(wiped)
    }

    /// Run the outbox worker until the process ends: send what is due, and sweep the codes of
    /// ended challenges.
    pub fn spawn_worker(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let svc = self.clone();
        tokio::spawn(async move {
            let mut last_sweep: Option<std::time::Instant> = None;
            loop {
                if let Err(e) = svc.drain_outbox().await {
                    tracing::error!(error = %e, "SMS outbox worker");
                }
                if last_sweep.is_none_or(|t| t.elapsed() >= CODE_SWEEP_EVERY) {
                    if let Err(e) = svc.sweep_codes().await {
                        tracing::error!(error = %e, "SMS code sweep");
                    }
                    last_sweep = Some(std::time::Instant::now());
                }
                tokio::select! {
                    _ = svc.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        })
    }

    /// Send every due outbox message once. Public for tests.
    pub async fn drain_outbox(&self) -> Result<usize, SmsError> {
        use futures::StreamExt;
        let due = self.store.sms_outbox_due(self.now(), 64)?;
        let n = due.len();
        // Up to 16 messages in flight: providers are remote; SQLite stays serialised.
        let results: Vec<Result<(), SmsError>> = futures::stream::iter(due)
            .map(|ob| self.send_one(ob))
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().collect::<Result<(), _>>()?;
        Ok(n)
    }

    /// Store an outbox row's new state (and its challenge's delivery status) as one unit.
    async fn save_outbox(
        &self,
        ob: OutboxRecord,
        delivery: Option<&'static str>,
    ) -> Result<(), SmsError> {
        Ok(self
            .store
            .atomic(move |tx| tx.sms_outbox_update(&ob, delivery))
            .await?)
    }

    async fn send_one(&self, mut ob: OutboxRecord) -> Result<(), SmsError> {
        let now = self.now();
        let ch = self
            .store
            .sms_challenge(&ob.challenge_id)?
            .ok_or(SmsError::NotFound)?;
        let code = ch
            .code_enc
            .as_deref()
            .and_then(|b| self.keys.decrypt(&ch.id, b));
        let Some(code) = code.filter(|_| ch.state == "pending" && now < ch.expires_at) else {
            // The challenge ended before its message went out: nothing to send any more, and
            // no reason to keep its code.
            ob.state = "dropped".into();
            self.store
                .atomic(move |tx| tx.sms_outbox_drop(&ob, now))
                .await?;
            return Ok(());
        };
        // No "sending" write before the call: a crash mid-send leaves the row pending and the
        // message goes out once more after the restart (the at-most-once-more contract).
        ob.attempts += 1;
        let locale = Locale::parse(&ch.locale).unwrap_or_default();
        let minutes = self.cfg.sms.code_ttl_secs.div_ceil(60);
        let msg = OutgoingSms {
            id: ob.id.clone(),
            to: ch.e164.clone(),
            text: template::render(
                locale,
                &code,
                minutes,
                self.cfg.sms.webotp_domain.as_deref(),
            ),
        };
        let masked = self.masked(&ch.e164);
        match self.dispatcher.send(&msg).await {
            Dispatched::Sent { provider, receipt } => {
                tracing::info!(message = %ob.id, challenge = %ch.id, to = %masked, provider, "SMS sent");
                ob.state = "sent".into();
                ob.provider = Some(provider.to_string());
                ob.provider_message_id = receipt.provider_message_id;
                ob.sent_at = Some(self.now());
                ob.last_error = None;
                self.save_outbox(ob, Some("sent")).await?;
            }
            Dispatched::Rejected { provider, detail } => {
                tracing::warn!(message = %ob.id, to = %masked, provider, %detail, "SMS rejected by the provider");
                ob.state = "failed".into();
                ob.provider = Some(provider.to_string());
                ob.last_error = Some(detail);
                self.save_outbox(ob, Some("undeliverable")).await?;
            }
            Dispatched::Unavailable { detail } => {
                let next = self.now() + 1000 * (1i64 << ob.attempts.min(6));
                if next >= ch.expires_at || ob.attempts >= 8 {
                    tracing::warn!(message = %ob.id, to = %masked, %detail, "SMS could not be sent");
                    ob.state = "failed".into();
                    ob.last_error = Some(detail);
                    self.save_outbox(ob, Some("failed")).await?;
                } else {
                    ob.state = "pending".into();
                    ob.next_attempt_at = next;
                    ob.last_error = Some(detail);
                    self.save_outbox(ob, None).await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_790_000_000_000;

    /// A service on an in-memory store with the console provider and no worker running: the
    /// tests drive the outbox and the sweep themselves.
    fn service(dir: &std::path::Path) -> (Arc<SmsService>, Store, Arc<ManualClock>) {
        let cfg = crate::config::parse_config(
            None,
            &[],
            &crate::config::Overrides {
                data_dir: Some(dir.to_path_buf()),
                simulate: Some(true),
                listen: None,
            },
        )
        .unwrap();
        let store = Store::open_in_memory().unwrap();
        let clock = Arc::new(ManualClock::new(START));
        let svc = SmsService::new(cfg, store.clone(), clock.clone()).unwrap();
        (svc, store, clock)
    }

    async fn challenge(svc: &Arc<SmsService>, user: &str, number: &str) -> String {
        svc.add_phone(user, number, None, Locale::default(), "test")
            .await
            .unwrap()
            .1
            .id
    }

    #[tokio::test]
    async fn a_message_dropped_because_its_challenge_expired_wipes_the_code() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, store, clock) = service(dir.path());
        let id = challenge(&svc, "r1", "0475 00 00 01").await;
        let queued = store.sms_outbox_due(i64::MAX, 10).unwrap();
        assert_eq!(queued.len(), 1);
        clock.advance(Duration::from_secs(300));
        assert_eq!(svc.drain_outbox().await.unwrap(), 1);
        let ob = store.sms_outbox(&queued[0].id).unwrap().unwrap();
        assert_eq!(ob.state, "dropped");
        assert_eq!(store.sms_challenge(&id).unwrap().unwrap().code_enc, None);
        assert!(svc
            .inbox
            .as_ref()
            .unwrap()
            .for_number("+32475000001")
            .is_empty());
    }

    #[tokio::test]
    async fn the_sweep_wipes_codes_of_expired_challenges_only() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, store, clock) = service(dir.path());
        let expiring = challenge(&svc, "r1", "0475 00 00 01").await;
        svc.drain_outbox().await.unwrap();
        clock.advance(Duration::from_secs(100));
        let live = challenge(&svc, "r3", "0475 00 00 03").await;
        let code_of = |id: &str| store.sms_challenge(id).unwrap().unwrap().code_enc;
        assert!(code_of(&expiring).is_some());
        assert_eq!(
            svc.sweep_codes().await.unwrap(),
            0,
            "nothing has expired yet"
        );
        clock.advance(Duration::from_secs(200));
        assert_eq!(svc.sweep_codes().await.unwrap(), 1);
        assert_eq!(code_of(&expiring), None, "expired, never touched since");
        assert!(code_of(&live).is_some(), "a live challenge keeps its code");
        clock.advance(Duration::from_secs(100));
        assert_eq!(svc.sweep_codes().await.unwrap(), 1);
        assert_eq!(code_of(&live), None);
    }
}
