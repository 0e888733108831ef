//! mstress (after mimalloc-bench's `stress`): rounds of threads that come and go. Each
//! thread allocates blocks of mostly small, sometimes large sizes, frees some of its
//! own, and swaps blocks with a shared transfer array, so live data outlives the
//! threads that allocated it and is freed later by other threads.

use super::THREADS;
use crate::util::{scaled, Blk, Rng, Tally};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::thread;

const TRANSFERS: usize = 1000;
const ROUNDS: usize = 10;
const STEPS: usize = 60_000; // per thread per round

fn size(rng: &mut Rng) -> usize {
    let r = rng.below(1000);
    if r < 900 {
        rng.range(8, 256)
    } else if r < 995 {
        rng.range(257, 4096)
    } else {
        rng.log_range(4097, 512 * 1024)
    }
}

fn worker(transfer: &[AtomicPtr<Blk>], seed: u64, steps: usize) -> Tally {
    let mut t = Tally::default();
    let mut rng = Rng::new(seed);
    let mut data: Vec<Blk> = Vec::new();
    for _ in 0..steps {
        let r = rng.below(100);
        if r < 50 || data.is_empty() {
            let mut b = t.alloc(size(&mut rng));
            b.fill(r as u8, 64);
            data.push(b);
        } else if r < 85 {
            let i = rng.below(data.len());
            let b = data.swap_remove(i);
            t.free(b);
        } else {
            // Put one of ours in the transfer array, take whatever was there.
            let i = rng.below(data.len());
            let b = Box::new(data.swap_remove(i));
            let slot = &transfer[rng.below(TRANSFERS)];
            let old = slot.swap(Box::into_raw(b), Ordering::AcqRel);
            if !old.is_null() {
                // SAFETY: every non-null pointer in the array came from Box::into_raw and
                // the swap gave us sole ownership of it.
                let b = unsafe { Box::from_raw(old) };
                b.check();
                data.push(*b);
            }
        }
        // Keep each thread's own live set bounded.
        if data.len() > 4000 {
            let b = data.swap_remove(0);
            t.free(b);
        }
    }
    t.free_all(data);
    t
}

pub fn run(scale: f64) -> u64 {
    let steps = scaled(STEPS, scale);
    let transfer: Vec<AtomicPtr<Blk>> = (0..TRANSFERS)
        .map(|_| AtomicPtr::new(ptr::null_mut()))
        .collect();
    let mut total = Tally::default();
    let mut rng = Rng::new(0x0005_7e55);
    for _round in 0..ROUNDS {
        let seeds: Vec<u64> = (0..THREADS).map(|_| rng.next_u64()).collect();
        let tallies: Vec<Tally> = thread::scope(|s| {
            let hs: Vec<_> = seeds
                .iter()
                .map(|&seed| {
                    let tr = &transfer;
                    s.spawn(move || worker(tr, seed, steps))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for t in tallies {
            total.add(t);
        }
    }
    for slot in &transfer {
        let p = slot.swap(ptr::null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            // SAFETY: as above: from Box::into_raw, now owned by us alone.
            let b = unsafe { Box::from_raw(p) };
            total.free(*b);
        }
    }
    total.finish("mstress")
}
