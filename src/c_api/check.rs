//! `free` with pointer checks.
//!
//! Always: a pointer whose segment is not in the segment map (or has no valid segment
//! cookie) is not ours; it is reported ("invalid free") and ignored instead of crashing.
//! That costs a bitmap lookup and a compare per `free` (see the report in
//! `include/README-capi.md` for the measured cost).
//!
//! Checked mode (option `show_errors`, e.g. `SHARDALLOC_SHOW_ERRORS=1`) also checks that
//! the pointer is a block (or, in a page with aligned blocks, inside one) of a page in use,
//! and — when the calling thread owns the page, so that reading its free lists is not a
//! race — that the block is not already free (in `free`, `local_free` or `thread_free`):
//! a double free is reported and ignored. Frees of blocks owned by other threads are not
//! checked for double frees.

use core::sync::atomic::Ordering::{Acquire, Relaxed};

use super::options::{error, CHECK_FREE};
use crate::global::hosted;
use crate::page::{Block, Page, FLAG_HAS_ALIGNED};
use crate::segment::{checked_segment, ptr_segment, Segment};

/// `free`.
///
/// # Safety
/// `p` is null or a block of ours that is not used afterwards; violations that the checks
/// above catch are reported, others are undefined behaviour as with any allocator.
#[inline(always)]
pub(crate) unsafe fn free(p: *mut u8) {
    if p.is_null() {
        return;
    }
    if CHECK_FREE.load(Relaxed) {
        // SAFETY: forwarded.
        return unsafe { free_checked(p) };
    }
    // The segment map alone: a set bit means a live segment starts there (the cookie
    // check of `checked_segment` would only repeat that).
    if !crate::segment_map::contains(ptr_segment(p) as usize) {
        return invalid_free(p, "not allocated by shardalloc");
    }
    // SAFETY: `p` lies in a live segment of ours; the caller vouches for the rest.
    unsafe { hosted::free(p) }
}

#[cold]
#[inline(never)]
fn invalid_free(p: *mut u8, why: &str) {
    error(
        ::libc::EINVAL,
        format_args!("invalid free of {p:p} ({why})"),
    );
}

#[cold]
#[inline(never)]
fn double_free(p: *mut u8) {
    error(::libc::EAGAIN, format_args!("double free of {p:p}"));
}

/// Whether `b` is in the list starting at `head` (at most `limit` steps: a corrupted list
/// cannot make us loop).
///
/// # Safety
/// The list is a free list of a page owned by the calling thread.
unsafe fn in_list(mut head: *mut Block, b: *mut Block, limit: u32) -> bool {
    let mut n = 0;
    while !head.is_null() && n <= limit {
        if head == b {
            return true;
        }
        // SAFETY: as the caller guarantees, list members are free blocks of the page.
        head = unsafe { (*head).next };
        n += 1;
    }
    false
}

#[cold]
#[inline(never)]
unsafe fn free_checked(p: *mut u8) {
    let Some(segment) = checked_segment(p) else {
        return invalid_free(p, "not allocated by shardalloc");
    };
    // SAFETY: the segment is live (segment map and cookie); its header and page table are
    // readable. The page's lists are read only when the calling thread owns the segment.
    unsafe {
        let seg: &Segment = &*segment;
        let idx = (p as usize - segment as usize) >> seg.page_shift;
        if idx >= seg.capacity {
            return invalid_free(p, "not inside a page");
        }
        let page: *mut Page = seg.page(idx);
        if !(*page).segment_in_use {
            return invalid_free(p, "in a page that is not in use: double free?");
        }
        let start = (*page).page_start as usize;
        let bsize = (*page).block_size;
        let end = start + (*page).capacity as usize * bsize;
        if (p as usize) < start || p as usize >= end {
            return invalid_free(p, "outside the blocks of its page");
        }
        let offset = (p as usize - start) % bsize;
        if offset != 0 && (*page).flags & FLAG_HAS_ALIGNED == 0 {
            return invalid_free(p, "not the start of a block");
        }
        let block = (p as usize - offset) as *mut Block;
        let tid = (*hosted::default_heap()).thread_id;
        if seg.thread_id.load(Relaxed) == tid {
            // A free block's first word is the next free block of the page (or null).
            // Only when it looks like that do we search the lists (as mimalloc does).
            let next = (*block).next as usize;
            let looks_free =
                next == 0 || (next >= start && next < end && (next - start).is_multiple_of(bsize));
            if looks_free {
                let cap = (*page).capacity;
                // acquire: the pushing threads wrote the blocks' links before their release CAS
                let tf = ((*page).xthread_free.load(Acquire) & !3) as *mut Block;
                if in_list((*page).free, block, cap)
                    || in_list((*page).local_free, block, cap)
                    || in_list(tf, block, cap)
                {
                    return double_free(p);
                }
            }
        }
        hosted::free(p)
    }
}
