//! Thread churn: thousands of threads exit with live blocks that other threads free.
//! Alone in its test binary, so that the allocator's statistics are its own.
mod common;
use common::{seed, Blk, Rng};

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

/// Thousands of threads that allocate, free part, and exit with live blocks that the
/// main thread frees: reserved memory stays bounded (abandoned segments are reclaimed).
#[test]
fn thread_churn_does_not_leak() {
    let seed = seed("thread_churn_does_not_leak");
    // Each live thread reserves a few segments (address space, mostly untouched); what
    // must not happen is growth from wave to wave: abandoned segments are reclaimed.
    let mut early_peak = 0;
    let mut late_peak = 0;
    let mut survivors: Vec<Blk> = Vec::new();
    for wave in 0..40u64 {
        let hs: Vec<_> = (0..50u64)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut rng = Rng::new(seed ^ (wave << 16) ^ t);
                    let mut v: Vec<Blk> = (0..200).map(|i| Blk::new(&mut rng, i)).collect();
                    let keep = v.split_off(190);
                    for b in v {
                        b.check_and_free(seed);
                    }
                    keep
                })
            })
            .collect();
        for h in hs {
            survivors.extend(h.join().unwrap());
        }
        // free what the dead threads left
        for b in survivors.drain(..) {
            b.check_and_free(seed);
        }
        let r = shardalloc::DOMAIN.reserved();
        if wave < 8 {
            early_peak = early_peak.max(r);
        } else {
            late_peak = late_peak.max(r);
        }
    }
    shardalloc::collect(true);
    let end = shardalloc::DOMAIN.reserved();
    let stats = shardalloc::stats();
    eprintln!("reserved: peak of waves 0-7 {early_peak}, of waves 8-39 {late_peak}, at end {end}\n{stats}");
    // 2000 threads made; without reclaim each would leave at least one 4 MiB segment
    assert!(stats.threads.total >= 2000);
    assert!(
        late_peak <= early_peak * 2,
        "reserved memory grows from wave to wave: {early_peak} -> {late_peak} bytes"
    );
    assert!(end < 64 << 20, "after collect {end} bytes stay reserved");
    assert!(stats.reclaimed > 0 || stats.abandoned == 0);
}
