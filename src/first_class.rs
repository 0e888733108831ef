//! First-class heaps: made, deleted and destroyed by the thread that owns them, and their
//! blocks visited — the one implementation behind the Rust [`Heap`](crate::Heap) and
//! mimalloc's `mi_heap_*`.
//!
//! - delete hands the heap's live blocks to the thread's backing heap;
//! - destroy frees them all at once, without looking at them;
//! - blocks of a first-class heap may be freed by any thread, before or after.

use core::ptr::{self, addr_of_mut};
use core::sync::atomic::Ordering;

use crate::alloc::malloc_aligned;
use crate::free::{free, heap_delayed_free};
use crate::heap::{for_each_page, RawHeap};
use crate::page::{Delayed, Page};
use crate::page_queue::page_free;
use crate::size_class::{SMALL_PAGE_SIZE, WORD};

/// A new heap of the thread whose backing heap is `backing`; its struct is a block of the
/// backing heap. Null when out of memory.
///
/// # Safety
/// `backing` is the calling thread's initialised backing heap.
pub(crate) unsafe fn heap_new(backing: *mut RawHeap) -> *mut RawHeap {
    // SAFETY: the caller owns `backing`; the block is big and aligned enough for a
    // `RawHeap`, and ours alone.
    unsafe {
        let mem = malloc_aligned(
            backing,
            core::mem::size_of::<RawHeap>(),
            core::mem::align_of::<RawHeap>(),
            false,
        ) as *mut RawHeap;
        if !mem.is_null() {
            RawHeap::init(mem, (*backing).tld);
        }
        mem
    }
}

/// Deletes a first-class heap: its live blocks move to the thread's backing heap (they stay
/// valid), and its struct is freed.
///
/// # Safety
/// `heap` is an initialised first-class heap (not the backing heap) of the calling thread;
/// it is not used afterwards.
pub(crate) unsafe fn heap_delete(heap: *mut RawHeap) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let backing = (*(*heap).tld).heap_backing;
        debug_assert!(heap != backing);
        heap_absorb(backing, heap);
        heap_release(heap);
    }
}

/// Destroys a first-class heap: every page is freed at once (its blocks with it), and its
/// struct is freed.
///
/// # Safety
/// `heap` is an initialised first-class heap (not the backing heap) of the calling thread;
/// neither it nor any of its blocks is used afterwards.
pub(crate) unsafe fn heap_destroy(heap: *mut RawHeap) {
    // SAFETY: as the caller guarantees.
    unsafe {
        debug_assert!(heap != (*(*heap).tld).heap_backing);
        for_each_page(heap, |page, _| {
            (*page).use_delayed_free(Delayed::NeverDelayedFree, false)
        });
        (*heap)
            .thread_delayed_free
            .store(ptr::null_mut(), Ordering::Relaxed);
        for_each_page(heap, |page, bin| page_free(heap, page, bin));
        heap_release(heap);
    }
}

/// Unlinks an emptied heap from its thread and frees its struct.
///
/// # Safety
/// `heap` is an initialised heap of the calling thread with no page, not the backing heap.
unsafe fn heap_release(heap: *mut RawHeap) {
    // SAFETY: as the caller guarantees; the struct is a block of the backing heap, freed
    // by its owner.
    unsafe {
        debug_assert_eq!((*heap).page_count, 0);
        let owner = (*heap).owner;
        let tld = (*heap).tld;
        let mut link: *mut *mut RawHeap = addr_of_mut!((*tld).heaps);
        while !(*link).is_null() {
            if *link == heap {
                *link = (*heap).next;
                break;
            }
            link = addr_of_mut!((**link).next);
        }
        free(heap as *mut u8, owner);
    }
}

/// Gives all pages of `heap` to `into` (same thread), so that `heap` can be freed while
/// its blocks stay valid.
///
/// # Safety
/// Both heaps belong to the calling thread.
unsafe fn heap_absorb(into: *mut RawHeap, heap: *mut RawHeap) {
    // SAFETY: as the caller guarantees.
    unsafe {
        heap_delayed_free(heap, true);
        for_each_page(heap, |page, bin| {
            (*heap).queue_remove(page, bin);
            (*page).xheap.store(into, Ordering::Release);
            (*page).retire_expire = 0; // `into`'s retired range does not cover it
            // A remote free may have read the old heap just before the store and be
            // pushing to its delayed list: wait until it is done, so that from here on
            // only `into` is used, and the final pass below sees its block.
            while (*page).is_delayed_freeing() {
                core::hint::spin_loop();
            }
            (*into).queue_push_back(page, bin);
        });
        // a remote free may still have reached `heap`'s list in the meantime
        heap_delayed_free(heap, true);
    }
}

/// One page of a heap, as the visitor of [`heap_visit`] sees it (mimalloc's
/// `mi_heap_area_t`).
#[cfg_attr(not(feature = "override"), allow(dead_code))] // all fields are read by the C API
pub(crate) struct Area {
    /// Start of the page's blocks.
    pub blocks: *mut u8,
    /// Bytes of blocks the page can hold, and those made so far.
    pub reserved: usize,
    pub committed: usize,
    /// Blocks live in the page.
    pub used: usize,
    pub block_size: usize,
}

/// Calls `f(area, null)` once per page of `heap`, and with `blocks`, `f(area, block)` once
/// per live block of it; stops when `f` returns false. Returns whether all were visited.
/// Delayed and remote frees are applied first, so that the counts are exact.
///
/// # Safety
/// `heap` is the calling thread's initialised heap; `f` does not allocate from or free
/// into it.
pub(crate) unsafe fn heap_visit(
    heap: *mut RawHeap,
    blocks: bool,
    mut f: impl FnMut(&Area, *mut u8) -> bool,
) -> bool {
    // SAFETY: the caller owns the heap and its pages.
    unsafe {
        heap_delayed_free(heap, true);
        let mut go_on = true;
        for_each_page(heap, |page, _| {
            if go_on {
                (*page).collect(true);
                go_on = page_visit(page, blocks, &mut f);
            }
        });
        go_on
    }
}

/// # Safety
/// The calling thread owns `page`, whose free lists are collected into `free`.
unsafe fn page_visit(
    page: *mut Page,
    blocks: bool,
    f: &mut impl FnMut(&Area, *mut u8) -> bool,
) -> bool {
    // SAFETY: as the caller guarantees: `free` holds every free block of the page.
    unsafe {
        let p = &*page;
        let bsize = p.block_size;
        let cap = p.capacity as usize;
        let area = Area {
            blocks: p.page_start,
            reserved: p.reserved as usize * bsize,
            committed: cap * bsize,
            used: p.used as usize,
            block_size: bsize,
        };
        if !f(&area, ptr::null_mut()) {
            return false;
        }
        if !blocks || p.used == 0 {
            return true;
        }
        // one bit per block, set for free blocks: a 64 KiB page of 8-byte blocks has the
        // most (larger pages hold larger blocks)
        const MAX_BLOCKS: usize = SMALL_PAGE_SIZE / WORD;
        debug_assert!(cap <= MAX_BLOCKS);
        if cap > MAX_BLOCKS {
            return true;
        }
        let mut free_map = [0u64; MAX_BLOCKS / 64];
        let mut b = p.free;
        while !b.is_null() {
            let i = (b as usize - p.page_start as usize) / bsize;
            free_map[i / 64] |= 1 << (i % 64);
            b = (*b).next;
        }
        for i in 0..cap {
            if free_map[i / 64] & (1 << (i % 64)) == 0 && !f(&area, p.page_start.add(i * bsize))
            {
                return false;
            }
        }
        true
    }
}
