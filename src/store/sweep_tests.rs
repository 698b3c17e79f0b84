//! The sweep on a manual clock: what is past its window moves to history with everything that
//! hangs on it, what is still inside one stays, and the history tables keep their hot tables'
//! columns.

use std::sync::Arc;
use std::time::Duration;

use super::sweep::SWEEP_BATCH;
use super::*;
use crate::base::clock::{ms_to_time, Clock, ManualClock};

const START: i64 = 1_790_000_000_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

fn challenge(id: &str, created_at: i64, expires_at: i64, state: &str) -> SmsChallengeRecord {
    SmsChallengeRecord {
        id: id.into(),
        user: "r1".into(),
        phone_id: None,
        e164: "+32475000001".into(),
        purpose: "sign_in".into(),
        locale: "nl".into(),
        code_mac: vec![1; 32],
        code_enc: Some(vec![2; 48]),
        created_at,
        expires_at,
        attempts: 0,
        resends: 0,
        last_sent_at: created_at,
        state: state.into(),
        delivery_status: "sent".into(),
        idempotency_key: None,
        idempotency_hash: None,
        created_by: Some("token:t".into()),
    }
}

async fn store_challenge(s: &Store, ch: SmsChallengeRecord) {
    s.atomic(move |t| {
        t.sms_insert_challenge(
            &ch,
            &NewOutbox::due(format!("ob-{}", ch.id)),
            &SendLog {
                e164: ch.e164.clone(),
                country_code: 32,
                at: ch.created_at,
            },
            &NewAudit::new("sms.challenge_created", "t"),
        )
    })
    .await
    .unwrap();
}

async fn store_ceremony(s: &Store, id: &str, state: &str) {
    let now = s.now();
    let rec = CeremonyRecord {
        id: id.into(),
        kind: "assertion".into(),
        user: Some("r1".into()),
        state: state.into(),
        error_code: None,
        created_at: now,
        updated_at: now,
        expires_at: now + time::Duration::minutes(2),
        created_by: None,
    };
    s.insert_ceremony(&rec, &NewAudit::new("x", "t"))
        .await
        .unwrap();
}

fn count(s: &Store, sql: &str) -> i64 {
    s.conn().query_row(sql, [], |r| r.get(0)).unwrap()
}

fn open(clock: &Arc<ManualClock>) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with_clock(&dir.path().join("keygate.db"), clock.clone()).unwrap();
    (dir, s)
}

#[tokio::test]
async fn rows_past_their_window_move_to_history_and_nothing_else_does() {
    let clock = Arc::new(ManualClock::new(START));
    let (_dir, s) = open(&clock);
    let ttl = 5 * MIN;
    // A day ago: one verified, one that expired unanswered, and one still pending with a far
    // expiry (never ended: it stays, however old).
    store_challenge(
        &s,
        challenge("old-verified", START, START + ttl, "verified"),
    )
    .await;
    store_challenge(&s, challenge("old-expired", START, START + ttl, "pending")).await;
    store_challenge(
        &s,
        challenge("old-live", START, START + 48 * HOUR, "pending"),
    )
    .await;
    store_ceremony(&s, "ce-old-done", "succeeded").await;
    store_ceremony(&s, "ce-old-running", "waiting_for_touch").await;
    clock.advance(Duration::from_millis((25 * HOUR) as u64));
    let now = clock.now_ms();
    // Inside the window: an ended challenge of a minute ago; a send of half an hour ago.
    store_challenge(
        &s,
        challenge("young-done", now - MIN, now + ttl, "cancelled"),
    )
    .await;
    store_challenge(
        &s,
        challenge("young-half-hour", now - 30 * MIN, now, "failed"),
    )
    .await;
    store_ceremony(&s, "ce-young-done", "failed").await;

    let moved = s.sweep_hot_tables(HotWindows::default()).await.unwrap();
    assert_eq!(
        moved,
        SweepReport {
            challenges: 2,
            outbox: 2,
            sends: 3,
            ceremonies: 1,
        }
    );
    for gone in ["old-verified", "old-expired"] {
        assert!(s.sms_challenge(gone).unwrap().is_none(), "{gone}");
        assert!(s.sms_outbox(&format!("ob-{gone}")).unwrap().is_none());
    }
    for kept in ["old-live", "young-done", "young-half-hour"] {
        assert!(s.sms_challenge(kept).unwrap().is_some(), "{kept}");
        assert!(s.sms_outbox(&format!("ob-{kept}")).unwrap().is_some());
    }
    assert!(s.get_ceremony("ce-old-done").unwrap().is_none());
    assert!(s.get_ceremony("ce-old-running").unwrap().is_some());
    assert!(s.get_ceremony("ce-young-done").unwrap().is_some());
    // History holds them, and never an encrypted code.
    assert_eq!(
        count(
            &s,
            "SELECT count(*) FROM sms_challenges_history WHERE code_enc IS NULL"
        ),
        2
    );
    assert_eq!(count(&s, "SELECT count(*) FROM sms_outbox_history"), 2);
    assert_eq!(count(&s, "SELECT count(*) FROM sms_sends_history"), 3);
    assert_eq!(
        count(
            &s,
            "SELECT count(*) FROM ceremonies_history WHERE id = 'ce-old-done'"
        ),
        1
    );
    // The budgets still see the sends of their windows.
    assert_eq!(s.sms_recent_sends(now - HOUR).unwrap().len(), 2);

    assert_eq!(
        s.sweep_hot_tables(HotWindows::default()).await.unwrap(),
        SweepReport::default(),
        "a second sweep finds nothing"
    );
    s.check_integrity().unwrap();

    // Ceremony retention reaches into history.
    assert_eq!(
        s.prune_ceremonies(ms_to_time(now) - time::Duration::hours(1))
            .unwrap(),
        1
    );
    assert_eq!(count(&s, "SELECT count(*) FROM ceremonies_history"), 0);
}

/// A backlog (the first sweep after an upgrade) moves in rounds of [`SWEEP_BATCH`] until none
/// is left.
#[tokio::test]
async fn a_backlog_larger_than_a_round_moves_entirely() {
    let clock = Arc::new(ManualClock::new(START));
    let (_dir, s) = open(&clock);
    let backlog = SWEEP_BATCH as i64 * 2 + 7;
    s.atomic(move |t| {
        for i in 0..backlog {
            t.sms_insert_challenge(
                &challenge(&format!("c{i:05}"), START + i, START + 5 * MIN, "verified"),
                &NewOutbox::due(format!("o{i:05}")),
                &SendLog {
                    e164: "+32475000001".into(),
                    country_code: 32,
                    at: START + i,
                },
                &NewAudit::new("x", "t"),
            )?;
        }
        Ok::<_, StoreError>(())
    })
    .await
    .unwrap();
    clock.advance(Duration::from_secs(2 * 24 * 3600));
    let moved = s.sweep_hot_tables(HotWindows::default()).await.unwrap();
    let n = backlog as u64;
    assert_eq!(
        moved,
        SweepReport {
            challenges: n,
            outbox: n,
            sends: n,
            ceremonies: 0,
        }
    );
    assert_eq!(count(&s, "SELECT count(*) FROM sms_challenges"), 0);
    assert_eq!(
        count(&s, "SELECT count(*) FROM sms_challenges_history"),
        backlog
    );
}

/// The sweep copies `SELECT *`: each history table has its hot table's columns, in order.
#[test]
fn history_tables_keep_their_hot_tables_columns() {
    let s = Store::open_in_memory().unwrap();
    let c = s.conn();
    let columns = |table: &str| -> Vec<String> {
        let mut st = c
            .prepare(&format!(
                "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
            ))
            .unwrap();
        let names = st.query_map([], |r| r.get(0)).unwrap();
        names.collect::<super::db::Result<_>>().unwrap()
    };
    for hot in ["sms_challenges", "sms_outbox", "sms_sends", "ceremonies"] {
        let cols = columns(hot);
        assert!(!cols.is_empty(), "{hot}");
        assert_eq!(cols, columns(&format!("{hot}_history")), "{hot}");
    }
}
