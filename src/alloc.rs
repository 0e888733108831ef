//! Allocation, top to bottom: the small-size fast path through the direct table, the
//! generic path (bookkeeping, then a page with room), finding or making a page (taking
//! over abandoned segments first, initialising and extending fresh pages), huge blocks,
//! aligned allocation and `realloc`.

use crate::sync::Ordering;
use core::ptr;

use crate::abandon::{reclaim_one, reclaim_suitable, Reclaim, RECLAIM_MAX};
#[cfg(not(feature = "small"))]
use crate::collect::{heap_collect, Collect};
use crate::free::{heap_collect_retired, heap_delayed_free_partial, usable_size};
use crate::heap::{heap_check, page_sync_stats, OwnedHeap, RawHeap};
use crate::page::{Block, Delayed, Page, FLAG_HAS_ALIGNED};
use crate::page_queue::page_to_full;
use crate::segment::{kind_for, ptr_segment, Segment, SegmentKind};
use crate::segment_alloc as segment;
use crate::size_class::*;

/// Pops a block of `page` (whose `free` list is not empty, and whose head passed
/// [`Page::has_free`]), zeroing `size` bytes of it when asked.
///
/// # Safety
/// The calling thread owns `page`, `page.has_free()`, and its blocks hold at least `size`
/// bytes.
#[inline(always)]
unsafe fn page_pop(page: *mut Page, size: usize, zero: bool) -> *mut u8 {
    // Secure mode: the scrubbed words are checked first (the link is checked as the next
    // head); anything wrong (a report to make) goes out of line as a tail call, so that
    // the common path makes no call that it must save registers around.
    // A block to zero by `memset` comes from a function of its own, a tail call: so that
    // the callers that inline this (the allocation misses of `GlobalAlloc`) make no call
    // that they must save registers around, zeroing or not. (Secure and debug mode check
    // and fill blocks here: they take the general form.)
    #[cfg(not(any(feature = "secure", feature = "debug-mode")))]
    // SAFETY: the calling thread owns the page, which has a free block of at least `size`
    // bytes (caller); its non-atomic `flags` are read through the raw pointer.
    if zero && unsafe { !(*page).free_is_zero() } {
        return unsafe { page_pop_zeroing(page).as_ptr() };
    }
    // SAFETY: the calling thread owns the page (caller), so nothing else writes its
    // non-atomic fields; they are reached through the raw pointer, without a `&mut Page`
    // (other threads CAS its `xthread_free` meanwhile); `block` is a free block of the page
    // (not null, caller): ours to read and to hand out, at least `size` bytes long.
    unsafe {
        let block = (*page).free;
        #[cfg(not(feature = "secure"))]
        {
            (*page).free = (*block).next;
        }
        #[cfg(feature = "secure")]
        {
            if (*page).written_after_free(block) {
                return page_pop_reported(page, size, zero).as_ptr();
            }
            // The decoded link becomes the head unchecked: the next pop's test of the head
            // (`Page::has_free`, `Page::has_free_direct`) is its check, before it is
            // followed (a changed link decodes far away: `secure::Keys`).
            (*page).free = (*page).keys.decode((*block).next as usize) as *mut Block;
            // no fresh block shows an address
            (*block).next = ptr::null_mut();
        }
        page_pop_rest(page, block, size, zero)
    }
}

/// [`page_pop`] of a block to zero by `memset` (the page's free blocks are not known to be
/// zero): out of line, so that `page_pop` stays free of calls. (It pops the block itself:
/// a function that returned its argument would let the compiler keep that argument in a
/// saved register across the call, as it did, instead of making it a tail call; and the
/// result is `NonNull`, as `page_pop_reported`'s, so that callers that test `page_pop`'s
/// result for null keep nothing across the call either.)
///
/// # Safety
/// As [`page_pop`].
#[cfg(not(any(feature = "secure", feature = "debug-mode")))]
#[inline(never)]
unsafe fn page_pop_zeroing(page: *mut Page) -> ptr::NonNull<u8> {
    // SAFETY: as this function's contract.
    unsafe { page_pop_zeroing_inline(page) }
}

/// [`page_pop_zeroing`] inline, for a caller whose pop is its last act (the zeroing
/// allocation of `GlobalAlloc`): the `memset` is then its tail call, and the call and
/// return of `page_pop_zeroing` are saved (some 3 instructions of every zeroing
/// allocation: cfrac allocates 459,000 zeroed vectors).
///
/// # Safety
/// As [`page_pop`].
#[cfg(not(any(feature = "secure", feature = "debug-mode")))]
#[inline(always)]
unsafe fn page_pop_zeroing_inline(page: *mut Page) -> ptr::NonNull<u8> {
    // SAFETY: the calling thread owns the page (caller), so nothing else writes it; its
    // `free` block (not null, caller) is ours to hand out, `block_size` bytes long.
    // Its non-atomic fields are reached through the raw pointer, without a `&mut Page`:
    // other threads CAS its `xthread_free` meanwhile.
    unsafe {
        let block = (*page).free;
        (*page).free = (*block).next;
        (*page).used += 1;
        // The whole block, not only the bytes asked for: as `page_pop_rest`.
        ptr::write_bytes(block as *mut u8, 0, (*page).block_size);
        // a block of the page: never null
        ptr::NonNull::new_unchecked(block as *mut u8)
    }
}

/// The end of [`page_pop`] once `block` is off the list: zeroing (when asked), the count.
///
/// # Safety
/// The calling thread owns `page`; `block` was just taken from its `free` list, at least
/// `size` bytes long.
#[inline(always)]
unsafe fn page_pop_rest(page: *mut Page, block: *mut Block, size: usize, zero: bool) -> *mut u8 {
    // SAFETY: the calling thread owns the page (caller): its non-atomic fields are reached
    // through the raw pointer, no `&mut Page` made (as `page_pop`); the block is ours
    // (caller), `block_size` bytes long.
    unsafe {
        debug_assert!(
            size <= (*page).block_size,
            "a block smaller than its request"
        );
        if zero {
            if (*page).free_is_zero() {
                (*block).next = ptr::null_mut();
            } else {
                // The whole block, not only `size` bytes: a zeroing `realloc` that grows
                // within the block returns it as it is, and its bytes beyond the old size
                // must read as zero (as mimalloc's `mi_zalloc` zeroes the block for
                // `mi_rezalloc`).
                ptr::write_bytes(block as *mut u8, 0, (*page).block_size);
            }
        }
        (*page).used += 1;
        // debug mode: the block was just popped by the page's owner and holds `size` bytes
        // and the padding (callers look pages up by `padded(size)`).
        #[cfg(feature = "debug-mode")]
        crate::debug_mode::on_alloc(page, block as *mut u8, size, zero);
    }
    block as *mut u8
}

/// Secure mode: [`page_pop`] of a block that was written after it was freed: reported (by
/// `check_scrubbed`; a corrupted link too, by `next_of`), then popped as usual (a corrupted
/// list is cut at the block). The result is `NonNull`, so that callers that test
/// `page_pop`'s result for null (a miss) need not keep anything across this call: it is a
/// tail call, and the allocation fast path saves no register.
///
/// # Safety
/// As [`page_pop`].
#[cfg(feature = "secure")]
#[cold]
#[inline(never)]
unsafe fn page_pop_reported(page: *mut Page, size: usize, zero: bool) -> ptr::NonNull<u8> {
    // SAFETY: the calling thread owns the page (caller), so nothing else writes it; its
    // `free` block is ours to read and to hand out, at least `size` bytes long.
    unsafe {
        let block = (*page).free;
        (*page).free = (*page).next_of(block);
        (*page).check_scrubbed(block);
        let p = page_pop_rest(page, block, size, zero);
        // a block of the page: never null
        ptr::NonNull::new_unchecked(p)
    }
}

/// The generic path's periodic bookkeeping (purging segments' expired free pages, the
/// segment cache's expired entries) runs on every `HEARTBEAT_PERIOD`th slow-path
/// allocation of a thread (`Tld::heartbeat`); the shortcuts of a miss
/// ([`malloc_small_local`], [`malloc_refill`]) leave those to the generic path. Purges are
/// due by time (`Os::purge_delay`), so this only bounds how often the clock is looked at.
const HEARTBEAT_PERIOD: u64 = 64;

/// Allocates `size <= SMALL_SIZE_MAX` bytes: a table load, a list pop and a store.
/// About 8 instructions when the page has a free block.
///
/// # Safety
/// `heap` is the calling thread's heap (or the empty heap).
#[inline(always)]
pub(crate) unsafe fn malloc_small(heap: *mut RawHeap, size: usize, zero: bool) -> *mut u8 {
    debug_assert!(size <= SMALL_SIZE_MAX);
    // SAFETY: the heap is the caller's (or the never-written empty heap); its direct-table
    // entry is a live page of it, or the empty page, whose `free` is null.
    let page = unsafe { (*heap).pages_direct[wsize_from_size(padded(size))] };
    // SAFETY: as above, the page is readable, a page of the direct table (the calling
    // thread's, or the empty page).
    if unsafe { !Page::has_free_direct(page) } {
        // SAFETY: forwarding the caller's heap; `size` is small and its page has no free
        // block.
        return unsafe { malloc_small_miss(heap, size, zero) };
    }
    // SAFETY: a page of the caller's heap with a free block of its size class, which
    // holds `size` bytes (the table maps `size` to that class).
    unsafe { page_pop(page, size, zero) }
}

/// [`malloc_small`] when the direct table's page has no block on its `free` list.
///
/// # Safety
/// `heap` is the calling thread's heap (or the empty heap); `size <= SMALL_SIZE_MAX`.
#[inline(always)]
pub(crate) unsafe fn malloc_small_miss(heap: *mut RawHeap, size: usize, zero: bool) -> *mut u8 {
    // Small geometry: a page holds few blocks (512 bytes of them), so its `free` list runs
    // out every few allocations; taking the owner's frees back in place costs a few
    // instructions where the generic path costs hundreds. (The generic path still runs when
    // both lists are empty; the embedded heap has no remote frees to collect.)
    #[cfg(feature = "small")]
    // SAFETY: the heap is the caller's (or the never-written empty heap); its direct-table
    // entry is a live page of it, or the empty page, which is only read (its lists are both
    // null); a page with own frees is the owner's to change, and after the move its `free`
    // list holds blocks of `size`'s class.
    unsafe {
        let page = (*heap).pages_direct[wsize_from_size(padded(size))];
        if !(*page).local_free.is_null() && Page::take_local_free(page) {
            return page_pop(page, size, zero);
        }
        let next = small_next_page(heap, page, size);
        if !next.is_null() {
            return page_pop(next, size, zero);
        }
        // The class's page ran out and no other page of it has room: if this page ran out
        // before and got blocks back (the class churns, as opposed to filling up), its next
        // page, if a fresh one, spans twice as many slices (while memory lasts: see
        // `segment_alloc::span_alloc`), so that a busy class runs out less often.
        if (*page).retire_expire & crate::page::RETIRE_RECYCLED != 0 {
            let slices = ((*page).reserved as usize * (*page).block_size).div_ceil(SMALL_PAGE_SIZE);
            (*(*heap).tld).segments.span_grow = 2 * slices;
            let p = malloc_generic(heap, size, zero, 0);
            (*(*heap).tld).segments.span_grow = 0;
            return p;
        }
    }
    #[cfg(not(feature = "small"))]
    {
        // SAFETY: the heap is the caller's (or the never-written empty heap); its
        // direct-table entry for `size` is a live page of it (or the empty page, only read).
        let page = unsafe { (*heap).pages_direct[wsize_from_size(padded(size))] };
        // SAFETY: reading a field of that page.
        if unsafe { (*page).local_free.is_null() } {
            // (a tail call, as the generic path's below: nothing is saved on the way)
            // SAFETY: forwarding the caller's heap and its direct-table entry for `size`.
            return unsafe { malloc_refill(heap, page, size, zero) };
        }
        // SAFETY: forwarding the caller's heap; `size` is small.
        let p = unsafe { malloc_small_local(heap, size, zero) };
        if !p.is_null() {
            return p;
        }
    }
    // SAFETY: forwarding the caller's heap.
    unsafe { malloc_generic(heap, size, zero, 0) }
}

/// The commonest miss of the small fast path, taken without the generic path: the
/// direct table's page has run out of `free` blocks but holds blocks its owner freed
/// (`local_free`), which become its `free` list (what the generic path's first step,
/// `find_free_page`, would do with that page, at the head of its queue). The generic
/// path's bookkeeping still runs regularly: on every [`HEARTBEAT_PERIOD`]th miss
/// (`heartbeat`, whose multiples of it are where it purges), whenever remote frees wait on the heap's
/// delayed list, and for pages with nothing in `local_free` (which often only need their
/// free list grown: [`malloc_refill`]); remote frees into this page
/// (`thread_free`) wait until then, as frees into any other page do. In a loop of
/// short-lived small blocks (each class's page empties and refills from its own frees)
/// this takes about a third of the generic path's instructions. Null when the generic
/// path must run.
///
/// # Safety
/// `heap` is the calling thread's heap (or the empty heap); `size <= SMALL_SIZE_MAX`.
#[cfg(not(feature = "small"))]
#[inline(always)]
unsafe fn malloc_small_local(heap: *mut RawHeap, size: usize, zero: bool) -> *mut u8 {
    // SAFETY: the heap is the caller's (or the never-written empty heap, whose direct
    // entries are the empty page: its `local_free` is null, so nothing below is reached
    // for it); its direct-table entry is a live page of it. An initialised heap has a live
    // thread context (`tld`), written only by its thread, the caller. The page is the
    // caller's: its lists are its own to move, and after the move its `free` list holds
    // blocks of `size`'s class (checked by `has_free` before the pop).
    unsafe {
        let page = (*heap).pages_direct[wsize_from_size(padded(size))];
        if (*page).local_free.is_null()
            || !(*heap)
                .thread_delayed_free
                .load(Ordering::Relaxed)
                .is_null()
        {
            return ptr::null_mut();
        }
        let tld = (*heap).tld;
        let heartbeat = (*tld).heartbeat + 1;
        if heartbeat % HEARTBEAT_PERIOD == 0 || !Page::take_local_free(page) {
            return ptr::null_mut();
        }
        (*tld).heartbeat = heartbeat;
        (*tld).domain().os.tick();
        if !(*page).has_free() {
            // a corrupted head: the generic path reports and drops it
            return ptr::null_mut();
        }
        // A retired page (it emptied, alone in its queue) stays retired, its countdown
        // running on, as on the fast path of `free` (`free::page_retire`): so the next
        // emptying costs a load and a branch, not a retirement. The countdown
        // (`heap_collect_retired`) takes it off retirement if it holds blocks when it
        // looks, and frees it only if it is empty then, as for any retired page.
        // (no `page_sync_stats`: the page's count of blocks in use reaches the statistics
        // when the generic path, a queue walk, a retirement or a collection next takes it
        // up, as for the blocks the fast path hands out)
        page_pop(page, size, zero)
    }
}

/// A miss of the fast paths on the page they look at (the direct table's for small sizes,
/// the head of the size class's queue for medium and large ones), taken without the
/// generic path when that page only needs refilling: its own frees (`local_free`) become
/// its free list (as in [`malloc_small_local`]), or, with none, its free list grows by
/// `MAX_EXTEND_SIZE` bytes of blocks when its memory is committed (growing is writing
/// links) and no remote frees wait on it (they are taken first, on the generic path): what
/// `find_free_page` would do with that page, with `malloc_small_local`'s bookkeeping rules
/// (the generic path runs on every [`HEARTBEAT_PERIOD`]th miss and whenever remote frees wait on the heap's
/// delayed list). Else, and for a null page, the generic path runs (from here: a tail call
/// for the caller, so that the callers' commoner cases save no register). xmalloc: 22.6K
/// of its 25.7K generic calls only grew the page's free list; mstress's medium sizes went
/// to the generic path every four blocks.
///
/// # Safety
/// As for [`malloc_small_local`]; `page` is null or the page the fast path for `size`
/// looked at (the heap's direct-table entry, the head of its queue), which has no block on
/// its `free` list.
#[cfg(not(feature = "small"))]
#[inline(never)]
unsafe fn malloc_refill(heap: *mut RawHeap, page: *mut Page, size: usize, zero: bool) -> *mut u8 {
    // The tests here, the refill in a function of its own: every way out of this one is a
    // tail call, so it saves no register, and a page that cannot be refilled (the most
    // common case, a page used up with nothing freed into it yet: rptest's 35,000 generic
    // calls) goes to the generic path without the refill's saved registers (some 30
    // instructions a time). (Inline in its callers, these tests cost `alloc_miss` one more
    // instruction on its commonest way, the small-size miss that takes the page's own
    // frees: 0.4 instructions an iteration of the C fast-path loop of `benches/run.sh
    // --callgrind`.)
    // SAFETY: as in `malloc_small_local`: the page is null or a live page of the caller's
    // heap (the empty page of the never-written empty heap has no own frees and no room to
    // grow, so nothing below that writes is reached for it), its lists its own to change;
    // the heap's thread context is live and the caller's.
    unsafe {
        if page.is_null()
            || !(*page).free.is_null()
            || !(*heap)
                .thread_delayed_free
                .load(Ordering::Relaxed)
                .is_null()
        {
            return malloc_generic(heap, size, zero, 0);
        }
        let local = !(*page).local_free.is_null();
        if !local
            && ((*page).capacity >= (*page).reserved
                || !(*page).is_committed
                || (*page).thread_free_pending())
        {
            if (*page).capacity >= (*page).reserved && !(*page).links.next.is_null() {
                // used up, with another page after it in its queue
                return malloc_next_page(heap, page, size, zero);
            }
            return malloc_generic(heap, size, zero, 0);
        }
        if ((*(*heap).tld).heartbeat + 1) % HEARTBEAT_PERIOD == 0 {
            return malloc_generic(heap, size, zero, 0);
        }
        malloc_refill_page(heap, page, size, zero, local)
    }
}

/// [`malloc_refill`] for a page that is used up (its lists empty, its free list grown to
/// its end) and has a page after it in its queue: when no remote frees wait on it and the
/// next page has room once collected, the used-up page goes to the full queue and the
/// next one, now the queue's first, hands out a block: what the generic path's queue walk
/// (`queue_page_with_room`) would do with these two pages, without its bookkeeping (it
/// runs on every [`HEARTBEAT_PERIOD`]th miss, and whenever remote frees wait on the heap's
/// delayed list, as for the other refills). Else the generic path. Where every page of a
/// class fills up and gets blocks back at random (page-sized buffers, whose pages hold a
/// few blocks; a kernel's slab caches), a page leaves for the full queue every few
/// allocations: the kernel bench's page buffers did so 1,780 times in 10,000 allocations,
/// about 250 instructions of bookkeeping each time.
///
/// # Safety
/// As [`malloc_refill`], whose tests passed: `page` is not null, its `free` and
/// `local_free` lists are empty, `capacity >= reserved`, and its `links.next` is not null;
/// no remote frees wait on the heap's delayed list.
#[cfg(not(feature = "small"))]
#[inline(never)]
unsafe fn malloc_next_page(
    heap: *mut RawHeap,
    page: *mut Page,
    size: usize,
    zero: bool,
) -> *mut u8 {
    // SAFETY: as this function's contract: the page is a live page of the caller's heap, in
    // its size class's queue (the direct table's entry or the queue's head: not the full
    // queue, whose pages the fast paths never see), and so is the one after it; the heap is
    // initialised (it has pages), its thread context live and the caller's.
    unsafe {
        let tld = (*heap).tld;
        if (*page).thread_free_pending() || ((*tld).heartbeat + 1) % HEARTBEAT_PERIOD == 0 {
            return malloc_generic(heap, size, zero, 0);
        }
        let next = (*page).links.next;
        Page::collect(next, false);
        if !(*next).immediate_available() {
            return malloc_generic(heap, size, zero, 0);
        }
        let owned = OwnedHeap::new(heap);
        debug_assert!(!(*page).in_full() && (*heap).pages[(*page).bin()].first() == page);
        page_sync_stats(page, &mut *tld);
        page_to_full(owned, page, (*page).bin());
        // `next` heads the queue now, where the direct table looks (a page that
        // `page_to_full` moved straight back, having found remote frees, went to the end)
        debug_assert!((*heap).pages[(*next).bin()].first() == next);
        (*next).retire_expire = 0;
        (*tld).heartbeat += 1;
        (*tld).domain().os.tick();
        page_pop(next, size, zero)
    }
}

/// The refill of [`malloc_refill`] once its tests passed: `page`'s own frees become its
/// free list (`local`), or its free list grows, and a block is popped.
///
/// # Safety
/// As [`malloc_refill`], whose tests passed: `page` is not null, its `free` list is empty,
/// it has own frees (`local`) or room to grow in committed memory, and no remote frees wait
/// on it when it grows.
#[cfg(not(feature = "small"))]
#[inline(never)]
unsafe fn malloc_refill_page(
    heap: *mut RawHeap,
    page: *mut Page,
    size: usize,
    zero: bool,
    local: bool,
) -> *mut u8 {
    // SAFETY: as this function's contract.
    unsafe {
        if local {
            // (`free` is empty: checked by the caller)
            Page::take_local_free(page);
            if !(*page).has_free() {
                // a corrupted head: the generic path reports and drops it
                return malloc_generic(heap, size, zero, 0);
            }
        } else {
            // the blocks are committed (`is_committed`), `free` is empty and there is
            // room (`capacity < reserved`), as `extend_free` requires
            Page::extend_free(page);
        }
        let tld = (*heap).tld;
        (*tld).heartbeat += 1;
        (*tld).domain().os.tick();
        // (the page keeps its place at the front of its queue; a retired page stays
        // retired, and its statistics wait, as in `malloc_small_local`)
        page_pop(page, size, zero)
    }
}

/// Small geometry: the direct page of `size`'s class has no block left (both its lists
/// are empty: a page of 512 bytes holds a few blocks, so this is frequent). When the next
/// page of the class's queue has blocks (a page that left the full queue, or a fresh one),
/// the exhausted page goes to the full queue and the next one to the front, where the
/// direct table looks: what the generic path would do, without its bookkeeping (the
/// embedded heap has no remote frees to collect: its delayed-free states stay as they
/// are). Returns that page, or null (the caller then takes the generic path).
///
/// # Safety
/// `heap` is the calling context's heap (or the empty heap); `page` is its direct-table
/// entry for `size` (small), whose `free` and `local_free` are empty.
#[cfg(feature = "small")]
#[inline(never)]
unsafe fn small_next_page(heap: *mut RawHeap, page: *mut Page, size: usize) -> *mut Page {
    // SAFETY: the heap is the caller's, and so are the pages of its queues; the empty page
    // (the entry of a class without pages) has no successor and is only read.
    unsafe {
        if (*page).capacity < (*page).reserved {
            // not run out: its free list grows (`MAX_EXTEND_SIZE` at a time) on the
            // generic path
            return ptr::null_mut();
        }
        let next = (*page).links.next;
        if next.is_null() || !((*next).immediate_available() || Page::take_local_free(next)) {
            return ptr::null_mut();
        }
        let bin = bin(size);
        debug_assert!((*heap).pages[bin].first() == page);
        (*heap).pages[bin].list.remove(page);
        (*page).flags |= crate::page::FLAG_IN_FULL;
        (*heap).pages[BIN_FULL].list.push_front(page);
        // `next` is the queue's first page now: the direct-table entries of the class are
        // those that point to `page` (a page is in one queue), from the class's largest
        // size in words down (what `direct_update` sets, without working out the range)
        let mut w = (*page).block_size / WORD;
        while (*heap).pages_direct[w] == page {
            (*heap).pages_direct[w] = next;
            if w == 0 {
                break;
            }
            w -= 1;
        }
        next
    }
}

/// The fast path alone: a block of `size <= SMALL_SIZE_MAX` bytes from the direct table's
/// page when that page has one on its `free` list, else null (the caller then takes the
/// full path, [`malloc`]). For entry points that tail-call one out-of-line function on a
/// miss, so that the fast path saves no registers and sets up no frame.
///
/// # Safety
/// `heap` is the calling thread's heap (or the empty heap).
#[inline(always)]
#[cfg_attr(not(feature = "std"), allow(dead_code))] // the hosted fast path
pub(crate) unsafe fn malloc_small_fast(heap: *mut RawHeap, size: usize, zero: bool) -> *mut u8 {
    debug_assert!(size <= SMALL_SIZE_MAX);
    // SAFETY: the heap is the caller's (or the never-written empty heap); its direct-table
    // entry is a live page of it, or the empty page, whose `free` is null.
    let page = unsafe { (*heap).pages_direct[wsize_from_size(padded(size))] };
    // SAFETY: as above, the page is readable, a page of the direct table (the calling
    // thread's, or the empty page).
    if unsafe { !Page::has_free_direct(page) } {
        return ptr::null_mut();
    }
    // (the hosted `alloc`'s pop is its last act: the zeroing is its tail call)
    #[cfg(not(any(feature = "secure", feature = "debug-mode")))]
    // SAFETY: a page of the caller's heap with a free block (above); its flags are ours.
    if zero && unsafe { !(*page).free_is_zero() } {
        return unsafe { page_pop_zeroing_inline(page).as_ptr() };
    }
    // SAFETY: a page of the caller's heap with a free block of its size class, which
    // holds `size` bytes (the table maps `size` to that class).
    unsafe { page_pop(page, size, zero) }
}

/// The fast path of [`malloc_small`] alone: a block from the direct table's page, or null
/// when that page has no free block (the caller then takes the generic path, e.g. after
/// masking interrupts: `PerCpuAlloc` runs this part with interrupts on).
///
/// # Safety
/// `heap` is the calling context's heap (or the empty heap); `size <= SMALL_SIZE_MAX`.
#[inline(always)]
pub(crate) unsafe fn malloc_small_try(heap: *mut RawHeap, size: usize) -> *mut u8 {
    debug_assert!(size <= SMALL_SIZE_MAX);
    // SAFETY: as in `malloc_small`: the entry is a live page of the caller's heap or the
    // never-written empty page, whose `free` is null.
    let page = unsafe { (*heap).pages_direct[wsize_from_size(padded(size))] };
    // SAFETY: as above, the page is readable, a page of the direct table (the calling
    // thread's, or the empty page).
    if unsafe { !Page::has_free_direct(page) } {
        return ptr::null_mut();
    }
    // SAFETY: a page of the caller's heap with a free block of `size`'s class.
    unsafe { page_pop(page, size, false) }
}

/// The page the fast paths look at for a padded size: the direct table's entry for small
/// sizes (the empty page when the class has none), the head of the class's queue for
/// medium and large ones (null when the queue is empty), null for huge sizes.
///
/// # Safety
/// `heap` is the calling context's heap (or the empty heap).
#[inline(always)]
#[cfg_attr(feature = "embedded", allow(dead_code))] // used by global/percpu.rs
unsafe fn fast_page(heap: *mut RawHeap, psize: usize) -> *mut Page {
    // SAFETY: the heap is the caller's (or the never-written empty heap, whose direct
    // entries are the empty page and whose queues are empty); reading its table and the
    // head of a queue races with nothing.
    unsafe {
        if psize <= SMALL_SIZE_MAX {
            (*heap).pages_direct[wsize_from_size(psize)]
        } else if psize <= LARGE_OBJ_SIZE_MAX {
            (*heap).pages[bin(psize)].first()
        } else {
            ptr::null_mut()
        }
    }
}

/// [`malloc_small_try`] and [`malloc_queue_try`] after a miss, one step further: when the
/// page they look at (the direct table's, the head of the queue) has no block on its
/// `free` list but has the owner's own frees (`local_free`), those become its free list and
/// the first is handed out: a few instructions where the generic path costs a hundred and
/// more (and, for `PerCpuAlloc`, masks interrupts). Null otherwise: the caller takes the
/// generic path, which also collects remote frees, delayed frees and retired pages, and
/// still runs whenever a page's own frees run out. With `align` above the word, the block
/// is handed out only when it is aligned to it (pages of a class whose size is a multiple
/// of the OS page hold only such blocks); the page keeps its new free list either way.
///
/// # Safety
/// `heap` is the calling context's heap (or the empty heap); `align` is a power of two.
#[inline]
#[cfg_attr(feature = "embedded", allow(dead_code))] // used by global/percpu.rs
pub(crate) unsafe fn malloc_local(heap: *mut RawHeap, size: usize, align: usize) -> *mut u8 {
    let psize = padded(size);
    // SAFETY: the heap is the caller's (or the never-written empty heap); its direct-table
    // entry and the heads of its queues are live pages of it, or the empty page (or null),
    // which `take_local_free` only reads (both its lists are null); a page with own frees
    // is the owner's to change, and after the move its `free` list holds blocks of
    // `size`'s class.
    unsafe {
        let page = fast_page(heap, psize);
        if !page.is_null()
            && Page::take_local_free(page)
            && (*page).free as usize & (align - 1) == 0
        {
            return page_pop(page, size, false);
        }
    }
    ptr::null_mut()
}

/// Allocates `size` bytes aligned to `MAX_ALIGN_SIZE` when `size` is a multiple of it
/// (to the word otherwise). Null when out of memory or when `heap` is the empty heap.
///
/// # Safety
/// `heap` is the calling thread's heap (or the empty heap).
#[inline(always)]
pub(crate) unsafe fn malloc(heap: *mut RawHeap, size: usize, zero: bool) -> *mut u8 {
    if size <= SMALL_SIZE_MAX {
        // SAFETY: forwarding the caller's heap; `size` is small.
        unsafe { malloc_small(heap, size, zero) }
    } else {
        // SAFETY: forwarding the caller's heap.
        let p = unsafe { malloc_queue_try(heap, size, zero) };
        if !p.is_null() {
            return p;
        }
        #[cfg(not(feature = "small"))]
        if padded(size) <= LARGE_OBJ_SIZE_MAX {
            // SAFETY: the heap is the caller's (or the never-written empty heap, whose
            // queues are empty); the head of the queue `malloc_queue_try` looked at, which
            // has no block on its `free` list (else it had handed one out), or null.
            return unsafe {
                malloc_refill(heap, (*heap).pages[bin(padded(size))].first(), size, zero)
            };
        }
        // SAFETY: forwarding the caller's heap.
        unsafe { malloc_generic(heap, size, zero, 0) }
    }
}

/// The fast path of medium and large sizes (`SMALL_SIZE_MAX < size <= LARGE_OBJ_SIZE_MAX`):
/// a block from the first page of the size class's queue when that page has one on its
/// `free` list, else null (the caller then takes the generic path). The generic path would
/// pick the same page first (`queue_page_with_room` starts at the queue's head); this
/// skips its bookkeeping (heartbeat, delayed frees, purges), which still runs whenever the
/// head page runs out, as the small path's does. Statistics are synced there too.
///
/// # Safety
/// `heap` is the calling context's heap (or the empty heap, whose queues are empty).
#[inline(always)]
pub(crate) unsafe fn malloc_queue_try(heap: *mut RawHeap, size: usize, zero: bool) -> *mut u8 {
    if padded(size) > LARGE_OBJ_SIZE_MAX {
        return ptr::null_mut();
    }
    // SAFETY: the heap is the caller's (or the never-written empty heap, whose queues are
    // empty); the head of a queue is a live page of it, owned by the caller.
    unsafe {
        let page = (*heap).pages[bin(padded(size))].first();
        if page.is_null() || !(*page).has_free() {
            return ptr::null_mut();
        }
        // a page of queue `bin(size)` holds blocks of that class, at least `size` bytes
        page_pop(page, size, zero)
    }
}

/// A block of `size`'s class aligned to `align` when the page the fast paths look at
/// (the direct table's for small sizes, the head of the queue for medium and large ones)
/// has one first on its `free` list, or, with that list empty, first on the owner's own
/// frees (`local_free`, which become the free list, as [`malloc_local`] does; the page
/// keeps its new free list either way), else null. Blocks of a class whose size is a
/// multiple of the OS page are aligned to it in pages that start at an OS page boundary,
/// and a smaller alignment is often met by chance; the caller takes the aligned slow path
/// otherwise. (One function, so that the page is found once: for medium and large sizes,
/// working out the queue costs about 20 instructions.)
///
/// # Safety
/// As [`malloc_local`].
#[inline(always)]
#[cfg_attr(feature = "embedded", allow(dead_code))] // used by global/percpu.rs
pub(crate) unsafe fn malloc_try_aligned_local(
    heap: *mut RawHeap,
    size: usize,
    align: usize,
) -> *mut u8 {
    // SAFETY: as in `malloc_queue_try` and `malloc_local`: the page is a live page of the
    // caller's heap (or the empty page, only read: both its lists are null), its lists the
    // owner's to change; a page of `size`'s class holds blocks of `size` bytes.
    unsafe {
        let page = fast_page(heap, padded(size));
        if page.is_null() {
            return ptr::null_mut();
        }
        let free = (*page).free;
        if !free.is_null() {
            if free as usize & (align - 1) != 0 || !(*page).has_free() {
                return ptr::null_mut();
            }
            return page_pop(page, size, false);
        }
        if Page::take_local_free(page) && (*page).free as usize & (align - 1) == 0 {
            return page_pop(page, size, false);
        }
    }
    ptr::null_mut()
}

/// The slow path: bookkeeping (delayed frees, retired pages, purges), then a page with
/// room. `huge_align > 0` asks for a huge page with the block aligned to it.
///
/// # Safety
/// `heap` is the calling thread's heap (or the empty heap).
#[cold]
#[inline(never)]
pub(crate) unsafe fn malloc_generic(
    heap: *mut RawHeap,
    size: usize,
    zero: bool,
    huge_align: usize,
) -> *mut u8 {
    // SAFETY: the heap is the caller's or the static empty heap: readable.
    if !unsafe { (*heap).is_initialized() } {
        return ptr::null_mut();
    }
    // SAFETY: an initialised heap of the calling thread (caller).
    let heap = unsafe { OwnedHeap::new(heap) };
    // SAFETY: the token proves the heap's thread context is live and ours.
    let tld = unsafe { &mut *heap.tld() };
    let os = &tld.domain().os;
    if size > isize::MAX as usize - SEGMENT_SIZE {
        os.stats.out_of_memory.fetch_add(1, Ordering::Relaxed);
        return ptr::null_mut();
    }
    tld.heartbeat += 1;
    let heartbeat = tld.heartbeat;
    os.tick();
    heap_delayed_free_partial(heap);
    if heartbeat % HEARTBEAT_PERIOD == 0 {
        // SAFETY: as above (no other reference to the context is alive here).
        segment::segments_purge(unsafe { &mut (*heap.tld()).segments }, false);
        os.cache_collect(false);
    }
    if cfg!(any(debug_assertions, feature = "debug-mode")) && heartbeat % 4096 == 0 {
        heap_check(heap);
    }
    let mut page = find_page(heap, padded(size), huge_align);
    // Small geometry (one heap, no other threads, no OS to give memory to): the only unused
    // memory a heap holds is its empty pages, in the size-class queues, so out of memory
    // frees those (not walking the full pages) and tries again if there were any.
    #[cfg(feature = "small")]
    if page.is_null() && crate::free::heap_free_empty_pages(heap) > 0 {
        page = find_page(heap, padded(size), huge_align);
    }
    #[cfg(feature = "small")]
    if page.is_null() && huge_align == 0 && padded(size) <= LARGE_OBJ_SIZE_MAX {
        page = larger_class_page(heap, padded(size));
    }
    #[cfg(not(feature = "small"))]
    if page.is_null() {
        // out of memory: give everything unused back and try once more
        heap_collect(heap, Collect::Force);
        page = find_page(heap, padded(size), huge_align);
    }
    if page.is_null() {
        os.stats.out_of_memory.fetch_add(1, Ordering::Relaxed);
        return ptr::null_mut();
    }
    // SAFETY: `find_page` returns a page of our heap with a free block, big enough for
    // `size`; the heap's thread context is ours.
    unsafe {
        debug_assert!(!(*page).free.is_null());
        if Page::drop_corrupt_head(page) {
            // the head of its `free` list was corrupted (reported, dropped): look again
            return malloc_generic(heap.as_ptr(), size, zero, huge_align);
        }
        if cfg!(any(debug_assertions, feature = "debug-mode")) {
            (*page).check();
            (*ptr_segment((*page).page_start())).check();
        }
        let p = page_pop(page, size, zero);
        page_sync_stats(page, &mut *heap.tld());
        p
    }
}

/// Small geometry, out of memory (no page of `size`'s class has room, no memory for a
/// fresh one, no empty page left to free): a page of a larger size class that has a free
/// block, the nearest class first. mimalloc keeps every block in its own class; a heap of
/// 16-64 KiB holds a partly used page in each of its classes when memory runs out (a
/// tenth of the heap and more), and a block a little larger than asked beats a null.
/// Only the first page of each queue is looked at (where the queues keep the pages with
/// room), so the cost is bounded by the number of classes, not by the blocks live. The
/// block is as aligned as one of `size`'s own class would be: a class is taken only when
/// its block size is a multiple of the alignment that `malloc` promises for `size` (see
/// `malloc_aligned`). Null when no class has one.
#[cfg(feature = "small")]
fn larger_class_page(heap: OwnedHeap, size: usize) -> *mut Page {
    let h = heap.as_ptr();
    let align = (1usize << size.max(1).trailing_zeros()).min(MAX_ALIGN_SIZE);
    for b in bin(size) + 1..BIN_HUGE {
        // SAFETY: the token proves the heap is ours, and with it the pages in its queues:
        // the first page of a queue is live and nothing else writes it; `page_extend` runs
        // only when the page's `free` list is empty (after collecting) and it can grow.
        unsafe {
            let page = (*h).pages[b].first();
            if page.is_null() || (*page).block_size & (align - 1) != 0 {
                continue;
            }
            Page::collect(page, false);
            if (*page).immediate_available()
                || ((*page).capacity < (*page).reserved && page_extend(page))
            {
                return page;
            }
        }
    }
    ptr::null_mut()
}

/// A page of the heap with a free block for `size` bytes (a huge page aligned to
/// `huge_align` when it is not 0). Null when out of memory.
#[inline(always)]
fn find_page(heap: OwnedHeap, size: usize, huge_align: usize) -> *mut Page {
    if size > LARGE_OBJ_SIZE_MAX || huge_align > 0 {
        return huge_page_alloc(heap, size, huge_align);
    }
    find_free_page(heap, bin(size))
}

/// [`find_free_page_slow`] with its common case inline in `malloc_generic`: the first
/// page of the queue has room once its own frees are taken back (a size class whose
/// page ran out of `free` blocks). That saves two calls with their saved registers,
/// about a fifth of the generic path's instructions on a small-size loop.
#[inline(always)]
fn find_free_page(heap: OwnedHeap, bin: usize) -> *mut Page {
    let h = heap.as_ptr();
    // SAFETY: the token proves the heap is ours, and with it the pages in its queues:
    // nothing else writes them.
    unsafe {
        let page = (*h).pages[bin].first();
        if !page.is_null() {
            Page::collect(page, false);
            if (*page).immediate_available() {
                // already at the front of its queue, where the direct table looks
                (*page).retire_expire = 0;
                return page;
            }
        }
    }
    find_free_page_slow(heap, bin)
}

/// Finds a page with room in queue `bin`, moving full pages to the full queue, or takes a
/// fresh one.
#[inline(never)]
fn find_free_page_slow(heap: OwnedHeap, bin: usize) -> *mut Page {
    // (`find_free_page` collected the queue's first page just now)
    let mut page = queue_page_with_room(heap, bin, true);
    // None: take over segments of exited threads first, and look again (their pages of
    // this size class come to the backing heap, often with room: a thread pool's threads
    // then reuse each other's pages instead of each starting a page of its own)
    if page.is_null() && reclaim_abandoned(heap, kind_for(bin_size(bin)), bin_size(bin)) > 0 {
        page = queue_page_with_room(heap, bin, false);
    }
    if page.is_null() {
        // before taking a fresh page, free retired pages whose time ran out (retirement
        // counts these events, as mimalloc's: a page alone in its size class, emptied
        // and refilled in a loop, stays while no other size class needs a page)
        heap_collect_retired(heap, false);
        page = page_fresh(heap, bin_size(bin), None);
        if page.is_null() {
            return page;
        }
    }
    // SAFETY: a page of our heap (the token), which has a block free.
    unsafe {
        (*page).retire_expire = 0;
        debug_assert!((*page).immediate_available());
    }
    page
}

/// The first page of queue `bin` with room, after moving the pages without room to the
/// full queue (and extending a page whose free list can grow); null when there is none.
/// The page found goes to the front of its queue, where the direct table looks. With
/// `first_collected`, the caller has just collected the queue's first page (and found no
/// block on it): it is not collected again (a remote free that arrived since waits for the
/// next collection, as one a moment later would).
fn queue_page_with_room(heap: OwnedHeap, bin: usize, first_collected: bool) -> *mut Page {
    let h = heap.as_ptr();
    // SAFETY: the token proves the heap is ours, and with it the pages in its queues and
    // its thread context: nothing else writes them.
    unsafe {
        let mut page = (*h).pages[bin].first();
        let mut collect = !first_collected;
        while !page.is_null() {
            let next = (*page).links.next;
            if collect {
                Page::collect(page, false);
            }
            collect = true;
            if (*page).immediate_available() {
                break;
            }
            // (when extending fails for lack of memory to commit more of a large page, try
            // other pages)
            if (*page).capacity < (*page).reserved && page_extend(page) {
                break;
            }
            page_sync_stats(page, &mut *heap.tld());
            page_to_full(heap, page, bin);
            page = next;
        }
        if !page.is_null() && (*h).pages[bin].first() != page {
            (*h).queue_remove(page, bin);
            (*h).queue_push(page);
        }
        page
    }
}

/// Takes over abandoned segments while the thread has no segment with a free page of
/// `kind`. For a page of blocks of `block_size` (not 0): the first one that helps
/// (`abandon::reclaim_suitable`). Else (huge pages): at most `RECLAIM_MAX` that still hold
/// live blocks (emptied ones are freed on the way and do not count). Their pages in use go
/// to the thread's backing heap. Returns how many segments were kept.
fn reclaim_abandoned(heap: OwnedHeap, kind: SegmentKind, block_size: usize) -> usize {
    // SAFETY: the token proves the heap's thread context is live and ours; no other
    // reference to it is alive while this one is used.
    let tld = unsafe { &mut *heap.tld() };
    let abandoned = &tld.domain().abandoned;
    if block_size != 0 {
        if tld.segments.has_free_page(kind) {
            return 0;
        }
        // SAFETY: the backing heap of our thread is initialised and ours.
        let backing = unsafe { OwnedHeap::new(tld.heap_backing) };
        let tries = (abandoned.count() / 10).clamp(RECLAIM_MAX, 1024);
        return reclaim_suitable(&mut tld.segments, abandoned, block_size, kind, tries, |s| {
            // SAFETY: the segment was just reclaimed by us.
            unsafe { adopt_pages(backing, s) }
        });
    }
    let mut reclaimed = 0;
    while reclaimed < RECLAIM_MAX && !tld.segments.has_free_page(kind) {
        match reclaim_one(&mut tld.segments, abandoned) {
            Reclaim::Kept(segment) => {
                // SAFETY: the backing heap of our thread is initialised and ours.
                let backing = unsafe { OwnedHeap::new(tld.heap_backing) };
                // SAFETY: the segment was just reclaimed by us.
                unsafe { adopt_pages(backing, segment) };
                reclaimed += 1;
            }
            Reclaim::Freed => {}
            Reclaim::None => break,
        }
    }
    reclaimed
}

/// A fresh page for blocks of `block_size` (a huge page with its block aligned to
/// `align` for `huge = Some(align)`), initialised for the heap, with its first blocks, in
/// its queue. Before asking the segment layer for a new page, the thread takes over
/// segments of exited threads (their live pages go to its backing heap). Null when out of
/// memory.
fn page_fresh(heap: OwnedHeap, block_size: usize, huge: Option<usize>) -> *mut Page {
    let kind = if huge.is_some() {
        SegmentKind::Huge
    } else {
        kind_for(block_size)
    };
    // Huge pages: take over abandoned segments (a new huge page never comes from one, but
    // emptied ones are freed on the way). Other sizes come here from `find_free_page_slow`,
    // which has just looked for an abandoned segment that helps.
    if huge.is_some() {
        reclaim_abandoned(heap, kind, 0);
    }
    // SAFETY: the token proves the heap's thread context is live and ours; no other
    // reference to it is alive while this one is used.
    let tld = unsafe { &mut *heap.tld() };
    let page = segment::page_alloc(&mut tld.segments, block_size, huge);
    if page.is_null() {
        return page;
    }
    // SAFETY: the page was just claimed for us: in use, in no queue, with no blocks; its
    // segment is ours.
    unsafe {
        let psize = segment::page_size(page);
        let bsize = if huge.is_some() { psize } else { block_size };
        Page::init(page, heap.as_ptr(), bsize, psize);
        if !page_extend(page) {
            // out of memory committing its first blocks: give the page back (through our
            // segment context, which `tld` borrows)
            segment::page_free_in(Some(&mut tld.segments), page);
            return ptr::null_mut();
        }
        (*heap.as_ptr()).queue_push(page);
    }
    page
}

/// Gives the pages in use of a segment just reclaimed to `heap`. A first-class heap must
/// only ever hold its own blocks, or destroying it would free blocks of others, so `heap`
/// is the thread's backing heap (as mimalloc's `no_reclaim` heaps).
///
/// # Safety
/// `heap` is the calling thread's backing heap; `segment` was just reclaimed by it.
unsafe fn adopt_pages(heap: OwnedHeap, segment: *mut Segment) {
    // SAFETY: the segment was reclaimed by us (caller), so it and its pages are ours.
    let seg = unsafe { &*segment };
    for i in seg.first_entry()..seg.capacity {
        // SAFETY: `i < capacity`; a reclaimed page in use has no heap and is in no queue,
        // and its remote frees use no delayed list, so we may give it to our heap.
        unsafe {
            let page = seg.page(i);
            if (*page).segment_in_use {
                (*page).set_heap(heap.as_ptr());
                (*heap.as_ptr()).queue_push(page);
            }
        }
    }
}

/// Extends the page's free list by up to 4 KiB of fresh blocks, committing their memory
/// first when the page is committed lazily. False when out of memory.
///
/// # Safety
/// The calling thread owns `page`; its `free` list is empty and `capacity < reserved`.
unsafe fn page_extend(page: *mut Page) -> bool {
    // SAFETY: the calling thread owns the page (caller).
    let blocks_end =
        unsafe { ((*page).capacity as usize + (*page).extend_count()) * (*page).block_size };
    // SAFETY: the page is in use and its segment ours (caller).
    if !unsafe { segment::page_commit(page, blocks_end) } {
        return false;
    }
    // SAFETY: the new blocks are committed now, `free` is empty and there is room (caller).
    unsafe { Page::extend_free(page) };
    true
}

/// A huge block of `size` bytes aligned to `align` (at least `MAX_ALIGN_SIZE`) straight
/// from [`huge_page_alloc`], without the generic path's bookkeeping (the heap's delayed
/// frees, the clock tick, the periodic purge: the next generic allocation does them): for
/// a growing buffer that moves into the spare huge region (`PerCpuAlloc::realloc_move`),
/// about 100 instructions fewer than [`malloc_generic`]. Out of memory (or an impossible
/// size, or a corrupted free list) goes to `malloc_generic`, which handles it.
///
/// # Safety
/// As [`malloc_generic`].
#[cfg_attr(feature = "embedded", allow(dead_code))] // used by global/percpu.rs
pub(crate) unsafe fn malloc_huge(heap: *mut RawHeap, size: usize, align: usize) -> *mut u8 {
    debug_assert!(align >= MAX_ALIGN_SIZE);
    // SAFETY: the heap is the caller's or the static empty heap: readable.
    if unsafe { (*heap).is_initialized() } && size <= isize::MAX as usize - SEGMENT_SIZE {
        // SAFETY: an initialised heap of the calling thread (caller).
        let owned = unsafe { OwnedHeap::new(heap) };
        let page = huge_page_alloc(owned, size, align);
        // SAFETY: a fresh huge page of our heap with its one block free, of at least
        // `size` bytes; the heap's thread context is ours.
        unsafe {
            if !page.is_null() && !Page::drop_corrupt_head(page) {
                if cfg!(any(debug_assertions, feature = "debug-mode")) {
                    (*page).check();
                    (*ptr_segment((*page).page_start())).check();
                }
                let p = page_pop(page, size, false);
                page_sync_stats(page, &mut *owned.tld());
                return p;
            }
        }
    }
    // SAFETY: the caller's contract.
    unsafe { malloc_generic(heap, size, false, align) }
}

/// A huge page for one block of `size` bytes aligned to `align`, in the heap's huge queue.
fn huge_page_alloc(heap: OwnedHeap, size: usize, align: usize) -> *mut Page {
    let bsize = (size.max(1) + WORD - 1) & !(WORD - 1);
    let page = page_fresh(heap, bsize, Some(align.max(MAX_ALIGN_SIZE)));
    if !page.is_null() {
        // its one block is handed out at once: treat it as full, so a remote free goes to
        // our delayed list and we learn about it
        // SAFETY: a fresh page of our heap; its delayed-free state is atomic.
        unsafe { (*page).use_delayed_free(Delayed::UseDelayedFree, false) };
    }
    page
}

/// Solo blocks: the most bytes one is made with (`malloc_solo`). It then grows in place up
/// to its page's area (`solo_grow`): 64 KiB, or page 0's room after the segment header.
#[cfg(not(feature = "small"))]
pub(crate) const SOLO_SIZE_MAX: usize = SMALL_PAGE_SIZE / 2;

/// A solo block of at least `size` bytes (at most [`SOLO_SIZE_MAX`]), word-aligned: a
/// small page of its own, in the heap's huge queue (`page::FLAG_SOLO`), holding one block
/// of `size` rounded up to the OS page, committed that far. The block grows in place into
/// the rest of its page ([`solo_grow`]), which no other block uses, without a copy: for a
/// kernel's buffers that grow step by step (`PerCpuAlloc::realloc`), as a huge block grows
/// into its reserved room, at the cost of a page claim and its free. Null when out of
/// memory, in secure and debug builds (whose checks know size classes and huge blocks
/// only) and for a heap not initialised: the caller allocates otherwise.
///
/// # Safety
/// `heap` is the calling thread's heap (or the empty heap); `0 < size <= SOLO_SIZE_MAX`.
#[cfg(not(feature = "small"))]
pub(crate) unsafe fn malloc_solo(heap: *mut RawHeap, size: usize) -> *mut u8 {
    debug_assert!(size > 0 && size <= SOLO_SIZE_MAX);
    // SAFETY: the heap is the caller's or the static empty heap: readable.
    if cfg!(any(feature = "secure", feature = "debug-mode")) || !unsafe { (*heap).is_initialized() }
    {
        return ptr::null_mut();
    }
    // SAFETY: an initialised heap of the calling thread (caller).
    let owned = unsafe { OwnedHeap::new(heap) };
    let bsize = (size + MIN_OS_PAGE - 1) & !(MIN_OS_PAGE - 1);
    // the heap's spare solo page (`free::page_retire_default`) first
    // SAFETY: the heap is ours, and so are the pages of its queues.
    let spare = unsafe { (*heap).pages[BIN_HUGE].list.last };
    if Page::is_spare_solo(spare) {
        // SAFETY: an empty solo page of our heap (its one block free, collected or on its
        // `free` or `local_free` list), in its huge queue; its segment is ours.
        unsafe {
            if bsize <= segment::page_size(spare)
                && (solo_committed(spare, bsize) || segment::page_commit(spare, bsize))
            {
                // (its statistics counted its block freed, at its old size)
                page_sync_stats(spare, &mut *owned.tld());
                (*spare).block_size = bsize;
                (*spare).capacity = 0;
                (*spare).free = ptr::null_mut();
                (*spare).local_free = ptr::null_mut();
                (*spare).retire_expire = 0;
                Page::set_free_is_zero(spare, false);
                Page::extend_free(spare);
                (*spare).use_delayed_free(Delayed::UseDelayedFree, false);
                if cfg!(debug_assertions) {
                    (*spare).check();
                }
                let p = page_pop(spare, size, false);
                page_sync_stats(spare, &mut *owned.tld());
                return p;
            }
        }
    }
    // SAFETY: the token proves the heap's thread context is live and ours; no other
    // reference to it is alive while this one is used.
    let tld = unsafe { &mut *owned.tld() };
    let page = segment::page_alloc_solo(&mut tld.segments);
    if page.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: the page was just claimed for us: in use, in no queue, with no blocks, none
    // of its memory committed by the claim; its segment is ours.
    unsafe {
        let psize = segment::page_size(page);
        if bsize > psize {
            segment::page_free_in(Some(&mut tld.segments), page);
            return ptr::null_mut();
        }
        Page::init(page, heap, bsize, psize);
        // one block, whatever its size: the rest of the page is its room to grow
        (*page).reserved = 1;
        (*page).flags = crate::page::FLAG_SOLO;
        // (commits the block's bytes: `capacity + extend_count() == 1` block)
        if !page_extend(page) {
            segment::page_free_in(Some(&mut tld.segments), page);
            return ptr::null_mut();
        }
        // its one block is handed out at once: a remote free goes to our delayed list, as
        // a huge page's
        (*page).use_delayed_free(Delayed::UseDelayedFree, false);
        (*heap).queue_push(page);
        if cfg!(debug_assertions) {
            (*page).check();
        }
        let p = page_pop(page, size, false);
        page_sync_stats(page, &mut *owned.tld());
        p
    }
}

/// [`solo_grow`]'s common case alone, with no call: `page` is not its segment's first
/// (every other page of a small segment fills `SMALL_PAGE_SIZE`, aligned to it) and holds
/// the new size committed already. False (nothing changed) otherwise: `solo_grow` then
/// handles it.
///
/// # Safety
/// As [`solo_grow`].
#[cfg(not(feature = "small"))]
#[inline(always)]
pub(crate) unsafe fn solo_grow_committed(
    heap: *mut RawHeap,
    page: *mut Page,
    new_size: usize,
) -> bool {
    // SAFETY: as in `solo_grow`.
    unsafe {
        let bsize = (new_size + MIN_OS_PAGE - 1) & !(MIN_OS_PAGE - 1);
        if (*page).page_start() as usize % SMALL_PAGE_SIZE != 0
            || bsize > SMALL_PAGE_SIZE
            || !solo_committed(page, bsize)
            // the block is the page's only one: nothing else lies in the page
            || (*page).capacity != 1
            || (*page).reserved != 1
            || (*page).used != 1
        {
            return false;
        }
        let old = (*page).block_size;
        if bsize > old {
            // the statistics: as in `solo_grow`
            #[cfg(not(feature = "embedded"))]
            if (*page).stat_used == 1 {
                (*OwnedHeap::new(heap).tld()).stat_allocated += (bsize - old) as i64;
            }
            (*page).block_size = bsize;
        }
        if cfg!(debug_assertions) {
            (*page).check();
        }
    }
    true
}

/// Whether the first `bytes` of `page`'s memory are committed.
///
/// # Safety
/// `page` is a page of the calling thread's.
#[cfg(not(feature = "small"))]
#[inline(always)]
unsafe fn solo_committed(page: *mut Page, bytes: usize) -> bool {
    // SAFETY: the caller's page: nothing else writes these fields.
    unsafe { (*page).is_committed || (*page).partial_commit() >= bytes }
}

/// Grows the solo block `p` (see [`malloc_solo`]) in place to hold `new_size` bytes, if
/// its page has the room: the block is the page's only one (checked), so the bytes behind
/// it up to the page's end hold no block; they are committed up to `new_size` rounded up
/// to the OS page. False (nothing changed) when the page is too small or the memory
/// cannot be committed, or needs committing and `commit` is false (the kernel then calls
/// again with interrupts off: a commit reaches the page source).
///
/// # Safety
/// `heap` is the calling thread's heap; `page` is the page of `p`, a live block of it with
/// `FLAG_SOLO`, whose first byte `p` is.
#[cfg(not(feature = "small"))]
#[inline]
pub(crate) unsafe fn solo_grow(
    heap: *mut RawHeap,
    page: *mut Page,
    new_size: usize,
    commit: bool,
) -> bool {
    // SAFETY: the page is a live page of the caller's heap (caller): nothing else writes
    // these fields (remote frees use `xthread_free`, untouched here); its segment is ours.
    unsafe {
        debug_assert!((*page).flags & crate::page::FLAG_SOLO != 0);
        // the block is the page's one block, in use: nothing else lies in the page
        if (*page).capacity != 1 || (*page).reserved != 1 || (*page).used != 1 {
            debug_assert!(false, "solo page with more than its one block");
            return false;
        }
        let bsize = (new_size + MIN_OS_PAGE - 1) & !(MIN_OS_PAGE - 1);
        if bsize <= (*page).block_size {
            return true;
        }
        // (the pages of a small segment but its first fill `SMALL_PAGE_SIZE`, aligned to it)
        let room = if (*page).page_start() as usize % SMALL_PAGE_SIZE == 0 {
            SMALL_PAGE_SIZE
        } else {
            segment::page_size(page)
        };
        debug_assert_eq!(room, segment::page_size(page));
        if bsize > room
            || (!solo_committed(page, bsize) && (!commit || !segment::page_commit(page, bsize)))
        {
            return false;
        }
        // the statistics: the block counted (synchronised) at its old size is counted at
        // its new one (the next synchronisation flushes them)
        #[cfg(not(feature = "embedded"))]
        if (*page).stat_used == 1 {
            (*OwnedHeap::new(heap).tld()).stat_allocated += (bsize - (*page).block_size) as i64;
        }
        (*page).block_size = bsize;
        if cfg!(debug_assertions) {
            (*page).check();
        }
    }
    true
}

// ---------------------------------------------------------------------------------------
// alignment, realloc

/// Marks the page of `block` as holding pointers into blocks (aligned or offset ones),
/// so that `free` and `usable_size` find the block start from them.
///
/// # Safety
/// `block` is a live block just allocated by the calling thread from its own heap.
#[inline]
pub(crate) unsafe fn mark_aligned(block: *mut u8) {
    // SAFETY: the block is live, so its page is; the calling thread owns the page (it just
    // allocated from it), so it may write the flags.
    unsafe {
        let page = (*ptr_segment(block)).page_of(block);
        if (*page).flags & FLAG_HAS_ALIGNED == 0 {
            (*page).flags |= FLAG_HAS_ALIGNED;
            #[cfg(not(feature = "embedded"))]
            (*page).set_aligned_tag(true);
        }
    }
}

/// Alignments below this are served by over-allocating within a size class; above it, a
/// huge segment places the block exactly.
const OVERALLOC_ALIGN_MAX: usize = SEGMENT_SIZE / 8;

/// Allocates `size` bytes aligned to `align` (a power of two).
///
/// # Safety
/// `heap` is the calling thread's heap (or the empty heap); `align` is a power of two.
pub(crate) unsafe fn malloc_aligned(
    heap: *mut RawHeap,
    size: usize,
    align: usize,
    zero: bool,
) -> *mut u8 {
    debug_assert!(align.is_power_of_two());
    if align <= MAX_ALIGN_SIZE && size & (align - 1) == 0 && (size >= align || align <= WORD) {
        // SAFETY: forwarding the caller's heap.
        return unsafe { malloc(heap, size, zero) };
    }
    // a small block that happens to be aligned already
    if size <= SMALL_SIZE_MAX && align <= size {
        // SAFETY: as in `malloc_small`: the direct-table entry is a live page of the
        // caller's heap or the never-written empty page.
        let page = unsafe { (*heap).pages_direct[wsize_from_size(padded(size))] };
        // SAFETY: as above, readable.
        let free = unsafe { (*page).free };
        // SAFETY (of `has_free`): as above, readable.
        if !free.is_null() && free as usize & (align - 1) == 0 && unsafe { (*page).has_free() } {
            // SAFETY: a page of the caller's heap with a free block of `size`'s class.
            return unsafe { page_pop(page, size, zero) };
        }
    }
    // SAFETY: the caller's heap or the static empty heap: readable.
    if !unsafe { (*heap).is_initialized() } {
        return ptr::null_mut();
    }
    // A block of a size that is a multiple of the OS page is aligned to it in most pages
    // (they start at OS page boundaries): an aligned one as it comes, else over-allocation.
    if size > SMALL_SIZE_MAX
        && size <= LARGE_OBJ_SIZE_MAX
        && align <= MIN_OS_PAGE
        && size & (align - 1) == 0
    {
        // SAFETY: forwarding the caller's heap (initialised: checked).
        let p = unsafe { malloc(heap, size, zero) };
        if p.is_null() || p as usize & (align - 1) == 0 {
            return p;
        }
        // SAFETY: `p` was just allocated from the caller's heap, whose owner token this is.
        unsafe { crate::free::free(p, (*heap).owner) };
    }
    let Some(padded) = size.checked_add(align - 1) else {
        return ptr::null_mut();
    };
    if align <= OVERALLOC_ALIGN_MAX && padded <= LARGE_OBJ_SIZE_MAX {
        // SAFETY: forwarding the caller's heap.
        return unsafe { malloc_overaligned(heap, size, align, padded, zero) };
    }
    // In the small geometry segments are aligned to a phase, not to absolute addresses,
    // so a huge segment cannot place a block at an absolute alignment: the block is
    // over-allocated instead, and its aligned pointer stays within the first segment size
    // of its segment (where `ptr_segment` finds it) for alignments up to half a segment.
    // Larger alignments are not served.
    #[cfg(feature = "small")]
    return if align <= SEGMENT_SIZE / 2 {
        // SAFETY: forwarding the caller's heap.
        unsafe { malloc_overaligned(heap, size, align, padded, zero) }
    } else {
        ptr::null_mut()
    };
    // SAFETY: forwarding the caller's heap.
    #[cfg(not(feature = "small"))]
    unsafe {
        malloc_generic(heap, size, zero, align)
    }
}

/// `size` bytes aligned to `align` inside a block of `padded = size + align - 1` bytes.
///
/// # Safety
/// `heap` is the calling thread's heap (or the empty heap); `align` is a power of two.
unsafe fn malloc_overaligned(
    heap: *mut RawHeap,
    size: usize,
    align: usize,
    padded: usize,
    zero: bool,
) -> *mut u8 {
    // SAFETY: forwarding the caller's heap.
    let p = unsafe { malloc(heap, padded, false) };
    if p.is_null() {
        return p;
    }
    let aligned = ((p as usize + align - 1) & !(align - 1)) as *mut u8;
    if aligned != p {
        // SAFETY: `p` was just allocated from our own heap.
        unsafe { mark_aligned(p) };
    }
    #[cfg(feature = "debug-mode")]
    // SAFETY: `aligned + size <= p + padded`: within the live block just allocated.
    unsafe {
        crate::debug_mode::set_requested(aligned, size)
    };
    if zero {
        // every usable byte from `aligned` on (see `page_pop_rest`: a zeroing `realloc`
        // may grow within the block)
        // SAFETY: `aligned` lies in the live block just allocated, which has that many
        // usable bytes from it.
        unsafe {
            let usable = crate::free::usable_size(aligned);
            debug_assert!(size <= usable, "an aligned block smaller than its request");
            ptr::write_bytes(aligned, 0, usable)
        };
    }
    aligned
}

/// How many bytes `realloc` asks for when a block of usable size `usable` must grow to
/// `new_size` bytes and moves: at least twice the old usable size, up to
/// `MEDIUM_OBJ_SIZE_MAX` (beyond it, `new_size` itself; huge blocks grow by remapping).
///
/// A block that grows once tends to grow again (a buffer appended to, a string built up):
/// with the headroom the next growth steps fit in place (`realloc` keeps a block whose
/// usable size holds the new size), so a run of small steps copies O(log n) times and
/// walks through few size classes, as `Vec`'s doubling does for its own capacity.
/// A caller that doubles already (`Vec`) asks for about twice the usable size anyway and
/// gets no extra; a block grown once by a little holds at most twice its old size, and
/// only medium blocks (at most 128 KiB) get headroom. `GlobalAlloc` and C `realloc`
/// allow this: the usable size may exceed the request.
#[inline]
pub(crate) fn realloc_growth_size(usable: usize, new_size: usize) -> usize {
    if new_size > usable && new_size < MEDIUM_OBJ_SIZE_MAX {
        new_size.max(usable.saturating_mul(2).min(MEDIUM_OBJ_SIZE_MAX))
    } else {
        new_size
    }
}

/// Whether a block of usable size `usable` growing to `new_size` bytes (below the largest
/// medium size) moves into a huge segment of its own when the source grows regions by
/// remap: a buffer of at least 8 KiB that at least doubles, as `Vec` and the headroom of
/// [`realloc_growth_size`] grow. Its copies stop there: a `Vec` doubling from 8 KiB to
/// 8 MiB copied 8, 16, 32 and 64 KiB before (~16,000 instructions of `rep movsq` under
/// QEMU's count), 8 KiB now. Random sizes (a block of a few bytes reallocated to 20 KiB)
/// keep their size classes: a huge segment costs more to make and free than a page's
/// block.
#[inline]
pub(crate) fn moves_to_huge(usable: usize, new_size: usize) -> bool {
    usable >= SMALL_OBJ_SIZE_MAX / 2 && new_size / 2 >= usable
}

/// The growth sizes (with headroom) below which [`realloc`] moves a block by its short
/// path: below the smallest size that [`moves_to_huge`] may move into a huge segment, and
/// below the medium limit (a huge block's growth threshold).
const REALLOC_FAST_MAX: usize = if SMALL_OBJ_SIZE_MAX / 2 < MEDIUM_OBJ_SIZE_MAX {
    SMALL_OBJ_SIZE_MAX / 2
} else {
    MEDIUM_OBJ_SIZE_MAX
};

/// Re-allocates `p` (null: allocate) to `new_size` bytes aligned to `align`; in place when
/// the block still fits and is not too wasteful; when it moves to grow, with headroom
/// ([`realloc_growth_size`]). Null on failure (then `p` is untouched). With `zero`, the
/// bytes past the old size read as zero when `p` came from a zeroing allocation or
/// realloc (mimalloc's `mi_rezalloc` rule): zeroing allocations zero their whole usable
/// block, and a zeroing realloc keeps the usable bytes past `new_size` zero.
///
/// This is the common case alone; the rest is [`realloc_general`] (a tail call). A block
/// of a page of the calling thread's with no flag set (not full, no aligned pointer into a
/// block: `flags`, written by that thread alone, read here without a race, as `free`'s
/// local path reads it) starts at its block, so its usable size is the block size; such a
/// block that still fits (and is not too wasteful) stays, and one that grows to a size of
/// the direct table or of a small page's medium classes, by the common rules (no zeroing,
/// an alignment that `malloc` gives by size: as `malloc_aligned`'s first test), moves at
/// once: `malloc` inlined, the copy, the local free of its page (found once). None of
/// `realloc_general`'s special cases applies to it: it is not a huge block (checked: its
/// segment's kind), and its new size stays below the medium limit and below twice 8 KiB,
/// so that it neither becomes huge nor doubles from 8 KiB on ([`moves_to_huge`]:
/// `size < new_size <= grow < SMALL_OBJ_SIZE_MAX / 2`). cfrac's strings and fixed-heap's
/// `Vec`s grow this way some 250,000 times a run each: with the general function's tests
/// and the page looked up twice this cost 90 instructions a move (rusty_alloc 55).
///
/// A block that moves keeps its first `in_use` bytes (at most its usable size and
/// `new_size`): the size the caller knows the block to hold (`GlobalAlloc`'s old layout
/// size), `usize::MAX` when it knows none (C's `realloc`: the usable size is kept). A huge
/// block's usable size may be half again its request or more (a block grown and shrunk in
/// place, growth room), so a move copies no bytes the caller does not use (but for the
/// common path's small blocks, below `REALLOC_FAST_MAX`, copied whole).
///
/// # Safety
/// `heap` is the calling thread's heap, `owner` its owner token (`(*heap).owner`); `p` is
/// null or a live block; `align` is a power of two; `in_use` is at least the bytes the
/// caller needs kept.
#[inline]
pub(crate) unsafe fn realloc(
    heap: *mut RawHeap,
    owner: usize,
    p: *mut u8,
    in_use: usize,
    new_size: usize,
    align: usize,
    zero: bool,
) -> *mut u8 {
    #[cfg(not(any(feature = "secure", feature = "debug-mode")))]
    if !p.is_null() && !zero {
        let segment = ptr_segment(p);
        // SAFETY: `p` is a live block (caller): its segment and page are live; the owner
        // is atomic; the page's `flags` and `block_size` are read only when the page is
        // ours (its owner is the only writer).
        unsafe {
            let page = Segment::page_of_raw(segment, p);
            if (*segment).owner.load(Ordering::Relaxed) == owner && (*page).flags == 0 {
                let size = (*page).block_size;
                if new_size > size {
                    // `realloc_growth_size` below the medium limit (beyond, the test fails)
                    let grow = new_size.max(2 * size);
                    if grow < REALLOC_FAST_MAX
                        && align <= WORD
                        && (*segment).kind != SegmentKind::Huge
                    {
                        // every block is word-aligned; a miss of the fast path allocates
                        // on the general path (so that nothing but the copy is a call here)
                        let q = if grow <= SMALL_SIZE_MAX {
                            malloc_small_fast(heap, grow, false)
                        } else {
                            malloc_queue_try(heap, grow, false)
                        };
                        if !q.is_null() {
                            // `p` holds `size` bytes and `q` at least `grow > size`, and
                            // they are distinct blocks; `p` is given up by the caller,
                            // freed into its page, which is ours (above). (The whole block:
                            // it is small, and `size.min(in_use)` cost cfrac and fixed-heap
                            // 2 instructions a call, ~0.1-0.2% under callgrind, where their
                            // layouts are their blocks' sizes or nearly.)
                            ptr::copy_nonoverlapping(p, q, size);
                            crate::free::free_local_block(p, page);
                            return q;
                        }
                    }
                } else if new_size >= size / 2 && p as usize & (align - 1) == 0 {
                    return p;
                }
            }
        }
    }
    // Secure mode: the same common path once the check of every free passed for `p` (its
    // page found by the check, not looked up again); the moved block is freed as `free`
    // frees it after that check (zeroed). Anything the check does not pass goes to
    // `realloc_general`, whose free reports it, as before.
    #[cfg(all(feature = "secure", not(feature = "debug-mode")))]
    if !p.is_null() && !zero {
        // SAFETY: `p` is not null.
        if let Some((segment, page)) = unsafe { crate::free::secure_live_block(p) } {
            // SAFETY: `p` is the start of a live block of `page` in `segment` (checked);
            // the owner is atomic; the page's `flags` and `block_size` are read only when
            // the page is ours (its owner is the only writer).
            unsafe {
                if (*segment).owner.load(Ordering::Relaxed) == owner && (*page).flags == 0 {
                    let size = (*page).block_size;
                    if new_size > size {
                        let grow = new_size.max(2 * size);
                        if grow < REALLOC_FAST_MAX
                            && align <= WORD
                            && (*segment).kind != SegmentKind::Huge
                        {
                            let q = if grow <= SMALL_SIZE_MAX {
                                malloc_small_fast(heap, grow, false)
                            } else {
                                malloc_queue_try(heap, grow, false)
                            };
                            if !q.is_null() {
                                // `p` holds `size` bytes and `q` at least `grow > size`,
                                // distinct blocks; `p` is given up by the caller and
                                // passed the check of every free (above)
                                ptr::copy_nonoverlapping(p, q, size);
                                crate::free::free_secure_checked(p, segment, page, owner);
                                return q;
                            }
                        }
                    } else if new_size >= size / 2 && p as usize & (align - 1) == 0 {
                        return p;
                    }
                }
            }
        }
    }
    // (`owner` is read by the common paths only; `realloc_general` reads the heap's)
    #[cfg(feature = "debug-mode")]
    let _ = owner;
    // SAFETY: forwarding the caller's contract.
    unsafe { realloc_general(heap, p, in_use, new_size, align, zero) }
}

const _: () = assert!(REALLOC_FAST_MAX <= MEDIUM_OBJ_SIZE_MAX);

/// [`realloc_general`]'s short move: a block of `alloc_size` bytes from `malloc`, the first
/// `copy` bytes of `p` copied into it, `p` freed, the new block's request recorded as
/// `new_size` in debug mode (headroom is not part of the request). Null when out of memory,
/// `p` then untouched.
///
/// # Safety
/// As [`realloc`]; `p` is live, not null, with at least `copy` usable bytes, and
/// `copy <= alloc_size`.
#[inline(always)]
unsafe fn realloc_short_move(
    heap: *mut RawHeap,
    owner: usize,
    p: *mut u8,
    alloc_size: usize,
    copy: usize,
    new_size: usize,
) -> *mut u8 {
    let _ = new_size; // (read in debug mode only)
                      // SAFETY: forwarding the caller's heap.
    let q = unsafe { malloc(heap, alloc_size, false) };
    if !q.is_null() {
        // SAFETY: `p` holds at least `copy` bytes and `q` at least `alloc_size >= copy`;
        // they are distinct blocks (`p` is live); `p` is given up by the caller (freed with
        // its owner token).
        unsafe {
            ptr::copy_nonoverlapping(p, q, copy);
            crate::free::free(p, owner);
            #[cfg(feature = "debug-mode")]
            crate::debug_mode::set_requested(q, new_size);
        }
    }
    q
}

/// [`realloc`] of the cases its common path leaves: null, zeroing, debug mode, blocks of
/// other threads' pages or of pages with flags, shrinking, large or over-aligned growth.
///
/// Its owner token is the heap's (`realloc`'s callers pass `(*heap).owner`): six arguments,
/// all in registers (a seventh went to the stack: 5 instructions a `realloc` more).
///
/// # Safety
/// As [`realloc`].
#[inline(never)]
unsafe fn realloc_general(
    heap: *mut RawHeap,
    p: *mut u8,
    in_use: usize,
    new_size: usize,
    align: usize,
    zero: bool,
) -> *mut u8 {
    // SAFETY: `heap` is the calling thread's heap or the empty heap (caller): readable.
    let owner = unsafe { (*heap).owner };
    if p.is_null() {
        // SAFETY: forwarding the caller's heap.
        return unsafe { malloc_aligned(heap, new_size, align, zero) };
    }
    let segment = ptr_segment(p);
    // The usable size: as in `realloc` for a block of a page of ours without aligned
    // pointers into blocks; else, and in debug mode (the requested size), the general
    // computation (a division).
    // SAFETY: `p` is a live block (caller): its segment and page are live; the owner is
    // atomic; the page's `flags` and `block_size` are read only when the page is ours.
    let size = unsafe {
        let page = Segment::page_of_raw(segment, p);
        if !cfg!(feature = "debug-mode")
            && (*segment).owner.load(Ordering::Relaxed) == owner
            && (*page).flags & FLAG_HAS_ALIGNED == 0
        {
            (*page).block_size
        } else {
            usable_size(p)
        }
    };
    // A block growing by `realloc`'s common rules that its common path left (a full page
    // of ours; a block of another thread's page): the same short move
    if new_size > size && !zero {
        let grow = realloc_growth_size(size, new_size);
        if grow < REALLOC_FAST_MAX
            && align <= MAX_ALIGN_SIZE
            && grow & (align - 1) == 0
            // SAFETY: `p` is live (caller), so is its segment header.
            && unsafe { (*segment).kind } != SegmentKind::Huge
        {
            // SAFETY: as in `realloc`; `grow > size`, so the new block holds `p`'s bytes.
            let q = unsafe { realloc_short_move(heap, owner, p, grow, size.min(in_use), new_size) };
            if !q.is_null() {
                return q;
            }
            // out of memory with the headroom: the general path below tries without it
        }
    }
    if new_size <= size && new_size >= size / 2 && p as usize & (align - 1) == 0 {
        if zero && new_size < size {
            // a zeroing realloc that grows within the block later must find zeros here
            // SAFETY: `p + new_size .. p + size` are usable bytes of the live block `p`,
            // which the caller gives us to resize: past `new_size` nothing is kept.
            unsafe { ptr::write_bytes(p.add(new_size), 0, size - new_size) };
        }
        #[cfg(feature = "debug-mode")]
        // SAFETY: `p` is live and given to us (caller); `new_size <= size` fits.
        unsafe {
            crate::debug_mode::set_requested(p, new_size)
        };
        return p;
    }
    // A block shrinking below half its size, to a size the short path above serves (no
    // zeroing, an alignment that every block has or that `malloc` gives by size), moves
    // the same way: what the general path below does with it too, through
    // `malloc_aligned`'s tests (sh8bench's halving `realloc`s took it 4,900 times; a
    // `Layout` of align 8 and an odd size failed `malloc_aligned`'s first test).
    if new_size < size / 2
        && !zero
        && new_size < REALLOC_FAST_MAX
        && crate::size_class::aligned_by_size(new_size, align)
    {
        // SAFETY: forwarding the caller's heap; every block is word-aligned, and a block of
        // a multiple of `align <= MAX_ALIGN_SIZE` bytes (at least `align`) is aligned to
        // `align` (as `malloc_aligned`'s first test); `p` holds `size > new_size` bytes.
        let q =
            unsafe { realloc_short_move(heap, owner, p, new_size, new_size.min(in_use), new_size) };
        if !q.is_null() {
            return q;
        }
        // out of memory: the general path below fails alike
    }
    // a huge block of ours grows or shrinks by remapping its segment, or grows into the
    // room its segment reserved: no copy (blocks of medium sizes may be huge too, see
    // below)
    let mut remapped = false;
    if (new_size >= MEDIUM_OBJ_SIZE_MAX || new_size > size) && align <= MAX_ALIGN_SIZE && !zero {
        // SAFETY: `p` is live (caller), so are its segment and page; the page is written
        // only when its heap is ours (checked first).
        unsafe {
            if (*segment).kind == SegmentKind::Huge
                && (*segment).owner.load(Ordering::Relaxed) == owner
            {
                let page = (*segment).page_of(p);
                if (*page).page_start() == p && (*heap).is_initialized() && (*page).heap() == heap {
                    // growth into the room reserved behind the block: the header stays
                    // where it is, so the page stays in its queue (~40 instructions
                    // fewer a growth step than taking it out and back)
                    // (`Some(false)`: the room is there, the memory to commit it is not; a
                    // remap would find the same, so the block moves below)
                    let reserved = segment::huge_grow_reserved(page, padded(new_size));
                    if reserved == Some(true) {
                        #[cfg(feature = "debug-mode")]
                        // the block's end moved: its padding too (as below)
                        crate::debug_mode::set_requested(p, new_size);
                        return p;
                    }
                    if reserved.is_none() {
                        // the segment header (and so the page) may move: out of the queue
                        // meanwhile
                        (*heap).queue_remove(page, BIN_HUGE);
                        // (the segment is ours, so its owner data is our thread context's)
                        remapped = true;
                        let moved = segment::huge_remap(
                            &mut (*(*heap).tld).segments,
                            page,
                            padded(new_size),
                        );
                        let page = if moved.is_null() { page } else { moved };
                        (*heap).queue_push(page);
                        if !moved.is_null() {
                            #[cfg(feature = "debug-mode")]
                            // the block's end moved: its padding too (it holds `new_size`
                            // and it)
                            crate::debug_mode::set_requested((*moved).page_start(), new_size);
                            return (*moved).page_start();
                        }
                    }
                }
            }
        }
    }
    // A block growing to the largest medium size or beyond, or a buffer doubling from 8 KiB
    // on ([`moves_to_huge`]), over a source that grows regions by remap (a kernel's page
    // mapper), moves into a huge segment of its own: this copy is its last, every further
    // growth commits the room reserved behind it or remaps (as above).
    let mut q = ptr::null_mut();
    if new_size > size
        && (new_size >= MEDIUM_OBJ_SIZE_MAX || moves_to_huge(size, new_size))
        && new_size <= LARGE_OBJ_SIZE_MAX
        && align <= MAX_ALIGN_SIZE
    {
        // SAFETY: `p` is live (caller), so is its segment, whose `os` was set at creation
        // from a `&'static Os`; the heap is the caller's (initialised: checked).
        unsafe {
            if (*heap).is_initialized() && (*(*ptr_segment(p)).os).source.grows_by_remap() {
                q = malloc_generic(heap, new_size, false, MAX_ALIGN_SIZE);
            }
        }
    }
    if q.is_null() {
        // SAFETY: forwarding the caller's heap.
        q = unsafe { malloc_aligned(heap, realloc_growth_size(size, new_size), align, false) };
    }
    if q.is_null() {
        // SAFETY: as above, without the headroom.
        q = unsafe { malloc_aligned(heap, new_size, align, false) };
    }
    if remapped {
        // the hint `huge_remap` may have left for the allocation just made (a growing huge
        // block's next region), when that allocation did not take it
        // SAFETY: the heap is initialised (checked before `huge_remap`), so its `tld` is
        // live, and the calling thread's.
        unsafe { (*(*heap).tld).segments.huge_grows = false };
    }
    if q.is_null() {
        return q;
    }
    // the bytes in use only: a huge block's usable size may exceed its request by half
    // or more (zeroing: the caller knows no size, `in_use` is `usize::MAX`)
    let keep = size.min(new_size).min(in_use);
    // SAFETY: `p` holds `size` bytes and `q` at least `new_size`, and they are distinct
    // blocks; `p` is given up by the caller (freed with our owner token).
    unsafe {
        ptr::copy_nonoverlapping(p, q, keep);
        if zero {
            // every usable byte past the old ones, the headroom too (see `page_pop_rest`)
            let usable = usable_size(q);
            if usable > keep {
                ptr::write_bytes(q.add(keep), 0, usable - keep);
            }
        }
        crate::free::free(p, owner);
        #[cfg(feature = "debug-mode")]
        // the headroom of a growing block is not part of the request: an overflow into it
        // is reported
        crate::debug_mode::set_requested(q, new_size);
    }
    q
}
