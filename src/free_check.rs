//! The checks of `free` that every build runs, and secure mode's check of every free.
//!
//! - Default build: the owner's fast path of `free` compares the block with the head of
//!   its page's `local_free` (loaded for the push anyway: two instructions), which catches
//!   a block freed twice in a row — the case that otherwise turns the list into a cycle
//!   that hands the block out again and again. ([`probe`] + [`local_free_ok`], mimalloc's
//!   `mi_check_is_double_free` idea — walk the lists only when the block's first word
//!   looks like a link into its page — were on the owner's generic path, and cost 3% of
//!   the instructions of `xmalloc`, whose remote frees share that function: not run.) The allocation fast path checks the head of the
//!   list it pops (`Page::has_free_direct` for small sizes: the head in its page's 64 KiB
//!   slot; `Page::has_free`: in its segment), and the walks of the lists check each link
//!   (`Page::next_of`), so a link overwritten with an address outside the segment is
//!   reported and never followed. Misuse is reported through [`crate::secure::report`]
//!   and ignored.
//! - Secure mode ([`secure_check`], feature `secure`): every free, on every path (owner,
//!   other thread, delayed, huge), checks that the pointer is a block start (or, in a page
//!   with aligned blocks, inside one) of a page in use of a live segment, and that the
//!   block is not free already: a freed block's first word decodes (with its page's keys)
//!   to a link into its page, which a live block's first word does only by a 2^-50-ish
//!   chance (the keys are secret; a fresh block's first word is cleared). For the calling
//!   thread's own pages, the lists are walked to confirm it.
//!
//! Every list walk here is bounded: it stops at a link that leaves the page's blocks and
//! after `capacity` steps, so a list corrupted by an overflow cannot crash or hang a check.

#[cfg(not(feature = "secure"))]
use crate::page::FLAG_HAS_ALIGNED;
use crate::page::{Block, Page};
#[cfg(not(feature = "secure"))]
use crate::secure::report;
use crate::secure::ErrorKind;
#[cfg(not(feature = "secure"))]
use crate::size_class::{SMALL_PAGE_SIZE, WORD};

/// Whether `p`, about to be freed by its page's owner, needs a closer look: its first
/// word looks like a free-list link into the same `SMALL_PAGE_SIZE`-aligned chunk (a block
/// on a free list), or `p` is not word-aligned. (The fast path of `free` does not run it:
/// a user's own pointers to neighbours look the same, and walking the lists for each of
/// them is not cheap; it runs on the generic path of the owner's frees.)
///
/// # Safety
/// `p` points into a block of a live page (readable for a word).
#[cfg(not(feature = "secure"))]
#[allow(dead_code)] // kept for the checked paths that can afford it (see the module doc)
#[inline(always)]
pub(crate) unsafe fn probe(p: *mut u8) -> bool {
    // SAFETY: `p` is readable for a word (caller); an unaligned read, since a misaligned
    // `p` is one of the things we look for.
    let first = unsafe { (p as *const usize).read_unaligned() };
    (first ^ p as usize) < SMALL_PAGE_SIZE || (p as usize) % WORD != 0
}

/// Reports a double free of `p` found by the fast path of `free` (the block is at the head
/// of its page's `local_free`); the free is ignored.
#[cfg(not(feature = "secure"))]
#[cfg_attr(feature = "bench-unchecked", allow(dead_code))]
#[cold]
#[inline(never)]
pub(crate) fn double_free(p: *mut u8) {
    report(ErrorKind::DoubleFree, p as usize, None);
}

/// The closer look after [`probe`]: whether `p` may be freed into `page` by its owner.
/// Reports (and returns false for) a pointer that is not a block start and a block that is
/// already on the page's `free` or `local_free` list.
///
/// # Safety
/// The calling thread owns `page`, and `p` lies in its handed-out blocks.
#[cfg(not(feature = "secure"))]
#[allow(dead_code)] // kept for the checked paths that can afford it (see the module doc)
#[cold]
#[inline(never)]
pub(crate) unsafe fn local_free_ok(page: *mut Page, p: *mut u8) -> bool {
    // SAFETY: the calling thread owns the page (caller): its fields and lists are ours.
    let pg = unsafe { &*page };
    let off = (p as usize).wrapping_sub(pg.page_start() as usize);
    if off % pg.block_size != 0 && pg.flags & FLAG_HAS_ALIGNED == 0 {
        report(ErrorKind::InvalidFree, p as usize, None);
        return false;
    }
    let block = pg.block_of(p);
    // SAFETY: the page is ours (caller); the walks are bounded.
    if unsafe { in_list(pg, pg.free, block) || in_list(pg, pg.local_free, block) } {
        report(ErrorKind::DoubleFree, p as usize, Some(pg.block_size));
        return false;
    }
    true
}

/// Whether `b` is in the free list of `page` that starts at `head`. Stops at a link that
/// leaves the page's blocks (a list corrupted by an overflow) and after `capacity` steps
/// (a cycle), so that a corrupted list cannot crash or hang the check.
///
/// # Safety
/// The list is a free list of `page`, which the calling thread owns.
pub(crate) unsafe fn in_list(page: &Page, mut head: *mut Block, b: *mut Block) -> bool {
    let start = page.page_start() as usize;
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
        // SAFETY: `head` is a block of the page (checked just above), so readable; in
        // secure mode `next_of` decodes and checks the link.
        head = unsafe { page.next_of(head) };
    }
    false
}

/// What secure mode's check of a pointer given to `free` found (see [`secure_check_in`]).
#[cfg(feature = "secure")]
pub(crate) enum Checked {
    /// A live block (its page): to be freed.
    Block(*mut Page),
    /// Not a block to free: a double free, an invalid pointer (to be reported).
    Bad(ErrorKind),
    /// Not the start of a block handed out by the page of its slice: an aligned pointer
    /// inside one, a double free or an invalid one, which [`secure_check_full`] tells
    /// apart (out of line).
    Outside,
    /// A block whose first word decodes to a link of its page, as a free block's does:
    /// free already, unless the walk of [`free_already`] says otherwise (rare: out of line).
    MaybeFree(*mut Page, *mut Block),
}

/// Secure mode: checks a pointer given to `free` (or `realloc`, `usable_size`, a sized
/// free) by a thread with owner token `owner`: returns its page and block, or what is
/// wrong with it — `DoubleFree` for a block that is free already (or in a page that was
/// freed), `InvalidFree` for anything that is not a block of a page in use (foreign,
/// interior, into metadata). The caller reports it.
///
/// Hosted, any pointer may be asked (the segment map vouches for the segment); elsewhere
/// `p` must point into mapped memory (the segment cookie tells a segment from other
/// memory).
#[cfg(feature = "secure")]
#[cfg_attr(not(feature = "override"), allow(dead_code))] // the C API's checked entry points
pub(crate) fn secure_check(p: *mut u8, owner: usize) -> Result<(*mut Page, *mut Block), ErrorKind> {
    use crate::segment::checked_segment;
    let segment = checked_segment(p).ok_or(ErrorKind::InvalidFree)?;
    // SAFETY: `checked_segment` found a live segment here (segment map and cookie), and
    // `p` lies after its start (`ptr_segment`).
    match unsafe { secure_check_full(p, segment) } {
        Checked::Block(page) => {
            // SAFETY: as above: a page in use whose blocks hold `p`.
            let block = unsafe { (*page).block_of(p) };
            Ok((page, block))
        }
        Checked::Bad(kind) => Err(kind),
        // SAFETY: as above.
        Checked::Outside => Err(unsafe { outside_blocks(p, segment) }),
        Checked::MaybeFree(page, block) => {
            // SAFETY: as above; `MaybeFree` gives a page in use of the live segment and a
            // block of it.
            if unsafe { free_already(page, segment, block, owner) } {
                Err(ErrorKind::DoubleFree)
            } else {
                Ok((page, block))
            }
        }
    }
}

/// The page entry of the slice of `segment` that holds `p`.
///
/// # Safety
/// As [`secure_check_in`].
#[cfg(feature = "secure")]
#[inline(always)]
unsafe fn slice_page(p: *mut u8, segment: *mut crate::segment::Segment) -> *mut Page {
    use crate::segment::SLICES;
    use crate::size_class::SMALL_PAGE_SHIFT;
    // SAFETY: the segment is live (caller); its slice table maps every slice of its first
    // chunk to a page entry in its header (`fill_slice_pages`), readable.
    unsafe { (*segment).slice_pages[(p as usize >> SMALL_PAGE_SHIFT) & (SLICES - 1)] }
}

/// The end of both checks once `block`, a block handed out by `page`, is found: its first
/// word decoded with the page's keys, for a block that may be free already (see
/// [`secure_check_in`]).
///
/// # Safety
/// `page` is a page in use (its keys, `page_start` and `area` fixed meanwhile), `block` one
/// of its handed-out blocks (readable).
#[cfg(feature = "secure")]
#[inline(always)]
unsafe fn check_first_word(page: *mut Page, block: *mut Block, start: usize) -> Checked {
    // SAFETY: `block` is a block of the page, inside its handed-out blocks: readable; the
    // keys and `area` are fixed while the page is in use (borrows of those fields alone).
    unsafe {
        let link = (*page).keys.decode((*block).next as usize);
        if link == 0 || link.wrapping_sub(start) < (*page).area {
            return Checked::MaybeFree(page, block);
        }
    }
    Checked::Block(page)
}

/// The common path of secure mode's check of every free, for a pointer whose segment the
/// caller found (the segment map, and the cookie where there is no map): about 15
/// instructions, with no call and nothing that needs saved registers (the paths of
/// `free` that use it stay leaf code), as mimalloc's `mi_check_is_double_free`:
/// - the page from the segment's slice table (as the unchecked `free` finds it);
/// - the pointer's offset in the page divided by the block size (a multiply by its
///   inverse and a rotation, `secure::Divisor::quotient`: no division), compared with the
///   page's `handed` count of blocks: one compare passes exactly the starts of the blocks
///   handed out (a page not in use has `handed == 0`; a pointer below `page_start`, into
///   metadata, wraps to a huge offset; an offset that is not a multiple of the block size
///   gives a quotient above every count);
/// - the block's first word decoded with the page's keys: only when it is null or a
///   link into the page (as a free block's is; a live block's first word by a
///   2^-50-ish chance) is the block `MaybeFree`, for the caller to confirm out of line.
///
/// Anything else is `Outside`: the caller runs [`secure_check_full`] out of line, which
/// tells an aligned pointer inside a block (a page with aligned blocks) from a double or
/// an invalid free.
///
/// # Safety
/// `segment` is a live segment whose first chunk holds `p` (or `p` is its end: a huge
/// block aligned to more than a segment), as `ptr_segment` or the segment map find it.
#[cfg(feature = "secure")]
#[inline(always)]
pub(crate) unsafe fn secure_check_in(p: *mut u8, segment: *mut crate::segment::Segment) -> Checked {
    // SAFETY: as this function's contract.
    let page = unsafe { slice_page(p, segment) };
    // No `&Page`: the check runs on remote frees too, while the page's owner writes the
    // entry's other fields (a reference would claim to read them all: a data race). The
    // fields read are fixed while the page is in use (`page_start`, `div`, `keys`, `area`:
    // set before its first block was handed out, and the block reached this thread after
    // that), or atomic (`handed`).
    // SAFETY: as above: a page entry of the live segment's header, its fields reached
    // through the raw pointer (borrows of `div` and `handed` alone).
    let (start, handed, q) = unsafe {
        let start = (*page).page_start as usize;
        (
            start,
            (*page).handed.load(crate::sync::Ordering::Relaxed),
            (*page).div.quotient((p as usize).wrapping_sub(start)),
        )
    };
    if q >= handed {
        return Checked::Outside;
    }
    // SAFETY: `p` is the start of a block the page handed out (`q < handed`).
    unsafe { check_first_word(page, p as *mut Block, start) }
}

/// Secure mode's full check of a pointer given to `free` ([`secure_check_in`]'s
/// `Outside`, and the C API's checked entry points): as `secure_check_in`, but a pointer
/// inside a block of a page with aligned blocks is found too (its block), and a pointer
/// that is not a block start below `handed` is `Bad(InvalidFree)` when it lies in the
/// handed-out blocks (an interior pointer), else `Outside` (a double or invalid free,
/// which [`outside_blocks`] tells apart). Out of line.
///
/// # Safety
/// As [`secure_check_in`].
#[cfg(feature = "secure")]
#[inline(never)]
pub(crate) unsafe fn secure_check_full(
    p: *mut u8,
    segment: *mut crate::segment::Segment,
) -> Checked {
    // SAFETY: as this function's contract.
    let page = unsafe { slice_page(p, segment) };
    // SAFETY: as in `secure_check_in` (`block_size` is fixed while the page is in use).
    let (start, handed_bytes) = unsafe {
        (
            (*page).page_start as usize,
            (*page).handed.load(crate::sync::Ordering::Relaxed) * (*page).block_size,
        )
    };
    let off = (p as usize).wrapping_sub(start);
    if off >= handed_bytes {
        return Checked::Outside;
    }
    // SAFETY: as above (`div` is fixed while the page is in use; a borrow of it alone).
    let block = if unsafe { (*page).div.divides(off) } {
        p as *mut Block
    // SAFETY: as above.
    } else if unsafe { Page::has_aligned_raw(page) } {
        // SAFETY: as above (`block_size` is fixed while the page is in use).
        p.wrapping_sub(off % unsafe { (*page).block_size }) as *mut Block
    } else {
        return Checked::Bad(ErrorKind::InvalidFree);
    };
    // SAFETY: `block` is a block of the page, inside its handed-out blocks.
    unsafe { check_first_word(page, block, start) }
}

/// Why `p`, whose offset in the page of its slice is not below the page's `handed`
/// ([`Checked::Outside`]), is
/// not a block to free: a double free when its page is not in use (the page emptied and
/// was freed: its blocks were all free already), an invalid free otherwise.
///
/// # Safety
/// As [`secure_check_in`].
#[cfg(feature = "secure")]
#[cold]
#[inline(never)]
pub(crate) unsafe fn outside_blocks(
    p: *mut u8,
    segment: *mut crate::segment::Segment,
) -> ErrorKind {
    use crate::segment::{checked_page_in, NotInBlocks};
    // SAFETY: the segment is live and `p` lies after its start (the caller's contract).
    match unsafe { checked_page_in(p, segment) } {
        Err(NotInBlocks::PageNotInUse) => ErrorKind::DoubleFree,
        _ => ErrorKind::InvalidFree,
    }
}

/// Secure mode, for a block whose first word decodes to a link of its page (as a free
/// block's does: [`Checked::MaybeFree`]): whether it is free already. For the calling thread's own pages the lists
/// are walked to confirm it (and a block on the heap's delayed list, which is on no list of
/// its page, is told by its mark: `Page::set_delayed_next`); for other threads' pages
/// (whose lists are not ours to read) the link says so (a live block's first word decodes
/// into its page by a 2^-50-ish chance). Out of line: rare, and its loops would cost the common path of `free`
/// registers that it then saves and restores.
///
/// # Safety
/// `segment` is live, `page` a page in use of it, `block` one of its blocks.
#[cfg(feature = "secure")]
#[cold]
#[inline(never)]
pub(crate) unsafe fn free_already(
    page: *mut Page,
    segment: *mut crate::segment::Segment,
    block: *mut Block,
    owner: usize,
) -> bool {
    use crate::sync::Ordering;
    // SAFETY: the segment is live (caller).
    let local = unsafe { (*segment).owner.load(Ordering::Relaxed) } == owner;
    if !local {
        // another thread's page: no `&Page` (its owner writes the entry meanwhile)
        return true;
    }
    // SAFETY: the calling thread owns the page (`local`), so nothing else writes the
    // fields a shared reference reads (remote frees change only the atomic
    // `xthread_free`); the walks are bounded.
    // (a block on the heap's delayed list carries that list's mark: `Page::is_delayed_block`)
    unsafe {
        let pg = &*page;
        pg.is_delayed_block(block)
            || in_list(pg, pg.free, block)
            || in_list(pg, pg.local_free, block)
            || in_list(pg, pg.thread_free_list(), block)
    }
}

/// Secure mode: whether `size`, given to a sized free of block `p` (checked by
/// [`secure_check`]) with `usable` bytes, can be the size it was allocated with: not
/// above `usable`, and (unless `aligned` or the block is tiny) at least half of it — a
/// request always gets a block less than twice its size, and `realloc` keeps a block only
/// for sizes of at least half of it.
#[cfg(all(feature = "secure", feature = "override"))]
pub(crate) fn size_fits(size: usize, usable: usize, aligned: bool) -> bool {
    size <= usable && (aligned || usable <= 2 * crate::size_class::WORD || size >= usable / 2)
}
