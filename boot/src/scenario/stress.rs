//! `stress`: seeded random alloc / free / realloc with content checks, on every CPU at once.

use alloc::vec::Vec;
use core::alloc::Layout;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::check::{fill, verify, Block};
use crate::rng::Rng;
use crate::{heap, mem, smp};

const SLOTS: usize = 256;
const OPS: usize = 12_000;

static SEED: AtomicU64 = AtomicU64::new(0);
/// Largest block size; 0 = small mode (see `random_layout`).
static LARGE: AtomicUsize = AtomicUsize::new(0);
static OPS_DONE: AtomicUsize = AtomicUsize::new(0);

pub fn run(args: &super::Args) {
    SEED.store(args.seed, Ordering::SeqCst);
    LARGE.store(largest_block(), Ordering::SeqCst);
    OPS_DONE.store(0, Ordering::SeqCst);
    smp::run_on_all(worker);
    heap::collect_all(true);
    println!(
        "stress: {} ops on {} cpus (largest block {} KiB); statistics:\n{}",
        OPS_DONE.load(Ordering::SeqCst),
        smp::online(),
        LARGE.load(Ordering::SeqCst) >> 10,
        heap::ALLOC.stats()
    );
}

/// The largest block the random workloads use, so that the live set fits in memory.
///
/// A per-CPU heap holds a page per size class in use: 64 KiB for blocks up to 16 KiB,
/// 512 KiB up to 128 KiB, and a 4 MiB segment (committed as it fills) for each block up to
/// 2 MiB. With less than 24 MiB per CPU the workloads keep to small blocks (up to 16 KiB);
/// otherwise they go up to 1 MiB.
pub fn largest_block() -> usize {
    let per_cpu = mem::PHYS.free_frames() * 4096 / smp::online();
    if per_cpu < 24 << 20 {
        16 << 10
    } else {
        (per_cpu / 32).clamp(128 << 10, 1 << 20)
    }
}

/// A random layout: mostly small, some medium, a few large (up to `large` bytes);
/// mostly word-aligned.
pub fn random_layout(rng: &mut Rng, large: usize) -> Layout {
    let size = match rng.below(100) {
        0..=79 => rng.size(1, 1024),
        80..=95 => rng.size(1025, (64 << 10).min(large)),
        _ => rng.size((64 << 10).min(large), large),
    };
    let align = match rng.below(100) {
        0..=89 => 8,
        90..=94 => 16 << rng.below(3),
        95..=98 => 4096,
        _ if large > 16 << 10 => 64 << 10,
        _ => 4096,
    };
    Layout::from_size_align(size, align).unwrap()
}

fn worker(cpu: usize) {
    let mut rng =
        Rng::new(SEED.load(Ordering::SeqCst) ^ (cpu as u64 + 1).wrapping_mul(0x9E37_79B9));
    let large = LARGE.load(Ordering::SeqCst);
    let mut slots: Vec<Option<Block>> = (0..SLOTS).map(|_| None).collect();
    let mut next_tag = (cpu as u64) << 48;
    for _ in 0..OPS {
        let i = rng.below(SLOTS as u64) as usize;
        match slots[i].take() {
            None => {
                let layout = random_layout(&mut rng, large);
                // SAFETY: non-zero size.
                let p = unsafe { alloc::alloc::alloc(layout) };
                assert!(!p.is_null(), "cpu {cpu}: alloc({layout:?}) failed");
                assert_eq!(
                    p as usize % layout.align(),
                    0,
                    "cpu {cpu}: misaligned {p:p} for {layout:?}"
                );
                next_tag += 1;
                // SAFETY: p is a fresh block of layout.size() bytes.
                unsafe { fill(p, layout.size(), next_tag) };
                slots[i] = Some(Block {
                    ptr: p,
                    layout,
                    tag: next_tag,
                });
            }
            Some(b) if rng.below(2) == 0 => {
                // SAFETY: b is live and was filled with its tag.
                unsafe {
                    verify(b.ptr, b.layout.size(), b.tag, "stress free");
                    alloc::alloc::dealloc(b.ptr, b.layout);
                }
            }
            Some(b) => {
                let new = random_layout(&mut rng, large).size();
                // SAFETY: b is live with b.layout; new > 0.
                let q = unsafe { alloc::alloc::realloc(b.ptr, b.layout, new) };
                assert!(!q.is_null(), "cpu {cpu}: realloc to {new} failed");
                assert_eq!(
                    q as usize % b.layout.align(),
                    0,
                    "cpu {cpu}: realloc lost alignment"
                );
                let keep = b.layout.size().min(new);
                next_tag += 1;
                // SAFETY: q holds the first `keep` bytes of the old block and has `new` bytes.
                unsafe {
                    verify_prefix(q, keep, b.layout.size(), b.tag);
                    fill(q, new, next_tag);
                }
                let layout = Layout::from_size_align(new, b.layout.align()).unwrap();
                slots[i] = Some(Block {
                    ptr: q,
                    layout,
                    tag: next_tag,
                });
            }
        }
    }
    for b in slots.iter().flatten() {
        // SAFETY: each remaining block is live and filled with its tag.
        unsafe {
            verify(b.ptr, b.layout.size(), b.tag, "stress final");
            alloc::alloc::dealloc(b.ptr, b.layout);
        }
    }
    OPS_DONE.fetch_add(OPS, Ordering::SeqCst);
}

/// Checks the bytes a realloc must keep: all of them when few, else head and tail.
///
/// # Safety
/// `p` is valid for reads of `keep` bytes.
unsafe fn verify_prefix(p: *const u8, keep: usize, old: usize, tag: u64) {
    // `fill` wrote every byte of an old block of up to 2 KiB, and the first 256 bytes of a
    // larger one: check those of them that realloc kept.
    let n = if old <= 2048 { keep } else { keep.min(256) };
    // SAFETY: n <= keep.
    unsafe { verify(p, n, tag, "stress realloc") };
}
