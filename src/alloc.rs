//! Allocation: the small-size fast path through the direct table, the generic path, huge
//! blocks, aligned allocation, `realloc` and `usable_size`.

use core::ptr;
use core::sync::atomic::Ordering;

use crate::heap::{
    find_free_page, heap_check, heap_collect, heap_collect_retired, heap_delayed_free_partial,
    page_sync_stats, Collect, RawHeap,
};
use crate::page::{Delayed, Page, FLAG_HAS_ALIGNED};
use crate::segment::{self, ptr_segment, SegmentKind};
use crate::size_class::*;

/// Pops a block of `page` (whose `free` list is not empty), zeroing `size` bytes of it
/// when asked.
///
/// # Safety
/// The caller owns `page` and `page.free` is not null.
#[inline(always)]
unsafe fn page_pop(page: *mut Page, size: usize, zero: bool) -> *mut u8 {
    // SAFETY: as the caller guarantees; the block is free, so ours to hand out.
    unsafe {
        let block = (*page).free;
        (*page).free = (*block).next;
        (*page).used += 1;
        if zero {
            if (*page).free_is_zero {
                (*block).next = ptr::null_mut();
            } else {
                ptr::write_bytes(block as *mut u8, 0, size);
            }
        }
        block as *mut u8
    }
}

/// Allocates `size <= SMALL_SIZE_MAX` bytes: a table load, a list pop and a store.
/// About 8 instructions when the page has a free block.
///
/// # Safety
/// `heap` is the calling thread's heap (or the empty heap).
#[inline(always)]
pub(crate) unsafe fn malloc_small(heap: *mut RawHeap, size: usize, zero: bool) -> *mut u8 {
    debug_assert!(size <= SMALL_SIZE_MAX);
    // SAFETY: the table entry is a live page (or the empty page, whose `free` is null and
    // which is never written); the caller owns the heap.
    unsafe {
        let page = (*heap).pages_direct[wsize_from_size(size)];
        if (*page).free.is_null() {
            return malloc_generic(heap, size, zero, 0);
        }
        page_pop(page, size, zero)
    }
}

/// Allocates `size` bytes aligned to `MAX_ALIGN_SIZE` when `size` is a multiple of it
/// (to the word otherwise). Null when out of memory or when `heap` is the empty heap.
///
/// # Safety
/// `heap` is the calling thread's heap (or the empty heap).
#[inline(always)]
pub(crate) unsafe fn malloc(heap: *mut RawHeap, size: usize, zero: bool) -> *mut u8 {
    if size <= SMALL_SIZE_MAX {
        // SAFETY: as the caller guarantees.
        unsafe { malloc_small(heap, size, zero) }
    } else {
        // SAFETY: as the caller guarantees.
        unsafe { malloc_generic(heap, size, zero, 0) }
    }
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
    // SAFETY: the caller owns `heap`; `tld` is its thread's data.
    unsafe {
        if !(*heap).is_initialized() {
            return ptr::null_mut();
        }
        if size > isize::MAX as usize - SEGMENT_SIZE {
            (*(*heap).tld)
                .domain()
                .stats
                .out_of_memory
                .fetch_add(1, Ordering::Relaxed);
            return ptr::null_mut();
        }
        let tld = &mut *(*heap).tld;
        tld.heartbeat += 1;
        let domain = tld.domain();
        domain.tick();
        heap_delayed_free_partial(heap);
        heap_collect_retired(heap, false);
        if tld.heartbeat % 16 == 0 {
            segment::segments_purge(tld, false);
            domain.cache_collect(false);
        }
        if cfg!(debug_assertions) && tld.heartbeat % 4096 == 0 {
            heap_check(heap);
        }
        let mut page = find_page(heap, size, huge_align);
        if page.is_null() {
            // out of memory: give everything unused back and try once more
            heap_collect(heap, Collect::Force);
            page = find_page(heap, size, huge_align);
        }
        if page.is_null() {
            domain.stats.out_of_memory.fetch_add(1, Ordering::Relaxed);
            return ptr::null_mut();
        }
        debug_assert!(!(*page).free.is_null());
        if cfg!(debug_assertions) {
            (*page).check();
            (*ptr_segment((*page).page_start)).check();
        }
        let p = page_pop(page, size, zero);
        page_sync_stats(page, &mut *(*heap).tld);
        p
    }
}

/// # Safety
/// `heap` is the calling thread's initialised heap.
unsafe fn find_page(heap: *mut RawHeap, size: usize, huge_align: usize) -> *mut Page {
    // SAFETY: as the caller guarantees.
    unsafe {
        if size > LARGE_OBJ_SIZE_MAX || huge_align > 0 {
            return huge_page_alloc(heap, size, huge_align);
        }
        find_free_page(heap, bin(size))
    }
}

/// # Safety
/// `heap` is the calling thread's initialised heap.
unsafe fn huge_page_alloc(heap: *mut RawHeap, size: usize, align: usize) -> *mut Page {
    // SAFETY: as the caller guarantees.
    unsafe {
        let tld = &mut *(*heap).tld;
        let bsize = (size.max(1) + WORD - 1) & !(WORD - 1);
        let page = segment::segment_page_alloc(heap, tld, bsize, Some(align.max(MAX_ALIGN_SIZE)));
        if page.is_null() {
            return page;
        }
        // its one block is handed out at once: treat it as full, so a remote free goes
        // to our delayed list and we learn about it
        (*page).use_delayed_free(Delayed::UseDelayedFree, false);
        (*heap).pages[BIN_HUGE].push_front(page);
        (*heap).page_count += 1;
        page
    }
}

// ---------------------------------------------------------------------------------------
// sizes, alignment, realloc

/// The usable size of the block at (or aligned into) `p`.
///
/// # Safety
/// `p` is a live block of this allocator.
pub(crate) unsafe fn usable_size(p: *const u8) -> usize {
    // SAFETY: as the caller guarantees.
    unsafe {
        let segment = ptr_segment(p);
        let page = (*segment).page_of(p);
        if (*page).flags & FLAG_HAS_ALIGNED != 0 {
            let block = (*page).block_of(p as *mut u8) as usize;
            (*page).block_size - (p as usize - block)
        } else {
            (*page).block_size
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
    // SAFETY: as the caller guarantees.
    unsafe {
        if align <= MAX_ALIGN_SIZE && size & (align - 1) == 0 && (size >= align || align <= WORD) {
            return malloc(heap, size, zero);
        }
        // a small block that happens to be aligned already
        if size <= SMALL_SIZE_MAX && align <= size {
            let page = (*heap).pages_direct[wsize_from_size(size)];
            let free = (*page).free;
            if !free.is_null() && free as usize & (align - 1) == 0 {
                return page_pop(page, size, zero);
            }
        }
        if !(*heap).is_initialized() {
            return ptr::null_mut();
        }
        let Some(padded) = size.checked_add(align - 1) else {
            return ptr::null_mut();
        };
        if align <= OVERALLOC_ALIGN_MAX && padded <= LARGE_OBJ_SIZE_MAX {
            let p = malloc(heap, padded, false);
            if p.is_null() {
                return p;
            }
            let aligned = ((p as usize + align - 1) & !(align - 1)) as *mut u8;
            if aligned != p {
                let page = (*ptr_segment(p)).page_of(p);
                (*page).flags |= FLAG_HAS_ALIGNED;
            }
            if zero {
                ptr::write_bytes(aligned, 0, size);
            }
            return aligned;
        }
        malloc_generic(heap, size, zero, align)
    }
}

/// Re-allocates `p` (null: allocate) to `new_size` bytes aligned to `align`; in place when
/// the block still fits and is not too wasteful. Null on failure (then `p` is untouched).
///
/// # Safety
/// `heap` is the calling thread's heap, `tid` its token; `p` is null or a live block.
pub(crate) unsafe fn realloc(
    heap: *mut RawHeap,
    tid: usize,
    p: *mut u8,
    new_size: usize,
    align: usize,
    zero: bool,
) -> *mut u8 {
    // SAFETY: as the caller guarantees.
    unsafe {
        if p.is_null() {
            return malloc_aligned(heap, new_size, align, zero);
        }
        let size = usable_size(p);
        if new_size <= size && new_size >= size / 2 && p as usize & (align - 1) == 0 {
            return p;
        }
        // a huge block of ours grows or shrinks by remapping its segment: no copy
        if new_size > LARGE_OBJ_SIZE_MAX && align <= MAX_ALIGN_SIZE && !zero {
            let segment = ptr_segment(p);
            let page = (*segment).page_of(p);
            if (*segment).kind == SegmentKind::Huge
                && (*segment).thread_id.load(Ordering::Relaxed) == tid
                && (*page).page_start == p
                && (*heap).is_initialized()
                && (*page).heap() == heap
            {
                let q = segment::huge_remap(heap, page, &mut *(*heap).tld, new_size);
                if !q.is_null() {
                    return q;
                }
            }
        }
        let q = malloc_aligned(heap, new_size, align, false);
        if q.is_null() {
            return q;
        }
        let keep = size.min(new_size);
        ptr::copy_nonoverlapping(p, q, keep);
        if zero && new_size > keep {
            ptr::write_bytes(q.add(keep), 0, new_size - keep);
        }
        crate::free::free(p, tid);
        q
    }
}
