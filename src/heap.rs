//! Heaps: page queues per size class, the direct table for small sizes, finding a page
//! with room, retired pages, delayed frees, collection, and first-class heap operations
//! (absorb, destroy, visit). The allocation paths are in `alloc`, frees in `free`.
//!
//! A heap is owned by one thread (hosted) or one CPU (kernel). Only its owner allocates
//! from it; any thread may free into it.

use core::ptr::{self, addr_of, addr_of_mut};
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::domain::Domain;
use crate::free::free_block_local;
use crate::page::{Block, Delayed, Page, PageQueue, FLAG_IN_FULL};
use crate::segment::{self, ptr_segment, SegmentKind, SegmentsTld};
use crate::size_class::*;

/// Per-thread (per-CPU) data: its segments, its heaps, its clock.
///
/// Its address is the thread's owner token, stored in the segments it owns.
pub(crate) struct Tld {
    pub segments: SegmentsTld,
    domain: *const Domain,
    /// The thread's default heap (backing heap of first-class heaps).
    #[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer
    pub heap_backing: *mut RawHeap,
    /// All heaps of the thread, linked through `RawHeap::next`.
    pub heaps: *mut RawHeap,
    /// Allocation slow-path events of this thread.
    pub heartbeat: u64,
    /// Bytes allocated / freed (as counted at page synchronisations) not yet added to the
    /// domain's statistics.
    pub stat_allocated: i64,
    pub stat_freed: i64,
}

impl Tld {
    #[inline(always)]
    pub(crate) fn token(&self) -> usize {
        self as *const Tld as usize
    }

    /// Adds the thread's pending statistics to the domain's.
    pub(crate) fn flush_stats(&mut self) {
        let domain = self.domain();
        domain.stats.allocated.add(self.stat_allocated);
        domain.stats.allocated.sub(self.stat_freed);
        self.stat_allocated = 0;
        self.stat_freed = 0;
    }

    #[inline(always)]
    pub(crate) fn domain(&self) -> &'static Domain {
        // SAFETY: set from a `&'static Domain` at initialisation.
        unsafe { &*self.domain }
    }
}

/// A thread's data and its default heap, allocated together from the page source.
#[repr(C)]
pub(crate) struct ThreadData {
    pub heap: RawHeap,
    pub tld: Tld,
    /// Link in the domain's cache of unused thread data.
    pub next_free: *mut ThreadData,
}

impl ThreadData {
    /// # Safety
    /// `td` points to writable memory for a `ThreadData`, used by no one else.
    pub(crate) unsafe fn init(td: *mut ThreadData, domain: &Domain) {
        // SAFETY: as the caller guarantees; fields are written before use.
        unsafe {
            let tld = addr_of_mut!((*td).tld);
            let heap = addr_of_mut!((*td).heap);
            ptr::write(
                tld,
                Tld {
                    segments: SegmentsTld::new(),
                    domain,
                    heap_backing: heap,
                    heaps: ptr::null_mut(),
                    heartbeat: 0,
                    stat_allocated: 0,
                    stat_freed: 0,
                },
            );
            RawHeap::init(heap, tld);
            (*td).next_free = ptr::null_mut();
        }
    }
}

/// Heap metadata.
///
/// Invariants (checked by `check` in debug builds):
/// - `pages_direct[w]` is the first page of the queue of `bin(w * WORD)`, or the empty
///   page when that queue is empty;
/// - every page in `pages[b]` has this heap as owner and `page.bin() == b`;
/// - `thread_id == tld.token()`, and `NO_THREAD` for the empty heap (and dead heaps).
#[repr(C)]
pub(crate) struct RawHeap {
    /// Direct table for small sizes, indexed by size in words (first: the fast path).
    pub pages_direct: [*mut Page; PAGES_DIRECT],
    /// The owner token of the owning thread (`Tld` address).
    pub thread_id: usize,
    pub tld: *mut Tld,
    /// One queue per bin, plus the huge and full queues.
    pub pages: [PageQueue; BIN_FULL + 1],
    /// Blocks freed by other threads into full pages (see `Delayed`).
    pub thread_delayed_free: AtomicPtr<Block>,
    pub page_count: usize,
    /// Range of bins that may hold retired pages.
    pub retired_min: usize,
    pub retired_max: usize,
    /// Next heap of the same thread.
    pub next: *mut RawHeap,
}

/// The owner token of a thread without a heap. Never a segment's `thread_id`: owners are
/// `Tld` addresses (aligned, so never 1) and abandoned segments have 0 — a thread without
/// heap must never see an abandoned segment as its own.
pub(crate) const NO_THREAD: usize = 1;

/// A wrapper making a never-written static shareable.
#[repr(transparent)]
pub(crate) struct Immutable<T>(pub T);
// SAFETY: the wrapped statics (the empty page and heap) are never written: every path
// that would write first checks that it is not the empty page/heap.
unsafe impl<T> Sync for Immutable<T> {}

pub(crate) static EMPTY_PAGE: Immutable<Page> = Immutable(Page::EMPTY);

#[inline(always)]
pub(crate) const fn empty_page() -> *mut Page {
    addr_of!(EMPTY_PAGE.0) as *mut Page
}

const fn initial_queues() -> [PageQueue; BIN_FULL + 1] {
    let mut q = [PageQueue::new(0); BIN_FULL + 1];
    let mut i = 1;
    while i < BIN_HUGE {
        q[i] = PageQueue::new(bin_size(i));
        i += 1;
    }
    q[BIN_HUGE] = PageQueue::new(LARGE_OBJ_SIZE_MAX + WORD);
    q[BIN_FULL] = PageQueue::new(LARGE_OBJ_SIZE_MAX + 2 * WORD);
    q
}

/// The heap of threads that have not allocated yet: all its direct entries point to the
/// empty page, so the fast path falls through to the generic path, which sees the null
/// `tld` and returns null — the caller then initialises the thread and retries.
#[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer
pub(crate) static EMPTY_HEAP: Immutable<RawHeap> = Immutable(RawHeap {
    pages_direct: [addr_of!(EMPTY_PAGE.0) as *mut Page; PAGES_DIRECT],
    thread_id: NO_THREAD,
    tld: ptr::null_mut(),
    pages: initial_queues(),
    thread_delayed_free: AtomicPtr::new(ptr::null_mut()),
    page_count: 0,
    retired_min: BIN_FULL,
    retired_max: 0,
    next: ptr::null_mut(),
});

#[inline(always)]
#[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer
pub(crate) const fn empty_heap() -> *mut RawHeap {
    addr_of!(EMPTY_HEAP.0) as *mut RawHeap
}

/// How a heap collection goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Collect {
    Normal,
    Force,
    /// The thread is done: detach every page from the heap.
    Abandon,
}

impl RawHeap {
    /// Initialises a heap of the thread of `tld` and links it into the thread's heaps.
    ///
    /// # Safety
    /// `heap` is writable memory for a `RawHeap`; `tld` is live.
    pub(crate) unsafe fn init(heap: *mut RawHeap, tld: *mut Tld) {
        // SAFETY: as the caller guarantees.
        unsafe {
            ptr::write(
                heap,
                RawHeap {
                    pages_direct: [empty_page(); PAGES_DIRECT],
                    thread_id: (*tld).token(),
                    tld,
                    pages: initial_queues(),
                    thread_delayed_free: AtomicPtr::new(ptr::null_mut()),
                    page_count: 0,
                    retired_min: BIN_FULL,
                    retired_max: 0,
                    next: (*tld).heaps,
                },
            );
            (*tld).heaps = heap;
        }
    }

    #[inline(always)]
    pub(crate) fn is_initialized(&self) -> bool {
        !self.tld.is_null()
    }

    /// Pushes a block freed into a full page by another thread (lock-free stack).
    ///
    /// # Safety
    /// `block` is a block of a page of this heap, given up by the caller.
    pub(crate) unsafe fn push_delayed(&self, block: *mut Block) {
        let mut head = self.thread_delayed_free.load(Ordering::Relaxed);
        loop {
            // SAFETY: the block is ours until the CAS publishes it.
            unsafe { (*block).next = head };
            match self.thread_delayed_free.compare_exchange_weak(
                head,
                block,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(cur) => head = cur,
            }
        }
    }

    /// Points the direct-table entries of `bin` at its queue's first page.
    #[inline]
    fn direct_update(&mut self, bin: usize) {
        if bin >= BIN_HUGE {
            return;
        }
        let bsize = bin_size(bin);
        if bsize > SMALL_SIZE_MAX {
            return;
        }
        let first = self.pages[bin].first;
        let page = if first.is_null() { empty_page() } else { first };
        let start = if bin == 1 {
            0
        } else {
            bin_size(bin - 1) / WORD + 1
        };
        let end = bsize / WORD;
        for w in start..=end {
            self.pages_direct[w] = page;
        }
    }

    /// Puts an owned page (in no queue) into the queue that its flags and size select.
    ///
    /// # Safety
    /// `page` is live, owned by this heap's thread, and in no queue.
    pub(crate) unsafe fn page_queue_push(&mut self, page: *mut Page) {
        // SAFETY: as the caller guarantees.
        unsafe {
            let bin = if kind_is_huge(page) {
                BIN_HUGE
            } else {
                (*page).bin()
            };
            self.pages[bin].push_front(page);
            self.page_count += 1;
            self.direct_update(bin);
        }
    }

    /// # Safety
    /// `page` is a huge page in this heap's huge queue.
    pub(crate) unsafe fn huge_queue_remove(&mut self, page: *mut Page) {
        // SAFETY: as the caller guarantees.
        unsafe { self.page_queue_remove(page, BIN_HUGE) }
    }

    /// # Safety
    /// `page` is a huge page of this heap in no queue.
    pub(crate) unsafe fn huge_queue_push(&mut self, page: *mut Page) {
        // SAFETY: as the caller guarantees.
        unsafe { self.page_queue_push(page) }
    }

    /// # Safety
    /// `page` is in this heap's queue `bin`.
    unsafe fn page_queue_remove(&mut self, page: *mut Page, bin: usize) {
        // SAFETY: as the caller guarantees.
        unsafe { self.pages[bin].remove(page) };
        self.page_count -= 1;
        self.direct_update(bin);
    }

    /// The bin of the queue that holds `page`.
    ///
    /// # Safety
    /// `page` is live.
    pub(crate) unsafe fn queue_bin_of(page: *mut Page) -> usize {
        // SAFETY: as the caller guarantees.
        unsafe {
            if (*page).in_full() {
                BIN_FULL
            } else if kind_is_huge(page) {
                BIN_HUGE
            } else {
                (*page).bin()
            }
        }
    }
}

/// Whether a page is the page of a huge segment.
///
/// # Safety
/// `page` is a live page of a segment.
#[inline]
unsafe fn kind_is_huge(page: *mut Page) -> bool {
    // SAFETY: the page lives in its segment's header.
    unsafe { (*ptr_segment((*page).page_start)).kind == SegmentKind::Huge }
}

// ---------------------------------------------------------------------------------------
// statistics

/// Bytes of `allocated` changes a thread gathers before it adds them to the domain's
/// shared counters (so that the allocation slow path of several threads does not fight
/// over one cache line of atomics).
const STATS_BATCH: i64 = 256 << 10;

/// Brings the thread's pending `allocated` count up to date with the page's `used`.
///
/// # Safety
/// The caller owns `page`; `tld` is its thread's data.
#[inline]
pub(crate) unsafe fn page_sync_stats(page: *mut Page, tld: &mut Tld) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let p = &mut *page;
        if p.used != p.stat_used {
            let delta = (p.used as i64 - p.stat_used as i64) * p.block_size as i64;
            p.stat_used = p.used;
            if delta > 0 {
                tld.stat_allocated += delta;
            } else {
                tld.stat_freed -= delta;
            }
            if tld.stat_allocated + tld.stat_freed >= STATS_BATCH {
                tld.flush_stats();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// page queues: finding room, full pages

/// Finds a page with room in queue `bin`, moving full pages to the full queue, or takes a
/// fresh one.
///
/// # Safety
/// `heap` is the calling thread's initialised heap.
pub(crate) unsafe fn find_free_page(heap: *mut RawHeap, bin: usize) -> *mut Page {
    // SAFETY: as the caller guarantees; pages in our queues are ours.
    unsafe {
        let mut page = (*heap).pages[bin].first;
        while !page.is_null() {
            let next = (*page).next;
            (*page).collect(false);
            if (*page).immediate_available() {
                break;
            }
            if (*page).capacity < (*page).reserved {
                if segment::page_extend(page) {
                    break;
                }
                // out of memory committing more of a large page: try other pages
            }
            page_sync_stats(page, &mut *(*heap).tld);
            page_to_full(heap, page, bin);
            page = next;
        }
        if page.is_null() {
            page = page_fresh(heap, bin);
            if page.is_null() {
                return page;
            }
        } else if (*heap).pages[bin].first != page {
            // keep the page with room first, where the direct table looks
            (*heap).page_queue_remove(page, bin);
            (*heap).page_queue_push(page);
        }
        (*page).retire_expire = 0;
        debug_assert!((*page).immediate_available());
        page
    }
}

/// # Safety
/// `heap` is the calling thread's initialised heap.
unsafe fn page_fresh(heap: *mut RawHeap, bin: usize) -> *mut Page {
    // SAFETY: as the caller guarantees.
    unsafe {
        let tld = &mut *(*heap).tld;
        let page = segment::segment_page_alloc(heap, tld, bin_size(bin), None);
        if page.is_null() {
            return page;
        }
        (*heap).page_queue_push(page);
        page
    }
}

/// Moves a page without room to the full queue, where remote frees notify the heap.
///
/// # Safety
/// `page` is in `heap`'s queue `bin`, owned by the caller.
unsafe fn page_to_full(heap: *mut RawHeap, page: *mut Page, bin: usize) {
    // SAFETY: as the caller guarantees.
    unsafe {
        debug_assert!(!(*page).in_full());
        (*heap).page_queue_remove(page, bin);
        (*page).flags |= FLAG_IN_FULL;
        (*heap).page_queue_push(page);
        (*page).use_delayed_free(Delayed::UseDelayedFree, false);
        // a remote free may have landed just before the state switched
        (*page).collect(false);
        if (*page).immediate_available() {
            page_unfull(heap, page);
        }
    }
}

/// Moves a page that has room again from the full queue back to its bin.
///
/// # Safety
/// `page` is owned by `heap`'s thread and belongs to `heap`.
pub(crate) unsafe fn page_unfull(heap: *mut RawHeap, page: *mut Page) {
    // SAFETY: as the caller guarantees.
    unsafe {
        (*page).use_delayed_free(Delayed::NoDelayedFree, false);
        if !(*page).in_full() {
            return;
        }
        (*heap).page_queue_remove(page, BIN_FULL);
        (*page).flags &= !FLAG_IN_FULL;
        let bin = RawHeap::queue_bin_of(page);
        (*heap).pages[bin].push_back(page);
        (*heap).page_count += 1;
        (*heap).direct_update(bin);
    }
}

// ---------------------------------------------------------------------------------------
// retired pages, delayed frees, collection

/// Takes `page` out of the heap and gives it back to its segment.
///
/// # Safety
/// `page` is in `heap`'s queue `bin`, owned by the caller, with all blocks free (or the
/// heap is being destroyed).
pub(crate) unsafe fn page_free(heap: *mut RawHeap, page: *mut Page, bin: usize) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let tld = &mut *(*heap).tld;
        (*heap).page_queue_remove(page, bin);
        (*page).used = 0;
        page_sync_stats(page, tld);
        segment::segment_page_free(page, tld);
    }
}

/// Frees retired pages whose time ran out (all of them with `force`).
///
/// # Safety
/// `heap` is the calling thread's initialised heap.
pub(crate) unsafe fn heap_collect_retired(heap: *mut RawHeap, force: bool) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let (lo, hi) = ((*heap).retired_min, (*heap).retired_max);
        if lo > hi {
            return;
        }
        let mut min = BIN_FULL;
        let mut max = 0;
        for bin in lo..=hi.min(BIN_HUGE - 1) {
            let page = (*heap).pages[bin].first;
            if page.is_null() || (*page).retire_expire == 0 {
                continue;
            }
            if (*page).all_free() {
                (*page).retire_expire -= 1;
                if force || (*page).retire_expire == 0 {
                    page_free(heap, page, bin);
                } else {
                    min = min.min(bin);
                    max = max.max(bin);
                }
            } else {
                (*page).retire_expire = 0;
            }
        }
        (*heap).retired_min = min;
        (*heap).retired_max = max;
    }
}

/// Frees the blocks that other threads freed into our full pages. Blocks whose freeing
/// thread is still finishing stay for the next time, unless `all` (then we wait).
///
/// # Safety
/// `heap` is the calling thread's initialised heap.
unsafe fn heap_delayed_free(heap: *mut RawHeap, all: bool) {
    // SAFETY: as the caller guarantees; blocks on the list belong to pages of this heap.
    unsafe {
        loop {
            let mut block = (*heap)
                .thread_delayed_free
                .swap(ptr::null_mut(), Ordering::Acquire);
            if block.is_null() {
                return;
            }
            let mut retry = false;
            while !block.is_null() {
                let next = (*block).next;
                let page = (*ptr_segment(block as *const u8)).page_of(block as *const u8);
                if (*page).is_delayed_freeing() {
                    // the remote thread still holds the page state: later
                    (*heap).push_delayed(block);
                    retry = true;
                } else {
                    (*page).collect(false);
                    free_block_local(page, block);
                }
                block = next;
            }
            if !all || !retry {
                return;
            }
            core::hint::spin_loop();
        }
    }
}

#[inline]
pub(crate) unsafe fn heap_delayed_free_partial(heap: *mut RawHeap) {
    // SAFETY: forwarded.
    unsafe {
        if !(*heap)
            .thread_delayed_free
            .load(Ordering::Relaxed)
            .is_null()
        {
            heap_delayed_free(heap, false);
        }
    }
}

/// Calls `f` on every page of the heap (`f` may free or move the page it is given).
///
/// # Safety
/// `heap` is the calling thread's initialised heap.
unsafe fn heap_for_each_page(heap: *mut RawHeap, mut f: impl FnMut(*mut Page, usize)) {
    for bin in 0..=BIN_FULL {
        // SAFETY: as the caller guarantees; `next` is read before `f` may unlink `page`.
        unsafe {
            let mut page = (*heap).pages[bin].first;
            while !page.is_null() {
                let next = (*page).next;
                f(page, bin);
                page = next;
            }
        }
    }
}

/// Collects the heap: delayed frees, free lists, and frees empty pages; `Force` also
/// purges at once and frees abandoned segments that emptied; `Abandon` detaches every
/// page (the thread is done).
///
/// # Safety
/// `heap` is the calling thread's initialised heap.
pub(crate) unsafe fn heap_collect(heap: *mut RawHeap, mode: Collect) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let force = mode != Collect::Normal;
        if mode == Collect::Abandon {
            // no remote thread may use our delayed list from now on
            heap_for_each_page(heap, |page, _| {
                (*page).use_delayed_free(Delayed::NeverDelayedFree, false)
            });
        }
        heap_delayed_free(heap, true);
        heap_collect_retired(heap, force);
        heap_for_each_page(heap, |page, bin| {
            (*page).collect(force);
            if (*page).all_free() {
                page_free(heap, page, bin);
            } else {
                page_sync_stats(page, &mut *(*heap).tld);
            }
        });
        (*(*heap).tld).flush_stats();
        if mode == Collect::Abandon {
            heap_for_each_page(heap, |page, bin| {
                (*heap).page_queue_remove(page, bin);
                (*page).xheap.store(ptr::null_mut(), Ordering::Release);
            });
        }
        let tld = &mut *(*heap).tld;
        // a dying thread leaves pending purges to whoever takes its segments over
        segment::segments_purge(tld, mode == Collect::Force);
        // (not when abandoning: a dying thread should not walk every abandoned segment)
        if mode == Collect::Force && tld.domain().abandoned_count() > 0 {
            crate::abandon::abandoned_collect(tld);
        }
        tld.domain().cache_collect(force);
    }
}

/// The thread (or CPU) is done: detach its heaps and hand its segments to the domain.
/// The heaps must not be used afterwards (the caller frees the thread data).
///
/// # Safety
/// `tld` is the calling thread's data; its non-backing heaps are deleted or abandoned by
/// this call.
#[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer
pub(crate) unsafe fn thread_done(tld: *mut Tld) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let mut heap = (*tld).heaps;
        while !heap.is_null() {
            let next = (*heap).next;
            heap_collect(heap, Collect::Abandon);
            heap = next;
        }
        let mut s = (*tld).segments.all;
        while !s.is_null() {
            let next = (*s).all_next;
            if (*s).used > 0 {
                crate::abandon::segment_abandon(s, &mut *tld);
            }
            s = next;
        }
        debug_assert!(
            (*tld).segments.all.is_null(),
            "segments left after thread done"
        );
    }
}

// ---------------------------------------------------------------------------------------
// heaps

/// Gives all pages of `heap` to `into` (same thread), so that `heap` can be freed while
/// its blocks stay valid.
///
/// # Safety
/// Both heaps belong to the calling thread; `heap` is not used afterwards.
#[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer
pub(crate) unsafe fn heap_absorb(into: *mut RawHeap, heap: *mut RawHeap) {
    // SAFETY: as the caller guarantees.
    unsafe {
        heap_delayed_free(heap, true);
        heap_for_each_page(heap, |page, bin| {
            (*heap).page_queue_remove(page, bin);
            (*page).xheap.store(into, Ordering::Release);
            (*page).retire_expire = 0; // `into`'s retired range does not cover it
                                       // A remote free may have read the old heap just before the store and be
                                       // pushing to its delayed list: wait until it is done, so that from here on
                                       // only `into` is used, and the final pass below sees its block.
            while (*page).is_delayed_freeing() {
                core::hint::spin_loop();
            }
            (*into).pages[bin].push_back(page);
            (*into).page_count += 1;
            (*into).direct_update(bin);
        });
        // a remote free may still have reached `heap`'s list in the meantime
        heap_delayed_free(heap, true);
    }
}

/// Frees every page of `heap` at once, without looking at its blocks.
///
/// # Safety
/// `heap` belongs to the calling thread; no block of it is used afterwards.
#[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer
pub(crate) unsafe fn heap_destroy_pages(heap: *mut RawHeap) {
    // SAFETY: as the caller guarantees.
    unsafe {
        heap_for_each_page(heap, |page, _| {
            (*page).use_delayed_free(Delayed::NeverDelayedFree, false)
        });
        (*heap)
            .thread_delayed_free
            .store(ptr::null_mut(), Ordering::Relaxed);
        heap_for_each_page(heap, |page, bin| {
            page_free(heap, page, bin);
        });
    }
}

/// Unlinks `heap` from its thread's list of heaps.
///
/// # Safety
/// `heap` belongs to the calling thread.
#[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer
pub(crate) unsafe fn heap_unlink(heap: *mut RawHeap) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let tld = (*heap).tld;
        let mut link: *mut *mut RawHeap = addr_of_mut!((*tld).heaps);
        while !(*link).is_null() {
            if *link == heap {
                *link = (*heap).next;
                return;
            }
            link = addr_of_mut!((**link).next);
        }
    }
}

/// Calls `f(block, block_size)` for every live block of `heap`; stops when `f` returns
/// false. Returns whether all were visited.
///
/// # Safety
/// `heap` is the calling thread's initialised heap.
#[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer
pub(crate) unsafe fn heap_visit_blocks(
    heap: *mut RawHeap,
    mut f: impl FnMut(*mut u8, usize) -> bool,
) -> bool {
    // SAFETY: as the caller guarantees.
    unsafe {
        heap_delayed_free(heap, true);
        let mut go_on = true;
        heap_for_each_page(heap, |page, _| {
            if !go_on {
                return;
            }
            (*page).collect(true);
            go_on = page_visit_blocks(page, &mut f);
        });
        go_on
    }
}

/// # Safety
/// The caller owns `page`, whose free lists are collected into `free`.
#[cfg_attr(not(feature = "std"), allow(dead_code))] // used by the hosted layer
unsafe fn page_visit_blocks(page: *mut Page, f: &mut impl FnMut(*mut u8, usize) -> bool) -> bool {
    // SAFETY: as the caller guarantees.
    unsafe {
        let p = &*page;
        let bsize = p.block_size;
        let cap = p.capacity as usize;
        if p.used == 0 {
            return true;
        }
        if cap == 1 {
            return f(p.page_start, bsize);
        }
        // small pages hold at most 64 KiB / 8 blocks
        const MAX_BLOCKS: usize = SMALL_PAGE_SIZE / WORD;
        let mut free_map = [0u64; MAX_BLOCKS / 64];
        debug_assert!(cap <= MAX_BLOCKS);
        let mut b = p.free;
        while !b.is_null() {
            let i = (b as usize - p.page_start as usize) / bsize;
            free_map[i / 64] |= 1 << (i % 64);
            b = (*b).next;
        }
        for i in 0..cap.min(MAX_BLOCKS) {
            if free_map[i / 64] & (1 << (i % 64)) == 0 && !f(p.page_start.add(i * bsize), bsize) {
                return false;
            }
        }
        true
    }
}

/// Checks the invariants of the heap, its pages and their segments (debug builds).
///
/// # Safety
/// `heap` is the calling thread's initialised heap.
pub(crate) unsafe fn heap_check(heap: *mut RawHeap) {
    if !cfg!(debug_assertions) {
        return;
    }
    // SAFETY: as the caller guarantees.
    unsafe {
        let mut count = 0;
        heap_for_each_page(heap, |page, bin| {
            count += 1;
            assert_eq!((*page).heap(), heap, "page in a queue of another heap");
            assert_eq!(RawHeap::queue_bin_of(page), bin, "page in the wrong queue");
            (*page).check();
            let segment = ptr_segment((*page).page_start);
            assert_eq!(
                (*segment).thread_id.load(Ordering::Relaxed),
                (*heap).thread_id
            );
            (*segment).check();
        });
        assert_eq!(count, (*heap).page_count, "heap page count");
        for w in 0..PAGES_DIRECT {
            let bin = bin(w * WORD);
            let first = (*heap).pages[bin].first;
            let want = if first.is_null() { empty_page() } else { first };
            assert_eq!((*heap).pages_direct[w], want, "direct table entry {w}");
        }
    }
}
