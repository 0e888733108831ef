//! A kernel-like mix with a bounded live set (at most ~4 MiB), the kind of load a
//! fixed-size heap of a no_std kernel sees: small objects, a BTreeMap of buffers,
//! page-aligned page buffers, and short-lived growing vectors.

use crate::util::{scaled, Blk, Rng, Tally};
use std::collections::BTreeMap;
use std::hint::black_box;

const OPS: usize = 1_500_000;
const SMALL_SLOTS: usize = 8192;
const KEYS: usize = 4096;
const PAGES: usize = 64;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

pub fn run(scale: f64) -> u64 {
    let ops = scaled(OPS, scale);
    let mut rng = Rng::new(0xf1_8ed);
    let mut t = Tally::default();
    let mut small: Vec<Option<Blk>> = (0..SMALL_SLOTS).map(|_| None).collect();
    let mut map: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut pages: Vec<Box<Page>> = Vec::new();
    let mut page_at = 0usize;
    let mut check = 0u64;
    for op in 0..ops {
        let r = rng.below(100);
        if r < 45 {
            let i = rng.below(SMALL_SLOTS);
            let size = if rng.chance(90) {
                rng.range(8, 128)
            } else {
                rng.range(129, 1024)
            };
            let mut b = t.alloc(size);
            b.fill(op as u8, 24);
            if let Some(old) = small[i].replace(b) {
                t.free(old);
            }
        } else if r < 65 {
            let k = rng.below(KEYS) as u32;
            let v = vec![k as u8; rng.range(16, 256)];
            if let Some(old) = map.insert(k, v) {
                check = check.wrapping_add(old.len() as u64);
            }
        } else if r < 75 {
            let k = rng.below(KEYS) as u32;
            if let Some(old) = map.remove(&k) {
                check = check.wrapping_add(old[0] as u64);
            }
        } else if r < 80 {
            let mut p = Box::new(Page([0; 4096]));
            p.0[op % 4096] = op as u8;
            if pages.len() < PAGES {
                pages.push(p);
            } else {
                let old = std::mem::replace(&mut pages[page_at % PAGES], p);
                page_at += 1;
                check = check.wrapping_add(old.0[0] as u64);
            }
        } else {
            let n = rng.log_range(1, 1000);
            let mut v: Vec<u32> = Vec::new();
            for j in 0..n {
                v.push(j as u32);
            }
            check = check.wrapping_add(v[n - 1] as u64);
            black_box(&v);
        }
    }
    t.free_all(small.into_iter().flatten());
    check = check.wrapping_add(map.len() as u64 + pages.len() as u64);
    t.finish("fixed-heap").wrapping_add(check)
}
