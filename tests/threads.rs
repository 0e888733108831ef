//! Multi-threaded stress: cross-thread frees, threads that come and go with live data,
//! content checks. (Thread churn and leaks: `churn.rs`.)
mod common;
use common::{seed, Blk, Rng};
use std::sync::mpsc;

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

/// Threads in a ring: each allocates, keeps some blocks, and sends the rest to its
/// neighbour, which checks and frees them. Threads are replaced by new ones in rounds,
/// each leaving live blocks behind for the next generation to free.
#[test]
fn ring_with_cross_thread_frees_and_churn() {
    let seed = seed("ring_with_cross_thread_frees_and_churn");
    const THREADS: usize = 4;
    let mut leftovers: Vec<Vec<Blk>> = (0..THREADS).map(|_| Vec::new()).collect();
    for round in 0..12u64 {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel::<Blk>()).unzip();
        let mut rxs: Vec<Option<mpsc::Receiver<Blk>>> = rxs.into_iter().map(Some).collect();
        let mut handles = Vec::new();
        for t in 0..THREADS {
            let tx = txs[(t + 1) % THREADS].clone();
            let rx = rxs[t].take().unwrap();
            let inherited = std::mem::take(&mut leftovers[t]);
            handles.push(std::thread::spawn(move || {
                let mut rng = Rng::new(seed ^ (round << 8) ^ t as u64);
                // free what the previous generation left (allocated by a dead thread)
                for b in inherited {
                    b.check_and_free(seed);
                }
                let mut mine = Vec::new();
                for i in 0..6_000u64 {
                    let id = (round << 40) | ((t as u64) << 32) | i;
                    let b = Blk::new(&mut rng, id);
                    match rng.below(3) {
                        0 => mine.push(b),
                        1 => tx.send(b).unwrap(),
                        _ => b.check_and_free(seed),
                    }
                    if i % 64 == 0 {
                        while let Ok(b) = rx.try_recv() {
                            b.check_and_free(seed);
                        }
                        if mine.len() > 500 {
                            let k = rng.below(mine.len() as u64) as usize;
                            mine.swap_remove(k).check_and_free(seed);
                        }
                    }
                }
                drop(tx);
                // keep half alive for the next generation
                let keep = mine.split_off(mine.len() / 2);
                for b in mine {
                    b.check_and_free(seed);
                }
                (keep, rx)
            }));
        }
        drop(txs);
        // join all before dropping any receiver: a running thread may still send to it
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for (t, (keep, rx)) in results.into_iter().enumerate() {
            for b in rx.try_iter() {
                b.check_and_free(seed);
            }
            leftovers[t] = keep;
        }
    }
    for v in leftovers {
        for b in v {
            b.check_and_free(seed);
        }
    }
}
