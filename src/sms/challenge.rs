//! Challenges: create, verify, resend and cancel, each one atomic unit on the store's writer
//! thread (the `*_in` functions), with the checks every send passes first (user lock,
//! providers, SMS-pumping budgets) and the Idempotency-Key binding.
//!
//! Contract: a unit's outer error rolls it back; an inner `Result` is an outcome whose writes
//! (a counted attempt, a lock, a wiped code) stay. Exactly one concurrent right answer wins.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::code::Code;
use super::entra_sync::PhoneSync;
use super::error::SmsError;
use super::outbox::Queued;
use super::phone;
use super::send_check::{refuse_locked, secs_until};
use super::template::Locale;
use super::{validate_user, SmsService};
use crate::base::error::ErrorCode;
use crate::base::sync::lock;
use crate::metrics::SmsOutcome;
use crate::store::{
    NewAudit, NewOutbox, PhoneEntraSync, SendLog, SmsChallengeRecord, SmsUserState, StoreError, Tx,
};

/// What clients see of a challenge (never the code, never the full number).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ChallengeView {
    pub id: String,
    pub user: String,
    pub phone_id: Option<String>,
    pub purpose: String,
    /// `pending`, `verified`, `failed`, `cancelled` or `expired`.
    #[schema(pattern = "^(pending|verified|failed|cancelled|expired)$")]
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

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Delivery {
    /// `queued`, `sent`, `delivered`, `failed` or `undeliverable`.
    pub status: String,
}

/// A request for a new challenge.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChallenge {
    #[schema(pattern = "^(?!\\.\\.?$)[A-Za-z0-9._@+-]{1,128}$")]
    pub user: String,
    pub phone_id: Option<String>,
    pub number: Option<String>,
    pub locale: Option<Locale>,
}

pub(super) const HOUR_MS: i64 = 3_600_000;

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

/// A new challenge that passed every check (lock, providers, budgets), with the rows that
/// must be stored together with it; nothing is stored yet.
pub(super) struct Prepared {
    pub(super) ch: SmsChallengeRecord,
    pub(super) outbox: NewOutbox,
    pub(super) send: SendLog,
    pub(super) audit: NewAudit,
    pub(super) country_code: u16,
}

impl Prepared {
    /// The stored message, for sending once its unit committed.
    pub(super) fn queued(&self) -> Queued {
        Queued {
            ob: self.outbox.record(&self.ch.id, self.ch.created_at),
            ch: self.ch.clone(),
            claimed: self.outbox.claimed.is_some(),
        }
    }
}

impl SmsService {
    /// Count a send against the in-memory budgets (the store logged it in the same breath).
    fn count_send(&self, at: i64, country_code: u16) {
        lock(&self.recent).push(at, country_code);
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
        let out = self
            .store
            .atomic(move |tx| svc.create_in(tx, req, by_number, key.as_deref(), &actor))
            .await;
        self.count_event(
            None,
            "sign_in",
            out.as_ref().map(|(v, _)| v),
            SmsOutcome::Created,
        );
        let (view, queued) = out?;
        let created = queued.is_some();
        if let Some(q) = queued {
            self.send_new(q);
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
    ) -> Result<(ChallengeView, Option<Queued>), SmsError> {
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
        // An Idempotency-Key is the caller's own: scoped by who sent it, bound to the request.
        let scoped_key = idempotency_key.map(|k| format!("{actor}\u{1f}{k}"));
        let idempotency = scoped_key
            .as_deref()
            .map(|k| (k, request_hash(&req.user, &phone.id, locale)));
        if let Some((k, hash)) = &idempotency {
            if let Some(existing) = tx.sms_challenge_by_idempotency_key(k)? {
                // A replay answers the first challenge; the same key with another request is
                // a client bug. Rows stored before hashes were kept match any request.
                if existing
                    .idempotency_hash
                    .as_ref()
                    .is_some_and(|h| h != hash)
                {
                    return Err(SmsError::IdempotencyConflict);
                }
                return Ok((self.view(&existing), None));
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
        tx.sms_insert_challenge(&p.ch, &p.outbox, &p.send, &p.audit)?;
        Ok((self.started(&p), Some(p.queued())))
    }

    /// Check that a code may be sent now (lock, providers, budgets) and build the challenge.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn prepare(
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
        let check = self.read_send_check(tx, user, parsed, now)?;
        refuse_locked(&check.user, now)?;
        if self.dispatcher.is_empty() || !self.dispatcher.any_available() {
            return Err(SmsError::ProviderUnavailable);
        }
        self.check_budgets(&check, parsed, now)?;
        self.guard_send(tx, &check, &parsed.e164, now, actor)?;
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
            created_by: Some(actor.to_string()),
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
            outbox: self.new_outbox(now),
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
    pub(super) fn started(&self, p: &Prepared) -> ChallengeView {
        self.count_send(p.send.at, p.country_code);
        tracing::info!(
            challenge = %p.ch.id,
            to = %self.masked(&p.ch.e164),
            purpose = %p.ch.purpose,
            "SMS challenge created"
        );
        self.view(&p.ch)
    }

    /// Who made challenge `id` (None for rows older than that record) and for which user.
    pub fn challenge_owner(&self, id: &str) -> Result<(Option<String>, String), SmsError> {
        let ch = self.store.sms_challenge(id)?.ok_or(SmsError::NotFound)?;
        Ok((ch.created_by, ch.user))
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
        let (svc, unit_id, actor) = (self.clone(), id.to_string(), actor.to_string());
        let out = self
            .store
            .atomic(move |tx| svc.verify_in(tx, &unit_id, &code, &actor))
            .await
            .and_then(|answer| answer);
        let view = out.as_ref().map(|(v, _)| v);
        self.count_event(Some(id), "", view, SmsOutcome::Verified);
        let (view, sync) = out?;
        if let Some(job) = sync {
            self.spawn_entra_sync(job);
        }
        Ok(view)
    }

    /// [`SmsService::verify`] as one atomic unit. The outer error rolls the unit back; the
    /// inner one is an outcome whose writes (a counted attempt, a lock, a wiped code) stay.
    fn verify_in(
        &self,
        tx: &Tx<'_>,
        id: &str,
        code: &Code,
        actor: &str,
    ) -> Result<Result<(ChallengeView, Option<PhoneSync>), SmsError>, SmsError> {
        let now = self.now();
        let (ch, user_state) = tx.sms_challenge_to_judge(id)?.ok_or(SmsError::NotFound)?;
        if let Err(e) = self.live(tx, &ch, now) {
            return Ok(Err(e));
        }
        refuse_locked(&user_state, now)?;
        if self.keys.matches(&ch.id, code, &ch.code_mac) {
            let audit = NewAudit::new("sms.verified", actor).user(&ch.user).detail(
                serde_json::json!({ "challenge": ch.id, "purpose": ch.purpose, "to": self.masked(&ch.e164) }),
            );
            if !tx.sms_verified(&ch, &audit)? {
                return Err(SmsError::ChallengeUsed);
            }
            self.note_verified(tx, &ch)?;
            tracing::info!(challenge = %ch.id, "SMS code verified");
            // A verified phone goes to Entra: `pending` lands with the verification.
            let sync = match (&ch.phone_id, ch.purpose.as_str()) {
                (Some(phone), "verify_phone") if self.entra_sync_enabled() => {
                    tx.set_phone_entra_state(
                        phone,
                        &PhoneEntraSync {
                            state: "pending".into(),
                            method_id: None,
                            error: None,
                        },
                    )?;
                    Some(PhoneSync {
                        phone_id: phone.clone(),
                        user: ch.user.clone(),
                        e164: ch.e164.clone(),
                        actor: actor.to_string(),
                    })
                }
                _ => None,
            };
            let ch = SmsChallengeRecord {
                state: "verified".into(),
                code_enc: None,
                ..ch
            };
            return Ok(Ok((self.view(&ch), sync)));
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
        let (svc, unit_id, actor) = (self.clone(), id.to_string(), actor.to_string());
        let out = self
            .store
            .atomic(move |tx| svc.resend_in(tx, &unit_id, &actor))
            .await
            .and_then(|answer| answer);
        self.count_event(Some(id), "", out.as_ref(), SmsOutcome::Resent);
        let view = out?;
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
        let parsed = self.stored_number(&ch.e164)?;
        let check = self.read_send_check(tx, &ch.user, &parsed, now)?;
        refuse_locked(&check.user, now)?;
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
        self.check_budgets(&check, &parsed, now)?;
        self.guard_send(tx, &check, &parsed.e164, now, actor)?;
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
        let out = self
            .store
            .atomic(move |tx| {
                let ch = tx.sms_challenge(&id)?.ok_or(SmsError::NotFound)?;
                let audit = NewAudit::new("sms.cancelled", &actor)
                    .user(&ch.user)
                    .detail(serde_json::json!({ "challenge": ch.id }));
                tx.sms_end_challenge(&id, "cancelled", Some(&audit))?;
                let ch = tx.sms_challenge(&id)?.ok_or(SmsError::NotFound)?;
                Ok(svc.view(&ch))
            })
            .await;
        if let Ok(view) = &out {
            self.metrics
                .sms_challenge(&view.purpose, SmsOutcome::Cancelled);
        }
        out
    }

    /// Count the answer of a create, verify or resend (`keygate_sms_challenges_total`): `done`
    /// for an answered challenge, else the error's code. Errors that never reached a challenge
    /// (a malformed request, an unknown id) are not counted. The purpose is the challenge's;
    /// when an error leaves only its id (`challenge`), it is read back, else `purpose`.
    pub(super) fn count_event(
        &self,
        challenge: Option<&str>,
        purpose: &str,
        answer: Result<&ChallengeView, &SmsError>,
        done: SmsOutcome,
    ) {
        let e = match answer {
            Ok(view) => return self.metrics.sms_challenge(&view.purpose, done),
            Err(e) => e,
        };
        let code = e.code();
        if matches!(code, ErrorCode::InvalidRequest | ErrorCode::NotFound) {
            return;
        }
        let stored = challenge.and_then(|id| self.store.sms_challenge(id).ok().flatten());
        let purpose = stored.as_ref().map_or(purpose, |ch| ch.purpose.as_str());
        self.metrics
            .sms_challenge(purpose, SmsOutcome::Refused(code));
    }
}
