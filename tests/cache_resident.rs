//! The segment-region cache keeps no more resident memory than a fraction of what the
//! program holds (issue 11: "keep RSS where it is"). Threads that each fill and empty many
//! segments, then exit, leave their segments in the cache, where they would stay resident
//! for ten purge delays or more; those beyond the bound (a fraction of what the program
//! keeps live) must be purged after one purge delay (but stay mapped). Without the bound,
//! the resident set after this churn held every emptied segment (about 300 MiB here); the
//! count of mapped bytes shows that the regions stayed mapped and were reused, not given
//! back and mapped again.
//! Threads that come and go and take the segments of those before them again soon may
//! keep up to half of what the program held at its recent peak (one to two windows of ten
//! purge delays) resident, so that the next round does not fault it all in again; once
//! the churn stops, the bound falls back to the fraction of what the program holds.
//! One test function, alone in its binary: RSS and statistics are the process's.

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

mod common;
use common::rss;

const MB: usize = 1 << 20;
const THREADS: usize = 4;
const PER_THREAD: usize = 64 * MB;
const ROUNDS: usize = 3;
const DELAY_MS: i64 = 50;
/// The window of the recent peak (ten purge delays, `PEAK_WINDOW_MULT` in src/os.rs): the
/// peak is forgotten two windows after it.
const PEAK_WINDOW_MS: u64 = 10 * DELAY_MS as u64;

/// Fills `PER_THREAD` bytes with small blocks (every page touched), waits at `all_full`
/// until the round's other threads have filled theirs (so that the round holds
/// `THREADS * PER_THREAD` at once however the threads are scheduled), then frees them all.
fn fill_and_empty(seed: u64, all_full: &std::sync::Barrier) {
    let mut rng = common::Rng::new(seed);
    let mut blocks = Vec::new();
    let mut bytes = 0;
    while bytes < PER_THREAD {
        let size = 64 + rng.below(4000) as usize;
        let p = unsafe { shardalloc::alloc(size, 8, false) };
        assert!(!p.is_null(), "seed {seed}: out of memory for {size} bytes");
        unsafe { core::ptr::write_bytes(p, 0xa5, size) };
        blocks.push(p as usize);
        bytes += size;
    }
    all_full.wait();
    for p in blocks {
        unsafe { shardalloc::free(p as *mut u8) };
    }
}

#[test]
fn cache_keeps_little_resident_after_thread_churn() {
    let seed = common::seed("cache_keeps_little_resident_after_thread_churn");
    // a delay of 50 ms: a cached region within the bound stays resident 0.5 to 5 s and
    // mapped 5 s longer, so no region goes back to the source during the run (a few
    // seconds at most); one beyond the bound is purged once it was cached 50 ms
    shardalloc::DOMAIN.set_purge_delay(DELAY_MS);
    shardalloc::collect(true);
    shardalloc::DOMAIN.reset_stats();
    // a few MiB that stay live through the run
    let keep: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 << 10]).collect();
    let base = rss();
    let mut high = 0;
    for round in 0..ROUNDS {
        let all_full = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let s = seed ^ ((round * THREADS + t) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let all_full = all_full.clone();
                std::thread::spawn(move || fill_and_empty(s, &all_full))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // once the purge delay has passed, a collection purges what is beyond the bound
        std::thread::sleep(std::time::Duration::from_millis(2 * DELAY_MS as u64));
        shardalloc::collect(false);
        high = high.max(rss());
    }
    let after = rss();
    let st = shardalloc::stats();
    eprintln!(
        "seed {seed}: RSS {} MiB before the churn, {} MiB after it (most seen between \
         rounds {} MiB); reserved now {} MiB, peak {} MiB, mapped over the run {} MiB",
        base / MB,
        after / MB,
        high / MB,
        st.reserved.current >> 20,
        st.reserved.peak >> 20,
        st.reserved.total >> 20,
    );
    // the churn really happened: the threads filled that much memory at once
    assert_eq!(st.threads.total, (ROUNDS * THREADS) as i64);
    assert!(st.reserved.peak as usize >= THREADS * PER_THREAD);
    // the emptied segments stay mapped for the next threads (the mapping-churn fix)...
    assert!(
        (st.reserved.current as usize) >= THREADS * PER_THREAD / 2,
        "seed {seed}: the cache gave its regions back ({} MiB reserved)",
        st.reserved.current >> 20
    );
    // and reused: what was mapped over the run stays within the most held at once, and
    // a half (the rounds' threads took the regions of those before them)
    assert!(
        st.reserved.total <= st.reserved.peak * 3 / 2,
        "seed {seed}: mapped {} MiB over the run for a peak of {} MiB reserved",
        st.reserved.total >> 20,
        st.reserved.peak >> 20
    );
    // ...but not all resident: what stays resident after each round is the live data, a
    // bounded part of the cache, and at most half of what the round's threads held (the
    // recent peak, kept for the next round's threads), not the 256 MiB they emptied
    assert!(
        high < base + 48 * MB + THREADS * PER_THREAD / 2,
        "seed {seed}: RSS {} MiB between rounds after {} MiB before the churn",
        high / MB,
        base / MB
    );
    // once the churn has stopped for two windows of the recent peak, the cache keeps no
    // more resident than the fraction of the live bytes
    std::thread::sleep(std::time::Duration::from_millis(2 * PEAK_WINDOW_MS + 100));
    shardalloc::collect(false);
    let idle = rss();
    let st = shardalloc::stats();
    eprintln!(
        "seed {seed}: RSS {} MiB after the churn stopped {} ms; reserved {} MiB",
        idle / MB,
        2 * PEAK_WINDOW_MS + 100,
        st.reserved.current >> 20
    );
    assert!(
        (st.reserved.current as usize) >= THREADS * PER_THREAD / 2,
        "seed {seed}: the cache gave its regions back ({} MiB reserved) before its time",
        st.reserved.current >> 20
    );
    assert!(
        idle < base + 48 * MB,
        "seed {seed}: RSS {} MiB two peak windows after the churn, {} MiB before it",
        idle / MB,
        base / MB
    );
    drop(keep);
    shardalloc::DOMAIN.set_purge_delay(shardalloc::DEFAULT_PURGE_DELAY);
}
