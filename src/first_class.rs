//! First-class heaps — the one implementation behind the Rust [`Heap`](crate::Heap) and
//! mimalloc's `mi_heap_*`:
//! - per-thread heaps (`RawHeap`): made, deleted and destroyed by the thread that owns
//!   them, and their blocks visited; delete hands the heap's live blocks to the thread's
//!   backing heap, destroy frees them all at once, without looking at them;
//! - shared heaps (mimalloc v3's heaps, any thread's) are built on these, in `shared.rs`.
//!
//! Blocks of any heap may be freed by any thread, before or after.
//!
//! Kernels (no `std`) have no first-class heaps yet: there, this module is unused.
#![cfg_attr(not(feature = "std"), allow(dead_code))]

use crate::sync::Ordering;
use core::ptr::{self, addr_of_mut};

use crate::alloc::malloc_aligned;
use crate::free::{free, heap_delayed_free};
use crate::heap::{for_each_page, OwnedHeap, RawHeap};
use crate::page::{Delayed, Page};
use crate::page_queue::page_free;
use crate::size_class::{SMALL_PAGE_SIZE, WORD};

/// A new heap of the thread whose backing heap is `backing`; its struct is a block of the
/// backing heap. Null when out of memory.
pub(crate) fn heap_new(backing: OwnedHeap) -> *mut RawHeap {
    // SAFETY: the token proves `backing` is the calling thread's initialised heap.
    let mem = unsafe {
        malloc_aligned(
            backing.as_ptr(),
            core::mem::size_of::<RawHeap>(),
            core::mem::align_of::<RawHeap>(),
            false,
        )
    } as *mut RawHeap;
    if !mem.is_null() {
        // SAFETY: a fresh block, big and aligned enough for a `RawHeap`, ours alone; the
        // thread context is the calling thread's (the token).
        unsafe { RawHeap::init(mem, backing.tld()) };
    }
    mem
}

/// Deletes a first-class heap: its live blocks move to the thread's backing heap (they stay
/// valid), and its struct is freed.
///
/// # Safety
/// `heap` is a first-class heap (not the backing heap); it is not used afterwards.
pub(crate) unsafe fn heap_delete(heap: OwnedHeap) {
    // SAFETY: the token proves the heap's thread context is live and ours.
    let backing = unsafe { (*heap.tld()).heap_backing };
    debug_assert!(heap.as_ptr() != backing);
    // SAFETY: the backing heap of our thread is initialised and ours.
    heap_absorb(unsafe { OwnedHeap::new(backing) }, heap);
    // SAFETY: the heap has no page left (absorbed), is not the backing heap, and is not
    // used afterwards (caller).
    unsafe { heap_release(heap) };
}

/// Destroys a first-class heap: every page is freed at once (its blocks with it), and its
/// struct is freed.
///
/// # Safety
/// `heap` is a first-class heap (not the backing heap); neither it nor any of its blocks
/// is used afterwards.
pub(crate) unsafe fn heap_destroy(heap: OwnedHeap) {
    for_each_page(heap, |page, _| {
        // SAFETY: a page in our heap's queues is live; its state is atomic.
        unsafe { (*page).use_delayed_free(Delayed::NeverDelayedFree, false) }
    });
    // SAFETY: the token proves the heap is live; the list head is atomic.
    unsafe { &(*heap.as_ptr()).thread_delayed_free }.store(ptr::null_mut(), Ordering::Relaxed);
    // SAFETY: every page is in its queue `bin`, and no block of the heap is used
    // afterwards (caller).
    for_each_page(heap, |page, bin| unsafe { page_free(heap, page, bin) });
    // SAFETY: the heap has no page left, and is not used afterwards (caller).
    unsafe { heap_release(heap) };
}

/// Unlinks an emptied heap from its thread and frees its struct.
///
/// # Safety
/// The heap has no page, is not the backing heap, and is not used afterwards.
pub(crate) unsafe fn heap_release(heap: OwnedHeap) {
    let h = heap.as_ptr();
    // SAFETY: the token proves the heap and its thread context are live and ours.
    let (owner, tld) = unsafe { ((*h).owner, &mut *heap.tld()) };
    debug_assert!(h != tld.heap_backing);
    let mut link: *mut *mut RawHeap = addr_of_mut!(tld.heaps);
    // SAFETY: the thread's list of heaps holds live heaps of ours, linked through `next`.
    unsafe {
        debug_assert_eq!((*h).page_count, 0);
        while !(*link).is_null() {
            if *link == h {
                *link = (*h).next;
                break;
            }
            link = addr_of_mut!((**link).next);
        }
    }
    // SAFETY: the struct is a live block of our backing heap, and no longer used (caller).
    unsafe { free(h as *mut u8, owner) };
}

/// Gives all pages of `heap` to `into` (heaps of the same thread), so that `heap` can be
/// freed while its blocks stay valid.
fn heap_absorb(into: OwnedHeap, heap: OwnedHeap) {
    heap_delayed_free(heap, true);
    for_each_page(heap, |page, bin| {
        // SAFETY: both heaps are ours (tokens), and so is the page, in `heap`'s queue `bin`.
        unsafe {
            (*heap.as_ptr()).queue_remove(page, bin);
            (*page).set_heap(into.as_ptr());
            (*page).retire_expire = 0; // `into`'s retired range does not cover it
                                       // A remote free may have read the old heap just before the store and be
                                       // pushing to its delayed list: wait until it is done, so that from here on
                                       // only `into` is used, and the final pass below sees its block.
            while (*page).is_delayed_freeing() {
                core::hint::spin_loop();
            }
            (*into.as_ptr()).queue_push_back(page, bin);
        }
    });
    // a remote free may still have reached `heap`'s list in the meantime
    heap_delayed_free(heap, true);
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
/// Delayed and remote frees are applied first, so that the counts are exact. (`f` must not
/// allocate from or free into the heap.)
pub(crate) fn heap_visit(
    heap: OwnedHeap,
    blocks: bool,
    mut f: impl FnMut(&Area, *mut u8) -> bool,
) -> bool {
    heap_delayed_free(heap, true);
    let mut go_on = true;
    for_each_page(heap, |page, _| {
        if go_on {
            // SAFETY: a page in our heap's queues is live and ours; collecting with
            // `force` leaves every free block in `free`.
            unsafe {
                Page::collect(page, true);
                go_on = page_visit(page, blocks, &mut f);
            }
        }
    });
    go_on
}

/// # Safety
/// The calling thread owns `page`, whose free lists are collected into `free`.
unsafe fn page_visit(
    page: *mut Page,
    blocks: bool,
    f: &mut impl FnMut(&Area, *mut u8) -> bool,
) -> bool {
    // SAFETY: the calling thread owns the page (caller); nothing else writes it while `f`
    // runs (`f` does not allocate from or free into the heap).
    let p = unsafe { &*page };
    let bsize = p.block_size;
    let cap = p.capacity as usize;
    let area = Area {
        blocks: p.page_start(),
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
    // one bit per block, set for free blocks: a 64 KiB page of 8-byte blocks has the most
    // (larger pages hold larger blocks)
    const MAX_BLOCKS: usize = SMALL_PAGE_SIZE / WORD;
    debug_assert!(cap <= MAX_BLOCKS);
    if cap > MAX_BLOCKS {
        return true;
    }
    let mut free_map = [0u64; MAX_BLOCKS / 64];
    let mut b = p.free;
    while !b.is_null() {
        let i = (b as usize).wrapping_sub(p.page_start() as usize) / bsize;
        if i >= cap || free_map[i / 64] & (1 << (i % 64)) != 0 {
            // a block outside the page, or one met before (a cycle): a corrupted list,
            // from a double free; the walk stops here
            p.corrupt_link(b);
            break;
        }
        free_map[i / 64] |= 1 << (i % 64);
        // SAFETY: `b` is a free block of the page (its `free` list holds only those).
        b = unsafe { p.next_of(b) };
    }
    for i in 0..cap {
        if free_map[i / 64] & (1 << (i % 64)) == 0
            && !f(&area, p.page_start().wrapping_add(i * bsize))
        {
            return false;
        }
    }
    true
}
