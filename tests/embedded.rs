//! `embedded::Heap` (feature `embedded`, the small geometry) on the host: run by
//! `tests/targets.rs` as `cargo test --no-default-features --features embedded --test
//! embedded`, for x86_64 and for i686 (32-bit, as on a microcontroller). The firmware
//! under QEMU (`tests/firmware.rs`) runs the same heap on Cortex-M.
//!
//! The heap's segment alignment phase is process-wide, so one test function runs every
//! scenario on one heap, in order.
#![cfg(feature = "embedded")]

use core::alloc::{GlobalAlloc, Layout};
use std::ptr;

use shardalloc::embedded::Heap;

static HEAP: Heap = Heap::empty();

/// The heap's memory: 16 KiB starting 48 bytes into an 8 KiB-aligned array, so that the
/// start is not aligned to anything larger than 16 (as a linker may place it).
const SIZE: usize = 16 << 10;
#[repr(C, align(8192))]
struct Mem([u8; SIZE + 8192]);
static mut MEM: Mem = Mem([0; SIZE + 8192]);
/// A second region (as external RAM would be): 16 KiB, of which a region that does not
/// start at the heap's segment phase loses less than one segment (8 KiB) to alignment.
static mut MEM2: [u64; 2048] = [0; 2048];

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// xorshift64*: seeded, reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn fill(p: *mut u8, n: usize, tag: u8) {
    for i in 0..n {
        // SAFETY: `p` is a live block of at least `n` bytes.
        unsafe { *p.add(i) = tag.wrapping_add(i as u8) };
    }
}

fn check(p: *const u8, n: usize, tag: u8) -> bool {
    // SAFETY: as in `fill`.
    (0..n).all(|i| unsafe { *p.add(i) } == tag.wrapping_add(i as u8))
}

/// Allocates blocks of `size` until the heap says no; returns them.
fn fill_up(size: usize) -> Vec<(*mut u8, Layout)> {
    let mut v = Vec::new();
    loop {
        let l = layout(size, 8);
        // SAFETY: a non-zero layout.
        let p = unsafe { HEAP.alloc(l) };
        if p.is_null() {
            return v;
        }
        v.push((p, l));
    }
}

fn free_all(v: Vec<(*mut u8, Layout)>) {
    for (p, l) in v {
        // SAFETY: live blocks of HEAP.
        unsafe { HEAP.dealloc(p, l) };
    }
}

#[test]
fn embedded_heap_in_16k() {
    let m = shardalloc::embedded::Heap::metadata();
    eprintln!("metadata ({}-bit): {m:?}", usize::BITS);
    // before init: null, not a crash
    // SAFETY: a non-zero layout.
    assert!(unsafe { HEAP.alloc(layout(16, 8)) }.is_null());

    // SAFETY: MEM is ours alone, for the rest of the test binary; init runs once.
    let start = ptr::addr_of_mut!(MEM) as usize + 48;
    unsafe { HEAP.init(start, SIZE) };
    assert_eq!(HEAP.used(), 0);
    assert_eq!(
        HEAP.free(),
        SIZE,
        "the whole 16 KiB (16-byte aligned start) is usable"
    );

    // smoke: the sizes of a firmware's objects, contents kept, alignment
    let mut live = Vec::new();
    for (i, &(size, align)) in [
        (1, 1),
        (8, 8),
        (24, 8),
        (100, 4),
        (256, 16),
        (600, 8),
        (64, 64),
        (200, 128),
        (40, 8),
        (12, 4),
    ]
    .iter()
    .enumerate()
    {
        let l = layout(size, align);
        // SAFETY: a non-zero layout.
        let p = unsafe { HEAP.alloc(l) };
        assert!(
            !p.is_null(),
            "alloc({size}, {align}) failed in a fresh 16 KiB heap"
        );
        assert_eq!(
            p as usize % align,
            0,
            "alloc({size}, {align}) misaligned: {p:p}"
        );
        assert!(
            (p as usize) >= start && (p as usize) + size <= start + SIZE,
            "outside the heap"
        );
        fill(p, size, i as u8);
        live.push((p, l, i as u8));
    }
    let used = HEAP.used();
    let requested: usize = live.iter().map(|(_, l, _)| l.size()).sum();
    assert!(
        used >= requested,
        "used() {used} below the {requested} bytes live"
    );
    for (p, l, tag) in live.drain(..) {
        assert!(
            check(p, l.size(), tag),
            "block of {} bytes corrupted",
            l.size()
        );
        // SAFETY: a live block of HEAP.
        unsafe { HEAP.dealloc(p, l) };
    }
    assert_eq!(HEAP.used(), 0, "used() after freeing everything");
    // large blocks (runs of slices) and a huge one (a segment of its own), one at a time
    for size in [1500, 3000, 6000, 7000, 12_000] {
        let l = layout(size, 8);
        // SAFETY: a non-zero layout; the block is freed at once.
        unsafe {
            let p = HEAP.alloc(l);
            assert!(!p.is_null(), "alloc({size}) failed in an empty 16 KiB heap");
            // its page (or segment of its own) is counted, and the parts add up
            let u = HEAP.usage();
            assert!(u.live >= size && u.live == HEAP.used(), "{size}: {u:?}");
            assert_eq!(
                u.live + u.free_in_pages + u.headers + u.unused,
                SIZE,
                "{u:?}"
            );
            fill(p, size, 3);
            assert!(check(p, size, 3));
            HEAP.dealloc(p, l);
        }
    }
    // a block larger than the heap: null, not a crash
    // SAFETY: a non-zero layout.
    assert!(unsafe { HEAP.alloc(layout(SIZE + 1, 8)) }.is_null());
    assert_eq!(HEAP.used(), 0);

    // realloc keeps the contents, growing across size classes
    // SAFETY: non-zero layouts; `p` is live with the layout passed.
    unsafe {
        let mut l = layout(10, 8);
        let mut p = HEAP.alloc(l);
        fill(p, 10, 7);
        for new in [40, 300, 2000, 6000, 50] {
            let q = HEAP.realloc(p, l, new);
            assert!(!q.is_null(), "realloc to {new}");
            assert!(
                check(q, l.size().min(new), 7),
                "realloc to {new} lost the contents"
            );
            fill(q, new, 7);
            p = q;
            l = layout(new, 8);
        }
        HEAP.dealloc(p, l);
    }

    // fill with small blocks: most of the 16 KiB is handed out, then null, then recovery
    for size in [16, 48, 200] {
        let v = fill_up(size);
        let got = v.len() * size;
        eprintln!(
            "{size}-byte blocks: {} blocks, {got} bytes of {SIZE}",
            v.len()
        );
        // (segment headers take an eighth, size classes round up, and a 512-byte page of
        // 224-byte blocks leaves 64 bytes: the fill ranges from ~65% for such sizes to ~85%
        // for small ones)
        assert!(
            got * 100 >= SIZE * 60,
            "{size}-byte fill reached only {got} of {SIZE} bytes"
        );
        // where the memory is at the first null: the parts add up to the heap, the live
        // part is `used()`, and the headers are those of the heap's two 8 KiB segments, each
        // `metadata()`'s size (no entries for the slices it covers) rounded up to 16 bytes
        let u = HEAP.usage();
        eprintln!("{size}-byte blocks, at the first null: {u:?}");
        let hdr = shardalloc::embedded::Heap::metadata().small_segment_header;
        assert_eq!(u.live, HEAP.used(), "usage().live is used()");
        assert!(
            u.live >= got,
            "usage().live {} below the {got} bytes live",
            u.live
        );
        assert_eq!(
            u.live + u.free_in_pages + u.headers + u.unused,
            SIZE,
            "{u:?}"
        );
        assert_eq!(
            u.headers,
            SIZE / 8192 * ((hdr + 15) & !15),
            "headers of {} bytes (one is {hdr} before rounding)",
            u.headers
        );
        free_all(v);
        assert_eq!(HEAP.used(), 0);
        let u = HEAP.usage();
        assert_eq!(u.live, 0, "{u:?}");
        assert_eq!(u.free_in_pages + u.headers + u.unused, SIZE, "{u:?}");
    }

    // out of memory, a request takes a free block of a larger size class: a page of
    // 112-byte blocks (the class of 100 bytes) holds one block live and room for more;
    // a fill of 16-byte blocks, once no memory is left for a page of its own class, takes
    // that room (blocks 112 bytes apart from the live one), aligned as 16-byte blocks are,
    // and then a 100-byte request finds none
    // SAFETY: a non-zero layout.
    let a = unsafe { HEAP.alloc(layout(100, 4)) };
    assert!(!a.is_null());
    let v = fill_up(16);
    let siblings = v
        .iter()
        .filter(|(p, _)| {
            let d = (*p as usize).abs_diff(a as usize);
            d > 0 && d < 512 && d % 112 == 0
        })
        .count();
    eprintln!(
        "16-byte fill: {} blocks, {siblings} in the 100-byte block's page",
        v.len()
    );
    assert!(
        siblings >= 3,
        "the 16-byte fill took {siblings} blocks of the 112-byte page with room (expected 3+)"
    );
    assert!(
        v.iter().all(|(p, _)| *p as usize % 16 == 0),
        "a 16-byte block not aligned to 16"
    );
    // SAFETY: a non-zero layout.
    assert!(
        unsafe { HEAP.alloc(layout(100, 4)) }.is_null(),
        "room left after the fill"
    );
    for (i, (p, _)) in v.iter().enumerate() {
        fill(*p, 16, i as u8);
    }
    for (i, (p, _)) in v.iter().enumerate() {
        assert!(check(*p, 16, i as u8), "16-byte block {i} corrupted");
    }
    free_all(v);
    // SAFETY: the live block, with its layout.
    unsafe { HEAP.dealloc(a, layout(100, 4)) };
    assert_eq!(HEAP.used(), 0);

    // seeded stress: mixed sizes, contents checked, frees in random order (under Miri,
    // `scripts/miri.sh`, 2,000 operations instead of 20,000: the same mix and checks, fewer
    // of them, as Miri interprets every byte that `fill` and `check` touch)
    let seed = 0x5eed_0001_u64;
    let mut rng = Rng(seed);
    let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
    let ops = if cfg!(miri) { 2_000 } else { 20_000 };
    for op in 0..ops {
        if live.len() < 60 && rng.next() % 3 != 0 {
            let size = match rng.next() % 10 {
                0 => 300 + (rng.next() % 1500) as usize,
                1..=3 => 64 + (rng.next() % 200) as usize,
                _ => 1 + (rng.next() % 64) as usize,
            };
            let l = layout(size, 8);
            // SAFETY: a non-zero layout.
            let p = unsafe { HEAP.alloc(l) };
            if p.is_null() {
                continue; // full for now: frees come
            }
            let tag = op as u8;
            fill(p, size, tag);
            live.push((p, l, tag));
        } else if !live.is_empty() {
            let (p, l, tag) = live.swap_remove((rng.next() as usize) % live.len());
            assert!(
                check(p, l.size(), tag),
                "seed {seed:#x}, op {op}: block corrupted"
            );
            // SAFETY: a live block of HEAP.
            unsafe { HEAP.dealloc(p, l) };
        }
    }
    for (p, l, tag) in live.drain(..) {
        assert!(
            check(p, l.size(), tag),
            "seed {seed:#x}: block corrupted at the end"
        );
        // SAFETY: a live block of HEAP.
        unsafe { HEAP.dealloc(p, l) };
    }
    assert_eq!(HEAP.used(), 0);

    // fragmentation: alternate small and larger blocks, free every other, then mid sizes
    let mut v = Vec::new();
    for i in 0.. {
        let l = layout(if i % 2 == 0 { 24 } else { 400 }, 8);
        // SAFETY: a non-zero layout.
        let p = unsafe { HEAP.alloc(l) };
        if p.is_null() {
            break;
        }
        v.push((p, l));
    }
    let mut keep = Vec::new();
    for (i, b) in v.into_iter().enumerate() {
        if i % 2 == 1 {
            keep.push(b);
        } else {
            free_all(vec![b]);
        }
    }
    let mids = fill_up(100);
    eprintln!("fragmented heap: {} more 100-byte blocks", mids.len());
    free_all(mids);
    free_all(keep);
    assert_eq!(HEAP.used(), 0);

    // a page that empties is kept, retired, in its size class's queue (here a page of one
    // 448-byte block); taken up again by the allocation fast path and run out, it goes to
    // the full queue; when its block is freed there, it must leave the full queue, or no
    // allocation and no out-of-memory sweep of empty pages finds it again, and its memory
    // is lost to every other size (a fill of 16-byte blocks reaches less)
    let reference = fill_up(16);
    let reached = reference.len();
    free_all(reference);
    let l448 = layout(448, 8);
    // SAFETY: non-zero layouts; each block is freed once, with its layout.
    unsafe {
        let a = HEAP.alloc(l448);
        assert!(!a.is_null());
        HEAP.dealloc(a, l448); // the page empties: retired
        let b = HEAP.alloc(l448); // the same page again, on the fast path
        let c = HEAP.alloc(l448); // it ran out: to the full queue, `c` from a fresh page
        assert!(!b.is_null() && !c.is_null() && b != c);
        HEAP.dealloc(b, l448); // the page empties in the full queue
        HEAP.dealloc(c, l448);
    }
    assert_eq!(HEAP.used(), 0);
    let again = fill_up(16);
    eprintln!(
        "16-byte fill: {reached} blocks, {} after a retired page emptied in the full queue",
        again.len()
    );
    assert!(
        again.len() >= reached,
        "a page that emptied in the full queue was lost: {} 16-byte blocks, {reached} before",
        again.len()
    );
    free_all(again);
    assert_eq!(HEAP.used(), 0);

    // a second region: more memory, also usable
    let before = fill_up(64);
    // SAFETY: MEM2 is ours alone, for the rest of the test binary.
    let added = unsafe { HEAP.add_region(ptr::addr_of_mut!(MEM2) as usize, 16384) };
    assert!(
        added >= 8192,
        "add_region of 16 KiB gave only {added} usable bytes"
    );
    let after = fill_up(64);
    eprintln!("after add_region: {} more 64-byte blocks", after.len());
    assert!(
        after.len() * 64 >= 4096,
        "the second region gave only {} blocks",
        after.len()
    );
    free_all(before);
    free_all(after);
    assert_eq!(HEAP.used(), 0);
    assert_eq!(HEAP.free(), SIZE + added);
}
