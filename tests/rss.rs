//! Freed memory goes back to the OS: the resident set (from /proc/self/statm) falls after
//! a large free, and after many small frees once the purge delay has passed.
//! One test function, alone in its binary: RSS is a property of the whole process.

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

mod common;
use common::rss;

const MB: usize = 1 << 20;

#[test]
fn resident_memory_falls_after_free() {
    // 1. one huge block: its segment goes back at once
    let base = rss();
    let size = 256 * MB;
    let p = unsafe { shardalloc::alloc(size, 8, false) };
    assert!(!p.is_null());
    for i in (0..size).step_by(4096) {
        unsafe { *p.add(i) = 1 };
    }
    let high = rss();
    assert!(
        high >= base + 240 * MB,
        "touching 256 MiB raised RSS only {base} -> {high}"
    );
    unsafe { shardalloc::free(p) };
    let after = rss();
    eprintln!("huge: {} -> {} -> {} MiB", base / MB, high / MB, after / MB);
    assert!(
        after < base + 16 * MB,
        "RSS stayed at {after} after freeing the huge block"
    );

    // 2. many small blocks, one survivor per segment: the emptied pages are purged after
    //    the purge delay, while the segments stay
    let base = rss();
    let n = 200 * MB / 1024;
    let blocks: Vec<usize> = (0..n)
        .map(|_| {
            let p = unsafe { shardalloc::alloc(1000, 8, false) };
            unsafe { p.write_bytes(7, 1000) };
            p as usize
        })
        .collect();
    let high = rss();
    assert!(
        high >= base + 150 * MB,
        "small blocks raised RSS only {base} -> {high}"
    );
    let kept = common::free_all_but_one_per_segment(&blocks);
    let segments = shardalloc::stats().segments.current;
    std::thread::sleep(std::time::Duration::from_millis(50));
    shardalloc::collect(false); // not forced: the delay has expired
    let after = rss();
    eprintln!(
        "small: {} -> {} -> {} MiB ({} survivors, {} segments)",
        base / MB,
        high / MB,
        after / MB,
        kept.len(),
        segments
    );
    assert!(segments >= kept.len() as i64);
    assert!(
        after < base + 40 * MB,
        "RSS stayed at {} MiB after the purge delay",
        after / MB
    );
    assert!(shardalloc::stats().purged >= 100 * MB as i64);
    for b in kept {
        unsafe { shardalloc::free(b as *mut u8) };
    }

    // 3. mid-sized huge blocks: their regions are cached for reuse a short while, then
    //    returned
    let base = rss();
    let blocks: Vec<usize> = (0..8)
        .map(|_| {
            let p = unsafe { shardalloc::alloc(12 * MB, 8, false) };
            unsafe { p.write_bytes(3, 12 * MB) };
            p as usize
        })
        .collect();
    let high = rss();
    for b in blocks {
        unsafe { shardalloc::free(b as *mut u8) };
    }
    std::thread::sleep(std::time::Duration::from_millis(150));
    shardalloc::collect(false);
    let after = rss();
    eprintln!(
        "cached: {} -> {} -> {} MiB",
        base / MB,
        high / MB,
        after / MB
    );
    assert!(high >= base + 90 * MB);
    assert!(
        after < base + 16 * MB,
        "RSS stayed at {} MiB after the cache delay",
        after / MB
    );
}
