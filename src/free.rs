//! Free: the owner's push onto `local_free`, other threads' CAS onto `thread_free`, and
//! the retirement of pages that emptied.

use core::sync::atomic::Ordering;

use crate::heap::{page_free, page_unfull, RawHeap};
use crate::page::{Block, Page, FLAG_HAS_ALIGNED};
use crate::segment::ptr_segment;
use crate::size_class::*;

/// Frees `p`. `tid` is the calling thread's owner token (`heap::NO_THREAD` if it has no
/// heap).
///
/// # Safety
/// `p` is null or a live block (or an aligned pointer into one) of this allocator.
#[inline(always)]
pub(crate) unsafe fn free(p: *mut u8, tid: usize) {
    if p.is_null() {
        return;
    }
    let segment = ptr_segment(p);
    // SAFETY: `p` is a live block, so its segment and page are live.
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
        let local = (*segment).thread_id.load(Ordering::Relaxed) == tid;
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
/// As `free`; `page` is the page of `p`.
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
            (*page).free_block_mt(block);
        }
    }
}

/// # Safety
/// The caller owns `page`; `block` is a live block of it.
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
/// The caller owns `page`, which has a heap.
#[inline(always)]
unsafe fn page_retire(page: *mut Page) {
    // SAFETY: as the caller guarantees.
    unsafe {
        // Already retired and still the only page of its queue (one block allocated and
        // freed in a loop): just restart its countdown. (`retire_expire != 0` implies its
        // bin is in the heap's retired range; a page with no queue neighbours is alone.)
        if (*page).retire_expire != 0
            && (*page).flags == 0
            && (*page).next.is_null()
            && (*page).prev.is_null()
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
        let bin = RawHeap::queue_bin_of(page);
        if bin < BIN_HUGE && (*page).block_size <= MEDIUM_OBJ_SIZE_MAX {
            let pq = &(*heap).pages[bin];
            if pq.first == page && pq.last == page {
                (*page).retire_expire = retire_cycles((*page).block_size);
                (*heap).retired_min = (*heap).retired_min.min(bin);
                (*heap).retired_max = (*heap).retired_max.max(bin);
                return;
            }
        }
        page_free(heap, page, bin);
    }
}
