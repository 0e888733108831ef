//! Workloads of many threads (issue 11): 32 threads on this 2-core machine, as a server's
//! thread pool has; and the same work at 1, 2, 4 and 8 threads, so that the table shows
//! how each allocator scales.
//!
//! - `stress32`: mimalloc's own `test/test-stress.c`: rounds of 32 threads that come and
//!   go, each allocating blocks of sizes distributed by powers of two (a few large and
//!   huge ones, up to 5 MiB), freeing some, retaining others until it exits, and swapping
//!   blocks with a shared transfer array, so that blocks outlive their threads and are
//!   freed by others. The threads of a round do different amounts of work.
//! - `live-churn`: a large shared live set (120,000 blocks, ~90 MiB) that rounds of 32
//!   short-lived threads keep replacing at random slots: nearly every free is of a block
//!   that another (often dead) thread allocated.
//! - `scale-N`: the same total work split over N threads (1, 2, 4, 8), each thread
//!   replacing blocks at random in its own slot array and handing a batch of blocks to its
//!   neighbour now and then (cross-thread frees).

use crate::util::{scaled, Blk, Rng, Tally};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;
use std::thread;

const TRANSFERS: usize = 1000;

/// Takes whatever is in the slot, leaving null.
fn take(slot: &AtomicPtr<Blk>) -> Option<Blk> {
    let p = slot.swap(ptr::null_mut(), Ordering::AcqRel);
    // SAFETY: every non-null pointer in a slot came from Box::into_raw, and the swap gave
    // us sole ownership of it.
    (!p.is_null()).then(|| *unsafe { Box::from_raw(p) })
}

/// Puts `b` in the slot, returning what was there.
fn swap(slot: &AtomicPtr<Blk>, b: Blk) -> Option<Blk> {
    let old = slot.swap(Box::into_raw(Box::new(b)), Ordering::AcqRel);
    // SAFETY: as in `take`.
    (!old.is_null()).then(|| *unsafe { Box::from_raw(old) })
}

// ------------------------------------------------------------------ stress32

const STRESS_THREADS: usize = 32;
const STRESS_SCALE: usize = 10; // test-stress's default
const STRESS_ITER: usize = 10;

/// test-stress's `alloc_items`: `items` words, now and then 100, 1000 or 10000 times more.
fn stress_size(items: usize, rng: &mut Rng) -> usize {
    let mut items = items;
    if rng.chance(1) {
        if rng.chance(1) {
            items *= 10_000;
        } else if rng.chance(10) {
            items *= 1000;
        } else {
            items *= 100;
        }
    }
    items.max(1) * 8
}

fn stress_worker(transfer: &[AtomicPtr<Blk>], tid: usize, scale: f64) -> Tally {
    let mut t = Tally::default();
    let mut rng = Rng::new(tid as u64 * 43);
    let mut allocs = scaled(100 * STRESS_SCALE * (tid % 8 + 1), scale);
    let mut retain = allocs / 2;
    let mut data: Vec<Option<Blk>> = Vec::new();
    let mut retained: Vec<Blk> = Vec::with_capacity(retain);
    while allocs > 0 || retain > 0 {
        if retain == 0 || (rng.chance(50) && allocs > 0) {
            allocs -= 1;
            let n = 1 << (rng.next_u64() % 5);
            let mut b = t.alloc(stress_size(n, &mut rng));
            b.fill(tid as u8, usize::MAX);
            data.push(Some(b));
        } else {
            let n = 1 << (rng.next_u64() % 7);
            let mut b = t.alloc(stress_size(n, &mut rng));
            b.fill(tid as u8, usize::MAX);
            retained.push(b);
            retain -= 1;
        }
        if rng.chance(66) && !data.is_empty() {
            let i = rng.below(data.len());
            if let Some(b) = data[i].take() {
                t.free(b);
            }
        }
        if rng.chance(25) && !data.is_empty() {
            let i = rng.below(data.len());
            let slot = &transfer[rng.below(TRANSFERS)];
            data[i] = match data[i].take() {
                Some(b) => swap(slot, b),
                None => take(slot),
            };
        }
    }
    t.free_all(retained);
    t.free_all(data.into_iter().flatten());
    t
}

pub fn run_stress32(scale: f64) -> u64 {
    let transfer: Vec<AtomicPtr<Blk>> = (0..TRANSFERS)
        .map(|_| AtomicPtr::new(ptr::null_mut()))
        .collect();
    let mut total = Tally::default();
    let mut rng = Rng::new(0x7feb_352d);
    for n in 0..STRESS_ITER {
        let tallies: Vec<Tally> = thread::scope(|s| {
            let hs: Vec<_> = (0..STRESS_THREADS)
                .map(|tid| {
                    let tr = &transfer;
                    s.spawn(move || stress_worker(tr, tid, scale))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for t in tallies {
            total.add(t);
        }
        // half of the transferred blocks die between rounds (all after the last)
        for slot in &transfer {
            if rng.chance(50) || n + 1 == STRESS_ITER {
                if let Some(b) = take(slot) {
                    total.free(b);
                }
            }
        }
    }
    total.finish("stress32")
}

// ------------------------------------------------------------------ live-churn

const LIVE_SLOTS: usize = 120_000;
const LIVE_THREADS: usize = 32;
const LIVE_ROUNDS: usize = 8;
const LIVE_OPS: usize = 1_500; // per thread per round

fn live_size(rng: &mut Rng) -> usize {
    if rng.below(100) < 97 {
        rng.log_range(16, 1024)
    } else {
        rng.log_range(1025, 64 * 1024)
    }
}

pub fn run_live_churn(scale: f64) -> u64 {
    let ops = scaled(LIVE_OPS, scale);
    let mut total = Tally::default();
    let mut rng = Rng::new(0x11fe_c4a2);
    let table: Vec<AtomicPtr<Blk>> = (0..LIVE_SLOTS)
        .map(|_| {
            let b = total.alloc(live_size(&mut rng));
            AtomicPtr::new(Box::into_raw(Box::new(b)))
        })
        .collect();
    for _ in 0..LIVE_ROUNDS {
        let seeds: Vec<u64> = (0..LIVE_THREADS).map(|_| rng.next_u64()).collect();
        let tallies: Vec<Tally> = thread::scope(|s| {
            let hs: Vec<_> = seeds
                .iter()
                .map(|&seed| {
                    let table = &table;
                    s.spawn(move || {
                        let mut t = Tally::default();
                        let mut rng = Rng::new(seed);
                        for _ in 0..ops {
                            let mut b = t.alloc(live_size(&mut rng));
                            b.fill(seed as u8, 64);
                            if let Some(old) = swap(&table[rng.below(LIVE_SLOTS)], b) {
                                t.free(old);
                            }
                        }
                        t
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for t in tallies {
            total.add(t);
        }
    }
    for slot in &table {
        if let Some(b) = take(slot) {
            total.free(b);
        }
    }
    total.finish("live-churn")
}

// ------------------------------------------------------------------ scale-N

const SCALE_SLOTS: usize = 2000;
const SCALE_OPS: usize = 1_600_000; // in all, split over the threads
const SCALE_BATCH: usize = 64;
const SCALE_EVERY: usize = 4000;

fn scale_worker(k: usize, threads: usize, ops: usize, inbox: &[Mutex<Vec<Blk>>]) -> Tally {
    let mut t = Tally::default();
    let mut rng = Rng::new(0x5ca1e ^ k as u64);
    let mut slots: Vec<Blk> = (0..SCALE_SLOTS).map(|_| t.alloc(rng.range(16, 512))).collect();
    for i in 0..ops {
        let s = rng.below(SCALE_SLOTS);
        let size = if rng.chance(2) { rng.range(513, 8192) } else { rng.range(16, 512) };
        let mut b = t.alloc(size);
        b.fill(s as u8, 32);
        t.free(std::mem::replace(&mut slots[s], b));
        if i % SCALE_EVERY == SCALE_EVERY - 1 {
            // hand a batch to the next thread; free what others handed to us
            let batch: Vec<Blk> = (0..SCALE_BATCH).map(|j| t.alloc(16 + (j * 24) % 600)).collect();
            inbox[(k + 1) % threads].lock().unwrap().extend(batch);
            let mine = std::mem::take(&mut *inbox[k].lock().unwrap());
            t.free_all(mine);
        }
    }
    t.free_all(slots);
    t
}

fn run_scale(threads: usize, scale: f64) -> u64 {
    let ops = scaled(SCALE_OPS / threads, scale);
    let inbox: Vec<Mutex<Vec<Blk>>> = (0..threads).map(|_| Mutex::new(Vec::new())).collect();
    let mut total = Tally::default();
    let tallies: Vec<Tally> = thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|k| {
                let inbox = &inbox;
                s.spawn(move || scale_worker(k, threads, ops, inbox))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for t in tallies {
        total.add(t);
    }
    for b in inbox {
        total.free_all(b.into_inner().unwrap());
    }
    total.finish("scale")
}

pub fn run_scale1(scale: f64) -> u64 {
    run_scale(1, scale)
}
pub fn run_scale2(scale: f64) -> u64 {
    run_scale(2, scale)
}
pub fn run_scale4(scale: f64) -> u64 {
    run_scale(4, scale)
}
pub fn run_scale8(scale: f64) -> u64 {
    run_scale(8, scale)
}
