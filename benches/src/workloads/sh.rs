//! sh6bench and sh8bench (after MicroQuill SmartHeap's benchmarks): each thread
//! allocates many small objects of cycling sizes in passes and frees them in order
//! (FIFO) or in reverse order (LIFO), keeping a fraction alive across passes.
//! sh8bench adds reallocs and cross-thread frees: half of each pass's objects are
//! handed to the next thread, which frees them.

use super::THREADS;
use crate::util::{scaled, Blk, Tally};
use std::sync::Mutex;
use std::thread;

const SH6_PASSES: usize = 140;
const SH8_PASSES: usize = 80;
const PER_PASS: usize = 5000;
const MIN: usize = 8;
const MAX: usize = 512;
const KEEP: usize = 2000; // objects kept alive across passes, per thread

fn size_of(i: usize, pass: usize) -> usize {
    MIN + (i * 37 + pass * 11) % (MAX - MIN + 1)
}

fn run_sh(scale: f64, cross: bool, what: &str) -> u64 {
    let passes = scaled(if cross { SH8_PASSES } else { SH6_PASSES }, scale);
    let mailboxes: Vec<Mutex<Vec<Vec<Blk>>>> =
        (0..THREADS).map(|_| Mutex::new(Vec::new())).collect();
    let mut total = Tally::default();
    let tallies: Vec<Tally> = thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|k| {
                let mb = &mailboxes;
                s.spawn(move || {
                    let mut t = Tally::default();
                    let mut keep: Vec<Blk> = Vec::with_capacity(KEEP);
                    let mut keep_at = 0usize;
                    for pass in 0..passes {
                        let mut v: Vec<Blk> = Vec::with_capacity(PER_PASS);
                        for i in 0..PER_PASS {
                            let mut b = t.alloc(size_of(i, pass + k));
                            b.fill(i as u8, 16);
                            v.push(b);
                        }
                        if cross && pass % 4 == 1 {
                            // Realloc every 8th object, up or down.
                            for (i, b) in v.iter_mut().enumerate().step_by(8) {
                                let n = if i % 16 == 0 {
                                    b.size() * 2 + 24
                                } else {
                                    b.size() / 2 + 8
                                };
                                t.alloced -= b.size() as u64;
                                b.resize(n);
                                t.alloced += b.size() as u64;
                            }
                        }
                        // Keep every 16th object alive, replacing an older survivor.
                        let mut rest = Vec::with_capacity(PER_PASS);
                        for (i, b) in v.into_iter().enumerate() {
                            if i % 16 == 7 {
                                if keep.len() < KEEP {
                                    keep.push(b);
                                } else {
                                    let old = std::mem::replace(&mut keep[keep_at % KEEP], b);
                                    keep_at += 1;
                                    t.free(old);
                                }
                            } else {
                                rest.push(b);
                            }
                        }
                        if cross {
                            // Hand the second half to the next thread.
                            let half = rest.split_off(rest.len() / 2);
                            mb[(k + 1) % THREADS].lock().unwrap().push(half);
                            let inbox = std::mem::take(&mut *mb[k].lock().unwrap());
                            for batch in inbox {
                                // The other thread's objects, in reverse order.
                                for b in batch.into_iter().rev() {
                                    t.free(b);
                                }
                            }
                        }
                        if pass % 2 == 0 {
                            for b in rest {
                                t.free(b); // FIFO: in allocation order
                            }
                        } else {
                            while let Some(b) = rest.pop() {
                                t.free(b); // LIFO: reverse order
                            }
                        }
                    }
                    t.free_all(keep);
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
    total.finish(what)
}

pub fn run_sh6(scale: f64) -> u64 {
    run_sh(scale, false, "sh6bench")
}

pub fn run_sh8(scale: f64) -> u64 {
    run_sh(scale, true, "sh8bench")
}
