//! Free: the whole path of a block back to its page, top to bottom (as mimalloc's
//! `free.c`):
//! 1. [`free`], the fast path: a local free into a page that is neither full nor holds
//!    aligned blocks is a push onto `local_free`;
//! 2. `free_generic`: aligned pointers, local frees into full pages, remote frees;
//! 3. local frees ([`free_block_local`]) and remote frees (`free_block_mt`: one CAS onto
//!    `thread_free`, or, for a full page, onto the owning heap's delayed list);
//! 4. the owner applying its delayed list ([`heap_delayed_free`]);
//! 5. retiring pages that emptied, and freeing retired pages whose time ran out;
//! 6. [`usable_size`], and [`check_block`]: the checks of checked mode (invalid and double
//!    frees) before a free.

use core::ptr;
use core::sync::atomic::Ordering;

use crate::heap::{queue_bin_of, RawHeap};
use crate::page::{Block, Page, FLAG_HAS_ALIGNED};
use crate::page_queue::{page_free, page_unfull};
use crate::segment::{checked_page, ptr_segment, NotInBlocks};
use crate::size_class::*;

/// Frees `p`. `owner` is the calling thread's owner token (`NO_OWNER` if it has no
/// heap). About 10 instructions for a local free that needs no bookkeeping.
///
/// # Safety
/// `p` is null or a live block (or an aligned pointer into one) of this allocator.
#[inline(always)]
pub(crate) unsafe fn free(p: *mut u8, owner: usize) {
    if p.is_null() {
        return;
    }
    let segment = ptr_segment(p);
    // SAFETY: `p` is a live block (caller), so its segment and page are live.
    unsafe {
        debug_assert!(
            (*segment).is_valid_cookie(),
            "free of a pointer not from shardalloc"
        );
        let page = (*segment).page_of(p);
        debug_assert!(
            (*page).segment_in_use,
            "free into a page not in use (double free?)"
        );
        debug_assert!(
            (*page).flags & FLAG_HAS_ALIGNED != 0
                || (p as usize - (*page).page_start as usize) % (*page).block_size == 0,
            "free of a pointer inside a block"
        );
        let local = (*segment).owner.load(Ordering::Relaxed) == owner;
        if local && (*page).flags == 0 {
            // local free into a page that is neither full nor holds aligned blocks
            let block = p as *mut Block;
            (*block).next = (*page).local_free;
            (*page).local_free = block;
            (*page).used -= 1;
            if (*page).used == 0 {
                page_retire(page);
            }
        } else {
            free_generic(page, local, p);
        }
    }
}

/// # Safety
/// As `free`; `page` is the page of `p`; `local` says the calling thread owns it.
#[cold]
#[inline(never)]
unsafe fn free_generic(page: *mut Page, local: bool, p: *mut u8) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let block = if (*page).flags & FLAG_HAS_ALIGNED != 0 {
            (*page).block_of(p)
        } else {
            p as *mut Block
        };
        if local {
            if cfg!(debug_assertions) {
                (*page).check();
            }
            free_block_local(page, block);
        } else {
            free_block_mt(page, block);
        }
    }
}

/// A free by the page's owner: onto `local_free`; the page retires when it empties, and
/// leaves the full queue when it was full.
///
/// # Safety
/// The calling thread owns `page`, which has a heap; `block` is a live block of it.
pub(crate) unsafe fn free_block_local(page: *mut Page, block: *mut Block) {
    // SAFETY: as the caller guarantees.
    unsafe {
        (*block).next = (*page).local_free;
        (*page).local_free = block;
        (*page).used -= 1;
        if (*page).used == 0 {
            page_retire(page);
        } else if (*page).in_full() {
            page_unfull((*page).heap(), page);
        }
    }
}

/// A free by a thread that does not own the page: one CAS onto `thread_free`; the first
/// free into a full page goes to the owning heap's delayed list instead, so that the owner
/// learns the page has room.
///
/// # Safety
/// `block` is a live block of `page`, given up by the caller.
unsafe fn free_block_mt(page: *mut Page, block: *mut Block) {
    // SAFETY: as the caller guarantees; the page outlives its live block.
    unsafe {
        if (*page).thread_free_push(block) {
            return;
        }
        // The page is full and its owner waits for news. The heap stays alive while we
        // are `DelayedFreeing` (its owner waits for us before it abandons or deletes the
        // heap, see `Page::use_delayed_free`).
        let heap = (*page).xheap.load(Ordering::Acquire);
        if !heap.is_null() {
            (*heap).push_delayed(block);
        }
        (*page).delayed_freeing_done();
        if heap.is_null() {
            // no heap to tell (cannot happen for a page in a full queue, which has a
            // heap): keep the block by freeing it normally
            free_block_mt(page, block);
        }
    }
}

/// The owner frees the blocks that other threads freed into its full pages. Blocks whose
/// freeing thread is still finishing stay for the next time, unless `all` (then we wait).
///
/// # Safety
/// `heap` is the calling thread's initialised heap.
pub(crate) unsafe fn heap_delayed_free(heap: *mut RawHeap, all: bool) {
    // SAFETY: the caller owns the heap; blocks on the list belong to pages of this heap.
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

/// `heap_delayed_free(heap, false)` when the delayed list is not empty (the slow path of
/// allocation calls this every time).
///
/// # Safety
/// `heap` is the calling thread's initialised heap.
#[inline]
pub(crate) unsafe fn heap_delayed_free_partial(heap: *mut RawHeap) {
    // SAFETY: as the caller guarantees.
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

// ---------------------------------------------------------------------------------------
// retiring pages that emptied

/// Generic-malloc rounds a retired page is kept before it is freed.
#[inline(always)]
fn retire_cycles(block_size: usize) -> u8 {
    if block_size <= SMALL_OBJ_SIZE_MAX {
        16
    } else {
        4
    }
}

/// A page whose blocks are all free: keep it a while if it is the only page of its
/// size class (to avoid freeing and re-making it in a loop), else free it.
///
/// # Safety
/// The calling thread owns `page`, which has a heap.
#[inline(always)]
unsafe fn page_retire(page: *mut Page) {
    // SAFETY: as the caller guarantees.
    unsafe {
        // Already retired and still the only page of its queue (one block allocated and
        // freed in a loop): just restart its countdown. (`retire_expire != 0` implies its
        // bin is in the heap's retired range; a page with no queue neighbours is alone.)
        if (*page).retire_expire != 0
            && (*page).flags == 0
            && (*page).links.next.is_null()
            && (*page).links.prev.is_null()
        {
            (*page).retire_expire = retire_cycles((*page).block_size);
            return;
        }
        page_retire_slow(page)
    }
}

/// # Safety
/// As `page_retire`.
#[cold]
#[inline(never)]
unsafe fn page_retire_slow(page: *mut Page) {
    // SAFETY: as the caller guarantees.
    unsafe {
        let heap = (*page).heap();
        debug_assert!(!heap.is_null());
        (*page).flags &= !FLAG_HAS_ALIGNED;
        let bin = queue_bin_of(page);
        if bin < BIN_HUGE && (*page).block_size <= MEDIUM_OBJ_SIZE_MAX {
            let pq = &(*heap).pages[bin];
            if pq.list.first == page && pq.list.last == page {
                (*page).retire_expire = retire_cycles((*page).block_size);
                (*heap).retired_min = (*heap).retired_min.min(bin);
                (*heap).retired_max = (*heap).retired_max.max(bin);
                return;
            }
        }
        page_free(heap, page, bin);
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
            let page = (*heap).pages[bin].first();
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

// ---------------------------------------------------------------------------------------
// sizes and checks

/// The usable size of the block at (or aligned into) `p`.
///
/// # Safety
/// `p` is a live block of this allocator.
pub(crate) unsafe fn usable_size(p: *const u8) -> usize {
    // SAFETY: as the caller guarantees.
    unsafe {
        let page = (*ptr_segment(p)).page_of(p);
        if (*page).flags & FLAG_HAS_ALIGNED != 0 {
            let block = (*page).block_of(p as *mut u8) as usize;
            (*page).block_size - (p as usize - block)
        } else {
            (*page).block_size
        }
    }
}

/// What is wrong with a pointer given to `free` (see [`check_block`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(not(feature = "override"), allow(dead_code))] // used by checked mode (C API)
pub(crate) enum BadFree {
    /// Not inside the handed-out blocks of a page in use.
    NotInBlocks(NotInBlocks),
    /// Inside a block but not at its start (in a page without aligned blocks).
    NotBlockStart,
    /// The block is free already.
    DoubleFree,
}

/// Checks that `p` may be freed: it is a block (or, in a page with aligned blocks, inside
/// one) of a page in use, and — when `owner` owns the page, so that reading its free lists
/// is not a race — not free already (in `free`, `local_free` or `thread_free`). Any
/// pointer may be asked (hosted builds check the segment map first).
#[cfg_attr(not(feature = "override"), allow(dead_code))] // used by checked mode (C API)
pub(crate) fn check_block(p: *const u8, owner: usize) -> Result<(), BadFree> {
    let page = checked_page(p).map_err(BadFree::NotInBlocks)?;
    // SAFETY: the page is in use in a live segment, so its metadata is readable; its free
    // lists are read only when the calling thread owns the segment.
    unsafe {
        let pg = &*page;
        let start = pg.page_start as usize;
        let bsize = pg.block_size;
        let offset = (p as usize - start) % bsize;
        if offset != 0 && pg.flags & FLAG_HAS_ALIGNED == 0 {
            return Err(BadFree::NotBlockStart);
        }
        let block = (p as usize - offset) as *mut Block;
        if (*ptr_segment(p)).owner.load(Ordering::Relaxed) != owner {
            return Ok(()); // another thread's page: its lists are not ours to read
        }
        // A free block's first word is the next free block of the page (or null). Only
        // when it looks like that do we search the lists (as mimalloc does).
        let next = (*block).next as *const u8;
        let looks_free = next.is_null()
            || (pg.blocks_contain(next) && (next as usize - start).is_multiple_of(bsize));
        if looks_free
            && (in_list(pg, pg.free, block)
                || in_list(pg, pg.local_free, block)
                || in_list(pg, pg.thread_free_list(), block))
        {
            return Err(BadFree::DoubleFree);
        }
        Ok(())
    }
}

/// Whether `b` is in the free list of `page` that starts at `head`. Stops at a link that
/// leaves the page's blocks (a list corrupted by an overflow) and after `capacity` steps
/// (a cycle), so that a corrupted list cannot crash or hang the check.
///
/// # Safety
/// The list is a free list of `page`, which the calling thread owns.
#[cfg_attr(not(feature = "override"), allow(dead_code))] // used by checked mode (C API)
unsafe fn in_list(page: &Page, mut head: *mut Block, b: *mut Block) -> bool {
    let start = page.page_start as usize;
    for _ in 0..=page.capacity {
        if head.is_null()
            || !page.blocks_contain(head as *const u8)
            || !(head as usize - start).is_multiple_of(page.block_size)
        {
            return false;
        }
        if head == b {
            return true;
        }
        // SAFETY: `head` is a block of the page (checked just above), so readable.
        head = unsafe { (*head).next };
    }
    false
}
