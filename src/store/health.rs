//! Storage health: whether the database's storage is full (SQLite's `SQLITE_FULL`, or an I/O
//! error while writing), and how keygate notices that space returned.
//!
//! Contract: the first write that fails for lack of space starts an episode (one `storage_full`
//! warning in the log, `/healthz` reports `storage_full`); while it lasts every write unit is
//! refused at once with [`super::StoreError::StorageFull`] (no request hammers a full disk, and no
//! challenge is stored that its SMS could not be recorded for) and reads go on. Only the
//! checkpointer's probe ends an episode: a write of [`PROBE_BYTES`] next to the database
//! succeeds and the database is below its page limit. A write that happens to fit in space
//! SQLite already holds (a restarted WAL) proves nothing about the disk, so it does not.

use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::db::Connection;

use crate::base::sync::lock;

/// How much free space the probe asks for before writes resume: a few group commits' worth
/// of WAL frames.
pub(super) const PROBE_BYTES: usize = 256 << 10;

/// Pages the database must still be able to grow by (under `max_page_count`) before writes
/// resume.
const PROBE_PAGES: i64 = 64;

thread_local! {
    /// A [`super::StoreError::StorageFull`] was made on this thread since the last look: the writer
    /// thread's units report errors of their own layer's type, so the store learns of the
    /// cause here.
    static STORAGE_FULL_SEEN: Cell<bool> = const { Cell::new(false) };
}

/// Called where a rusqlite error becomes [`super::StoreError::StorageFull`].
pub(super) fn note_storage_full() {
    STORAGE_FULL_SEEN.with(|s| s.set(true));
}

/// Whether a [`super::StoreError::StorageFull`] was made on this thread since the last call.
pub(super) fn take_storage_full_seen() -> bool {
    STORAGE_FULL_SEEN.with(|s| s.replace(false))
}

/// Whether `e` means the storage cannot take the write: `SQLITE_FULL` (no space, or the
/// database at `max_page_count`), or an I/O error on the write side (writing, syncing,
/// truncating, growing the shared-memory file), which on a full disk is how some file systems
/// answer.
pub(super) fn is_storage_full(e: &rusqlite::Error) -> bool {
    use rusqlite::ffi;
    let rusqlite::Error::SqliteFailure(f, _) = e else {
        return false;
    };
    match f.code {
        rusqlite::ErrorCode::DiskFull => true,
        rusqlite::ErrorCode::SystemIoFailure => matches!(
            f.extended_code,
            ffi::SQLITE_IOERR_WRITE
                | ffi::SQLITE_IOERR_FSYNC
                | ffi::SQLITE_IOERR_DIR_FSYNC
                | ffi::SQLITE_IOERR_TRUNCATE
                | ffi::SQLITE_IOERR_SHMSIZE
        ),
        _ => false,
    }
}

/// The store's storage health, shared by its handles, its writer thread and its checkpointer.
#[derive(Debug, Default)]
pub(super) struct StorageHealth {
    full: AtomicBool,
}

impl StorageHealth {
    pub(super) fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    /// A write failed for lack of space: starts an episode (and logs it) unless one is on.
    pub(super) fn set_full(&self) {
        if !self.full.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                store = "storage_full",
                "storage_full: the database's disk is full (or failing writes); writes are \
                 refused with 503 store_unavailable until space returns, reads go on"
            );
        }
    }

    /// The probe found space again: ends the episode.
    fn clear(&self) {
        if self.full.swap(false, Ordering::AcqRel) {
            tracing::info!(store = "ok", "storage available again; writes resume");
        }
    }

    /// While an episode lasts: end it when there is room again both on the disk (the probe
    /// file `probe` can be written) and in the database (`writer` is below its page limit).
    pub(super) fn probe(&self, probe: &Path, writer: &Mutex<Connection>) {
        if !self.is_full() || !disk_has_room(probe) {
            return;
        }
        if pages_left(&lock(writer)) >= PROBE_PAGES {
            self.clear();
        }
    }
}

/// Whether [`PROBE_BYTES`] can be written (and synced) at `path`; the file is removed again.
/// Only "no space" and "over quota" count as no room: any other failure says nothing about
/// space, and SQLite's own writes are the judge then.
fn disk_has_room(path: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| {
            f.write_all(&[0u8; PROBE_BYTES])?;
            f.sync_all()
        });
    let _ = std::fs::remove_file(path);
    match written {
        Ok(()) => true,
        Err(e) => !(e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(122)),
    }
}

/// Pages the database may still grow by (`max_page_count - page_count`).
fn pages_left(c: &Connection) -> i64 {
    let pragma = |name: &str| c.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
    match (pragma("max_page_count"), pragma("page_count")) {
        (Ok(max), Ok(count)) => max - count,
        _ => 0,
    }
}

/// Where the probe writes: beside the database, so on the same file system.
pub(super) fn probe_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-space-probe");
    p.into()
}
