//! Microcontrollers: shardalloc as the heap of a firmware, with `embedded-alloc`'s
//! interface (feature `embedded`, which selects the small geometry: 8 KiB segments of
//! 512-byte slices, of which pages of every size are runs).
//!
//! ```ignore
//! #[global_allocator]
//! static HEAP: shardalloc::embedded::Heap = shardalloc::embedded::Heap::empty();
//!
//! // once, at start-up, before the first allocation:
//! unsafe { HEAP.init(core::ptr::addr_of_mut!(HEAP_MEM) as usize, HEAP_SIZE) }
//! ```
//!
//! - One heap, behind the `critical-section` crate: safe against interrupt handlers (and
//!   other cores) with whichever implementation the board provides (`cortex-m`'s
//!   `critical-section-single-core`, a HAL's). On targets without compare-and-swap
//!   (Cortex-M0) the atomics go through the same critical sections, with no flag to set.
//! - Allocation failure returns null, so `handle_alloc_error` behaves as usual.
//! - More memory (external RAM) joins through [`Heap::add_region`].
//! - Segments are aligned to the start of the first region given, not to absolute
//!   addresses: no memory is lost to alignment in it (see `segment::ptr_segment`). The
//!   memory a further region loses to alignment is less than one segment (8 KiB).
//!
//! Memory overhead ([`Heap::metadata`] gives the figures of the target): the heap's own
//! metadata (queues, direct table, thread context) lives in the static, outside the
//! regions; in the regions, each 8 KiB segment starts with a header (the metadata of its
//! pages), rounded up to 16 bytes; it holds no entries for the slices it covers whole.
//! Blocks of 129 bytes to 6 KiB come from runs (`embedded_runs.rs`): a word before each,
//! and two per run (a count and an end marker).

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr;

use super::embedded_runs::{Runs, GRAIN, RUN_MAX, RUN_MIN};
use crate::alloc::malloc_small_try;
use crate::domain::Domain;
use crate::free::{free_single_owner, free_single_owner_slow};
use crate::heap::{for_each_page, OwnedHeap, RawHeap};
use crate::page::{Page, FLAG_RUN};
use crate::segment::ptr_segment;
use crate::segment::{adopt_segment_phase, SegmentsTld};
use crate::size_class::{wsize_from_size, MIN_OS_PAGE, SEGMENT_MASK, SMALL_SIZE_MAX, WORD};
use crate::source::RegionSource;
use crate::sync::{AtomicBool, AtomicUsize, Ordering};
use crate::thread::{thread_data_init, ThreadData};

/// Sizes of the heap's metadata, in bytes (see [`Heap::metadata`]).
#[derive(Clone, Copy, Debug)]
pub struct Metadata {
    /// The `Heap` static itself (queues, direct table, thread context, domain).
    pub heap: usize,
    /// The metadata of one page (in its segment's header).
    pub page: usize,
    /// The header of a segment of small pages (16 slices of 512 bytes, no entries for those
    /// it covers), before rounding up to 16 bytes.
    pub small_segment_header: usize,
    /// The header of a segment of medium pages (2 of 4 KiB), before rounding.
    pub medium_segment_header: usize,
    /// The header of a large or huge segment (one page), before rounding.
    pub large_segment_header: usize,
}

/// Where a heap's memory is, in bytes ([`Heap::usage`]): the four parts add up to the
/// memory given to the heap (as usable after alignment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// In live blocks, whole (a request rounded up to its size class; a chunk of a run with
    /// its header word): [`Heap::used`].
    pub live: usize,
    /// In free blocks of pages that are in use (or kept empty in their size class's queue):
    /// room for requests of those size classes (and of smaller ones, when memory runs out);
    /// and in the free chunks of runs.
    pub free_in_pages: usize,
    /// In segment headers (the metadata of the segments' pages), as laid out.
    pub headers: usize,
    /// In no block: slices that no page holds, the ends of pages too short for one more
    /// block, and memory that the regions have not handed out as segments yet.
    pub unused: usize,
}

/// The heap of a firmware. See the module documentation.
pub struct Heap {
    source: RegionSource,
    /// The domain and the one heap, written by `init`.
    state: UnsafeCell<MaybeUninit<State>>,
    /// `state` is written (set once, at the end of `init`).
    ready: AtomicBool,
    /// Bytes given to the heap (all regions).
    size: AtomicUsize,
}

struct State {
    domain: Domain,
    td: ThreadData,
    /// Blocks of [`RUN_MIN`] bytes and more: cut to size from runs of slices.
    runs: Runs,
}

// SAFETY: `state` is written once by `init` (inside a critical section, before `ready` is
// set) and afterwards only used inside critical sections, which serialise every access
// from interrupt handlers and other cores; the source has its own lock.
unsafe impl Sync for Heap {}

impl Heap {
    /// A heap with no memory yet: allocation returns null until [`init`](Heap::init).
    pub const fn empty() -> Heap {
        Heap {
            source: RegionSource::empty(),
            state: UnsafeCell::new(MaybeUninit::uninit()),
            ready: AtomicBool::new(false),
            size: AtomicUsize::new(0),
        }
    }

    /// Gives the heap its memory: `size` bytes from `start`. Call it once, before the
    /// first allocation.
    ///
    /// # Safety
    /// `[start, start + size)` is valid for reads and writes for the rest of the program and
    /// used by nothing else; `init` is called once.
    ///
    /// # Panics
    /// When called a second time (use [`add_region`](Heap::add_region) for more memory).
    pub unsafe fn init(&'static self, start: usize, size: usize) {
        critical_section::with(|_| {
            assert!(
                !self.ready.load(Ordering::Acquire),
                "shardalloc::embedded::Heap::init called twice"
            );
            // Segments are aligned relative to the start of this memory (rounded to 16 bytes,
            // the alignment every block of a multiple of 16 bytes gets).
            let first = start.saturating_add(15) & !15;
            // SAFETY: called once, before any allocation (the contract), so no segment
            // exists yet.
            let phase = unsafe { adopt_segment_phase(first) };
            self.source.set_phase(phase);
            // SAFETY: the range is ours for the rest of the program (the contract).
            let added = unsafe { self.source.add_memory(start as *mut u8, size) };
            let state = self.state.get() as *mut State;
            // SAFETY: `state` is ours alone: not ready yet, and we are in a critical section;
            // `self` is `'static`, so the domain's source and the domain stay put.
            unsafe {
                let source: &'static RegionSource = &self.source;
                ptr::write(ptr::addr_of_mut!((*state).domain), Domain::new(source));
                ptr::write(ptr::addr_of_mut!((*state).runs), Runs::new());
                let domain: &'static Domain = &*ptr::addr_of!((*state).domain);
                thread_data_init(ptr::addr_of_mut!((*state).td), domain);
            }
            self.size.fetch_add(added, Ordering::Relaxed);
            self.ready.store(true, Ordering::Release);
        })
    }

    /// Adds `size` bytes from `start` (external RAM, another bank) to the heap's memory,
    /// and returns how many of them it can use: segments start on the grid of the first
    /// region (every 8 KiB from its start), so the memory before the first grid point in
    /// the range is left out (all of it, for a range that holds none).
    ///
    /// # Safety
    /// As for [`init`](Heap::init), and the range overlaps no memory given before.
    pub unsafe fn add_region(&'static self, start: usize, size: usize) -> usize {
        critical_section::with(|_| {
            let phase = crate::segment::segment_phase();
            let grid = (start.wrapping_sub(phase).wrapping_add(SEGMENT_MASK) & !SEGMENT_MASK)
                .wrapping_add(phase);
            let end = start.saturating_add(size);
            if grid < start || grid >= end {
                return 0;
            }
            // SAFETY: the range is ours for the rest of the program (the contract).
            let added = unsafe { self.source.add_memory(grid as *mut u8, end - grid) };
            if self.ready.load(Ordering::Relaxed) {
                // SAFETY: `state` is written (ready), and the critical section makes it ours.
                unsafe {
                    (*(self.state.get() as *mut State))
                        .td
                        .tld
                        .segments
                        .source_grew()
                };
            }
            self.size.fetch_add(added, Ordering::Relaxed);
            added
        })
    }

    /// The heap, once `init` ran (inside a critical section).
    #[inline(always)]
    fn heap(&self) -> Option<*mut RawHeap> {
        // Relaxed: callers are inside a critical section, and `init` set `ready` inside
        // one: the critical sections order the two (a barrier less on every call).
        if !self.ready.load(Ordering::Relaxed) {
            return None;
        }
        let state = self.state.get() as *mut State;
        // SAFETY: `ready` says `state` is written; only a pointer is made.
        Some(unsafe { ptr::addr_of_mut!((*state).td.heap) })
    }

    /// Bytes in live blocks (whole blocks: a request is rounded up to its size class, or
    /// to a chunk of a run with its header word).
    pub fn used(&self) -> usize {
        critical_section::with(|_| {
            let Some(heap) = self.heap() else {
                return 0;
            };
            let mut used = 0;
            // SAFETY: the heap is initialised, and the critical section makes it ours.
            let owned = unsafe { OwnedHeap::new(heap) };
            for_each_page(owned, |page, _| {
                // SAFETY: a page of our heap's queues, live; every free of this heap is a
                // local free (one owner), so `used` counts its live blocks exactly (a run
                // counts its chunks in use).
                used += unsafe { page_usage(page).0 };
            });
            used
        })
    }

    /// Bytes of the heap's memory (as usable after alignment) that are not in live blocks
    /// (segment headers and partly used pages included: not all of it can be handed out).
    pub fn free(&self) -> usize {
        self.size
            .load(Ordering::Relaxed)
            .saturating_sub(self.used())
    }

    /// Where the heap's memory is (see [`Usage`]): a walk over the heap's pages and
    /// segments inside one critical section (not for a hot path).
    pub fn usage(&self) -> Usage {
        critical_section::with(|_| {
            let Some(heap) = self.heap() else {
                return Usage {
                    unused: self.size.load(Ordering::Relaxed),
                    ..Usage::default()
                };
            };
            let mut u = Usage::default();
            // SAFETY: the heap is initialised, and the critical section makes it ours.
            let owned = unsafe { OwnedHeap::new(heap) };
            for_each_page(owned, |page, _| {
                // SAFETY: a page of our heap's queues, live; every free of this heap is a
                // local free (one owner), so `used` counts its live blocks exactly.
                let (live, free) = unsafe { page_usage(page) };
                u.live += live;
                u.free_in_pages += free;
            });
            let state = self.state.get() as *mut State;
            // SAFETY: `ready` (checked by `heap()`) says `state` is written; the critical
            // section makes the thread context ours, and the walk reads each segment's
            // header (live while it is in the context's list) before going on.
            unsafe {
                SegmentsTld::for_each(ptr::addr_of_mut!((*state).td.tld.segments), |s| {
                    u.headers += (*s).info_size;
                });
            }
            u.unused = self
                .size
                .load(Ordering::Relaxed)
                .saturating_sub(u.live + u.free_in_pages + u.headers);
            u
        })
    }

    /// The sizes of the heap's metadata on this target.
    pub const fn metadata() -> Metadata {
        Metadata {
            heap: core::mem::size_of::<Heap>(),
            page: core::mem::size_of::<crate::page::Page>(),
            small_segment_header: crate::segment::header_size(crate::segment::SegmentKind::Small),
            medium_segment_header: crate::segment::header_size(crate::segment::SegmentKind::Medium),
            large_segment_header: crate::segment::header_size(crate::segment::SegmentKind::Large),
        }
    }

    /// The runs of the heap (once `init` ran; used inside a critical section).
    #[inline(always)]
    fn runs(&self) -> *mut Runs {
        let state = self.state.get() as *mut State;
        // (a pointer only: `state` is written when `heap()` gave a heap)
        // SAFETY: the field's address, no read.
        unsafe { ptr::addr_of_mut!((*state).runs) }
    }

    /// Every allocation but the inline fast path's (inside the caller's critical section,
    /// `heap` from `heap()`): blocks of [`RUN_MIN`]..=[`RUN_MAX`] bytes from runs, else
    /// (and when the runs have no room) from the size classes; when those have no room,
    /// a free chunk of a run that holds the request.
    ///
    /// # Safety
    /// `heap` is the initialised heap, the critical section the caller's.
    #[inline(always)]
    unsafe fn alloc_in(&self, heap: *mut RawHeap, layout: Layout, zero: bool) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // (debug mode pads every block and checks the padding at free: runs do not)
        let runs = !cfg!(feature = "debug-mode") && align <= GRAIN;
        if runs && size >= RUN_MIN && size <= RUN_MAX {
            // SAFETY: the heap is initialised and ours (caller), `size <= RUN_MAX`.
            let p = unsafe { (*self.runs()).alloc(heap, size, true) };
            if !p.is_null() {
                if zero {
                    // SAFETY: a fresh chunk of at least `size` bytes.
                    unsafe { ptr::write_bytes(p, 0, size) };
                }
                return p;
            }
        }
        // SAFETY: the heap is initialised and ours (caller); a `Layout`'s alignment is a
        // power of two.
        let p = unsafe { crate::global::heap_alloc(heap, size, align, zero) };
        if !p.is_null() || !runs {
            return p;
        }
        // SAFETY: as above.
        unsafe { self.alloc_chunk_at_null(heap, size, zero) }
    }

    /// The size classes had no room for `size` bytes (of an alignment up to `GRAIN`): a
    /// free chunk of a run that holds them, else null.
    ///
    /// # Safety
    /// As [`Heap::alloc_in`].
    #[cold]
    #[inline(never)]
    unsafe fn alloc_chunk_at_null(&self, heap: *mut RawHeap, size: usize, zero: bool) -> *mut u8 {
        // (the blocks of a size class are aligned to its size's lowest bit up to 16 bytes,
        // a promise a chunk keeps only up to `GRAIN`)
        if size > RUN_MAX || 1usize << size.trailing_zeros().min(4) > GRAIN {
            return ptr::null_mut();
        }
        // SAFETY: the heap is initialised and ours (caller), `size <= RUN_MAX`.
        let p = unsafe { (*self.runs()).alloc(heap, size, false) };
        if zero && !p.is_null() {
            // SAFETY: a fresh chunk of at least `size` bytes.
            unsafe { ptr::write_bytes(p, 0, size) };
        }
        p
    }

    /// The rest of `alloc` (inside its critical section): every size and alignment.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, layout: Layout) -> *mut u8 {
        match self.heap() {
            // SAFETY: the heap is initialised and the caller's critical section makes it
            // ours.
            Some(heap) => unsafe { self.alloc_in(heap, layout, false) },
            None => ptr::null_mut(),
        }
    }

    /// Frees `p` (inside the caller's critical section): a chunk of a run, or a block.
    ///
    /// # Safety
    /// `p` is a live block of this heap; `heap` as in [`Heap::alloc_in`].
    #[inline(always)]
    unsafe fn free_in(&self, heap: *mut RawHeap, p: *mut u8) {
        // SAFETY: `p` is a live block of this heap (caller), the heap ours (the critical
        // section); the owner token takes the local path, and a block that it leaves is a
        // chunk of a run.
        unsafe {
            if !free_single_owner_slow(p, (*heap).owner) {
                (*self.runs()).free(heap, p);
            }
        }
    }

    /// The rest of `dealloc` (inside its critical section).
    #[cold]
    #[inline(never)]
    fn dealloc_slow(&self, p: *mut u8) {
        if let Some(heap) = self.heap() {
            // SAFETY: `p` is a live block of this heap (GlobalAlloc's contract); the
            // caller's critical section makes the heap ours.
            unsafe { self.free_in(heap, p) }
        }
    }

    fn alloc_layout(&self, layout: Layout, zero: bool) -> *mut u8 {
        critical_section::with(|_| match self.heap() {
            // SAFETY: the heap is initialised and the critical section makes it ours.
            Some(heap) => unsafe { self.alloc_in(heap, layout, zero) },
            None => ptr::null_mut(),
        })
    }
}

/// Bytes of a page in live blocks and in free blocks (of a run: in its chunks in use and
/// in its free chunks).
///
/// # Safety
/// `page` is a live page of the heap, which the caller's critical section makes ours.
unsafe fn page_usage(page: *const Page) -> (usize, usize) {
    // SAFETY: the page is live and ours (caller); a page with `FLAG_RUN` is a run.
    unsafe {
        if (*page).flags & FLAG_RUN != 0 {
            return Runs::run_usage(page);
        }
        let (used, reserved, size) = (
            (*page).used as usize,
            (*page).reserved as usize,
            (*page).block_size,
        );
        (used * size, (reserved - used) * size)
    }
}

// SAFETY: blocks are at least `layout.size()` bytes and aligned to `layout.align()`
// (`heap_alloc`), or null; every call runs inside a critical section, so the one heap is
// used by one context at a time.
unsafe impl GlobalAlloc for Heap {
    /// The fast path inline: a small block with at most word alignment from the direct
    /// table's page (a load, a pop, a count); everything else in one out-of-line call.
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        critical_section::with(|_| {
            if let Some(heap) = self.heap() {
                if layout.size() <= SMALL_SIZE_MAX && layout.align() <= WORD {
                    // SAFETY: the heap is initialised and the critical section makes it
                    // ours; the size is small (the direct table covers it).
                    let p = unsafe { malloc_small_try(heap, layout.size()) };
                    if !p.is_null() {
                        return p;
                    }
                    // Pages of 512 bytes run out of blocks every few allocations: the
                    // page's own frees are taken back here, not through a call.
                    // SAFETY: as above; the direct-table entry is a live page of the heap
                    // (or the empty page, an immutable static: its lists are empty, so the
                    // raw read of `local_free` stops there before a `&mut` is made).
                    unsafe {
                        let page = (*heap).pages_direct[wsize_from_size(layout.size())];
                        if !(*page).local_free.is_null() && Page::take_local_free(page) {
                            return malloc_small_try(heap, layout.size());
                        }
                    }
                }
            }
            self.alloc_slow(layout)
        })
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.alloc_layout(layout, true)
    }

    /// The fast path inline: a push onto the page's `local_free` when the page is neither
    /// full nor empties (`free_single_owner`); everything else in one out-of-line call.
    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, _layout: Layout) {
        critical_section::with(|_| {
            // SAFETY: `p` is a live block of this heap (GlobalAlloc's contract), so `init`
            // ran (allocation returns null before), and the heap has one owner, which the
            // critical section makes us.
            if !unsafe { free_single_owner(p) } {
                self.dealloc_slow(p);
            }
        })
    }

    /// A chunk of a run, or a block that becomes one (a size of [`RUN_MIN`]..=[`RUN_MAX`]
    /// bytes), stays when it still fits and is at least half used, else moves; other
    /// blocks take the core's realloc.
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        critical_section::with(|_| {
            let Some(heap) = self.heap() else {
                return ptr::null_mut();
            };
            // SAFETY: `p` is a live block of this heap (GlobalAlloc's contract), so its
            // segment and page are live and ours (the critical section).
            let in_run = unsafe { (*(*ptr_segment(p)).page_of(p)).flags & FLAG_RUN != 0 };
            let to_run = (RUN_MIN..=RUN_MAX).contains(&new_size) && layout.align() <= GRAIN;
            if !in_run && (!to_run || cfg!(feature = "debug-mode")) {
                // SAFETY: as `dealloc`; a `Layout`'s alignment is a power of two.
                return unsafe {
                    crate::alloc::realloc(
                        heap,
                        (*heap).owner,
                        p,
                        layout.size(),
                        new_size,
                        layout.align(),
                        false,
                    )
                };
            }
            let old = if in_run {
                // SAFETY: `p` is a live chunk of a run (its page says so).
                unsafe { Runs::usable_size(p) }
            } else {
                // SAFETY: `p` is a live block of the size classes.
                unsafe { crate::free::usable_size(p) }
            };
            if in_run && new_size <= old && new_size >= old / 2 {
                return p;
            }
            let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
                return ptr::null_mut();
            };
            // SAFETY: the heap is initialised and ours (the critical section).
            let q = unsafe { self.alloc_in(heap, new_layout, false) };
            if !q.is_null() {
                // SAFETY: `p` holds `old >= layout.size()` usable bytes, `q` at least
                // `new_size`; distinct live blocks; `p` is given up (the caller's contract),
                // which needs its first `layout.size()` bytes kept only.
                unsafe {
                    ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                    self.free_in(heap, p);
                }
            }
            q
        })
    }
}

const _: () = assert!(MIN_OS_PAGE % 16 == 0, "blocks keep 16-byte alignment");
