//! `free` with pointer checks.
//!
//! Always: a pointer whose segment is not in the segment map (or has no valid segment
//! cookie) is not ours; it is reported ("invalid free") and ignored instead of crashing.
//! That costs one byte-map lookup per `free`, which also routes checked mode's frees to
//! their slow path (`segment_map::free_contains`).
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
use crate::secure::ErrorKind;
use crate::segment::{ptr_segment, NotInBlocks, Segment};
use crate::size_class::SEGMENT_MASK;

/// `free`.
///
/// # Safety
/// `p` is null or a block of ours that is not used afterwards; violations that the checks
/// above catch are reported, others are undefined behaviour as with any allocator.
#[inline(always)]
pub(crate) unsafe fn free(p: *mut u8) {
    // The segment map alone: a set entry means a live segment starts there (the cookie
    // check of `checked_segment` would only repeat that). Null is not in it (no segment
    // starts at 0), so the common path needs no test of its own for null. In checked mode
    // the map answers "no" for every pointer (`segment_map::set_free_slow`), so checked
    // mode costs the common path nothing either: `not_in_map` sorts the cases out. `p`
    // itself is looked up, not its `ptr_segment` (see `free_contains`). (The C library is
    // hosted: never the small geometry, whose segments are aligned to a phase.)
    if !crate::segment_map::free_contains(p as usize) {
        // SAFETY: by this function's contract, `p` is null, a block of ours not used
        // afterwards, or a pointer the checks catch: `not_in_map`'s contract.
        return unsafe { not_in_map(p) };
    }
    let segment = (p as usize & !SEGMENT_MASK) as *mut Segment;
    // SAFETY: a live segment of ours starts at `p`'s chunk (its map entry is set) and `p`
    // lies in that chunk after the header (`free_contains`), so `p` is not null and
    // `segment` is its segment; by this function's contract (the C caller's contract for
    // `free`, documented in include/README-capi.md) it is a live block of ours, not used
    // afterwards.
    unsafe { hosted::free_in_segment(p, segment) }
}

/// `free` of a pointer that the segment map did not vouch for: checked mode's `free`
/// (where every pointer comes here); otherwise nothing to do for null, an error for any
/// other pointer.
///
/// # Safety
/// As [`free`].
#[cold]
#[inline(never)]
unsafe fn not_in_map(p: *mut u8) {
    if CHECK_FREE.load(Relaxed) {
        // SAFETY: `p` is null, a block of ours not used afterwards, or a pointer the
        // checks catch (this function's contract): `free_checked`'s contract.
        return unsafe { free_checked(p) };
    }
    if p.is_null() {
        return;
    }
    // Checked mode was switched off while this `free` ran (`CHECK_FREE` is written before
    // the map's limit): the map itself still tells a block of ours.
    if crate::segment_map::contains(ptr_segment(p) as usize) {
        // SAFETY: `p` lies in a live segment of ours, so by this function's contract it is
        // a live block of ours, not used afterwards.
        return unsafe { hosted::free_nonnull(p) };
    }
    invalid_free(p, "not allocated by shardalloc", "");
}

#[cold]
#[inline(never)]
fn invalid_free(p: *mut u8, why: &str, via: &str) {
    error(
        ::libc::EINVAL,
        format_args!("invalid free of {p:p} ({why}){via}"),
    );
    crate::secure::abort_if_set(ErrorKind::InvalidFree, p as usize);
}

/// Checked mode's `free`: `p` is checked with `check_block` before it is freed.
///
/// # Safety
/// `p` is null, or a block of ours passes the checks only if it is not used afterwards
/// (as [`free`]).
#[cold]
#[inline(never)]
unsafe fn free_checked(p: *mut u8) {
    if p.is_null() {
        return;
    }
    if live_block_checked(p, "") {
        // SAFETY: `check_block` found `p` to be a block (or inside an aligned block) of a
        // page in use and, where the calling thread can see, not free already: a live
        // block of ours, which the C caller does not use after `free` (its contract).
        unsafe { hosted::free(p) }
    }
}

/// Checked mode: whether `p` (not null) passes `check_block`, i.e. is a block of ours
/// (or inside an aligned one) of a page in use and, where the calling thread can see, not
/// free already. A pointer that fails is reported as a bad free, with `via` after the
/// message (e.g. " (realloc)": `realloc` frees the block it moves, and must not read a
/// freed one), and the caller leaves it alone. Inlined: checked mode's `free` and
/// `realloc` are out of line already, and a call here cost checked mode's malloc/free pair
/// 19 instructions (194.5 -> 175.5 a pair through `c/fastpath.c` under callgrind, the loop's own included).
#[inline]
pub(crate) fn live_block_checked(p: *mut u8, via: &str) -> bool {
    // SAFETY: `default_heap()` is the calling thread's live default heap or the static
    // empty heap, both readable `RawHeap`s.
    let owner = unsafe { (*hosted::default_heap()).owner };
    match check_block(p, owner) {
        Ok(()) => return true,
        Err(BadFree::DoubleFree) => {
            error(::libc::EAGAIN, format_args!("double free of {p:p}{via}"));
            crate::secure::abort_if_set(ErrorKind::DoubleFree, p as usize);
        }
        Err(BadFree::NotBlockStart) => invalid_free(p, "not the start of a block", via),
        Err(BadFree::NotInBlocks(why)) => invalid_free(
            p,
            match why {
                NotInBlocks::NotOurs => "not allocated by shardalloc",
                NotInBlocks::NotInAPage => "not inside a page",
                NotInBlocks::PageNotInUse => "in a page that is not in use: double free?",
                NotInBlocks::OutsideBlocks => "outside the blocks of its page",
            },
            via,
        ),
    }
    false
}
