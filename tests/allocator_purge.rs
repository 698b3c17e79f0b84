//! The allocator's purge pass (`keygate::base::allocator`): pages that a process freed just
//! before falling quiet stay resident until a pass runs, and go back to the operating system
//! with it. A test binary of its own, so that no other test's allocations pass through the
//! allocator during the quiet spell. Only with mimalloc (the default) and Linux's `/proc`.
#![cfg(all(target_os = "linux", feature = "mimalloc"))]

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

#[test]
fn a_pass_gives_back_what_a_quiet_process_freed() {
    use keygate::base::allocator::{purge_pass, PURGE_EVERY};
    const MIB: usize = 1 << 20;
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
