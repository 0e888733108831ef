//! Large objects and realloc growth (single thread): big blocks of 256 KiB..8 MiB
//! allocated, touched page by page and freed (a few stay alive), vectors grown by
//! doubling up to 32 MiB, strings grown by small appends, and blocks grown by `realloc`
//! in 1.5x steps up to 4 MiB.

use crate::util::{scaled, Blk, Rng, Tally};
use std::collections::VecDeque;
use std::hint::black_box;

const ITERS: usize = 200;
const PAGE: usize = 4096;

fn touch(b: &mut Blk) {
    let p = b.as_mut_ptr();
    let n = b.size();
    let mut off = PAGE;
    while off + 1 < n {
        // SAFETY: off < size - 1: inside the block, past the size word, before the tag.
        unsafe { p.add(off).write(off as u8) };
        off += PAGE;
    }
}

pub fn run(scale: f64) -> u64 {
    let iters = scaled(ITERS, scale);
    let mut rng = Rng::new(0x1a26e);
    let mut t = Tally::default();
    let mut live: VecDeque<Blk> = VecDeque::new();
    let mut check = 0u64;
    for _ in 0..iters {
        match rng.below(4) {
            0 => {
                let mut b = t.alloc(rng.log_range(256 << 10, 8 << 20));
                touch(&mut b);
                live.push_back(b);
                if live.len() > 8 {
                    t.free(live.pop_front().unwrap());
                }
            }
            1 => {
                let target = rng.log_range(64 << 10, 32 << 20);
                let chunk = [7u8; 4096];
                let mut v: Vec<u8> = Vec::new();
                while v.len() < target {
                    v.extend_from_slice(&chunk);
                }
                check = check.wrapping_add(v.len() as u64 + v[v.len() / 2] as u64);
                black_box(&v);
            }
            2 => {
                let target = rng.log_range(4 << 10, 1 << 20);
                let mut s = String::new();
                let mut i = 0u64;
                while s.len() < target {
                    s.push_str(if i.is_multiple_of(3) {
                        "alloc "
                    } else {
                        "realloc-growth "
                    });
                    i += 1;
                }
                check = check.wrapping_add(s.len() as u64);
                black_box(&s);
            }
            _ => {
                let mut b = t.alloc(1024);
                let target = rng.log_range(64 << 10, 4 << 20);
                while b.size() < target {
                    let n = b.size() + b.size() / 2;
                    t.alloced -= b.size() as u64;
                    b.resize(n);
                    t.alloced += b.size() as u64;
                    b.fill(3, 256);
                }
                t.free(b);
            }
        }
    }
    t.free_all(live);
    t.finish("large-realloc").wrapping_add(check)
}
