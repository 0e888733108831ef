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

use crate::sync::Ordering;
use core::ptr;

#[cfg_attr(
    all(feature = "bench-unchecked", not(feature = "secure")),
    allow(unused_imports)
)]
use crate::free_check;
#[cfg_attr(not(feature = "override"), allow(unused_imports))] // checked mode (C API)
use crate::free_check::in_list;
use crate::heap::queue_bin_of;
use crate::heap::OwnedHeap;
use crate::page::{Block, Page, FLAG_HAS_ALIGNED, FLAG_IN_FULL};
use crate::page_queue::{page_free, page_unfull};
use crate::segment::{checked_page, ptr_segment, NotInBlocks, Segment};
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
    // SAFETY: `p` is not null, so a live block (caller).
    unsafe { free_nonnull(p, owner) }
}

/// Secure mode: whether a live segment of ours starts at `segment` (`checked_segment`,
/// inline): hosted, the segment map alone (a set entry means a live segment starts there;
/// its cookie would only repeat that, as the C `free` argues); elsewhere the cookie.
///
/// # Safety
/// In `no_std` builds `segment` is the start of the `SEGMENT_SIZE`-aligned chunk of a
/// pointer into mapped memory (the contract of their `free`), so its header is readable.
#[cfg(feature = "secure")]
#[inline(always)]
unsafe fn segment_is_ours(segment: *mut Segment) -> bool {
    #[cfg(feature = "std")]
    {
        crate::segment_map::contains(segment as usize)
    }
    #[cfg(not(feature = "std"))]
    // SAFETY: the chunk's start is in mapped memory (the contract above).
    unsafe {
        Segment::cookie_valid_raw(segment)
    }
}

/// [`free`] of a pointer known not to be null (`GlobalAlloc::dealloc`, and the C `free`
/// once the segment map has vouched for it): the null test is not repeated.
///
/// # Safety
/// `p` is a live block (or an aligned pointer into one) of this allocator.
#[inline(always)]
pub(crate) unsafe fn free_nonnull(p: *mut u8, owner: usize) {
    // secure mode: every free is checked first (a misuse is reported, then ignored); the
    // check finds the page, which is not looked up again
    #[cfg(feature = "secure")]
    {
        let segment = ptr_segment(p);
        // SAFETY: `p` is a pointer the caller gave to `free`, into mapped memory in `no_std`
        // builds (their contract).
        if !unsafe { segment_is_ours(segment) } {
            return crate::secure::report(crate::secure::ErrorKind::InvalidFree, p as usize, None);
        }
        // SAFETY: a live segment starts at `p`'s chunk (`ptr_segment`), checked just above.
        unsafe { secure_free_in(p, segment, owner) }
    }
    #[cfg(not(feature = "secure"))]
    {
        #[cfg(feature = "debug-mode")]
        // SAFETY: `p` is given to `free` (caller); a pointer that is not a live block of
        // ours is reported and left alone.
        if !unsafe { crate::debug_mode::on_free(p) } {
            return;
        }
        // SAFETY: `p` is a live block (caller) of the segment `ptr_segment` finds.
        unsafe { free_in_segment(p, ptr_segment(p), ptr::null_mut(), owner) }
    }
}

/// Secure mode: the check of every free (`free_check::secure_check_in`), then the free.
/// Every way out is a tail call (the report, the out-of-line cases, the free itself), so
/// that the common path keeps to leaf code.
///
/// # Safety
/// `segment` is the live segment whose first chunk holds `p` (the segment map or
/// `checked_segment` found it); `p` itself may be anything (it is checked).
#[cfg(feature = "secure")]
#[inline(always)]
unsafe fn secure_free_in(p: *mut u8, segment: *mut Segment, owner: usize) {
    use free_check::Checked;
    // SAFETY: `segment` is live and holds `p` (caller).
    match unsafe { free_check::secure_check_in(p, segment) } {
        // SAFETY: the check found `p` to be a live block of `page` in `segment`.
        Checked::Block(page) => unsafe { free_checked(p, segment, page, owner) },
        Checked::Bad(kind) => crate::secure::report(kind, p as usize, None),
        // SAFETY: as above.
        Checked::Outside => unsafe { free_outside(p, segment, owner) },
        // SAFETY: the check found `block` (holding `p`) in `page`, in use in `segment`.
        Checked::MaybeFree(page, block) => unsafe {
            free_maybe_double(p, segment, page, block, owner)
        },
    }
}

/// Secure mode: `realloc`'s common path's check of `p` (the check of every free,
/// `free_check::secure_check_in`, as `free_nonnull` runs it): `p`'s segment and page when
/// `p` is the start of a live block whose first word does not look like a link of its
/// page; `None` for anything else (a double or invalid free, an aligned pointer inside a
/// block, a block to look at closer), which the caller leaves to `realloc_general` (its
/// free reports it, as before).
///
/// # Safety
/// `p` is not null (anything else is checked).
#[cfg(all(feature = "secure", not(feature = "debug-mode")))]
#[inline(always)]
pub(crate) unsafe fn secure_live_block(p: *mut u8) -> Option<(*mut Segment, *mut Page)> {
    let segment = ptr_segment(p);
    // SAFETY: `p` is a pointer given to `realloc`, into mapped memory in `no_std` builds
    // (their contract).
    if !unsafe { segment_is_ours(segment) } {
        return None;
    }
    // SAFETY: a live segment starts at `p`'s chunk (checked just above).
    match unsafe { free_check::secure_check_in(p, segment) } {
        free_check::Checked::Block(page) => Some((segment, page)),
        _ => None,
    }
}

/// Secure mode: the free of `p`, a live block of `page` in `segment` that
/// [`secure_live_block`] passed (`realloc`'s common path, after its copy): as `free` after
/// its check (the block is zeroed, pushed, its page retired when it empties).
///
/// # Safety
/// `p` is a block of `page` in `segment` that `secure_live_block` passed, given up by the
/// caller; `owner` is the calling thread's owner token.
#[cfg(all(feature = "secure", not(feature = "debug-mode")))]
#[inline(always)]
pub(crate) unsafe fn free_secure_checked(
    p: *mut u8,
    segment: *mut Segment,
    page: *mut Page,
    owner: usize,
) {
    // SAFETY: as this function's contract.
    unsafe { free_checked(p, segment, page, owner) }
}

/// Secure mode: the free of `p` that the common check did not find to be the start of a
/// block handed out by its page (`free_check::secure_check_in`'s `Outside`): the full
/// check (`free_check::secure_check_full`) finds the block of an aligned pointer, which is
/// freed, or tells a double from an invalid free (see `free_check::outside_blocks`), which
/// is reported. Out of line.
///
/// # Safety
/// As `free_check::secure_check_in`; `owner` is the calling thread's owner token.
#[cfg(feature = "secure")]
#[cold]
#[inline(never)]
unsafe fn free_outside(p: *mut u8, segment: *mut Segment, owner: usize) {
    use free_check::Checked;
    // SAFETY: as this function's contract.
    match unsafe { free_check::secure_check_full(p, segment) } {
        // SAFETY: the check found `p` in a live block of `page` in `segment`.
        Checked::Block(page) => unsafe { free_checked(p, segment, page, owner) },
        Checked::Bad(kind) => crate::secure::report(kind, p as usize, None),
        Checked::Outside => {
            // SAFETY: as this function's contract.
            let kind = unsafe { free_check::outside_blocks(p, segment) };
            crate::secure::report(kind, p as usize, None)
        }
        // SAFETY: the check found `block` (holding `p`) in `page`, in use in `segment`.
        Checked::MaybeFree(page, block) => unsafe {
            free_maybe_double(p, segment, page, block, owner)
        },
    }
}

/// Secure mode: the free of block `block` (holding `p`) whose first word looks like a
/// link of its page: reported as a double free if it is on a free list (or, for other
/// threads' pages, on the link's word: see `free_check::free_already`), else freed.
///
/// # Safety
/// `page` is in use in the live segment `segment`, `block` one of its handed-out blocks
/// holding `p`, which the caller gives up if it is live.
#[cfg(feature = "secure")]
#[cold]
#[inline(never)]
unsafe fn free_maybe_double(
    p: *mut u8,
    segment: *mut Segment,
    page: *mut Page,
    block: *mut Block,
    owner: usize,
) {
    // SAFETY: as this function's contract.
    if unsafe { free_check::free_already(page, segment, block, owner) } {
        return crate::secure::report(crate::secure::ErrorKind::DoubleFree, p as usize, None);
    }
    // SAFETY: `p` is a live block of `page` (not free: just checked), given up (caller).
    unsafe { free_checked(p, segment, page, owner) }
}

/// Secure mode: the free of `p` once the check passed (debug mode's check too, when on).
///
/// # Safety
/// `p` is a live block (or an aligned pointer into one) of `page` in `segment`, given up
/// by the caller.
#[cfg(feature = "secure")]
#[inline(always)]
unsafe fn free_checked(p: *mut u8, segment: *mut Segment, page: *mut Page, owner: usize) {
    #[cfg(feature = "debug-mode")]
    // SAFETY: `p` is given to `free` (caller); a pointer that is not a live block of ours
    // is reported and left alone.
    if !unsafe { crate::debug_mode::on_free(p) } {
        return;
    }
    // SAFETY: as this function's contract.
    unsafe { free_in_segment(p, segment, page, owner) }
}

/// [`free_nonnull`] of a pointer whose segment the caller found (the C `free`, through the
/// segment map: `segment_map::free_contains`), without `ptr_segment`'s `p - 1`.
///
/// # Safety
/// `p` is a live block (or an aligned pointer into one) of this allocator, in the segment
/// that starts at `segment`.
#[cfg(not(feature = "small"))]
#[cfg_attr(not(feature = "override"), allow(dead_code))] // the C `free`
#[inline(always)]
pub(crate) unsafe fn free_nonnull_in(p: *mut u8, segment: *mut Segment, owner: usize) {
    // debug mode checks every free first: through `free_nonnull`
    if cfg!(feature = "debug-mode") {
        // SAFETY: `p` is a live block (caller).
        return unsafe { free_nonnull(p, owner) };
    }
    // secure mode checks every free first, here without a second lookup of the segment
    // that the caller found (the check finds the page: not looked up again)
    #[cfg(feature = "secure")]
    // SAFETY: `segment` is live and holds `p` in its first chunk (caller).
    unsafe {
        secure_free_in(p, segment, owner)
    }
    #[cfg(not(feature = "secure"))]
    {
        debug_assert!(segment == ptr_segment(p));
        // SAFETY: `p` is a live block of `segment` (caller).
        unsafe { free_in_segment(p, segment, ptr::null_mut(), owner) }
    }
}

/// The rest of [`free_nonnull`] and [`free_nonnull_in`] once `p`'s segment is known: its
/// page (in secure mode `checked`, which the check found; looked up otherwise), then
/// [`free_in_page`].
///
/// # Safety
/// `p` is a live block (or an aligned pointer into one) of `segment`, given up by the
/// caller; in secure mode `checked` is its page.
#[inline(always)]
unsafe fn free_in_segment(p: *mut u8, segment: *mut Segment, checked: *mut Page, owner: usize) {
    // SAFETY: `p` is a live block (caller) of `segment`, which is therefore live: its
    // header (and the page table in it) stays readable while the block lives. (The header
    // is read through `segment` and never borrowed for longer than a read: page 0's
    // metadata lies inside the `Segment` struct and is written below.)
    debug_assert!(
        unsafe { Segment::cookie_valid_raw(segment) },
        "free of a pointer not from shardalloc"
    );
    // (`page_of_raw`, no `&Segment`: the free may come from a thread that does not own
    // the segment, while its owner writes page entries that lie inside the `Segment`
    // struct; a reference would claim to read them: a data race, which Miri reports)
    let page = if cfg!(feature = "secure") {
        checked
    } else {
        // SAFETY: `p` points into one of the segment's pages.
        unsafe { Segment::page_of_raw(segment, p) }
    };
    // SAFETY: `p` is a live block of `page` in `segment` (above), given up (caller).
    unsafe { free_in_page(p, segment, page, owner) }
}

/// The rest of [`free_nonnull`] once the page is found.
///
/// # Safety
/// `p` is a live block (or an aligned pointer into one) of `page`, in `segment`, given up
/// by the caller; `owner` is the calling thread's owner token.
#[inline(always)]
unsafe fn free_in_page(p: *mut u8, segment: *mut Segment, page: *mut Page, owner: usize) {
    // Two separate branches, each passing `local` as a constant: the owner token is then
    // compared once and not kept for a `sete`, so its load folds into the comparison (one
    // instruction less on every free). (`segment` stays a raw pointer: a `&Segment`
    // argument would be a protected shared borrow of page 0's metadata, which lies in the
    // `Segment` struct and which the free writes: undefined behaviour that Miri's Tree
    // Borrows reported.)
    // SAFETY: the segment is live (caller); `owner` is an atomic, read through a borrow of
    // that field alone.
    if unsafe { (*segment).owner.load(Ordering::Relaxed) } != owner {
        // SAFETY: as above; the calling thread does not own the page.
        return unsafe { free_generic(p, page, false) };
    }
    // SAFETY (of the `flags` read): the page of a live block is live, and its owner (the
    // calling thread) is the only writer of `flags`.
    if unsafe { (*page).flags } == 0 {
        // local free into a page that is neither full nor holds aligned blocks
        // The cheap check of the default build (secure mode checked above): a block at
        // the head of `local_free` is freed twice (two instructions: the head is loaded
        // for the push anyway).
        #[cfg(not(any(feature = "secure", feature = "bench-unchecked")))]
        // SAFETY: the calling thread owns the page.
        if unsafe { (*page).local_free } == p as *mut Block {
            return free_check::double_free(p);
        }
        // Secure mode: a block that needs a `memset` to be zeroed is freed out of line,
        // so that this path makes no call that it must save registers around.
        #[cfg(feature = "secure")]
        // SAFETY: the calling thread owns the page (its `block_size` is set while in use).
        if unsafe { (*page).block_size } > Page::SCRUB_INLINE_MAX {
            // SAFETY: as for `push_local` below.
            return unsafe { free_local_zeroing(page, p) };
        }
        // SAFETY: the calling thread owns the page (`local`), so nothing else writes its
        // `local_free` and `used`; the block is given up by the caller, so its first word
        // is ours to write.
        unsafe {
            debug_assert!((*page).segment_in_use, "free into a page not in use");
            debug_assert!(
                (p as usize - (*page).page_start() as usize).is_multiple_of((*page).block_size),
                "free of a pointer inside a block"
            );
            push_local(page, p);
            if (*page).used == 0 {
                page_retire(page);
            }
        }
    } else {
        // SAFETY: as above; the calling thread owns the page.
        unsafe { free_generic(p, page, true) };
    }
}

/// The free of `realloc`'s moved block (`alloc::realloc`'s common path): `p` is a block
/// of `page`, a page of the calling thread's that it found with no flag set before it
/// allocated the new block (its owner cannot have changed since: only the owner gives a
/// segment up). [`free_in_page`]'s local path without the owner test, its page already
/// found: the page may have become full meanwhile (its flags are tested again).
///
/// # Safety
/// The calling thread owns `page`; `p` is the start of a live block of it, given up by the
/// caller.
#[cfg(not(any(feature = "secure", feature = "debug-mode")))]
#[inline(always)]
pub(crate) unsafe fn free_local_block(p: *mut u8, page: *mut Page) {
    // SAFETY: the calling thread owns the page (caller): the only writer of its `flags`,
    // `local_free` and `used`; the block is given up by the caller, its first word ours.
    unsafe {
        if (*page).flags != 0 {
            return free_generic(p, page, true);
        }
        // (the cheap check of the default build, as in `free_in_page`)
        #[cfg(not(feature = "bench-unchecked"))]
        if (*page).local_free == p as *mut Block {
            return free_check::double_free(p);
        }
        push_local(page, p);
        if (*page).used == 0 {
            page_retire(page);
        }
    }
}

/// Secure mode: the local free of [`free_in_page`] into a page whose blocks are larger
/// than [`Page::SCRUB_INLINE_MAX`] (zeroed by `memset`), out of line. The block is pushed
/// first and zeroed last (the zeroing leaves its link word alone), so that the `memset`
/// is a tail call and this function saves no registers; a block that empties a page that
/// is not retired already is zeroed before the page retires (retiring may free the page).
///
/// # Safety
/// As [`push_local`]; the page is neither full nor holds aligned blocks.
#[cfg(feature = "secure")]
#[inline(never)]
unsafe fn free_local_zeroing(page: *mut Page, p: *mut u8) {
    // SAFETY: as this function's contract.
    unsafe {
        if (*page).used <= 1 && (*page).retire_expire == 0 {
            // the page empties and may be freed (`page_retire_slow`): zero first (out of
            // line: inline, its calls made this function save three registers on every
            // call)
            return free_local_zeroing_retire(page, p);
        }
        // (a page that empties while it is retired stays as it is: `page_retire`)
        let block = p as *mut Block;
        (*page).set_next(block, (*page).local_free);
        (*page).local_free = block;
        (*page).used -= 1;
        Page::scrub_large(page, block);
    }
}

/// [`free_local_zeroing`] of a block that empties its page, not retired yet: zeroed and
/// pushed, then the page retires (which may free it).
///
/// # Safety
/// As [`free_local_zeroing`].
#[cfg(feature = "secure")]
#[cold]
#[inline(never)]
unsafe fn free_local_zeroing_retire(page: *mut Page, p: *mut u8) {
    // SAFETY: as this function's contract.
    unsafe {
        push_local(page, p);
        page_retire_slow(page)
    }
}

/// Pushes block `p` onto its page's `local_free` list and counts it freed.
///
/// # Safety
/// The calling context owns `page`; `p` is the start of a live block of it, given up by the
/// caller (its first word is ours to write).
#[inline(always)]
unsafe fn push_local(page: *mut Page, p: *mut u8) {
    let block = p as *mut Block;
    // SAFETY: as the caller guarantees: nothing else writes the page's `local_free` and
    // `used`, or the block.
    unsafe {
        #[cfg(feature = "secure")]
        Page::scrub(page, block);
        (*page).set_next(block, (*page).local_free);
        (*page).local_free = block;
        (*page).used -= 1;
    }
}

/// The embedded heap's free fast path: a heap with one owner (all its segments are its
/// own, so no owner test) pushes `p` onto its page's `local_free` when the page is neither
/// full nor holds aligned blocks, and does not empty or empties while retired (then
/// `page_retire` would do nothing more either: the page stays in its queue). Returns false,
/// having changed nothing, when `p` needs more (the caller then calls [`free`]).
///
/// # Safety
/// `p` is a live block of this allocator, in a segment whose owner is the calling context
/// (the only owner there is), which has exclusive use of the heap (a critical section).
#[cfg(feature = "embedded")]
#[inline(always)]
pub(crate) unsafe fn free_single_owner(p: *mut u8) -> bool {
    // SAFETY: `p` is a live block (caller), so its segment header and page are live, and
    // the caller owns them: nothing else writes the page; the block is given up.
    unsafe {
        let page = (*ptr_segment(p)).page_of(p);
        let used = (*page).used;
        if (*page).flags != 0 || (used <= 1 && (*page).retire_expire == 0) {
            return false;
        }
        // (`push_local`, with `used` read once: the block's link is written in between)
        let block = p as *mut Block;
        (*block).next = (*page).local_free;
        (*page).local_free = block;
        (*page).used = used - 1;
    }
    true
}

/// The rest of the embedded heap's free (after [`free_single_owner`] said no): a free into
/// a full page takes it back to its size class's queue at once (at its end, without the
/// delayed-free state changes of `page_unfull`: a heap with one owner has no remote
/// frees); anything else goes through [`free`]. Returns false, having done nothing, for
/// a chunk of a run (a page with `FLAG_RUN`: `embedded::Heap` frees it into the run).
///
/// # Safety
/// As [`free_single_owner`]; `owner` is the heap's owner token.
#[cfg(feature = "embedded")]
pub(crate) unsafe fn free_single_owner_slow(p: *mut u8, owner: usize) -> bool {
    // SAFETY: as in `free_single_owner`: the page is live and ours, the block given up.
    unsafe {
        let page = (*ptr_segment(p)).page_of(p);
        if (*page).flags == crate::page::FLAG_IN_FULL && (*page).used > 1 {
            push_local(page, p);
            let h = (*page).heap();
            (*h).pages[BIN_FULL].list.remove(page);
            (*page).flags = 0;
            (*page).retire_expire |= crate::page::RETIRE_RECYCLED;
            let bin = bin((*page).block_size);
            let queue = &mut (*h).pages[bin];
            let was_empty = queue.list.is_empty();
            queue.list.push_back(page);
            if was_empty {
                (*h).direct_update(bin);
            }
            return true;
        }
        if (*page).flags & crate::page::FLAG_RUN != 0 {
            return false;
        }
        free(p, owner);
        true
    }
}

/// [`free_local_try`]'s answer.
#[cfg_attr(feature = "embedded", allow(dead_code))] // used by global/percpu.rs
pub(crate) enum LocalFree {
    /// Freed.
    Done,
    /// Not freed: the page's flags are not 0 (a full page, or one with aligned blocks);
    /// [`free_flagged_try`] may take it (out of line: the common free's test stays one
    /// compare).
    Flagged(*mut Page),
    /// Not freed: `p` is a block of this page of another owner's; [`free_remote_try`]
    /// may take it (a push onto the page's `thread_free`).
    Remote(*mut Page),
    /// Not freed: `p` needs the full path ([`free`]).
    No,
}

/// [`free_local_try`] for a page whose flags are not 0 (full, or holding aligned blocks):
/// a free that does not empty the page pushes the block of `p` (found from the page's
/// block size for an aligned pointer) onto `local_free`, and a full page goes back to its
/// size class's queue once it has [`unfull_at`] blocks free (`page_unfull`: the heap's own
/// queues, and the page's delayed-free state, which waits only for a remote free between
/// its two steps); false otherwise, having changed nothing (a page that empties retires:
/// the caller's long way).
///
/// # Safety
/// The calling context owns `page`, the page of `p`, a live block (or an aligned pointer
/// into one) given up by the caller, and the page's heap, whose queues nothing else
/// changes until this returns.
#[inline]
#[cfg_attr(feature = "embedded", allow(dead_code))] // used by global/percpu.rs
pub(crate) unsafe fn free_flagged_try(page: *mut Page, p: *mut u8) -> bool {
    // SAFETY: the caller owns the page and its heap: nothing else writes these fields or
    // the heap's queues; the block is given up by the caller.
    unsafe {
        if (*page).used <= 1 {
            return false;
        }
        #[cfg(feature = "debug-mode")]
        if !crate::debug_mode::on_free(p) {
            return true;
        }
        let block = if (*page).flags & FLAG_HAS_ALIGNED != 0 {
            (*page).block_of(p) as *mut u8
        } else {
            p
        };
        #[cfg(not(any(feature = "secure", feature = "bench-unchecked")))]
        if (*page).local_free == block as *mut Block {
            free_check::double_free(p);
            return true; // reported and ignored
        }
        push_local(page, block);
        if (*page).flags & FLAG_IN_FULL != 0
            && (*page).capacity - (*page).used >= unfull_at((*page).capacity)
        {
            // (a page in the full queue has a heap: its owner's, the caller's)
            page_unfull(OwnedHeap::new((*page).heap()), page);
        }
    }
    true
}

/// The part of [`free`] that needs no bookkeeping: a local free into a page that holds no
/// aligned blocks and is not full, and that does not empty (or empties again while it is
/// retired and alone in its queue). Returns `Flagged` for a page with flags (the caller
/// then tries [`free_flagged_try`]: a page that does not empty) and
/// `No`, having changed nothing, when `p` needs more (the caller then calls `free`, e.g.
/// after masking interrupts: `PerCpuAlloc` runs this part with interrupts on).
///
/// # Safety
/// `p` is a live block (or an aligned pointer into one) of this allocator; `owner` is
/// the calling context's owner token.
#[inline(always)]
#[cfg_attr(feature = "embedded", allow(dead_code))] // used by global/percpu.rs
pub(crate) unsafe fn free_local_try(p: *mut u8, owner: usize) -> LocalFree {
    // secure mode: `free` checks every pointer; this shortcut would skip that
    if cfg!(feature = "secure") {
        return LocalFree::No;
    }
    // (no `&Segment` before the owner test: the segment may be another context's, which
    // writes its page entries, inside the `Segment` struct, meanwhile: as `free_in_segment`)
    let segment = ptr_segment(p);
    // (`page_of_raw`, read before the owner test: both answers need the page)
    // SAFETY: `p` is a live block (caller): it points into one of the segment's pages, in
    // use.
    let page = unsafe { Segment::page_of_raw(segment, p) };
    // SAFETY: `p` is a live block (caller), so its segment header is readable; a borrow of
    // the atomic `owner` field alone.
    if unsafe { (*segment).owner.load(Ordering::Relaxed) } != owner {
        // (debug mode checks every free first: through `free`)
        return if cfg!(feature = "debug-mode") {
            LocalFree::No
        } else {
            LocalFree::Remote(page)
        };
    }
    // SAFETY: the calling context owns the page (owner checked), so nothing else writes
    // its `flags`, `local_free`, `used` and `retire_expire`; the block is given up by the
    // caller.
    unsafe {
        // a full page takes the free here while it stays full (see `unfull_at`): the
        // free that moves it back to its queue goes the long way
        if (*page).flags != 0 {
            return LocalFree::Flagged(page);
        }
        // A page that empties retires: here only in `page_retire`'s inline case (already
        // retired and alone in its queue: restart its countdown), which touches nothing
        // but the page.
        let empties = (*page).used <= 1;
        if empties
            && ((*page).retire_expire == 0
                || !(*page).links.next.is_null()
                || !(*page).links.prev.is_null())
        {
            return LocalFree::No;
        }
        // (checked here, once the free is sure to go this way: a `No` above makes the
        // caller call `free`, which checks)
        #[cfg(feature = "debug-mode")]
        if !crate::debug_mode::on_free(p) {
            return LocalFree::Done;
        }
        debug_assert!(
            (p as usize - (*page).page_start() as usize).is_multiple_of((*page).block_size),
            "free of a pointer inside a block"
        );
        #[cfg(not(any(feature = "secure", feature = "bench-unchecked")))]
        if (*page).local_free == p as *mut Block {
            free_check::double_free(p);
            return LocalFree::Done; // reported and ignored
        }
        push_local(page, p);
        if empties {
            (*page).retire_expire = retire_cycles((*page).block_size);
        }
    }
    LocalFree::Done
}

/// [`free_remote_try`] with one CAS and no loop, for a block that is not an aligned
/// pointer into a larger block (see `Page::thread_free_push_once`): false, having changed
/// nothing, when the caller must take the whole way.
///
/// # Safety
/// As [`free_remote_try`].
#[cfg(not(feature = "embedded"))]
#[inline(always)]
pub(crate) unsafe fn free_remote_once(page: *mut Page, p: *mut u8) -> bool {
    // SAFETY: as `free_remote_try`: reads of the page's atomic tag; the block is `p` itself
    // when the page holds no aligned blocks.
    unsafe { !Page::has_aligned_raw(page) && Page::thread_free_push_once(page, p as *mut Block) }
}

/// The remote free of [`free_local_try`]'s `Remote` answer when it needs no more than one
/// CAS: `p`'s block pushed onto its page's `thread_free` (as `free_block_mt`), unless the
/// page is full and its owner waits for news (`UseDelayedFree`); then false, having
/// changed nothing (the caller takes the full path, [`free`], which goes through the
/// owner's delayed list). Never enters the `DelayedFreeing` state, which the owner may
/// wait on: `PerCpuAlloc` runs it with interrupts on, where an interrupt handler on the
/// same CPU may own the page.
///
/// # Safety
/// `p` is a live block (or an aligned pointer into one) of `page`, given up by the caller,
/// that the calling context does not own; not in secure or debug mode (their checks come
/// first: `free_local_try` answers `No` there).
#[cfg(not(feature = "embedded"))]
#[inline(always)]
pub(crate) unsafe fn free_remote_try(page: *mut Page, p: *mut u8) -> bool {
    debug_assert!(!cfg!(any(feature = "secure", feature = "debug-mode")));
    // SAFETY: `p` is a live block of `page` (caller), so the page is in use; reads of its
    // atomic tag and fixed fields only, as `free_generic` does for a page another context
    // owns.
    unsafe {
        let block = if Page::has_aligned_raw(page) {
            block_of_raw(page, p)
        } else {
            p as *mut Block
        };
        Page::thread_free_push_unless_delayed(page, block)
    }
}

/// # Safety
/// As `free`; `page` is the page of `p`; `local` says the calling thread owns it.
#[cold]
#[inline(never)]
unsafe fn free_generic(p: *mut u8, page: *mut Page, local: bool) {
    if !local {
        // A thread that does not own the page makes no `&Page` and reads no `flags`: the
        // owner writes the entry meanwhile (`used`, the lists, `FLAG_IN_FULL` in the byte
        // that also holds `FLAG_HAS_ALIGNED`), and either would be a data race (Miri
        // reports it). The page's `XHEAP_ALIGNED` tag (an atomic) says whether `p` may be
        // inside a block; if so, the block start comes from fields fixed while the page is
        // in use (as `usable_size` finds it).
        // SAFETY: `p` is a live block, or an aligned pointer into one, of `page` (caller),
        // so the page is in use.
        #[cfg(not(feature = "embedded"))]
        let block = if unsafe { Page::has_aligned_raw(page) } {
            // SAFETY: as above.
            unsafe { block_of_raw(page, p) }
        } else {
            p as *mut Block
        };
        #[cfg(feature = "embedded")]
        // SAFETY: as above.
        let block = unsafe { block_of_raw(page, p) };
        // SAFETY: `block` is a live block of the page, given up by the caller.
        return unsafe { free_block_mt(page, block) };
    }
    // SAFETY: the page of a live block is live, and the calling thread owns it (`local`):
    // nothing else writes its fields.
    let pg = unsafe { &*page };
    let block = if pg.flags & FLAG_HAS_ALIGNED != 0 {
        pg.block_of(p)
    } else {
        p as *mut Block
    };
    if cfg!(any(debug_assertions, feature = "debug-mode")) {
        // SAFETY: the calling thread owns the page (`local`).
        unsafe { pg.check() };
    }
    // SAFETY: the calling thread owns the page, which has a heap (pages in use by an
    // owner are in its heap's queues); `block` is a live block of it.
    unsafe { free_block_local(page, block, true) };
}

/// The start of the block of `page` that holds `p` (a block start or an aligned pointer
/// into a block), from the page's block size and start only, without a reference to the
/// entry or a read of its `flags` (any thread may call it: see `free_generic`).
///
/// # Safety
/// `p` is a live block, or an aligned pointer into one, of `page`: the page is in use, and
/// its block size and start were set before the block was handed out and stay meanwhile.
#[inline(always)]
unsafe fn block_of_raw(page: *const Page, p: *mut u8) -> *mut Block {
    // SAFETY: as this function's contract: reads of fields fixed while the page is in use.
    unsafe {
        let size = (*page).block_size;
        #[cfg(not(feature = "small"))]
        let start = (*page).page_start as usize;
        #[cfg(feature = "small")]
        let start = crate::segment::page_start_of(page) as usize;
        let off = p as usize - start;
        // secure mode: the page's divisibility test (a multiply) spares the division for
        // a block start, the common case (the divisor is fixed while the page is in use)
        #[cfg(feature = "secure")]
        if (*page).div.divides(off) {
            return p as *mut Block;
        }
        // (a page in use has blocks of a non-zero size: no panic branch for a zero
        // divisor, which kept `PerCpuAlloc`'s remote free from being leaf code)
        debug_assert!(size != 0, "page in use with block size 0");
        let size = core::num::NonZeroUsize::new_unchecked(size);
        p.wrapping_sub(off % size) as *mut Block
    }
}

/// How many blocks a full page must have free (in `local_free`) before an owner's free
/// moves it back to its size-class queue: one more than an eighth of its blocks, at most 16.
///
/// mimalloc moves a full page back at its first free. Where every page of a class is
/// nearly full (many live objects of a few sizes, freed and allocated at random: a
/// kernel's slab caches), that first free moved the page back, the next allocation took
/// its one block and moved it to the full queue again: about 750 instructions under
/// QEMU's count for every free into a full page (the kernel bench's slab workload: 8,000
/// such frees a run). Waiting for a few frees shares that cost among them; a full page
/// then holds at most 15 free blocks nobody allocates (at most an eighth of its blocks).
/// Remote frees into a full page still move it back at once (`heap_delayed_free`: after
/// the first, the page's later remote frees go to `thread_free`, which only a page in a
/// queue gets back). The small geometry (pages of a few blocks) keeps mimalloc's rule, and
/// so does the hosted build (`std`): there the wait cost more than it saved, a call out of
/// line for each free into a full page (scale-1: 18.6K such calls against 1.2K moves
/// back; `valgrind --tool=callgrind benches/target/release/bench-shardalloc scale-1
/// --quick` 83.62M -> 83.29M instructions, sh8bench 92.39M -> 91.12M, larson 131.71M ->
/// 131.31M).
#[inline(always)]
pub(crate) fn unfull_at(capacity: crate::page::BlockCount) -> crate::page::BlockCount {
    if cfg!(any(feature = "small", feature = "std")) {
        1
    } else {
        ((capacity >> 3) + 1).min(16)
    }
}

/// A free by the page's owner: onto `local_free`; the page retires when it empties, and
/// leaves the full queue when it was full (`lazy`: once it has [`unfull_at`] blocks free;
/// otherwise at once).
///
/// # Safety
/// The calling thread owns `page`, which has a heap; `block` is a live block of it.
pub(crate) unsafe fn free_block_local(page: *mut Page, block: *mut Block, lazy: bool) {
    // SAFETY: the calling thread owns the page (caller), so nothing else writes these
    // fields; the block is given up by the caller, so its first word is ours.
    let (used, in_full) = unsafe {
        #[cfg(feature = "secure")]
        Page::scrub(page, block);
        (*page).set_next(block, (*page).local_free);
        (*page).local_free = block;
        (*page).used -= 1;
        ((*page).used, (*page).in_full())
    };
    if used == 0 {
        // SAFETY: as above; the page has a heap (caller).
        unsafe { page_retire(page) };
    } else if in_full
        // SAFETY: as above.
        && (!lazy || unsafe { (*page).capacity - used >= unfull_at((*page).capacity) })
    {
        // SAFETY: whoever owns a page owns its heap, so the token holds.
        let heap = unsafe { OwnedHeap::new((*page).heap()) };
        // SAFETY: `page` is a page of that heap.
        unsafe { page_unfull(heap, page) };
    }
}

/// A free by a thread that does not own the page: one CAS onto `thread_free`; the first
/// free into a full page goes to the owning heap's delayed list instead, so that the owner
/// learns the page has room.
///
/// # Safety
/// `block` is a live block of `page`, given up by the caller.
#[cfg(not(feature = "embedded"))]
unsafe fn free_block_mt(page: *mut Page, block: *mut Block) {
    // (the page stays a raw pointer: its owner writes the entry meanwhile, and only its
    // atomic fields and those fixed while it is in use are read here)
    #[cfg(feature = "secure")]
    // SAFETY: `block` is a live block of the page, given up by the caller: ours to write;
    // the page of a live block is in use (its `block_size` fixed meanwhile).
    unsafe {
        // Secure mode: a block zeroed by a call (`Page::scrub_large`) is freed out of line,
        // so that this path (`free_generic`'s remote free) makes no call it must save
        // registers around (it saved three on every remote free)
        if (*page).block_size > Page::SCRUB_INLINE_MAX {
            return free_block_mt_zeroing(page, block);
        }
        Page::scrub(page, block)
    };
    // SAFETY: `block` is a live block of the page, given up by the caller.
    unsafe { free_block_mt_push(page, block) }
}

/// Secure mode: [`free_block_mt`] of a block larger than `Page::SCRUB_INLINE_MAX` (zeroed
/// by a call), out of line.
///
/// # Safety
/// As [`free_block_mt`].
#[cfg(all(feature = "secure", not(feature = "embedded")))]
#[inline(never)]
unsafe fn free_block_mt_zeroing(page: *mut Page, block: *mut Block) {
    // SAFETY: as this function's contract (see `free_block_mt`).
    unsafe {
        Page::scrub_large(page, block);
        free_block_mt_push(page, block)
    }
}

/// The end of [`free_block_mt`]: the CAS onto `thread_free`, or the delayed list.
///
/// # Safety
/// As [`free_block_mt`] (in secure mode `block` is scrubbed).
#[cfg(not(feature = "embedded"))]
#[inline(always)]
unsafe fn free_block_mt_push(page: *mut Page, block: *mut Block) {
    // SAFETY: `block` is a live block of the page, given up by the caller.
    if unsafe { Page::thread_free_push(page, block) } {
        return;
    }
    // SAFETY: as this function's contract; `thread_free_push` said the page is full.
    unsafe { free_block_delayed(page, block) }
}

/// The rest of [`free_block_mt`] for a page that is full and whose owner waits for news
/// (`thread_free_push` returned false and set `DelayedFreeing`): the block goes onto the
/// owning heap's delayed list. Out of line (rare: once per full page), so that the common
/// remote free keeps few values live across its calls.
///
/// # Safety
/// `block` is a live block of `pg`, given up by the caller (and scrubbed in secure mode);
/// the page's state is `DelayedFreeing`, set by the caller's `thread_free_push`.
#[cfg(not(feature = "embedded"))]
#[cold]
#[inline(never)]
unsafe fn free_block_delayed(page: *mut Page, block: *mut Block) {
    // The heap stays alive while we are `DelayedFreeing` (its owner waits for us before it
    // abandons or deletes the heap, see `Page::use_delayed_free`).
    // SAFETY: the page is in use (caller); a borrow of its atomic field alone.
    let heap = unsafe { (*page).xheap.load(Ordering::Acquire) }
        .map_addr(|a| a & !crate::page::XHEAP_ALIGNED);
    if !heap.is_null() {
        // SAFETY: the heap is live (above); its delayed list is a lock-free stack that any
        // thread may push to, and the block is ours to give.
        unsafe { crate::heap::RawHeap::push_delayed(heap, page, block) };
    }
    // SAFETY: the page is in use (caller), in the state `DelayedFreeing` that we set.
    unsafe { Page::delayed_freeing_done(page) };
    if heap.is_null() {
        // no heap to tell (cannot happen for a page in a full queue, which has a heap):
        // keep the block by pushing it onto `thread_free` (the state is `NoDelayedFree`
        // now, so the push succeeds unless the owner set `UseDelayedFree` again meanwhile)
        // SAFETY: as above, the block is still ours to give.
        if !unsafe { Page::thread_free_push(page, block) } {
            // (full again meanwhile: `DelayedFreeing` once more)
            // SAFETY: as above.
            unsafe { free_block_delayed(page, block) };
        }
    }
}

/// `embedded`: the one heap owns every segment, so a free that does not come from the
/// segment's owner is the free of a block of another `embedded::Heap` (or of no heap):
/// reported as an invalid free, and the block is left alone (the entries have no
/// remote-free list; see the small geometry's `Page`).
///
/// # Safety
/// None beyond the caller's: nothing is read or written.
#[cfg(feature = "embedded")]
unsafe fn free_block_mt(_page: *mut Page, block: *mut Block) {
    crate::secure::report(crate::secure::ErrorKind::InvalidFree, block as usize, None);
}

/// The owner frees the blocks that other threads freed into its full pages. Blocks whose
/// freeing thread is still finishing stay for the next time, unless `all` (then we wait).
///
pub(crate) fn heap_delayed_free(heap: OwnedHeap, all: bool) {
    // SAFETY: the token proves the heap is live and ours; `thread_delayed_free` is atomic.
    let h = unsafe { &*heap.as_ptr() };
    loop {
        let mut block = h
            .thread_delayed_free
            .swap(ptr::null_mut(), Ordering::Acquire);
        if block.is_null() {
            return;
        }
        let mut retry = false;
        while !block.is_null() {
            // SAFETY: blocks on the delayed list are blocks of pages of this heap, given up
            // by their freeing threads (pushed with release, taken with acquire): their
            // pages are live and ours, and the blocks ours to relink.
            unsafe {
                let page = (*ptr_segment(block as *const u8)).page_of(block as *const u8);
                let Some(next) = (*page).delayed_next_of(block) else {
                    // secure mode: the block's mark was overwritten (a write after free):
                    // neither it nor the rest of the list is touched again (leaked)
                    crate::secure::report(
                        crate::secure::ErrorKind::CorruptFreeList,
                        block as usize,
                        Some((*page).block_size),
                    );
                    break;
                };
                // secure mode: a link that does not lead into a segment of ours (a write
                // after free changed it: it decodes far away) is reported and not
                // followed; this block, whose mark is intact, is still freed
                #[cfg(feature = "secure")]
                let next = if next.is_null()
                    || crate::segment::checked_segment(next as *mut u8).is_some()
                {
                    next
                } else {
                    crate::secure::report(
                        crate::secure::ErrorKind::CorruptFreeList,
                        block as usize,
                        Some((*page).block_size),
                    );
                    ptr::null_mut()
                };
                if (*page).is_delayed_freeing() {
                    // the remote thread still holds the page state: later
                    crate::heap::RawHeap::push_delayed(h, page, block);
                    retry = true;
                } else {
                    Page::collect(page, false);
                    free_block_local(page, block, false);
                }
                block = next;
            }
        }
        if !all || !retry {
            return;
        }
        core::hint::spin_loop();
    }
}

/// `heap_delayed_free(heap, false)` when the delayed list is not empty (the slow path of
/// allocation calls this every time).
///
#[inline]
pub(crate) fn heap_delayed_free_partial(heap: OwnedHeap) {
    // SAFETY: the token proves the heap is live; the list head is atomic.
    let pending = unsafe { &(*heap.as_ptr()).thread_delayed_free };
    if !pending.load(Ordering::Relaxed).is_null() {
        heap_delayed_free(heap, false);
    }
}

// ---------------------------------------------------------------------------------------
// retiring pages that emptied

/// Fresh-page searches (of any size class) a retired page is kept before it is freed.
#[inline(always)]
#[cfg_attr(feature = "embedded", allow(dead_code))] // used by global/percpu.rs
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
    // Already retired (one block allocated and freed in a loop, on the allocation fast
    // path): it stays retired, its countdown running on (as mimalloc v3's; the generic
    // path that takes it up again clears `retire_expire`). One load and a branch.
    // SAFETY: the calling thread owns the page (caller): nothing else writes it.
    if unsafe { (*page).retire_expire } != 0 {
        return;
    }
    // SAFETY: the page is ours and has a heap (caller); `pg` is not used after this.
    unsafe { page_retire_slow(page) }
}

/// # Safety
/// As `page_retire`.
#[cold]
#[inline(never)]
unsafe fn page_retire_slow(page: *mut Page) {
    // Small geometry: an empty page stays in its size class's queue, ready for it (freeing
    // and re-making small pages on every emptying would cost hundreds of instructions a
    // time, for memory that no OS wants back); a full page that empties (one of a single
    // block) goes back there too. Only huge pages go back to their segment at once. An
    // allocation that runs out of memory then frees the empty pages of the size-class
    // queues (`heap_free_empty_pages`), never walking the full pages.
    #[cfg(feature = "small")]
    // SAFETY: the calling thread owns the page (caller), and so its heap, in whose queue
    // `bin` the page is.
    unsafe {
        (*page).flags &= !FLAG_HAS_ALIGNED;
        #[cfg(not(feature = "embedded"))]
        (*page).set_aligned_tag(false);
        let heap = OwnedHeap::new((*page).heap());
        let bin = queue_bin_of(page);
        if bin == BIN_HUGE {
            page_free(heap, page, bin);
            return;
        }
        if bin == BIN_FULL {
            page_unfull(heap, page);
        }
        // marked retired, so that the next emptying at the front of its queue takes the
        // inline path of `page_retire` (its bin is outside the heap's retired range, so no
        // countdown frees it)
        (*page).retire_expire |= 1;
    }
    #[cfg(not(feature = "small"))]
    // SAFETY: the calling thread owns the page (caller), and so its heap.
    unsafe {
        page_retire_default(page)
    }
}

/// # Safety
/// As `page_retire`.
#[cfg(not(feature = "small"))]
unsafe fn page_retire_default(page: *mut Page) {
    // SAFETY: the calling thread owns the page (caller), and so its heap.
    let heap = unsafe { OwnedHeap::new((*page).heap()) };
    let h = heap.as_ptr();
    // SAFETY: the page and heap are ours (above); the page is in queue `bin` of the heap.
    unsafe {
        (*page).flags &= !FLAG_HAS_ALIGNED;
        (*page).set_aligned_tag(false);
        // Alone in its queue (a page in use is always in its heap's queue `queue_bin_of`,
        // so null links say it is that queue's only page), a small or medium size class:
        // it stays. The cheap tests come first, the segment's kind (huge?) and the bin
        // after them.
        let bsize = (*page).block_size;
        if bsize <= MEDIUM_OBJ_SIZE_MAX
            && (*page).links.next.is_null()
            && (*page).links.prev.is_null()
        {
            let bin = queue_bin_of(page);
            if bin < BIN_HUGE {
                debug_assert!(
                    (*h).pages[bin].list.first == page && (*h).pages[bin].list.last == page
                );
                (*page).retire_expire = retire_cycles(bsize);
                (*h).retired[bin / 64] |= 1 << (bin % 64);
                return;
            }
        }
        // all its blocks are free (it retires; a solo page may stay: `solo_retire`, a tail
        // call)
        if (*page).flags & crate::page::FLAG_SOLO != 0 {
            return solo_retire(heap, page);
        }
        page_free(heap, page, queue_bin_of(page));
    }
}

/// A solo page (`alloc::malloc_solo`) that empties: the heap keeps one empty solo page,
/// the last of its huge queue, for its next solo block (a claim and a free of a page fewer
/// for each growing buffer; its committed memory is what its block grew to), until its
/// countdown frees it (`heap_collect_retired`); others go back to their segment. Out of
/// line: `page_retire_default` stays as small as it was.
///
/// # Safety
/// As `page_retire`; `heap` is the page's heap, `page` a solo page of it, in its huge
/// queue, all its blocks free.
#[cfg(not(feature = "small"))]
#[inline(never)]
unsafe fn solo_retire(heap: OwnedHeap, page: *mut Page) {
    let h = heap.as_ptr();
    // SAFETY: the calling thread owns the page and its heap (caller).
    unsafe {
        let last = (*h).pages[BIN_HUGE].list.last;
        if last != page && Page::is_spare_solo(last) {
            page_free(heap, page, BIN_HUGE);
            return;
        }
        if last != page {
            (*h).queue_remove(page, BIN_HUGE);
            (*h).queue_push_back(page, BIN_HUGE);
        }
        (*page).retire_expire = retire_cycles((*page).block_size);
        (*h).retired[BIN_HUGE / 64] |= 1 << (BIN_HUGE % 64);
    }
}

/// Small geometry, out of memory: frees the empty pages the heap keeps in its size-class
/// queues (see `page_retire_slow`); returns how many. Full pages are not looked at, so the
/// cost is bounded by the pages with free blocks (at most the heap's size / 512 bytes), not
/// by the blocks live.
#[cfg(feature = "small")]
pub(crate) fn heap_free_empty_pages(heap: OwnedHeap) -> usize {
    let h = heap.as_ptr();
    let mut freed = 0;
    for bin in 1..BIN_HUGE {
        // SAFETY: the heap is ours, and so are the pages in its queues; `walk` reads a
        // page's successor before the page may be unlinked.
        unsafe {
            crate::list::List::walk((*h).pages[bin].first(), |page| {
                if (*page).all_free() {
                    page_free(heap, page, bin);
                    freed += 1;
                }
            });
        }
    }
    freed
}

/// Frees retired pages whose time ran out (all of them with `force`).
pub(crate) fn heap_collect_retired(heap: OwnedHeap, force: bool) {
    let h = heap.as_ptr();
    for word in 0..2 {
        // SAFETY: the token proves the heap is live and ours.
        let mut bins = unsafe { (*h).retired[word] };
        if bins == 0 {
            continue;
        }
        let mut keep = 0u64;
        while bins != 0 {
            let bit = bins.trailing_zeros() as usize;
            bins &= bins - 1;
            let bin = word * 64 + bit;
            // SAFETY: the heap is ours, and so are the pages in its queues: the first page
            // of queue `bin` (a bin below `BIN_HUGE`, or the last of `BIN_HUGE`) is live and
            // nothing else writes it.
            unsafe {
                // (the huge queue's retired page is its spare solo page, its last: see
                // `page_retire_default`)
                let page = if bin == BIN_HUGE {
                    (*h).pages[bin].list.last
                } else {
                    (*h).pages[bin].first()
                };
                if page.is_null() || (*page).retire_expire == 0 {
                    continue;
                }
                if (*page).all_free() {
                    // Blocks on `local_free`: the page was used since the last look (a
                    // block allocated and freed again through paths that leave it retired,
                    // `malloc_refill_page` and the fast paths): its countdown starts again,
                    // as mimalloc's does when its generic path takes the page up. Else a
                    // size class used in every round of a loop expires whenever other
                    // classes make pages, and each page it re-makes counts the others down.
                    // The blocks move to `free` so that the next look sees new uses only
                    // (each block is walked once per move: bounded by the frees).
                    if !force && !(*page).local_free.is_null() {
                        Page::collect(page, true);
                        (*page).retire_expire = retire_cycles((*page).block_size);
                        keep |= 1 << bit;
                        continue;
                    }
                    (*page).retire_expire -= 1;
                    if force || (*page).retire_expire == 0 {
                        page_free(heap, page, bin); // all its blocks are free
                    } else {
                        keep |= 1 << bit;
                    }
                } else {
                    (*page).retire_expire = 0;
                }
            }
        }
        // SAFETY: as above.
        unsafe { (*h).retired[word] = keep };
    }
}

// ---------------------------------------------------------------------------------------
// sizes and checks

/// The usable size of the block at (or aligned into) `p`.
///
/// # Safety
/// `p` is a live block of this allocator.
#[cfg_attr(feature = "debug-mode", allow(unreachable_code))] // (the requested size there)
pub(crate) unsafe fn usable_size(p: *const u8) -> usize {
    #[cfg(feature = "debug-mode")]
    // SAFETY: `p` is a live block (caller): its segment and page are live.
    return unsafe { crate::debug_mode::usable_size(&*(*ptr_segment(p)).page_of(p), p) };
    // Any thread may ask (`malloc_usable_size`, `realloc`, `PerCpuAlloc` on another CPU)
    // while the page's owner writes its entry (`used`, the free lists, `flags`): so no
    // reference to the segment or the entry is made, and only fields fixed while the block
    // is live are read, through raw pointers (the block size and where the blocks start).
    // Reading `FLAG_HAS_ALIGNED` would race with the owner's writes of `flags`: the offset
    // into the block is computed for every page instead (0 for a block start, the common
    // case; an aligned pointer inside a block gets the bytes from it to the block's end).
    // SAFETY: `p` is a live block, or an aligned pointer into one (caller): its segment and
    // page are live and the page in use, and the page's block size and start were set
    // before the block was handed out and stay while it lives (a solo page's block size
    // grows, `alloc::solo_grow`, only in a `realloc` of its one block, by its holder).
    unsafe {
        let page = Segment::page_of_raw(ptr_segment(p), p);
        let size = (*page).block_size;
        #[cfg(not(feature = "small"))]
        let start = (*page).page_start as usize;
        #[cfg(feature = "small")]
        let start = crate::segment::page_start_of(page) as usize;
        size - (p as usize - start) % size
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
        let start = pg.page_start() as usize;
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
        #[cfg(not(feature = "secure"))]
        let next = (*block).next as *const u8;
        #[cfg(feature = "secure")]
        let next = pg.keys.decode((*block).next as usize) as *const u8;
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
