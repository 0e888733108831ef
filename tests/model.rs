//! Shadow-model test: seeded random sequences of malloc / free / realloc / aligned /
//! zeroed calls, checked against a model that knows every live block's size, alignment
//! and contents, and that no two live blocks overlap.
mod common;
use common::{seed, Rng};
use std::collections::BTreeMap;

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

struct Live {
    size: usize,
    align: usize,
    id: u64,
}

/// Byte offsets that carry the block's pattern: the ends and a sample in between.
fn marks(size: usize) -> impl Iterator<Item = usize> {
    let head = 0..size.min(128);
    let tail = size.saturating_sub(128).max(size.min(128))..size;
    let mid = (128..size.saturating_sub(128)).step_by(4093);
    head.chain(mid).chain(tail)
}

fn write(p: *mut u8, size: usize, id: u64) {
    for i in marks(size) {
        unsafe { *p.add(i) = common::pattern(id, i) };
    }
}

fn check(p: *const u8, size: usize, id: u64, what: &str, seed: u64) {
    for i in marks(size) {
        let got = unsafe { *p.add(i) };
        assert_eq!(
            got,
            common::pattern(id, i),
            "{what}: block {id} byte {i} corrupted (seed {seed})"
        );
    }
}

fn run(seed: u64, ops: usize) {
    let mut rng = Rng::new(seed);
    let mut live: BTreeMap<usize, Live> = BTreeMap::new();
    let mut next_id = 0u64;
    let overlaps = |live: &BTreeMap<usize, Live>, p: usize, size: usize| {
        let before = live.range(..=p).next_back();
        let after = live.range(p..).next();
        before.map_or(false, |(&a, l)| a + l.size.max(1) > p)
            || after.map_or(false, |(&a, _)| a < p + size.max(1))
    };
    for op in 0..ops {
        let r = rng.below(100);
        if r < 45 || live.is_empty() {
            // allocate: plain, zeroed or aligned
            let size = rng.size();
            let align = match rng.below(10) {
                0 => 1 << rng.below(23), // up to 4 MiB
                1 => 16,
                _ => 8,
            };
            let zero = rng.below(4) == 0;
            let p = unsafe { shardalloc::alloc(size, align, zero) };
            assert!(
                !p.is_null(),
                "op {op}: alloc({size}, {align}) failed (seed {seed})"
            );
            assert_eq!(p as usize % align, 0, "op {op}: misaligned (seed {seed})");
            assert!(unsafe { shardalloc::usable_size(p) } >= size);
            if zero {
                for i in marks(size) {
                    assert_eq!(
                        unsafe { *p.add(i) },
                        0,
                        "op {op}: zeroed alloc not zero at {i} (seed {seed})"
                    );
                }
            }
            assert!(
                !overlaps(&live, p as usize, size),
                "op {op}: overlap (seed {seed})"
            );
            next_id += 1;
            write(p, size, next_id);
            live.insert(
                p as usize,
                Live {
                    size,
                    align,
                    id: next_id,
                },
            );
        } else if r < 80 {
            // free a random live block
            let k = *live
                .keys()
                .nth(rng.below(live.len() as u64) as usize)
                .unwrap();
            let l = live.remove(&k).unwrap();
            check(k as *const u8, l.size, l.id, "free", seed);
            unsafe { shardalloc::free(k as *mut u8) };
        } else {
            // realloc a random live block, keeping its alignment
            let k = *live
                .keys()
                .nth(rng.below(live.len() as u64) as usize)
                .unwrap();
            let l = live.remove(&k).unwrap();
            check(k as *const u8, l.size, l.id, "realloc (before)", seed);
            let new_size = if rng.below(2) == 0 {
                rng.size()
            } else {
                l.size / 2 + 1
            };
            let q = unsafe { shardalloc::realloc(k as *mut u8, new_size, l.align, false) };
            assert!(!q.is_null(), "op {op}: realloc failed (seed {seed})");
            assert_eq!(
                q as usize % l.align,
                0,
                "op {op}: realloc lost alignment (seed {seed})"
            );
            let keep = l.size.min(new_size);
            for i in marks(l.size).filter(|&i| i < keep) {
                assert_eq!(
                    unsafe { *q.add(i) },
                    common::pattern(l.id, i),
                    "op {op}: realloc lost byte {i} (seed {seed})"
                );
            }
            assert!(
                !overlaps(&live, q as usize, new_size),
                "op {op}: overlap after realloc (seed {seed})"
            );
            next_id += 1;
            write(q, new_size, next_id);
            live.insert(
                q as usize,
                Live {
                    size: new_size,
                    align: l.align,
                    id: next_id,
                },
            );
        }
        if op % 5000 == 0 {
            shardalloc::check();
        }
    }
    for (k, l) in live {
        check(k as *const u8, l.size, l.id, "final free", seed);
        unsafe { shardalloc::free(k as *mut u8) };
    }
    shardalloc::check();
}

#[test]
fn shadow_model_random_sequences() {
    let base = seed("shadow_model_random_sequences");
    for i in 0..4 {
        run(base.wrapping_add(i), 60_000);
    }
}

#[test]
fn shadow_model_on_many_threads() {
    let base = seed("shadow_model_on_many_threads");
    let hs: Vec<_> = (0..4u64)
        .map(|t| std::thread::spawn(move || run(base.wrapping_add(100 + t), 30_000)))
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}
