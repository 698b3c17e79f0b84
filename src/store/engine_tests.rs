//! Tests of the engine on real files: file modes and the WAL's bound.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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
#[test]
fn database_wal_and_shm_are_0600() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");
    let s = Store::open(&db).unwrap();
    s.upsert_user("alice", "Alice", &[1; 16]).unwrap();
    s.append_audit(&NewAudit::new("x", "t")).unwrap();
    for p in [db.clone(), sidecar(&db, "-wal"), sidecar(&db, "-shm")] {
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

/// A database file left readable by others (an older keygate, a copy) is tightened at open.
#[test]
fn an_existing_database_file_is_tightened_to_0600() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");
    drop(Store::open(&db).unwrap());
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = Store::open(&db).unwrap();
    s.append_audit(&NewAudit::new("x", "t")).unwrap();
    for p in [db.clone(), sidecar(&db, "-wal"), sidecar(&db, "-shm")] {
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}
