//! The sweep of the hot tables: rows that only matter for a window move to their history
//! tables (migration 9), so that what every request reads and writes stays the size of its
//! windows however long keygate runs. How long history is kept is retention's business
//! ([`Store::prune_ceremonies`] for ceremonies today).
//!
//! What moves, measured on the store's clock:
//! - an SMS challenge that has ended (not pending, or expired) and was created more than
//!   [`HotWindows::challenges`] ago, together with its outbox messages, its encrypted code
//!   wiped first;
//! - a send-log line older than [`HotWindows::sends`] (no budget counts it any more);
//! - a finished ceremony (succeeded, failed, cancelled) unchanged for [`HotWindows::ceremonies`].
//!
//! Each round moves at most [`SWEEP_BATCH`] rows of each kind in one atomic unit, so requests
//! queue behind a short unit, never behind the whole backlog.

use std::time::Duration;

use super::db::{params, Connection};

use super::{exec, fmt_time, Result, Store, StoreError};

/// How long rows stay in the hot tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotWindows {
    /// Since a challenge's creation; longer than any code's lifetime, and the span over which
    /// an Idempotency-Key replay still finds the first challenge.
    pub challenges: Duration,
    /// Every window a send is counted in: the per-number window and the hourly budgets.
    pub sends: Duration,
    /// Since a finished ceremony's last change; `GET` of an older one answers 404.
    pub ceremonies: Duration,
}

impl Default for HotWindows {
    fn default() -> Self {
        HotWindows {
            challenges: Duration::from_secs(24 * 3600),
            sends: Duration::from_secs(3600),
            ceremonies: Duration::from_secs(24 * 3600),
        }
    }
}

/// At most this many rows of each kind move in one atomic unit.
pub(super) const SWEEP_BATCH: u32 = 1000;

/// How often (real time) the daemon's sweeper runs a sweep.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// What one sweep moved to history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub challenges: u64,
    pub outbox: u64,
    pub sends: u64,
    pub ceremonies: u64,
}

impl SweepReport {
    fn total(&self) -> u64 {
        self.challenges + self.outbox + self.sends + self.ceremonies
    }
}

/// The challenges of one round: ended (`?2` is now, Unix ms), created before `?1`, oldest
/// first, at most `?3`. Every statement of a round selects the same set: they run in one
/// transaction, and no statement before the challenges' own move changes them.
const CHALLENGES_DUE: &str = "SELECT id FROM sms_challenges WHERE created_at < ?1 \
     AND (state != 'pending' OR expires_at <= ?2) ORDER BY created_at LIMIT ?3";

/// The send-log lines of one round: before `?1`, oldest first, at most `?2`.
const SENDS_DUE: &str = "SELECT rowid FROM sms_sends WHERE at < ?1 ORDER BY at LIMIT ?2";

/// The finished ceremonies of one round: unchanged since before `?1`, at most `?2`.
const CEREMONIES_DUE: &str = "SELECT id FROM ceremonies WHERE updated_at < ?1 \
     AND state IN ('succeeded', 'failed', 'cancelled') ORDER BY updated_at LIMIT ?2";

/// One round: at most [`SWEEP_BATCH`] rows of each kind, in the caller's transaction.
fn sweep_round(c: &Connection, now_ms: i64, w: &HotWindows) -> Result<SweepReport> {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let challenges_before = now_ms.saturating_sub(ms(w.challenges));
    let ch = params![challenges_before, now_ms, SWEEP_BATCH];
    exec(
        c,
        &format!("UPDATE sms_challenges SET code_enc = NULL WHERE id IN ({CHALLENGES_DUE}) AND code_enc IS NOT NULL"),
        ch,
    )?;
    exec(
        c,
        &format!("INSERT INTO sms_outbox_history SELECT * FROM sms_outbox WHERE challenge_id IN ({CHALLENGES_DUE})"),
        ch,
    )?;
    let outbox = exec(
        c,
        &format!("DELETE FROM sms_outbox WHERE challenge_id IN ({CHALLENGES_DUE})"),
        ch,
    )?;
    exec(
        c,
        &format!("INSERT INTO sms_challenges_history SELECT * FROM sms_challenges WHERE id IN ({CHALLENGES_DUE})"),
        ch,
    )?;
    let challenges = exec(
        c,
        &format!("DELETE FROM sms_challenges WHERE id IN ({CHALLENGES_DUE})"),
        ch,
    )?;

    let sends_before = now_ms.saturating_sub(ms(w.sends));
    exec(
        c,
        &format!(
            "INSERT INTO sms_sends_history SELECT * FROM sms_sends WHERE rowid IN ({SENDS_DUE})"
        ),
        params![sends_before, SWEEP_BATCH],
    )?;
    let sends = exec(
        c,
        &format!("DELETE FROM sms_sends WHERE rowid IN ({SENDS_DUE})"),
        params![sends_before, SWEEP_BATCH],
    )?;

    // The campus store's per-minute budget counts matter for an hour (and the minute that
    // holds its start); two hours leave a margin for a clock that steps back.
    exec(
        c,
        "DELETE FROM sms_send_minutes WHERE minute < ?1",
        params![now_ms.saturating_sub(2 * 3_600_000)],
    )?;

    let ceremonies_before = fmt_time(
        crate::base::clock::ms_to_time(now_ms)
            - time::Duration::try_from(w.ceremonies).unwrap_or(time::Duration::MAX),
    );
    let ce = params![ceremonies_before, SWEEP_BATCH];
    exec(
        c,
        &format!("INSERT INTO ceremonies_history SELECT * FROM ceremonies WHERE id IN ({CEREMONIES_DUE})"),
        ce,
    )?;
    let ceremonies = exec(
        c,
        &format!("DELETE FROM ceremonies WHERE id IN ({CEREMONIES_DUE})"),
        ce,
    )?;
    Ok(SweepReport {
        challenges: challenges as u64,
        outbox: outbox as u64,
        sends: sends as u64,
        ceremonies: ceremonies as u64,
    })
}

impl Store {
    /// Move every row past its window (see the module) to history, round after round until
    /// a round finds less than a full batch of each kind; returns how many rows moved.
    pub async fn sweep_hot_tables(&self, windows: HotWindows) -> Result<SweepReport> {
        let mut total = SweepReport::default();
        loop {
            let now_ms = self.clock.now_ms();
            let round = self
                .atomic(move |t| sweep_round(t.0, now_ms, &windows))
                .await?;
            total.challenges += round.challenges;
            total.outbox += round.outbox;
            total.sends += round.sends;
            total.ceremonies += round.ceremonies;
            let full = u64::from(SWEEP_BATCH);
            if round.challenges < full && round.sends < full && round.ceremonies < full {
                return Ok(total);
            }
        }
    }

    /// Run [`Store::sweep_hot_tables`] every minute for as long as the runtime runs (the
    /// daemon starts it), then [`Store::release_memory`], so that memory held for rows whose
    /// windows have passed goes back too. A sweep refused by a full disk is tried again on the
    /// next round.
    pub fn spawn_sweeper(&self, windows: HotWindows) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                match store.sweep_hot_tables(windows).await {
                    Ok(r) if r.total() > 0 => {
                        tracing::debug!(moved = ?r, "hot tables swept to history")
                    }
                    Ok(_) | Err(StoreError::StorageFull) => {}
                    Err(e) => tracing::error!(error = %e, "sweep of the hot tables"),
                }
                let released = store.clone();
                match tokio::task::spawn_blocking(move || released.release_memory()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "releasing the page caches"),
                    Err(e) => tracing::warn!(error = %e, "releasing the page caches"),
                }
            }
        })
    }
}
