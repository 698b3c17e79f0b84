//! Retention on a manual clock: each window removes what is past it and keeps what is not, a
//! dry run counts exactly what the real run then removes, closed users go only after their
//! grace period and leave a pseudonymous trail, and the audit chain still verifies.

use std::sync::Arc;
use std::time::Duration;

use super::db::params;

use super::*;
use crate::base::clock::{Clock, ManualClock};

const START: i64 = 1_790_000_000_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

fn windows() -> RetentionWindows {
    (&crate::config::RetentionConfig::default()).into()
}

fn open(clock: &Arc<ManualClock>) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with_clock(&dir.path().join("keygate.db"), clock.clone()).unwrap();
    (dir, s)
}

fn count(s: &Store, sql: &str) -> i64 {
    s.conn().query_row(sql, [], |r| r.get(0)).unwrap()
}

async fn store_challenge(s: &Store, id: &str, user: &str, created_at: i64) {
    let ch = SmsChallengeRecord {
        id: id.into(),
        user: user.into(),
        phone_id: None,
        e164: "+32475000001".into(),
        purpose: "sign_in".into(),
        locale: "nl".into(),
        code_mac: vec![1; 32],
        code_enc: None,
        created_at,
        expires_at: created_at + 5 * MIN,
        attempts: 0,
        resends: 0,
        last_sent_at: created_at,
        state: "verified".into(),
        delivery_status: "sent".into(),
        idempotency_key: None,
        idempotency_hash: None,
        created_by: None,
    };
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

async fn store_ceremony(s: &Store, id: &str, user: &str) {
    let now = s.now();
    let rec = CeremonyRecord {
        id: id.into(),
        kind: "assertion".into(),
        user: Some(user.into()),
        state: "succeeded".into(),
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

/// A user with one credential and one phone, written as the enrollment and SMS paths do.
async fn store_user(s: &Store, name: &str) {
    let handle = name.as_bytes().to_vec();
    s.upsert_user(name, "Ana Peeters", &handle).await.unwrap();
    let name = name.to_string();
    s.tx(move |c| {
        exec(
            c,
            "INSERT INTO credentials (id, user_name, rp_credential, public_key_cose, counter, \
             attestation_format, attested, discoverable, user_verified, created_at, state) \
             VALUES (CAST(?1 AS BLOB), ?1, '{}', x'a5', 0, 'none', 0, 0, 1, keygate_now(), 'active')",
            params![name],
        )?;
        exec(
            c,
            "INSERT INTO phones (id, user_name, e164, verified, created_at) \
             VALUES ('ph-' || ?1, ?1, '+32475000001', 1, keygate_now())",
            params![name],
        )?;
        Ok(())
    })
    .unwrap();
}

fn advance(clock: &ManualClock, ms: i64) {
    clock.advance(Duration::from_millis(ms as u64));
}

#[tokio::test]
async fn sms_and_ceremony_rows_past_their_window_go_in_hot_and_history_tables() {
    let clock = Arc::new(ManualClock::new(START));
    let (_dir, s) = open(&clock);
    store_challenge(&s, "a", "bob", START).await;
    store_challenge(&s, "b", "bob", START).await;
    store_ceremony(&s, "ce-a", "bob").await;
    advance(&clock, 25 * HOUR);
    s.sweep_hot_tables(HotWindows::default()).await.unwrap();
    // Still hot (never swept), but old by the time of the purge.
    store_challenge(&s, "c", "bob", clock.now_ms()).await;
    advance(&clock, 40 * DAY);
    store_challenge(&s, "young", "bob", clock.now_ms() - MIN).await;
    store_ceremony(&s, "ce-young", "bob").await;

    let dry = s.purge(s.now(), true, windows()).await.unwrap();
    let expect = [
        ("sms_challenges_history", 2),
        ("sms_outbox_history", 2),
        ("sms_sends_history", 2),
        ("sms_challenges", 1),
        ("sms_outbox", 1),
        ("sms_sends", 1),
        ("ceremonies_history", 1),
        ("ceremonies", 0),
    ];
    for (table, n) in expect {
        assert_eq!(dry.tables[table], n, "{table} in {dry:?}");
    }
    assert_eq!(dry.audit_seq, None);
    assert!(
        s.sms_challenge("c").unwrap().is_some(),
        "a dry run removes nothing"
    );
    assert_eq!(count(&s, "SELECT count(*) FROM sms_challenges_history"), 2);

    let real = s.purge(s.now(), false, windows()).await.unwrap();
    assert_eq!(real.tables, dry.tables, "the dry run counted what went");
    assert!(s.sms_challenge("c").unwrap().is_none());
    assert!(s.sms_challenge("young").unwrap().is_some());
    assert!(s.sms_outbox("ob-young").unwrap().is_some());
    assert!(s.get_ceremony("ce-young").unwrap().is_some());
    for t in [
        "sms_challenges_history",
        "sms_outbox_history",
        "sms_sends_history",
        "ceremonies_history",
    ] {
        assert_eq!(count(&s, &format!("SELECT count(*) FROM {t}")), 0, "{t}");
    }
    assert_eq!(count(&s, "SELECT count(*) FROM sms_sends"), 1);
    let run = s.list_audit(None, None, 1).unwrap().remove(0);
    assert_eq!(
        (run.seq, run.event.as_str()),
        (real.audit_seq.unwrap(), "retention.purged")
    );
    assert_eq!(run.detail["tables"]["sms_challenges"], 1);
}

#[tokio::test]
async fn a_closed_user_goes_only_after_the_grace_period_and_leaves_a_pseudonym() {
    let clock = Arc::new(ManualClock::new(START));
    let (dir, s) = open(&clock);
    store_user(&s, "ana").await;
    store_user(&s, "bob").await;
    store_challenge(&s, "ana-1", "ana", START).await;
    store_ceremony(&s, "ce-ana", "ana").await;
    let first = s.close_user("ana", "token:t1").await.unwrap();
    advance(&clock, MIN);
    let again = s.close_user("ana", "token:t2").await.unwrap();
    assert_eq!(first, again, "closing twice keeps the first closure");
    assert!(s.user_closed("ana").unwrap() && !s.user_closed("bob").unwrap());
    let closes = s.list_audit(Some("ana"), None, 100).unwrap();
    assert_eq!(
        closes.iter().filter(|e| e.event == "user.closed").count(),
        1
    );

    let within = s.now() + time::Duration::days(13);
    let r = s.purge(within, false, windows()).await.unwrap();
    assert!(r.closed_users.is_empty());
    assert!(s.get_user("ana").unwrap().is_some());

    let after = s.now() + time::Duration::days(15);
    let dry = s.purge(after, true, windows()).await.unwrap();
    assert_eq!(dry.closed_users.len(), 1);
    let listed = &dry.closed_users[0];
    assert_eq!(listed.user, "ana");
    assert_eq!(listed.pseudonym, s.user_pseudonym("ana"));
    assert_ne!(listed.pseudonym, s.user_pseudonym("bob"));
    assert_eq!(
        (
            listed.removed["credentials"],
            listed.removed["phones"],
            listed.removed["users"]
        ),
        (1, 1, 1)
    );
    assert_eq!(
        listed.removed["sms_challenges"] + listed.removed["sms_challenges_history"],
        1
    );
    assert_eq!(s.list_credentials("ana", true).unwrap().len(), 1, "dry run");

    let real = s.purge(after, false, windows()).await.unwrap();
    assert_eq!(real.closed_users, dry.closed_users);
    assert!(s.get_user("ana").unwrap().is_none());
    assert!(s.list_credentials("ana", true).unwrap().is_empty());
    assert!(s.list_phones("ana").unwrap().is_empty());
    assert!(s.sms_challenge("ana-1").unwrap().is_none());
    assert!(s.get_ceremony("ce-ana").unwrap().is_none());
    assert_eq!(
        s.list_credentials("bob", true).unwrap().len(),
        1,
        "bob stays"
    );
    let purged: Vec<_> = s
        .list_audit(None, None, 100)
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "user.purged")
        .collect();
    assert_eq!(purged.len(), 1);
    assert_eq!(purged[0].user, None);
    assert_eq!(purged[0].detail["pseudonym"], listed.pseudonym.as_str());
    assert!(!purged[0].detail.to_string().contains("ana"));
    assert!(matches!(
        s.reopen_user("ana", "t").await,
        Err(StoreError::NotFound)
    ));
    let key =
        audit_chain::HeadKey::read(&audit_chain::head_key_path(&dir.path().join("keygate.db")))
            .unwrap();
    let verdict = verify_audit_chain(&dir.path().join("keygate.db"), Some(&key), None).unwrap();
    assert!(verdict.broken.is_none(), "{verdict}");
}

#[tokio::test]
async fn a_reopened_user_is_not_purged() {
    let clock = Arc::new(ManualClock::new(START));
    let (_dir, s) = open(&clock);
    store_user(&s, "ana").await;
    s.close_user("ana", "t").await.unwrap();
    assert!(s.reopen_user("ana", "t").await.unwrap());
    assert!(!s.reopen_user("ana", "t").await.unwrap(), "already open");
    let r = s
        .purge(s.now() + time::Duration::days(30), false, windows())
        .await
        .unwrap();
    assert!(r.closed_users.is_empty());
    assert_eq!(s.list_credentials("ana", true).unwrap().len(), 1);
}

#[tokio::test]
async fn audit_entries_past_audit_days_go_and_the_chain_still_verifies() {
    let clock = Arc::new(ManualClock::new(START));
    let (dir, s) = open(&clock);
    for i in 0..1500 {
        s.append_audit(&NewAudit::new("old", "t").detail(serde_json::json!(i)))
            .await
            .unwrap();
    }
    advance(&clock, 401 * DAY);
    for _ in 0..3 {
        s.append_audit(&NewAudit::new("young", "t")).await.unwrap();
    }
    let dry = s.purge(s.now(), true, windows()).await.unwrap();
    assert_eq!(dry.tables["audit"], 1500);
    assert_eq!(count(&s, "SELECT count(*) FROM audit"), 1503);
    let real = s.purge(s.now(), false, windows()).await.unwrap();
    assert_eq!(real.tables["audit"], 1500);
    assert_eq!(
        count(&s, "SELECT count(*) FROM audit WHERE event = 'old'"),
        0
    );
    assert_eq!(
        count(&s, "SELECT count(*) FROM audit WHERE event = 'young'"),
        3
    );
    assert_eq!(
        count(&s, "SELECT count(*) FROM audit_anchor"),
        2,
        "in two batches"
    );
    let db = dir.path().join("keygate.db");
    let key = audit_chain::HeadKey::read(&audit_chain::head_key_path(&db)).unwrap();
    let verdict = verify_audit_chain(&db, Some(&key), None).unwrap();
    assert!(verdict.broken.is_none(), "{verdict}");
}

#[tokio::test]
async fn the_export_names_every_kind_of_record_and_no_secret() {
    let clock = Arc::new(ManualClock::new(START));
    let (_dir, s) = open(&clock);
    store_user(&s, "ana").await;
    store_challenge(&s, "ana-1", "ana", START).await;
    store_ceremony(&s, "ce-ana", "ana").await;
    s.close_user("ana", "token:t1").await.unwrap();
    let doc = s.export_user("ana").unwrap();
    assert_eq!(doc["user"]["display_name"], "Ana Peeters");
    assert_eq!(doc["user"]["closed_by"], "token:t1");
    assert_eq!(doc["credentials"][0]["id"], "YW5h");
    assert_eq!(doc["phones"][0]["e164"], "+32475000001");
    assert_eq!(doc["sms_challenges"][0]["state"], "verified");
    assert_eq!(doc["sms_messages"][0]["challenge_id"], "ana-1");
    assert_eq!(doc["ceremonies"][0]["id"], "ce-ana");
    assert!(doc["audit"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["event"] == "user.closed"));
    let text = doc.to_string();
    assert!(!text.contains("code_mac") && !text.contains("rp_credential"));
    assert!(matches!(s.export_user("nobody"), Err(StoreError::NotFound)));
}
