//! A thread that exits leaves its pages in use with both of their free lists as they are:
//! its collection no longer appends the owner's frees (`local_free`) to `free` (a walk of
//! every such list on every thread exit; `used` is exact without it). The thread that
//! takes the segment over must then hand out every free block of those pages exactly once:
//! none twice, none that is still live.

use std::collections::HashSet;

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

const SIZE: usize = 48;
const FIRST: usize = 4000;

/// Fills the block at `p` with a pattern of `tag`.
fn fill(p: usize, tag: u64) {
    // SAFETY: `p` is a live block of `SIZE` bytes that the caller owns.
    unsafe { std::ptr::write_bytes(p as *mut u64, 0, SIZE / 8) };
    for i in 0..SIZE / 8 {
        // SAFETY: as above; word `i` lies inside the block.
        unsafe {
            (p as *mut u64)
                .add(i)
                .write(tag.wrapping_mul(31).wrapping_add(i as u64))
        };
    }
}

fn holds(p: usize, tag: u64) -> bool {
    // SAFETY: `p` is a live block of `SIZE` bytes that nobody else writes.
    (0..SIZE / 8).all(|i| unsafe { (p as *const u64).add(i).read() } == tag.wrapping_mul(31).wrapping_add(i as u64))
}

fn layout() -> std::alloc::Layout {
    std::alloc::Layout::from_size_align(SIZE, 8).unwrap()
}

fn alloc(tag: u64) -> usize {
    // SAFETY: a non-zero size.
    let p = unsafe { std::alloc::alloc(layout()) } as usize;
    assert_ne!(p, 0, "out of memory");
    fill(p, tag);
    p
}

#[test]
fn pages_of_an_exited_thread_hand_out_each_free_block_once() {
    let before = shardalloc::stats();
    // Thread A: its pages of 48-byte blocks end with blocks on `free` (not handed out
    // yet), blocks on `local_free` (freed by A) and live blocks (kept), then A exits.
    let live: Vec<(usize, u64)> = std::thread::spawn(|| {
        let blocks: Vec<usize> = (0..FIRST as u64).map(alloc).collect();
        let mut live = Vec::new();
        for (i, &p) in blocks.iter().enumerate() {
            if i % 2 == 1 {
                // SAFETY: allocated above with this layout, freed once.
                unsafe { std::alloc::dealloc(p as *mut u8, layout()) };
            } else {
                live.push((p, i as u64));
            }
        }
        // a few more, popped from `free` (or from `local_free` once `free` is empty)
        for i in 0..10u64 {
            let tag = 1_000_000 + i;
            live.push((alloc(tag), tag));
        }
        live
    })
    .join()
    .unwrap();
    let after_a = shardalloc::stats();
    assert!(
        after_a.abandoned > before.abandoned,
        "thread A's segment was not abandoned"
    );

    // Thread B takes over A's segment and allocates more than A left free there (first
    // thing after A's exit: no other thread allocates meanwhile).
    let (got, live) = std::thread::spawn(move || {
        let got: Vec<usize> = (0..2 * FIRST as u64)
            .map(|i| alloc(2_000_000 + i))
            .collect();
        (got, live)
    })
    .join()
    .unwrap();
    let after_b = shardalloc::stats();
    assert!(
        after_b.reclaimed > after_a.reclaimed,
        "thread B reclaimed no segment: the case did not run"
    );

    let live_set: HashSet<usize> = live.iter().map(|&(p, _)| p).collect();
    let mut seen = HashSet::new();
    for &p in &got {
        assert!(
            !live_set.contains(&p),
            "block {p:#x} handed out while still live"
        );
        assert!(seen.insert(p), "block {p:#x} handed out twice");
    }
    for (i, &p) in got.iter().enumerate() {
        assert!(
            holds(p, 2_000_000 + i as u64),
            "block {p:#x} of thread B was overwritten"
        );
    }
    for &(p, tag) in &live {
        assert!(
            holds(p, tag),
            "live block {p:#x} of thread A was overwritten"
        );
    }
    for p in got.into_iter().chain(live.into_iter().map(|(p, _)| p)) {
        // SAFETY: each allocated once with this layout and freed once here.
        unsafe { std::alloc::dealloc(p as *mut u8, layout()) };
    }
}
