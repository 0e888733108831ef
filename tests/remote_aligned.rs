//! Remote frees of aligned pointers: a thread frees blocks that another thread allocated
//! with alignments above the size class's own (pointers that may lie inside their block).
//! A remote free finds the block start from the page's `XHEAP_ALIGNED` tag (src/page.rs):
//! a wrong start would push an interior pointer onto the page's free list, and later
//! allocations would overlap live blocks or each other. The owner keeps allocating (and
//! its pages fill up, so that remote frees also take the delayed path of full pages) while
//! the other thread frees; every live block carries its own pattern, checked before it is
//! freed and after the owner has taken the freed memory back.

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

mod common;
use common::{fill, verify, Rng};
use std::sync::mpsc;

const ROUNDS: usize = 40;
const PER_ROUND: usize = 2_000;

/// A block of ours: address, size, alignment, pattern id.
#[derive(Clone, Copy)]
struct Live {
    p: usize,
    size: usize,
    align: usize,
    id: u64,
}

fn alloc_one(rng: &mut Rng, id: u64) -> Live {
    let size = 1 + rng.below(2048) as usize;
    let align = 8usize << rng.below(6); // 8 to 256
    let p = unsafe { shardalloc::alloc(size, align, false) };
    assert!(!p.is_null(), "alloc({size}, {align}) failed");
    assert_eq!(p as usize % align, 0, "alloc({size}, {align}) misaligned");
    fill(p, size, id);
    Live {
        p: p as usize,
        size,
        align,
        id,
    }
}

#[test]
fn remote_frees_of_aligned_pointers_keep_the_free_lists_whole() {
    let seed = common::seed("remote_frees_of_aligned_pointers_keep_the_free_lists_whole");
    let mut rng = Rng::new(seed);
    let (tx, rx) = mpsc::channel::<Vec<Live>>();
    let freer = std::thread::spawn(move || {
        let mut freed = 0usize;
        for batch in rx {
            for b in batch {
                assert!(
                    verify(b.p as *const u8, b.size, b.id),
                    "seed {seed}: block {:#x} ({} B, align {}) overwritten before its remote free",
                    b.p,
                    b.size,
                    b.align
                );
                unsafe { shardalloc::free(b.p as *mut u8) };
                freed += 1;
            }
        }
        freed
    });
    let mut kept: Vec<Live> = Vec::new();
    let mut id = 0u64;
    let mut sent = 0usize;
    for _ in 0..ROUNDS {
        let mut batch = Vec::with_capacity(PER_ROUND);
        for _ in 0..PER_ROUND {
            id += 1;
            let b = alloc_one(&mut rng, id);
            // most go to the other thread; some stay live here, so that pages stay in use
            if rng.below(4) == 0 {
                kept.push(b);
            } else {
                batch.push(b);
            }
        }
        sent += batch.len();
        tx.send(batch).unwrap();
        // the owner's blocks are intact while the other thread frees into its pages
        for b in &kept {
            assert!(
                verify(b.p as *const u8, b.size, b.id),
                "seed {seed}: live block {:#x} ({} B, align {}) overwritten",
                b.p,
                b.size,
                b.align
            );
        }
    }
    drop(tx);
    let freed = freer.join().unwrap();
    assert_eq!(
        freed, sent,
        "seed {seed}: the other thread freed every block it got"
    );
    // the owner takes the remotely freed memory back: fresh blocks must not overlap the
    // live ones nor each other
    let mut fresh = Vec::new();
    for _ in 0..ROUNDS * PER_ROUND / 2 {
        id += 1;
        fresh.push(alloc_one(&mut rng, id));
    }
    let mut all: Vec<(usize, usize)> = kept
        .iter()
        .chain(fresh.iter())
        .map(|b| (b.p, b.p + b.size))
        .collect();
    all.sort_unstable();
    for w in all.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "seed {seed}: blocks {:#x}..{:#x} and {:#x}..{:#x} overlap",
            w[0].0,
            w[0].1,
            w[1].0,
            w[1].1
        );
    }
    for b in kept.iter().chain(fresh.iter()) {
        assert!(
            verify(b.p as *const u8, b.size, b.id),
            "seed {seed}: block {:#x} ({} B, align {}) overwritten",
            b.p,
            b.size,
            b.align
        );
        unsafe { shardalloc::free(b.p as *mut u8) };
    }
}
