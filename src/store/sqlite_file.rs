//! The SQLite file of a kiosk: its sidecar files, their mode, and the checkpointer that keeps
//! the write-ahead log bounded (the campus store has none of these).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::db::Connection;
use super::health::StorageHealth;
use super::{Result, StoreError};
use crate::base::sync::lock;

/// Once reset, the WAL file keeps at most this many bytes (SQLite's `journal_size_limit`).
pub(super) const JOURNAL_SIZE_LIMIT: u64 = 64 << 20;

/// Past this size the checkpointer empties the WAL file (a TRUNCATE checkpoint) instead of
/// only copying it back: under steady load a passive checkpoint rarely finds a moment without
/// readers, so the WAL would only ever grow.
pub(super) const WAL_TRUNCATE_AT: u64 = 16 << 20;

/// How often the checkpointer runs. A commit writes every page it changed to the WAL, so
/// with few clients per group commit the log grows by tens of MiB a second on a 2-core VM; a
/// round every 250 ms let it reach 65 MiB (past `journal_size_limit`) between two truncations
/// in the SMS bench, every 100 ms keeps it near [`WAL_TRUNCATE_AT`] plus one round's growth.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// How long a truncating checkpoint waits for readers to leave the WAL; the writer waits at
/// most this long plus the copy. Given up, it is tried again on the next round.
pub(super) const TRUNCATE_WAIT: Duration = Duration::from_millis(250);

/// `path` with `suffix` appended (`keygate.db` -> `keygate.db-wal`).
pub(super) fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    p.into()
}

/// Size of the file at `path`; 0 when there is none.
pub(super) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The checkpointer thread: copies the WAL back into the database file on its own connection
/// (no request pays for it: tail latency) and empties the WAL once it passes
/// [`WAL_TRUNCATE_AT`]. For the truncation it holds the writing connection, so that it runs
/// between two group commits instead of waiting for a gap in the writer's lock; then it waits
/// only for readers, at most [`TRUNCATE_WAIT`]. While the storage is full it also probes for
/// space returning ([`StorageHealth::probe`]). A checkpoint that fails (a full disk cannot
/// take the pages it copies back) is tried again on the next round. Ends with the store.
pub(super) fn checkpointer_loop(
    writer: Weak<Mutex<Connection>>,
    c: rusqlite::Connection,
    wal: PathBuf,
    health: Arc<StorageHealth>,
    probe: PathBuf,
) {
    loop {
        std::thread::sleep(CHECKPOINT_EVERY);
        let Some(writer) = writer.upgrade() else {
            return;
        };
        health.probe(&probe, &writer);
        let _ = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        if file_len(&wal) <= WAL_TRUNCATE_AT {
            continue;
        }
        let held = lock(&writer);
        let busy = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        });
        drop(held);
        if !matches!(busy, Ok(0)) {
            tracing::debug!(wal_bytes = file_len(&wal), outcome = ?busy, "WAL truncation deferred");
        }
    }
}

/// Mode of the database file. SQLite creates the -wal and -shm files with the database
/// file's mode, so this one setting covers all three.
pub(super) const DB_FILE_MODE: u32 = 0o600;

/// Make the database file (created empty when absent: SQLite takes an empty file for a new
/// database) and any WAL or shared-memory file left by an earlier run the owner's alone,
/// whatever the umask.
pub(super) fn restrict_db_files(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |e: std::io::Error| StoreError::Db(format!("{}: {e}", path.display()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(DB_FILE_MODE)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    for suffix in ["", "-wal", "-shm"] {
        let p = sidecar(path, suffix);
        match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(DB_FILE_MODE)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !suffix.is_empty() => {}
            Err(e) => return Err(io(e)),
        }
    }
    Ok(())
}
