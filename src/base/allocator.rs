//! The allocator's purge pass while the daemon is quiet.
//!
//! mimalloc (the global allocator, see `lib.rs`) gives pages freed by the program back to the
//! operating system once they have stayed free for its purge delay (1 s), but it checks for
//! such pages only when a thread passes through its collection: when a thread frees a whole
//! page, every thousand allocations that need a fresh page, or when a thread ends. A daemon
//! that falls quiet right after a busy spell (the evening's last flows, the sweep that moved a
//! day of rows to history) keeps every page it freed in that spell resident for as long as it
//! stays quiet: 5 MiB after `benches/memory.rs`, 7 MiB after start-up (what loading the
//! configuration and the numbering plans freed). SQLite's memory is glibc's, not mimalloc's:
//! no pass reaches it.
//!
//! [`spawn_purger`] runs [`purge_pass`] every [`PURGE_EVERY`]: a thread that allocates and
//! ends, whose end makes mimalloc collect and purge every arena whose delay has passed
//! (`mi_thread_done`). `mi_collect` would say the same in one call, but it is foreign code
//! and keygate forbids unsafe code. A pass costs one thread's start and end (tens of
//! microseconds); without mimalloc (`--no-default-features`) there is nothing to do.

use std::time::Duration;

/// How often the purger runs a pass: the allocator's purge delay, so that a page freed just
/// before a quiet spell goes back within two of them.
pub const PURGE_EVERY: Duration = Duration::from_secs(1);

/// One pass: a thread that allocates (so that mimalloc gives it a heap of its own) and ends.
/// Returns once the thread has ended; an error only if no thread could be started.
pub fn purge_pass() -> std::io::Result<()> {
    let thread = std::thread::Builder::new()
        .name("keygate-purge".into())
        .spawn(|| {
            std::hint::black_box(vec![0u8; 64]);
        })?;
    // The thread's body cannot panic; a join error would only mean it did.
    let _ = thread.join();
    Ok(())
}

/// Run [`purge_pass`] every [`PURGE_EVERY`] for as long as the process runs, on a thread of
/// its own (the pass blocks while its thread starts and ends). Nothing to do without
/// mimalloc.
pub fn spawn_purger() -> std::io::Result<()> {
    if !cfg!(feature = "mimalloc") {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("keygate-purger".into())
        .spawn(|| loop {
            std::thread::sleep(PURGE_EVERY);
            if let Err(e) = purge_pass() {
                tracing::warn!(error = %e, "allocator purge pass: no thread");
            }
        })?;
    Ok(())
}
