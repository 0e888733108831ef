//! xmalloc-test (Lever & Boreham): producer threads allocate blocks and pass them in
//! batches to consumer threads, which free them. Every free is a cross-thread free.

use crate::util::{scaled, Blk, Rng, Tally};
use std::sync::mpsc::sync_channel;
use std::thread;

const PAIRS: usize = 2; // 2 producers + 2 consumers = 4 threads
const BATCH: usize = 256;
const BATCHES: usize = 8000; // per producer
const MIN: usize = 8;
const MAX: usize = 256;

pub fn run(scale: f64) -> u64 {
    let batches = scaled(BATCHES, scale);
    let mut threads = Vec::new();
    for p in 0..PAIRS {
        let (tx, rx) = sync_channel::<Vec<Blk>>(32);
        threads.push(thread::spawn(move || {
            let mut t = Tally::default();
            let mut rng = Rng::new(0x000a_110c + p as u64);
            for _ in 0..batches {
                let mut batch = Vec::with_capacity(BATCH);
                for j in 0..BATCH {
                    let mut b = t.alloc(rng.range(MIN, MAX));
                    b.fill(j as u8, 16);
                    batch.push(b);
                }
                tx.send(batch).unwrap();
            }
            t
        }));
        threads.push(thread::spawn(move || {
            let mut t = Tally::default();
            for batch in rx {
                t.free_all(batch);
            }
            t
        }));
    }
    let mut total = Tally::default();
    for h in threads {
        total.add(h.join().unwrap());
    }
    total.finish("xmalloc")
}
