//! What a message must pass before it is stored, read once per unit
//! ([`Tx::sms_send_check`]) and judged here in the order a student is told about it: the
//! user's lock, the providers, the number's limit, the hourly budgets, then the fraud guard
//! ([`SmsService::guard_send`]).

use super::challenge::HOUR_MS;
use super::error::SmsError;
use super::fraud::{fraud_window_start, month_of, prefix_of};
use super::phone::ParsedPhone;
use super::SmsService;
use crate::base::sync::lock;
use crate::store::{SendCheck, SendCheckQuery, SmsUserState, Tx, SEND_MINUTE_MS};

/// Whole seconds from `now` until `at` (Unix ms), at least one: a `Retry-After`.
pub(super) fn secs_until(now: i64, at: i64) -> u64 {
    ((at - now).max(0) as u64).div_ceil(1000).max(1)
}

/// `user_locked` while the user's lock (five wrong codes in a row) is in force.
pub(super) fn refuse_locked(st: &SmsUserState, now: i64) -> Result<(), SmsError> {
    if st.locked_until > now {
        return Err(SmsError::UserLocked {
            retry_after_secs: secs_until(now, st.locked_until),
        });
    }
    Ok(())
}

impl SmsService {
    /// Read, inside the unit that may send to `number` for `user`, everything the message is
    /// judged by (one statement).
    pub(super) fn read_send_check(
        &self,
        tx: &Tx<'_>,
        user: &str,
        number: &ParsedPhone,
        now: i64,
    ) -> Result<SendCheck, SmsError> {
        let s = &self.cfg.sms;
        let prefix = prefix_of(&number.e164, s.fraud.prefix_digits);
        let (month, _) = month_of(now);
        Ok(tx.sms_send_check(&SendCheckQuery {
            user,
            e164: &number.e164,
            number_since: now - s.per_number_window_secs as i64 * 1000,
            number_limit: s.per_number_limit,
            month: &month,
            prefix: &prefix,
            fraud_window_start: fraud_window_start(&s.fraud, now),
            now,
            // The campus store: every kiosk's sends count, so the budgets come from the
            // shared counts, read under the campus write lock this unit runs in.
            budgets: self
                .store
                .is_shared()
                .then_some((now - HOUR_MS, number.country_code)),
        })?)
    }

    /// SMS-pumping guards: per number per window, per country per hour, in all per hour.
    pub(super) fn check_budgets(
        &self,
        check: &SendCheck,
        number: &ParsedPhone,
        now: i64,
    ) -> Result<(), SmsError> {
        let s = &self.cfg.sms;
        let window = s.per_number_window_secs as i64 * 1000;
        let mut exhausted = (check.number_sends >= s.per_number_limit)
            .then(|| (check.number_oldest.unwrap_or(now) + window, "number"));
        if let (None, Some(counts)) = (exhausted, check.budgets) {
            // A minute's sends leave the window an hour after the minute ends.
            let free_at = |minute: Option<i64>| minute.unwrap_or(now) + SEND_MINUTE_MS + HOUR_MS;
            if counts.total >= u64::from(s.global_hourly_budget) {
                exhausted = Some((free_at(counts.oldest_minute), "global"));
            } else if counts.in_country >= u64::from(s.country_hourly_budget) {
                exhausted = Some((free_at(counts.oldest_minute_in_country), "country"));
            }
        } else if exhausted.is_none() {
            let country_code = number.country_code;
            let mut recent = lock(&self.recent);
            recent.expire(now - HOUR_MS);
            if recent.total() as u64 >= u64::from(s.global_hourly_budget) {
                exhausted = Some((recent.oldest().unwrap_or(now) + HOUR_MS, "global"));
            } else if recent.in_country(country_code) as u64 >= u64::from(s.country_hourly_budget) {
                exhausted = Some((
                    recent.oldest_in_country(country_code).unwrap_or(now) + HOUR_MS,
                    "country",
                ));
            }
        }
        if let Some((free_at, which)) = exhausted {
            tracing::warn!(budget = which, masked = %self.masked(&number.e164), "SMS budget exhausted");
            return Err(SmsError::RateLimited {
                retry_after_secs: secs_until(now, free_at),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_in_force_refuses_with_the_seconds_left() {
        let st = SmsUserState {
            consecutive_failures: 0,
            locked_until: 10_500,
        };
        assert_eq!(
            refuse_locked(&st, 9_000),
            Err(SmsError::UserLocked {
                retry_after_secs: 2
            })
        );
        assert_eq!(refuse_locked(&st, 10_500), Ok(()));
        assert_eq!(refuse_locked(&SmsUserState::default(), 0), Ok(()));
    }
}
