//! Threads that exit holding a few live blocks must not strand their segments (issue 11):
//! 10 threads at a time, 2,000 times, each allocating one 128-byte block and swapping it
//! into a shared table of 1,000 slots (freeing what it displaces). At most 1,000 blocks
//! (128 KiB) are live at any time; before the fix each new thread took a fresh page in a
//! reclaimed segment, and the process ended with ~800 segments, 3 GiB reserved and 60 MiB
//! resident. Now a new thread reuses the pages of the segments it reclaims.

use std::sync::Mutex;

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

static TABLE: Mutex<Vec<Option<Box<[u8; 128]>>>> = Mutex::new(Vec::new());

mod common;

fn rss_mib() -> usize {
    common::rss() >> 20
}

#[test]
fn exiting_threads_with_live_blocks_do_not_strand_segments() {
    TABLE.lock().unwrap().resize_with(1000, || None);
    let before = shardalloc::stats();
    let mut peak_segments = 0;
    let mut peak_rss = 0;
    for round in 0..2000usize {
        let threads: Vec<_> = (0..10usize)
            .map(|t| {
                std::thread::spawn(move || {
                    let b = Box::new([t as u8; 128]);
                    let slot = (round * 10 + t) * 7919 % 1000;
                    let old = TABLE.lock().unwrap()[slot].replace(b);
                    if let Some(old) = &old {
                        assert!(
                            old.iter().all(|&x| x == old[0]),
                            "a live block was overwritten"
                        );
                    }
                    drop(old);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        if round % 100 == 0 {
            peak_segments = peak_segments.max(shardalloc::stats().segments.current);
            peak_rss = peak_rss.max(rss_mib());
        }
    }
    let st = shardalloc::stats();
    eprintln!(
        "peak segments {peak_segments}, peak RSS {peak_rss} MiB, reserved {} MiB, abandoned {} \
         reclaimed {}",
        st.reserved.current >> 20,
        st.abandoned - before.abandoned,
        st.reclaimed - before.reclaimed
    );
    // the threads did exit with live blocks, and others took their segments over
    assert!(
        st.abandoned - before.abandoned >= 10_000,
        "threads did not abandon segments"
    );
    assert!(
        st.reclaimed - before.reclaimed >= 10_000,
        "segments were not reclaimed"
    );
    // 128 KiB live: a few segments, not one per thread
    assert!(
        peak_segments <= 32,
        "{peak_segments} segments for 128 KiB of live blocks"
    );
    assert!(
        peak_rss <= 48,
        "peak RSS {peak_rss} MiB for 128 KiB of live blocks"
    );
    assert!(
        st.reserved.current <= 256 << 20,
        "{} MiB reserved for 128 KiB of live blocks",
        st.reserved.current >> 20
    );
}
