//! Threads that come and go must reuse the memory of those before them instead of mapping
//! fresh memory from the OS (issue 11, thread churn). mimalloc's own `test-stress.c`
//! (32 threads started and joined 50 times, passing blocks between them) mapped 4,472
//! segments under shardalloc for a peak of 133 live ones: the segment-region cache (16
//! regions, 64 MiB) dropped most of the segments that the exiting threads emptied, and
//! the next round's threads mapped (and faulted in) new ones.
//!
//! This test runs the same kind of churn (rounds of 8 threads, mixed sizes with huge
//! blocks, a shared transfer table that keeps blocks alive across rounds) and counts the
//! bytes the allocator reserved from the page source over the run (`reserved.total`,
//! every `mmap`) against the most it held at once (`reserved.peak`). Counts, not times:
//! the purge delay is set long enough that no cached region expires during the run, so
//! the count does not depend on how fast the machine is.
//! One test function, alone in its binary: the statistics are the process's.

use std::sync::atomic::{AtomicUsize, Ordering};

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

mod common;
use common::Rng;

const ROUNDS: usize = 30;
const THREADS: usize = 8;
const ALLOCS: usize = 2000;
const TRANSFERS: usize = 500;

/// Blocks passed between threads (and rounds): an address and its size, packed as the
/// address (sizes are recorded in the block's first word).
static TRANSFER: [AtomicUsize; TRANSFERS] = [const { AtomicUsize::new(0) }; TRANSFERS];

fn size(rng: &mut Rng) -> usize {
    match rng.below(1000) {
        0..=1 => (2 << 20) + rng.below(4 << 20) as usize, // huge: 2-6 MiB
        2..=21 => (64 << 10) + rng.below(448 << 10) as usize, // 64-512 KiB
        22..=221 => 1024 + rng.below(31 << 10) as usize,  // 1-32 KiB
        _ => 16 + rng.below(496) as usize,                // 16-512 B
    }
}

/// A block of `size` bytes with its size in its first word and a tag in its last byte.
fn make(size: usize) -> usize {
    let p = unsafe { shardalloc::alloc(size, 8, false) };
    assert!(!p.is_null(), "out of memory for {size} bytes");
    unsafe {
        (p as *mut usize).write(size);
        p.add(size - 1).write(size as u8 ^ 0x5a);
    }
    p as usize
}

fn check_free(p: usize) {
    if p == 0 {
        return;
    }
    let p = p as *mut u8;
    unsafe {
        let size = (p as *const usize).read();
        assert_eq!(
            p.add(size - 1).read(),
            size as u8 ^ 0x5a,
            "block of {size} bytes corrupted"
        );
        shardalloc::free(p);
    }
}

fn worker(seed: u64) {
    let mut rng = Rng::new(seed);
    let mut live: Vec<usize> = Vec::with_capacity(ALLOCS);
    for _ in 0..ALLOCS {
        live.push(make(size(&mut rng)));
        if rng.below(3) < 2 {
            let i = rng.below(live.len() as u64) as usize;
            check_free(live.swap_remove(i));
        }
        if rng.below(4) == 0 && !live.is_empty() {
            let i = rng.below(live.len() as u64) as usize;
            let t = rng.below(TRANSFERS as u64) as usize;
            live[i] = TRANSFER[t].swap(live[i], Ordering::AcqRel);
            if live[i] == 0 {
                live.swap_remove(i);
            }
        }
    }
    for p in live {
        check_free(p);
    }
}

#[test]
fn thread_churn_reuses_segments_instead_of_mapping_new_ones() {
    let seed = common::seed("thread_churn_reuses_segments_instead_of_mapping_new_ones");
    // no cached region may expire during the run (see the module documentation)
    shardalloc::DOMAIN.set_purge_delay(60_000);
    shardalloc::collect(true);
    shardalloc::DOMAIN.reset_stats();
    let before = shardalloc::stats();
    let mut seg_peak = 0;
    for round in 0..ROUNDS {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let s = seed ^ ((round * THREADS + t) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                std::thread::spawn(move || worker(s))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // half of the transferred blocks die between rounds, half live on
        for (i, slot) in TRANSFER.iter().enumerate() {
            if (i + round) % 2 == 0 {
                check_free(slot.swap(0, Ordering::AcqRel));
            }
        }
        seg_peak = seg_peak.max(shardalloc::stats().segments.peak);
    }
    for slot in &TRANSFER {
        check_free(slot.swap(0, Ordering::AcqRel));
    }
    let st = shardalloc::stats();
    let mib = |b: i64| b >> 20;
    let mapped = st.reserved.total - before.reserved.total;
    eprintln!(
        "seed {seed}: mapped {} MiB over the run for a peak of {} MiB reserved \
         ({} segments made for a peak of {seg_peak} live; {} MiB allocated in all)",
        mib(mapped),
        mib(st.reserved.peak),
        st.segments.total - before.segments.total,
        mib(st.allocated.total - before.allocated.total),
    );
    // the workload really churned: threads came and went, segments were made and freed
    assert_eq!(
        st.threads.total - before.threads.total,
        (ROUNDS * THREADS) as i64
    );
    assert!(st.segments.total - before.segments.total >= 4 * seg_peak);
    // and the memory of each round came from the one before: what was mapped over the
    // whole run stays within twice the most held at once (before the fix: 8-10 times)
    assert!(
        mapped <= 2 * st.reserved.peak,
        "seed {seed}: mapped {} MiB over the run for a peak of {} MiB reserved",
        mib(mapped),
        mib(st.reserved.peak)
    );
    shardalloc::DOMAIN.set_purge_delay(shardalloc::DEFAULT_PURGE_DELAY);
}
