//! The allocator's purge pass (`keygate::base::allocator`): pages that a process freed just
//! before falling quiet stay resident until a pass runs, and go back to the operating system
//! with it, SQLite's included (mimalloc serves the C library's malloc too). A test binary of
//! its own, its tests one at a time, so that no other allocations pass through the allocator
//! during a quiet spell.

use std::sync::{Mutex, MutexGuard};

/// One test at a time: a pass of one would end the other's quiet spell.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static QUIET: Mutex<()> = Mutex::new(());
    QUIET.lock().unwrap_or_else(|e| e.into_inner())
}

/// `RssAnon` of this process, in bytes.
fn resident_anonymous() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("an RssAnon line");
    kib * 1024
}

#[cfg(all(target_os = "linux", feature = "mimalloc"))]
#[test]
fn a_pass_gives_back_what_a_quiet_process_freed() {
    use keygate::base::allocator::{purge_pass, PURGE_EVERY};
    const MIB: usize = 1 << 20;
    let _quiet = one_at_a_time();
    let start = resident_anonymous();
    // 64 MiB in blocks of 1 KiB, written to, freed, on a thread that ends before the purge
    // delay has passed for them.
    std::thread::spawn(|| {
        let blocks: Vec<Box<[u8; 1024]>> =
            (0..64 * 1024).map(|i| Box::new([i as u8; 1024])).collect();
        drop(std::hint::black_box(blocks));
    })
    .join()
    .unwrap();
    // Quiet: nothing passes through the allocator's collection.
    std::thread::sleep(PURGE_EVERY * 2);
    let quiet = resident_anonymous();
    assert!(
        quiet >= start + 32 * MIB,
        "freed pages stay resident while the process is quiet ({start} -> {quiet} bytes)"
    );
    purge_pass().unwrap();
    let purged = resident_anonymous();
    assert!(
        purged <= start + 8 * MIB,
        "a pass gives the freed pages back ({start} -> {quiet} -> {purged} bytes)"
    );
}

#[cfg(all(target_os = "linux", feature = "mimalloc"))]
#[test]
fn sqlite_page_caches_go_back_with_the_same_pass() {
    use keygate::base::allocator::{purge_pass, PURGE_EVERY};
    const MIB: usize = 1 << 20;
    let _quiet = one_at_a_time();
    let start = resident_anonymous();
    // 64 MiB of pages in an in-memory database (its page cache), then a connection opened
    // after them and kept: with the C library's own malloc, the freed pages would stay
    // resident below it in that thread's arena.
    let (filled, kept) = std::thread::spawn(|| {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        db.execute_batch(
            "CREATE TABLE t(x); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c \
             WHERE i < 65536) INSERT INTO t SELECT randomblob(1000) FROM c;",
        )
        .unwrap();
        let filled = resident_anonymous();
        let kept = rusqlite::Connection::open_in_memory().unwrap();
        kept.execute_batch("CREATE TABLE kept(x)").unwrap();
        drop(db);
        (filled, kept)
    })
    .join()
    .unwrap();
    assert!(
        filled >= start + 48 * MIB,
        "the database's pages were resident ({start} -> {filled} bytes)"
    );
    std::thread::sleep(PURGE_EVERY * 2);
    purge_pass().unwrap();
    let purged = resident_anonymous();
    assert!(
        purged <= start + 16 * MIB,
        "SQLite's freed pages go back with a pass ({start} -> {filled} -> {purged} bytes)"
    );
    drop(kept);
}
