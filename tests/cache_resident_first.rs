//! A new segment takes memory that is still resident before memory that was purged: with a
//! purged region of exactly a segment's size in the cache and the resident region of a
//! freed huge block beside it, a large block's segment (4 MiB) is cut from the resident
//! region (split) and faults nothing in, instead of taking the purged region whole and
//! faulting every page it touches in again, 4 KiB at a time (issue 11, large-realloc: its
//! 4 MiB segments took purged regions while resident regions of huge blocks were cached,
//! ~10,000 of its ~19,000 page faults).
//!
//! Counts, not times: minor page faults of the process, with transparent huge pages
//! switched off for it (`PR_SET_THP_DISABLE`: one fault per 4 KiB page touched in memory
//! that is not resident), the statistics (bytes purged and reserved) and the blocks'
//! addresses. Alone in its test binary: the statistics, the cache and the fault counter are
//! the process's.

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

mod common;
use common::{minor_faults, touch_pages as touch};

use std::time::{Duration, Instant};

const MB: usize = 1 << 20;
const PAGE: usize = 4096;
/// Segments (and cached regions) are aligned to this (`size_class::SEGMENT_SIZE`).
const SEGMENT: usize = 4 * MB;

#[test]
fn resident_cached_regions_serve_before_purged_ones() {
    common::thp_off();
    shardalloc::collect(true);

    // 1. a large block's segment goes to the cache and is purged there: resident for ten
    //    purge delays of 10 ms, then purged (and kept mapped for a hundred)
    shardalloc::DOMAIN.set_purge_delay(10);
    // SAFETY: 8 is a power of two; the blocks are used inside their sizes and freed once.
    let small = unsafe { shardalloc::alloc(512 << 10, 8, false) };
    assert!(!small.is_null());
    touch(small, 512 << 10, 1);
    let purged_segment = small as usize & !(SEGMENT - 1);
    unsafe { shardalloc::free(small) };
    let purged_before = shardalloc::stats().purged;
    let start = Instant::now();
    // (the purge happens on a collection once the resident stage has run out)
    while shardalloc::stats().purged - purged_before < (SEGMENT - PAGE) as i64 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the cached segment region was not purged within 5 s (purged {} bytes)",
            shardalloc::stats().purged - purged_before
        );
        std::thread::sleep(Duration::from_millis(20));
        shardalloc::collect(false);
    }

    // 2. nothing more is purged from now on (a purge delay of a minute); a freed huge block
    //    leaves its region in the cache, resident
    shardalloc::DOMAIN.set_purge_delay(60_000);
    let big = unsafe { shardalloc::alloc(16 * MB, 8, false) };
    assert!(!big.is_null());
    touch(big, 16 * MB, 2);
    let big_region = big as usize & !(SEGMENT - 1);
    assert_ne!(big_region, purged_segment);
    unsafe { shardalloc::free(big) };
    let purged_cached = shardalloc::stats().purged;
    let reserved = shardalloc::stats().reserved.total;

    // 3. a 1 MiB block needs a new large segment of 4 MiB: the purged region fits it
    //    exactly, the resident one only once split
    let faults = minor_faults();
    let block = unsafe { shardalloc::alloc(MB, 8, false) };
    assert!(!block.is_null());
    touch(block, MB, 3);
    let block_faults = minor_faults() - faults;
    let segment = block as usize & !(SEGMENT - 1);
    assert_eq!(
        shardalloc::stats().reserved.total,
        reserved,
        "the new segment mapped memory instead of taking a cached region"
    );
    assert_eq!(
        shardalloc::stats().purged,
        purged_cached,
        "something was purged while the purge delay was a minute"
    );
    unsafe { shardalloc::free(block) };
    shardalloc::DOMAIN.set_purge_delay(shardalloc::DEFAULT_PURGE_DELAY);
    eprintln!(
        "1 MiB block at segment {segment:#x} (purged region {purged_segment:#x}, resident \
         region {big_region:#x}): {block_faults} page faults"
    );
    assert_ne!(
        segment, purged_segment,
        "the segment took the purged cached region while a resident one was cached"
    );
    assert_eq!(
        segment, big_region,
        "the segment is not cut from the start of the resident cached region"
    );
    // resident memory faults nothing in (a few faults of the test's own allocations are
    // allowed); the purged region would fault 256 (one per 4 KiB page of the block)
    assert!(
        block_faults < 64,
        "{block_faults} page faults touching a block whose segment came from a resident region"
    );
}
