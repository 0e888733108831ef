//! Runs: blocks of any size packed into runs of slices (the embedded heap's mixed sizes).
//!
//! The size classes serve small blocks (the fast paths, one page per class). A heap of
//! 16-64 KiB that also holds blocks of a few hundred bytes to a few KiB loses much of its
//! memory to them when each size class of those holds a page of its own: the free blocks
//! of each class's partly used page, the ends of pages that hold one or two blocks, and
//! the rounding to the class (together about 14 % of a 64 KiB heap at the first null of
//! the bench's mixed fill). Blocks of [`RUN_MIN`] bytes and more are therefore cut to
//! their size (rounded to [`GRAIN`]) from *runs*: a run is the one block of a page of
//! whole slices (taken from the size classes of 1-6 KiB, so the core hands it out, counts
//! it and takes it back as any block), split into chunks with boundary tags (a
//! word before each chunk: its size and whether it and the chunk before it are free; a
//! free chunk repeats its size in its last word), coalesced on free. A run whose chunks
//! are all free again goes back to the core at once: its slices serve any size class.
//!
//! Free chunks of all runs are in one doubly linked list ([`Runs`]); allocation takes the
//! best fit (the smallest chunk that holds the request: the list is short, a few chunks
//! per run, and best fit leaves the large chunks for large requests). A request that finds
//! no chunk takes a new run of [`RUN_SLICES`] slices, or of the fewest slices that hold
//! it when memory is short. When that fails too, `embedded::Heap` falls back to the size
//! classes (which may still have a block of a larger class), and a small request that its
//! size class cannot serve any more is tried here before null.
//!
//! Why not `rlsf` or `talc` inside a run: both manage memory they are given for good; a
//! run must go back to the core when it empties (else the slices it holds are lost to the
//! size classes), and TLSF's per-heap tables (hundreds of bytes) exceed what a heap of
//! 16 KiB can spend. A best fit over the few free chunks of a few runs needs neither.
//!
//! A run's page carries [`FLAG_RUN`] in its flags (never set on another page), so that
//! `free` tells a chunk from a block with the page lookup it does anyway.

use core::ptr;

use crate::heap::RawHeap;
use crate::page::{Page, FLAG_RUN};
use crate::secure::ErrorKind;
use crate::segment::ptr_segment;
use crate::size_class::{SMALL_PAGE_SIZE, SMALL_SIZE_MAX, WORD};

/// Chunk granularity and the alignment of every chunk's payload: two words (8 bytes on
/// 32-bit targets, 16 on 64-bit).
pub(crate) const GRAIN: usize = 2 * WORD;
/// The header word before each chunk's payload.
const HDR: usize = WORD;
/// The smallest chunk: header, two links and a footer when free.
const MIN_CHUNK: usize = 4 * WORD;
/// Requests of at least this many bytes (and at most [`RUN_MAX`]) are served from runs:
/// those above the sizes of the inline fast path (129 bytes), which keep their classes.
pub(crate) const RUN_MIN: usize = SMALL_SIZE_MAX + 1;
/// Slices of a run when memory allows (fewer when it is short): 6 KiB, the longest that
/// the size classes give as one block (host replica of the bench's mixed fill, 64 KiB
/// heap, 64 seeds: runs of 6, 8, 10, 12 slices reach 78.2, 79.2, 79.9, 80.0 % of the heap).
const RUN_SLICES: usize = 12;
/// The largest run (slices): a request whose chunk needs more is left to the size classes.
const RUN_SLICES_MAX: usize = 12;
/// The largest request served from runs.
pub(crate) const RUN_MAX: usize = RUN_SLICES_MAX * SMALL_PAGE_SIZE - GRAIN - HDR;

/// Free chunks that an allocation looks at, at most, before it takes a new run (the list
/// holds the most recently freed first): a bound on the worst call that does not depend on
/// the chunks free. Out of memory, every free chunk is looked at.
const FIT_LOOK: usize = 32;

/// Chunk header bits (the size is a multiple of [`GRAIN`], so its low bits are free).
const FREE: usize = 1;
const PREV_FREE: usize = 2;
const SIZE_MASK: usize = !(GRAIN - 1);

/// A free chunk: its header word, then the links of the free list (its footer, the size
/// again, is its last word).
#[repr(C)]
struct FreeChunk {
    header: usize,
    next: *mut FreeChunk,
    prev: *mut FreeChunk,
}

/// The runs' free chunks (one list for all runs of the heap).
///
/// Invariants (checked by [`Runs::check`] in debug builds): every chunk of the list has
/// `FREE` set, a footer equal to its size, and lies in a run (a page with `FLAG_RUN`);
/// no two free chunks are adjacent (coalesced); a chunk's `PREV_FREE` bit says whether
/// the chunk before it is free; a run's first word counts the bytes of its chunks in use.
pub(crate) struct Runs {
    free: *mut FreeChunk,
}

/// A run's layout: its first word counts its chunk bytes in use; chunks start one word
/// in (so that payloads, one header word further, are `GRAIN`-aligned: a run starts at a
/// 16-byte boundary); the last word is an end marker (a chunk header of size 0, in use).
const RUN_HEAD: usize = WORD;

impl Runs {
    pub(crate) const fn new() -> Runs {
        Runs {
            free: ptr::null_mut(),
        }
    }

    /// The chunk bytes a request of `size` takes.
    #[inline]
    fn chunk_size(size: usize) -> usize {
        ((size + HDR + GRAIN - 1) & SIZE_MASK).max(MIN_CHUNK)
    }

    /// A block of `size` bytes (`GRAIN`-aligned) from a free chunk; with `grow`, a new run
    /// when no chunk holds it. Null when there is no room.
    ///
    /// # Safety
    /// `heap` is the embedded heap, initialised and owned by the caller (inside its
    /// critical section); `size <= RUN_MAX`.
    #[inline(never)]
    pub(crate) unsafe fn alloc(&mut self, heap: *mut RawHeap, size: usize, grow: bool) -> *mut u8 {
        debug_assert!(size <= RUN_MAX);
        let need = Self::chunk_size(size);
        // (with `grow`, a bounded look: the worst call does not grow with the chunks free;
        // without, memory is out and every free chunk is worth a look)
        let mut c = self.best_fit(need, if grow { FIT_LOOK } else { usize::MAX });
        if c.is_null() && grow {
            // SAFETY: forwarding the caller's heap.
            c = unsafe { self.new_run(heap, need) };
        }
        if c.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: `c` is a free chunk of a live run of ours (the list's invariant), at least
        // `need` bytes long.
        unsafe {
            self.unlink(c);
            let size = (*c).header & SIZE_MASK;
            let flags = (*c).header & PREV_FREE; // 0: its neighbours are not free (coalesced)
            let rest = size - need;
            let used = if rest >= MIN_CHUNK {
                // split: the rest stays free (the chunk after it still has PREV_FREE)
                let r = (c as *mut u8).add(need) as *mut FreeChunk;
                set_free(r, rest, 0);
                self.push(r);
                need
            } else {
                // whole: the chunk after it is no longer preceded by a free one
                let n = (c as *mut u8).add(size) as *mut usize;
                *n &= !PREV_FREE;
                size
            };
            (*c).header = used | flags;
            *run_live(c as *mut u8) += used;
            #[cfg(debug_assertions)]
            self.check();
            (c as *mut u8).add(HDR)
        }
    }

    /// The smallest free chunk of at least `need` bytes among the first `look` of the list
    /// (the first of exactly `need`).
    fn best_fit(&self, need: usize, look: usize) -> *mut FreeChunk {
        let mut best: *mut FreeChunk = ptr::null_mut();
        let mut best_size = usize::MAX;
        let mut c = self.free;
        let mut left = look;
        while !c.is_null() && left > 0 {
            left -= 1;
            // SAFETY: chunks of the list are free chunks of live runs (the invariant).
            let size = unsafe { (*c).header } & SIZE_MASK;
            if size >= need && size < best_size {
                best = c;
                best_size = size;
                if size == need {
                    break;
                }
            }
            // SAFETY: as above.
            c = unsafe { (*c).next };
        }
        best
    }

    /// Takes a run from the core for a chunk of `need` bytes: [`RUN_SLICES`] slices, or
    /// the fewest that hold it when that fails. Returns its one free chunk (in the list).
    ///
    /// # Safety
    /// As [`Runs::alloc`].
    unsafe fn new_run(&mut self, heap: *mut RawHeap, need: usize) -> *mut FreeChunk {
        let fewest = (need + RUN_HEAD + HDR).div_ceil(SMALL_PAGE_SIZE);
        let mut k = fewest.max(RUN_SLICES);
        loop {
            // SAFETY: forwarding the caller's heap (initialised, ours).
            let c = unsafe { self.take_run(heap, k) };
            if !c.is_null() {
                return c;
            }
            // the next shorter length that the size classes give as one block
            match (fewest..k).rev().find(|&j| run_class(j)) {
                Some(j) => k = j,
                None => return ptr::null_mut(),
            }
        }
    }

    /// A run of `k` slices (when `k` slices are a size class whose page holds exactly one
    /// block), made one free chunk and pushed; null when the core has no room for it.
    ///
    /// # Safety
    /// As [`Runs::alloc`].
    unsafe fn take_run(&mut self, heap: *mut RawHeap, k: usize) -> *mut FreeChunk {
        if !run_class(k) {
            return ptr::null_mut();
        }
        let bytes = k * SMALL_PAGE_SIZE;
        // SAFETY: the caller's heap, initialised and ours.
        let b = unsafe { crate::alloc::malloc(heap, bytes, false) };
        if b.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: `b` is a live block of ours: its segment and page are live.
        unsafe {
            let page = (*ptr_segment(b)).page_of(b);
            // A page of one block of exactly `bytes` (the size classes' own page for it),
            // not a borrowed block of a larger class: that page may hold other blocks.
            if (*page).block_size != bytes || (*page).reserved != 1 || (*page).page_start() != b {
                crate::free::free(b, (*heap).owner);
                return ptr::null_mut();
            }
            (*page).flags |= FLAG_RUN;
            *(b as *mut usize) = 0; // live chunk bytes
            let end = b.add(bytes - HDR) as *mut usize;
            *end = 0; // end marker: size 0, in use
            let c = b.add(RUN_HEAD) as *mut FreeChunk;
            set_free(c, bytes - RUN_HEAD - HDR, 0);
            self.push(c);
            c
        }
    }

    /// Frees the chunk whose payload is `p` (of a run); a run that empties goes back to the
    /// core.
    ///
    /// The default build's cheap checks (as for blocks of the size classes): a chunk that is
    /// already free (a double free) and a pointer whose header word cannot be a chunk's (not
    /// `GRAIN`-aligned, or a size that leaves the run: an interior or foreign pointer into
    /// the run) are reported through [`crate::secure::report`] and the free is ignored, so
    /// that the run's lists are never built from a misuse. An interior pointer whose word
    /// before happens to look like a chunk header is not caught.
    ///
    /// # Safety
    /// `p` lies in a run of this heap (its page has `FLAG_RUN`), given up by the caller;
    /// `heap` as in [`Runs::alloc`].
    #[inline(never)]
    pub(crate) unsafe fn free(&mut self, heap: *mut RawHeap, p: *mut u8) {
        // SAFETY: `p` lies in a live run of ours (caller), whose first word and chunk area
        // bound the checks below; once they pass, `p` is a chunk in use: its header, its
        // neighbours' headers and the run's first word are in the run.
        unsafe {
            let mut c = p.sub(HDR) as *mut FreeChunk;
            let page = (*ptr_segment(p)).page_of(p);
            let run = (*page).page_start() as usize;
            let first = run + RUN_HEAD;
            let end = run + (*page).block_size - HDR;
            if (p as usize) % GRAIN != 0 || (c as usize) < first {
                return crate::secure::report(ErrorKind::InvalidFree, p as usize, None);
            }
            let h = (*c).header;
            let mut size = h & SIZE_MASK;
            if size < MIN_CHUNK || size > end - c as usize {
                return crate::secure::report(ErrorKind::InvalidFree, p as usize, None);
            }
            if h & FREE != 0 {
                return crate::secure::report(ErrorKind::DoubleFree, p as usize, None);
            }
            *(run as *mut usize) -= size;
            let n = (c as *mut u8).add(size) as *mut FreeChunk;
            if (*n).header & FREE != 0 {
                self.unlink(n);
                size += (*n).header & SIZE_MASK;
            }
            if h & PREV_FREE != 0 {
                // (its own header keeps saying "free", so that a second free of `p` is
                // seen until the memory is handed out again)
                (*c).header = h | FREE;
                let psize = *((c as *mut u8).sub(WORD) as *const usize);
                c = (c as *mut u8).sub(psize) as *mut FreeChunk;
                self.unlink(c);
                size += psize;
            }
            if size == (*page).block_size - RUN_HEAD - HDR {
                // the whole run is free: back to the core
                debug_assert_eq!(*(run as *const usize), 0);
                (*page).flags &= !FLAG_RUN;
                crate::free::free(run as *mut u8, (*heap).owner);
                return;
            }
            set_free(c, size, 0);
            self.push(c);
        }
        #[cfg(debug_assertions)]
        self.check();
    }

    /// Usable bytes of the chunk whose payload is `p`.
    ///
    /// # Safety
    /// `p` is a live chunk of a run.
    pub(crate) unsafe fn usable_size(p: *const u8) -> usize {
        // SAFETY: its header word is in the live run (caller).
        (unsafe { *(p.sub(HDR) as *const usize) } & SIZE_MASK) - HDR
    }

    /// The bytes of a run's chunks in use, and of its free ones (`page` is a run's page).
    ///
    /// # Safety
    /// `page` is a live page with `FLAG_RUN`.
    pub(crate) unsafe fn run_usage(page: *const Page) -> (usize, usize) {
        // SAFETY: the run is the page's one block, live (caller); its first word counts.
        unsafe {
            let b = (*page).page_start();
            let live = *(b as *const usize);
            (live, (*page).block_size - RUN_HEAD - HDR - live)
        }
    }

    fn push(&mut self, c: *mut FreeChunk) {
        // SAFETY: `c` is a free chunk of a live run of ours (callers), and so is the head.
        unsafe {
            (*c).prev = ptr::null_mut();
            (*c).next = self.free;
            if !self.free.is_null() {
                (*self.free).prev = c;
            }
        }
        self.free = c;
    }

    fn unlink(&mut self, c: *mut FreeChunk) {
        // SAFETY: `c` is in the list (callers), so are its neighbours.
        unsafe {
            if (*c).prev.is_null() {
                self.free = (*c).next;
            } else {
                (*(*c).prev).next = (*c).next;
            }
            if !(*c).next.is_null() {
                (*(*c).next).prev = (*c).prev;
            }
        }
    }

    /// Debug builds: the invariants of [`Runs`] over the free list.
    #[cfg(debug_assertions)]
    pub(crate) fn check(&self) {
        let mut c = self.free;
        while !c.is_null() {
            // SAFETY: (debug check) chunks of the list are free chunks of live runs.
            unsafe {
                let h = (*c).header;
                let size = h & SIZE_MASK;
                assert!(
                    h & FREE != 0 && size >= MIN_CHUNK,
                    "runs: list chunk not free"
                );
                assert_eq!(*((c as *mut u8).add(size - WORD) as *const usize), size);
                let n = (c as *mut u8).add(size) as *const usize;
                assert!(*n & FREE == 0 && *n & PREV_FREE != 0, "runs: not coalesced");
                let page = (*ptr_segment(c as *const u8)).page_of(c as *const u8);
                assert!((*page).flags & FLAG_RUN != 0, "runs: chunk outside a run");
                c = (*c).next;
            }
        }
    }
}

/// Whether `k` slices are a size class whose page holds one block: a run's length.
fn run_class(k: usize) -> bool {
    let bytes = k * SMALL_PAGE_SIZE;
    (1..=RUN_SLICES_MAX).contains(&k)
        && crate::size_class::bin_size(crate::size_class::bin(bytes)) == bytes
}

/// The live-bytes count of the run that holds chunk `c`.
///
/// # Safety
/// `c` lies in a live run.
unsafe fn run_live(c: *mut u8) -> *mut usize {
    // SAFETY: `c` lies in a live run (caller): its page's first block is the run.
    unsafe { (*(*ptr_segment(c)).page_of(c)).page_start() as *mut usize }
}

/// Writes a free chunk's header (with `prev_free`), its footer, and tells the chunk after
/// it (a `PREV_FREE` bit).
///
/// # Safety
/// `[c, c + size)` is a chunk of a live run, followed by another chunk's header.
unsafe fn set_free(c: *mut FreeChunk, size: usize, prev_free: usize) {
    // SAFETY: the chunk and the next header lie in the run (caller).
    unsafe {
        (*c).header = size | FREE | prev_free;
        *((c as *mut u8).add(size - WORD) as *mut usize) = size;
        *((c as *mut u8).add(size) as *mut usize) |= PREV_FREE;
    }
}
