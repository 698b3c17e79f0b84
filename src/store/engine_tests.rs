//! Tests of the engine on real files: file modes and the WAL's bound.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::audit::insert_audit;
use super::*;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn sidecar(db: &Path, suffix: &str) -> std::path::PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

/// The database, its WAL and its shared-memory file are the owner's alone whatever the umask
/// (the test process runs under the default 022, under which they used to be 0644).
#[tokio::test]
async fn database_wal_and_shm_are_0600() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");
    let s = Store::open(&db).unwrap();
    s.upsert_user("alice", "Alice", &[1; 16]).await.unwrap();
    s.append_audit(&NewAudit::new("x", "t")).await.unwrap();
    for p in [db.clone(), sidecar(&db, "-wal"), sidecar(&db, "-shm")] {
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

/// A database file left readable by others (an older keygate, a copy) is tightened at open.
#[tokio::test]
async fn an_existing_database_file_is_tightened_to_0600() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");
    drop(Store::open(&db).unwrap());
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = Store::open(&db).unwrap();
    s.append_audit(&NewAudit::new("x", "t")).await.unwrap();
    for p in [db.clone(), sidecar(&db, "-wal"), sidecar(&db, "-shm")] {
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

/// Hole 9: the WAL grew without bound under load and never shrank. A long read (here a raw
/// connection holding a snapshot, as a backup would) lets it grow past the truncation bound;
/// once the read ends, the checkpointer brings it back under the bound while writes go on, and
/// it stays there after the load; nothing written is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_shrinks_back_under_its_bound_after_a_load() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");
    let wal = sidecar(&db, "-wal");
    let s = Store::open(&db).unwrap();
    let bound = sqlite_file::WAL_TRUNCATE_AT;
    let wal_len = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let detail = serde_json::Value::String("x".repeat(4000));
    let write = |units: u32| {
        let s = s.clone();
        let detail = detail.clone();
        async move {
            for _ in 0..units {
                let detail = detail.clone();
                s.atomic(move |t| {
                    for _ in 0..8 {
                        insert_audit(t.0, &NewAudit::new("load", "test").detail(detail.clone()))?;
                    }
                    Ok::<_, StoreError>(())
                })
                .await
                .unwrap();
            }
        }
    };
    let reader = rusqlite::Connection::open(&db).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    while wal_len() <= bound + (4 << 20) {
        write(50).await;
    }
    drop(reader);
    let load_end = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < load_end {
        write(20).await;
    }
    let settled = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while wal_len() > bound && std::time::Instant::now() < settled {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        wal_len() <= bound,
        "WAL still {} bytes after the load",
        wal_len()
    );
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert!(wal_len() <= bound, "WAL grew back to {} bytes", wal_len());
    assert_eq!(s.wal_bytes(), wal_len());
    assert_eq!(Store::open_in_memory().unwrap().wal_bytes(), 0);
    let rows: i64 = s
        .conn()
        .query_row("SELECT count(*) FROM audit WHERE event = 'load'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(rows > 0 && rows % 8 == 0, "{rows} rows");
    s.check_integrity().unwrap();
}

/// A database at its page limit (a real `SQLITE_FULL`): the write fails as `StorageFull` and
/// leaves nothing, the store reports `storage_full` and refuses writes at once while reads go
/// on; once the limit is lifted the checkpointer's probe ends the episode by itself and the
/// next write lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_refuses_writes_keeps_reads_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("keygate.db")).unwrap();
    s.upsert_user("alice", "Alice", &[1; 16]).await.unwrap();
    s.limit_database_pages(0).unwrap();
    assert!(!s.storage_full());
    let big = serde_json::Value::String("x".repeat(64 << 10));
    let audits_before = s.list_audit(None, None, 1000).unwrap().len();
    let err = s
        .append_audit(&NewAudit::new("big", "t").detail(big.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::StorageFull), "{err:?}");
    assert!(s.storage_full());
    // Refused at once now, even a write that would fit.
    let err = s.upsert_user("bob", "Bob", &[2; 16]).await.unwrap_err();
    assert!(matches!(err, StoreError::StorageFull), "{err:?}");
    assert_eq!(
        crate::base::error::PublicError::code(&err),
        crate::base::error::ErrorCode::StoreUnavailable
    );
    assert!(s.get_user("alice").unwrap().is_some());
    assert!(s.get_user("bob").unwrap().is_none());
    assert_eq!(s.list_audit(None, None, 1000).unwrap().len(), audits_before);

    s.limit_database_pages(1 << 30).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while s.storage_full() {
        assert!(
            std::time::Instant::now() < deadline,
            "the episode never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    s.append_audit(&NewAudit::new("big", "t").detail(big))
        .await
        .unwrap();
    s.check_integrity().unwrap();
}

/// The sweeper's memory release runs on a file database in use (readers and the writer, each
/// in turn) and leaves every connection answering; what was stored stays readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releasing_the_page_caches_keeps_every_connection_working() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("keygate.db")).unwrap();
    for i in 0..50u8 {
        s.upsert_user(&format!("u{i}"), "U", &[i; 16])
            .await
            .unwrap();
    }
    let before = s.get_user("u7").unwrap();
    assert!(before.is_some());
    s.release_memory().unwrap();
    assert_eq!(s.get_user("u7").unwrap(), before);
    s.upsert_user("late", "Late", &[99; 16]).await.unwrap();
    assert!(s.get_user("late").unwrap().is_some());
}
