//! `realloc`'s common path (`alloc::realloc`: a block of a page of the calling thread's
//! with no flag set, growing by `malloc`'s fast path or staying in place) and the cases it
//! hands to `realloc_general`: blocks of full pages, of other threads' pages, of pages that
//! hold aligned pointers, over-aligned layouts, misses of the fast path. Each case checks
//! the contents kept, the new block's usable size, that old and new blocks do not overlap,
//! and that the block given up is free again (the page that held it alone empties).
//! Seeded; a failure prints its seed. One test runs the cases in turn: the page counts it
//! reads are the process's, which a test running beside it would change.

use std::alloc::{GlobalAlloc, Layout};

use shardalloc::ShardAlloc;

/// splitmix64
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn fill(p: *mut u8, n: usize, tag: u8) {
    for i in 0..n {
        // SAFETY: callers pass a live block of at least `n` usable bytes.
        unsafe { p.add(i).write(tag.wrapping_add(i as u8)) };
    }
}

fn kept(p: *const u8, n: usize, tag: u8) -> bool {
    // SAFETY: callers pass a live block of at least `n` usable bytes.
    (0..n).all(|i| unsafe { p.add(i).read() } == tag.wrapping_add(i as u8))
}

/// Grows `p` (`old` bytes written with `tag`) to `new` bytes through `GlobalAlloc::realloc`
/// and checks what it must keep; returns the new block.
fn grow(p: *mut u8, layout: Layout, new: usize, tag: u8, seed: u64) -> *mut u8 {
    let old = layout.size();
    // SAFETY: `p` is live with `layout` (callers); `new` is not zero.
    let q = unsafe { ShardAlloc.realloc(p, layout, new) };
    assert!(
        !q.is_null(),
        "realloc {old} -> {new} failed (seed {seed:#x})"
    );
    assert_eq!(
        q as usize % layout.align(),
        0,
        "realloc lost the alignment (seed {seed:#x})"
    );
    // SAFETY: `q` is live.
    let usable = unsafe { shardalloc::usable_size(q) };
    assert!(
        usable >= new,
        "realloc {old} -> {new}: usable {usable} (seed {seed:#x})"
    );
    assert!(
        kept(q, old.min(new), tag),
        "realloc {old} -> {new} lost contents (seed {seed:#x})"
    );
    q
}

/// The pages in use in this thread's heap, as the statistics count them.
fn pages() -> i64 {
    shardalloc::collect(false);
    shardalloc::stats().pages.current
}

fn growth_moves_keep_contents_and_free_the_old_block() {
    let seed = 0x7ea1_10c5_u64;
    let mut rng = Rng(seed);
    // Vec-like doubling and string-like small steps over the small and medium sizes, with
    // other blocks live around them
    let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
    for round in 0..2000 {
        let mut size = 1 + rng.below(64);
        let align = [1usize, 2, 4, 8, 16, 32][rng.below(6)];
        let tag = rng.next() as u8;
        let mut layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: non-zero size.
        let mut p = unsafe { ShardAlloc.alloc(layout) };
        assert!(!p.is_null());
        fill(p, size, tag);
        let steps = 1 + rng.below(8);
        for _ in 0..steps {
            let new = if rng.below(2) == 0 {
                size * 2
            } else {
                size + 1 + rng.below(100)
            };
            let q = grow(p, layout, new, tag, seed);
            if q != p {
                // distinct blocks: the old one's range does not meet the new one's
                let (a, b) = (p as usize, q as usize);
                assert!(
                    a + size <= b || b + new <= a,
                    "overlap (seed {seed:#x}, round {round})"
                );
            }
            fill(q, new, tag);
            p = q;
            size = new;
            layout = Layout::from_size_align(size, align).unwrap();
        }
        if rng.below(3) == 0 {
            live.push((p, layout, tag));
        } else {
            // SAFETY: live with `layout`.
            unsafe { ShardAlloc.dealloc(p, layout) };
        }
        if live.len() > 64 {
            let (p, l, t) = live.swap_remove(rng.below(live.len()));
            assert!(
                kept(p, l.size(), t),
                "a live block changed (seed {seed:#x})"
            );
            // SAFETY: live with `l`.
            unsafe { ShardAlloc.dealloc(p, l) };
        }
    }
    for (p, l, t) in live {
        assert!(
            kept(p, l.size(), t),
            "a live block changed (seed {seed:#x})"
        );
        // SAFETY: live with `l`.
        unsafe { ShardAlloc.dealloc(p, l) };
    }
}

fn fitting_sizes_stay_in_place() {
    let layout = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: non-zero size.
    let p = unsafe { ShardAlloc.alloc(layout) };
    // SAFETY: `p` is live.
    let usable = unsafe { shardalloc::usable_size(p) };
    fill(p, 100, 7);
    // within the block and not below half of it: the same block
    for new in [usable, usable / 2 + 1, 100] {
        // SAFETY: live with `layout`.
        let q = unsafe { ShardAlloc.realloc(p, layout, new) };
        assert_eq!(q, p, "realloc to {new} of a block of {usable} moved");
    }
    assert!(kept(p, 100, 7));
    // SAFETY: live.
    unsafe { ShardAlloc.dealloc(p, layout) };
}

/// A block alone in its page (a size class nothing else here uses) that grows into a
/// class whose page has room (`malloc`'s fast path: the common path moves it): the free of
/// the old block empties its page, which a full collection then gives back.
fn the_page_emptied_by_a_move_is_freed() {
    std::thread::spawn(|| {
        let big = Layout::from_size_align(6000, 8).unwrap();
        // a page of the class the block grows into, with room
        // SAFETY: non-zero size.
        let x = unsafe { ShardAlloc.alloc(big) };
        let before = pages();
        let layout = Layout::from_size_align(3000, 8).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { ShardAlloc.alloc(layout) };
        fill(p, 3000, 3);
        assert_eq!(
            pages(),
            before + 1,
            "the block did not get a page of its own"
        );
        let q = grow(p, layout, 6000, 3, 0);
        assert_ne!(q, p);
        assert_eq!(
            q as usize / 65536,
            x as usize / 65536,
            "not moved into the page with room"
        );
        // the old page emptied (retired, then freed by a full collection)
        shardalloc::collect(true);
        assert_eq!(
            pages(),
            before,
            "the page of the block given up is still in use"
        );
        // SAFETY: live with `big`.
        unsafe {
            ShardAlloc.dealloc(q, big);
            ShardAlloc.dealloc(x, big);
        }
    })
    .join()
    .unwrap();
}

/// Blocks of full pages (their flag set): the general path moves them, the free of the
/// old block takes the page out of the full queue.
fn blocks_of_full_pages_grow() {
    let layout = Layout::from_size_align(48, 8).unwrap();
    // enough blocks of 48 bytes to fill several pages (64 KiB pages: 1365 blocks each)
    let blocks: Vec<*mut u8> = (0..5000)
        .map(|i| {
            // SAFETY: non-zero size.
            let p = unsafe { ShardAlloc.alloc(layout) };
            fill(p, 48, i as u8);
            p
        })
        .collect();
    let mut out = Vec::new();
    for (i, &p) in blocks.iter().enumerate().step_by(7) {
        out.push((grow(p, layout, 200, i as u8, 0), i));
    }
    for (i, &p) in blocks.iter().enumerate() {
        if i % 7 != 0 {
            assert!(kept(p, 48, i as u8));
            // SAFETY: live.
            unsafe { ShardAlloc.dealloc(p, layout) };
        }
    }
    for (q, i) in out {
        assert!(kept(q, 48, i as u8));
        // SAFETY: live with 200 bytes.
        unsafe { ShardAlloc.dealloc(q, Layout::from_size_align(200, 8).unwrap()) };
    }
}

/// Blocks allocated by another thread (the owner test fails): moved by the general path,
/// the old block freed remotely.
fn blocks_of_other_threads_grow() {
    let layout = Layout::from_size_align(40, 8).unwrap();
    let blocks: Vec<usize> = std::thread::spawn(move || {
        (0..1000)
            .map(|i| {
                // SAFETY: non-zero size.
                let p = unsafe { ShardAlloc.alloc(layout) };
                fill(p, 40, i as u8);
                p as usize
            })
            .collect()
    })
    .join()
    .unwrap();
    for (i, &p) in blocks.iter().enumerate() {
        let q = grow(p as *mut u8, layout, 90 + i % 500, i as u8, 0);
        // SAFETY: live.
        unsafe { ShardAlloc.dealloc(q, Layout::from_size_align(90 + i % 500, 8).unwrap()) };
    }
}

/// Blocks of a page that handed out aligned pointers into blocks (its flag set), and
/// over-aligned layouts: the general path.
fn aligned_blocks_grow() {
    for align in [16usize, 64, 256, 4096] {
        let layout = Layout::from_size_align(24, align).unwrap();
        let blocks: Vec<*mut u8> = (0..200)
            .map(|i| {
                // SAFETY: non-zero size.
                let p = unsafe { ShardAlloc.alloc(layout) };
                assert_eq!(p as usize % align, 0);
                fill(p, 24, i as u8);
                p
            })
            .collect();
        for (i, &p) in blocks.iter().enumerate() {
            let new = 24 + 8 * (i % 100);
            let q = grow(p, layout, new, i as u8, 0);
            // SAFETY: live.
            unsafe { ShardAlloc.dealloc(q, Layout::from_size_align(new, align).unwrap()) };
        }
    }
}

#[test]
fn realloc_paths() {
    growth_moves_keep_contents_and_free_the_old_block();
    fitting_sizes_stay_in_place();
    the_page_emptied_by_a_move_is_freed();
    blocks_of_full_pages_grow();
    blocks_of_other_threads_grow();
    aligned_blocks_grow();
}
