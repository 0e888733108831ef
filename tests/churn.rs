//! Thread churn: thousands of threads exit with live blocks that other threads free.
//! Alone in its test binary, so that the allocator's statistics are its own.
mod common;
use common::{seed, Blk, Rng};

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

const WAVES: u64 = 40;
const THREADS: u64 = 50;

/// Thousands of threads that allocate, free part, and exit with live blocks. Every exit
/// with live blocks abandons segments; the next wave's threads reclaim them (while the
/// blocks of the wave before are still live, so reclaimed segments hold live blocks),
/// and the main thread frees those blocks a wave later. Reserved memory stays bounded
/// and, before any forced collection, almost every abandoned segment was reclaimed.
#[test]
fn thread_churn_does_not_leak() {
    let seed = seed("thread_churn_does_not_leak");
    let before = shardalloc::stats();
    // Each live thread reserves a few segments (address space, mostly untouched); what
    // must not happen is growth from wave to wave: abandoned segments are reclaimed.
    let mut early_peak = 0;
    let mut late_peak = 0;
    let mut older: Vec<Blk> = Vec::new();
    for wave in 0..WAVES {
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut rng = Rng::new(seed ^ (wave << 16) ^ t);
                    let mut v: Vec<Blk> = (0..200).map(|i| Blk::new(&mut rng, i)).collect();
                    let keep = v.split_off(190);
                    for b in v {
                        b.check_and_free(seed);
                    }
                    keep // live when the thread exits
                })
            })
            .collect();
        let mut survivors: Vec<Blk> = Vec::new();
        for h in hs {
            survivors.extend(h.join().unwrap());
        }
        // free what the wave before left: its segments were abandoned, and this wave's
        // threads may have reclaimed them meanwhile
        for b in older.drain(..) {
            b.check_and_free(seed);
        }
        older = survivors;
        let r = shardalloc::DOMAIN.reserved();
        if wave < 8 {
            early_peak = early_peak.max(r);
        } else {
            late_peak = late_peak.max(r);
        }
    }
    for b in older.drain(..) {
        b.check_and_free(seed);
    }
    // before any forced collection: what was abandoned and what was reclaimed
    let mid = shardalloc::stats();
    let abandoned = mid.abandoned - before.abandoned;
    let reclaimed = mid.reclaimed - before.reclaimed;
    let left = abandoned - reclaimed; // still in the abandoned list
    shardalloc::collect(true);
    let end = shardalloc::DOMAIN.reserved();
    let stats = shardalloc::stats();
    eprintln!(
        "reserved: peak of waves 0-7 {early_peak}, of waves 8-{} {late_peak}, at end {end}; \
         abandoned {abandoned}, reclaimed {reclaimed}, left in the abandoned list {left}\n{stats}",
        WAVES - 1
    );
    let threads = (WAVES * THREADS) as i64;
    assert!(stats.threads.total - before.threads.total >= threads);
    // every thread exited holding live blocks: each abandoned at least one segment
    assert!(
        abandoned >= threads,
        "{threads} threads exited with live blocks but only {abandoned} segments were abandoned"
    );
    // and the threads that came after took nearly all of them over: only the last
    // wave's segments (and a few more) may still wait in the list (measured: under 1%)
    assert!(
        reclaimed > 0 && left * 10 <= abandoned,
        "{abandoned} segments abandoned, {reclaimed} reclaimed: {left} wait in the list"
    );
    assert!(
        late_peak <= early_peak * 2,
        "reserved memory grows from wave to wave: {early_peak} -> {late_peak} bytes"
    );
    assert!(end < 64 << 20, "after collect {end} bytes stay reserved");
}
