//! The end of every bulk fill.

use std::path::Path;
use std::time::Duration;

/// Put what the fill wrote on disk, as it would be for flows stored over days: the WAL copied
/// back and emptied, the database file's dirty pages written (else the kernel's write-back of
/// a gigabyte written in a minute, and the checkpointer's fsync waiting for it, would be
/// measured as the cost of the stored flows).
pub fn settle(db: &Path) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    drop(c);
    std::fs::File::open(db).unwrap().sync_all().unwrap();
}
