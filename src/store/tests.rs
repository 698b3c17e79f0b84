//! Unit tests of the store facade: the aggregates, atomic units and group commits, paging and
//! the user-name check (engine file tests are in `engine_tests.rs`).

use super::audit::insert_audit;
use super::*;

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}
use uuid::Uuid;

fn cred(id: &[u8], user: &str) -> CredentialRecord {
    CredentialRecord {
        id: id.to_vec(),
        user: user.into(),
        rp_credential: "{}".into(),
        public_key_cose: vec![1, 2, 3],
        counter: 0,
        aaguid: None,
        attestation_format: "packed".into(),
        attested: true,
        discoverable: false,
        user_verified: true,
        nickname: Some("blue key".into()),
        model: None,
        created_at: now(),
        last_used_at: None,
        state: CredentialState::Active,
        state_reason: None,
    }
}

async fn ceremony(s: &Store, id: &str) {
    let t = now();
    s.insert_ceremony(
        &CeremonyRecord {
            id: id.into(),
            kind: "enrollment".into(),
            user: Some("alice".into()),
            state: "pending".into(),
            error_code: None,
            created_at: t,
            updated_at: t,
            expires_at: t,
            created_by: Some("token:test".into()),
        },
        &NewAudit::new("ceremony.started", "test"),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn credential_lifecycle_and_audit() {
    let s = Store::open_in_memory().unwrap();
    let alice = s.upsert_user("alice", "Alice", &[1; 16]).await.unwrap();
    ceremony(&s, "c1").await;
    s.insert_credential(
        &alice,
        &cred(b"k1", "alice"),
        "c1",
        &NewAudit::new("credential.enrolled", "test"),
    )
    .await
    .unwrap();
    assert_eq!(s.get_ceremony("c1").unwrap().unwrap().state, "succeeded");
    // Same credential twice is a conflict and leaves the first intact.
    ceremony(&s, "c2").await;
    let e = s
        .insert_credential(
            &alice,
            &cred(b"k1", "alice"),
            "c2",
            &NewAudit::new("x", "test"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)));
    assert_eq!(s.get_ceremony("c2").unwrap().unwrap().state, "pending");

    ceremony(&s, "c3").await;
    s.quarantine_credential(
        b"k1",
        "counter",
        "c3",
        &NewAudit::new("credential.quarantined", "t"),
    )
    .await
    .unwrap();
    assert_eq!(
        s.get_credential(b"k1").unwrap().unwrap().state,
        CredentialState::Quarantined
    );
    let e = s
        .record_assertion(b"k1", 5, "{}", "c3", &NewAudit::new("x", "t"))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)));
    let r = s
        .transition_credential(
            "alice",
            b"k1",
            &[CredentialState::Quarantined],
            CredentialState::Active,
            None,
            &NewAudit::new("credential.released", "t"),
        )
        .await
        .unwrap();
    assert_eq!(r.state, CredentialState::Active);
    let receipt = s.reset_user("alice", "t").await.unwrap();
    assert_eq!(receipt.credentials_revoked, 1);
    assert!(s.list_credentials("alice", false).unwrap().is_empty());
    assert_eq!(s.list_credentials("alice", true).unwrap().len(), 1);
    let audit = s.list_audit(Some("alice"), None, 100).unwrap();
    assert!(audit.iter().any(|a| a.event == "user.reset"));
    s.check_integrity().unwrap();
}

#[tokio::test]
async fn audit_is_append_only() {
    let s = Store::open_in_memory().unwrap();
    s.append_audit(&NewAudit::new("x", "t")).await.unwrap();
    let c = s.conn();
    assert!(c.execute("DELETE FROM audit", []).is_err());
    assert!(c.execute("UPDATE audit SET event = 'y'", []).is_err());
}

#[tokio::test]
async fn interrupted_ceremonies_fail_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.db");
    {
        let s = Store::open(&p).unwrap();
        s.upsert_user("alice", "Alice", &[1; 16]).await.unwrap();
        ceremony(&s, "c1").await;
    }
    let s = Store::open(&p).unwrap();
    assert_eq!(s.fail_interrupted_ceremonies().unwrap(), 1);
    let c = s.get_ceremony("c1").unwrap().unwrap();
    assert_eq!(c.state, "failed");
    assert_eq!(c.error_code.as_deref(), Some("ceremony_interrupted"));
    assert_eq!(s.fail_interrupted_ceremonies().unwrap(), 0);
}

#[tokio::test]
async fn the_counter_only_moves_forward_even_when_two_ceremonies_race() {
    let s = Store::open_in_memory().unwrap();
    let alice = s.upsert_user("alice", "Alice", &[1; 16]).await.unwrap();
    ceremony(&s, "c1").await;
    s.insert_credential(
        &alice,
        &cred(b"k1", "alice"),
        "c1",
        &NewAudit::new("e", "test"),
    )
    .await
    .unwrap();
    let audit = NewAudit::new("credential.verified", "test");
    for id in ["a1", "a2", "a3", "a4"] {
        ceremony(&s, id).await;
    }
    // A key that always reports 0 is accepted as such.
    s.record_assertion(b"k1", 0, "{}", "a1", &audit)
        .await
        .unwrap();
    s.record_assertion(b"k1", 5, "{}", "a2", &audit)
        .await
        .unwrap();
    // Both ceremonies of a key and its clone checked against 0 and present 5: the second
    // loses the compare-and-set, and nothing of it is stored.
    let e = s
        .record_assertion(b"k1", 5, "{}", "a3", &audit)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::CounterNotAbove), "{e:?}");
    assert_eq!(s.get_ceremony("a3").unwrap().unwrap().state, "pending");
    assert_eq!(s.get_credential(b"k1").unwrap().unwrap().counter, 5);
    // Once quarantined, no counter is recorded at all.
    s.quarantine_credential(b"k1", "test", "a4", &NewAudit::new("q", "test"))
        .await
        .unwrap();
    let e = s
        .record_assertion(b"k1", 9, "{}", "a4", &audit)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
}

fn audited(s: &Store) -> Vec<u32> {
    let mut v: Vec<u32> = s
        .list_audit(None, None, 1000)
        .unwrap()
        .into_iter()
        .filter(|a| a.event == "unit.test")
        .map(|a| a.detail.as_u64().unwrap() as u32)
        .collect();
    v.sort();
    v
}

fn unit(s: &Store, i: u32, fail_after_write: bool) -> tokio::task::JoinHandle<Result<u32>> {
    let s = s.clone();
    tokio::spawn(async move {
        s.atomic(move |t| {
            insert_audit(t.0, &NewAudit::new("unit.test", "test").detail(i.into()))?;
            if fail_after_write {
                return Err(StoreError::Db(format!("unit {i} failed after writing")));
            }
            Ok(i)
        })
        .await
    })
}

/// Units that queue up together share one commit; a unit that refuses before writing (as
/// every unit must when it refuses) or panics before writing leaves the others alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_units_share_a_commit_and_refuse_alone() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("k.db")).unwrap();
    let mut units = Vec::new();
    for i in 0..60u32 {
        let s = s.clone();
        units.push(tokio::spawn(async move {
            s.atomic(move |t| {
                match i % 3 {
                    1 => return Err(StoreError::Conflict(format!("unit {i} refused"))),
                    2 if i == 2 => panic!("unit 2 panics"),
                    _ => {}
                }
                insert_audit(t.0, &NewAudit::new("unit.test", "test").detail(i.into()))?;
                Ok(i)
            })
            .await
        }));
    }
    let mut kept = Vec::new();
    for (i, u) in units.into_iter().enumerate() {
        match u.await.unwrap() {
            Ok(v) => kept.push(v),
            Err(StoreError::Conflict(m)) => assert_eq!(m, format!("unit {i} refused")),
            Err(StoreError::Db(m)) => {
                assert_eq!(i, 2, "only the panicking unit fails this way: {m}")
            }
            Err(e) => panic!("unit {i}: {e}"),
        }
    }
    let expected: Vec<u32> = (0..60).filter(|i| i % 3 != 1 && *i != 2).collect();
    assert_eq!(kept, expected);
    assert_eq!(
        audited(&s),
        expected,
        "exactly the kept units' writes are stored"
    );
    s.check_integrity().unwrap();
}

/// A unit that fails after writing takes its whole group commit down with it: nothing of that
/// group is stored and every unit in it hears an error; the groups before and after are fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_failing_after_a_write_rolls_back_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("k.db")).unwrap();
    let pause = std::time::Duration::from_millis(100);
    // Hold the connection so that the writer takes unit 1 alone, then waits; units 2-4
    // queue up meanwhile and form the next group.
    let held = {
        let s = s.clone();
        std::thread::spawn(move || {
            let _c = s.conn();
            std::thread::sleep(3 * pause);
        })
    };
    tokio::time::sleep(pause / 4).await;
    let first = unit(&s, 1, false);
    tokio::time::sleep(pause).await;
    let group = [unit(&s, 2, false), unit(&s, 3, true), unit(&s, 4, false)];
    held.join().unwrap();
    assert_eq!(first.await.unwrap().unwrap(), 1);
    for u in group {
        assert!(matches!(u.await.unwrap(), Err(StoreError::Db(_))));
    }
    assert_eq!(unit(&s, 5, false).await.unwrap().unwrap(), 5);
    assert_eq!(audited(&s), vec![1, 5]);
    s.check_integrity().unwrap();
}

/// The first credential of a user creates the user row in its own transaction; a second
/// "first" enrollment that gave the key another user handle stores nothing.
#[tokio::test]
async fn a_first_credential_creates_its_user_and_a_raced_handle_stores_nothing() {
    let s = Store::open_in_memory().unwrap();
    let bob = UserRecord {
        name: "bob".into(),
        display_name: "Bob".into(),
        user_handle: vec![7; 16],
        created_at: now(),
    };
    assert_eq!(s.get_user("bob").unwrap(), None);
    ceremony(&s, "c1").await;
    s.insert_credential(&bob, &cred(b"k1", "bob"), "c1", &NewAudit::new("e", "test"))
        .await
        .unwrap();
    let stored = s.get_user("bob").unwrap().unwrap();
    assert_eq!(stored.user_handle, vec![7; 16]);
    let raced = UserRecord {
        user_handle: vec![8; 16],
        display_name: "Bob B.".into(),
        ..bob
    };
    ceremony(&s, "c2").await;
    let e = s
        .insert_credential(
            &raced,
            &cred(b"k2", "bob"),
            "c2",
            &NewAudit::new("e", "test"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Db(_)), "{e:?}");
    assert_eq!(
        s.get_user("bob").unwrap().unwrap(),
        stored,
        "display name unchanged too"
    );
    assert!(s.get_credential(b"k2").unwrap().is_none());
    assert_eq!(s.get_ceremony("c2").unwrap().unwrap().state, "pending");
}

#[test]
fn row_ids_sort_in_creation_order_and_differ() {
    let ids: Vec<String> = (0..200).map(|_| new_row_id()).collect();
    let parsed: Vec<Uuid> = ids.iter().map(|i| Uuid::parse_str(i).unwrap()).collect();
    assert!(parsed.iter().all(|u| u.get_version_num() == 7));
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len());
    // Same millisecond: random order within it; across milliseconds: ordered.
    let later = {
        std::thread::sleep(std::time::Duration::from_millis(2));
        new_row_id()
    };
    assert!(ids.iter().all(|i| *i < later));
}

#[tokio::test]
async fn users_page_by_name_with_a_cursor() {
    let s = Store::open_in_memory().unwrap();
    for (i, n) in ["carol", "alice", "erin", "bob", "dave"].iter().enumerate() {
        s.upsert_user(n, n, &[i as u8; 16]).await.unwrap();
    }
    let (p1, next) = s.list_users_page(None, 2).unwrap();
    let names = |p: &[UserRecord]| p.iter().map(|u| u.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&p1), ["alice", "bob"]);
    assert_eq!(next.as_deref(), Some("bob"));
    let (p2, next) = s.list_users_page(next.as_deref(), 2).unwrap();
    assert_eq!(names(&p2), ["carol", "dave"]);
    let (p3, next) = s.list_users_page(next.as_deref(), 2).unwrap();
    assert_eq!(names(&p3), ["erin"]);
    assert_eq!(next, None, "no cursor after the last page");
    // A page that ends exactly on the last row has no cursor either.
    let (all, next) = s.list_users_page(None, 5).unwrap();
    assert_eq!(all, s.list_users().unwrap());
    assert_eq!(next, None);
    // The cursor need not be an existing name.
    let (p, _) = s.list_users_page(Some("c"), 1).unwrap();
    assert_eq!(names(&p), ["carol"]);
}

/// Rows from before the one user-name rule are reported at open, never dropped or changed.
#[tokio::test]
async fn user_names_breaking_the_rule_are_reported_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");
    Store::open(&db)
        .unwrap()
        .upsert_user("an.peeters+kiosk@odisee.be", "An", &[1; 16])
        .await
        .unwrap();
    {
        let raw = rusqlite::Connection::open(&db).unwrap();
        raw.execute_batch(
            "INSERT INTO users (name, display_name, user_handle, created_at) \
             VALUES ('..', 'dots', x'02', '2024-01-01T00:00:00Z'), \
                    ('bad name', 'space', x'03', '2024-01-01T00:00:00Z');
             INSERT INTO phones (id, user_name, e164, verified, created_at) \
             VALUES ('p1', '..', '+32470000000', 0, '2024-01-01T00:00:00Z');
             INSERT INTO sms_user_state (user_name, consecutive_failures, locked_until) \
             VALUES ('evil' || char(8238) || 'gpj', 3, 0);",
        )
        .unwrap();
    }
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let s = tracing::subscriber::with_default(subscriber, || Store::open(&db)).unwrap();
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("WARN") && logs.contains("count=3") && logs.contains(r#""bad name""#),
        "{logs}"
    );
    assert_eq!(
        s.users_breaking_name_rule().unwrap(),
        ["..", "bad name", "evil\u{202e}gpj"]
    );
    assert_eq!(s.get_user("..").unwrap().unwrap().display_name, "dots");
    assert_eq!(s.list_phones("..").unwrap().len(), 1);
    assert_eq!(s.list_users().unwrap().len(), 3);
}

/// Log lines captured in memory.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// Every timestamp the store writes comes from its clock (`keygate_now()`), not the wall
/// clock: audit lines, kiosk codes and their use, all on a manual clock in the past.
#[tokio::test]
async fn store_timestamps_come_from_the_injected_clock() {
    use crate::base::clock::{Clock, ManualClock};
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(ManualClock::new(1_600_000_000_000));
    let s = Store::open_with_clock(&dir.path().join("k.db"), clock.clone()).unwrap();
    assert_eq!(s.now(), clock.now());
    s.append_audit(&NewAudit::new("clock.test", "test"))
        .await
        .unwrap();
    let ev = s.list_audit(None, None, 10).unwrap();
    assert_eq!(ev[0].at, clock.now(), "audit time is the clock's");
    // A kiosk code valid for a minute of the manual clock: usable now, refused after.
    let (code_a, code_b) = (b"a".to_vec(), b"b".to_vec());
    s.insert_kiosk_code(&code_a, clock.now() + time::Duration::minutes(1))
        .await
        .unwrap();
    s.insert_kiosk_code(&code_b, clock.now() + time::Duration::minutes(1))
        .await
        .unwrap();
    assert!(s.consume_kiosk_code(&code_a).await.unwrap());
    clock.advance(std::time::Duration::from_secs(61));
    assert!(
        !s.consume_kiosk_code(&code_b).await.unwrap(),
        "expired on the store's clock"
    );
}

/// The one write path: an async write waits for the writer thread without blocking the
/// runtime. On a single-threaded runtime, with the writer busy on a long unit, a ticking task
/// keeps ticking while `append_audit` waits (a write that locked the writer's connection on
/// the runtime's thread would freeze every task until the unit ended).
#[tokio::test(flavor = "current_thread")]
async fn async_writes_wait_for_the_writer_without_blocking_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("k.db")).unwrap();
    let busy = {
        let s = s.clone();
        tokio::spawn(async move {
            s.atomic(|_t| {
                std::thread::sleep(std::time::Duration::from_millis(400));
                Ok::<_, StoreError>(())
            })
            .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let write = {
        let (s, log) = (s.clone(), log.clone());
        tokio::spawn(async move {
            s.append_audit(&NewAudit::new("one.path", "test"))
                .await
                .unwrap();
            log.lock().unwrap().push("written");
        })
    };
    for _ in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        log.lock().unwrap().push("tick");
    }
    write.await.unwrap();
    busy.await.unwrap().unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(&log[..5], ["tick"; 5], "the runtime kept running: {log:?}");
    assert_eq!(log[5], "written");
}
