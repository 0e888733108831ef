//! rptest (after rpmalloc's benchmark): each thread keeps a working set of blocks of
//! random sizes (log-uniform 16 B..16 KiB), replaces random entries in batches, and
//! passes batches of its blocks to the next thread, which frees them.

use super::THREADS;
use crate::util::{scaled, Blk, Rng, Tally};
use std::sync::Mutex;
use std::thread;

const SLOTS: usize = 4096;
const LOOPS: usize = 2000;
const REPLACE: usize = 64; // per loop
const HANDOFF: usize = 32; // blocks passed to the next thread per loop

pub fn run(scale: f64) -> u64 {
    let loops = scaled(LOOPS, scale);
    let mailboxes: Vec<Mutex<Vec<Vec<Blk>>>> =
        (0..THREADS).map(|_| Mutex::new(Vec::new())).collect();
    let mut total = Tally::default();
    let tallies: Vec<Tally> = thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|k| {
                let mb = &mailboxes;
                s.spawn(move || {
                    let mut t = Tally::default();
                    let mut rng = Rng::new(0x0e57 + k as u64 * 7919);
                    let mut slots: Vec<Blk> = (0..SLOTS)
                        .map(|_| t.alloc(rng.log_range(16, 16384)))
                        .collect();
                    for l in 0..loops {
                        for _ in 0..REPLACE {
                            let i = rng.below(SLOTS);
                            let mut b = t.alloc(rng.log_range(16, 16384));
                            b.fill(l as u8, 64);
                            let old = std::mem::replace(&mut slots[i], b);
                            t.free(old);
                        }
                        let mut out = Vec::with_capacity(HANDOFF);
                        for _ in 0..HANDOFF {
                            let i = rng.below(SLOTS);
                            let b = t.alloc(rng.log_range(16, 16384));
                            out.push(std::mem::replace(&mut slots[i], b));
                        }
                        mb[(k + 1) % THREADS].lock().unwrap().push(out);
                        let inbox = std::mem::take(&mut *mb[k].lock().unwrap());
                        for batch in inbox {
                            t.free_all(batch);
                        }
                    }
                    t.free_all(slots);
                    t
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for t in tallies {
        total.add(t);
    }
    for mb in mailboxes {
        for batch in mb.into_inner().unwrap() {
            total.free_all(batch);
        }
    }
    total.finish("rptest")
}
