//! shardalloc at work as a Rust program's global allocator: a server-like workload
//! (threads replacing each other's blocks, so most frees are cross-thread), run on
//! shardalloc and on the system allocator (glibc) in the same process, then shardalloc's
//! statistics.
use std::alloc::{GlobalAlloc, Layout, System};
use std::time::Instant;

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

const THREADS: usize = 4;
const SLOTS: usize = 4000;
const ROUNDS: usize = 30;
const STEPS: usize = 40_000;

struct Slots(Vec<(usize, usize)>); // (pointer, size); 0 = empty

fn rng(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Larson-style: each round, every thread takes over another thread's slot array and
/// replaces random blocks in it, so the blocks it frees were mostly allocated elsewhere.
fn workload(a: &'static (dyn GlobalAlloc + Sync)) -> f64 {
    let mut arrays: Vec<Slots> = (0..THREADS).map(|_| Slots(vec![(0, 0); SLOTS])).collect();
    let start = Instant::now();
    for round in 0..ROUNDS {
        arrays.rotate_left(1);
        let handles: Vec<_> = arrays
            .drain(..)
            .enumerate()
            .map(|(t, mut slots)| {
                std::thread::spawn(move || {
                    let mut s = 0x9e37_79b9_7f4a_7c15u64 ^ ((round * THREADS + t) as u64 + 1);
                    for _ in 0..STEPS {
                        let r = rng(&mut s);
                        let i = (r % SLOTS as u64) as usize;
                        let size = if r >> 60 == 0 {
                            1 + (r >> 32) % 8192
                        } else {
                            8 + (r >> 32) % 256
                        } as usize;
                        let (old, old_size) = slots.0[i];
                        unsafe {
                            if old != 0 {
                                // check the first byte survived, then free
                                assert_eq!(*(old as *const u8), old_size as u8);
                                a.dealloc(
                                    old as *mut u8,
                                    Layout::from_size_align_unchecked(old_size, 8),
                                );
                            }
                            let p = a.alloc(Layout::from_size_align_unchecked(size, 8));
                            assert!(!p.is_null());
                            *p = size as u8;
                            slots.0[i] = (p as usize, size);
                        }
                    }
                    slots
                })
            })
            .collect();
        arrays = handles.into_iter().map(|h| h.join().unwrap()).collect();
    }
    let secs = start.elapsed().as_secs_f64();
    for slots in arrays {
        for (p, size) in slots.0 {
            if p != 0 {
                unsafe { a.dealloc(p as *mut u8, Layout::from_size_align_unchecked(size, 8)) };
            }
        }
    }
    secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    static SHARD: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();
    println!("shardalloc demo: {THREADS} threads x {ROUNDS} rounds x {STEPS} replacements, most frees cross-thread");
    let mut t_shard = Vec::new();
    let mut t_sys = Vec::new();
    for rep in 0..5 {
        // alternate the order so that neither allocator always runs first
        if rep % 2 == 0 {
            t_shard.push(workload(&SHARD));
            t_sys.push(workload(&System));
        } else {
            t_sys.push(workload(&System));
            t_shard.push(workload(&SHARD));
        }
    }
    let (s, g) = (median(t_shard), median(t_sys));
    let ops = (THREADS * ROUNDS * STEPS) as f64;
    println!(
        "  shardalloc   {:7.1} ms  ({:.1} M malloc+free/s)",
        s * 1e3,
        ops / s / 1e6
    );
    println!(
        "  glibc malloc {:7.1} ms  ({:.1} M malloc+free/s)",
        g * 1e3,
        ops / g / 1e6
    );
    println!(
        "  glibc / shardalloc time ratio: {:.2}x (median of 5, same run)",
        g / s
    );
    shardalloc::collect(true);
    println!(
        "\nshardalloc statistics (whole process):\n{}",
        shardalloc::stats()
    );
}
