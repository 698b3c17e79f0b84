//! The audit chain: its encoding (a stable vector, built byte by byte), the writer's cached
//! head across rollbacks and other processes, the signed head, the guarded purge and the
//! migration of an unchained log.

use std::path::Path;

use rusqlite::{params, Connection};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::audit::insert_audit;
use super::audit_chain::{
    canonical_json, entry_hash, head_key_path, EntryFields, HeadKey, GENESIS, HEAD_EVERY,
};
use super::*;

fn vector_fields() -> EntryFields<'static> {
    EntryFields {
        seq: 42,
        at: "2025-01-02T03:04:05.678Z",
        event: "credential.enrolled",
        user: Some("r0123456"),
        credential_id: None,
        ceremony_id: Some(""),
        actor: "token:AbC",
        detail: r#"{"a":[1,"é"],"b":null}"#,
    }
}

/// The encoding as the README states it, written out byte by byte.
fn encoded_by_hand(prev: &[u8; 32]) -> Vec<u8> {
    let mut b = b"keygate.audit.entry.v1".to_vec();
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 42]);
    let text = |b: &mut Vec<u8>, s: &str| {
        b.extend_from_slice(&(s.len() as u64).to_be_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    text(&mut b, "2025-01-02T03:04:05.678Z");
    text(&mut b, "credential.enrolled");
    b.push(1);
    text(&mut b, "r0123456");
    b.push(0);
    b.push(1);
    text(&mut b, "");
    text(&mut b, "token:AbC");
    text(&mut b, r#"{"a":[1,"é"],"b":null}"#);
    b.extend_from_slice(prev);
    b
}

#[test]
fn the_entry_encoding_is_the_documented_one_and_stable() {
    let prev: [u8; 32] = core::array::from_fn(|i| i as u8);
    let expected: [u8; 32] = Sha256::digest(encoded_by_hand(&prev)).into();
    assert_eq!(entry_hash(&vector_fields(), &prev), expected);
    // Version 1 of the encoding, pinned: changing it breaks every stored chain.
    assert_eq!(
        hex::encode(entry_hash(&vector_fields(), &prev)),
        "5c47f1ca1354bfdd1ab411c69fa6fc07b2c4af0da9f26c942ff49f1002629ec6"
    );
}

#[test]
fn every_field_boundary_and_absence_changes_the_hash() {
    let base = vector_fields();
    let h = |e: EntryFields<'_>| entry_hash(&e, &GENESIS);
    let mut variants = vec![h(base)];
    variants.push(h(EntryFields { seq: 43, ..base }));
    variants.push(h(EntryFields {
        user: Some("r012345"),
        credential_id: Some("6"),
        ..base
    }));
    variants.push(h(EntryFields {
        ceremony_id: None,
        ..base
    }));
    variants.push(h(EntryFields {
        event: "credential.enrolledtoken:AbC",
        actor: "",
        ..base
    }));
    variants.push(entry_hash(&base, &[1; 32]));
    let distinct: std::collections::HashSet<_> = variants.iter().collect();
    assert_eq!(distinct.len(), variants.len());
}

#[test]
fn canonical_json_sorts_keys_at_every_depth_and_has_no_whitespace() {
    let a: serde_json::Value = serde_json::from_str(
        r#"{ "zeta": 1, "alpha": {"y": [true, {"b":2,"a":"x\"y"}], "x": null}, "Beta": -1.5 }"#,
    )
    .unwrap();
    let b: serde_json::Value = serde_json::from_str(
        r#"{"Beta":-1.5,"alpha":{"x":null,"y":[true,{"a":"x\"y","b":2}]},"zeta":1}"#,
    )
    .unwrap();
    let text = r#"{"Beta":-1.5,"alpha":{"x":null,"y":[true,{"a":"x\"y","b":2}]},"zeta":1}"#;
    assert_eq!(canonical_json(&a), text);
    assert_eq!(canonical_json(&b), text);
    assert_eq!(canonical_json(&json!("é\n")), "\"é\\n\"");
}

#[test]
fn the_head_key_is_made_once_0600_and_signs_seq_and_hash() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = head_key_path(&dir.path().join("keygate.db"));
    let k1 = HeadKey::load_or_create(&path).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 32);
    let k2 = HeadKey::load_or_create(&path).unwrap();
    let sig = k1.sign(7, &[9; 32]);
    assert!(k2.verifies(7, &[9; 32], &sig));
    assert!(!k2.verifies(8, &[9; 32], &sig));
    assert!(!k2.verifies(7, &[8; 32], &sig));
    assert!(!HeadKey::ephemeral().verifies(7, &[9; 32], &sig));
    std::fs::write(&path, b"short").unwrap();
    assert!(HeadKey::read(&path).is_err());
}

async fn append(s: &Store, n: usize) {
    for i in 0..n {
        s.append_audit(&NewAudit::new("test.entry", "test").detail(json!({ "i": i })))
            .await
            .unwrap();
    }
}

fn verify(db: &Path) -> AuditVerdict {
    let key = HeadKey::read(&head_key_path(db)).unwrap();
    verify_audit_chain(db, Some(&key), None).unwrap()
}

fn assert_intact(db: &Path, entries: u64) {
    let v = verify(db);
    assert_eq!(v.broken, None, "{v}");
    assert_eq!(v.entries, entries, "{v}");
}

/// Rolled-back appends (a savepoint of `write`, a whole group commit) leave no trace in the
/// cached head: the next appends chain onto what was committed.
#[tokio::test]
async fn appends_after_rollbacks_chain_onto_the_committed_head() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");
    let s = Store::open(&db).unwrap();
    append(&s, 3).await;
    let refused = s
        .write(|c| {
            insert_audit(c, &NewAudit::new("rolled.back", "test"))?;
            Err::<(), _>(StoreError::Conflict("refused after writing".into()))
        })
        .await;
    assert!(refused.is_err());
    append(&s, 1).await;
    let failed = s
        .atomic(|t| {
            insert_audit(t.0, &NewAudit::new("rolled.back", "test"))?;
            Err::<(), _>(StoreError::Db("failed after writing".into()))
        })
        .await;
    assert!(failed.is_err());
    append(&s, 2).await;
    assert!(s
        .list_audit(None, None, 100)
        .unwrap()
        .iter()
        .all(|e| e.event == "test.entry"));
    assert_intact(&db, 6);
    assert_eq!(s.audit_head().unwrap().seq, 6);
}

/// Two stores on one file (the daemon and a `keygate` command beside it): each one's cached
/// head goes stale when the other appends, and the chain stays whole.
#[tokio::test]
async fn two_processes_appending_in_turn_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");
    let a = Store::open(&db).unwrap();
    let b = Store::open(&db).unwrap();
    for _ in 0..3 {
        append(&a, 2).await;
        append(&b, 1).await;
    }
    // The synchronous path (start-up work) too: ending an interrupted ceremony audits it.
    let t = a.now();
    a.insert_ceremony(
        &CeremonyRecord {
            id: "c1".into(),
            kind: "enrollment".into(),
            user: None,
            state: "pending".into(),
            error_code: None,
            created_at: t,
            updated_at: t,
            expires_at: t,
            created_by: None,
        },
        &NewAudit::new("ceremony.started", "test"),
    )
    .await
    .unwrap();
    assert_eq!(b.fail_interrupted_ceremonies().unwrap(), 1);
    append(&a, 1).await;
    append(&b, 1).await;
    assert_intact(&db, 13);
}

#[tokio::test]
async fn every_hundredth_entry_stores_a_signed_head() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");
    let s = Store::open(&db).unwrap();
    append(&s, HEAD_EVERY as usize + 3).await;
    let (seq, hash, sig): (i64, Vec<u8>, Vec<u8>) = s
        .conn()
        .query_row(
            "SELECT seq, hash, signature FROM audit_signed_head",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(seq, HEAD_EVERY);
    let key = HeadKey::read(&head_key_path(&db)).unwrap();
    assert!(key.verifies(seq, &hash.clone().try_into().unwrap(), &sig));
    let head = s.audit_head().unwrap();
    assert_eq!(head.seq, HEAD_EVERY + 3);
    assert!(key.verifies(head.seq, &head.hash, &head.signature));
    assert_intact(&db, HEAD_EVERY as u64 + 3);
    // A forged signed head is reported.
    drop(s);
    let c = Connection::open(&db).unwrap();
    c.execute("UPDATE audit_signed_head SET signature = zeroblob(32)", [])
        .unwrap();
    let v = verify(&db);
    assert!(
        matches!(v.broken, Some(AuditBreak::BadSignature { seq }) if seq == HEAD_EVERY),
        "{v}"
    );
}

#[tokio::test]
async fn a_purge_keeps_the_chain_verifiable_and_the_triggers_refuse_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");
    let s = Store::open(&db).unwrap();
    append(&s, 10).await;
    assert_eq!(s.purge_audit_before(6).await.unwrap(), 5);
    assert_eq!(s.purge_audit_before(3).await.unwrap(), 0, "already gone");
    assert!(s.purge_audit_before(12).await.is_err(), "the head stays");
    let (anchor_seq, anchor_prev): (i64, Vec<u8>) = s
        .conn()
        .query_row("SELECT seq, prev_hash FROM audit_anchor", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(anchor_seq, 6);
    let without_key = verify_audit_chain(&db, None, None).unwrap();
    assert_eq!((without_key.entries, without_key.broken), (5, None));
    assert_intact(&db, 5);
    {
        let c = s.conn();
        assert!(c.execute("DELETE FROM audit WHERE seq = 7", []).is_err());
        assert!(c.execute("DELETE FROM audit_anchor", []).is_err());
        assert!(c.execute("UPDATE audit SET detail = '{}'", []).is_err());
        let before: i64 = c
            .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
            .unwrap();
        assert_eq!(before, 5);
        let prev6: Vec<u8> = c
            .query_row("SELECT prev_hash FROM audit WHERE seq = 6", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(prev6, anchor_prev);
    }
    // The head survives a reopen (the cache is read again) and the purge of all but it.
    drop(s);
    let s = Store::open(&db).unwrap();
    append(&s, 2).await;
    assert_eq!(s.purge_audit_before(12).await.unwrap(), 6);
    append(&s, 1).await;
    assert_intact(&db, 2);
    // A head older than the anchor cannot be checked; one at the anchor's predecessor can.
    let key = HeadKey::read(&head_key_path(&db)).unwrap();
    let old = GivenHead {
        seq: 3,
        hash: [0; 32],
    };
    let v = verify_audit_chain(&db, Some(&key), Some(&old)).unwrap();
    assert_eq!(v.broken, None, "{v}");
    assert_eq!(v.notes.len(), 1, "{:?}", v.notes);
    let wrong = GivenHead {
        seq: 11,
        hash: [0; 32],
    };
    let v = verify_audit_chain(&db, Some(&key), Some(&wrong)).unwrap();
    assert!(
        matches!(v.broken, Some(AuditBreak::HeadDiffers { seq: 11, .. })),
        "{v}"
    );
}

/// A database from before the chain: the migration chains its entries in seq order from the
/// genesis, and appends go on from there.
#[tokio::test]
async fn the_migration_chains_an_existing_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");
    {
        let c = Connection::open(&db).unwrap();
        for sql in &migrations::MIGRATIONS[..9] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", 9).unwrap();
        for i in 0..5 {
            c.execute(
                "INSERT INTO audit (at, event, actor, detail, user_name) \
                 VALUES ('2024-05-01T00:00:00Z', 'old.entry', 'cli', ?1, 'alice')",
                params![json!({ "i": i, "b": [1, 2] }).to_string()],
            )
            .unwrap();
        }
    }
    let s = Store::open(&db).unwrap();
    append(&s, 2).await;
    assert_intact(&db, 7);
    let prev1: Vec<u8> = s
        .conn()
        .query_row("SELECT prev_hash FROM audit WHERE seq = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(prev1, GENESIS);
    assert!(s
        .conn()
        .execute("UPDATE audit SET event = 'x'", [])
        .is_err());
}
