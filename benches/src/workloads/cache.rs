//! cache-scratch and cache-thrash (from Hoard's benchmarks): false sharing.
//!
//! - thrash (active): each thread repeatedly allocates a small object, writes it many
//!   times, and frees it. An allocator that puts different threads' objects in the same
//!   cache line makes the writes fight over that line.
//! - scratch (passive): the main thread allocates one small object per thread (likely
//!   neighbours in one cache line) and hands them out; each thread frees its object, then
//!   does the thrash loop. An allocator that gives the freed neighbour back to the thread
//!   that freed it keeps the false sharing going.

use super::THREADS;
use crate::util::{scaled, Blk, Tally};
use std::thread;

const OBJ_SIZE: usize = 8;
const ITERATIONS: usize = 4_000; // per thread
const REPETITIONS: usize = 40_000; // writes per object per iteration

#[inline(never)]
fn hammer(b: &mut Blk, reps: usize) {
    let w = b.as_mut_ptr() as *mut usize;
    let size = b.size();
    for r in 0..reps {
        // SAFETY: the first word of the live, 8-aligned block is ours.
        unsafe { std::ptr::write_volatile(w, std::ptr::read_volatile(w).wrapping_add(r | 1)) };
    }
    // Put the size back (Blk keeps it in the first word and checks it on free).
    // SAFETY: as above.
    unsafe { std::ptr::write_volatile(w, size) };
}

fn thrash_loop(t: &mut Tally, iterations: usize, reps: usize) {
    for _ in 0..iterations {
        let mut b = t.alloc(OBJ_SIZE);
        hammer(&mut b, reps);
        t.free(b);
    }
}

pub fn run_thrash(scale: f64) -> u64 {
    let iterations = scaled(ITERATIONS, scale);
    let hs: Vec<_> = (0..THREADS)
        .map(|_| {
            thread::spawn(move || {
                let mut t = Tally::default();
                thrash_loop(&mut t, iterations, REPETITIONS);
                t
            })
        })
        .collect();
    let mut total = Tally::default();
    for h in hs {
        total.add(h.join().unwrap());
    }
    total.finish("cache-thrash")
}

pub fn run_scratch(scale: f64) -> u64 {
    let iterations = scaled(ITERATIONS, scale);
    let mut main = Tally::default();
    let objs: Vec<Blk> = (0..THREADS).map(|_| main.alloc(OBJ_SIZE)).collect();
    let hs: Vec<_> = objs
        .into_iter()
        .map(|mut first| {
            thread::spawn(move || {
                let mut t = Tally::default();
                hammer(&mut first, REPETITIONS);
                t.free(first);
                thrash_loop(&mut t, iterations, REPETITIONS);
                t
            })
        })
        .collect();
    let mut total = main;
    for h in hs {
        total.add(h.join().unwrap());
    }
    total.finish("cache-scratch")
}
