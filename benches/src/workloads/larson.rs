//! larson (Larson & Krishnan, "Memory allocation for long-running server applications"):
//! each thread owns an array of slots holding blocks of random size; it repeatedly
//! frees a random slot and puts a fresh block there. After a round, the thread hands
//! its array to a new thread and exits, so most frees happen on a thread other than the
//! one that allocated (as in the original, where threads die and are replaced). The main
//! thread allocates the initial arrays.

use super::THREADS;
use crate::util::{scaled, Blk, Rng, Tally};
use std::thread;

const SLOTS: usize = 1000;
const MIN: usize = 8;
const MAX: usize = 1000;
const OPS_PER_ROUND: usize = 15_000;
const ROUNDS: usize = 40;

fn worker(mut slots: Vec<Blk>, seed: u64, rounds_left: usize, ops: usize, mut t: Tally) -> Tally {
    let mut rng = Rng::new(seed);
    for _ in 0..ops {
        let i = rng.below(SLOTS);
        let size = rng.range(MIN, MAX);
        let mut b = t.alloc(size);
        b.fill(i as u8, 32);
        let old = std::mem::replace(&mut slots[i], b);
        t.free(old);
    }
    if rounds_left <= 1 {
        t.free_all(slots);
        return t;
    }
    // Hand the live array to a successor thread and die.
    let next_seed = rng.next_u64();
    thread::spawn(move || worker(slots, next_seed, rounds_left - 1, ops, t))
        .join()
        .unwrap()
}

pub fn run(scale: f64) -> u64 {
    let ops = scaled(OPS_PER_ROUND, scale);
    let mut total = Tally::default();
    let mut rng = Rng::new(0x001a_250e);
    let handles: Vec<_> = (0..THREADS)
        .map(|k| {
            let mut t = Tally::default();
            let slots: Vec<Blk> = (0..SLOTS).map(|_| t.alloc(rng.range(MIN, MAX))).collect();
            let seed = rng.next_u64() ^ k as u64;
            thread::spawn(move || worker(slots, seed, ROUNDS, ops, t))
        })
        .collect();
    for h in handles {
        total.add(h.join().unwrap());
    }
    total.finish("larson")
}
