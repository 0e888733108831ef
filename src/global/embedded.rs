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

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr;

use crate::alloc::malloc_small_try;
use crate::domain::Domain;
use crate::free::{free_single_owner, free_single_owner_slow};
use crate::heap::{for_each_page, OwnedHeap, RawHeap};
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
    /// In live blocks, whole (a request rounded up to its size class): [`Heap::used`].
    pub live: usize,
    /// In free blocks of pages that are in use (or kept empty in their size class's queue):
    /// room for requests of those size classes (and of smaller ones, when memory runs out).
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

    /// Bytes in live blocks (whole blocks: a request is rounded up to its size class).
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
                // local free (one owner), so `used` counts its live blocks exactly.
                used += unsafe { (*page).used as usize * (*page).block_size };
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
                let (used, reserved, size) = unsafe {
                    (
                        (*page).used as usize,
                        (*page).reserved as usize,
                        (*page).block_size,
                    )
                };
                u.live += used * size;
                u.free_in_pages += (reserved - used) * size;
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

    /// The rest of `alloc` (inside its critical section): every size and alignment.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, layout: Layout) -> *mut u8 {
        match self.heap() {
            // SAFETY: the heap is initialised and the caller's critical section makes it
            // ours; a `Layout`'s alignment is a power of two.
            Some(heap) => unsafe {
                crate::global::heap_alloc(heap, layout.size(), layout.align(), false)
            },
            None => ptr::null_mut(),
        }
    }

    /// The rest of `dealloc` (inside its critical section).
    #[cold]
    #[inline(never)]
    fn dealloc_slow(&self, p: *mut u8) {
        if let Some(heap) = self.heap() {
            // SAFETY: `p` is a live block of this heap (GlobalAlloc's contract); the
            // caller's critical section makes the heap ours, and its owner token takes the
            // local path.
            unsafe { free_single_owner_slow(p, (*heap).owner) }
        }
    }

    fn alloc_layout(&self, layout: Layout, zero: bool) -> *mut u8 {
        critical_section::with(|_| match self.heap() {
            // SAFETY: the heap is initialised and the critical section makes it ours; a
            // `Layout`'s alignment is a power of two.
            Some(heap) => unsafe {
                crate::global::heap_alloc(heap, layout.size(), layout.align(), zero)
            },
            None => ptr::null_mut(),
        })
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
                        if !(*page).local_free.is_null() && (*page).take_local_free() {
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

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        critical_section::with(|_| match self.heap() {
            // SAFETY: as `dealloc`; a `Layout`'s alignment is a power of two.
            Some(heap) => unsafe {
                crate::alloc::realloc(heap, (*heap).owner, p, new_size, layout.align(), false)
            },
            None => ptr::null_mut(),
        })
    }
}

const _: () = assert!(MIN_OS_PAGE % 16 == 0, "blocks keep 16-byte alignment");
