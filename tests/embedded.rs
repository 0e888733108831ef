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
    // 6140-byte block, a size above the runs', the class of 6 KiB); taken up again by the allocation fast path and run out, it goes to
    // the full queue; when its block is freed there, it must leave the full queue, or no
    // allocation and no out-of-memory sweep of empty pages finds it again, and its memory
    // is lost to every other size (a fill of 16-byte blocks reaches less)
    let reference = fill_up(16);
    let reached = reference.len();
    free_all(reference);
    let l6k = layout(6140, 8);
    // SAFETY: non-zero layouts; each block is freed once, with its layout.
    unsafe {
        let a = HEAP.alloc(l6k);
        assert!(!a.is_null());
        HEAP.dealloc(a, l6k); // the page empties: retired
        let b = HEAP.alloc(l6k); // the same page again
        let c = HEAP.alloc(l6k); // it ran out: to the full queue, `c` from a fresh page
        assert!(!b.is_null() && !c.is_null() && b != c);
        assert_eq!(a, b, "the retired page was not taken up again");
        HEAP.dealloc(b, l6k); // the page empties in the full queue
        HEAP.dealloc(c, l6k);
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

    runs();
    run_misuse();

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

/// Blocks of 129 bytes to ~6 KiB are cut to size from runs of slices (the heap's
/// `embedded_runs`): packed at two-word granularity, coalesced when freed, given back to
/// the size classes when a run empties; out of memory, a small request takes a free chunk.
fn runs() {
    const W: usize = size_of::<usize>();
    let chunk = |size: usize| (size + W).div_ceil(2 * W) * (2 * W);
    let reference = fill_up(16);
    let reached = reference.len();
    free_all(reference);
    let base = HEAP.usage();
    // SAFETY: non-zero layouts; each block is freed once, with its layout.
    unsafe {
        let (l300, l700, l1000, l2000) = (
            layout(300, 8),
            layout(700, 4),
            layout(1000, 8),
            layout(2000, 8),
        );
        // packed: the 700-byte block follows the 300-byte one at the 300 bytes' chunk (a
        // size class would round 300 to 320 and give 700 a page of its own class)
        let a = HEAP.alloc(l300);
        let b = HEAP.alloc(l700);
        assert!(!a.is_null() && !b.is_null());
        assert_eq!(b as usize - a as usize, chunk(300), "runs: not packed");
        assert_eq!(a as usize % (2 * W), 0, "a chunk not aligned to two words");
        fill(a, 300, 1);
        fill(b, 700, 2);
        let u = HEAP.usage();
        assert_eq!(u.live, chunk(300) + chunk(700), "{u:?}");
        assert_eq!(u.live, HEAP.used());
        assert_eq!(
            u.live + u.free_in_pages + u.headers + u.unused,
            SIZE,
            "{u:?}"
        );
        // coalescing: c after b; free a, then b: one free chunk where a and b were, which a
        // 1000-byte block takes (at a's place, best fit: the chunk after c is larger)
        let c = HEAP.alloc(l1000);
        assert_eq!(c as usize - b as usize, chunk(700));
        fill(c, 1000, 3);
        HEAP.dealloc(a, l300);
        assert!(check(b, 700, 2));
        HEAP.dealloc(b, l700);
        let d = HEAP.alloc(l1000);
        assert_eq!(d, a, "the freed neighbours were not coalesced");
        assert!(check(c, 1000, 3), "a neighbour's free changed a live chunk");
        // realloc across the two kinds, contents kept: a class block into a run, a chunk to
        // a larger chunk, a chunk shrinking in place, a chunk back into a size class
        let mut p = HEAP.alloc(layout(100, 8));
        fill(p, 100, 4);
        p = HEAP.realloc(p, layout(100, 8), 2000);
        assert!(!p.is_null() && check(p, 100, 4));
        fill(p, 2000, 5);
        let q = HEAP.realloc(p, l2000, 1500);
        assert_eq!(q, p, "a chunk shrinking by a quarter moved");
        p = HEAP.realloc(p, layout(1500, 8), 3000);
        assert!(!p.is_null() && check(p, 1500, 5));
        p = HEAP.realloc(p, layout(3000, 8), 64);
        assert!(!p.is_null() && check(p, 64, 5));
        HEAP.dealloc(p, layout(64, 8));
        // zeroed: a chunk that held data reads as zero
        HEAP.dealloc(d, l1000);
        let z = HEAP.alloc_zeroed(l1000);
        assert!(
            !z.is_null() && (0..1000).all(|i| *z.add(i) == 0),
            "alloc_zeroed: not zero"
        );
        HEAP.dealloc(z, l1000);
        HEAP.dealloc(c, l1000);
    }
    // every run emptied went back: no chunk bytes live, and the slices serve the size
    // classes again (a 16-byte fill reaches as far as before)
    assert_eq!(HEAP.used(), 0);
    let u = HEAP.usage();
    assert_eq!((u.live, u.headers), (0, base.headers), "{u:?}");
    let again = fill_up(16);
    assert!(
        again.len() >= reached,
        "runs kept slices: {} 16-byte blocks after, {reached} before",
        again.len()
    );
    free_all(again);
    // out of memory, a small request takes a free chunk: one 200-byte chunk live in a run,
    // then a fill of 24-byte blocks: once the size classes have no room, its blocks come
    // from the run (within its 6 KiB), until it is full too
    // SAFETY: a non-zero layout; freed with it.
    let r = unsafe { HEAP.alloc(layout(200, 8)) };
    assert!(!r.is_null());
    let v = fill_up(24);
    let in_run = v
        .iter()
        .filter(|(p, _)| (*p as usize).abs_diff(r as usize) < 6144)
        .filter(|(p, _)| (*p as usize).abs_diff(r as usize) % chunk(24) == chunk(200) % chunk(24))
        .count();
    eprintln!(
        "24-byte fill with a run live: {} blocks, {in_run} in the run",
        v.len()
    );
    assert!(
        in_run >= 100,
        "the fill took only {in_run} chunks of the run"
    );
    free_all(v);
    // SAFETY: the live block, with its layout.
    unsafe { HEAP.dealloc(r, layout(200, 8)) };
    assert_eq!(HEAP.used(), 0);

    // seeded stress across runs and size classes: sizes of both (and above the runs'),
    // alignments 1-32 (above two words: the size classes), realloc between them and zeroed
    // blocks, contents checked; `usage()` adds up at every step (debug builds also check
    // the runs' invariants at every call)
    let seed = 0x5eed_0002_u64;
    let mut rng = Rng(seed);
    let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
    let mut moved = 0;
    // (`scripts/miri.sh`: 300 operations instead of 6,000, the same mix and checks: each
    // operation writes and checks up to 6 KiB and walks the heap's usage under Miri)
    let ops = if cfg!(miri) { 300 } else { 6_000 };
    for op in 0..ops {
        let r = rng.next();
        if live.len() < 40 && r % 3 != 0 {
            let size = match (r >> 8) % 8 {
                0..=2 => 1 + (rng.next() % 128) as usize,
                3..=6 => 129 + (rng.next() % 2000) as usize,
                _ => 2000 + (rng.next() % 4300) as usize,
            };
            let l = layout(size, 1 << ((r >> 16) % 6));
            let zeroed = (r >> 24) % 4 == 0;
            // SAFETY: a non-zero layout.
            let p = unsafe {
                if zeroed {
                    HEAP.alloc_zeroed(l)
                } else {
                    HEAP.alloc(l)
                }
            };
            if p.is_null() {
                continue; // full for now: frees come
            }
            assert_eq!(
                p as usize % l.align(),
                0,
                "seed {seed:#x}, op {op}: misaligned"
            );
            if zeroed {
                // SAFETY: a live block of `size` bytes.
                assert!(
                    (0..size).all(|i| unsafe { *p.add(i) } == 0),
                    "seed {seed:#x}, op {op}: alloc_zeroed({size}) not zero"
                );
            }
            let tag = op as u8;
            fill(p, size, tag);
            live.push((p, l, tag));
        } else if !live.is_empty() && r % 5 == 0 {
            let i = (rng.next() as usize) % live.len();
            let (p, l, tag) = live[i];
            let new_size = match rng.next() % 3 {
                0 => 1 + (rng.next() % 128) as usize,
                1 => 129 + (rng.next() % 2000) as usize,
                _ => l.size() / 2 + 1,
            };
            // SAFETY: a live block of HEAP with its layout; a non-zero new size.
            let q = unsafe { HEAP.realloc(p, l, new_size) };
            if q.is_null() {
                assert!(
                    check(p, l.size(), tag),
                    "seed {seed:#x}, op {op}: failed realloc"
                );
                continue;
            }
            moved += usize::from(q != p);
            assert!(
                check(q, l.size().min(new_size), tag),
                "seed {seed:#x}, op {op}: realloc lost the contents"
            );
            fill(q, new_size, tag);
            live[i] = (q, layout(new_size, l.align()), tag);
        } else if !live.is_empty() {
            let (p, l, tag) = live.swap_remove((rng.next() as usize) % live.len());
            assert!(
                check(p, l.size(), tag),
                "seed {seed:#x}, op {op}: block corrupted"
            );
            // SAFETY: a live block of HEAP.
            unsafe { HEAP.dealloc(p, l) };
        }
        let u = HEAP.usage();
        assert_eq!(
            u.live + u.free_in_pages + u.headers + u.unused,
            SIZE,
            "seed {seed:#x}, op {op}: {u:?}"
        );
    }
    eprintln!(
        "runs stress: {moved} reallocs moved, {} live at the end",
        live.len()
    );
    for (p, l, tag) in live.drain(..) {
        assert!(
            check(p, l.size(), tag),
            "seed {seed:#x}: block corrupted at the end"
        );
        // SAFETY: a live block of HEAP.
        unsafe { HEAP.dealloc(p, l) };
    }
    assert_eq!(HEAP.used(), 0);
    let again = fill_up(16);
    assert!(
        again.len() >= reached,
        "seed {seed:#x}: after the stress, {} 16-byte blocks, {reached} before",
        again.len()
    );
    free_all(again);
}

/// The default build's cheap checks on chunks of runs: a double free and a pointer that
/// cannot be a chunk (misaligned, or a header word whose size leaves the run) are reported
/// through the error hook and ignored; the heap goes on as if they never happened.
fn run_misuse() {
    use shardalloc::secure::{set_error_handler, ErrorKind};
    use std::sync::atomic::{AtomicUsize, Ordering};
    static DOUBLE: AtomicUsize = AtomicUsize::new(0);
    static INVALID: AtomicUsize = AtomicUsize::new(0);
    fn hook(kind: ErrorKind, _addr: usize, _size: Option<usize>) {
        match kind {
            ErrorKind::DoubleFree => DOUBLE.fetch_add(1, Ordering::Relaxed),
            ErrorKind::InvalidFree => INVALID.fetch_add(1, Ordering::Relaxed),
            _ => panic!("unexpected report {kind:?}"),
        };
    }
    set_error_handler(Some(hook));
    let (used, free) = (HEAP.used(), HEAP.free());
    let l = layout(300, 8);
    // SAFETY: non-zero layouts; the misuses below are the ones the checks promise to catch
    // (the hook reports them and the frees are ignored); every real block is freed once.
    unsafe {
        let (a, b, c, x) = (HEAP.alloc(l), HEAP.alloc(l), HEAP.alloc(l), HEAP.alloc(l));
        assert!(!a.is_null() && !b.is_null() && !c.is_null() && !x.is_null());
        fill(a, 300, 1);
        fill(x, 300, 4);
        HEAP.dealloc(b, l);
        HEAP.dealloc(b, l); // double free
        assert_eq!(
            DOUBLE.load(Ordering::Relaxed),
            1,
            "double free of a chunk not reported"
        );
        HEAP.dealloc(c, l); // coalesced into b's chunk
        HEAP.dealloc(c, l); // double free of a chunk that no longer starts a free chunk
        assert_eq!(
            DOUBLE.load(Ordering::Relaxed),
            2,
            "double free after coalescing not reported"
        );
        ptr::write_bytes(a, 0xff, 64);
        HEAP.dealloc(a.add(32), l); // interior: its "header" is 0xff.. (a size past the run)
        HEAP.dealloc(a.add(3), l); // misaligned
        assert_eq!(
            INVALID.load(Ordering::Relaxed),
            2,
            "interior frees of a chunk not reported"
        );
        assert!(check(x, 300, 4), "a neighbour's contents changed");
        // the freed chunks come back once each, not twice
        let (d, e, f) = (HEAP.alloc(l), HEAP.alloc(l), HEAP.alloc(l));
        assert!(!d.is_null() && !e.is_null() && !f.is_null());
        assert!(d != e && e != f && d != f);
        for p in [a, x, d, e, f] {
            HEAP.dealloc(p, l);
        }
    }
    set_error_handler(None);
    assert_eq!(
        (HEAP.used(), HEAP.free()),
        (used, free),
        "the misuses changed the heap's counts"
    );
    // and a fill reaches as far as before
    let again = fill_up(16);
    let reached = again.len();
    free_all(again);
    assert!(
        reached * 16 + 4096 > free,
        "after the misuses a fill reached {reached} blocks of 16 bytes only"
    );
}
