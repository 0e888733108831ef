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

use core::sync::atomic::Ordering::Relaxed;

use super::options::{error, CHECK_FREE};
use crate::free::{check_block, BadFree};
use crate::global::hosted;
use crate::segment::{ptr_segment, NotInBlocks};

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
unsafe fn free_checked(p: *mut u8) {
    // SAFETY: the default heap is live or the static empty heap.
    let owner = unsafe { (*hosted::default_heap()).owner };
    match check_block(p, owner) {
        // SAFETY: checked to be a block of a page in use, not free already (as far as
        // the calling thread can see); the caller vouches for the rest.
        Ok(()) => unsafe { hosted::free(p) },
        Err(BadFree::DoubleFree) => {
            error(::libc::EAGAIN, format_args!("double free of {p:p}"));
        }
        Err(BadFree::NotBlockStart) => invalid_free(p, "not the start of a block"),
        Err(BadFree::NotInBlocks(why)) => invalid_free(
            p,
            match why {
                NotInBlocks::NotOurs => "not allocated by shardalloc",
                NotInBlocks::NotInAPage => "not inside a page",
                NotInBlocks::PageNotInUse => "in a page that is not in use: double free?",
                NotInBlocks::OutsideBlocks => "outside the blocks of its page",
            },
        ),
    }
}
