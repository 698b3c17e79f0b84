//! The reads of the SMS units on a request's path, each folded into one statement: what a
//! message must pass before it is sent ([`Tx::sms_send_check`]) and the challenge a typed code
//! is judged against with its user's lockout state ([`Tx::sms_challenge_to_judge`]).
//!
//! On the campus store every statement that waits for its answer is a round trip to the
//! database under the campus write lock, the one thing every kiosk queues for; a challenge
//! made its checks in seven of them, a verification in three. Folded, the writes that follow
//! go out without waiting (`exec_later`), so a challenge waits for two round trips and a
//! verification for two.
//!
//! Contract: these values are read inside the unit that acts on them, under the store's write
//! lock (the campus lock on PostgreSQL, the one writer on SQLite), so nothing changes them
//! before the unit's writes land. The writes stay conditional all the same
//! ([`Tx::sms_reserve_month`] never counts past the cap).

use super::db::{params, OptionalExtension, Row, ToSql};
use super::sms::{challenge_row, ALL_SENDS, CH_COLS};
use super::{
    exec_later, row, BudgetCounts, PrefixCounts, Result, SmsChallengeRecord, SmsUserState, Tx,
    SEND_MINUTE_MS,
};

/// What one message about to be sent is checked against: see [`Tx::sms_send_check`].
#[derive(Debug, Clone, Copy)]
pub struct SendCheckQuery<'a> {
    /// The user the code is for (the lockout).
    pub user: &'a str,
    /// The number it goes to (the per-number limit).
    pub e164: &'a str,
    /// Sends to the number after this (Unix ms) count against its limit...
    pub number_since: i64,
    /// ...counted up to this many (the policy's limit: the count costs no more than that).
    pub number_limit: u32,
    /// The calendar month (`YYYY-MM`) the message is reserved in (the monthly cap).
    pub month: &'a str,
    /// The number's fraud prefix, and the start of the fraud guard's window (its buckets
    /// starting after it count).
    pub prefix: &'a str,
    pub fraud_window_start: i64,
    /// Now (Unix ms): a block of the prefix in force.
    pub now: i64,
    /// The campus store's hourly budgets (other kiosks send too): the window's start (Unix
    /// ms) and the number's country code. `None` where the budgets are kept in memory.
    pub budgets: Option<(i64, u16)>,
}

/// What [`Tx::sms_send_check`] read.
#[derive(Debug, Clone, PartialEq)]
pub struct SendCheck {
    /// The user's failure streak and lock (zero when the user never typed a wrong code).
    pub user: SmsUserState,
    /// Sends to the number in its window, counted up to the limit, and the oldest's time.
    pub number_sends: u32,
    pub number_oldest: Option<i64>,
    /// Messages reserved in the month so far.
    pub month_messages: u64,
    /// The prefix's messages and verified codes in the fraud window, before this message.
    pub prefix: PrefixCounts,
    /// Until when the prefix is blocked, when a block is in force.
    pub blocked_until: Option<i64>,
    /// The campus budgets' counts, when asked for.
    pub budgets: Option<BudgetCounts>,
}

/// The columns every [`Tx::sms_send_check`] reads: `?1` user, `?2` number, `?3` since, `?4`
/// limit, `?5` month, `?6` prefix, `?7` fraud window start, `?8` now. (A macro, so that
/// [`SEND_CHECK_WITH_BUDGETS`] can extend the literal.)
macro_rules! send_check {
    () => {
        "SELECT \
        (SELECT consecutive_failures FROM sms_user_state WHERE user_name = ?1), \
        (SELECT locked_until FROM sms_user_state WHERE user_name = ?1), \
        (SELECT COUNT(*) FROM (SELECT at FROM sms_sends WHERE e164 = ?2 AND at > ?3 \
            ORDER BY at LIMIT ?4) AS recent), \
        (SELECT MIN(at) FROM sms_sends WHERE e164 = ?2 AND at > ?3), \
        (SELECT messages FROM sms_monthly_usage WHERE month = ?5), \
        (SELECT COALESCE(SUM(sends), 0) FROM sms_fraud_counts \
            WHERE prefix = ?6 AND bucket_start > ?7), \
        (SELECT COALESCE(SUM(verified), 0) FROM sms_fraud_counts \
            WHERE prefix = ?6 AND bucket_start > ?7), \
        (SELECT blocked_until FROM sms_fraud_blocks WHERE prefix = ?6 AND blocked_until > ?8)"
    };
}

const SEND_CHECK: &str = send_check!();

/// [`SEND_CHECK`] and the campus budgets from the per-minute counts: `?9` every send's scope,
/// `?10` the country's, `?11` the first minute of the window. A window's first minute counts
/// whole: the budgets err on the side of refusing, by at most a minute.
const SEND_CHECK_WITH_BUDGETS: &str = concat!(
    send_check!(),
    ", \
    (SELECT COALESCE(SUM(sends), 0) FROM sms_send_minutes WHERE scope = ?9 AND minute >= ?11), \
    (SELECT MIN(minute) FROM sms_send_minutes WHERE scope = ?9 AND minute >= ?11), \
    (SELECT COALESCE(SUM(sends), 0) FROM sms_send_minutes WHERE scope = ?10 AND minute >= ?11), \
    (SELECT MIN(minute) FROM sms_send_minutes WHERE scope = ?10 AND minute >= ?11)"
);

fn send_check_row(r: &Row<'_>, budgets: bool) -> super::db::Result<SendCheck> {
    let failures: Option<u32> = r.get(0)?;
    let locked_until: Option<i64> = r.get(1)?;
    let month_messages: Option<i64> = r.get(4)?;
    Ok(SendCheck {
        user: SmsUserState {
            consecutive_failures: failures.unwrap_or(0),
            locked_until: locked_until.unwrap_or(0),
        },
        number_sends: r.get(2)?,
        number_oldest: r.get(3)?,
        month_messages: month_messages.unwrap_or(0).max(0) as u64,
        prefix: PrefixCounts {
            sends: r.get(5)?,
            verified: r.get(6)?,
        },
        blocked_until: r.get(7)?,
        budgets: if budgets {
            Some(BudgetCounts {
                total: r.get(8)?,
                oldest_minute: r.get(9)?,
                in_country: r.get(10)?,
                oldest_minute_in_country: r.get(11)?,
            })
        } else {
            None
        },
    })
}

impl Tx<'_> {
    /// Everything one message must pass before it is sent, in one statement: the user's lock,
    /// the number's sends in its window, the month's messages, the prefix's fraud counts and
    /// block, and (asked for on the campus store) the hourly budgets' counts.
    pub fn sms_send_check(&self, q: &SendCheckQuery<'_>) -> Result<SendCheck> {
        let mut values: Vec<&dyn ToSql> = params![
            q.user,
            q.e164,
            q.number_since,
            q.number_limit,
            q.month,
            q.prefix,
            q.fraud_window_start,
            q.now
        ]
        .to_vec();
        // The budget variant's three values follow the eight both variants take.
        let budgets = q.budgets.map(|(since, country_code)| {
            (
                country_code.to_string(),
                since - since.rem_euclid(SEND_MINUTE_MS),
            )
        });
        let sql = match &budgets {
            None => SEND_CHECK,
            Some((country_code, first_minute)) => {
                values.extend(params![ALL_SENDS, *country_code, *first_minute]);
                SEND_CHECK_WITH_BUDGETS
            }
        };
        let check = row(self.0, sql, values.as_slice(), |r| {
            send_check_row(r, budgets.is_some())
        })?;
        Ok(check)
    }

    /// Reserve one message of `month` (`YYYY-MM`) under `cap` (0: no cap), the month holding
    /// `before` messages as this unit read them ([`Tx::sms_send_check`]): the month's count
    /// after it, or None when the cap is reached (then nothing is written). The write does not
    /// wait for its answer, and is conditional all the same: it never counts past the cap.
    pub fn sms_reserve_month(&self, month: &str, cap: u64, before: u64) -> Result<Option<u64>> {
        if cap > 0 && before >= cap {
            return Ok(None);
        }
        exec_later(
            self.0,
            "INSERT INTO sms_monthly_usage (month, messages) VALUES (?1, 1) \
             ON CONFLICT (month) DO UPDATE SET messages = sms_monthly_usage.messages + 1 \
             WHERE ?2 = 0 OR sms_monthly_usage.messages < ?2",
            params![month, i64::try_from(cap).unwrap_or(i64::MAX)],
        )?;
        Ok(Some(before + 1))
    }

    /// The challenge `id` with its user's failure streak and lock, in one statement.
    pub fn sms_challenge_to_judge(
        &self,
        id: &str,
    ) -> Result<Option<(SmsChallengeRecord, SmsUserState)>> {
        Ok(row(
            self.0,
            &format!(
                "SELECT {CH_COLS}, \
                 (SELECT consecutive_failures FROM sms_user_state u \
                    WHERE u.user_name = sms_challenges.user_name), \
                 (SELECT locked_until FROM sms_user_state u \
                    WHERE u.user_name = sms_challenges.user_name) \
                 FROM sms_challenges WHERE id = ?1"
            ),
            params![id],
            |r| {
                let ch = challenge_row(r)?;
                let failures: Option<u32> = r.get(CH_COLUMN_COUNT)?;
                let locked_until: Option<i64> = r.get(CH_COLUMN_COUNT + 1)?;
                Ok((
                    ch,
                    SmsUserState {
                        consecutive_failures: failures.unwrap_or(0),
                        locked_until: locked_until.unwrap_or(0),
                    },
                ))
            },
        )
        .optional()?)
    }
}

/// The number of columns in [`CH_COLS`].
const CH_COLUMN_COUNT: usize = 18;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_column_count_matches_the_list() {
        assert_eq!(CH_COLS.split(',').count(), CH_COLUMN_COUNT);
    }
}
