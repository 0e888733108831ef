//! The fuzz targets of shardalloc (`fuzz_targets/`), over its hosted API
//! (`shardalloc::{alloc, free, realloc, usable_size, Heap}`):
//!
//! - [`ops`]: sequences of operations on 1–3 threads against a shadow model of the live
//!   blocks (contents, alignment, usable size, zeroing), with blocks passed between threads
//!   and first-class heaps shared between them or private to one;
//! - [`misuse`]: double, interior and foreign frees and heap overflows that the build
//!   must report (exactly once each), never crash on; correct operations in between must
//!   report nothing.
//!
//! The input is read as a byte program ([`Input`]); every decision comes from it, so a
//! crash input replays exactly (up to thread scheduling in `ops`).

/// A cursor over the fuzz input; reads 0 once the input is used up.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    /// Reads `data` from its start.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }
    /// Whether every byte was read.
    pub fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
    /// The next byte (0 past the end).
    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from(self.byte()) | (u16::from(self.byte()) << 8)
    }
    /// A request size: mostly small, some medium, few large and huge ones.
    pub fn size(&mut self) -> usize {
        let class = self.byte();
        let x = self.u16() as usize;
        match class % 16 {
            0..=9 => x % 1100,                    // small, around the direct table's end
            10..=12 => x % 20_000,                // small pages' largest classes
            13 | 14 => x * 3 % 200_000,           // medium
            _ if class & 0x30 == 0x30 => 2_000_000 + x * 50, // large and huge: 2–5.3 MiB
            _ => 130_000 + x * 16,                // large: 130 KiB – 1.2 MiB
        }
    }
    /// A power-of-two alignment: mostly up to 256, sometimes up to 1 MiB.
    pub fn align(&mut self) -> usize {
        let b = self.byte();
        if b & 0x80 != 0 {
            1 << (b as usize % 21)
        } else {
            1 << (b as usize % 9)
        }
    }
}

/// The byte at `i` of a block filled with `seed`.
#[inline]
fn pattern(seed: u8, i: usize) -> u8 {
    (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 8) as u8)
}

/// The 256 bytes of `seed`'s pattern at `256 * k ..` (the pattern repeats with period 256
/// but for the `k` mixed in): filled and compared a chunk at a time, so that the fuzzer's
/// time goes to the allocator rather than to byte loops.
fn chunk(seed: u8, k: usize) -> [u8; 256] {
    let mut c = [0u8; 256];
    for (j, b) in c.iter_mut().enumerate() {
        *b = pattern(seed, (k << 8) | j);
    }
    c
}

/// Calls `f(i, n, expected)` for the pieces `i .. i + n` of `r`, each within one chunk.
fn pieces(seed: u8, r: core::ops::Range<usize>, mut f: impl FnMut(usize, &[u8])) {
    let mut i = r.start;
    let mut cached: Option<(usize, [u8; 256])> = None;
    while i < r.end {
        let k = i >> 8;
        let j = i & 255;
        let n = (256 - j).min(r.end - i);
        let c = match cached {
            Some((ck, c)) if ck == k => c,
            _ => {
                let c = chunk(seed, k);
                cached = Some((k, c));
                c
            }
        };
        f(i, &c[j..j + n]);
        i += n;
    }
}

/// The parts of a block of `size` bytes that the model fills and checks: all of a small
/// block, the first and last 4 KiB of a larger one.
fn ranges(size: usize) -> [core::ops::Range<usize>; 2] {
    if size <= 16 * 1024 {
        [0..size, 0..0]
    } else {
        [0..4096, size - 4096..size]
    }
}

fn fill(p: *mut u8, size: usize, seed: u8) {
    // SAFETY: callers pass live blocks of at least `size` bytes that they own.
    let s = unsafe { std::slice::from_raw_parts_mut(p, size) };
    for r in ranges(size) {
        pieces(seed, r, |i, want| s[i..i + want.len()].copy_from_slice(want));
    }
}

fn compare(s: &[u8], seed: u8, r: core::ops::Range<usize>, p: *const u8, what: &str) {
    pieces(seed, r, |i, want| {
        if &s[i..i + want.len()] != want {
            let at = (0..want.len()).find(|&j| s[i + j] != want[j]).unwrap() + i;
            panic!("{what}: block {p:p} changed at byte {at}");
        }
    });
}

/// Checks what the model filled of a block of `size` bytes that is now at `p` and holds
/// its first `keep` bytes (after a realloc).
fn verify_prefix(p: *const u8, size: usize, keep: usize, seed: u8, what: &str) {
    // SAFETY: callers pass live blocks of at least `keep` bytes.
    let s = unsafe { std::slice::from_raw_parts(p, keep) };
    for r in ranges(size) {
        compare(s, seed, r.start.min(keep)..r.end.min(keep), p, what);
    }
}

/// Checks the first `size` bytes of `p` against `seed`'s pattern (see [`ranges`]).
fn verify(p: *const u8, size: usize, seed: u8, what: &str) {
    verify_prefix(p, size, size, seed, what);
}

/// The number of reports the checking build has made (debug mode's counter).
#[cfg(feature = "debug-mode")]
pub fn reports() -> usize {
    shardalloc::debug_mode::report_count()
}

/// The number of reports the secure build has made (the core's error counter).
#[cfg(all(feature = "secure", not(feature = "debug-mode")))]
pub fn reports() -> usize {
    shardalloc::secure::error_count()
}

/// Without a checking build there is nothing that reports.
#[cfg(not(any(feature = "debug-mode", feature = "secure")))]
pub fn reports() -> usize {
    0
}

/// Whether `usable_size` is the requested size (debug mode) rather than at least it.
const USABLE_IS_REQUESTED: bool = cfg!(feature = "debug-mode");

fn check_usable(p: *mut u8, size: usize) {
    // SAFETY: callers pass live blocks.
    let usable = unsafe { shardalloc::usable_size(p) };
    if USABLE_IS_REQUESTED {
        assert_eq!(usable, size, "usable size of {p:p}");
    } else {
        assert!(usable >= size, "usable size {usable} of {p:p} below its request {size}");
    }
}

pub mod ops {
    //! Operations on several threads against a shadow model.
    use super::*;
    use std::sync::Mutex;

    /// A live block as the model knows it.
    #[derive(Clone, Copy)]
    struct Live {
        p: usize,
        size: usize,
        align: usize,
        seed: u8,
        /// 0: the thread default heap; 1, 2: a shared heap; 3: the thread's private heap
        heap: u8,
        /// From a zeroing allocation, and zeroing reallocs since: a zeroing realloc then
        /// promises zeros past the old size (mimalloc's `mi_rezalloc` rule: only for blocks
        /// allocated zeroed)
        zeroed: bool,
    }

    /// What the threads share: blocks in transit (freed by whichever thread takes them)
    /// and two first-class heaps any of them allocates from.
    struct Shared {
        exchange: Mutex<Vec<Live>>,
        heaps: [shardalloc::Heap; 2],
    }

    const MAX_LIVE: usize = 200;
    const MAX_BYTES: usize = 48 << 20;

    /// Runs the program `data`: its first byte picks 1–3 threads, and the rest is split
    /// between them.
    pub fn run(data: &[u8]) {
        let Some((&first, rest)) = data.split_first() else {
            return;
        };
        let threads = 1 + first as usize % 3;
        let reports_before = reports();
        let shared = Shared {
            exchange: Mutex::new(Vec::new()),
            heaps: [shardalloc::Heap::new(), shardalloc::Heap::new()],
        };
        let chunk = rest.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            for part in rest.chunks(chunk) {
                let shared = &shared;
                s.spawn(move || thread(part, shared));
            }
        });
        for b in shared.exchange.lock().unwrap().drain(..) {
            release(b);
        }
        let [a, b] = shared.heaps;
        a.destroy(); // (empty by now: destroy and delete of empty heaps)
        b.delete();
        assert_eq!(reports(), reports_before, "correct use made reports");
    }

    fn release(b: Live) {
        verify(b.p as *const u8, b.size, b.seed, "before free");
        // SAFETY: a live block of the model, freed once (it leaves the model).
        unsafe { shardalloc::free(b.p as *mut u8) };
    }

    fn new_block(p: *mut u8, size: usize, align: usize, zero: bool, seed: u8, heap: u8) -> Option<Live> {
        if p.is_null() {
            return None; // out of memory (huge sizes): allowed
        }
        assert_eq!(p as usize % align, 0, "block {p:p} of {size} bytes not aligned to {align}");
        check_usable(p, size);
        if zero {
            // SAFETY: a live block of `size` bytes.
            let s = unsafe { std::slice::from_raw_parts(p, size) };
            for r in ranges(size) {
                assert!(s[r].iter().all(|&b| b == 0), "zeroed block {p:p} of {size} bytes not zero");
            }
        }
        fill(p, size, seed);
        Some(Live { p: p as usize, size, align, seed, heap, zeroed: zero })
    }

    fn thread(data: &[u8], shared: &Shared) {
        let mut input = Input::new(data);
        let mut live: Vec<Live> = Vec::new();
        let mut bytes = 0usize;
        let mut private: Option<shardalloc::Heap> = None;
        let mut seed = 0u8;
        while !input.done() {
            let op = input.byte();
            seed = seed.wrapping_add(1);
            let pick = input.byte() as usize;
            match op % 12 {
                // allocate: default heap, zeroed or not, aligned or not
                0..=3 if live.len() < MAX_LIVE => {
                    let size = input.size();
                    if bytes + size > MAX_BYTES {
                        continue;
                    }
                    let zero = op & 0x10 != 0;
                    let align = if op % 12 == 3 { input.align() } else { 1 };
                    // SAFETY: `align` is a power of two.
                    let p = unsafe { shardalloc::alloc(size, align, zero) };
                    if let Some(b) = new_block(p, size, align, zero, seed, 0) {
                        bytes += size;
                        live.push(b);
                    }
                }
                // realloc (keeps the alignment it had)
                4 | 5 if !live.is_empty() => {
                    let i = pick % live.len();
                    let b = live[i];
                    let size = input.size();
                    if bytes + size > MAX_BYTES {
                        continue;
                    }
                    verify(b.p as *const u8, b.size, b.seed, "before realloc");
                    let zero = op & 0x10 != 0 && b.heap == 0;
                    // SAFETY: a live block of the model with its alignment; on success the
                    // old pointer leaves the model.
                    let q = unsafe {
                        match b.heap {
                            0 => shardalloc::realloc(b.p as *mut u8, size, b.align, zero),
                            1 | 2 => shared.heaps[b.heap as usize - 1].realloc(b.p as *mut u8, size, b.align),
                            _ => private.as_ref().unwrap().realloc(b.p as *mut u8, size, b.align),
                        }
                    };
                    if q.is_null() {
                        continue; // out of memory: the old block stays
                    }
                    assert_eq!(q as usize % b.align, 0, "realloc lost the alignment");
                    check_usable(q, size);
                    verify_prefix(q, b.size, b.size.min(size), b.seed, "after realloc");
                    if zero && b.zeroed && size > b.size {
                        // SAFETY: `q` holds `size` bytes.
                        let s = unsafe { std::slice::from_raw_parts(q.add(b.size), size - b.size) };
                        let n = s.len().min(4096);
                        assert!(s[..n].iter().chain(&s[s.len() - n..]).all(|&x| x == 0), "rezalloc tail not zero");
                    }
                    fill(q, size, seed);
                    bytes = bytes + size - b.size;
                    live[i] = Live { p: q as usize, size, seed, zeroed: zero && b.zeroed, ..b };
                }
                // free
                6 | 7 if !live.is_empty() => {
                    let b = live.swap_remove(pick % live.len());
                    bytes -= b.size;
                    release(b);
                }
                // hand a block of the default or a shared heap to another thread
                8 if !live.is_empty() => {
                    let i = pick % live.len();
                    if live[i].heap < 3 {
                        let b = live.swap_remove(i);
                        bytes -= b.size;
                        shared.exchange.lock().unwrap().push(b);
                    }
                }
                // free a block another thread handed over (a remote free, mostly)
                9 => {
                    let b = {
                        let mut x = shared.exchange.lock().unwrap();
                        if x.is_empty() {
                            continue;
                        }
                        let n = x.len();
                        x.swap_remove(pick % n)
                    };
                    release(b);
                }
                // allocate from a first-class heap: shared, or the thread's own
                10 if live.len() < MAX_LIVE => {
                    let size = input.size() % 300_000;
                    let align = if op & 0x20 != 0 { input.align().min(4096) } else { 8 };
                    let zero = op & 0x10 != 0;
                    let which = 1 + (pick % 3) as u8;
                    let heap = match which {
                        1 | 2 => &shared.heaps[which as usize - 1],
                        _ => private.get_or_insert_with(shardalloc::Heap::new),
                    };
                    let p = if zero { heap.alloc_zeroed(size, align) } else { heap.alloc(size, align) };
                    if let Some(b) = new_block(p, size, align, zero, seed, which) {
                        assert!(heap.contains(p), "heap does not contain its block");
                        bytes += size;
                        live.push(b);
                    }
                }
                // the private heap goes: destroyed (its blocks freed with it) or deleted
                // (its blocks stay valid, moved to the default heap)
                11 => {
                    if let Some(h) = private.take() {
                        if op & 0x10 != 0 {
                            live.retain(|b| {
                                if b.heap == 3 {
                                    verify(b.p as *const u8, b.size, b.seed, "before destroy");
                                    bytes -= b.size;
                                }
                                b.heap != 3
                            });
                            h.destroy();
                        } else {
                            h.delete();
                            for b in live.iter_mut().filter(|b| b.heap == 3) {
                                b.heap = 0;
                            }
                        }
                    }
                }
                _ => {
                    if let Some(b) = live.get(pick % live.len().max(1)) {
                        verify(b.p as *const u8, b.size, b.seed, "check");
                        check_usable(b.p as *mut u8, b.size);
                    }
                }
            }
        }
        for b in live.drain(..) {
            release(b);
        }
        if let Some(h) = private {
            h.destroy();
        }
    }
}

pub mod misuse {
    //! Misuse that must be reported, once each, never crash; correct use in between must
    //! report nothing.
    use super::*;

    #[cfg(not(any(feature = "debug-mode", feature = "secure")))]
    compile_error!(
        "the misuse target needs a build that checks: run it with `--features debug-mode` \
         (scripts/fuzz.sh does) or `--features secure`"
    );

    struct Live {
        p: *mut u8,
        size: usize,
        seed: u8,
    }

    /// Runs `f`, which commits one misuse; fails unless exactly one report came of it.
    fn must_report(what: &str, f: impl FnOnce()) {
        let before = reports();
        f();
        let n = reports() - before;
        assert_eq!(n, 1, "{what}: {n} reports, want 1");
    }

    /// Runs `f`, which is correct use; fails if it made a report.
    fn quiet(what: &str, f: impl FnOnce()) {
        let before = reports();
        f();
        assert_eq!(reports(), before, "{what}: a report of correct use");
    }

    fn free_ok(b: Live) {
        verify(b.p, b.size, b.seed, "before free");
        // SAFETY: a live block of ours, freed once.
        quiet("free", || unsafe { shardalloc::free(b.p) });
    }

    /// Runs the program `data` on this thread (and a helper thread for remote double frees).
    pub fn run(data: &[u8]) {
        // reports are counted, not printed (thousands a second)
        #[cfg(feature = "debug-mode")]
        shardalloc::debug_mode::set_report_hook(Some(|_| {}));
        #[cfg(feature = "secure")]
        {
            // report and go on (secure mode aborts by default)
            shardalloc::secure::set_abort_on_error(false);
            shardalloc::secure::set_error_handler(Some(|_, _, _| {}));
        }
        let mut input = Input::new(data);
        let mut live: Vec<Live> = Vec::new();
        let mut seed = 0u8;
        while !input.done() {
            let op = input.byte();
            let pick = input.byte() as usize;
            seed = seed.wrapping_add(1);
            match op % 10 {
                0..=2 if live.len() < 100 => {
                    let size = input.size() % 70_000;
                    let zero = op & 0x10 != 0;
                    // SAFETY: alignment 1 (this target makes no aligned blocks, so that every
                    // pointer inside a block is an interior pointer).
                    let p = unsafe { shardalloc::alloc(size, 1, zero) };
                    if p.is_null() {
                        continue;
                    }
                    check_usable(p, size);
                    fill(p, size, seed);
                    live.push(Live { p, size, seed });
                }
                3 if !live.is_empty() => {
                    let i = pick % live.len();
                    let size = input.size() % 70_000;
                    verify(live[i].p, live[i].size, live[i].seed, "before realloc");
                    // SAFETY: a live block of ours.
                    let q = unsafe { shardalloc::realloc(live[i].p, size, 1, false) };
                    if q.is_null() {
                        continue;
                    }
                    verify_prefix(q, live[i].size, size.min(live[i].size), live[i].seed, "after realloc");
                    fill(q, size, seed);
                    live[i] = Live { p: q, size, seed };
                }
                4 if !live.is_empty() => free_ok(live.swap_remove(pick % live.len())),
                // double free, back to back (nothing allocated in between)
                5 if !live.is_empty() => {
                    let b = live.swap_remove(pick % live.len());
                    let p = b.p;
                    free_ok(b);
                    // SAFETY: the misuse under test; the checking build reports it and
                    // leaves the allocator as it was.
                    must_report("double free", || unsafe { shardalloc::free(p) });
                }
                // interior free: the block stays live
                6 if !live.is_empty() => {
                    let b = &live[pick % live.len()];
                    if b.size < 2 {
                        continue;
                    }
                    let k = 1 + input.u16() as usize % (b.size - 1);
                    // SAFETY: the misuse under test.
                    must_report("interior free", || unsafe { shardalloc::free(b.p.add(k)) });
                    verify(b.p, b.size, b.seed, "after an interior free");
                }
                // heap overflow of 1–8 bytes (within the block's padding), then its free
                // (debug mode's canary; secure mode does not see a write within a block)
                7 if cfg!(feature = "debug-mode") && !live.is_empty() => {
                    let b = live.swap_remove(pick % live.len());
                    let n = 1 + input.byte() as usize % 8;
                    let v = input.byte();
                    verify(b.p, b.size, b.seed, "before an overflow");
                    // SAFETY: the misuse under test: the bytes past the requested end are the
                    // block's own (at least its 8-byte padding follows the request).
                    unsafe {
                        for j in 0..n {
                            // never the byte that is there (the padding's fill, or a byte of
                            // its canary, which is the block's address mixed: a write of it
                            // changes nothing, which no check can see; one overflow in 256
                            // of a byte's wrote the canary's own byte, fuzz/regressions/
                            // debug-mode/misuse-overflow-same-byte)
                            let q = b.p.add(b.size + j);
                            *q = if *q == v { !v } else { v };
                        }
                    }
                    must_report("overflow", || unsafe { shardalloc::free(b.p) });
                }
                // foreign frees: the stack, the C heap, a segment's header
                8 => {
                    let x = [0u8; 64];
                    let c = unsafe { libc::malloc(48) } as *mut u8;
                    let p = match pick % 3 {
                        0 => x.as_ptr().wrapping_add(pick % 64) as *mut u8,
                        1 => c,
                        _ => match live.first() {
                            Some(b) => {
                                let seg = b.p as usize & !shardalloc::size_class::SEGMENT_MASK;
                                (seg + 8 * (pick % 64)) as *mut u8
                            }
                            None => c,
                        },
                    };
                    // SAFETY: the misuse under test.
                    must_report("foreign free", || unsafe { shardalloc::free(p) });
                    // SAFETY: `c` came from the C heap and is still its.
                    unsafe { libc::free(c.cast()) };
                }
                // double free from another thread (remote frees)
                9 if !live.is_empty() => {
                    let b = live.swap_remove(pick % live.len());
                    verify(b.p, b.size, b.seed, "before a remote free");
                    let p = b.p as usize;
                    let before = reports();
                    std::thread::spawn(move || {
                        // SAFETY: the first free is correct, the second the misuse under
                        // test (nothing is allocated between them).
                        unsafe {
                            shardalloc::free(p as *mut u8);
                            shardalloc::free(p as *mut u8);
                        }
                    })
                    .join()
                    .unwrap();
                    assert_eq!(reports() - before, 1, "remote double free: want 1 report");
                }
                _ => {}
            }
        }
        for b in live.drain(..) {
            free_ok(b);
        }
    }
}
