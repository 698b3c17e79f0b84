//! The hot path never scans a table: the statements that every SMS flow, token check, kiosk
//! session, ceremony and credential lookup runs are recorded as they pass the store's one
//! preparing function ([`super::prepare`], under `exec` and `row` too), so this list cannot
//! drift from the code; each one's `EXPLAIN QUERY PLAN` (on a migrated database without
//! `ANALYZE`, as a fresh install runs) must search an index, never `SCAN` a table.
//!
//! A new statement on one of the flows driven below is checked without touching this file; a
//! new flow on the hot path belongs in [`drive_hot_paths`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use time::OffsetDateTime;

use super::*;
use crate::base::clock::ManualClock;
use crate::base::sync::lock;
use crate::sms::{NewChallenge, SmsService};

/// Statements seen per database file, for the files a test asked to record.
static RECORDED: Mutex<BTreeMap<String, BTreeSet<String>>> = Mutex::new(BTreeMap::new());

/// Called by [`super::prepare`] (tests only): note `sql` when `c`'s file is being recorded.
pub(super) fn record(c: &Connection, sql: &str) {
    let Some(path) = c.path().filter(|p| !p.is_empty()) else {
        return;
    };
    if let Some(seen) = lock(&RECORDED).get_mut(path) {
        seen.insert(sql.to_string());
    }
}

fn start_recording(store: &Store) -> String {
    let path = store
        .conn()
        .sqlite()
        .and_then(|c| c.path())
        .expect("a file database")
        .to_string();
    lock(&RECORDED).insert(path.clone(), BTreeSet::new());
    path
}

fn recorded(path: &str) -> BTreeSet<String> {
    lock(&RECORDED).remove(path).unwrap_or_default()
}

/// Scans that are not full table scans, each with why it is bounded. Matched on (a piece of
/// the statement, the plan line).
const JUSTIFIED_SCANS: &[(&str, &str, &str)] = &[
    (
        "FROM (SELECT at FROM sms_sends",
        "SCAN recent",
        "the per-number count reads its subquery's rows, at most the policy's limit (LIMIT ?3)",
    ),
    (
        "UPDATE sms_challenges SET code_enc = NULL WHERE code_enc IS NOT NULL",
        "USING INDEX sms_challenges_code_kept",
        "the code sweep walks the partial index of challenges that still keep a code (live \
         ones, a few minutes' worth), never the history",
    ),
];

/// The plan's lines that are a full scan of a table (or an index built for one statement).
fn full_scans(c: &Connection, sql: &str) -> Vec<String> {
    let mut st = c
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    // Unbound parameters are NULL: the plan does not depend on their values.
    let mut rows = st.raw_query();
    let mut lines = Vec::new();
    while let Some(r) = rows.next().unwrap() {
        lines.push(r.get::<_, String>(3).unwrap());
    }
    lines
        .into_iter()
        .filter(|l| l.starts_with("SCAN ") || l.contains("AUTOMATIC"))
        .filter(|l| l != "SCAN CONSTANT ROW")
        .filter(|l| {
            !JUSTIFIED_SCANS
                .iter()
                .any(|(stmt, line, _why)| sql.contains(stmt) && l.contains(line))
        })
        .collect()
}

const START: i64 = 1_790_000_000_000;

fn sms_service(dir: &std::path::Path, store: &Store, clock: Arc<ManualClock>) -> Arc<SmsService> {
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
    SmsService::new(cfg, store.clone(), clock).unwrap()
}

fn latest_code(svc: &SmsService, e164: &str) -> String {
    let inbox = svc.inbox.as_ref().unwrap().for_number(e164);
    inbox[0].code.clone().expect("a code in the message")
}

fn wrong(code: &str) -> String {
    let d = (code.as_bytes()[0] - b'0' + 1) % 10;
    format!("{d}{}", &code[1..])
}

/// Every flow on a request's path, once, through the layers that run it in production.
async fn drive_hot_paths(dir: &std::path::Path, store: &Store, clock: &Arc<ManualClock>) {
    let svc = sms_service(dir, store, clock.clone());
    // SMS: register and verify a phone (a wrong code first: the lockout streak), sign-in
    // challenges by phone id, by number and replayed by Idempotency-Key, resend, cancel, the
    // outbox worker, a delivery report, the code sweep, removing a phone.
    let (phone, ch) = svc
        .add_phone(
            "r0001",
            "0475 00 00 01",
            Some("gsm"),
            Default::default(),
            "t",
        )
        .await
        .unwrap();
    svc.drain_outbox().await.unwrap();
    let code = latest_code(&svc, "+32475000001");
    svc.verify(&ch.id, &wrong(&code), "t").await.unwrap_err();
    svc.verify(&ch.id, &code, "t").await.unwrap();
    let by_id = || NewChallenge {
        user: "r0001".into(),
        phone_id: Some(phone.id.clone()),
        number: None,
        locale: None,
    };
    let (signin, _) = svc
        .create_challenge(by_id(), Some("k1"), "t")
        .await
        .unwrap();
    let (again, created) = svc
        .create_challenge(by_id(), Some("k1"), "t")
        .await
        .unwrap();
    assert_eq!((again.id.as_str(), created), (signin.id.as_str(), false));
    svc.drain_outbox().await.unwrap();
    clock.advance(Duration::from_secs(60));
    svc.resend(&signin.id, "t").await.unwrap();
    svc.drain_outbox().await.unwrap();
    svc.verify(&signin.id, &latest_code(&svc, "+32475000001"), "t")
        .await
        .unwrap();
    let by_number = NewChallenge {
        user: "r0001".into(),
        phone_id: None,
        number: Some("0475 00 00 01".into()),
        locale: None,
    };
    let (cancelled, _) = svc.create_challenge(by_number, None, "t").await.unwrap();
    svc.cancel(&cancelled.id, "t").await.unwrap();
    svc.drain_outbox().await.unwrap();
    svc.delivery_report(
        "console",
        "no-such-message",
        crate::sms::providers::DeliveryStatus::Delivered,
    )
    .await
    .unwrap();
    clock.advance(Duration::from_secs(600));
    svc.sweep_codes().await.unwrap();
    svc.get_challenge(&signin.id).unwrap();
    svc.delete_phone("r0001", &phone.id, "t").await.unwrap();

    // Every request: the token check (and a kiosk page session's expiry with it).
    let token = crate::auth::create_token(store, crate::auth::Role::Kiosk, None)
        .await
        .unwrap();
    assert!(crate::auth::verify_token(store, &token).unwrap().is_some());
    let token_id = token.split('_').nth(1).unwrap().to_string();
    store
        .insert_kiosk_code(&[7; 32], store.now() + time::Duration::minutes(5))
        .await
        .unwrap();
    assert!(store.consume_kiosk_code(&[7; 32]).await.unwrap());
    store
        .insert_kiosk_session(&token_id, 4_000_000_000)
        .await
        .unwrap();
    store.kiosk_session(&token_id).unwrap().unwrap();
    assert!(crate::auth::verify_token(store, &token).unwrap().is_some());
    store
        .bind_kiosk_session(&token_id, Some(("r0002", "Student")))
        .await
        .unwrap();
    store
        .use_kiosk_handoff(&[9; 32], 2_000_000_000, 1_900_000_000)
        .await
        .unwrap();

    // Ceremonies and credentials: an enrollment stores a credential, an assertion finds it by
    // id and by user, moves its counter; the audit line rides along with each.
    let now = OffsetDateTime::from_unix_timestamp(START / 1000).unwrap();
    let ceremony = |id: &str| CeremonyRecord {
        id: id.into(),
        kind: "enrollment".into(),
        user: Some("r0002".into()),
        state: "waiting_for_touch".into(),
        error_code: None,
        created_at: now,
        updated_at: now,
        expires_at: now + time::Duration::minutes(2),
        created_by: Some(format!("token:{token_id}")),
    };
    let audit = NewAudit::new("test", "t").user("r0002");
    store
        .insert_ceremony(&ceremony("c1"), &audit)
        .await
        .unwrap();
    store
        .update_ceremony("c1", "waiting_for_pin", None, None)
        .await
        .unwrap();
    store.get_ceremony("c1").unwrap().unwrap();
    let user = store
        .upsert_user("r0002", "Student", &[2; 16])
        .await
        .unwrap();
    store.get_user("r0002").unwrap().unwrap();
    store.find_user_by_handle(&[2; 16]).unwrap().unwrap();
    let cred = CredentialRecord {
        id: vec![1, 2, 3],
        user: "r0002".into(),
        rp_credential: "{}".into(),
        public_key_cose: vec![0xa5],
        counter: 1,
        aaguid: None,
        attestation_format: "none".into(),
        attested: false,
        discoverable: true,
        user_verified: true,
        nickname: None,
        model: None,
        created_at: now,
        last_used_at: None,
        state: CredentialState::Active,
        state_reason: None,
    };
    store
        .insert_credential(&user, &cred, "c1", &audit)
        .await
        .unwrap();
    store
        .insert_ceremony(&ceremony("c2"), &audit)
        .await
        .unwrap();
    store.get_credential(&cred.id).unwrap().unwrap();
    assert_eq!(store.list_credentials("r0002", false).unwrap().len(), 1);
    store
        .record_assertion(&cred.id, 2, "{}", "c2", &audit)
        .await
        .unwrap();
    store.append_audit(&audit).await.unwrap();

    // The key inventory (the service desk's view of every key): an Entra passkey beside the
    // local credential, pages of both kinds by cursor and filter, marking each kind lost.
    drive_inventory(store, &user, now).await;

    // The sweep of the hot tables (every minute) and ceremony retention (at start-up): they
    // must find their rows by index, not read the tables they keep small.
    clock.advance(Duration::from_secs(2 * 24 * 3600));
    let moved = store
        .sweep_hot_tables(super::HotWindows::default())
        .await
        .unwrap();
    assert!(moved.challenges > 0 && moved.ceremonies > 0, "{moved:?}");
    store.prune_ceremonies(store.now()).unwrap();
}

/// The inventory's statements: listing (every filter, a cursor of each kind), one key, lost.
async fn drive_inventory(store: &Store, user: &UserRecord, now: OffsetDateTime) {
    let passkey = EntraPasskeyRecord {
        credential_id: vec![9, 9, 9],
        user: user.name.clone(),
        upn: "r0002@student.example".into(),
        method_id: "m1".into(),
        rp_id: "login.microsoft.com".into(),
        entra_user_id: vec![1; 16],
        public_key_cose: vec![0xa5],
        counter: 0,
        aaguid: Some(uuid::Uuid::from_bytes([3; 16])),
        model: None,
        attestation_level: None,
        display_name: "Key".into(),
        cred_protect: Some(1),
        hmac_secret: true,
        user_verified: true,
        created_at: now,
        created_by: None,
        last_used_at: None,
    };
    let audit = NewAudit::new("entra.passkey_registered", "t").user(&user.name);
    store
        .insert_entra_passkey(user, &passkey, "c2", &audit)
        .await
        .unwrap();
    let entra = KeyRef {
        kind: KeyKind::Entra,
        credential_id: passkey.credential_id.clone(),
    };
    let local = KeyRef {
        kind: KeyKind::Local,
        credential_id: vec![1, 2, 3],
    };
    let filters = [
        KeyFilter::default(),
        KeyFilter {
            state: Some(KeyState::Active),
            aaguid: passkey.aaguid,
            kind: None,
        },
        KeyFilter {
            kind: Some(KeyKind::Entra),
            ..Default::default()
        },
    ];
    for filter in &filters {
        for after in [None, Some(&local), Some(&entra)] {
            store.list_keys(filter, after, 1).unwrap();
        }
    }
    store.get_key(&entra).unwrap().unwrap();
    store
        .mark_entra_key_lost(&entra.credential_id, "t")
        .await
        .unwrap();
    store
        .mark_key_lost(&local.credential_id, "t")
        .await
        .unwrap();
}

/// Hole: `DELETE FROM kiosk_handoffs_used WHERE expires_at <= ?1` (every handoff) and ending a
/// removed phone's challenges (`WHERE phone_id = ?1`) scanned their whole tables before
/// migration 9.
#[tokio::test]
async fn no_statement_on_the_hot_path_scans_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let store = Store::open_with_clock(&dir.path().join("keygate.db"), clock.clone()).unwrap();
    let path = start_recording(&store);
    drive_hot_paths(dir.path(), &store, &clock).await;
    let statements = recorded(&path);
    // Not vacuous: every hot table was reached through the recorder.
    for table in [
        "sms_challenges",
        "sms_outbox",
        "sms_sends",
        "sms_user_state",
        "phones",
        "tokens",
        "kiosk_sessions",
        "kiosk_handoffs_used",
        "ceremonies",
        "credentials",
        "users",
        "audit",
        "entra_passkeys",
    ] {
        assert!(
            statements.iter().any(|s| s.contains(table)),
            "no recorded statement touches {table}"
        );
    }
    let c = store.conn();
    let mut scanning = Vec::new();
    for sql in &statements {
        let scans = full_scans(c.sqlite().unwrap(), sql);
        if !scans.is_empty() {
            scanning.push(format!("{sql}\n    -> {}", scans.join("; ")));
        }
    }
    println!("{} hot-path statements checked", statements.len());
    assert!(
        scanning.is_empty(),
        "statements on the hot path that scan a table:\n{}",
        scanning.join("\n")
    );
}

/// The guard itself: a statement that scans is caught, one that searches is not.
#[test]
fn the_plan_check_tells_a_scan_from_a_search() {
    let store = Store::open_in_memory().unwrap();
    let c = store.conn();
    assert!(full_scans(
        c.sqlite().unwrap(),
        "SELECT * FROM sms_challenges WHERE id = ?1"
    )
    .is_empty());
    assert_eq!(
        full_scans(
            c.sqlite().unwrap(),
            "SELECT * FROM sms_challenges WHERE e164 = ?1"
        ),
        vec!["SCAN sms_challenges".to_string()]
    );
}
