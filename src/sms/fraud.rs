//! The fraud guard (`[sms.fraud]`): budgets alone miss slow SMS pumping, traffic to premium
//! ranges that never verifies. Two guards, both part of a message's reservation (the atomic
//! unit that logs the send and queues the message):
//!
//! - Per prefix (the first `prefix_digits` digits of the E.164 number, country code included,
//!   no `+`), messages and verified codes are counted in the store in 12 buckets per window.
//!   When a message brings a prefix to `min_sends` or more in the window while verified /
//!   sent is below `min_conversion`, the prefix is blocked for `block_secs` (audited and
//!   logged once); that message still goes out, every later one to the prefix (new
//!   challenges and resends) is refused with `fraud_suspected` before anything is stored.
//! - Per calendar month (UTC), every message (first sends and resends) reserves one of
//!   `monthly_message_cap`; past it every send is `budget_exhausted` until the month turns.
//!
//! Counting is by message: a resend repeats a code and counts as a message sent, so resends
//! that never verify lower a prefix's conversion too. A verification counts for the bucket
//! its challenge was created in.

use std::sync::Arc;

use serde::Serialize;

use super::error::SmsError;
use super::send_check::secs_until;
use super::{ms_to_time, SmsService};
use crate::config::SmsFraudConfig;
use crate::store::{
    FraudBlockRecord, NewAudit, PrefixCounts, SendCheck, SmsChallengeRecord, Store, StoreError, Tx,
};

/// Buckets per window: a message older than the window never counts, one younger than 11/12
/// of it always does.
const BUCKETS_PER_WINDOW: i64 = 12;

/// Digits of a number always left out of its prefix, so that a prefix never names one phone.
const DIGITS_KEPT_OUT: usize = 4;

/// A blocked prefix as the admin view shows it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct FraudBlockView {
    /// The blocked E.164 prefix: digits, country code included, no `+`.
    #[schema(pattern = "^[0-9]{1,15}$")]
    pub prefix: String,
    #[serde(with = "time::serde::rfc3339")]
    pub blocked_at: time::OffsetDateTime,
    /// New codes to numbers in the prefix are refused until then (unless an admin lifts it).
    #[serde(with = "time::serde::rfc3339")]
    pub blocked_until: time::OffsetDateTime,
    /// Messages to the prefix in the window when it was judged.
    pub sends: u32,
    /// Codes among them that were verified.
    pub verified: u32,
    /// `verified / sends` when it was judged.
    pub conversion: f64,
}

/// This calendar month's messages (UTC) against the cap.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct MonthlyUsageView {
    /// `YYYY-MM`.
    #[schema(pattern = "^[0-9]{4}-[0-9]{2}$")]
    pub month: String,
    /// Messages handed to the outbox for providers this month, resends included.
    pub messages: u64,
    /// `monthly_message_cap`; 0: no cap.
    pub cap: u64,
    /// When this month's cap was reached, if it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub cap_reached_at: Option<time::OffsetDateTime>,
    /// When the count starts again from zero.
    #[serde(with = "time::serde::rfc3339")]
    pub renews_at: time::OffsetDateTime,
}

/// `GET /v1/sms/fraud`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct FraudView {
    /// The blocks in force, newest first.
    pub blocked_prefixes: Vec<FraudBlockView>,
    pub monthly: MonthlyUsageView,
}

/// The prefix `e164` is judged under: its first `digits` digits, at most all but the last
/// [`DIGITS_KEPT_OUT`].
pub fn prefix_of(e164: &str, digits: u32) -> String {
    let all: Vec<char> = e164.chars().filter(char::is_ascii_digit).collect();
    let take = (digits as usize).min(all.len().saturating_sub(DIGITS_KEPT_OUT).max(1));
    all.into_iter().take(take).collect()
}

/// A prefix as an admin names it: 1-15 digits.
fn is_prefix(p: &str) -> bool {
    (1..=15).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
}

/// The calendar month (UTC) of `now_ms` as `YYYY-MM`, and when the next one starts (Unix ms).
pub fn month_of(now_ms: i64) -> (String, i64) {
    let t = ms_to_time(now_ms);
    let (year, month) = (t.year(), t.month());
    let next_year = if month == time::Month::December {
        year + 1
    } else {
        year
    };
    let next = time::Date::from_calendar_date(next_year, month.next(), 1)
        .map(|d| d.midnight().assume_utc().unix_timestamp() * 1000)
        .unwrap_or(i64::MAX);
    (format!("{year:04}-{:02}", month as u8), next)
}

fn conversion(sends: u32, verified: u32) -> f64 {
    if sends == 0 {
        0.0
    } else {
        f64::from(verified) / f64::from(sends)
    }
}

fn block_view(b: &FraudBlockRecord) -> FraudBlockView {
    FraudBlockView {
        prefix: b.prefix.clone(),
        blocked_at: ms_to_time(b.blocked_at),
        blocked_until: ms_to_time(b.blocked_until),
        sends: b.sends,
        verified: b.verified,
        conversion: conversion(b.sends, b.verified),
    }
}

fn window_ms(f: &SmsFraudConfig) -> i64 {
    i64::try_from(f.window_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// The start of the window at `now`: the buckets that start after it count.
pub(super) fn fraud_window_start(f: &SmsFraudConfig, now: i64) -> i64 {
    now.saturating_sub(window_ms(f))
}

/// The start of the bucket `at` falls in.
fn bucket_start(f: &SmsFraudConfig, at: i64) -> i64 {
    let width = (window_ms(f) / BUCKETS_PER_WINDOW).max(1);
    at - at.rem_euclid(width)
}

fn cap_audit(month: &str, messages: u64, cap: u64, actor: &str) -> NewAudit {
    NewAudit::new("sms.monthly_cap_reached", "system").detail(serde_json::json!({
        "month": month,
        "messages": messages,
        "cap": cap,
        "last_send_by": actor,
    }))
}

impl SmsService {
    /// The fraud guard's part of a message's reservation, inside its unit, after every other
    /// check (lock, providers, budgets) and before the unit's first write, judged by what the
    /// unit read (`check`, [`SmsService::read_send_check`]): refuses a blocked prefix and a
    /// month past its cap (having written nothing), then reserves the month's message and
    /// counts it for its prefix, blocking the prefix when this message makes it fail the
    /// conversion test. Contract: nothing the caller does after this may refuse.
    pub(super) fn guard_send(
        &self,
        tx: &Tx<'_>,
        check: &SendCheck,
        e164: &str,
        now: i64,
        actor: &str,
    ) -> Result<(), SmsError> {
        let f = &self.cfg.sms.fraud;
        let prefix = prefix_of(e164, f.prefix_digits);
        if let Some(blocked_until) = check.blocked_until {
            tracing::debug!(prefix = %prefix, "SMS refused: the prefix is blocked");
            return Err(SmsError::FraudSuspected {
                retry_after_secs: secs_until(now, blocked_until),
            });
        }
        let (month, renews_at) = month_of(now);
        let cap = f.monthly_message_cap;
        let Some(messages) = tx.sms_reserve_month(&month, cap, check.month_messages)? else {
            tracing::debug!(month = %month, cap, "SMS refused: the monthly cap is reached");
            return Err(SmsError::BudgetExhausted {
                retry_after_secs: secs_until(now, renews_at),
            });
        };
        if cap > 0
            && messages >= cap
            && tx.sms_mark_cap_reached(
                &month,
                cap,
                now,
                &cap_audit(&month, messages, cap, actor),
            )?
        {
            tracing::warn!(month = %month, cap, "monthly SMS cap reached: no more codes are sent this month");
        }
        let window_start = fraud_window_start(f, now);
        tx.sms_count_prefix_send(&prefix, bucket_start(f, now), window_start)?;
        // This message lands in the current bucket, which always starts inside the window.
        let counts = PrefixCounts {
            sends: check.prefix.sends.saturating_add(1),
            verified: check.prefix.verified,
        };
        let judged = counts.sends >= f.min_sends;
        if judged && f64::from(counts.verified) < f.min_conversion * f64::from(counts.sends) {
            let block = FraudBlockRecord {
                prefix: prefix.clone(),
                blocked_at: now,
                blocked_until: now
                    .saturating_add(i64::try_from(f.block_secs * 1000).unwrap_or(i64::MAX)),
                sends: counts.sends,
                verified: counts.verified,
            };
            let rate = conversion(counts.sends, counts.verified);
            let audit =
                NewAudit::new("sms.fraud.prefix_blocked", "system").detail(serde_json::json!({
                    "prefix": prefix,
                    "sends": counts.sends,
                    "verified": counts.verified,
                    "conversion": rate,
                    "blocked_until": crate::store::fmt_time(ms_to_time(block.blocked_until)),
                    "last_send_by": actor,
                }));
            if tx.sms_block_prefix(&block, &audit)? {
                tracing::warn!(
                    prefix = %prefix,
                    sends = counts.sends,
                    verified = counts.verified,
                    conversion = rate,
                    block_secs = f.block_secs,
                    "SMS prefix blocked: suspected SMS pumping"
                );
            }
        }
        Ok(())
    }

    /// A code was verified (inside the verifying unit): count it for its prefix.
    pub(super) fn note_verified(
        &self,
        tx: &Tx<'_>,
        ch: &SmsChallengeRecord,
    ) -> Result<(), SmsError> {
        let f = &self.cfg.sms.fraud;
        tx.sms_count_prefix_verified(
            &prefix_of(&ch.e164, f.prefix_digits),
            bucket_start(f, ch.created_at),
        )?;
        Ok(())
    }

    /// The blocks in force and this month's messages against the cap.
    pub fn fraud_view(&self) -> Result<FraudView, SmsError> {
        let now = self.now();
        let (month, renews_at) = month_of(now);
        let usage = self.store.sms_month_usage(&month)?;
        Ok(FraudView {
            blocked_prefixes: self
                .store
                .sms_fraud_blocks(now)?
                .iter()
                .map(block_view)
                .collect(),
            monthly: MonthlyUsageView {
                month,
                messages: usage.messages,
                cap: self.cfg.sms.fraud.monthly_message_cap,
                cap_reached_at: usage.cap_reached_at.map(ms_to_time),
                renews_at: ms_to_time(renews_at),
            },
        })
    }

    /// An admin lifts the block on `prefix` (in force, else `not_found`); the prefix's counts
    /// start again from zero, so its next message does not block it again at once.
    pub async fn lift_fraud_block(
        self: &Arc<Self>,
        prefix: &str,
        actor: &str,
    ) -> Result<FraudBlockView, SmsError> {
        if !is_prefix(prefix) {
            return Err(SmsError::Invalid("a prefix is 1-15 digits".into()));
        }
        let (svc, prefix, actor) = (self.clone(), prefix.to_string(), actor.to_string());
        self.store
            .atomic(move |tx| {
                let now = svc.now();
                let block = tx
                    .sms_fraud_block(&prefix, now)?
                    .ok_or(SmsError::NotFound)?;
                let audit =
                    NewAudit::new("sms.fraud.block_lifted", &actor).detail(serde_json::json!({
                        "prefix": block.prefix,
                        "sends": block.sends,
                        "verified": block.verified,
                        "conversion": conversion(block.sends, block.verified),
                    }));
                if !tx.sms_lift_block(&prefix, &audit)? {
                    return Err(StoreError::NotFound.into());
                }
                tracing::info!(prefix = %prefix, actor = %actor, "SMS prefix block lifted");
                Ok(block_view(&block))
            })
            .await
    }
}

/// At start-up: a cap lowered below this month's count is reached without a message crossing
/// it; audit it then (once per month, like a crossing).
pub(super) fn audit_cap_at_start(
    store: &Store,
    f: &SmsFraudConfig,
    now: i64,
) -> Result<(), SmsError> {
    let (month, _) = month_of(now);
    let cap = f.monthly_message_cap;
    let messages = store.sms_month_usage(&month)?.messages;
    if cap > 0 && messages >= cap {
        let audit = cap_audit(&month, messages, cap, "system");
        if store.sms_mark_cap_reached_at_start(&month, cap, now, &audit)? {
            tracing::warn!(month = %month, cap, messages, "monthly SMS cap reached: no more codes are sent this month");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_the_first_digits_and_never_a_whole_number() {
        assert_eq!(prefix_of("+32475345678", 7), "3247534");
        assert_eq!(prefix_of("+37121230005", 5), "37121");
        // Short numbers keep their last four digits out.
        assert_eq!(prefix_of("+68341234", 7), "6834");
        assert_eq!(prefix_of("+32475345678", 15), "3247534");
        assert_eq!(prefix_of("+12", 7), "1");
    }

    #[test]
    fn months_are_utc_calendar_months() {
        // 2026-09-21T14:13:20Z
        let (m, next) = month_of(1_790_000_000_000);
        assert_eq!(m, "2026-09");
        assert_eq!(
            ms_to_time(next),
            time::macros::datetime!(2026-10-01 0:00 UTC)
        );
        let (m, _) = month_of(next);
        assert_eq!(m, "2026-10");
        let (m, next) = month_of(
            time::macros::datetime!(2026-12-31 23:59:59.999 UTC).unix_timestamp() * 1000 + 999,
        );
        assert_eq!(m, "2026-12");
        assert_eq!(
            next,
            time::macros::datetime!(2027-01-01 0:00 UTC).unix_timestamp() * 1000
        );
    }

    #[test]
    fn buckets_tile_the_window() {
        let f = SmsFraudConfig::default();
        let w = window_ms(&f) / BUCKETS_PER_WINDOW;
        assert_eq!(bucket_start(&f, 0), 0);
        assert_eq!(bucket_start(&f, w - 1), 0);
        assert_eq!(bucket_start(&f, w), w);
        assert_eq!(bucket_start(&f, 1_790_000_000_123) % w, 0);
    }

    #[test]
    fn admins_name_prefixes_as_digits() {
        assert!(is_prefix("3712123"));
        assert!(!is_prefix(""));
        assert!(!is_prefix("+3712123"));
        assert!(!is_prefix("1234567890123456"));
    }
}
