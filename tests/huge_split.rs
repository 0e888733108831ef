//! The memory of a freed huge block serves the next huge blocks as it is, resident: a
//! smaller block takes the start of its cached region and the rest stays cached (it is
//! split, not shrunk by `mremap`, which gave the tail back to the OS), a second block takes
//! that rest, and a block that grows with `realloc` joins the cached region that follows
//! its own. None of it maps memory or faults a page in again (issue 11, large-realloc: a
//! 32 MiB buffer's region was shrunk for the next buffer, which then grew back to 32 MiB a
//! page fault at a time).
//!
//! Counts, not times: the purge delay is set long enough that nothing cached is purged
//! during the test; the evidence is the bytes reserved from the source (no new mapping),
//! the blocks' addresses, and minor page faults of the thread, with transparent huge pages
//! switched off for this process (`PR_SET_THP_DISABLE`: one fault per 4 KiB page touched
//! in memory that is not resident). Alone in its test binary: the statistics, the cache
//! and the fault counter are the process's.

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

mod common;
use common::{minor_faults, touch_pages as touch};

const MB: usize = 1 << 20;
const PAGE: usize = 4096;
/// Segments (and cached regions) are aligned to this (`size_class::SEGMENT_SIZE`).
const SEGMENT: usize = 4 * MB;

fn reserved_total() -> i64 {
    shardalloc::stats().reserved.total
}

#[test]
fn huge_regions_are_split_and_joined_resident() {
    common::thp_off();
    shardalloc::DOMAIN.set_purge_delay(60_000);
    shardalloc::collect(true);

    // a 32 MiB block, touched in full, then freed: its region is cached, resident
    // SAFETY: 8 is a power of two; the blocks are used inside their sizes and freed once.
    let big = unsafe { shardalloc::alloc(32 * MB, 8, false) };
    assert!(!big.is_null());
    touch(big, 32 * MB, 1);
    let region = big as usize & !(SEGMENT - 1);
    unsafe { shardalloc::free(big) };

    let mapped = reserved_total();
    let faults = minor_faults();
    // a 6 MiB block takes the start of that region; the rest (from the next segment
    // boundary past its 8 MiB) stays cached, and a 20 MiB block takes it
    let a = unsafe { shardalloc::alloc(6 * MB, 8, false) };
    assert!(!a.is_null());
    assert_eq!(
        a as usize & !(SEGMENT - 1),
        region,
        "the 6 MiB block does not reuse the cached region"
    );
    let b = unsafe { shardalloc::alloc(20 * MB, 8, false) };
    assert!(!b.is_null());
    assert_eq!(
        b as usize & !(SEGMENT - 1),
        region + 8 * MB,
        "the 20 MiB block does not take the rest of the split region"
    );
    touch(a, 6 * MB, 2);
    touch(b, 20 * MB, 3);
    assert_eq!(
        reserved_total(),
        mapped,
        "blocks that fit the cached region mapped memory"
    );
    let split_faults = minor_faults() - faults;

    // the 20 MiB block goes back to the cache; the 6 MiB block grows into its region in
    // place (joined), its bytes kept, nothing faulted in
    unsafe { shardalloc::free(b) };
    let faults = minor_faults();
    let grown = unsafe { shardalloc::realloc(a, 14 * MB, 8, false) };
    assert_eq!(
        grown, a,
        "the growing block moved instead of joining what follows it"
    );
    for off in (0..6 * MB).step_by(PAGE) {
        // SAFETY: inside the grown block.
        assert_eq!(
            unsafe { grown.add(off).read() },
            2,
            "contents lost at {off}"
        );
    }
    touch(grown, 14 * MB, 4);
    let join_faults = minor_faults() - faults;
    assert_eq!(
        reserved_total(),
        mapped,
        "growing into the cached region mapped memory"
    );
    unsafe { shardalloc::free(grown) };
    shardalloc::DOMAIN.set_purge_delay(shardalloc::DEFAULT_PURGE_DELAY);

    eprintln!(
        "split: {split_faults} page faults for 26 MiB touched; join: {join_faults} for 14 MiB"
    );
    // resident memory faults nothing in (a few faults of the test's own small allocations
    // and the blocks' headers are allowed); a fresh mapping would fault 6,656 and 3,584
    // (one per 4 KiB page)
    assert!(
        split_faults < 64,
        "{split_faults} page faults touching blocks made of a resident cached region"
    );
    assert!(
        join_faults < 64,
        "{join_faults} page faults touching a block grown into a resident cached region"
    );
}
